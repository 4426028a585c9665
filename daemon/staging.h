// StagingCache: datasets brought to this node before the jobs that read them ([staging],
// docs/staging.md). A dataset is ENDPOINT:/path, copied by a pull (a transfer of the
// TransferManager, verified and resumable as any) into DIR/ENDPOINT/path. Jobs take leases on it;
// a dataset without a lease is evicted, least recently used first, when the cache passes its high
// watermark, down to the low one. Several stages of one dataset share one pull.
//
// States: staging (its pull is queued or running) -> ready | failed. Only a ready dataset's path is
// given out; a failed one is staged again by the next stage (the pull resumes what arrived). A
// ready copy checked against its source more than revalidate_s ago is checked again by a sync pull
// (files whose size and modification time differ are copied again) when a stage asks for it and
// no job holds a lease on it: a copy in use is not changed under its jobs.
//
// The cache's state (datasets, leases, evictions) is a JSON file in state_dir, replaced atomically
// on every change, so it survives a restart; a pull that was running resumes with the queue.
//
// Thread-safety: every method may be called from any thread. Lock order: mu_ before the
// TransferManager's.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "base/mutex.h"
#include "daemon/transfer_manager.h"
#include "pororoca/status.h"

namespace pororoca::daemon {

class StagingCache {
 public:
  struct Options {
    std::string dir;         // absolute (inside the export root)
    std::string state_file;  // state_dir/staging.json
    uint64_t quota = 0;
    double high_watermark = 0.9, low_watermark = 0.75;
    unsigned revalidate_s = 600;
    unsigned default_ttl_s = 86400;
    std::chrono::milliseconds tick{250};  // how often pulls, leases and the watermark are looked at
  };
  StagingCache(Options o, TransferManager* transfers);
  ~StagingCache();  // Stop()

  // Reads the state file (a dataset whose copy is gone is forgotten).
  Status Open() PORO_EXCLUDES(mu_);
  // Starts the thread that follows pulls, expires leases and evicts, once the TransferManager has
  // loaded its queue (a pull under way when the daemon stopped is found there).
  void Start();
  void Stop() PORO_EXCLUDES(mu_);

  struct Request {
    std::string endpoint, path;   // the source; path absolute and normalised ("/datasets/x")
    std::string lease;            // "" = none
    int64_t ttl_s = 0;            // 0 = default_ttl_s
    int64_t uid = -1;             // who asks
    std::string identity;         // its federated identity ("" none)
    bool access_checked = false;  // the source has just confirmed the caller's access (a query)
  };
  // The local directory the dataset's copy goes in (created), with a trailing '/': the destination
  // of its pull.
  Result<std::string> PrepareDir(const std::string& endpoint, const std::string& path) const;
  struct Staged {
    nlohmann::json view;  // the dataset as the API shows it
    bool ready = false;   // the copy is ready now
    // Nothing done: the dataset would be served from the cache (or its pull joined), and the
    // source has not confirmed this caller's access within revalidate_s. Ask it (a query as the
    // caller), then Stage again with access_checked.
    bool needs_access_check = false;
  };
  // Brings the dataset in unless a current copy is here, by submitting `pull` (a pull of it into
  // PrepareDir, checked as the caller's submission); takes the lease (renewed if the job has it
  // already). kAlreadyExists if the dataset overlaps another one of the cache (one contains the
  // other); kPermissionDenied if the lease is another user's.
  Result<Staged> Stage(const Request& r, const std::shared_ptr<Transfer>& pull) PORO_EXCLUDES(mu_);

  // The dataset `id`; with `wait`, blocks while it is staging (up to `wait` or Stop()).
  Result<nlohmann::json> Get(const std::string& id, std::chrono::steady_clock::duration wait) const
      PORO_EXCLUDES(mu_);
  // Drops every lease named `lease` (returns how many). A lease of another user is
  // kPermissionDenied unless `any_owner`.
  Result<size_t> Release(const std::string& lease, int64_t uid, const std::string& identity, bool any_owner)
      PORO_EXCLUDES(mu_);
  // The whole cache: dir, quota, watermarks, used bytes, evictions, datasets.
  nlohmann::json List() const PORO_EXCLUDES(mu_);

  // Figures for metrics: bytes, datasets by state (ready, staging, failed), leases, evictions.
  struct Totals {
    uint64_t quota = 0, used = 0, evictions = 0, evicted_bytes = 0, leases = 0;
    uint64_t datasets[3] = {0, 0, 0};
  };
  Totals GetTotals() const PORO_EXCLUDES(mu_);

  // Runs one round of the thread's work now (tests, and after a change): settles finished pulls,
  // expires leases, evicts down to the low watermark when above the high one.
  void Tick() PORO_EXCLUDES(mu_);

  static std::string DatasetId(const std::string& endpoint, const std::string& path);

 private:
  struct Lease {
    std::string name;
    int64_t uid = -1;
    std::string identity;
    int64_t expires_ms = 0;
  };
  enum class State { kStaging, kReady, kFailed };
  struct Dataset {
    std::string id, endpoint, path;
    State state = State::kStaging;
    std::string transfer_id, error;
    std::string error_code;  // the failed pull's (a Status code name: PermissionDenied, NotFound, ...)
    uint64_t bytes = 0, files = 0;
    int64_t created_ms = 0, ready_ms = 0, verified_ms = 0, last_used_ms = 0;
    std::string pulled_by;                   // who asked for the pull under way
    std::map<std::string, int64_t> granted;  // who -> when the source last confirmed its access
    std::vector<Lease> leases;
  };
  static const char* StateName(State s);
  std::string LocalPath(const Dataset& d) const;  // DIR/ENDPOINT/path
  nlohmann::json View(const Dataset& d) const;
  nlohmann::json Record(const Dataset& d) const;
  static Result<Dataset> FromRecord(const nlohmann::json& j);
  Status Persist() const PORO_REQUIRES(mu_);
  uint64_t UsedBytes() const PORO_REQUIRES(mu_);
  void Loop() PORO_EXCLUDES(mu_);

  const Options o_;
  TransferManager* const transfers_;
  mutable Mutex mu_;
  mutable CondVar changed_;  // a dataset left staging, or Stop()
  std::map<std::string, Dataset> datasets_ PORO_GUARDED_BY(mu_);
  uint64_t evictions_ PORO_GUARDED_BY(mu_) = 0;
  uint64_t evicted_bytes_ PORO_GUARDED_BY(mu_) = 0;
  bool stop_ PORO_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace pororoca::daemon
