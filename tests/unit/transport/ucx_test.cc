// The UCX MessageChannel over UCX_TLS=tcp on loopback: the same library code paths as on verbs,
// without RDMA hardware.
#include "transport/ucx.h"

#include <doctest/doctest.h>

#include <cstring>
#include <numeric>
#include <thread>

#include "support/channel_util.h"

namespace pororoca::transport {
namespace {

using std::chrono::milliseconds;

std::unique_ptr<UcxContext> Context(std::vector<std::byte>* region = nullptr) {
  UcxOptions o;
  o.tls = "tcp";
  auto ctx = UcxContext::Create(o);
  REQUIRE_MESSAGE(ctx.has_value(), ctx.error().ToString());
  if (region != nullptr) REQUIRE((*ctx)->RegisterRegion(region->data(), region->size()).ok());
  return std::move(*ctx);
}

using test::Idle;
using test::Pattern;
using test::Text;

// The receiving end is destroyed first: a sending end's orderly close waits for it.
struct Pair {
  std::unique_ptr<UcxChannel> tx, rx;
};

Pair Connect(UcxContext& ctx, uint64_t tag) {
  auto rx = UcxChannel::Listen(ctx, "127.0.0.1", tag, "test-receiver");
  REQUIRE_MESSAGE(rx.has_value(), rx.error().ToString());
  auto tx = UcxChannel::Connect(ctx, (*rx)->address(), tag, "test-sender");
  REQUIRE_MESSAGE(tx.has_value(), tx.error().ToString());
  return {std::move(*tx), std::move(*rx)};
}

TEST_CASE("ucx channel: headers and payloads arrive in order, into the buffers the receiver chose") {
  std::vector<std::byte> region(16u << 20);
  auto ctx = Context(&region);
  Pair p = Connect(*ctx, 0x1234'5678'9abc'def0);
  const std::vector<size_t> sizes = {0, 1, 4096, 65536, 4u << 20, 7, 3u << 20};
  std::thread sender([&] {
    for (size_t i = 0; i < sizes.size(); ++i) {
      std::string h = "header-" + std::to_string(i);
      // Payloads from the registered region and from ordinary memory.
      std::vector<std::byte> data = Pattern(sizes[i], static_cast<int>(i));
      std::span<const std::byte> payload = data;
      if (i % 2 == 0 && sizes[i] <= region.size() / 2) {
        std::memcpy(region.data() + region.size() / 2, data.data(), data.size());
        payload = std::span<const std::byte>(region.data() + region.size() / 2, data.size());
      }
      REQUIRE(p.tx->Send(Text(h.c_str()), payload, Idle(10000)).ok());
    }
    // Returns once the receiver has closed its side, having read everything.
    Status closed = p.tx->Close(Idle(10000));
    CHECK_MESSAGE(closed.ok(), closed.ToString());
  });
  for (size_t i = 0; i < sizes.size(); ++i) {
    std::array<std::byte, MessageChannel::kMaxHeader> hdr;
    std::string seen_header;
    auto r = p.rx->Receive(
        hdr,
        [&](std::span<const std::byte> h, size_t len) -> Result<std::span<std::byte>> {
          seen_header.assign(reinterpret_cast<const char*>(h.data()), h.size());
          return std::span<std::byte>(region.data(), len);
        },
        8u << 20, Idle(10000));
    REQUIRE_MESSAGE(r.has_value(), r.error().ToString());
    CHECK(std::string(reinterpret_cast<const char*>(hdr.data()), r->header_len) ==
          "header-" + std::to_string(i));
    CHECK(r->payload_len == sizes[i]);
    if (sizes[i] > 0) {
      CHECK(seen_header == "header-" + std::to_string(i));
      auto want = Pattern(sizes[i], static_cast<int>(i));
      CHECK(std::memcmp(region.data(), want.data(), sizes[i]) == 0);
    }
  }
  p.rx.reset();
  sender.join();
}

TEST_CASE("ucx channel: messages under another tag are never delivered") {
  auto ctx = Context();
  const uint64_t tag = 0xfeed'0000'0000'0000;
  // Declared first, destroyed last: a receiving worker destroyed while its answer to a vanished
  // peer's connection is pending trips an assertion inside UCX 1.13 (docs/architecture.md).
  Result<std::unique_ptr<UcxChannel>> rogue = Status::Internal("not yet");
  Pair p = Connect(*ctx, tag);
  std::array<std::byte, MessageChannel::kMaxHeader> hdr;
  auto no_payload = [](std::span<const std::byte>, size_t) -> Result<std::span<std::byte>> {
    return std::span<std::byte>();
  };
  {
    // The channel's own sender speaks first (as the session's bind does), so it holds the connection.
    std::thread first([&] { CHECK(p.tx->Send(Text("bind"), {}, Idle(5000)).ok()); });
    auto r0 = p.rx->Receive(hdr, no_payload, 0, Idle(5000));
    first.join();
    REQUIRE(r0.has_value());
  }
  // A stranger that learned the worker's address but not the session's tag.
  rogue = UcxChannel::Connect(*ctx, p.rx->address(), tag ^ 0x100, "rogue");
  REQUIRE(rogue.has_value());
  auto junk = Pattern(1u << 20, 9);
  std::thread t([&] {
    // Turned away (the channel has its sender) or, if it came first, never matched: either way
    // nothing it sends is delivered. The big send cannot complete.
    (*rogue)->Send(Text("chunk"), std::span<const std::byte>(junk).first(100), Idle(2000)).IgnoreError();
    CHECK(!(*rogue)->Send(Text("chunk"), junk, Idle(500)).ok());
  });
  bool sink_called = false;
  auto sink = [&](std::span<const std::byte>, size_t len) -> Result<std::span<std::byte>> {
    sink_called = true;
    static std::vector<std::byte> buf;
    buf.resize(len);
    return std::span<std::byte>(buf);
  };
  auto r = p.rx->Receive(hdr, sink, 2u << 20, Idle(1000));
  REQUIRE(!r.has_value());
  CHECK(r.error().code() == Code::kDeadlineExceeded);
  CHECK(!sink_called);
  t.join();
  // The channel still works for the right sender after a quiet spell.
  std::thread good([&] {
    Status s = p.tx->Send(Text("real"), std::span<const std::byte>(junk).first(10), Idle(5000));
    CHECK_MESSAGE(s.ok(), s.ToString());
  });
  r = p.rx->Receive(hdr, sink, 2u << 20, Idle(5000));
  good.join();
  REQUIRE_MESSAGE(r.has_value(), r.error().ToString());
  CHECK(std::string(reinterpret_cast<const char*>(hdr.data()), r->header_len) == "real");
  CHECK(r->payload_len == 10);
}

TEST_CASE("ucx channel: a payload above the limit or refused by the sink fails the receive") {
  auto ctx = Context();
  Pair p = Connect(*ctx, 0x42);
  auto data = Pattern(300000, 1);
  std::thread t([&] { p.tx->Send(Text("big"), data, Idle(2000)).IgnoreError(); });
  std::array<std::byte, MessageChannel::kMaxHeader> hdr;
  auto r = p.rx->Receive(
      hdr,
      [](std::span<const std::byte>, size_t) -> Result<std::span<std::byte>> {
        return Status::Internal("x");
      },
      1000, Idle(5000));
  REQUIRE(!r.has_value());
  CHECK(r.error().code() == Code::kProtocol);
  CHECK(r.error().message().find("at most 1000") != std::string_view::npos);
  t.join();

  Pair q = Connect(*ctx, 0x44);
  std::thread t2([&] { q.tx->Send(Text("refused"), data, Idle(2000)).IgnoreError(); });
  r = q.rx->Receive(
      hdr,
      [](std::span<const std::byte>, size_t) -> Result<std::span<std::byte>> {
        return Status::InvalidArgument("no such file");
      },
      1u << 20, Idle(5000));
  REQUIRE(!r.has_value());
  CHECK(r.error().message() == "no such file");
  t2.join();
}

TEST_CASE("ucx channel: Shutdown unblocks a waiting receive, an idle sender times out") {
  auto ctx = Context();
  Pair p = Connect(*ctx, 0x88);
  std::thread stopper([&] {
    std::this_thread::sleep_for(milliseconds(200));
    p.rx->Shutdown();
  });
  std::array<std::byte, MessageChannel::kMaxHeader> hdr;
  auto t0 = std::chrono::steady_clock::now();
  auto r = p.rx->Receive(
      hdr,
      [](std::span<const std::byte>, size_t) -> Result<std::span<std::byte>> {
        return Status::Internal("x");
      },
      1u << 20, TransportOptions{});
  stopper.join();
  REQUIRE(!r.has_value());
  CHECK(r.error().code() == Code::kCancelled);
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));

