#include "daemon/bind_table.h"

#include <doctest/doctest.h>

#include <thread>

#include "support/tcp_pair.h"
#include "transport/tcp.h"

namespace pororoca::daemon {
namespace {

using std::chrono::milliseconds;

BindTable MakeTable() {
  return BindTable([](UniqueFd fd) { return transport::MakeTcpMessageChannel(std::move(fd)); });
}

proto::SessionId Sid(uint8_t v) {
  proto::SessionId s{};
  s.fill(std::byte{v});
  return s;
}

std::vector<std::byte> Key() { return std::vector<std::byte>(32, std::byte{0x5a}); }

// Sends a bind request on `a` while the table serves `b`; returns the table's status and the reply's
// status byte and whether its authenticator is right.
struct BindOutcome {
  Status served;
  uint8_t reply_status = 255;
  bool reply_mac_ok = false;
  bool all_bound_when_answered = false;
};

BindOutcome Bind(BindTable& table, BindTable::Entry* entry, const proto::SessionId& sid,
                 std::span<const std::byte> key, uint16_t stream) {
  auto pair = test::ConnectedTcpPair();
  BindOutcome out;
  std::thread server([&] { out.served = table.Serve(std::move(pair.b)); });
  proto::BindRequest b;
  b.session = sid;
  b.stream = stream;
  b.nonce.fill(std::byte{7});
  b.mac = proto::BindMac(key, false, sid, stream, b.nonce);
  transport::TcpStream client(std::move(pair.a));
  transport::TransportOptions o;
  o.idle_timeout = milliseconds(5000);
  REQUIRE(client.WriteAll(proto::EncodeBind(b), o).ok());
  std::array<std::byte, proto::kBindReplySize> rep;
  REQUIRE(client.ReadFull(rep, o).ok());
  // The moment the initiator holds its answer: the channel must already be counted.
  if (entry != nullptr) out.all_bound_when_answered = table.AllBound(*entry);
  auto r = proto::DecodeBindReply(rep);
  REQUIRE(r.ok());
  out.reply_status = r->first;
  out.reply_mac_ok = proto::MacEqual(r->second, proto::BindMac(key, true, sid, stream, b.nonce));
  server.join();
  return out;
}

TEST_CASE("a data connection is counted before it is told that it is bound") {
  BindTable table = MakeTable();
  auto e = table.Open(Sid(1), Key(), 1);
  // Repeated: on the old order (answer, then count) the initiator could read its answer first.
  for (int i = 0; i < 50; ++i) {
    auto entry = table.Open(Sid(static_cast<uint8_t>(i + 10)), Key(), 1);
    BindOutcome o = Bind(table, entry.get(), Sid(static_cast<uint8_t>(i + 10)), Key(), 0);
    REQUIRE(o.served.ok());
    CHECK(o.reply_status == 0);
    CHECK(o.reply_mac_ok);
    REQUIRE(o.all_bound_when_answered);
    auto channels = table.Take(*entry);
    REQUIRE(channels.size() == 1);
    CHECK(channels[0] != nullptr);
  }
}

TEST_CASE("a bind with a wrong authenticator, an unknown session or a taken stream is refused") {
  BindTable table = MakeTable();
  auto e = table.Open(Sid(1), Key(), 2);
  SUBCASE("wrong key") {
    std::vector<std::byte> other(32, std::byte{1});
    BindOutcome o = Bind(table, e.get(), Sid(1), other, 0);
    CHECK(o.served.code() == Code::kUnauthenticated);
    CHECK(o.reply_status == 1);
    CHECK_FALSE(table.AllBound(*e));
  }
  SUBCASE("unknown session") {
    BindOutcome o = Bind(table, nullptr, Sid(2), Key(), 0);
    CHECK(o.served.code() == Code::kUnauthenticated);
    CHECK(o.reply_status == 1);
  }
  SUBCASE("stream out of range") {
    BindOutcome o = Bind(table, nullptr, Sid(1), Key(), 2);
    CHECK(o.reply_status == 1);
  }
  SUBCASE("the same stream twice") {
    CHECK(Bind(table, nullptr, Sid(1), Key(), 0).reply_status == 0);
    CHECK(Bind(table, nullptr, Sid(1), Key(), 0).reply_status == 1);
    CHECK(Bind(table, nullptr, Sid(1), Key(), 1).reply_status == 0);
    CHECK(table.AllBound(*e));
  }
  SUBCASE("a session whose handle is gone") {
    e.reset();
    CHECK(Bind(table, nullptr, Sid(1), Key(), 0).reply_status == 1);
  }
}

TEST_CASE("WaitBound ends when every channel is bound, when told to give up, or at its deadline") {
  BindTable table = MakeTable();
  auto e = table.Open(Sid(3), Key(), 1);
  auto t0 = std::chrono::steady_clock::now();
  CHECK_FALSE(table.WaitBound(*e, t0 + milliseconds(150), milliseconds(20), [] { return false; }));
  CHECK(std::chrono::steady_clock::now() - t0 >= milliseconds(150));
  int polls = 0;
  CHECK_FALSE(
      table.WaitBound(*e, t0 + std::chrono::seconds(30), milliseconds(20), [&] { return ++polls == 3; }));
  CHECK(polls == 3);
  std::thread binder([&] { Bind(table, nullptr, Sid(3), Key(), 0); });
  CHECK(table.WaitBound(*e, std::chrono::steady_clock::now() + std::chrono::seconds(10), milliseconds(20),
                        [] { return false; }));
  binder.join();
}

}  // namespace
}  // namespace pororoca::daemon
