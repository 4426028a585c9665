#include "transport/tcp.h"

#include <doctest/doctest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "base/coding.h"
#include "support/tcp_pair.h"

namespace pororoca::transport {
namespace {

using std::chrono::milliseconds;

using test::ConnectedTcpPair;
using test::FdPair;

std::byte PatternByte(uint32_t msg, size_t i) { return std::byte((msg * 131 + i * 7 + (i >> 9)) & 0xff); }

std::vector<std::byte> Payload(uint32_t msg, size_t len) {
  std::vector<std::byte> p(len);
  for (size_t i = 0; i < len; ++i) p[i] = PatternByte(msg, i);
  return p;
}

std::vector<std::byte> Header(uint32_t msg, size_t len) {
  std::vector<std::byte> h(len, std::byte{0x5a});
  EncodeFixed32(h.data(), msg);
  return h;
}

size_t SizeFor(uint32_t i) {
  static const size_t kSizes[] = {0, 1, 17, 4096, 8191, 8192, 70000, 4u << 20, 0, 300000};
  return kSizes[i % (sizeof(kSizes) / sizeof(kSizes[0]))];
}

// Receives `count` messages sent by SendMany and checks every byte.
void ReceiveMany(MessageChannel& ch, uint32_t count, std::atomic<int>* failures) {
  std::vector<std::byte> buf(4u << 20);
  std::byte header[MessageChannel::kMaxHeader];
  for (uint32_t i = 0; i < count; ++i) {
    auto r = ch.Receive(
        header,
        [&](std::span<const std::byte> h, size_t len) -> Result<std::span<std::byte>> {
          if (h.size() < 4 || DecodeFixed32(h.data()) != i) return Status::Internal("header mismatch");
          return std::span<std::byte>(buf).first(len);
        },
        buf.size(), TransportOptions{});
    if (!r.ok() || r->payload_len != SizeFor(i) || r->header_len != 4 + i % 200 ||
        Payload(i, r->payload_len) != std::vector<std::byte>(buf.begin(), buf.begin() + r->payload_len)) {
      failures->fetch_add(1);
      return;
    }
  }
}

void SendMany(MessageChannel& ch, uint32_t count, std::atomic<int>* failures) {
  for (uint32_t i = 0; i < count; ++i) {
    auto p = Payload(i, SizeFor(i));
    auto h = Header(i, 4 + i % 200);
    if (!ch.Send(h, p, TransportOptions{}).ok()) {
      failures->fetch_add(1);
      return;
    }
  }
}

// Writes raw bytes on a socket, bypassing the framing.
void RawWrite(int fd, const std::vector<std::byte>& bytes) {
  REQUIRE(::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) == ssize_t(bytes.size()));
}

std::vector<std::byte> Prefix(uint32_t header_len, uint32_t payload_len) {
  std::vector<std::byte> p(8);
  EncodeFixed32(p.data(), header_len);
  EncodeFixed32(p.data() + 4, payload_len);
  return p;
}

Result<MessageChannel::Received> ReceiveInto(MessageChannel& ch, std::vector<std::byte>& buf,
                                             size_t max_payload, bool* sink_called = nullptr,
                                             TransportOptions opts = {}) {
  std::byte header[MessageChannel::kMaxHeader];
  return ch.Receive(
      header,
      [&](std::span<const std::byte>, size_t len) -> Result<std::span<std::byte>> {
        if (sink_called) *sink_called = true;
        if (buf.size() < len) buf.resize(len);
        return std::span<std::byte>(buf);
      },
      max_payload, opts);
}

TEST_SUITE("transport.tcp") {
  TEST_CASE("ParseHostPort accepts host:port and [v6]:port and rejects malformed input") {
    auto a = ParseHostPort("127.0.0.1:7001");
    REQUIRE(a.ok());
    CHECK(a->first == "127.0.0.1");
    CHECK(a->second == 7001);
    auto b = ParseHostPort("[::1]:7001");
    REQUIRE(b.ok());
    CHECK(b->first == "::1");
    CHECK(b->second == 7001);
    auto c = ParseHostPort("dtn1.example.org:0");
    REQUIRE(c.ok());
    CHECK(c->second == 0);
    for (const char* bad :
         {"", "host", ":7001", "host:", "host:70000", "host:7x", "::1:7001", "[::1]7001", "[::1]:"}) {
      CAPTURE(bad);
      auto r = ParseHostPort(bad);
      REQUIRE_FALSE(r.ok());
      CHECK(r.error().code() == Code::kInvalidArgument);
    }
    CHECK(FormatHostPort("::1", 7) == "[::1]:7");
    CHECK(FormatHostPort("127.0.0.1", 7) == "127.0.0.1:7");
  }

  TEST_CASE("connecting to a closed port is a retryable kUnavailable naming the address") {
    uint16_t port;
    {
      auto lfd = TcpListen("127.0.0.1", 0, 1);
      REQUIRE(lfd.ok());
      port = *LocalPort(lfd->get());
    }
    auto r = TcpConnect("127.0.0.1", port, milliseconds(1000));
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code() == Code::kUnavailable);
    CHECK(r.error().retryable());
    CHECK(r.error().side() == Side::kNetwork);
    CHECK(std::string(r.error().message()) ==
          "connect 127.0.0.1:" + std::to_string(port) + ": Connection refused");
  }

