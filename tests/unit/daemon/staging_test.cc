#include "daemon/staging.h"

#include <doctest/doctest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <thread>

#include "support/temp_dir.h"

namespace pororoca::daemon {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

// A TransferManager whose pulls "arrive" by writing one file of the dataset's size into the
// destination the cache chose, after `gate` opens (if set).
struct Fixture {
  test::TempDir dir;
  WorkerSet workers;
  std::map<std::string, uint64_t> sizes;  // dataset path at the source -> bytes its pull writes
  std::atomic<int> pulls{0};
  std::shared_future<void> gate;
  std::unique_ptr<TransferManager> tm;

  Fixture() {
    TransferManager::Options o;
    o.db_path = dir / "queue.db";
    o.legacy_dir = dir / "transfers";
    o.retry_attempts = 0;
    tm = std::make_unique<TransferManager>(
        o,
        [this](Transfer& t) -> Result<json> {
          ++pulls;
          if (gate.valid()) gate.wait();
          const std::string name = t.remote.path.substr(t.remote.path.rfind('/') + 1);
          fs::create_directories(t.local_path + name);
          std::ofstream(t.local_path + name + "/data.bin") << std::string(sizes.at(t.remote.path), 'x');
          return json{{"files_committed", 1}};
        },
        &workers);
    REQUIRE(tm->Open().ok());
  }
  ~Fixture() {
    tm->Stop();
    workers.JoinAll();
  }

