// Live sessions: a peer that stops answering in the middle of a transfer (its daemon stopped with
// SIGSTOP) is detected by the control connection's idle timeout ([network] idle_timeout_s, 20 s by
// default, KEEPALIVE every 5 s meanwhile), the session ends with an error that says so, and the
// transfer resumes when the peer is back (SIGCONT), or when its network link, taken down, is up again.
#include <doctest/doctest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>

#include "support/daemon_harness.h"

namespace pororoca::test {
namespace {

using nlohmann::json;

constexpr uint64_t kMiB = 1ull << 20;

// An emulated WAN link between two fresh network namespaces NAME-a (198.18.0.1) and NAME-b
// (198.18.0.2), from ../shared/wanem; removed when it goes away.
class WanLink {
 public:
  WanLink(std::string name, const std::string& args) : name_(std::move(name)) {
    const std::string dir = PORO_SHARED_DIR "/wanem";
    up_ = std::system(
              ("'" + dir + "/wan-up.sh' --name " + name_ + " " + args + " >/dev/null 2>&1").c_str()) == 0;
  }
  ~WanLink() {
    (void)std::system(("'" PORO_SHARED_DIR "/wanem/wan-down.sh' " + name_ + " >/dev/null 2>&1").c_str());
  }
  WanLink(const WanLink&) = delete;
  WanLink& operator=(const WanLink&) = delete;
  bool up() const { return up_; }
  const std::string& name() const { return name_; }
  // Takes b's side of the link down (its interface) or up again.
  bool SetB(bool up) {
    return std::system(("ip -n " + name_ + "-b link set " + name_ + "b " + (up ? "up" : "down")).c_str()) ==
           0;
  }

 private:
  std::string name_;
  bool up_ = false;
};

TEST_SUITE("integration.liveness") {
  TEST_CASE(
      "a peer stopped with SIGSTOP mid-transfer is detected within 30 s and the transfer resumes after "
      "SIGCONT") {
    bool push = true;
    SUBCASE("push: the receiving daemon stops") { push = true; }
    SUBCASE("pull: the sending daemon stops") { push = false; }
    CAPTURE(push);
    TestFederation fed;
    // b sends slowly in a pull (about 10 MiB/s: 2 streams of 256 KiB chunks, 50 ms each), a in a
    // push, so the transfer is still running when b stops. The idle timeout is the default.
    DaemonOptions slow;
    slow.extra_toml = "[fault_injection]\nsend_delay_us = 50000\n";
    slow.streams = 2;
    slow.chunk_size = "256KiB";
    DaemonOptions plain;
    plain.streams = 2;
    plain.chunk_size = "256KiB";
    DaemonPair p(fed, push ? slow : plain, push ? plain : slow);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    const std::string src = push ? a.Path("big.bin") : b.Path("big.bin");
    const std::string dst = push ? b.Path("big.bin") : a.Path("big.bin");
    WriteRandomFile(src, 48 * kMiB, 41);
    json created = a.Post("/v1/transfers", json{{"source", push ? a.Path("big.bin") : "b:/big.bin"},
                                                {"destination", push ? "b:/big.bin" : a.Path("big.bin")}}
                                               .dump());
    const std::string id = created.value("id", std::string());
    REQUIRE_MESSAGE(!id.empty(), created.dump());
    REQUIRE(WaitUntil([&] { return a.Transfer(id)["progress"].value("bytes_sent", uint64_t{0}) >= 4 * kMiB; },
                      60s, 50ms));

    REQUIRE(::kill(b.pid(), SIGSTOP) == 0);
    const auto stopped = std::chrono::steady_clock::now();
    json t = a.WaitForState(id, {"retrying", "failed", "succeeded"}, 40s);
    const double detected_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - stopped).count();
    ::kill(b.pid(), SIGCONT);
    INFO("record when detected:\n" << t.dump(2));
    CHECK(t["state"] == "retrying");
    CHECK(detected_s < 30.0);
    CHECK(detected_s > 10.0);  // not before the idle timeout: the keepalives kept it alive until then
    CHECK(t["error"].get<std::string>().find("stopped answering") != std::string::npos);
    CHECK(t["error_code"] == "DeadlineExceeded");

    json done = a.WaitForTerminal(id, 120s);
    INFO("final record:\n" << done.dump(2));
    CHECK(done["state"] == "succeeded");
    CHECK(done["attempts"].get<unsigned>() >= 2);
    CHECK(SameContent(src, dst));
    CHECK(Partials(push ? b.export_root() : a.export_root()).empty());
  }

