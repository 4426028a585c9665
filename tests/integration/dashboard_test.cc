// The operator dashboard (daemon/dashboard.{h,cc}, cli/dashboard.cc) in a real browser: two daemons,
// a slow transfer running, one queued behind it, one failed and a dataset staged; headless Chromium opens the
// page through `pororoca dashboard` (tests/integration/dashboard_check.py drives it over the DevTools
// protocol) and must show them without a console error. The screenshot stays in the build
// directory (tests/integration/dashboard.png), for docs/dashboard.png.
#include <doctest/doctest.h>
#include <unistd.h>

#include <string>

#include "api/http.h"
#include "support/daemon_harness.h"

namespace pororoca::test {
namespace {

using nlohmann::json;
constexpr uint64_t kMiB = 1ull << 20;
constexpr const char* kChromium = "/usr/bin/chromium";

TEST_SUITE("integration.dashboard") {
  TEST_CASE(
      "the dashboard in headless Chromium shows the running transfer with its rate, the queue and a "
      "failure, without console errors") {
    REQUIRE_MESSAGE(::access(kChromium, X_OK) == 0,
                    kChromium << " is missing: install the Debian package chromium (./setup.sh deps does)");
    TestFederation fed;
    DaemonOptions ao;
    // One transfer at a time, each chunk of 1 MiB sent 0.4 s late: ~2.5 MiB/s on one stream.
    ao.extra_toml =
        "[queue]\nmax_running = 1\n\n[fault_injection]\nsend_delay_us = 400000\n\n[staging]\ndir = \"" +
        fed.dir() + "/a/export/cache\"\nquota = \"1GiB\"\n";
    ao.https_api = true;
    ao.api_operators = {"ops@inst-a"};
    DaemonPair p(fed, ao);
    DaemonProcess& a = *p.a;

    // A pull of a file b does not have: fails, with its reason.
    json failed = a.Post("/v1/transfers", R"({"source": "b:/missing.bin", "destination": ")" +
                                              a.Path("missing.bin") + R"("})");
    const std::string failed_id = failed.value("id", std::string());
    REQUIRE_MESSAGE(!failed_id.empty(), failed.dump());
    CHECK(a.WaitForTerminal(failed_id, 60s)["state"] == "failed");

    // A dataset in the staging cache, leased for a job (staged before the slow push takes the
    // daemon's one transfer slot).
    DaemonProcess& b = *p.b;
    MakeDir(b.Path("datasets"));
    MakeDir(b.Path("datasets/demo"));
    WriteRandomFile(b.Path("datasets/demo/part-0.bin"), 3 * kMiB, 7);
    json staged = a.Post("/v1/stage", R"({"source": "b:/datasets/demo", "lease": "slurm-4242"})");
    REQUIRE_MESSAGE(staged.contains("id"), staged.dump());
    CHECK(a.Get("/v1/stage/" + staged["id"].get<std::string>() + "?wait=60")["state"] == "ready");

    WriteRandomFile(a.Path("big.bin"), 256 * kMiB, 5);
    json running =
        a.Post("/v1/transfers", R"({"source": ")" + a.Path("big.bin") +
                                    R"(", "destination": "b:/big.bin", "chunk_size": "1MiB", "streams": 1})");
    const std::string running_id = running.value("id", std::string());
    REQUIRE_MESSAGE(!running_id.empty(), running.dump());
    REQUIRE(WaitUntil(
        [&] {
          json t = a.Transfer(running_id);
          return t["state"] == "running" && t["progress"].value("bytes_sent", uint64_t{0}) > 0;
        },
        60s, 100ms));
    WriteRandomFile(a.Path("small.bin"), 1 * kMiB, 6);
    json queued = a.Post("/v1/transfers", R"({"source": ")" + a.Path("small.bin") +
                                              R"(", "destination": "b:/small.bin", "priority": 2})");
    const std::string queued_id = queued.value("id", std::string());
    REQUIRE_MESSAGE(!queued_id.empty(), queued.dump());
    CHECK(a.Transfer(queued_id)["state"] == "queued");
    // Submitted after it, but of a higher priority: first in the queue.
    json first = a.Post("/v1/transfers", R"({"source": ")" + a.Path("small.bin") +
                                             R"(", "destination": "b:/small2.bin", "priority": 5})");
    const std::string first_id = first.value("id", std::string());
    REQUIRE_MESSAGE(!first_id.empty(), first.dump());

    // On the HTTPS port the page's files need no token, the data does.
    {
      auto c = api::HttpClient::ConnectTls(a.api_url(), a.ca_file());
      REQUIRE_MESSAGE(c.has_value(), c.error().ToString());
      auto page = (*c)->Request("GET", "/dashboard");
      REQUIRE(page.has_value());
      CHECK(page->status == 200);
      CHECK(page->body.find("/dashboard/app.js") != std::string::npos);
      bool csp = false;
      for (const auto& [k, v] : page->headers)
        csp = csp || (k == "content-security-policy" && v.find("default-src 'self'") == 0);
      CHECK(csp);
      auto data = (*c)->Request("GET", "/v1/transfers");
      REQUIRE(data.has_value());
      CHECK(data->status == 401);
    }

    const std::string shot = std::string(PORO_TEST_OUTPUT_DIR) + "/dashboard.png";
    const std::string token = IssueTestToken(fed, "inst-a", "ops@inst-a", "a", {"transfer.read"});
    CliResult r = RunProgram("/usr/bin/python3",
                             {std::string(PORO_SOURCE_DIR) + "/tests/integration/dashboard_check.py",
                              "--cli",
                              PORO_CLI_BIN,
                              "--socket",
                              a.socket(),
                              "--chromium",
                              kChromium,
                              "--running",
                              running_id,
                              "--queued",
                              queued_id,
                              "--queued-first",
                              first_id,
                              "--failed",
                              failed_id,
                              "--screenshot",
                              shot,
                              "--staged",
                              "b:/datasets/demo",
                              "--lease",
                              "slurm-4242",
                              "--api-url",
                              a.api_url(),
                              "--ca",
                              a.ca_file(),
                              "--api-token",
                              token},
                             a.socket(), 240s);
    INFO(r.Describe());
    CHECK(r.exit_code == 0);
    // Nothing the page or the helpers did changed a transfer: the running one still runs (its
    // cancel through the helper was refused), no transfer was added.
    CHECK(a.Transfer(running_id)["state"] == "running");
    CHECK(a.Get("/v1/transfers")["transfers"].size() == 5);  // with the staging pull
    a.Post("/v1/transfers/" + running_id + "/cancel", "");
    CHECK(a.WaitForTerminal(running_id, 60s)["state"] == "cancelled");
  }
}

}  // namespace
}  // namespace pororoca::test
