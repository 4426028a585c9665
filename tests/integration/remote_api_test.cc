// The HTTPS API with bearer tokens, driven from a process that runs no daemon (the CLI with --api,
// and a bare HTTPS client): refusals without a token (401) and without the scope (403, audited);
// third-party push and pull between two daemons, the requester's identity at both data ends; a
// user sees only their own transfers, an operator all.
#include <doctest/doctest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "api/http.h"
#include "support/daemon_harness.h"

namespace pororoca::test {
namespace {

using nlohmann::json;
constexpr uint64_t kMiB = 1ull << 20;
constexpr const char* kNoDaemon = "/nonexistent.sock";  // the CLI's host runs no daemon

std::string Token(TestFederation& fed, const std::string& inst, const std::string& subject,
                  const std::string& aud, const std::vector<std::string>& scopes) {
  return IssueTestToken(fed, inst, subject, aud, scopes);
}

// `pororoca --api URL --ca CA --api-token TOKEN args...` from a host without a daemon.
CliResult Remote(const DaemonProcess& d, const std::string& api_token, std::vector<std::string> args,
                 std::chrono::milliseconds timeout = 120s) {
  std::vector<std::string> full{"--api", d.api_url(), "--ca", d.ca_file(), "--api-token", api_token};
  full.insert(full.end(), args.begin(), args.end());
  return RunCli(full, kNoDaemon, timeout);
}

// A bare HTTPS request to d's API (status and body).
std::pair<int, json> Https(const DaemonProcess& d, const std::string& bearer, const std::string& method,
                           const std::string& target, const std::string& body = "") {
  auto c = api::HttpClient::ConnectTls(d.api_url(), d.ca_file());
  REQUIRE_MESSAGE(c.ok(), c.status().ToString());
  (*c)->set_bearer(bearer);
  auto r = (*c)->Request(method, target, body);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  return {r->status, json::parse(r->body, nullptr, false)};
}

std::vector<json> ApiAudit(const DaemonProcess& d, const std::string& decision) {
  std::vector<json> out;
  for (const auto& r : d.AuditRecords("api")) {
    if (r.value("decision", std::string()) == decision) out.push_back(r);
  }
  return out;
}

DaemonOptions WithHttps() {
  DaemonOptions o;
  o.https_api = true;
  o.api_operators = {"ops@inst-a"};
  return o;
}

TEST_SUITE("integration.remote_api") {
  TEST_CASE(
      "HTTPS API: no token is 401, a token without the scope is 403 and audited, a good one is served") {
    TestFederation fed;
    DaemonPair p(fed, WithHttps());
    DaemonProcess& a = *p.a;
    WriteRandomFile(a.Path("f.bin"), 1 * kMiB, 11);

    auto [st, body] = Https(a, "", "GET", "/v1/transfers");
    CHECK(st == 401);
    CHECK(body["error"]["message"].get<std::string>().find("bearer token") != std::string::npos);
    // Another endpoint's token (audience b) is not one for a.
    const std::string for_b = Token(fed, "inst-a", "alice@inst-a", "b", {"transfer.read"});
    std::tie(st, body) = Https(a, for_b, "GET", "/v1/transfers");
    CHECK(st == 401);
    CHECK(body["error"]["message"].get<std::string>().find("audience") != std::string::npos);

    const std::string read_only =
        Token(fed, "inst-a", "alice@inst-a", "a", {"transfer.read", "storage.read:/"});
    std::tie(st, body) = Https(a, read_only, "GET", "/v1/transfers");
    CHECK(st == 200);
    CHECK(body["transfers"].empty());
    // The CLI through --api: a submit with a read-only token is refused, exit code 5 (denied).
    const std::string data_b = Token(fed, "inst-a", "alice@inst-a", "b", {"storage.create:/"});
    CliResult r = Remote(a, read_only, {"cp", "--token", data_b, "a:/f.bin", "b:/f.bin"});
    CHECK_MESSAGE(r.exit_code == 5, r.Describe());
    CHECK(r.err.find("token grants no transfer.submit") != std::string::npos);
    std::vector<json> denied = ApiAudit(a, "denied");
    bool audited = false;
    for (const auto& d : denied) {
      audited |= d.value("status", 0) == 403 && d.value("user", std::string()) == "alice@inst-a" &&
                 d.value("path", std::string()) == "/v1/transfers" &&
                 d.value("method", std::string()) == "POST" &&
                 d.value("reason", std::string()).find("transfer.submit") != std::string::npos;
    }
    CHECK_MESSAGE(audited, json(denied).dump());
    CHECK(denied.size() >= 3);  // the two 401s as well
    CHECK_FALSE(std::filesystem::exists(p.b->Path("f.bin")));
    // An issuer speaks only for its own institution's people: inst-b's issuer cannot claim ops@inst-a.
    const std::string forged = Token(fed, "inst-b", "ops@inst-a", "a", {"transfer.read"});
    std::tie(st, body) = Https(a, forged, "GET", "/v1/accounting");
    CHECK(st == 401);
    CHECK(body["error"]["message"].get<std::string>().find("does not speak for 'ops@inst-a'") !=
          std::string::npos);
    // The CLI checks which endpoint answered: a's certificate is not b's.
    CliResult wrong = RunCli({"--api", a.api_url(), "--ca", a.ca_file(), "--api-token", read_only,
                              "--api-endpoint", "b", "status"},
                             kNoDaemon, 60s);
    CHECK_MESSAGE(wrong.exit_code == 5, wrong.Describe());
    CHECK(wrong.err.find("presented the certificate of endpoint 'a', not of 'b'") != std::string::npos);
    CliResult right = RunCli({"--api", a.api_url(), "--ca", a.ca_file(), "--api-token", read_only,
                              "--api-endpoint", "a", "status"},
                             kNoDaemon, 60s);
    CHECK_MESSAGE(right.exit_code == 0, right.Describe());
    // Accounting and the manifest refresh are for operators.
    std::tie(st, body) = Https(a, read_only, "GET", "/v1/accounting");
    CHECK(st == 403);
    const std::string ops = Token(fed, "inst-a", "ops@inst-a", "a", {"transfer.read"});
    std::tie(st, body) = Https(a, ops, "GET", "/v1/accounting");
    CHECK(st == 200);
  }

  TEST_CASE("third-party push and pull between two daemons, driven from a host without a daemon") {
    TestFederation fed;
    DaemonPair p(fed, WithHttps());
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    WriteRandomFile(a.Path("in.bin"), 24 * kMiB + 123, 12);
    const std::string api =
        Token(fed, "inst-a", "alice@inst-a", "a",
              {"transfer.submit", "transfer.read", "storage.read:/", "storage.create:/back"});
    const std::string at_b =
        Token(fed, "inst-a", "alice@inst-a", "b", {"storage.create:/", "storage.read:/"});

    // Push: a sends to b, asked through a's API.
    CliResult r = Remote(a, api, {"cp", "--token", at_b, "--json", "a:/in.bin", "b:/out.bin"});
    REQUIRE_MESSAGE(r.exit_code == 0, r.Describe());
    CHECK(ReadFile(b.Path("out.bin")) == ReadFile(a.Path("in.bin")));
    json push = r.Json();
    CHECK(push["state"] == "succeeded");
    CHECK(push["user"] == "alice@inst-a");
    // The requester's identity at both data ends: the audit of b's responder says alice.
    bool at_b_audited = false;
    for (const auto& rec : b.AuditRecords("transfer")) {
      at_b_audited |= rec.value("transfer_id", std::string()) == push["id"] &&
                      rec.value("user", std::string()) == "alice@inst-a" &&
                      rec.value("decision", std::string()) == "allowed";
    }
    CHECK_MESSAGE(at_b_audited, json(b.AuditRecords("transfer")).dump());

    // Pull: a fetches from b into a:/back/, asked through a's API again.
    MakeDir(a.Path("back"), 0755);
    r = Remote(a, api, {"cp", "--token", at_b, "--json", "b:/out.bin", "a:/back/again.bin"});
    REQUIRE_MESSAGE(r.exit_code == 0, r.Describe());
    CHECK(ReadFile(a.Path("back/again.bin")) == ReadFile(a.Path("in.bin")));
    CHECK(r.Json()["state"] == "succeeded");
    // The CLI follows and lists through the same API.
    CliResult list = Remote(a, api, {"status", "--json"});
    REQUIRE_MESSAGE(list.exit_code == 0, list.Describe());
    CHECK(list.Json()["transfers"].size() == 2);

    // The daemon acts within the caller's token at its own end too: no storage.create outside /back.
    r = Remote(a, api, {"cp", "--token", at_b, "b:/out.bin", "a:/elsewhere.bin"});
    CHECK_MESSAGE(r.exit_code == 5, r.Describe());
    CHECK(r.err.find("at a: token grants no storage.create") != std::string::npos);
    CHECK_FALSE(std::filesystem::exists(a.Path("elsewhere.bin")));
    // The peer's token must be the caller's own: one of bob's is refused.
    const std::string bobs = Token(fed, "inst-a", "bob@inst-a", "b", {"storage.create:/"});
    r = Remote(a, api, {"cp", "--token", bobs, "a:/in.bin", "b:/bob.bin"});
    CHECK_MESSAGE(r.exit_code == 5, r.Describe());
    CHECK(r.err.find("is for 'bob@inst-a'") != std::string::npos);
    // A transfer with neither end at a goes to one of its ends' APIs.
    r = Remote(a, api, {"cp", "--token", at_b, "b:/out.bin", "c:/x.bin"});
    CHECK_MESSAGE(r.exit_code == 2, r.Describe());
    CHECK(r.err.find("to the API of b or c") != std::string::npos);
    // And a local path makes no sense to a remote daemon.
    r = Remote(a, api, {"cp", "/tmp/x.bin", "b:/x.bin"});
    CHECK_MESSAGE(r.exit_code == 2, r.Describe());
    CHECK(r.err.find("both SRC and DST are ENDPOINT:/path") != std::string::npos);
  }

  TEST_CASE("over HTTPS a user sees and cancels only their own transfers, an operator all") {
    TestFederation fed;
    DaemonOptions slow = WithHttps();
    slow.extra_toml = "[fault_injection]\nsend_delay_us = 50000\n";
    slow.chunk_size = "256KiB";
    slow.streams = 2;
    DaemonPair p(fed, slow);
    DaemonProcess& a = *p.a;
    WriteRandomFile(a.Path("big.bin"), 64 * kMiB, 13);
    const std::string alice =
        Token(fed, "inst-a", "alice@inst-a", "a",
              {"transfer.submit", "transfer.read", "transfer.cancel", "storage.read:/"});
    const std::string at_b = Token(fed, "inst-a", "alice@inst-a", "b", {"storage.create:/"});
    CliResult r = Remote(a, alice, {"cp", "--detach", "--token", at_b, "a:/big.bin", "b:/big.bin"});
    REQUIRE_MESSAGE(r.exit_code == 0, r.Describe());
    std::string id = r.out;
    while (!id.empty() && id.back() == '\n') id.pop_back();
    REQUIRE(id.size() == 32);

    const std::string bob = Token(fed, "inst-a", "bob@inst-a", "a", {"transfer.read", "transfer.cancel"});
    auto [st, body] = Https(a, bob, "GET", "/v1/transfers");
    CHECK(st == 200);
    CHECK(body["transfers"].empty());
    std::tie(st, body) = Https(a, bob, "GET", "/v1/transfers/" + id);
    CHECK(st == 404);
    std::tie(st, body) = Https(a, bob, "POST", "/v1/transfers/" + id + "/cancel");
    CHECK(st == 404);
    const std::string ops = Token(fed, "inst-a", "ops@inst-a", "a", {"transfer.read"});
    std::tie(st, body) = Https(a, ops, "GET", "/v1/transfers/" + id);
    CHECK(st == 200);
    CHECK(body["user"] == "alice@inst-a");
    // Alice's cancel without the cancel scope would be 403; with it, the transfer ends cancelled.
    const std::string alice_ro = Token(fed, "inst-a", "alice@inst-a", "a", {"transfer.read"});
    std::tie(st, body) = Https(a, alice_ro, "DELETE", "/v1/transfers/" + id);
    CHECK(st == 403);
    r = Remote(a, alice, {"cancel", id});
    CHECK_MESSAGE(r.exit_code == 0, r.Describe());
    r = Remote(a, alice, {"wait", id, "--timeout", "60"});
    CHECK_MESSAGE(r.exit_code == 6, r.Describe());  // cancelled
    CHECK_FALSE(std::filesystem::exists(p.b->Path("big.bin")));
  }
}

}  // namespace
}  // namespace pororoca::test
