// What the CLI tells the user when a request cannot even start: exit codes and messages; how a
// client follows a transfer (the API's long poll).
#include <doctest/doctest.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include "support/daemon_harness.h"

namespace pororoca::test {
namespace {

using json = nlohmann::json;

TEST_SUITE("integration.cli") {
  TEST_CASE("requests that cannot start get the documented exit codes and name the culprit") {
    TestFederation fed;
    DaemonPair p(fed);
    DaemonProcess& a = *p.a;
    WriteFile(a.Path("f.txt"), "payload\n", 0644);
    MakeDir(a.Path("dir"), 0755);
    WriteFile(a.Path("dir/x"), "x\n", 0644);

    SUBCASE("unknown endpoint: exit 4") {
      CliResult r = Cli(a, {"cp", a.Path("f.txt"), "nowhere:/f.txt"});
      INFO(r.Describe());
      CHECK(r.exit_code == 4);
      CHECK(r.err.find("unknown endpoint 'nowhere'") != std::string::npos);
      CHECK(r.err.find("known: b") != std::string::npos);
    }
    SUBCASE("no daemon on the socket: exit 3") {
      const std::string sock = fed.dir() + "/nobody.sock";
      CliResult r = RunCli({"cp", a.Path("f.txt"), "b:/f.txt"}, sock);
      INFO(r.Describe());
      CHECK(r.exit_code == 3);
      CHECK(r.err.find(sock) != std::string::npos);
      CHECK(r.err.find("is the daemon running?") != std::string::npos);
      CliResult s = RunCli({"status"}, sock);
      CHECK(s.exit_code == 3);
    }
    SUBCASE("missing local source: exit 4") {
      CliResult r = Cli(a, {"cp", a.Path("missing.bin"), "b:/x"});
      INFO(r.Describe());
      CHECK(r.exit_code == 4);
      CHECK(r.err.find(a.Path("missing.bin")) != std::string::npos);
    }
    SUBCASE("missing remote source: exit 4") {
      CliResult r = Cli(a, {"cp", "b:/missing.bin", a.Path("x")});
      INFO(r.Describe());
      CHECK(r.exit_code == 4);
      CHECK(r.output().find("missing.bin") != std::string::npos);
      CHECK(!Exists(a.Path("x")));
    }
    SUBCASE("a directory without -r: exit 2") {
      CliResult r = Cli(a, {"cp", a.Path("dir"), "b:/dir"});
      INFO(r.Describe());
      CHECK(r.exit_code == 2);
      CHECK(r.err.find(a.Path("dir")) != std::string::npos);
      CHECK(r.err.find("use -r") != std::string::npos);
      CHECK(!Exists(p.b->Path("dir")));
    }
    SUBCASE("usage errors: exit 2") {
      CHECK(Cli(a, {"cp", a.Path("f.txt")}).exit_code == 2);
      CHECK(Cli(a, {"cp", "--no-such-option", a.Path("f.txt"), "b:/f"}).exit_code == 2);
      CHECK(Cli(a, {"cp", a.Path("f.txt"), a.Path("g.txt")}).exit_code == 2);
      CHECK(Cli(a, {"frobnicate"}).exit_code == 2);
    }
    SUBCASE("unknown transfer id: exit 4") {
      CliResult r = Cli(a, {"status", "0123456789abcdef0123456789abcdef"});
      CHECK(r.exit_code == 4);
      r = Cli(a, {"cancel", "0123456789abcdef0123456789abcdef"});
      CHECK(r.exit_code == 4);
    }
    SUBCASE("endpoints lists the peers") {
      CliResult r = Cli(a, {"endpoints"});
      INFO(r.Describe());
      CHECK(r.exit_code == 0);
      CHECK(r.out.find("self: a") != std::string::npos);
      CHECK(r.out.find(p.b->address()) != std::string::npos);
    }
  }

  // The same user error as "a directory without -r", found by the peer instead of the local daemon.
  TEST_CASE("messages a person can act on: id prefixes, dates, routes, option order, reasons, a busy port") {
    TestFederation fed;
    DaemonPair p(fed);
    DaemonProcess& a = *p.a;
    WriteFile(a.Path("f.txt"), "payload\n", 0644);

    // status and cancel take a unique prefix of a transfer id, as git does for commits.
    CliResult sub = Cli(a, {"cp", "--detach", a.Path("f.txt"), "b:/f.txt"});
    REQUIRE_MESSAGE(sub.exit_code == 0, sub.Describe());
    std::string id = sub.out.substr(0, sub.out.find('\n'));
    REQUIRE(id.size() == 32);
    json done = a.WaitForTerminal(id);
    CHECK(done.value("state", std::string()) == "succeeded");
    CliResult st = Cli(a, {"status", id.substr(0, 7), "--json"});
    INFO(st.Describe());
    CHECK(st.exit_code == 0);
    CHECK(st.Json().value("id", std::string()) == id);
    CliResult none = Cli(a, {"status", "zzzz"});
    CHECK(none.exit_code == 4);
    CHECK(none.err.find("no transfer zzzz") != std::string::npos);
    CliResult cancel = Cli(a, {"cancel", id.substr(0, 7)});
    CHECK_MESSAGE(cancel.exit_code == 0, cancel.Describe());
    CHECK(cancel.out.find(id) != std::string::npos);

    // A day that is not a date is refused, not answered with empty tables.
    CliResult acc = Cli(a, {"accounting", "--since", "yesterday"});
    CHECK(acc.exit_code == 2);
    CHECK(acc.err.find("since must be a day as YYYY-MM-DD, not 'yesterday'") != std::string::npos);
    CHECK(Cli(a, {"accounting", "--until", "2026-02-30"}).exit_code == 2);
    CHECK(Cli(a, {"accounting", "--since", "2024-02-29"}).exit_code == 0);

    // endpoints lists by name, not in the manifest's order.
    DaemonProcess listed_last(fed, "0-late");  // enrolled after a and b: last in the manifest, first by name
    const uint64_t serial = fed.Publish();
    for (int i = 0; i < 150 && a.Get("/v1/federation").value("serial", uint64_t{0}) != serial; ++i)
      std::this_thread::sleep_for(100ms);
    CliResult eps = Cli(a, {"endpoints"});
    INFO(eps.Describe());
    const size_t at_late = eps.out.find("\n  0-late "), at_a = eps.out.find("\n  a "),
                 at_b = eps.out.find("\n  b ");
    CHECK(at_late != std::string::npos);
    CHECK(at_late < at_a);
    CHECK(at_a < at_b);

    // The API names an unknown route as a route (an "endpoint" is a DTN everywhere else).
    json r = a.Get("/v1/nosuch");
    CHECK(r.value("http_status", 0) == 404);
    CHECK(r["error"].value("message", std::string()).find("no such API route: /v1/nosuch") !=
          std::string::npos);

    // --socket after the command: says where it goes.
    CliResult late = RunCli({"status", "--socket", a.socket()}, "/nonexistent.sock");
    CHECK(late.exit_code == 2);
    CHECK(late.err.find("goes before the command: pororoca --socket PATH status") != std::string::npos);

    // activate says what activation does (not the suspension's text).
    CliResult act = RunCli({"federation", "activate", "b", "--dir", fed.ca_dir()}, "/nonexistent.sock");
    CHECK_MESSAGE(act.exit_code == 0, act.Describe());
    CHECK(act.out.find("accept its sessions again") != std::string::npos);
    CHECK(act.out.find("cut") == std::string::npos);

    // A configuration file that cannot be read says why.
    CliResult missing = RunDaemon({"--config", fed.dir() + "/no-such.toml", "--check-config"});
    CHECK(missing.exit_code == 2);
    CHECK(missing.err.find("cannot read config file") != std::string::npos);
    CHECK(missing.err.find("no-such.toml") != std::string::npos);
    CHECK(missing.err.find("No such file or directory") != std::string::npos);

    // A port in use names the setting to change and the file it is in.
    CliResult busy = RunDaemon({"--config", a.config_path()});
    INFO(busy.Describe());
    CHECK(busy.exit_code != 0);
    CHECK(busy.err.find("Address already in use") != std::string::npos);
    CHECK(busy.err.find("[network] listen of " + a.config_path()) != std::string::npos);
  }

  TEST_CASE("progress moves as chunks are verified at the receiver, push and pull, and cp's line shows it") {
    TestFederation fed;
    DaemonOptions slow;
    slow.extra_toml = "[fault_injection]\nsend_delay_us = 60000\n";  // ~3 s for the file below
    DaemonPair p(fed, slow, slow);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    constexpr uint64_t kSize = 192ull << 20;
    WriteRandomFile(a.Path("up.bin"), kSize, 41);
    WriteRandomFile(b.Path("down.bin"), kSize, 42);
    // One file: nothing is committed until its end, yet the verified bytes grow meanwhile.
    auto watch = [&](const std::string& id) {
      bool moving = false;
      for (int i = 0; i < 1200 && !moving; ++i) {  // bounded: 60 s
        const json t = a.Transfer(id);
        const json& pr = t["progress"];
        const uint64_t verified = pr.value("bytes_verified", uint64_t{0});
        moving = pr.value("files_done", uint64_t{1}) == 0 && verified > 0 && verified < kSize;
        if (t.value("state", std::string()) == "succeeded") break;
        std::this_thread::sleep_for(50ms);
      }
      return moving;
    };
    json push = a.Post("/v1/transfers", R"({"source": ")" + a.Path("up.bin") +
                                            R"(", "destination": "b:/up.bin", "chunk_size": "1MiB"})");
    const std::string push_id = push.value("id", std::string());
    CHECK_MESSAGE(watch(push_id), a.Transfer(push_id).dump(2));
    json pushed = a.WaitForTerminal(push_id);
    CHECK(pushed["state"] == "succeeded");
    CHECK(pushed["progress"]["bytes_verified"] == kSize);
    json pull = a.Post("/v1/transfers", R"({"source": "b:/down.bin", "destination": ")" + a.Path("down.bin") +
                                            R"(", "chunk_size": "1MiB"})");
    const std::string pull_id = pull.value("id", std::string());
    CHECK_MESSAGE(watch(pull_id), a.Transfer(pull_id).dump(2));
    CHECK(a.WaitForTerminal(pull_id)["state"] == "succeeded");
    CHECK(SameContent(a.Path("up.bin"), b.Path("up.bin")));
    CHECK(SameContent(b.Path("down.bin"), a.Path("down.bin")));

    // cp's live line: a percentage between 0 and 100 while the file is on its way, and the final
    // line's average rate.
    CliResult cp = Cli(a, {"cp", "--progress", "--chunk", "1MiB", a.Path("up.bin"), "b:/again.bin"});
    INFO(cp.Describe());
    REQUIRE(cp.exit_code == 0);
    bool partial = false;
    size_t at = 0;
    while ((at = cp.err.find("] ", at)) != std::string::npos) {
      at += 2;
      const double pct = std::strtod(cp.err.c_str() + at, nullptr);
      if (pct > 0 && pct < 100) partial = true;
    }
    CHECK(partial);
    const std::string last = cp.err.substr(cp.err.rfind('\r') + 1);
    CHECK(last.find("100.0%") != std::string::npos);
    CHECK(last.find(" 0 B/s") == std::string::npos);
  }

  TEST_CASE(
      "while the peer is down, cp's progress line says which attempt failed, why, and when the next starts") {
    TestFederation fed;
    DaemonPair p(fed);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    WriteFile(a.Path("f.txt"), "payload\n", 0644);
    REQUIRE(b.Stop());
    // cp runs in the background (a shell detaches it; no thread of this process forks meanwhile):
    // its stderr, with the progress line, and its exit code go to files.
    const std::string out = fed.dir() + "/cp.err", rc_file = fed.dir() + "/cp.rc";
    const std::string cmd = "(PORO_SOCKET='" + a.socket() + "' '" + std::string(PORO_CLI_BIN) +
                            "' cp --progress '" + a.Path("f.txt") + "' b:/f.txt 2>'" + out + "'; echo $? >'" +
                            rc_file + "') </dev/null >/dev/null 2>&1 &";
    CliResult bg = RunProgram("/bin/bash", {"-c", cmd}, a.socket(), 30s);
    REQUIRE_MESSAGE(bg.exit_code == 0, bg.Describe());
    std::string id;  // the transfer cp submitted (bounded wait for it to appear)
    for (int i = 0; i < 200 && id.empty(); ++i) {
      std::this_thread::sleep_for(50ms);
      const json listed = a.Get("/v1/transfers");  // (a range over a temporary's member would dangle)
      for (const auto& t : listed["transfers"]) id = t.value("id", std::string());
    }
    REQUIRE_MESSAGE(!id.empty(), a.Get("/v1/transfers").dump() << "\ncp stderr: " << ReadFile(out));
    json waiting = a.WaitForState(id, {"retrying"}, 20s);
    CHECK(waiting.value("state", std::string()) == "retrying");
    CHECK(waiting.value("next_attempt_ms", int64_t(0)) > 0);
    CliResult st = Cli(a, {"status", id});
    {
      INFO(st.Describe());
      CHECK(st.out.find("retrying " + id) != std::string::npos);
      CHECK(st.out.find("next attempt in") != std::string::npos);
    }
    std::this_thread::sleep_for(1500ms);  // a few polls of the waiting cp
    REQUIRE(b.Start());
    for (int i = 0; i < 600 && !Exists(rc_file); ++i) std::this_thread::sleep_for(100ms);  // bounded: 60 s
    REQUIRE(Exists(rc_file));
    const std::string err = ReadFile(out);
    INFO("cp exit code " << ReadFile(rc_file) << "stderr:\n" << err);
    CHECK(ReadFile(rc_file) == "0\n");
    CHECK(err.find("attempt ") != std::string::npos);
    CHECK(err.find(" failed: endpoint b: connect ") != std::string::npos);
    CHECK(err.find("Connection refused; next attempt in ") != std::string::npos);
    CHECK(ReadFile(b.Path("f.txt")) == "payload\n");
  }

  TEST_CASE("pulling a remote directory without -r exits 2 like a local one") {
    TestFederation fed;
    DaemonPair p(fed);
    DaemonProcess& a = *p.a;
    MakeDir(p.b->Path("rdir"), 0755);
    WriteFile(p.b->Path("rdir/x"), "x\n", 0644);
    CliResult r = Cli(a, {"cp", "b:/rdir", a.Path("rdir")});
    INFO(r.Describe());
    CHECK(r.output().find("use -r") != std::string::npos);
    CHECK(!Exists(a.Path("rdir")));
    CHECK(r.exit_code == 2);
  }

  TEST_CASE(
      "finished transfers are forgotten keep_finished_s after they ended, while running and at start-up") {
    TestFederation fed;
    DaemonOptions ao;
    ao.keep_finished_s = 2;
    DaemonPair p(fed, ao);
    DaemonProcess& a = *p.a;
    WriteFile(a.Path("f.txt"), "f\n", 0644);
    auto copy = [&](const std::string& to) {
      CliResult r = Cli(a, {"cp", "-d", a.Path("f.txt"), "b:/" + to});
      INFO(r.Describe());
      REQUIRE(r.exit_code == 0);
      const std::string id = Trim(r.out);
      CHECK(a.WaitForTerminal(id)["state"] == "succeeded");
      return id;
    };
    auto stored = [&](const std::string& id) { return a.StoredRecord(id).is_object(); };

    const std::string first = copy("one.txt");
    CHECK(stored(first));
    std::this_thread::sleep_for(std::chrono::milliseconds(2500));
    // The next transfer's end forgets the first one, which ended more than 2 s ago.
    const std::string second = copy("two.txt");
    CHECK_FALSE(stored(first));
    CHECK(Cli(a, {"status", first}).exit_code == 4);  // unknown transfer
    CHECK(stored(second));
    CHECK(Cli(a, {"status", second}).exit_code == 0);
    CHECK(a.Log().find("forgot 1 transfer(s) that ended more than 2 s ago") != std::string::npos);

    // A restart after the second one's time is up does not load it.
    REQUIRE(a.Stop());
    std::this_thread::sleep_for(std::chrono::milliseconds(2500));
    REQUIRE(a.Start());
    // The API answers before the start-up scan of the records has run: give it a moment.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
    while (stored(second) && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    CHECK_FALSE(stored(second));
    CHECK(Cli(a, {"status", second}).exit_code == 4);
  }

  TEST_CASE(
      "GET /v1/transfers/{id}?wait= answers when the transfer ends, or after the wait with its progress") {
    TestFederation fed;
    DaemonOptions slow;
    slow.chunk_size = "1MiB";
    slow.extra_toml = "[fault_injection]\nsend_delay_us = 100000\n";  // 4 streams x 10 chunks/s
    DaemonPair p(fed, slow);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    WriteRandomFile(a.Path("slow.bin"), 64ull << 20, 21);  // 64 chunks: about 1.6 s
    CliResult r = Cli(a, {"cp", "-d", a.Path("slow.bin"), "b:/slow.bin"});
    INFO(r.Describe());
    REQUIRE(r.exit_code == 0);
    const std::string id = Trim(r.out);
    using Clock = std::chrono::steady_clock;
    auto seconds_since = [](Clock::time_point t0) {
      return std::chrono::duration<double>(Clock::now() - t0).count();
    };

    auto t0 = Clock::now();
    auto t = a.Get("/v1/transfers/" + id + "?wait=0.3");
    double waited = seconds_since(t0);
    CHECK(t["state"] != "succeeded");
    CHECK(t["state"] != "failed");
    CHECK_MESSAGE(waited >= 0.25, "a wait of 0.3 s answered after " << waited << " s");
    CHECK_MESSAGE(waited < 1.5, "a wait of 0.3 s answered after " << waited << " s");

    t0 = Clock::now();
    t = a.Get("/v1/transfers/" + id + "?wait=20");
    waited = seconds_since(t0);
    CHECK(t["state"] == "succeeded");
    CHECK_MESSAGE(waited < 15, "the transfer's end was answered after " << waited << " s");
    CHECK(CompareTrees(a.Path("slow.bin"), b.Path("slow.bin")).empty());

    t0 = Clock::now();  // an ended transfer: at once
    t = a.Get("/v1/transfers/" + id + "?wait=20");
    CHECK(t["state"] == "succeeded");
    CHECK(seconds_since(t0) < 2);

    for (const char* bad : {"abc", "-1", "", "1s"}) {
      CAPTURE(bad);
      auto e = a.Get("/v1/transfers/" + id + "?wait=" + bad);
      CHECK(e.value("http_status", 0) == 400);
      CHECK(e["error"].value("message", std::string()).find("wait must be a number of seconds") !=
            std::string::npos);
    }
  }
}

}  // namespace
}  // namespace pororoca::test
