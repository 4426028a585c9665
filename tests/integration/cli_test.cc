// What the CLI tells the user when a request cannot even start: exit codes and messages.
#include <doctest/doctest.h>

#include <string>

#include "support/daemon_harness.h"

namespace pororoca::test {
namespace {

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
}

}  // namespace
}  // namespace pororoca::test
