// The control plane end to end: the signed manifest (bad signature, older serial, hot reload),
// the homologated-endpoint check (wrong pin, suspended, revoked mid-transfer), the policy (pair,
// direction, path prefix, classification, time window, rate cap, concurrency cap) and bearer tokens
// (expired, wrong audience, wrong scope, bad signature, unknown issuer). Every refusal is checked
// for its message and its audit record.
#include <doctest/doctest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <filesystem>
#include <map>
#include <string>
#include <thread>

#include "base/file_util.h"
#include "controlplane/client.h"
#include "daemon/fedd/server.h"
#include "support/daemon_harness.h"

namespace pororoca::test {
namespace {

using json = nlohmann::json;
constexpr int kExitDenied = 5;

// True if some audit record of `d` has event `event`, decision `decision` and a reason containing
// `needle` (any reason if empty).
bool Audited(const DaemonProcess& d, const std::string& event, const std::string& decision,
             const std::string& needle = "") {
  for (const auto& r : d.AuditRecords(event)) {
    if (r.value("decision", std::string()) != decision) continue;
    if (needle.empty() || r.value("reason", std::string()).find(needle) != std::string::npos) return true;
  }
  return false;
}

// Waits until the daemon's manifest serial is `serial` (bounded).
bool WaitSerial(const DaemonProcess& d, uint64_t serial, std::chrono::milliseconds timeout = 15s) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (d.Get("/v1/federation").value("serial", uint64_t{0}) == serial) return true;
    std::this_thread::sleep_for(100ms);
  }
  return false;
}

// A daemon that sends slowly (about 10 MiB/s: 2 streams of 256 KiB chunks, each chunk delayed 50 ms),
// so a transfer is still running when a test acts on it.
DaemonOptions SlowSender() {
  DaemonOptions o;
  o.extra_toml = "[fault_injection]\nsend_delay_us = 50000\n";
  o.streams = 2;
  o.chunk_size = "256KiB";
  return o;
}

// Every file below `dir` (relative path -> contents), and every directory (-> "<dir>").
std::map<std::string, std::string> TreeContents(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    std::string rel = std::filesystem::relative(e.path(), dir).string();
    out[rel] = e.is_directory() ? std::string("<dir>") : ReadFile(e.path().string());
  }
  return out;
}

std::string IssueToken(TestFederation& fed, const std::string& institution,
                       const std::vector<std::string>& extra) {
  std::vector<std::string> args{"token",     "issue",
                                "--key",     fed.IssuerKey(institution),
                                "--issuer",  fed.IssuerId(institution),
                                "--subject", "alice@" + institution};
  args.insert(args.end(), extra.begin(), extra.end());
  CliResult r = RunCli(args, "/nonexistent.sock", 30s);
  REQUIRE_MESSAGE(r.exit_code == 0, r.Describe());
  std::string t = r.out;
  while (!t.empty() && t.back() == '\n') t.pop_back();
  return t;
}

// A control-plane service publishing fed's manifest and collecting accounting reports.
std::unique_ptr<fedd::Service> StartFedd(TestFederation& fed) {
  TlsFiles svc = fed.IssueEndpoint("fedd");
  fed.Publish();
  MakeDir(fed.dir() + "/accounting", 0700);
  fedd::Config fc;
  fc.listen = "127.0.0.1:0";
  fc.tls_ca = fed.ca_cert();
  fc.tls_cert = svc.cert;
  fc.tls_key = svc.key;
  fc.manifest_file = fed.manifest_path();
  fc.accounting_dir = fed.dir() + "/accounting";
  auto service = fedd::Service::Create(fc);
  REQUIRE_MESSAGE(service.has_value(), service.error().ToString());
  REQUIRE((*service)->Start().ok());
  return std::move(*service);
}

// An operator's client of that service (for the federation-wide accounting).
controlplane::ClientConfig OperatorClient(TestFederation& fed, const std::string& url) {
  controlplane::ClientConfig cc;
  cc.url = url;
  cc.ca_file = fed.ca_cert();
  TlsFiles client = fed.IssueEndpoint("operator");
  cc.cert_file = client.cert;
  cc.key_file = client.key;
  cc.server_name = "fedd";
  return cc;
}

// The service's federation-wide accounting once both daemons have reported (report_s = 1): waits
// for the first report, then for a full round more. REQUIREs that a report arrived.
json SettledTotals(const controlplane::ClientConfig& cc) {
  bool reported = false;
  for (int i = 0; i < 100 && !reported; ++i) {
    auto t = controlplane::FetchAccounting(cc);
    reported = t.has_value() && t->value("total", json::object()).value("bytes", uint64_t{0}) > 0;
    if (!reported) std::this_thread::sleep_for(200ms);
  }
  REQUIRE_MESSAGE(reported, "no accounting report from the daemons reached the service");
  std::this_thread::sleep_for(2500ms);
  auto totals = controlplane::FetchAccounting(cc);
  REQUIRE(totals.has_value());
  return *totals;
}