  // Nobody posts the payload's receive: a rendezvous-sized send cannot finish.
  Pair q = Connect(*ctx, 0x90);
  auto data = Pattern(4u << 20, 3);
  Status s = q.tx->Send(Text("h"), data, Idle(300));
  CHECK(s.code() == Code::kDeadlineExceeded);
  CHECK(!q.tx->Send(Text("h"), {}, Idle(300)).ok());  // the channel is unusable after that
}

}  // namespace
}  // namespace pororoca::transport

namespace pororoca::transport {
namespace {
TEST_CASE("ucx channel: messages sent just before the sender is destroyed still arrive") {
  auto ctx = Context();
  for (int round = 0; round < 3; ++round) {
    Pair p = Connect(*ctx, 0x100 + 2 * round);
    auto data = Pattern(4u << 20, round);
    std::thread t([&] {
      CHECK(p.tx->Send(Text("one"), data, Idle(5000)).ok());
      CHECK(p.tx->Send(Text("two"), {}, Idle(5000)).ok());
      CHECK(p.tx->Send(Text("eos"), {}, Idle(5000)).ok());
      p.tx.reset();
    });
    std::vector<std::byte> buf(4u << 20);
    std::array<std::byte, MessageChannel::kMaxHeader> hdr;
    auto sink = [&](std::span<const std::byte>, size_t len) -> Result<std::span<std::byte>> {
      return std::span<std::byte>(buf.data(), len);
    };
    for (const char* want : {"one", "two", "eos"}) {
      auto r = p.rx->Receive(hdr, sink, 8u << 20, Idle(5000));
      REQUIRE_MESSAGE(r.has_value(), want << ": " << r.error().ToString());
      CHECK(std::string(reinterpret_cast<const char*>(hdr.data()), r->header_len) == want);
    }
    p.rx.reset();  // the sender's destruction waits for this
    t.join();
  }
}
}  // namespace
}  // namespace pororoca::transport
