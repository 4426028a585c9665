// Confinement and authentication: paths that try to leave an export root, and peers whose
// certificates must not be accepted.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "support/daemon_harness.h"

namespace pororoca::test {
namespace {

constexpr int kExitDenied = 5;

TEST_SUITE("integration.security") {
  TEST_CASE("paths that leave the export root are refused on both sides") {
    TestFederation fed;
    DaemonPair p(fed);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    WriteFile(a.Path("f.txt"), "payload\n", 0644);
    const std::string elsewhere = fed.dir() + "/elsewhere";
    MakeDir(elsewhere, 0755);
    WriteFile(elsewhere + "/secret", "outside\n", 0644);
    REQUIRE(::symlink(elsewhere.c_str(), b.Path("out").c_str()) == 0);
    REQUIRE(::symlink("../../elsewhere", b.Path("out-rel").c_str()) == 0);

    SUBCASE("push to b:/../x") {
      CliResult r = Cli(a, {"cp", a.Path("f.txt"), "b:/../x"});
      INFO(r.Describe());
      CHECK(r.exit_code == kExitDenied);
      CHECK(r.output().find("escapes the export root") != std::string::npos);
      CHECK(!Exists(b.dir() + "/x"));
    }
    SUBCASE("push into a symlink that points outside") {
      for (const std::string dst : {"b:/out/", "b:/out-rel/"}) {
        CliResult r = Cli(a, {"cp", a.Path("f.txt"), dst});
        INFO(dst << ": " << r.Describe());
        CHECK(r.exit_code != 0);
        CHECK(r.exit_code != 1);  // refused up front, not a failed transfer
      }
      for (const std::string dst : {"b:/out/f.txt", "b:/out-rel/f.txt"}) {
        CliResult r = Cli(a, {"cp", a.Path("f.txt"), dst});
        INFO(dst << ": " << r.Describe());
        CHECK(r.exit_code == kExitDenied);
        CHECK(r.output().find("escapes the export root") != std::string::npos);
      }
      MakeDir(a.Path("tree"), 0755);
      WriteFile(a.Path("tree/g.txt"), "g\n", 0644);
      CliResult r = Cli(a, {"cp", "-r", a.Path("tree"), "b:/out/tree"});
      INFO(r.Describe());
      CHECK(r.exit_code == kExitDenied);
      CHECK(!Exists(elsewhere + "/f.txt"));
      CHECK(!Exists(elsewhere + "/tree"));
      CHECK(Partials(elsewhere).empty());
      CHECK(ReadFile(elsewhere + "/secret") == "outside\n");
    }
    SUBCASE("pull of b:/../../etc/passwd and through an outward symlink") {
      CliResult r = Cli(a, {"cp", "b:/../../etc/passwd", a.Path("passwd")});
      {
        INFO(r.Describe());
        CHECK(r.exit_code == kExitDenied);
        CHECK(r.output().find("escapes the export root") != std::string::npos);
        CHECK(!Exists(a.Path("passwd")));
      }
      r = Cli(a, {"cp", "b:/out/secret", a.Path("secret")});
      {
        INFO(r.Describe());
        CHECK(r.exit_code == kExitDenied);
        CHECK(r.output().find("escapes the export root") != std::string::npos);
        CHECK(!Exists(a.Path("secret")));
      }
      r = Cli(a, {"cp", "-r", "b:/out-rel", a.Path("copy")});
      {
        INFO(r.Describe());
        CHECK(r.exit_code != 0);
        CHECK(!Exists(a.Path("copy")));
      }
    }
    SUBCASE("local paths outside the local export root") {
      CliResult r = Cli(a, {"cp", "/etc/hostname", "b:/hostname"});
      {
        INFO(r.Describe());
        CHECK(r.exit_code == kExitDenied);
        CHECK(r.output().find("outside the export root") != std::string::npos);
        CHECK(!Exists(b.Path("hostname")));
      }
      WriteFile(b.Path("r.txt"), "r\n", 0644);
      r = Cli(a, {"cp", "b:/r.txt", fed.dir() + "/r.txt"});
      INFO(r.Describe());
      CHECK(r.exit_code == kExitDenied);
      CHECK(!Exists(fed.dir() + "/r.txt"));
    }
    CHECK(Partials(a.export_root()).empty());
    CHECK(Partials(b.export_root()).empty());
  }

  TEST_CASE("a peer presenting a certificate from another CA is refused") {
    TestFederation fed;
    DaemonOptions rogue;
    rogue.tls = fed.IssueFromOtherAuthority("rogue-ca", "b");
    DaemonPair p(fed, {}, rogue);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    WriteFile(a.Path("f.txt"), "payload\n", 0644);
    WriteFile(b.Path("g.txt"), "payload\n", 0644);

    CliResult r = Cli(a, {"cp", a.Path("f.txt"), "b:/f.txt"}, 60s);
    {
      INFO(r.Describe());
      CHECK(r.exit_code != 0);
      CHECK(r.exit_code == kExitDenied);
      CHECK(ContainsNoCase(r.output(), "TLS"));
      CHECK(ContainsNoCase(r.output(), "certificate"));
      CHECK(!Exists(b.Path("f.txt")));
    }
    // The other direction: b (rogue) initiates, a refuses it.
    r = Cli(b, {"cp", b.Path("g.txt"), "a:/g.txt"}, 60s);
    {
      INFO(r.Describe());
      CHECK(r.exit_code != 0);
      CHECK((ContainsNoCase(r.output(), "certificate") || ContainsNoCase(r.output(), "TLS")));
      CHECK(!Exists(a.Path("g.txt")));
    }
    // Both refusals are in a's audit log: as the connecting side and as the accepting side.
    bool connect_refused = false, accept_refused = false;
    for (const auto& rec : a.AuditRecords("handshake")) {
      if (rec.value("decision", std::string()) != "refused") continue;
      if (!ContainsNoCase(rec.value("reason", std::string()), "certificate")) continue;
      if (rec.value("role", std::string()) == "connect") connect_refused = true;
      if (rec.value("role", std::string()) == "accept") accept_refused = true;
    }
    CHECK(connect_refused);
    CHECK(accept_refused);
  }

  TEST_CASE("a peer presenting an expired certificate is refused") {
    TestFederation fed;
    DaemonOptions expired;
    expired.tls = fed.IssueExpired("b");
    DaemonProcess a(fed, "a");
    DaemonProcess b(fed, "b", expired);
    REQUIRE(a.Start());
    if (!b.Start()) return;  // refusing to start with an expired certificate is fine too (reported by Start)
    WriteFile(a.Path("f.txt"), "payload\n", 0644);
    CliResult r = Cli(a, {"cp", a.Path("f.txt"), "b:/f.txt"}, 60s);
    INFO(r.Describe());
    CHECK(r.exit_code == kExitDenied);
    CHECK(ContainsNoCase(r.output(), "expired"));
    CHECK(!Exists(b.Path("f.txt")));
    bool audited = false;
    for (const auto& rec : a.AuditRecords("handshake")) {
      if (rec.value("decision", std::string()) == "refused" &&
          ContainsNoCase(rec.value("reason", std::string()), "expired")) {
        audited = true;
      }
    }
    CHECK_MESSAGE(audited, "a has no audit record of refusing b's expired certificate");
  }

  TEST_CASE("a valid certificate of an endpoint that is not in the manifest is refused") {
    TestFederation fed;
    DaemonOptions unlisted;
    unlisted.enroll = false;  // certificate from the federation CA, but not homologated
    DaemonProcess a(fed, "a");
    DaemonProcess b(fed, "b");
    DaemonProcess c(fed, "c", unlisted);
    REQUIRE(a.Start());
    REQUIRE(b.Start());
    REQUIRE(c.Start());
    WriteFile(c.Path("f.txt"), "from c\n", 0644);

    // The refusal is final and immediate: one attempt, not retried as a network error. (b refuses
    // before reading c's HELLO; repeated a few times because losing b's ERROR is a race.)
    for (int i = 0; i < 5; ++i) {
      CliResult r = Cli(c, {"cp", "--json", c.Path("f.txt"), "b:/f.txt"}, 60s);
      INFO("try " << i << ": " << r.Describe());
      CHECK(r.exit_code == kExitDenied);
      CHECK(r.output().find("'c' is not a homologated endpoint in federation 'test-federation'") !=
            std::string::npos);
      CHECK(r.Json().value("attempts", 0u) == 1);
      CHECK(!Exists(b.Path("f.txt")));
    }
    CliResult r = Cli(c, {"cp", "b:/f.txt", c.Path("g.txt")}, 60s);
    {
      INFO(r.Describe());
      CHECK(r.exit_code == kExitDenied);
      CHECK(!Exists(c.Path("g.txt")));
    }
    auto recs = b.AuditRecords("handshake");
    bool audited = false;
    for (const auto& rec : recs) {
      if (rec.value("peer", std::string()) == "c" && rec.value("decision", std::string()) == "refused")
        audited = true;
    }
    CHECK_MESSAGE(audited, "b has no audit record of refusing c");
  }

  TEST_CASE("the control-plane service's certificate cannot act as a DTN, and its name cannot become one") {
    TestFederation fed;
    CliResult svc =
        RunCli({"federation", "add-service", "fedd", "--dir", fed.ca_dir()}, "/nonexistent.sock", 30s);
    REQUIRE_MESSAGE(svc.exit_code == 0, svc.Describe());
    const std::string crt = fed.ca_dir() + "/services/fedd.crt", key = fed.ca_dir() + "/services/fedd.key";
    REQUIRE(Exists(crt));
    REQUIRE(Exists(key));
    DaemonOptions so;
    so.enroll = false;
    so.tls = TlsFiles{fed.ca_cert(), crt, key};
    DaemonProcess a(fed, "a");
    DaemonProcess b(fed, "b");
    DaemonProcess s(fed, "fedd", so);  // a daemon presenting the service's certificate
    REQUIRE(a.Start());
    REQUIRE(b.Start());
    REQUIRE(s.Start());
    // The authority will not list the service's name as an endpoint, nor issue a service under an
    // endpoint's name.
    CliResult ep = RunCli({"federation", "add-endpoint", "fedd", "--dir", fed.ca_dir(), "--institution",
                           "inst-a", "--address", "127.0.0.1:1"},
                          "/nonexistent.sock", 30s);
    CHECK(ep.exit_code != 0);
    CHECK(ep.err.find("'fedd' is the control-plane service's name") != std::string::npos);
    CliResult dup =
        RunCli({"federation", "add-service", "a", "--dir", fed.ca_dir()}, "/nonexistent.sock", 30s);
    CHECK(dup.exit_code != 0);
    CHECK(dup.err.find("'a' is an endpoint") != std::string::npos);
    WriteFile(s.Path("f.txt"), "from the service\n", 0644);
    CliResult r = Cli(s, {"cp", s.Path("f.txt"), "b:/f.txt"}, 60s);
    INFO(r.Describe());
    CHECK(r.exit_code == kExitDenied);
    CHECK(r.output().find("'fedd' is not a homologated endpoint") != std::string::npos);
    CHECK(!Exists(b.Path("f.txt")));
  }

  TEST_CASE("an endpoint answering at another endpoint's address is refused") {
    TestFederation fed;
    DaemonProcess a(fed, "a");
    DaemonProcess c(fed, "c");
    REQUIRE(c.Start());
    // "b" is homologated at c's address: whoever answers there must present b's key.
    fed.Enroll("b", "inst-b", c.address(), fed.IssueEndpoint("b").cert);
    REQUIRE(a.Start());
    WriteFile(a.Path("from-a.txt"), "from a\n", 0644);
    CliResult r = Cli(a, {"cp", a.Path("from-a.txt"), "b:/from-a.txt"}, 60s);
    INFO(r.Describe());
    CHECK(r.exit_code == kExitDenied);
    CHECK(r.output().find("presented the certificate of 'c', expected 'b'") != std::string::npos);
    CHECK(!Exists(c.Path("from-a.txt")));
  }
}

}  // namespace
}  // namespace pororoca::test