TEST_SUITE("integration.federation") {
  TEST_CASE("daemons follow the control-plane service: manifest over HTTPS, suspension, accounting reports") {
    TestFederation fed;
    auto service = StartFedd(fed);
    DaemonOptions o;
    o.manifest_url = "https://127.0.0.1:" + std::to_string(service->port());
    o.report_s = 1;
    DaemonPair p(fed, o, o);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    uint64_t s = fed.Publish();
    REQUIRE(WaitSerial(a, s));
    REQUIRE(WaitSerial(b, s));
    CHECK(a.Get("/v1/federation").value("source", std::string()) == o.manifest_url);

    WriteFile(a.Path("f.txt"), "via the service\n");
    CliResult r = Cli(a, {"cp", a.Path("f.txt"), "b:/f.txt"}, 60s);
    CHECK_MESSAGE(r.exit_code == 0, r.Describe());
    CHECK(ReadFile(b.Path("f.txt")) == "via the service\n");

    // The daemons report accounting to the service: the federation-wide totals show the pair.
    // Counted once federation-wide (the receiver reports it), though both daemons account it.
    json again = SettledTotals(OperatorClient(fed, o.manifest_url));
    INFO(again.dump(2));
    CHECK(again.dump().find("inst-b") != std::string::npos);
    CHECK(again["total"].value("bytes", uint64_t{0}) == 16);
    CHECK(again["total"].value("files", uint64_t{0}) == 1);
    CHECK(a.Get("/v1/accounting")["total"].value("bytes", uint64_t{0}) == 16);

    // Suspension published through the service reaches both daemons.
    fed.SetStatus("b", "suspended");
    s = fed.Publish();
    REQUIRE(WaitSerial(a, s));
    r = Cli(a, {"cp", a.Path("f.txt"), "b:/g.txt"}, 60s);
    CHECK(r.exit_code == kExitDenied);
    CHECK(r.output().find("'b' is suspended") != std::string::npos);
    service->Stop();
  }

  TEST_CASE("a transfer between two DTNs of one institution is counted once by the service") {
    TestFederation fed;
    auto service = StartFedd(fed);
    DaemonOptions o;
    o.manifest_url = "https://127.0.0.1:" + std::to_string(service->port());
    o.report_s = 1;
    o.institution = "inst-same";
    DaemonPair p(fed, o, o);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    WriteFile(a.Path("f.txt"), "inside one institution\n");  // 23 bytes
    CliResult r = Cli(a, {"cp", a.Path("f.txt"), "b:/f.txt"}, 60s);
    REQUIRE_MESSAGE(r.exit_code == 0, r.Describe());
    // Both daemons account it locally (sent at a, received at b)...
    CHECK(a.Get("/v1/accounting")["total"].value("bytes", uint64_t{0}) == 23);
    CHECK(b.Get("/v1/accounting")["total"].value("bytes", uint64_t{0}) == 23);
    // ...and only the receiving one reports it: the federation total is 23 bytes, not 46.
    json totals = SettledTotals(OperatorClient(fed, o.manifest_url));
    INFO(totals.dump(2));
    CHECK(totals["total"].value("bytes", uint64_t{0}) == 23);
    CHECK(totals["total"].value("files", uint64_t{0}) == 1);
    service->Stop();
  }

  TEST_CASE(
      "manifest: bad signature and older serial are refused, a newer one is picked up without restart") {
    TestFederation fed;
    DaemonPair p(fed);
    DaemonProcess& a = *p.a;
    uint64_t s1 = fed.Publish();
    REQUIRE(WaitSerial(a, s1));
    auto old_copy = ReadSmallFile(fed.manifest_path());
    REQUIRE(old_copy.has_value());
    uint64_t s2 = fed.Publish();
    REQUIRE(WaitSerial(a, s2));

    // Older serial, correctly signed: refused, the newer one stays in force.
    REQUIRE(WriteFileAtomic(fed.manifest_path(), *old_copy, 0644).ok());
    json r = a.Post("/v1/federation/refresh", "");
    CHECK(r.value("http_status", 0) == 403);
    CHECK(r.dump().find("is older than the manifest in force") != std::string::npos);
    CHECK(a.Get("/v1/federation").value("serial", uint64_t{0}) == s2);
    CHECK(Audited(a, "manifest", "refused", "is older than the manifest in force"));

    // A body edited after signing (an endpoint re-pointed): the signature no longer verifies.
    json env = json::parse(*old_copy);
    env["manifest"]["serial"] = s2 + 10;
    env["manifest"]["endpoints"][0]["address"] = "127.0.0.1:1";
    REQUIRE(WriteFileAtomic(fed.manifest_path(), env.dump(), 0644).ok());
    r = a.Post("/v1/federation/refresh", "");
    CHECK(r.value("http_status", 0) == 403);
    CHECK(r.dump().find("signature does not verify with the pinned authority key") != std::string::npos);
    CHECK(a.Get("/v1/federation").value("serial", uint64_t{0}) == s2);
    CHECK(Audited(a, "manifest", "refused", "signature does not verify"));

    // A restart with the bad file as source keeps the last good copy.
    REQUIRE(a.Stop());
    REQUIRE(a.Start());
    CHECK(a.Get("/v1/federation").value("serial", uint64_t{0}) == s2 + 1);  // Start() published s2+1
    // The daemon still moves data.
    WriteFile(a.Path("f.txt"), "still works\n");
    CliResult c = Cli(a, {"cp", a.Path("f.txt"), "b:/f.txt"});
    INFO(c.Describe());
    CHECK(c.exit_code == 0);
    CHECK(ReadFile(p.b->Path("f.txt")) == "still works\n");
  }

  TEST_CASE("handshake: right CA but wrong pin, and a suspended endpoint, are refused with an audit record") {
    TestFederation fed;
    DaemonOptions bo;
    bo.tls = fed.IssueEndpoint("b", {}, "presented");
    bo.enroll = false;
    DaemonProcess a(fed, "a");
    DaemonProcess b(fed, "b", bo);
    // The manifest pins another key of b's (a certificate b does not present).
    fed.Enroll("b", "inst-b", b.address(), fed.IssueEndpoint("b", {}, "pinned").cert);
    REQUIRE(a.Start());
    REQUIRE(b.Start());
    WriteFile(a.Path("f.txt"), "x\n");
    CliResult r = Cli(a, {"cp", a.Path("f.txt"), "b:/f.txt"}, 60s);
    {
      INFO(r.Describe());
      CHECK(r.exit_code == kExitDenied);
      CHECK(r.output().find("endpoint 'b' presented a key with pin") != std::string::npos);
      CHECK(!Exists(b.Path("f.txt")));
      CHECK(Audited(a, "handshake", "refused", "presented a key with pin"));
    }
    // The other way round: b connects to a, a refuses b on accept.
    WriteFile(b.Path("g.txt"), "y\n");
    r = Cli(b, {"cp", b.Path("g.txt"), "a:/g.txt"}, 60s);
    {
      INFO(r.Describe());
      CHECK(r.exit_code == kExitDenied);
      CHECK(!Exists(a.Path("g.txt")));
      CHECK(Audited(a, "handshake", "refused", "presented a key with pin"));
    }

    // Suspension: the right key, but the endpoint is suspended.
    fed.Enroll("b", "inst-b", b.address(), bo.tls->cert);
    fed.SetStatus("b", "suspended");
    uint64_t s = fed.Publish();
    REQUIRE(WaitSerial(a, s));
    REQUIRE(WaitSerial(b, s));
    r = Cli(a, {"cp", a.Path("f.txt"), "b:/f.txt"}, 60s);
    {
      INFO(r.Describe());
      CHECK(r.exit_code == kExitDenied);
      CHECK(r.output().find("endpoint 'b' is suspended in federation 'test-federation'") !=
            std::string::npos);
      CHECK(!Exists(b.Path("f.txt")));
    }
    r = Cli(b, {"cp", b.Path("g.txt"), "a:/g.txt"}, 60s);
    {
      INFO(r.Describe());
      CHECK(r.exit_code == kExitDenied);
      CHECK(r.output().find("'b' is suspended") != std::string::npos);
      CHECK(Audited(a, "handshake", "refused", "'b' is suspended"));
    }
    // Re-activated: works again.
    fed.SetStatus("b", "active");
    s = fed.Publish();
    REQUIRE(WaitSerial(a, s));
    REQUIRE(WaitSerial(b, s));
    r = Cli(a, {"cp", a.Path("f.txt"), "b:/f.txt"}, 60s);
    INFO(r.Describe());
    CHECK(r.exit_code == 0);
    CHECK(Audited(b, "handshake", "accepted"));
  }

  TEST_CASE("revoking an endpoint cuts its transfer in flight within 30 s, leaving no partial file") {
    TestFederation fed;
    const DaemonOptions slow = SlowSender();
    DaemonPair p(fed, slow, {});
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    WriteRandomFile(a.Path("big.bin"), 256ull << 20, 7);
    CliResult sub = Cli(a, {"cp", "--detach", a.Path("big.bin"), "b:/big.bin"});
    REQUIRE_MESSAGE(sub.exit_code == 0, sub.Describe());
    std::string id = sub.out.substr(0, sub.out.find('\n'));
    json t = a.WaitForState(id, {"running"}, 30s);
    REQUIRE(t.value("state", std::string()) == "running");
    std::this_thread::sleep_for(1s);
    fed.SetStatus("b", "revoked");
    auto t0 = std::chrono::steady_clock::now();
    fed.Publish();
    t = a.WaitForTerminal(id, 60s);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    INFO(t.dump(2));
    CHECK(t.value("state", std::string()) == "failed");
    CHECK(t.value("error", std::string()).find("session cut: endpoint 'b' is revoked") != std::string::npos);
    CHECK(secs < 30.0);
    CHECK(!Exists(b.Path("big.bin")));
    // Whichever end installed the new manifest first cut the session (each refreshes on its own).
    CHECK((Audited(a, "session", "cut") || Audited(b, "session", "cut")));
    // b's own record says why its session ended: the cut (told by a before it closed anything, or
    // found by b itself in the new manifest), not a closed data connection.
    bool b_knows = false;
    for (int i = 0; i < 100 && !b_knows; ++i) {
      b_knows = Audited(b, "transfer_end", "failed", "endpoint 'b' is revoked") ||
                Audited(b, "session", "cut", "endpoint 'b' is revoked");
      if (!b_knows) std::this_thread::sleep_for(100ms);
    }
    CHECK(b_knows);
    CHECK(!Audited(b, "transfer_end", "failed", "data channel"));
    // b learns of its own revocation too and cuts from its side; a later attempt is refused at once.
    CliResult again = Cli(a, {"cp", a.Path("big.bin"), "b:/big2.bin"}, 60s);
    CHECK(again.exit_code == kExitDenied);
    CHECK(again.output().find("'b' is revoked") != std::string::npos);
  }

  TEST_CASE(
      "policy: default deny and rules by pair, direction, path prefix, classification and time window") {
    TestFederation fed;
    DaemonOptions ao;
    ao.extra_toml =
        "[[classification]]\npath = \"/clinical\"\nlabel = \"restricted\"\n"
        "[[classification]]\npath = \"/datasets/private\"\nlabel = \"restricted\"\n";
    DaemonPair p(fed, ao, {});
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    MakeDir(a.Path("datasets"));
    MakeDir(a.Path("clinical"));
    MakeDir(b.Path("scratch"));
    MakeDir(b.Path("home"));
    WriteFile(a.Path("datasets/d.txt"), "dataset\n");
    WriteFile(a.Path("clinical/c.txt"), "patient\n");
    WriteFile(b.Path("scratch/r.txt"), "result\n");
    // Time window: never now (a one-minute window 12 hours away).
    std::time_t now = std::time(nullptr);
    std::tm tm;
    gmtime_r(&now, &tm);
    char start[8], end[8];
    std::snprintf(start, sizeof start, "%02d:%02d", (tm.tm_hour + 12) % 24, tm.tm_min);
    std::snprintf(end, sizeof end, "%02d:%02d", (tm.tm_hour + 12) % 24, (tm.tm_min + 1) % 60);
    fed.SetRules(json::array({
        {{"id", "no-restricted-out"}, {"effect", "deny"}, {"classifications", {"restricted"}}},
        {{"id", "night-archive"},
         {"effect", "allow"},
         {"source", {"inst-a"}},
         {"destination", {"inst-b"}},
         {"source_paths", {"/archive"}},
         {"time_window", {{"start", start}, {"end", end}}}},
        {{"id", "a-datasets-to-b-scratch"},
         {"effect", "allow"},
         {"source", {"inst-a"}},
         {"destination", {"inst-b"}},
         {"direction", "push"},
         {"source_paths", {"/datasets"}},
         {"destination_paths", {"/scratch"}}},
    }));
    uint64_t s = fed.Publish();
    REQUIRE(WaitSerial(a, s));
    REQUIRE(WaitSerial(b, s));

    // Allowed, by the rule that says so.
    CliResult r = Cli(a, {"policy", "check", a.Path("datasets/d.txt"), "b:/scratch/d.txt"});
    CHECK_MESSAGE(r.exit_code == 0, r.Describe());
    CHECK(r.out.find("allowed by rule 'a-datasets-to-b-scratch'") != std::string::npos);
    r = Cli(a, {"cp", a.Path("datasets/d.txt"), "b:/scratch/d.txt"});
    CHECK_MESSAGE(r.exit_code == 0, r.Describe());
    CHECK(ReadFile(b.Path("scratch/d.txt")) == "dataset\n");
    CHECK(Audited(b, "transfer", "allowed"));

    struct Case {
      const char* what;
      std::vector<std::string> args;  // on a, after "cp"
      const char* message;
    };
    std::vector<Case> cases{
        {"destination path prefix", {a.Path("datasets/d.txt"), "b:/home/d.txt"}, "default deny"},
        {"classification",
         {a.Path("clinical/c.txt"), "b:/scratch/c.txt"},
         "denied by rule 'no-restricted-out'"},
        {"direction (pull of b's data by a is b -> a)",
         {"b:/scratch/r.txt", a.Path("r.txt")},
         "default deny"},
    };
    MakeDir(a.Path("archive"));
    WriteFile(a.Path("archive/old.txt"), "old\n");
    cases.push_back({"time window (the archive rule is outside its window)",
                     {a.Path("archive/old.txt"), "b:/scratch/"},
                     "default deny"});
    for (const auto& c : cases) {
      std::vector<std::string> args{"cp"};
      args.insert(args.end(), c.args.begin(), c.args.end());
      CliResult cr = Cli(a, args, 60s);
      INFO(c.what << ": " << cr.Describe());
      CHECK(cr.exit_code == kExitDenied);
      CHECK(cr.output().find(c.message) != std::string::npos);
      // Whichever end decided first wrote a "transfer" "denied" record with that reason.
      CHECK((Audited(a, "transfer", "denied", c.message) || Audited(b, "transfer", "denied", c.message)));
    }
    // Institution pair: b pushing to a (inst-b -> inst-a) has no rule.
    CliResult pair = Cli(b, {"cp", b.Path("scratch/r.txt"), "a:/r-from-b.txt"}, 60s);
    {
      INFO(pair.Describe());
      CHECK(pair.exit_code == kExitDenied);
      CHECK(pair.output().find("default deny: no rule allows inst-b -> inst-a") != std::string::npos);
      CHECK(Audited(b, "transfer", "denied", "no rule allows inst-b -> inst-a"));
      CHECK(!Exists(a.Path("r-from-b.txt")));
    }
    // A tree whose root is allowed but which holds a restricted sub-tree is refused as a whole.
    MakeDir(a.Path("datasets/private"));
    WriteFile(a.Path("datasets/private/p.txt"), "private\n");
    CliResult tree = Cli(a, {"cp", "-r", a.Path("datasets"), "b:/scratch/"}, 60s);
    {
      INFO(tree.Describe());
      CHECK(tree.exit_code == kExitDenied);
      CHECK(tree.output().find("/datasets/private inside the tree is classified 'restricted'") !=
            std::string::npos);
      CHECK(!Exists(b.Path("scratch/datasets")));
    }
    CHECK(!Exists(b.Path("home/d.txt")));
    CHECK(!Exists(b.Path("scratch/c.txt")));
    CHECK(!Exists(a.Path("r.txt")));
    // The responder decided first (at OPEN) and audited it; the initiator never got that far.
    CHECK(Audited(b, "transfer", "denied", "denied by rule 'no-restricted-out'"));

    // Pair and time window through policy check (no data moves): a -> b of /archive outside its window,
    // and b -> a, which no rule names.
    r = Cli(a, {"policy", "check", a.Path("archive/old.txt"), "b:/scratch/x"});
    CHECK(r.exit_code == kExitDenied);
    CHECK(r.out.find("default deny") != std::string::npos);
    CHECK(r.out.find("night-archive") != std::string::npos);  // the explanation names the near miss
    r = Cli(b, {"policy", "check", b.Path("scratch/r.txt"), "a:/x"});
    CHECK(r.exit_code == kExitDenied);
    CHECK(r.out.find("inst-b -> inst-a") != std::string::npos);
  }

  TEST_CASE(
      "--check-config against a running daemon's configuration reports the newer manifest and writes "
      "nothing") {
    TestFederation fed;
    DaemonOptions o;
    o.refresh_s = 3600;  // the daemon itself does not take the new serial during the test
    DaemonProcess a(fed, "a", o);
    REQUIRE(a.Start());
    const uint64_t running = a.Get("/v1/federation").value("serial", uint64_t{0});
    fed.SetRules(json::array({{{"id", "all-again"}, {"effect", "allow"}}}));
    const uint64_t published = fed.Publish();
    REQUIRE(published > running);
    const auto before = TreeContents(a.state_dir());
    CliResult r = CheckConfig(a);
    INFO(r.Describe());
    CHECK(r.exit_code == 0);
    CHECK(r.out.find("is valid") != std::string::npos);
    CHECK(r.out.find("manifest serial " + std::to_string(published)) != std::string::npos);
    CHECK(TreeContents(a.state_dir()) == before);
    CHECK(a.Get("/v1/federation").value("serial", uint64_t{0}) == running);
    // A configuration whose key cannot be read fails the check with the setting and the file named,
    // and still writes nothing.
    std::string cfg = ReadFile(a.config_path());
    const std::string key_line = "key = ";
    size_t at = cfg.find("\n" + key_line);
    REQUIRE(at != std::string::npos);
    size_t eol = cfg.find('\n', at + 1);
    WriteFile(a.config_path(),
              cfg.substr(0, at + 1) + key_line + "\"" + a.dir() + "/no-such.key\"" + cfg.substr(eol));
    CliResult bad = CheckConfig(a);
    INFO(bad.Describe());
    CHECK(bad.exit_code != 0);
    CHECK(bad.err.find(a.config_path()) != std::string::npos);
    CHECK(bad.err.find("no-such.key") != std::string::npos);
    CHECK(TreeContents(a.state_dir()) == before);
  }

  TEST_CASE("SIGHUP reopens the log file and the audit log under their names after a rotation") {
    TestFederation fed;
    DaemonProcess a(fed, "a");
    DaemonProcess b(fed, "b");
    a.options().log_file = a.dir() + "/pororocad.log";
    REQUIRE(a.Start());
    REQUIRE(b.Start());
    const std::string audit = a.state_dir() + "/audit.log", log = a.dir() + "/pororocad.log";
    REQUIRE(Exists(audit));
    REQUIRE(Exists(log));
    // logrotate without copytruncate: move the files away, then signal.
    REQUIRE(::rename(audit.c_str(), (audit + ".1").c_str()) == 0);
    REQUIRE(::rename(log.c_str(), (log + ".1").c_str()) == 0);
    REQUIRE(::kill(a.pid(), SIGHUP) == 0);
    bool reopened = false;
    for (int i = 0; i < 100 && !reopened; ++i) {
      std::this_thread::sleep_for(50ms);
      reopened = Exists(log) && ReadFile(log).find("SIGHUP: log files reopened") != std::string::npos;
    }
    CHECK(reopened);
    CHECK(Exists(audit));
    const std::string old_audit = ReadFile(audit + ".1");
    WriteFile(a.Path("f.txt"), "after the rotation\n");
    CliResult r = Cli(a, {"cp", a.Path("f.txt"), "b:/f.txt"}, 60s);
    CHECK_MESSAGE(r.exit_code == 0, r.Describe());
    // The new records go to the new files; the rotated ones are left as they were.
    CHECK(Audited(a, "transfer_end", "completed"));
    for (const auto& rec : a.AuditRecords("transfer_end")) {
      // Fields that do not apply are left out (docs/operations.md), not written as null.
      if (rec.value("decision", std::string()) == "completed") CHECK(!rec.contains("reason"));
    }
    CHECK(ReadFile(audit).find("transfer_end") != std::string::npos);
    CHECK(ReadFile(audit + ".1") == old_audit);
    CHECK(ReadFile(log + ".1").find("SIGHUP") == std::string::npos);
    // Still running after the signal (SIGHUP does not stop it).
    CHECK(a.Get("/v1/healthz").value("status", std::string()) == "ok");
  }

  TEST_CASE("policy check refuses what cp refuses, naming the check, with cp's reason and exit code") {
    TestFederation fed;
    DaemonPair p(fed);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    MakeDir(b.Path("data"));
    WriteFile(a.Path("f.txt"), "payload\n");
    // Runs the dry run and the transfer with the same arguments: the dry run says which check
    // refused; cp fails with the same exit code and its output holds the dry run's reason.
    auto same_refusal = [&](const char* what, const std::vector<std::string>& args, const char* check,
                            const char* needle) {
      std::vector<std::string> dry{"policy", "check", "--json"};
      dry.insert(dry.end(), args.begin(), args.end());
      CliResult d = Cli(a, dry, 30s);
      std::vector<std::string> cp{"cp", "--no-progress"};
      cp.insert(cp.end(), args.begin(), args.end());
      CliResult c = Cli(a, cp, 60s);
      INFO(what << "\npolicy check: " << d.Describe() << "\ncp: " << c.Describe());
      json v = d.Json();
      CHECK(v.value("allowed", true) == false);
      CHECK(v.value("check", std::string()) == check);
      std::string reason = v.value("reason", std::string());
      CHECK(reason.find(needle) != std::string::npos);
      CHECK(d.exit_code != 0);
      CHECK(d.exit_code == c.exit_code);
      // A policy refusal names the endpoint that decided ("... at a: default deny ..."); with one
      // manifest the peer, which decides at OPEN, refuses first, with the same decision.
      const std::string decision =
          v.contains("policy_reason") ? v.value("policy_reason", std::string()) : reason;
      CHECK(c.output().find(decision) != std::string::npos);
    };
    // Allowed: the whole admission passes, and the policy's rule is named.
    CliResult ok = Cli(a, {"policy", "check", a.Path("f.txt"), "b:/data/f.txt"}, 30s);
    CHECK_MESSAGE(ok.exit_code == 0, ok.Describe());
    CHECK(ok.out.find("allowed") == 0);

    same_refusal("a local path outside the export root", {"/etc/passwd", "b:/data/passwd"}, "export_root",
                 "/etc/passwd");
    same_refusal("an unknown endpoint, with the known ones listed", {a.Path("f.txt"), "nosuch:/data/f.txt"},
                 "endpoint", "known: b");
    same_refusal("a missing source", {a.Path("missing.txt"), "b:/data/missing.txt"}, "source", "missing.txt");
    same_refusal("a directory without -r", {a.Path(""), "b:/data/"}, "source", "use -r");
    std::string read_only = IssueToken(fed, "inst-a", {"--audience", "b", "--scope", "storage.read:/data"});
    same_refusal("a token without the scope for the path",
                 {"--token", read_only, a.Path("f.txt"), "b:/data/f.txt"}, "token",
                 "token grants no storage.create for /data/f.txt");
    std::string other = IssueToken(fed, "inst-a", {"--audience", "a", "--scope", "storage.create:/data"});
    same_refusal("a token for another endpoint", {"--token", other, a.Path("f.txt"), "b:/data/f.txt"},
                 "token", "token audience is 'a', this endpoint is 'b'");

    fed.SetRules(json::array({{{"id", "only-data"}, {"effect", "allow"}, {"source_paths", {"/data"}}}}));
    uint64_t s = fed.Publish();
    REQUIRE(WaitSerial(a, s));
    REQUIRE(WaitSerial(b, s));
    same_refusal("the policy", {a.Path("f.txt"), "b:/data/f.txt"}, "policy", "default deny");

    fed.SetRules(json::array({{{"id", "all"}, {"effect", "allow"}}}));
    fed.SetStatus("b", "suspended");
    s = fed.Publish();
    REQUIRE(WaitSerial(a, s));
    same_refusal("a suspended endpoint", {a.Path("f.txt"), "b:/data/f.txt"}, "endpoint",
                 "endpoint 'b' is suspended in federation");
    // The dry run audits nothing (a transfer audits its policy decision, allowed or not).
    fed.SetStatus("b", "active");
    s = fed.Publish();
    REQUIRE(WaitSerial(a, s));
    const size_t audited = a.AuditRecords("transfer").size();
    CliResult again = Cli(a, {"policy", "check", a.Path("f.txt"), "b:/data/f.txt"}, 30s);
    CHECK_MESSAGE(again.exit_code == 0, again.Describe());
    CHECK(a.AuditRecords("transfer").size() == audited);
    CHECK(!Exists(b.Path("data/f.txt")));
  }

  TEST_CASE("a cancel is audited as cancelled at both ends, with the reason, not as a closed connection") {
    TestFederation fed;
    const DaemonOptions slow = SlowSender();
    DaemonPair p(fed, slow, slow);  // whichever sends is slow
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    for (const char* dir : {"push", "pull"}) {
      const bool push = std::string(dir) == "push";
      // push: a sends and is cancelled; pull: b (the responder) sends, a (the initiator) receives.
      DaemonProcess& src = push ? a : b;
      WriteRandomFile(src.Path(std::string(dir) + ".bin"), 64ull << 20, 11);
      std::vector<std::string> args{"cp", "--detach"};
      if (push) {
        args.push_back(a.Path("push.bin"));
        args.push_back("b:/push.bin");
      } else {
        args.push_back("b:/pull.bin");
        args.push_back(a.Path("pull.bin"));
      }
      CliResult sub = Cli(a, args);
      REQUIRE_MESSAGE(sub.exit_code == 0, sub.Describe());
      std::string id = sub.out.substr(0, sub.out.find('\n'));
      json t = a.WaitForState(id, {"running"}, 30s);
      REQUIRE(t.value("state", std::string()) == "running");
      std::this_thread::sleep_for(1s);
      CliResult c = Cli(a, {"cancel", id});
      REQUIRE_MESSAGE(c.exit_code == 0, c.Describe());
      t = a.WaitForTerminal(id, 60s);
      CHECK(t.value("state", std::string()) == "cancelled");
      auto ended = [&](const DaemonProcess& d) {
        for (const auto& r : d.AuditRecords("transfer_end")) {
          if (r.value("transfer_id", std::string()) == id) return r;
        }
        return json();
      };
      json at_b;
      for (int i = 0; i < 100 && at_b.is_null(); ++i) {
        at_b = ended(b);
        if (at_b.is_null()) std::this_thread::sleep_for(100ms);
      }
      INFO(dir << ": a's record " << ended(a).dump() << ", b's record " << at_b.dump());
      CHECK(ended(a).value("decision", std::string()) == "cancelled");
      CHECK(at_b.value("decision", std::string()) == "cancelled");
      CHECK(at_b.value("reason", std::string()).find("peer: transfer cancelled") != std::string::npos);
    }
  }

  TEST_CASE("policy: a deny rule on a path inside a tree keeps that sub-tree from being sent") {
    TestFederation fed;
    DaemonPair p(fed);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    fed.SetRules(json::array({{{"id", "no-secret"}, {"effect", "deny"}, {"source_paths", {"/data/secret"}}},
                              {{"id", "rest"}, {"effect", "allow"}}}));
    uint64_t s = fed.Publish();
    REQUIRE(WaitSerial(a, s));
    REQUIRE(WaitSerial(b, s));
    MakeDir(a.Path("data"));
    MakeDir(a.Path("data/secret"));
    MakeDir(a.Path("data/sub"));
    WriteFile(a.Path("data/ok.txt"), "ok\n");
    WriteFile(a.Path("data/secret/s.txt"), "secret\n");
    WriteFile(a.Path("data/sub/x.txt"), "x\n");
    for (const bool pull : {false, true}) {
      CliResult r = pull ? Cli(b, {"cp", "--json", "-r", "a:/data", b.Path("pulled")}, 60s)
                         : Cli(a, {"cp", "--json", "-r", a.Path("data"), "b:/pushed"}, 60s);
      std::string dst = b.Path(pull ? "pulled" : "pushed");
      INFO((pull ? "pull: " : "push: ") << r.Describe());
      CHECK(r.exit_code == 1);  // the transfer ran; one entry was refused
      json failures = r.Json().value("failures", json::array());
      REQUIRE(failures.size() == 1);
      CHECK(failures[0].value("path", std::string()).find("secret/s.txt") != std::string::npos);
      CHECK(failures[0].value("error", std::string()).find("denied by rule 'no-secret'") !=
            std::string::npos);
      CHECK(ReadFile(dst + "/ok.txt") == "ok\n");
      CHECK(ReadFile(dst + "/sub/x.txt") == "x\n");
      CHECK(!Exists(dst + "/secret/s.txt"));  // the directory arrives empty; no denied byte does
      CHECK(Partials(dst).empty());
    }
    CHECK(Audited(a, "transfer", "denied", "denied by rule 'no-secret'"));
  }

  TEST_CASE(
      "a symbolic link named as the source is followed beneath the export root, and the policy sees where it "
      "leads") {
    TestFederation fed;
    DaemonPair p(fed);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    fed.SetRules(json::array({{{"id", "no-secret"}, {"effect", "deny"}, {"source_paths", {"/data/secret"}}},
                              {{"id", "rest"}, {"effect", "allow"}}}));
    uint64_t serial = fed.Publish();
    REQUIRE(WaitSerial(a, serial));
    REQUIRE(WaitSerial(b, serial));
    MakeDir(a.Path("data"));
    MakeDir(a.Path("data/tree"));
    MakeDir(a.Path("data/secret"));
    MakeDir(a.Path("links"));
    WriteFile(a.Path("data/f.txt"), "file\n");
    WriteFile(a.Path("data/tree/x.txt"), "x\n");
    WriteFile(a.Path("data/secret/s.txt"), "secret\n");
    auto link = [](const std::string& target, const std::string& path) {
      REQUIRE_MESSAGE(::symlink(target.c_str(), path.c_str()) == 0, path);
    };
    link("../data/f.txt", a.Path("links/to-file"));        // relative
    link(a.Path("data/f.txt"), a.Path("links/abs-file"));  // absolute, still inside the root
    link("../data/tree", a.Path("links/to-dir"));
    link("../data/secret/s.txt", a.Path("links/to-secret"));
    link("/etc/hostname", a.Path("links/outside"));
    link("../data/nothing", a.Path("links/dangling"));
    link("loop", a.Path("links/loop"));

    // Push: copied under the link's name, with what it leads to.
    CliResult r = Cli(a, {"cp", a.Path("links/to-file"), "b:/"});
    CHECK_MESSAGE(r.exit_code == 0, r.Describe());
    CHECK(ReadFile(b.Path("to-file")) == "file\n");
    r = Cli(a, {"cp", a.Path("links/abs-file"), "b:/abs.txt"});
    CHECK_MESSAGE(r.exit_code == 0, r.Describe());
    CHECK(ReadFile(b.Path("abs.txt")) == "file\n");
    r = Cli(a, {"cp", "-r", a.Path("links/to-dir"), "b:/"});
    CHECK_MESSAGE(r.exit_code == 0, r.Describe());
    CHECK(ReadFile(b.Path("to-dir/x.txt")) == "x\n");
    // Pull: b names a's link.
    r = Cli(b, {"cp", "a:/links/to-file", b.Path("pulled.txt")});
    CHECK_MESSAGE(r.exit_code == 0, r.Describe());
    CHECK(ReadFile(b.Path("pulled.txt")) == "file\n");

    // A link is no way around a rule: the policy decides on the path it leads to, at either end.
    for (const bool pull : {false, true}) {
      r = pull ? Cli(b, {"cp", "a:/links/to-secret", b.Path("s-pulled.txt")})
               : Cli(a, {"cp", a.Path("links/to-secret"), "b:/s-pushed.txt"});
      INFO((pull ? "pull: " : "push: ") << r.Describe());
      CHECK(r.exit_code != 0);
      CHECK(r.output().find("no-secret") != std::string::npos);
    }
    CHECK_FALSE(Exists(b.Path("s-pushed.txt")));
    CHECK_FALSE(Exists(b.Path("s-pulled.txt")));

    // Outside the root, dangling, or a loop: refused, naming the link and why.
    for (const auto& [name, why] :
         std::vector<std::pair<std::string, std::string>>{{"outside", "leads outside the export root"},
                                                          {"dangling", "to a path that does not exist"},
                                                          {"loop", "in a loop"}}) {
      CAPTURE(name);
      r = Cli(a, {"cp", a.Path("links/" + name), "b:/" + name});
      INFO(r.Describe());
      CHECK(r.exit_code != 0);
      CHECK(r.output().find(why) != std::string::npos);
      CHECK(r.output().find("links/" + name) != std::string::npos);
      CHECK_FALSE(Exists(b.Path(name)));
      r = Cli(b, {"cp", "a:/links/" + name, b.Path("p-" + name)});
      CHECK(r.exit_code != 0);
      CHECK(r.output().find(why) != std::string::npos);
    }
    CHECK(Partials(b.export_root()).empty());
  }

  TEST_CASE(
      "policy: the receiving daemon applies the rules to every file of a tree, whatever the sender did") {
    // The sending daemon reads an older manifest that allows everything, so its walker sends the
    // whole tree; the receiving daemon's manifest denies one sub-tree, and it refuses those files.
    TestFederation fed;
    const std::string old_manifest = fed.manifest_path() + ".old";
    DaemonOptions ao;
    ao.manifest_file = old_manifest;
    DaemonProcess a(fed, "a", ao);  // both enrolled; neither started yet
    DaemonProcess b(fed, "b");
    fed.SetRules(json::array({{{"id", "all"}, {"effect", "allow"}}}));
    const uint64_t old_serial = fed.Publish();
    std::filesystem::copy_file(fed.manifest_path(), old_manifest);
    fed.SetRules(json::array({{{"id", "no-secret"}, {"effect", "deny"}, {"source_paths", {"/data/secret"}}},
                              {{"id", "rest"}, {"effect", "allow"}}}));
    REQUIRE(a.Start());
    REQUIRE(b.Start());
    REQUIRE(a.Get("/v1/federation").value("serial", uint64_t{0}) == old_serial);
    REQUIRE(b.Get("/v1/federation").value("serial", uint64_t{0}) > old_serial);
    MakeDir(a.Path("data"));
    MakeDir(a.Path("data/secret"));
    WriteFile(a.Path("data/ok.txt"), "ok\n");
    WriteFile(a.Path("data/secret/s.txt"), "secret\n");
    CliResult r = Cli(a, {"cp", "--json", "-r", a.Path("data"), "b:/pushed"}, 60s);
    INFO(r.Describe());
    CHECK(r.exit_code == 1);  // the transfer ran; one file was refused
    json failures = r.Json().value("failures", json::array());
    REQUIRE(failures.size() == 1);
    CHECK(failures[0].value("path", std::string()).find("secret/s.txt") != std::string::npos);
    const std::string error = failures[0].value("error", std::string());
    CHECK(error.find("not received") != std::string::npos);
    CHECK(error.find("denied by rule 'no-secret'") != std::string::npos);
    CHECK(ReadFile(b.Path("pushed/ok.txt")) == "ok\n");
    CHECK(!Exists(b.Path("pushed/secret/s.txt")));
    CHECK(Partials(b.Path("pushed")).empty());
    CHECK(Audited(b, "transfer", "denied", "denied by rule 'no-secret'"));
  }

  TEST_CASE("policy: the rate cap holds within 10 % for two concurrent transfers over 20 s") {
    TestFederation fed;
    DaemonOptions o;
    o.streams = 4;
    o.chunk_size = "1MiB";
    DaemonPair p(fed, o, o);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    const uint64_t rate = 8ull << 20;  // 8 MiB/s for the pair
    fed.SetRules(
        json::array({{{"id", "capped"}, {"effect", "allow"}, {"rate_limit", std::to_string(rate)}}}));
    uint64_t s = fed.Publish();
    REQUIRE(WaitSerial(a, s));
    REQUIRE(WaitSerial(b, s));
    WriteRandomFile(a.Path("one.bin"), 160ull << 20, 1);
    WriteRandomFile(a.Path("two.bin"), 160ull << 20, 2);
    std::vector<std::string> ids;
    for (const char* f : {"one.bin", "two.bin"}) {
      CliResult r = Cli(a, {"cp", "--detach", a.Path(f), std::string("b:/") + f});
      REQUIRE_MESSAGE(r.exit_code == 0, r.Describe());
      ids.push_back(r.out.substr(0, r.out.find('\n')));
    }
    auto sent = [&] {
      uint64_t total = 0;
      for (const auto& id : ids) total += a.Transfer(id)["progress"].value("bytes_sent", uint64_t{0});
      return total;
    };
    for (const auto& id : ids)
      REQUIRE(a.WaitForState(id, {"running"}, 30s).value("state", std::string()) == "running");
    std::this_thread::sleep_for(2s);
    uint64_t b0 = sent();
    auto t0 = std::chrono::steady_clock::now();
    std::this_thread::sleep_for(20s);
    uint64_t b1 = sent();
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    double measured = double(b1 - b0) / secs;
    INFO("measured " << measured / (1 << 20) << " MiB/s against a cap of " << rate / (1 << 20) << " MiB/s");
    CHECK(measured <= 1.10 * double(rate));
    CHECK(measured >= 0.90 * double(rate));
    for (const auto& id : ids) a.Post("/v1/transfers/" + id + "/cancel", "");
  }

  TEST_CASE("policy: the concurrency cap defers the second transfer until the first is done") {
    TestFederation fed;
    DaemonOptions slow;
    slow.extra_toml = "[fault_injection]\nsend_delay_us = 20000\n";
    slow.chunk_size = "256KiB";
    DaemonPair p(fed, slow, {});
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    fed.SetRules(json::array({{{"id", "one-at-a-time"}, {"effect", "allow"}, {"max_concurrent", 1}}}));
    uint64_t s = fed.Publish();
    REQUIRE(WaitSerial(a, s));
    REQUIRE(WaitSerial(b, s));
    // The first lasts about 2 s (384 chunks, 20 ms each over 4 streams): the second is submitted
    // while it runs, however slow the machine is to run the CLI.
    WriteRandomFile(a.Path("one.bin"), 96ull << 20, 1);
    WriteRandomFile(a.Path("two.bin"), 1ull << 20, 2);
    CliResult r1 = Cli(a, {"cp", "--detach", a.Path("one.bin"), "b:/one.bin"});
    REQUIRE(r1.exit_code == 0);
    std::string id1 = r1.out.substr(0, r1.out.find('\n'));
    REQUIRE(a.WaitForState(id1, {"running"}, 30s).value("state", std::string()) == "running");
    // "running" is set before the session's set-up; the slot is taken during it. Wait until data
    // moves, so the first holds the slot when the second asks.
    REQUIRE(WaitUntil([&] { return a.Transfer(id1)["progress"].value("bytes_sent", uint64_t{0}) > 0; }, 30s));
    CliResult r2 = Cli(a, {"cp", "--detach", a.Path("two.bin"), "b:/two.bin"});
    REQUIRE(r2.exit_code == 0);
    std::string id2 = r2.out.substr(0, r2.out.find('\n'));
    json t2 = a.WaitForState(id2, {"retrying", "succeeded", "failed"}, 30s);
    INFO(t2.dump(2));
    CHECK(t2.value("state", std::string()) == "retrying");
    CHECK(t2.value("error", std::string()).find("concurrency cap of 1") != std::string::npos);
    CHECK((Audited(a, "transfer", "deferred", "concurrency cap of 1") ||
           Audited(b, "transfer", "deferred", "concurrency cap of 1")));
    json t1 = a.WaitForTerminal(id1, 120s);
    CHECK(t1.value("state", std::string()) == "succeeded");
    t2 = a.WaitForTerminal(id2, 120s);
    CHECK(t2.value("state", std::string()) == "succeeded");
    CHECK(SameContent(a.Path("two.bin"), b.Path("two.bin")));
  }

  TEST_CASE("tokens: expired, wrong audience, wrong scope, bad signature and unknown issuer are refused") {
    TestFederation fed;
    DaemonOptions ao;
    ao.mint_tokens = false;  // the user brings a token
    DaemonPair p(fed, ao, {});
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    MakeDir(b.Path("data"));
    WriteFile(a.Path("f.txt"), "payload\n");

    // No token at all.
    CliResult r = Cli(a, {"cp", a.Path("f.txt"), "b:/data/f.txt"}, 60s);
    CHECK(r.exit_code == kExitDenied);
    CHECK(r.output().find("carries no bearer token") != std::string::npos);

    std::string good = IssueToken(fed, "inst-a", {"--audience", "b", "--scope", "storage.create:/data"});
    std::string wrong_issuer_key = fed.dir() + "/rogue-issuer.key";
    {
      // Same issuer id, another key: the signature cannot verify.
      CliResult k =
          RunCli({"federation", "init", "--dir", fed.dir() + "/rogue", "--name", "rogue"}, "/x", 30s);
      REQUIRE(k.exit_code == 0);
    }
    struct Case {
      const char* what;
      std::string token;
      const char* message;
    };
    std::vector<Case> cases{
        {"expired",
         IssueToken(fed, "inst-a",
                    {"--audience", "b", "--scope", "storage.create:/data", "--lifetime", "-120"}),
         "token expired at"},
        {"wrong audience", IssueToken(fed, "inst-a", {"--audience", "a", "--scope", "storage.create:/data"}),
         "token audience is 'a', this endpoint is 'b'"},
        {"wrong scope", IssueToken(fed, "inst-a", {"--audience", "b", "--scope", "storage.read:/data"}),
         "token grants no storage.create for /data/f.txt"},
        {"scope for another path",
         IssueToken(fed, "inst-a", {"--audience", "b", "--scope", "storage.create:/database"}),
         "token grants no storage.create for /data/f.txt"},
        {"bad signature", good.substr(0, good.rfind('.') + 1) + std::string(86, 'A'),
         "signature does not verify"},
    };
    {
      std::vector<std::string> args{"token",      "issue",
                                    "--key",      fed.dir() + "/rogue/authority.key",
                                    "--issuer",   "https://tokens.nowhere.test",
                                    "--subject",  "mallory",
                                    "--audience", "b",
                                    "--scope",    "storage.create:/"};
      CliResult k = RunCli(args, "/x", 30s);
      REQUIRE(k.exit_code == 0);
      cases.push_back({"unknown issuer", k.out.substr(0, k.out.find('\n')),
                       "token issuer 'https://tokens.nowhere.test' is not in the federation manifest"});
    }
    for (const auto& c : cases) {
      CliResult cr = Cli(a, {"cp", "--token", c.token, a.Path("f.txt"), "b:/data/f.txt"}, 60s);
      INFO(c.what << ": " << cr.Describe());
      CHECK(cr.exit_code == kExitDenied);
      CHECK(cr.output().find(c.message) != std::string::npos);
      CHECK(Audited(b, "transfer", "denied", c.message));
      CHECK(!Exists(b.Path("data/f.txt")));
    }
    // The good token works, and its subject is the user in b's audit and accounting.
    r = Cli(a, {"cp", "--token", good, a.Path("f.txt"), "b:/data/f.txt"}, 60s);
    INFO(r.Describe());
    CHECK(r.exit_code == 0);
    CHECK(ReadFile(b.Path("data/f.txt")) == "payload\n");
    json acct = b.Get("/v1/accounting");
    CHECK(acct.dump().find("alice@inst-a") != std::string::npos);
    CliResult ac = Cli(b, {"accounting"});
    CHECK(ac.exit_code == 0);
    CHECK(ac.out.find("inst-a -> inst-b") != std::string::npos);
  }
}

}  // namespace
}  // namespace pororoca::test