  StagingCache::Options Opts(uint64_t quota = 1 << 20, double high = 0.9, double low = 0.6) {
    StagingCache::Options so;
    so.dir = dir / "cache";
    so.state_file = dir / "staging.json";
    so.quota = quota;
    so.high_watermark = high;
    so.low_watermark = low;
    return so;
  }
  // What ApiRoutes::Stage hands the cache: a pull of the dataset into its directory.
  std::shared_ptr<Transfer> Pull(StagingCache& c, const std::string& path) {
    auto t = std::make_shared<Transfer>();
    t->id = *NewId();
    t->push = false;
    t->remote.remote = true;
    t->remote.endpoint = "peer";
    t->remote.path = path;
    t->local_path = *c.PrepareDir("peer", path);
    t->recursive = true;
    t->created_ms = NowMs();
    return t;
  }
  Result<StagingCache::Staged> Stage(StagingCache& c, const std::string& path, const std::string& lease,
                                     int64_t uid = 1000, const std::string& identity = "alice@inst",
                                     bool checked = false, int64_t ttl_s = 0) {
    StagingCache::Request r;
    r.endpoint = "peer";
    r.path = path;
    r.lease = lease;
    r.uid = uid;
    r.identity = identity;
    r.access_checked = checked;
    r.ttl_s = ttl_s;
    return c.Stage(r, Pull(c, path));
  }
  // Waits for the pulls to end, then lets the cache settle them.
  void Settle(StagingCache& c) {
    for (const auto& t : tm->List()) tm->WaitEnded(*t, std::chrono::seconds(10));
    c.Tick();
  }
};

json Dataset(const StagingCache& c, const std::string& source) {
  const json all = c.List();  // kept: a range over a temporary's member would dangle
  for (const auto& d : all["datasets"]) {
    if (d["source"] == source) return d;
  }
  return json::object();
}

TEST_CASE_FIXTURE(
    Fixture, "staging: one pull for every stage of a dataset, ready only once it ended, others are asked") {
  std::promise<void> open;
  gate = open.get_future().share();
  sizes["/ds/a"] = 300;
  StagingCache c(Opts(), tm.get());
  REQUIRE(c.Open().ok());
  auto s1 = Stage(c, "/ds/a", "job1");
  REQUIRE(s1.has_value());
  CHECK_FALSE(s1->ready);
  CHECK(s1->view["state"] == "staging");
  // The same user again: joins its own pull.
  auto s2 = Stage(c, "/ds/a", "job2");
  REQUIRE(s2.has_value());
  CHECK_FALSE(s2->needs_access_check);
  CHECK(s2->view["transfer_id"] == s1->view["transfer_id"]);
  // Another user: the source must confirm it first; then it joins too.
  auto s3 = Stage(c, "/ds/a", "job3", 1001, "bob@inst");
  REQUIRE(s3.has_value());
  CHECK(s3->needs_access_check);
  CHECK(Dataset(c, "peer:/ds/a")["leases"].size() == 2);  // nothing done for bob yet
  s3 = Stage(c, "/ds/a", "job3", 1001, "bob@inst", /*checked=*/true);
  REQUIRE(s3.has_value());
  CHECK_FALSE(s3->needs_access_check);
  c.Tick();
  CHECK(Dataset(c, "peer:/ds/a")["state"] == "staging");  // the pull has not ended
  open.set_value();
  Settle(c);
  json d = Dataset(c, "peer:/ds/a");
  CHECK(d["state"] == "ready");
  CHECK(d["bytes"] == 300);
  CHECK(d["files"] == 1);
  CHECK(d["leases"].size() == 3);
  CHECK(pulls.load() == 1);
  CHECK(tm->List().size() == 1);
  // Ready and recently confirmed: served at once.
  auto s4 = Stage(c, "/ds/a", "job4");
  REQUIRE(s4.has_value());
  CHECK(s4->ready);
  CHECK(s4->view["path"] == (dir / "cache/peer/ds/a"));
  CHECK(tm->List().size() == 1);
}

TEST_CASE_FIXTURE(
    Fixture, "staging: eviction takes the least recently used unleased datasets, down to the low watermark") {
  for (const char* p : {"/d1", "/d2", "/d3", "/d4", "/d5", "/d6"}) sizes[p] = 300;
  StagingCache c(Opts(1000, 0.9, 0.6), tm.get());  // evicts above 900 bytes, down to 600
  REQUIRE(c.Open().ok());
  auto stage = [&](const std::string& p, const std::string& lease, int64_t ttl_s = 0) {
    auto r = Stage(c, p, lease, 1000, "alice@inst", false, ttl_s);
    REQUIRE(r.has_value());
    Settle(c);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // distinct last-use times
  };
  stage("/d1", "job1", /*ttl_s=*/1);
  stage("/d2", "");
  stage("/d3", "");
  CHECK(c.List()["evictions"] == 0);
  CHECK(c.List()["used_bytes"] == 900);  // at the high watermark, not above it
  stage("/d4", "");                      // 1200: d2 then d3 go; d1 is older but leased
  json l = c.List();
  CHECK(l["evictions"] == 2);
  CHECK(l["evicted_bytes"] == 600);
  CHECK(l["used_bytes"] == 600);
  CHECK(Dataset(c, "peer:/d1").contains("id"));
  CHECK_FALSE(Dataset(c, "peer:/d2").contains("id"));
  CHECK_FALSE(Dataset(c, "peer:/d3").contains("id"));
  CHECK(Dataset(c, "peer:/d4").contains("id"));
  CHECK_FALSE(fs::exists(dir / "cache/peer/d2"));
  // The lease expires (its end counts as a use of d1, as a release does): d4 is now the least
  // recently used, then d1.
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  c.Tick();
  CHECK(Dataset(c, "peer:/d1")["leases"].empty());
  stage("/d5", "");
  stage("/d6", "");  // 1200: d4, then d1 (unleased now) go; d5 and d6 are newer
  CHECK(c.List()["evictions"] == 4);
  CHECK_FALSE(Dataset(c, "peer:/d1").contains("id"));
  CHECK_FALSE(Dataset(c, "peer:/d4").contains("id"));
  CHECK(Dataset(c, "peer:/d5").contains("id"));
  CHECK(Dataset(c, "peer:/d6").contains("id"));
  CHECK(c.GetTotals().datasets[0] == 2);
}

TEST_CASE_FIXTURE(
    Fixture, "staging: leases are their owner's, the state survives reopening, a copy gone is forgotten") {
  sizes["/ds/x"] = 100;
  sizes["/ds/y"] = 100;
  {
    StagingCache c(Opts(), tm.get());
    REQUIRE(c.Open().ok());
    REQUIRE(Stage(c, "/ds/x", "job1").has_value());
    REQUIRE(Stage(c, "/ds/y", "job1").has_value());
    Settle(c);
    auto taken = Stage(c, "/ds/x", "job1", 1001, "bob@inst", true);
    REQUIRE_FALSE(taken.has_value());
    CHECK(taken.error().code() == Code::kPermissionDenied);
    auto r = c.Release("job1", 1001, "bob@inst", false);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code() == Code::kPermissionDenied);
    auto overlap = Stage(c, "/ds", "job2");
    REQUIRE_FALSE(overlap.has_value());
    CHECK(overlap.error().code() == Code::kAlreadyExists);
  }
  {
    StagingCache c(Opts(), tm.get());
    REQUIRE(c.Open().ok());
    CHECK(Dataset(c, "peer:/ds/x")["state"] == "ready");
    CHECK(Dataset(c, "peer:/ds/x")["leases"][0]["lease"] == "job1");
    auto n = c.Release("job1", 1000, "alice@inst", false);
    REQUIRE(n.has_value());
    CHECK(*n == 2);
  }
  fs::remove_all(dir / "cache/peer/ds/y");
  StagingCache c(Opts(), tm.get());
  REQUIRE(c.Open().ok());
  CHECK(Dataset(c, "peer:/ds/x")["state"] == "ready");
  CHECK(Dataset(c, "peer:/ds/x")["leases"].empty());
  CHECK_FALSE(Dataset(c, "peer:/ds/y").contains("id"));
}

}  // namespace
}  // namespace pororoca::daemon
