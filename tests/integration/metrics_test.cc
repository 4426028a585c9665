// GET /metrics against real daemons: the counters move by what a transfer moved (bytes = the
// files' sizes, files = their count, labelled with the peer's institution and the transport), at
// both ends; session errors and decisions are counted; over HTTPS only an operator reads them; every
// metric name of the Grafana dashboard (docs/grafana/pororoca.json) is in the exposition; and a real
// Prometheus server (Debian's prometheus) scrapes a daemon every second during a transfer, over
// HTTPS with a bearer token, and answers the transfer's size through its HTTP API.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "api/http.h"
#include "support/daemon_harness.h"

namespace pororoca::test {
namespace {

using nlohmann::json;
constexpr uint64_t kMiB = 1ull << 20;
const std::string kSource = PORO_SOURCE_DIR;
constexpr const char* kPrometheus = "/usr/bin/prometheus";
constexpr const char* kCurl = "/usr/bin/curl";

// GET /metrics on d's unix socket: the exposition's text (the test fails on anything but a 200
// text/plain answer).
std::string Scrape(const DaemonProcess& d) {
  auto c = api::HttpClient::Connect(d.socket());
  REQUIRE_MESSAGE(c.ok(), c.status().ToString());
  auto r = (*c)->Request("GET", "/metrics");
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  REQUIRE_MESSAGE(r->status == 200, r->body);
  std::string ctype;
  for (const auto& [k, v] : r->headers) {
    if (k == "content-type") ctype = v;
  }
  CHECK(ctype == "text/plain; version=0.0.4; charset=utf-8");
  return r->body;
}

// The samples of an exposition: "name{labels}" as written -> value.
std::map<std::string, double> Parse(const std::string& text) {
  std::map<std::string, double> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t sp = line.rfind(' ');
    REQUIRE_MESSAGE(sp != std::string::npos, "not a sample: " << line);
    out[line.substr(0, sp)] = std::stod(line.substr(sp + 1));
  }
  return out;
}

// A sample's value, 0 when absent (a counter not yet moved).
double Value(const std::map<std::string, double>& m, const std::string& key) {
  auto it = m.find(key);
  return it == m.end() ? 0 : it->second;
}

std::string Traffic(const std::string& name, const char* direction, const std::string& peer_inst,
                    const std::string& transport) {
  return name + "{direction=\"" + direction + "\",peer_institution=\"" + peer_inst + "\",transport=\"" +
         transport + "\"}";
}

// Writes text to path.
void Write(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
  REQUIRE(Exists(path));
}

// tests/docs/dashboard_check.py on `exposition` (written to `file`): every metric and label
// docs/grafana/pororoca.json queries is in it. Returns the check's output.
std::string CheckGrafanaNames(const std::string& file, const std::string& exposition,
                              const DaemonProcess& d) {
  Write(file, exposition);
  CliResult check =
      RunProgram("/usr/bin/python3",
                 {kSource + "/tests/docs/dashboard_check.py", kSource + "/docs/grafana/pororoca.json", file},
                 d.socket(), 60s);
  INFO(check.Describe());
  CHECK(check.exit_code == 0);
  CHECK(check.out.find("\n0 problem(s)\n") != std::string::npos);
  return check.out;
}

TEST_SUITE("integration.metrics") {
  TEST_CASE("the counters move by the transfer's bytes and files at both ends, by peer institution") {
    TestFederation fed;
    DaemonOptions ao;
    ao.https_api = true;
    ao.api_operators = {"ops@inst-a"};
    DaemonPair p(fed, ao);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    const auto a0 = Parse(Scrape(a));
    const auto b0 = Parse(Scrape(b));

    MakeDir(a.Path("set"));
    WriteRandomFile(a.Path("set/one.bin"), 9 * kMiB + 7, 1);
    WriteRandomFile(a.Path("set/two.bin"), 300000, 2);
    WriteRandomFile(a.Path("set/three.bin"), 1, 3);
    const uint64_t bytes = 9 * kMiB + 7 + 300000 + 1;
    CliResult r = Cli(a, {"cp", "-r", "--json", a.Path("set"), "b:/set"});
    INFO(r.Describe());
    REQUIRE(r.exit_code == 0);
    const json rec = r.Json();
    const std::string transport = rec.value("transport", std::string());
    REQUIRE(!transport.empty());

    const std::string a_text = Scrape(a);
    const auto a1 = Parse(a_text);
    const auto b1 = Parse(Scrape(b));
    INFO(a_text);
    const std::string sent = Traffic("pororoca_bytes_total", "sent", "inst-b", transport);
    const std::string received = Traffic("pororoca_bytes_total", "received", "inst-a", transport);
    CHECK(Value(a1, sent) - Value(a0, sent) == bytes);
    CHECK(Value(b1, received) - Value(b0, received) == bytes);
    const std::string files_sent = Traffic("pororoca_files_total", "sent", "inst-b", transport);
    const std::string files_received = Traffic("pororoca_files_total", "received", "inst-a", transport);
    CHECK(Value(a1, files_sent) - Value(a0, files_sent) == 3);
    CHECK(Value(b1, files_received) - Value(b0, files_received) == 3);
    // Nothing moved the other way, nothing was corrupt, nothing is moving now.
    CHECK(Value(a1, Traffic("pororoca_bytes_total", "received", "inst-b", transport)) == 0);
    CHECK(Value(a1, Traffic("pororoca_chunks_corrupt_total", "sent", "inst-b", transport)) == 0);
    CHECK(Value(a1, Traffic("pororoca_sessions_active", "sent", "inst-b", transport)) == 0);
    // The transfer is on record at a (the initiator) as succeeded; the queue is empty.
    CHECK(Value(a1, "pororoca_transfers{state=\"succeeded\"}") == 1);
    CHECK(Value(a1, "pororoca_transfers{state=\"running\"}") == 0);
    CHECK(Value(a1, "pororoca_queue_waiting") == 0);
    CHECK(Value(a1, "pororoca_queue_running") == 0);
    CHECK(Value(b1, "pororoca_transfers{state=\"succeeded\"}") == 0);
    // Each end admitted the other (endpoint) and allowed the transfer (policy); b checked a's token.
    for (const auto* m : {&a1, &b1}) {
      CHECK(Value(*m, "pororoca_policy_decisions_total{outcome=\"allowed\",check=\"endpoint\"}") >= 1);
      CHECK(Value(*m, "pororoca_policy_decisions_total{outcome=\"allowed\",check=\"policy\"}") >= 1);
    }
    CHECK(Value(b1, "pororoca_policy_decisions_total{outcome=\"allowed\",check=\"token\"}") >= 1);
    // One RTT and one throughput observation per data stream of the session (4 streams).
    const std::string streams = "{peer_institution=\"inst-b\",transport=\"" + transport + "\"}";
    CHECK(Value(a1, "pororoca_stream_throughput_bytes_per_second_count" + streams) >= 1);
    CHECK(Value(a1, "pororoca_stream_throughput_bytes_per_second_count" + streams) <= 4);
    if (transport == "tcp") CHECK(Value(a1, "pororoca_stream_rtt_seconds_count" + streams) == 4);
    // The manifest in force and the build.
    const json f = a.Get("/v1/federation");
    CHECK(Value(a1, "pororoca_manifest_serial") == f["serial"].get<double>());
    CHECK(Value(a1, "pororoca_manifest_age_seconds") >= 0);
    CHECK(Value(a1, "pororoca_manifest_age_seconds") < 3600);
    CHECK(Value(a1, "pororoca_federation_endpoints{status=\"active\"}") == 2);
    CHECK(a_text.find("pororoca_build_info{version=\"") != std::string::npos);

    // A pull of a path b does not have: an error at both ends, counted by kind and role.
    CliResult missing = Cli(a, {"cp", "b:/no-such-file.bin", a.Path("x.bin")});
    CHECK(missing.exit_code != 0);
    const auto a2 = Parse(Scrape(a));
    const auto b2 = Parse(Scrape(b));
    CHECK(Value(a2, "pororoca_session_errors_total{role=\"initiator\",kind=\"NotFound\"}") -
              Value(a1, "pororoca_session_errors_total{role=\"initiator\",kind=\"NotFound\"}") ==
          1);
    CHECK(Value(b2, "pororoca_session_errors_total{role=\"responder\",kind=\"NotFound\"}") -
              Value(b1, "pororoca_session_errors_total{role=\"responder\",kind=\"NotFound\"}") ==
          1);
    CHECK(Value(a2, "pororoca_transfers{state=\"failed\"}") == 1);

    // Over HTTPS the totals are an operator's: a user's token is refused (and the refusal counted).
    auto https = [&](const std::string& token) {
      auto c = api::HttpClient::ConnectTls(a.api_url(), a.ca_file());
      REQUIRE_MESSAGE(c.ok(), c.status().ToString());
      (*c)->set_bearer(token);
      auto resp = (*c)->Request("GET", "/metrics");
      REQUIRE_MESSAGE(resp.ok(), resp.status().ToString());
      return *resp;
    };
    CHECK(https(IssueTestToken(fed, "inst-a", "alice@inst-a", "a", {"transfer.read"})).status == 403);
    api::HttpResponse ops = https(IssueTestToken(fed, "inst-a", "ops@inst-a", "a", {"transfer.read"}));
    CHECK(ops.status == 200);
    CHECK(ops.body.find("pororoca_bytes_total{") != std::string::npos);
    CHECK(ops.body.find("pororoca_policy_decisions_total{outcome=\"denied\",check=\"api\"} 1\n") !=
          std::string::npos);

    // Every metric name the Grafana dashboard queries is in the exposition.
    CheckGrafanaNames(fed.dir() + "/metrics.txt", ops.body, a);
  }

  TEST_CASE(
      "corrupt chunks and re-sent bytes are counted at both ends as the transfer's record counts them") {
    TestFederation fed;
    DaemonOptions corrupting;
    corrupting.extra_toml = "[fault_injection]\ncorrupt_every = 3\n";  // a's every third payload message
    DaemonPair p(fed, corrupting);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    const uint64_t size = 4 * kMiB + kMiB / 2;
    WriteRandomFile(a.Path("pushed.bin"), size, 5);
    CliResult r = Cli(a, {"cp", "--chunk", "1MiB", "--json", a.Path("pushed.bin"), "b:/pushed.bin"});
    INFO(r.Describe());
    REQUIRE(r.exit_code == 0);
    const json rec = r.Json();
    const std::string transport = rec.value("transport", std::string());
    const uint64_t corrupt = rec["progress"]["chunks_corrupt"].get<uint64_t>();
    const uint64_t resent = rec["progress"]["bytes_resent"].get<uint64_t>();
    REQUIRE(corrupt >= 1);
    const auto am = Parse(Scrape(a));
    const auto bm = Parse(Scrape(b));
    CHECK(Value(am, Traffic("pororoca_chunks_corrupt_total", "sent", "inst-b", transport)) == corrupt);
    CHECK(Value(bm, Traffic("pororoca_chunks_corrupt_total", "received", "inst-a", transport)) == corrupt);
    CHECK(Value(am, Traffic("pororoca_bytes_resent_total", "sent", "inst-b", transport)) == resent);
    // The bytes moved count every copy: the file once, and what was sent again.
    CHECK(Value(am, Traffic("pororoca_bytes_total", "sent", "inst-b", transport)) == size + resent);
    CHECK(Value(am, Traffic("pororoca_files_total", "sent", "inst-b", transport)) == 1);
  }

  TEST_CASE("the staging cache's bytes, datasets, leases and evictions are those GET /v1/staging shows") {
    TestFederation fed;
    DaemonPair p(fed);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    MakeDir(b.Path("datasets"));
    for (int d = 1; d <= 4; ++d) {  // four datasets of 3,000,000 bytes
      MakeDir(b.Path("datasets/d" + std::to_string(d)));
      for (int f = 0; f < 3; ++f) {
        WriteRandomFile(b.Path("datasets/d" + std::to_string(d) + "/part-" + std::to_string(f) + ".bin"),
                        1000000, 10 * d + f);
      }
    }
    const std::string before = Scrape(a);
    CHECK(before.find("pororoca_staging_") == std::string::npos);  // no [staging]: no staging families
    a.Stop();
    // 10 MiB: a fourth dataset passes the high watermark (9 MiB); eviction down to 6.5 MiB.
    a.options().extra_toml = "[staging]\ndir = \"" + a.Path("cache") +
                             "\"\nquota = \"10MiB\"\nhigh_watermark = 0.9\nlow_watermark = 0.65\n";
    REQUIRE(a.Start());
    auto stage = [&](const std::string& name, const std::string& lease) {
      std::vector<std::string> args{"stage", "b:/datasets/" + name, "--wait"};
      if (!lease.empty()) args.insert(args.end(), {"--lease", lease});
      CliResult r = Cli(a, args);
      INFO(r.Describe());
      REQUIRE(r.exit_code == 0);
      std::this_thread::sleep_for(20ms);  // distinct last-use times
    };
    stage("d1", "job1");
    stage("d2", "");
    stage("d3", "");
    auto m = Parse(Scrape(a));
    json s = a.Get("/v1/staging");
    CHECK(Value(m, "pororoca_staging_quota_bytes") == 10 * kMiB);
    CHECK(Value(m, "pororoca_staging_used_bytes") == s["used_bytes"].get<double>());
    CHECK(Value(m, "pororoca_staging_used_bytes") >= 9000000);
    CHECK(Value(m, "pororoca_staging_datasets{state=\"ready\"}") == 3);
    CHECK(Value(m, "pororoca_staging_datasets{state=\"staging\"}") == 0);
    CHECK(Value(m, "pororoca_staging_leases") == 1);
    CHECK(Value(m, "pororoca_staging_evictions_total") == 0);

    stage("d4", "job4");  // 12 MB > 9 MiB: d2 and d3 go (not leased, least recently used), 6 MB left
    REQUIRE(WaitUntil([&] { return a.Get("/v1/staging").value("evictions", 0) == 2; }, 10s));
    const std::string text = Scrape(a);
    INFO(text);
    m = Parse(text);
    s = a.Get("/v1/staging");
    CHECK(Value(m, "pororoca_staging_evictions_total") == s["evictions"].get<double>());
    CHECK(Value(m, "pororoca_staging_evicted_bytes_total") == s["evicted_bytes"].get<double>());
    CHECK(Value(m, "pororoca_staging_evictions_total") == 2);
    CHECK(Value(m, "pororoca_staging_evicted_bytes_total") >= 6000000);
    CHECK(Value(m, "pororoca_staging_used_bytes") == s["used_bytes"].get<double>());
    CHECK(Value(m, "pororoca_staging_datasets{state=\"ready\"}") == 2);
    CHECK(s["datasets"].size() == 2);
    CHECK(Value(m, "pororoca_staging_leases") == 2);

    // With [staging] on, every staging metric the Grafana dashboard queries must be exposed.
    CHECK(CheckGrafanaNames(fed.dir() + "/metrics-staging.txt", text, a).find("not checked") ==
          std::string::npos);
  }

  TEST_CASE("a Prometheus server scrapes a daemon over HTTPS during a transfer and answers its size") {
    REQUIRE_MESSAGE(::access(kPrometheus, X_OK) == 0,
                    kPrometheus << " is missing: install Debian's prometheus package (./setup.sh deps)");
    REQUIRE_MESSAGE(::access(kCurl, X_OK) == 0, kCurl << " is missing: install curl (./setup.sh deps)");
    TestFederation fed;
    DaemonOptions ao;
    ao.https_api = true;
    ao.api_operators = {"ops@inst-a"};
    ao.chunk_size = "1MiB";
    // 64 chunks over 4 streams, each held 150 ms: the transfer lasts about 2.5 s, several scrapes.
    ao.extra_toml = "[fault_injection]\nsend_delay_us = 150000\n";
    DaemonPair p(fed, ao);
    DaemonProcess& a = *p.a;

    const std::string dir = fed.dir() + "/prometheus";
    MakeDir(dir);
    MakeDir(dir + "/data");
    Write(dir + "/token", IssueTestToken(fed, "inst-a", "ops@inst-a", "a", {"transfer.read"}));
    const std::string target = a.api_url().substr(std::string("https://").size());
    Write(dir + "/prometheus.yml",
          "global:\n"
          "  scrape_interval: 1s\n"
          "  scrape_timeout: 1s\n"
          "  evaluation_interval: 1s\n"
          "scrape_configs:\n"
          "  - job_name: pororoca\n"
          "    scheme: https\n"
          "    metrics_path: /metrics\n"
          "    authorization:\n"
          "      type: Bearer\n"
          "      credentials_file: " +
              dir + "/token\n" +
              "    tls_config:\n"
              "      ca_file: " +
              a.ca_file() + "\n" +
              "      server_name: a\n"
              "    static_configs:\n"
              "      - targets: ['" +
              target + "']\n");
    int port_lock = -1;
    const uint16_t port = ReservePort(&port_lock);
    const std::string listen = "127.0.0.1:" + std::to_string(port);
    const std::string log = dir + "/prometheus.log";
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // it dies with the test, whatever happens
      if (::getppid() != parent) ::_exit(127);
      FILE* out = std::freopen(log.c_str(), "w", stdout);
      if (out == nullptr || ::dup2(::fileno(stdout), 2) < 0) ::_exit(126);
      const std::string config = "--config.file=" + dir + "/prometheus.yml";
      const std::string storage = "--storage.tsdb.path=" + dir + "/data";
      const std::string web = "--web.listen-address=" + listen;
      ::execl(kPrometheus, kPrometheus, config.c_str(), storage.c_str(), web.c_str(), "--log.level=warn",
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    struct Reaper {
      pid_t pid;
      int lock;
      ~Reaper() {
        ::kill(pid, SIGTERM);
        int status = 0;
        for (int i = 0; i < 100 && ::waitpid(pid, &status, WNOHANG) == 0; ++i) ::usleep(50000);
        if (::waitpid(pid, &status, WNOHANG) == 0) {
          ::kill(pid, SIGKILL);
          ::waitpid(pid, &status, 0);
        }
        ::close(lock);
      }
    } reaper{pid, port_lock};

    // An instant query through Prometheus's HTTP API: the first result's value, or nullopt.
    auto query = [&](const std::string& promql) -> std::optional<double> {
      CliResult q = RunProgram(kCurl,
                               {"-sS", "--max-time", "5", "-G", "http://" + listen + "/api/v1/query",
                                "--data-urlencode", "query=" + promql},
                               a.socket(), 15s);
      json j = json::parse(q.out, nullptr, false);
      if (q.exit_code != 0 || !j.is_object() || j.value("status", "") != "success") return std::nullopt;
      const json& result = j["data"]["result"];
      if (!result.is_array() || result.empty()) return std::nullopt;
      return std::stod(result[0]["value"][1].get<std::string>());
    };
    auto prometheus_log = [&] { return ReadFile(log); };
    // The target is up: Prometheus scraped /metrics over HTTPS with the operator's token.
    REQUIRE_MESSAGE(WaitUntil([&] { return query("up{job=\"pororoca\"}") == 1.0; }, 60s, 250ms),
                    "Prometheus never scraped the daemon; its log:\n"
                        << prometheus_log());

    const uint64_t size = 64 * kMiB;
    WriteRandomFile(a.Path("big.bin"), size, 7);
    CliResult r = Cli(a, {"cp", "--json", a.Path("big.bin"), "b:/big.bin"});
    INFO(r.Describe());
    REQUIRE(r.exit_code == 0);
    const std::string transport = r.Json().value("transport", std::string());
    const std::string bytes_query =
        "pororoca_bytes_total{job=\"pororoca\",direction=\"sent\","
        "peer_institution=\"inst-b\",transport=\"" +
        transport + "\"}";
    std::optional<double> got;
    CHECK_MESSAGE(WaitUntil(
                      [&] {
                        got = query(bytes_query);
                        return got == static_cast<double>(size);
                      },
                      30s, 250ms),
                  "Prometheus answers " << (got ? std::to_string(*got) : std::string("nothing")) << " for "
                                        << bytes_query << "; its log:\n"
                                        << prometheus_log());
    // A scrape landed while the session was moving data (the transfer lasted seconds).
    CHECK(query("max_over_time(pororoca_sessions_active{direction=\"sent\"}[5m])") == 1.0);
    // The transfer was on record as running at one scrape, and is succeeded now.
    CHECK(query("max_over_time(pororoca_transfers{state=\"running\"}[5m])") == 1.0);
    CHECK(WaitUntil([&] { return query("pororoca_transfers{state=\"succeeded\"}") == 1.0; }, 10s, 250ms));
  }
}

}  // namespace
}  // namespace pororoca::test
