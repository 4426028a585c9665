// Live sessions: a peer that stops answering in the middle of a transfer (its daemon stopped with
// SIGSTOP) is detected by the control connection's idle timeout ([network] idle_timeout_s, 20 s by
// default, KEEPALIVE every 5 s meanwhile), the session ends with an error that says so, and the
// transfer resumes when the peer is back (SIGCONT).
#include <doctest/doctest.h>
#include <signal.h>

#include <chrono>
#include <string>

#include "support/daemon_harness.h"

namespace pororoca::test {
namespace {

using nlohmann::json;

constexpr uint64_t kMiB = 1ull << 20;

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
