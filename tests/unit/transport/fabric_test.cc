// The libfabric MessageChannel over the tcp;ofi_rxm provider on loopback: the same library code
// paths (ofi_rxm's tagged matching, eager protocol, completion queues and wait fds) as
// verbs;ofi_rxm, without RDMA hardware.
#include "transport/fabric.h"

#include <doctest/doctest.h>
#include <netinet/in.h>

#include <array>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "support/channel_util.h"

namespace pororoca::transport {
namespace {

using std::chrono::milliseconds;

std::unique_ptr<FabricContext> Context() {
  auto ctx = FabricContext::Create(FabricOptions{});
  REQUIRE_MESSAGE(ctx.has_value(), ctx.error().ToString());
  return std::move(*ctx);
}

using test::Idle;
using test::Pattern;
using test::Text;

std::string HeaderText(const std::array<std::byte, MessageChannel::kMaxHeader>& hdr, size_t len) {
  return std::string(reinterpret_cast<const char*>(hdr.data()), len);
}

struct Pair {
  std::unique_ptr<FabricChannel> tx, rx;
};

Pair Connect(FabricContext& tx_ctx, FabricContext& rx_ctx, uint64_t tag) {
  auto rx_ep = rx_ctx.Acquire("127.0.0.1");
  REQUIRE_MESSAGE(rx_ep.has_value(), rx_ep.error().ToString());
  auto rx = FabricChannel::Listen(*rx_ep, tag, "test-receiver");
  REQUIRE_MESSAGE(rx.has_value(), rx.error().ToString());
  auto tx_ep = tx_ctx.Acquire("127.0.0.1");
  REQUIRE_MESSAGE(tx_ep.has_value(), tx_ep.error().ToString());
  auto tx = FabricChannel::Connect(*tx_ep, (*rx)->address(), tag, "test-sender");
  REQUIRE_MESSAGE(tx.has_value(), tx.error().ToString());
  return {std::move(*tx), std::move(*rx)};
}

// Sends `sizes` messages and checks each arrives whole, in order, in the buffer the sink chose.
void RoundTrip(Pair& p, const std::vector<size_t>& sizes) {
  std::vector<std::byte> buf(8u << 20);
  std::thread sender([&] {
    for (size_t i = 0; i < sizes.size(); ++i) {
      std::string h = "header-" + std::to_string(i);
      std::vector<std::byte> data = Pattern(sizes[i], static_cast<int>(i));
      Status s = p.tx->Send(Text(h.c_str()), data, Idle(10000));
      REQUIRE_MESSAGE(s.ok(), s.ToString());
    }
    CHECK(p.tx->Close(Idle(10000)).ok());
  });
  for (size_t i = 0; i < sizes.size(); ++i) {
    std::array<std::byte, MessageChannel::kMaxHeader> hdr;
    std::string seen_header;
    // The payload goes at an offset, so a write outside the buffer the sink gave would show.
    const size_t at = 4096;
    std::memset(buf.data(), 0xee, buf.size());
    auto r = p.rx->Receive(
        hdr,
        [&](std::span<const std::byte> h, size_t len) -> Result<std::span<std::byte>> {
          seen_header.assign(reinterpret_cast<const char*>(h.data()), h.size());
          return std::span<std::byte>(buf.data() + at, len);
        },
        buf.size() - 2 * at, Idle(10000));
    REQUIRE_MESSAGE(r.has_value(), r.error().ToString());
    CHECK(HeaderText(hdr, r->header_len) == "header-" + std::to_string(i));
    CHECK(seen_header == "header-" + std::to_string(i));
    REQUIRE(r->payload_len == sizes[i]);
    auto want = Pattern(sizes[i], static_cast<int>(i));
    CHECK(std::memcmp(buf.data() + at, want.data(), sizes[i]) == 0);
    CHECK(buf[at - 1] == std::byte{0xee});
    CHECK(buf[at + sizes[i]] == std::byte{0xee});
  }
  sender.join();
}

TEST_CASE("fabric channel: headers and payloads arrive in order, into the buffers the receiver chose") {
  auto ctx = Context();
  Pair p = Connect(*ctx, *ctx, 0x1234'5678'9abc'def0);
  const size_t seg = ctx->segment_size();
  CHECK(seg == 16384);  // ofi_rxm's default eager limit
  // Empty, smaller than, equal to and one past a segment, many segments, a partial last one.
  RoundTrip(p, {0, 1, 4096, seg, seg + 1, 65536, 4u << 20, 7, (3u << 20) + 5});
}

TEST_CASE("fabric channel: a receiver follows the sender's segment size") {
  auto rx_ctx = Context();
  // The segment size comes from ofi_rxm's buffer size setting; the receiver reads the sender's
  // from each message (ofi_rxm read the variable when it started, before this: its eager limit
  // stays 16 KiB, above these segments).
  ::setenv("FI_OFI_RXM_BUFFER_SIZE", "4096", 1);
  auto tx_ctx = FabricContext::Create(FabricOptions{});
  ::setenv("FI_OFI_RXM_BUFFER_SIZE", "4k", 1);
  auto bad = FabricContext::Create(FabricOptions{});
  ::unsetenv("FI_OFI_RXM_BUFFER_SIZE");
  REQUIRE_MESSAGE(tx_ctx.has_value(), tx_ctx.error().ToString());
  CHECK((*tx_ctx)->segment_size() == 4096);
  REQUIRE(!bad.has_value());
  CHECK(bad.error().message().find("FI_OFI_RXM_BUFFER_SIZE='4k'") != std::string_view::npos);
  Pair p = Connect(**tx_ctx, *rx_ctx, 0x77);
  RoundTrip(p, {1, 4096, 4097, 1u << 20});
}

TEST_CASE("fabric channel: messages under another tag are never delivered") {
  auto ctx = Context();
  const uint64_t tag = 0xfeed'0000'0000'0000;
  Pair p = Connect(*ctx, *ctx, tag);
  std::array<std::byte, MessageChannel::kMaxHeader> hdr;
  auto no_payload = [](std::span<const std::byte>, size_t) -> Result<std::span<std::byte>> {
    return std::span<std::byte>();
  };
  {
    std::thread first([&] { CHECK(p.tx->Send(Text("bind"), {}, Idle(5000)).ok()); });
    auto r0 = p.rx->Receive(hdr, no_payload, 0, Idle(5000));
    first.join();
    REQUIRE(r0.has_value());
  }
  // A stranger that learned the endpoint's address but not the session's tag: its messages reach
  // the receiver's provider (while the receiver makes progress) and are never matched.
  auto rogue_ep = ctx->Acquire("127.0.0.1");
  REQUIRE(rogue_ep.has_value());
  auto rogue = FabricChannel::Connect(*rogue_ep, p.rx->address(), tag ^ 0x100, "rogue");
  REQUIRE(rogue.has_value());
  auto junk = Pattern(1u << 20, 9);
  std::thread t([&] {
    Status s = (*rogue)->Send(Text("chunk"), std::span<const std::byte>(junk).first(100), Idle(2000));
    CHECK_MESSAGE(s.ok(), s.ToString());  // taken by the receiver's provider, never delivered
    (*rogue)->Send(Text("chunk"), junk, Idle(500)).IgnoreError();
  });
  bool sink_called = false;
  std::vector<std::byte> buf(2u << 20);
  auto sink = [&](std::span<const std::byte>, size_t len) -> Result<std::span<std::byte>> {
    sink_called = true;
    return std::span<std::byte>(buf.data(), len);
  };
  auto r = p.rx->Receive(hdr, sink, buf.size(), Idle(1000));
  REQUIRE(!r.has_value());
  CHECK(r.error().code() == Code::kDeadlineExceeded);
  CHECK(!sink_called);
  t.join();
  // The channel still works for the right sender after a quiet spell.
  std::thread good([&] {
    Status s = p.tx->Send(Text("real"), std::span<const std::byte>(junk).first(10), Idle(5000));
    CHECK_MESSAGE(s.ok(), s.ToString());
  });
  r = p.rx->Receive(hdr, sink, buf.size(), Idle(5000));
  good.join();
  REQUIRE_MESSAGE(r.has_value(), r.error().ToString());
  CHECK(HeaderText(hdr, r->header_len) == "real");
  CHECK(r->payload_len == 10);
  CHECK(std::memcmp(buf.data(), junk.data(), 10) == 0);
}

TEST_CASE("fabric channel: a payload above the limit or refused by the sink fails the receive") {
  auto ctx = Context();
  Pair p = Connect(*ctx, *ctx, 0x42);
  auto data = Pattern(300000, 1);
  std::thread t([&] { p.tx->Send(Text("big"), data, Idle(2000)).IgnoreError(); });
  std::array<std::byte, MessageChannel::kMaxHeader> hdr;
  bool sink_called = false;
  auto r = p.rx->Receive(
      hdr,
      [&](std::span<const std::byte>, size_t) -> Result<std::span<std::byte>> {
        sink_called = true;
        return Status::Internal("x");
      },
      1000, Idle(5000));
  REQUIRE(!r.has_value());
  CHECK(r.error().code() == Code::kProtocol);
  CHECK(r.error().message().find("at most 1000") != std::string_view::npos);
  CHECK(!sink_called);
  CHECK(!p.rx->Receive(hdr, nullptr, 1u << 20, Idle(100)).has_value());  // unusable after that
  t.join();

  Pair q = Connect(*ctx, *ctx, 0x44);
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

TEST_CASE("fabric channel: Shutdown unblocks a waiting receive, a sender to nobody fails") {
  auto ctx = Context();
  Pair p = Connect(*ctx, *ctx, 0x88);
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

  // The receiving end's endpoint is gone (its daemon stopped) before the sender speaks: its
  // address refuses the connection.
  std::vector<std::byte> gone;
  {
    auto other = Context();
    auto e = other->Acquire("127.0.0.1");
    REQUIRE(e.has_value());
    auto l = FabricChannel::Listen(*e, 0x90, "gone");
    REQUIRE(l.has_value());
    gone = (*l)->address();
  }
  auto e = ctx->Acquire("127.0.0.1");
  REQUIRE(e.has_value());
  auto tx = FabricChannel::Connect(*e, gone, 0x90, "gone");
  REQUIRE(tx.has_value());
  Status s = (*tx)->Send(Text("h"), Pattern(100000, 1), Idle(3000));
  REQUIRE(!s.ok());
  CHECK_MESSAGE((s.code() == Code::kUnavailable || s.code() == Code::kDeadlineExceeded), s.ToString());
  CHECK(!(*tx)->Send(Text("h"), {}, Idle(300)).ok());  // the channel is unusable after that
}

TEST_CASE("fabric channel: an address from the peer of the wrong size or family is refused") {
  auto ctx = Context();
  auto ep = ctx->Acquire("127.0.0.1");
  REQUIRE(ep.has_value());
  std::vector<std::byte> shortaddr(5);
  auto c = FabricChannel::Connect(*ep, shortaddr, 1, "peer-x");
  REQUIRE(!c.has_value());
  CHECK(c.error().code() == Code::kProtocol);
  CHECK(c.error().message().find("peer-x") != std::string_view::npos);
  std::vector<std::byte> other(sizeof(sockaddr_in));
  sa_family_t fam = AF_UNIX;
  std::memcpy(other.data(), &fam, sizeof fam);
  c = FabricChannel::Connect(*ep, other, 1, "peer-x");
  REQUIRE(!c.has_value());
  CHECK(c.error().code() == Code::kProtocol);
  auto notrxm = FabricContext::Create(FabricOptions{"tcp"});
  REQUIRE(!notrxm.has_value());
  CHECK(notrxm.error().message().find("only ofi_rxm") != std::string_view::npos);
  auto none = FabricContext::Create(FabricOptions{"nosuchprov;ofi_rxm"});
  REQUIRE(!none.has_value());
  CHECK(none.error().code() == Code::kUnavailable);
}

TEST_CASE("fabric channel: messages sent just before the sender is destroyed still arrive") {
  auto ctx = Context();
  for (int round = 0; round < 3; ++round) {
    Pair p = Connect(*ctx, *ctx, 0x100 + 2 * round);
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
      CHECK(HeaderText(hdr, r->header_len) == want);
    }
    CHECK(std::memcmp(buf.data(), data.data(), data.size()) == 0);
    t.join();
  }
}

TEST_CASE("fabric channel: the streams of a session share one endpoint at each end, in parallel") {
  auto ctx = Context();
  const size_t before = ctx->endpoints_made();
  const int streams = 4;
  std::vector<std::unique_ptr<FabricChannel>> tx(streams), rx(streams);
  {
    auto rx_ep = ctx->Acquire("127.0.0.1");
    auto tx_ep = ctx->Acquire("127.0.0.1");
    REQUIRE(rx_ep.has_value());
    REQUIRE(tx_ep.has_value());
    for (int i = 0; i < streams; ++i) {
      auto l = FabricChannel::Listen(*rx_ep, 0x5000 + 2 * i, "rx");
      REQUIRE(l.has_value());
      rx[i] = std::move(*l);
      auto c = FabricChannel::Connect(*tx_ep, rx[i]->address(), 0x5000 + 2 * i, "tx");
      REQUIRE(c.has_value());
      tx[i] = std::move(*c);
    }
  }
  CHECK(ctx->endpoints_made() - before <= 2);
  // Each stream sends its own pattern; every receiver sees only its own, whole and in order.
  std::vector<std::thread> threads;
  for (int i = 0; i < streams; ++i) {
    threads.emplace_back([&, i] {
      for (int m = 0; m < 5; ++m) {
        auto data = Pattern((1u << 20) + 1000 * i + m, 100 * i + m);
        Status s = tx[i]->Send(Text("m"), data, Idle(10000));
        CHECK_MESSAGE(s.ok(), s.ToString());
      }
    });
    threads.emplace_back([&, i] {
      std::vector<std::byte> buf(2u << 20);
      std::array<std::byte, MessageChannel::kMaxHeader> hdr;
      for (int m = 0; m < 5; ++m) {
        auto r = rx[i]->Receive(
            hdr,
            [&](std::span<const std::byte>, size_t len) -> Result<std::span<std::byte>> {
              return std::span<std::byte>(buf.data(), len);
            },
            buf.size(), Idle(10000));
        REQUIRE_MESSAGE(r.has_value(), r.error().ToString());
        auto want = Pattern((1u << 20) + 1000 * i + m, 100 * i + m);
        REQUIRE(r->payload_len == want.size());
        CHECK(std::memcmp(buf.data(), want.data(), want.size()) == 0);
      }
    });
  }
  for (auto& t : threads) t.join();
  tx.clear();
  rx.clear();
  // Both endpoints ended cleanly: the next session takes them instead of making new ones.
  CHECK(ctx->endpoints_idle() == 2);
  const size_t made = ctx->endpoints_made();
  Pair p = Connect(*ctx, *ctx, 0x6000);
  CHECK(ctx->endpoints_made() == made);
  RoundTrip(p, {5, 70000});
}

TEST_CASE("fabric channel: an endpoint whose session failed is closed, not kept") {
  auto ctx = Context();
  {
    Pair p = Connect(*ctx, *ctx, 0x7000);
    p.rx->Shutdown();
    std::array<std::byte, MessageChannel::kMaxHeader> hdr;
    auto r = p.rx->Receive(hdr, nullptr, 0, Idle(1000));
    REQUIRE(!r.has_value());
    CHECK(r.error().code() == Code::kCancelled);
  }
  CHECK(ctx->endpoints_idle() == 1);  // the sending end's, which had nothing in flight
}

}  // namespace
}  // namespace pororoca::transport
