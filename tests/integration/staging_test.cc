// The staging cache (docs/staging.md): `pororoca stage` pulls a dataset into [staging] dir once for
// every job that asks, leases keep it, eviction follows the watermarks and never takes a leased
// copy, a daemon killed while staging resumes the same pull, and a copy served from the cache is
// still the source's to allow.
#include <doctest/doctest.h>

#include <future>
#include <set>
#include <string>
#include <thread>

#include "support/daemon_harness.h"

namespace pororoca::test {
namespace {

using nlohmann::json;
constexpr uint64_t kMiB = 1ull << 20;

std::string StagingToml(const std::string& dir, const std::string& quota, const std::string& extra = "") {
  return "[staging]\ndir = \"" + dir + "\"\nquota = \"" + quota + "\"\n" + extra;
}

// A dataset at b: `files` files of `size` bytes under /datasets/NAME (and one in a subdirectory).
void MakeDataset(const DaemonProcess& b, const std::string& name, int files, uint64_t size, uint64_t seed) {
  if (!Exists(b.Path("datasets"))) MakeDir(b.Path("datasets"));
  MakeDir(b.Path("datasets/" + name));
  MakeDir(b.Path("datasets/" + name + "/sub"));
  for (int i = 0; i < files; ++i) {
    WriteRandomFile(b.Path("datasets/" + name + "/part-" + std::to_string(i) + ".bin"), size, seed + i);
  }
  WriteFile(b.Path("datasets/" + name + "/sub/labels.txt"), "labels of " + name + "\n");
}

json Staging(const DaemonProcess& a) { return a.Get("/v1/staging"); }

json FindDataset(const json& staging, const std::string& source) {
  for (const auto& d : staging["datasets"]) {
    if (d["source"] == source) return d;
  }
  return json::object();  // not in the cache
}

std::set<std::string> Leases(const json& d) {
  std::set<std::string> out;
  if (d.contains("leases")) {
    for (const auto& l : d["leases"]) out.insert(l["lease"].get<std::string>());
  }
  return out;
}

TEST_SUITE("integration.staging") {
  TEST_CASE(
      "two jobs staging one dataset share one pull, the copy is verified, leased and then served at once") {
    TestFederation fed;
    DaemonOptions ao;
    ao.chunk_size = "1MiB";
    DaemonOptions bo;
    bo.extra_toml =
        "[fault_injection]\nsend_delay_us = 60000\n";  // a pull of some seconds: both jobs ask during it
    DaemonPair p(fed, ao, bo);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    MakeDataset(b, "imagenet", 6, 6 * kMiB + 77, 11);
    a.Stop();
    a.options().extra_toml = StagingToml(a.Path("cache"), "1GiB");
    REQUIRE(a.Start());

    const std::string env1 = fed.dir() + "/job1.env";
    auto job1 = std::async(std::launch::async, [&] {
      return Cli(a, {"stage", "b:/datasets/imagenet", "--lease", "job1", "--ttl", "2h", "--wait",
                     "--env-file", env1});
    });
    // The second job asks while the first one's pull runs.
    REQUIRE(WaitUntil(
        [&] { return FindDataset(Staging(a), "b:/datasets/imagenet").value("state", "") == "staging"; },
        20s));
    json during = a.Post("/v1/stage", R"({"source": "b:/datasets/imagenet", "lease": "job2"})");
    CHECK(during.value("http_status", 202) == 202);
    CHECK(during["state"] == "staging");  // never presented as ready before the pull ended
    CliResult r2 = Cli(a, {"stage", "b:/datasets/imagenet", "--lease", "job2", "--wait"});
    CliResult r1 = job1.get();
    INFO(r1.Describe());
    INFO(r2.Describe());
    REQUIRE(r1.exit_code == 0);
    REQUIRE(r2.exit_code == 0);
    const std::string copy = a.Path("cache/b/datasets/imagenet");
    CHECK(Trim(r1.out) == copy);
    CHECK(Trim(r2.out) == copy);
    CHECK(ReadFile(env1) == "export PORORO_DATASET='" + copy + "'\n");
    CHECK_MESSAGE(CompareTrees(b.Path("datasets/imagenet"), copy).empty(),
                  DescribeDiffs(CompareTrees(b.Path("datasets/imagenet"), copy)));
    CHECK(Partials(copy).empty());

    // One pull for both jobs.
    json transfers = a.Get("/v1/transfers");
    REQUIRE(transfers["transfers"].size() == 1);
    CHECK(transfers["transfers"][0]["state"] == "succeeded");
    json d = FindDataset(Staging(a), "b:/datasets/imagenet");
    CHECK(d["state"] == "ready");
    CHECK(d["files"] == 7);
    CHECK(d["bytes"] == 6 * (6 * kMiB + 77) + std::string("labels of imagenet\n").size());
    CHECK(d["transfer_id"] == transfers["transfers"][0]["id"]);
    CHECK(Leases(d) == std::set<std::string>{"job1", "job2"});

    // A third job: ready at once (200), no new transfer; then the leases go.
    json third = a.Post("/v1/stage", R"({"source": "b:/datasets/imagenet/", "lease": "job3"})");
    CHECK(third.value("http_status", 200) == 200);
    CHECK(third["state"] == "ready");
    CHECK(third["path"] == copy);
    CHECK(a.Get("/v1/transfers")["transfers"].size() == 1);
    CliResult rel = Cli(a, {"release", "job1"});
    CHECK(rel.exit_code == 0);
    CHECK(rel.out == "released 1 lease(s) of job1\n");
    CHECK(Cli(a, {"release", "job1"}).out == "released 0 lease(s) of job1\n");
    CHECK(Leases(FindDataset(Staging(a), "b:/datasets/imagenet")) == std::set<std::string>{"job2", "job3"});
    CliResult list = Cli(a, {"staging"});
    CHECK(list.exit_code == 0);
    CHECK(list.out.find("ready") != std::string::npos);
    CHECK(list.out.find("leases: job2,job3") != std::string::npos);

    // The cache's state survives a restart.
    a.Stop();
    REQUIRE(a.Start());
    d = FindDataset(Staging(a), "b:/datasets/imagenet");
    CHECK(d["state"] == "ready");
    CHECK(Leases(d) == std::set<std::string>{"job2", "job3"});
  }

  TEST_CASE("stage refusals: overlapping datasets, a missing one fails with its reason, bad arguments") {
    TestFederation fed;
    DaemonPair p(fed);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    MakeDataset(b, "era5", 2, 100000, 3);
    // Staging off: the routes say so.
    CliResult off = Cli(a, {"stage", "b:/datasets/era5"});
    CHECK(off.exit_code == 4);
    CHECK(off.err.find("staging is not configured") != std::string::npos);
    a.Stop();
    a.options().extra_toml = StagingToml(a.Path("cache"), "1GiB");
    REQUIRE(a.Start());

    CHECK(Cli(a, {"stage", "b:/datasets/era5", "--wait"}).exit_code == 0);
    CliResult over = Cli(a, {"stage", "b:/datasets/era5/sub", "--wait"});
    CHECK(over.exit_code == 2);
    CHECK(over.err.find("overlaps b:/datasets/era5") != std::string::npos);
    CliResult whole = Cli(a, {"stage", "b:/"});
    CHECK(whole.exit_code == 2);
    CliResult missing = Cli(a, {"stage", "b:/datasets/nope", "--wait"});
    INFO(missing.Describe());
    CHECK(missing.exit_code == 1);
    CHECK(missing.err.find("failed") != std::string::npos);
    CHECK(FindDataset(Staging(a), "b:/datasets/nope")["state"] == "failed");
    CHECK(Cli(a, {"stage", "b:/datasets/era5", "--ttl", "soon"}).exit_code == 2);
    CHECK(Cli(a, {"stage", "nowhere:/datasets/era5"}).exit_code == 4);
    CHECK(Cli(a, {"stage", "a:/cache"}).exit_code == 2);
    // Only the cache's own pulls write in it: not a peer's push, not a local user's pull.
    CliResult push =
        Cli(b, {"cp", b.Path("datasets/era5/part-0.bin"), "a:/cache/b/datasets/era5/part-0.bin"});
    CHECK(push.exit_code == 5);
    CHECK_MESSAGE(push.output().find("staging cache") != std::string::npos, push.Describe());
    CliResult pull = Cli(a, {"cp", "b:/datasets/era5/part-1.bin", a.Path("cache/b/x.bin")});
    CHECK(pull.exit_code == 5);
    CHECK(pull.err.find("staging cache") != std::string::npos);
    CHECK(Cli(a, {"cp", "b:/datasets/era5/part-1.bin", a.Path("x.bin")}).exit_code == 0);
  }

  TEST_CASE(
      "eviction: least recently used datasets without a lease go above the high watermark, down to the low") {
    TestFederation fed;
    DaemonPair p(fed);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    for (int i = 1; i <= 6; ++i)
      MakeDataset(b, "d" + std::to_string(i), 3, 1000000, 100 * i);  // 2.9 MiB each
    a.Stop();
    // 10 MiB: eviction above 9 MiB (at a fourth dataset), down to 6.5 MiB (two datasets left).
    a.options().extra_toml =
        StagingToml(a.Path("cache"), "10MiB", "high_watermark = 0.9\nlow_watermark = 0.65\n");
    REQUIRE(a.Start());
    auto stage = [&](const std::string& name, const std::string& lease) {
      std::vector<std::string> args{"stage", "b:/datasets/" + name, "--wait"};
      if (!lease.empty()) args.insert(args.end(), {"--lease", lease});
      CliResult r = Cli(a, args);
      INFO(r.Describe());
      CHECK(r.exit_code == 0);
      std::this_thread::sleep_for(20ms);  // distinct last-use times
    };
    auto present = [&](const std::string& name) {
      return FindDataset(Staging(a), "b:/datasets/" + name).contains("id") &&
             Exists(a.Path("cache/b/datasets/" + name));
    };
    stage("d1", "job1");  // the oldest, but leased
    stage("d2", "");
    stage("d3", "");
    CHECK(Staging(a)["evictions"] == 0);
    stage("d4", "");  // 12 MiB > 9: d2 and d3 go (least recently used without a lease), 6 MiB left
    REQUIRE(WaitUntil([&] { return Staging(a).value("evictions", 0) == 2; }, 10s));
    CHECK(present("d1"));
    CHECK(!present("d2"));
    CHECK(!present("d3"));
    CHECK(present("d4"));
    json s = Staging(a);
    CHECK(s["used_bytes"].get<uint64_t>() <= static_cast<uint64_t>(0.65 * 10 * kMiB));

    // Once released, d1 is the least recently used: the next pass takes it first.
    CHECK(Cli(a, {"release", "job1"}).exit_code == 0);
    std::this_thread::sleep_for(20ms);
    stage("d4", "job4");  // used again, and leased
    stage("d5", "");
    stage("d6", "");  // 12 MiB again: d1 goes, then d5 (d4 is leased)
    REQUIRE(WaitUntil([&] { return Staging(a).value("evictions", 0) == 4; }, 10s));
    CHECK(!present("d1"));
    CHECK(present("d4"));
    CHECK(!present("d5"));
    CHECK(present("d6"));
    // What eviction removed is gone from disk too (no renamed-away copies left behind).
    CHECK(WaitUntil([&] { return !Exists(a.Path("cache/b/datasets/d5")); }, 5s));
    // A dataset evicted and asked for again is pulled again.
    stage("d2", "");
    CHECK(present("d2"));
    CHECK_MESSAGE(CompareTrees(b.Path("datasets/d2"), a.Path("cache/b/datasets/d2")).empty(),
                  DescribeDiffs(CompareTrees(b.Path("datasets/d2"), a.Path("cache/b/datasets/d2"))));
  }

  TEST_CASE(
      "kill -9 of the daemon while staging: after the restart the same pull resumes and the stage "
      "completes") {
    TestFederation fed;
    DaemonOptions ao;
    ao.chunk_size = "1MiB";
    ao.streams = 2;
    DaemonOptions bo;
    bo.extra_toml = "[fault_injection]\nsend_delay_us = 100000\n";
    DaemonPair p(fed, ao, bo);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    MakeDataset(b, "big", 4, 12 * kMiB, 5);
    a.Stop();
    a.options().extra_toml = StagingToml(a.Path("cache"), "1GiB");
    REQUIRE(a.Start());

    json first = a.Post("/v1/stage", R"({"source": "b:/datasets/big", "lease": "job7"})");
    REQUIRE(first.value("http_status", 202) == 202);
    const std::string tid = first["transfer_id"];
    REQUIRE(WaitUntil([&] { return a.Transfer(tid)["progress"].value("bytes_done", uint64_t{0}) > 4 * kMiB; },
                      30s));
    a.Kill9();
    REQUIRE(a.Start());
    // Still staging (never ready with half the files), then ready with the same pull.
    json after = FindDataset(Staging(a), "b:/datasets/big");
    CHECK(after["state"] == "staging");
    CHECK(after["transfer_id"] == tid);
    CliResult r = Cli(a, {"stage", "b:/datasets/big", "--lease", "job7", "--wait", "--timeout", "2m"});
    INFO(r.Describe());
    REQUIRE(r.exit_code == 0);
    const std::string copy = a.Path("cache/b/datasets/big");
    CHECK(Trim(r.out) == copy);
    CHECK_MESSAGE(CompareTrees(b.Path("datasets/big"), copy).empty(),
                  DescribeDiffs(CompareTrees(b.Path("datasets/big"), copy)));
    CHECK(Partials(copy).empty());
    json d = FindDataset(Staging(a), "b:/datasets/big");
    CHECK(d["transfer_id"] == tid);
    CHECK(a.Get("/v1/transfers")["transfers"].size() == 1);
    CHECK(a.Transfer(tid)["attempts"].get<int>() >= 2);
    CHECK(Leases(d) == std::set<std::string>{"job7"});
  }

  TEST_CASE("the Kubernetes example of docs/staging.md stages as written") {
    const std::string src = PORO_SOURCE_DIR;
    TestFederation fed;
    DaemonPair p(fed);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    MakeDataset(b, "era5", 3, 300000, 21);
    a.Stop();
    a.options().extra_toml = StagingToml(a.Path("cache"), "1GiB");
    REQUIRE(a.Start());
    const std::string work = fed.dir() + "/k8s";
    MakeDir(work);
    CliResult r = RunProgram(
        "/usr/bin/python3",
        {src + "/tests/docs/k8s_check.py", src + "/docs/staging.md", "--socket", a.socket(), "--cli",
         PORO_CLI_BIN, "--work", work, "--map", "cenapad-dtn1=b", "--pod-uid", "pod-1234"},
        a.socket(), 300s);
    INFO(r.Describe());
    CHECK(r.exit_code == 0);
    CHECK(r.out.find("train.py: 4 files under " + a.Path("cache/b/datasets/era5")) != std::string::npos);
    CHECK(Leases(FindDataset(Staging(a), "b:/datasets/era5")) == std::set<std::string>{"k8s-pod-1234"});
  }

  TEST_CASE("a copy served from the cache is still the source's to allow: a denied caller is refused") {
    TestFederation fed;
    DaemonPair p(fed);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    MakeDataset(b, "clinical", 2, 200000, 9);
    a.Stop();
    // Every use asks the source again (revalidate_s = 0); the lease keeps the copy from a refresh.
    a.options().extra_toml = StagingToml(a.Path("cache"), "1GiB", "revalidate_s = 0\n");
    REQUIRE(a.Start());
    REQUIRE(Cli(a, {"stage", "b:/datasets/clinical", "--lease", "job1", "--wait"}).exit_code == 0);
    std::this_thread::sleep_for(10ms);
    CHECK(Cli(a, {"stage", "b:/datasets/clinical", "--lease", "job2", "--wait"}).exit_code == 0);
    const size_t audited = b.AuditRecords().size();

    // b's policy now refuses a's pulls: the copy a holds is not handed out any more.
    fed.SetRules(json::array({{{"id", "nothing-to-a"}, {"effect", "deny"}, {"destination", {"inst-a"}}}}));
    const uint64_t serial = fed.Publish();
    REQUIRE(WaitUntil([&] { return b.Get("/v1/federation").value("serial", uint64_t{0}) == serial; }, 15s));
    std::this_thread::sleep_for(10ms);
    CliResult denied = Cli(a, {"stage", "b:/datasets/clinical", "--lease", "job3", "--wait"});
    INFO(denied.Describe());
    CHECK(denied.exit_code == 5);
    CHECK(Leases(FindDataset(Staging(a), "b:/datasets/clinical")) == std::set<std::string>{"job1", "job2"});
    CHECK(b.AuditRecords().size() > audited);  // b decided (and audited) it
  }
}

}  // namespace
}  // namespace pororoca::test