  TEST_CASE("accept with a timeout gives up with kDeadlineExceeded") {
    auto lfd = TcpListen("127.0.0.1", 0, 1);
    REQUIRE(lfd.ok());
    auto r = TcpAccept(lfd->get(), milliseconds(30));
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code() == Code::kDeadlineExceeded);
  }

  TEST_CASE("socket options apply and an unknown congestion control is only a warning") {
    FdPair p = ConnectedTcpPair();
    SocketOptions o;
    o.sndbuf = 1 << 20;
    o.rcvbuf = 1 << 20;
    o.congestion = "no-such-cc";
    CHECK(ApplySocketOptions(p.a.get(), o).ok());
    o.congestion = "cubic";
    CHECK(ApplySocketOptions(p.a.get(), o).ok());
  }

  TEST_CASE("stream writes arrive in order and ReadFull reports EOF before the end") {
    FdPair p = ConnectedTcpPair();
    TcpStream a(std::move(p.a));
    TcpStream b(std::move(p.b));
    CHECK(a.peer_address().rfind("127.0.0.1:", 0) == 0);
    auto data = Payload(7, 100000);
    std::thread writer([&] {
      CHECK(a.WriteAll(data, TransportOptions{}).ok());
      CHECK(a.Close(TransportOptions{}).ok());
    });
    std::vector<std::byte> got(data.size());
    CHECK(b.ReadFull(got, TransportOptions{}).ok());
    writer.join();
    CHECK(got == data);
    std::byte extra[1];
    Status s = b.ReadFull(extra, TransportOptions{});
    CHECK(s.code() == Code::kUnavailable);
  }

  TEST_CASE("stream read with an idle timeout fails with kDeadlineExceeded") {
    FdPair p = ConnectedTcpPair();
    TcpStream b(std::move(p.b));
    TransportOptions o;
    o.idle_timeout = milliseconds(30);
    std::byte buf[16];
    auto r = b.ReadSome(buf, o);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code() == Code::kDeadlineExceeded);
  }

  TEST_CASE("many messages round-trip, including empty and 4 MiB payloads") {
    FdPair p = ConnectedTcpPair();
    auto a = MakeTcpMessageChannel(std::move(p.a));
    auto b = MakeTcpMessageChannel(std::move(p.b));
    CHECK(std::string(a->name()) == "tcp");
    constexpr uint32_t kCount = 60;
    std::atomic<int> failures{0};
    std::thread sender([&] { SendMany(*a, kCount, &failures); });
    ReceiveMany(*b, kCount, &failures);
    sender.join();
    CHECK(failures.load() == 0);
  }

  TEST_CASE("both ends send and receive concurrently") {
    FdPair p = ConnectedTcpPair();
    auto a = MakeTcpMessageChannel(std::move(p.a));
    auto b = MakeTcpMessageChannel(std::move(p.b));
    constexpr uint32_t kCount = 40;
    std::atomic<int> failures{0};
    std::thread t1([&] { SendMany(*a, kCount, &failures); });
    std::thread t2([&] { SendMany(*b, kCount, &failures); });
    std::thread t3([&] { ReceiveMany(*a, kCount, &failures); });
    ReceiveMany(*b, kCount, &failures);
    t1.join();
    t2.join();
    t3.join();
    CHECK(failures.load() == 0);
  }

  TEST_CASE(
      "a large payload trickling in pieces smaller than the wake-up mark arrives whole, then a small "
      "message") {
    // Receive asks the kernel to wake it only once 512 KiB (at most what is still due) are queued; the
    // sender here writes 100,000 bytes at a time with pauses, ends the payload at an odd length, and
    // follows with a message of 3 bytes that a mark left above 1 would never deliver.
    FdPair p = ConnectedTcpPair();
    // The mark is at most a quarter of the receive buffer (the default 128 KiB would allow none).
    SocketOptions so;
    so.rcvbuf = 4 << 20;
    REQUIRE(ApplySocketOptions(p.b.get(), so).ok());
    UniqueFd probe(::dup(p.b.get()));  // the same socket, to read the mark while Receive waits
    REQUIRE(probe.valid());
    auto b = MakeTcpMessageChannel(std::move(p.b));
    const size_t kLen = (3u << 19) + 77;
    const auto payload = Payload(7, kLen);
    int highest_mark = 0;
    std::thread writer([&] {
      auto bytes = Prefix(4, uint32_t(kLen));
      auto h = Header(7, 4);
      bytes.insert(bytes.end(), h.begin(), h.end());
      RawWrite(p.a.get(), bytes);
      for (size_t off = 0; off < kLen; off += 100000) {
        RawWrite(p.a.get(), std::vector<std::byte>(payload.begin() + off,
                                                   payload.begin() + std::min(kLen, off + 100000)));
        std::this_thread::sleep_for(milliseconds(2));
        int mark = 0;
        socklen_t len = sizeof mark;
        if (::getsockopt(probe.get(), SOL_SOCKET, SO_RCVLOWAT, &mark, &len) == 0)
          highest_mark = std::max(highest_mark, mark);
      }
      auto small = Prefix(4, 3);
      auto h2 = Header(8, 4);
      small.insert(small.end(), h2.begin(), h2.end());
      small.insert(small.end(), {std::byte{1}, std::byte{2}, std::byte{3}});
      RawWrite(p.a.get(), small);
    });
    TransportOptions o;
    o.idle_timeout = milliseconds(5000);  // a wait that never ends fails the test instead of hanging it
    std::vector<std::byte> buf;
    auto r1 = ReceiveInto(*b, buf, 4u << 20, nullptr, o);
    std::vector<std::byte> first(buf.begin(), buf.begin() + std::min(buf.size(), kLen));
    auto r2 = r1.ok() ? ReceiveInto(*b, buf, 4u << 20, nullptr, o) : r1;
    writer.join();
    REQUIRE(r1.ok());
    CHECK(r1->payload_len == kLen);
    CHECK(first == payload);
    REQUIRE(r2.ok());
    CHECK(r2->payload_len == 3);
    CHECK(buf[0] == std::byte{1});
    CHECK(highest_mark > 100000);  // the low-water path ran (the mark is back at 1 for the header)
    int mark = 0;
    socklen_t len = sizeof mark;
    REQUIRE(::getsockopt(probe.get(), SOL_SOCKET, SO_RCVLOWAT, &mark, &len) == 0);
    CHECK(mark == 1);
    CHECK(buf[2] == std::byte{3});
  }

  TEST_CASE("orderly close at a message boundary is kUnavailable \"closed\"") {
    FdPair p = ConnectedTcpPair();
    auto a = MakeTcpMessageChannel(std::move(p.a));
    auto b = MakeTcpMessageChannel(std::move(p.b));
    auto h = Header(1, 4);
    REQUIRE(a->Send(h, {}, TransportOptions{}).ok());
    REQUIRE(a->Close(TransportOptions{}).ok());
    std::vector<std::byte> buf;
    auto r1 = ReceiveInto(*b, buf, 1024);
    REQUIRE(r1.ok());
    CHECK(r1->payload_len == 0);
    auto r2 = ReceiveInto(*b, buf, 1024);
    REQUIRE_FALSE(r2.ok());
    CHECK(r2.error().code() == Code::kUnavailable);
    CHECK(r2.error().message() == "closed");
  }

  TEST_CASE("EOF inside a message is kUnavailable \"connection closed mid-message\"") {
    std::vector<std::byte> buf;
    SUBCASE("inside the prefix") {
      FdPair p = ConnectedTcpPair();
      auto b = MakeTcpMessageChannel(std::move(p.b));
      auto pre = Prefix(4, 10);
      pre.resize(5);
      RawWrite(p.a.get(), pre);
      p.a.Reset();
      auto r = ReceiveInto(*b, buf, 1024);
      REQUIRE_FALSE(r.ok());
      CHECK(r.error().message() == "connection closed mid-message");
    }
    SUBCASE("inside the payload") {
      FdPair p = ConnectedTcpPair();
      auto b = MakeTcpMessageChannel(std::move(p.b));
      auto bytes = Prefix(4, 100000);
      auto h = Header(0, 4);
      bytes.insert(bytes.end(), h.begin(), h.end());
      bytes.resize(bytes.size() + 50000, std::byte{1});
      RawWrite(p.a.get(), bytes);
      p.a.Reset();
      auto r = ReceiveInto(*b, buf, 1 << 20);
      REQUIRE_FALSE(r.ok());
      CHECK(r.error().code() == Code::kUnavailable);
      CHECK(r.error().message() == "connection closed mid-message");
    }
  }

  TEST_CASE("a header length of zero or above kMaxHeader is a protocol error") {
    for (uint32_t hl : {0u, uint32_t(MessageChannel::kMaxHeader + 1), 0xffffffffu}) {
      CAPTURE(hl);
      FdPair p = ConnectedTcpPair();
      auto b = MakeTcpMessageChannel(std::move(p.b));
      RawWrite(p.a.get(), Prefix(hl, 0));
      std::vector<std::byte> buf;
      auto r = ReceiveInto(*b, buf, 1024);
      REQUIRE_FALSE(r.ok());
      CHECK(r.error().code() == Code::kProtocol);
    }
  }

  TEST_CASE("a message larger than max_payload is rejected before its payload is read") {
    FdPair p = ConnectedTcpPair();
    auto b = MakeTcpMessageChannel(std::move(p.b));
    auto bytes = Prefix(4, 1u << 20);
    auto h = Header(0, 4);
    bytes.insert(bytes.end(), h.begin(), h.end());
    RawWrite(p.a.get(), bytes);  // no payload follows: reading it would hang
    std::vector<std::byte> buf;
    bool sink_called = false;
    auto r = ReceiveInto(*b, buf, 65536, &sink_called);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code() == Code::kProtocol);
    CHECK_FALSE(sink_called);
  }

  TEST_CASE("a sink error fails Receive with that error") {
    FdPair p = ConnectedTcpPair();
    auto a = MakeTcpMessageChannel(std::move(p.a));
    auto b = MakeTcpMessageChannel(std::move(p.b));
    auto h = Header(0, 4);
    auto pl = Payload(0, 10);
    REQUIRE(a->Send(h, pl, TransportOptions{}).ok());
    std::byte header[MessageChannel::kMaxHeader];
    auto r = b->Receive(
        header,
        [](std::span<const std::byte>, size_t) -> Result<std::span<std::byte>> {
          return Status::ResourceExhausted("no buffer");
        },
        1024, TransportOptions{});
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code() == Code::kResourceExhausted);
  }

  TEST_CASE("Send rejects an empty or oversized header") {
    FdPair p = ConnectedTcpPair();
    auto a = MakeTcpMessageChannel(std::move(p.a));
    std::vector<std::byte> big(MessageChannel::kMaxHeader + 1);
    CHECK(a->Send({}, {}, TransportOptions{}).code() == Code::kInvalidArgument);
    CHECK(a->Send(big, {}, TransportOptions{}).code() == Code::kInvalidArgument);
  }

  TEST_CASE("Receive with an idle timeout and Shutdown from another thread both unblock") {
    FdPair p = ConnectedTcpPair();
    auto b = MakeTcpMessageChannel(std::move(p.b));
    std::vector<std::byte> buf;
    TransportOptions o;
    o.idle_timeout = milliseconds(30);
    auto r = ReceiveInto(*b, buf, 1024, nullptr, o);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code() == Code::kDeadlineExceeded);

    std::thread killer([&] {
      std::this_thread::sleep_for(milliseconds(30));
      b->Shutdown();
    });
    auto r2 = ReceiveInto(*b, buf, 1024);
    killer.join();
    REQUIRE_FALSE(r2.ok());
    CHECK(r2.error().code() == Code::kCancelled);
  }
}

}  // namespace
}  // namespace pororoca::transport
