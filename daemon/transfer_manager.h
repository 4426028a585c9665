// TransferManager: the transfers local users submitted. It keeps their records (one JSON file each
// in state_dir/transfers, written atomically), runs each on a worker thread through the attempt
// function it is given (the session runner's initiator in the daemon, a fake in unit tests),
// retries retryable failures with exponential backoff, resumes unfinished records at start-up and
// forgets finished ones after [storage] keep_finished_s.
//
// Thread-safety: every method may be called from any thread. Lock order: mu_ before a Transfer's
// mu; a transfer's thread never holds its own mu while it takes mu_.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/mutex.h"
#include "daemon/transfer.h"
#include "daemon/workers.h"
#include "pororoca/status.h"

namespace pororoca::daemon {

class TransferManager {
 public:
  struct Options {
    std::string dir;               // where records live (state_dir/transfers)
    unsigned retry_attempts = 30;  // attempts after the first, for retryable failures
    unsigned retry_max_backoff_s = 30;
    unsigned keep_finished_s = 30 * 86400;  // 0 = keep forever
    std::chrono::milliseconds first_backoff{1000};
  };
  // Runs one attempt: the receiver's SUMMARY, or the error that ended the session. It may set
  // t.stats while it runs (live progress) and t.cut_reason when the federation cut the session.
  using AttemptFn = std::function<Result<nlohmann::json>(Transfer& t)>;

  TransferManager(Options options, AttemptFn attempt, WorkerSet* workers);
  // Stops, then waits until no transfer thread uses the manager any more.
  ~TransferManager();

  // Creates the records directory.
  Status Open();
  // Writes the record, then starts the transfer.
  Status Submit(const std::shared_ptr<Transfer>& t) PORO_EXCLUDES(mu_);
  // Start-up scan: loads the records, resumes unfinished transfers, deletes expired records. A
  // transfer already submitted through the API since start-up is not loaded twice.
  void LoadPersisted() PORO_EXCLUDES(mu_);

  // The transfer with this id, or the only one whose id starts with it (as git takes a commit's
  // prefix). kNotFound names what was asked; a prefix of several ids is kInvalidArgument listing
  // them.
  Result<std::shared_ptr<Transfer>> Find(const std::string& id_or_prefix) const PORO_EXCLUDES(mu_);
  std::vector<std::shared_ptr<Transfer>> List() const PORO_EXCLUDES(mu_);  // oldest first
  // Cancels a transfer (a queued or retrying one ends at once); `id` as for Find().
  Result<std::shared_ptr<Transfer>> Cancel(const std::string& id) PORO_EXCLUDES(mu_);
  // Blocks until `t` ends, `timeout` passes or the manager stops.
  void WaitEnded(Transfer& t, std::chrono::steady_clock::duration timeout) const;

  // Stops every transfer where it is: their records keep saying "running" or "retrying", so the
  // next start-up resumes them. Their threads end through the WorkerSet.
  void Stop() PORO_EXCLUDES(mu_);
  bool stopping() const { return stopping_.load(); }

  // Forgets the finished transfers that ended more than keep_finished_s ago (records and memory);
  // at most once per min(60 s, keep_finished_s / 2) unless `force`.
  void PruneFinished(bool force = false) PORO_EXCLUDES(mu_);

 private:
  void Start(const std::shared_ptr<Transfer>& t) PORO_EXCLUDES(mu_);
  // Runs `t` on a worker; running_ already counts it.
  void SpawnRun(const std::shared_ptr<Transfer>& t) PORO_EXCLUDES(mu_);
  void Run(const std::shared_ptr<Transfer>& t) PORO_EXCLUDES(mu_);
  enum class Outcome { kEnded, kRetry, kLeft /* daemon stopping: resumed at the next start-up */ };
  // Takes the outcome of an attempt into the record.
  Outcome Settle(Transfer& t, const Result<nlohmann::json>& r);
  Status Persist(const Transfer& t) const;
  std::string RecordPath(const std::string& id) const;
  int64_t PruneCutoffMs() const;

  const Options options_;
  const AttemptFn attempt_;
  WorkerSet* const workers_;
  std::atomic<bool> stopping_{false};

  mutable Mutex mu_;  // before any Transfer::mu
  CondVar cv_;        // wakes backoff waits on cancel and stop
  std::map<std::string, std::shared_ptr<Transfer>> transfers_ PORO_GUARDED_BY(mu_);
  std::chrono::steady_clock::time_point last_prune_ PORO_GUARDED_BY(mu_);
  unsigned running_ PORO_GUARDED_BY(mu_) = 0;  // Run loops not yet returned: the destructor waits for them
};

}  // namespace pororoca::daemon