  TEST_CASE(
      "a peer whose network link is taken down mid-transfer is detected within 30 s and the transfer resumes "
      "when the link is up") {
    // a and b each in a network namespace of their own, joined only by an emulated 200 Mbit/s link
    // (10 ms round trip); the test takes b's interface down during a push, then up again.
    REQUIRE_MESSAGE(::geteuid() == 0, "network namespaces need root");
    WanLink wan("pl" + std::to_string(::getpid() % 100000), "--rate 200 --delay-ms 5");
    REQUIRE_MESSAGE(wan.up(), "wan-up.sh failed (is ../shared/wanem beside the checkout?)");
    TestFederation fed;
    DaemonOptions ao, bo;
    ao.netns = wan.name() + "-a";
    ao.ip = "198.18.0.1";
    bo.netns = wan.name() + "-b";
    bo.ip = "198.18.0.2";
    ao.idle_timeout_s = bo.idle_timeout_s = 8;
    DaemonPair p(fed, ao, bo);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    WriteRandomFile(a.Path("big.bin"), 160 * kMiB, 43);  // about 7 s at 200 Mbit/s
    json created =
        a.Post("/v1/transfers", json{{"source", a.Path("big.bin")}, {"destination", "b:/big.bin"}}.dump());
    const std::string id = created.value("id", std::string());
    REQUIRE_MESSAGE(!id.empty(), created.dump());
    REQUIRE(WaitUntil(
        [&] { return a.Transfer(id)["progress"].value("bytes_sent", uint64_t{0}) >= 16 * kMiB; }, 60s, 50ms));

    REQUIRE(wan.SetB(false));
    const auto down = std::chrono::steady_clock::now();
    json t = a.WaitForState(id, {"retrying", "failed", "succeeded"}, 40s);
    const double detected_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - down).count();
    INFO("record when detected:\n" << t.dump(2));
    CHECK(t["state"] == "retrying");
    CHECK(detected_s < 30.0);
    CHECK(t["error"].get<std::string>().find("stopped answering") != std::string::npos);
    // While the link is down the retries fail too; the transfer waits for it, it does not give up.
    std::this_thread::sleep_for(3s);
    CHECK(a.Transfer(id)["state"] != "failed");
    REQUIRE(wan.SetB(true));

    json done = a.WaitForTerminal(id, 180s);
    INFO("final record:\n" << done.dump(2));
    CHECK(done["state"] == "succeeded");
    CHECK(done["attempts"].get<unsigned>() >= 2);
    CHECK(SameContent(a.Path("big.bin"), b.Path("big.bin")));
    CHECK(Partials(b.export_root()).empty());
  }

  TEST_CASE("a long quiet stretch of a live session is kept alive by KEEPALIVE and does not end it") {
    // One large chunk at a time over one slow stream: no control message is needed for longer than
    // the idle timeout (here 2 s, keepalives every 500 ms), yet the session lives.
    TestFederation fed;
    DaemonOptions slow;
    slow.extra_toml = "[fault_injection]\nsend_delay_us = 3000000\n";
    slow.idle_timeout_s = 2;
    slow.streams = 1;
    slow.chunk_size = "1MiB";
    DaemonOptions quick_timeout;
    quick_timeout.idle_timeout_s = 2;
    DaemonPair p(fed, slow, quick_timeout);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    WriteRandomFile(a.Path("f.bin"), 3 * kMiB, 42);  // 3 chunks, 3 s apart: 9 s without control traffic
    CliResult r = Cli(a, {"cp", "--json", a.Path("f.bin"), "b:/f.bin"});
    INFO(r.Describe());
    REQUIRE(r.exit_code == 0);
    CHECK(r.Json()["attempts"] == 1);
    CHECK(SameContent(a.Path("f.bin"), b.Path("f.bin")));
  }
}

}  // namespace
}  // namespace pororoca::test
