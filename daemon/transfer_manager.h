// TransferManager: the transfer queue of one daemon. It keeps every submitted transfer in the
// TransferStore (SQLite in state_dir), starts them as the limits allow (at most max_running at once,
// max_running_per_peer with one peer), choosing the next by priority and then fair share between
// institutions and users (Pick, docs/architecture.md section 3), runs each attempt on a worker
// thread through the attempt function it is given (the session runner's initiator in the daemon, a
// fake in unit tests), puts a retryable failure back in the queue after its backoff, resumes what
// was accepted and not finished at start-up, and forgets finished transfers after
// [storage] keep_finished_s.
//
// Thread-safety: every method may be called from any thread. Lock order: mu_ before a Transfer's
// mu, and both before the store's own lock.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "base/mutex.h"
#include "daemon/events.h"
#include "daemon/transfer.h"
#include "daemon/transfer_store.h"
#include "daemon/workers.h"
#include "pororoca/status.h"

namespace pororoca::daemon {

class TransferManager {
 public:
  struct Options {
    std::string db_path;                // the queue (state_dir/queue.db)
    std::string legacy_dir;             // JSON records of earlier versions, migrated at start-up ("" none)
    std::string node = "local";         // this daemon's name in the queue's claims (its endpoint)
    unsigned max_running = 16;          // transfers running at once
    unsigned max_running_per_peer = 8;  // of them, with one peer endpoint
    unsigned retry_attempts = 30;       // attempts after the first, for retryable failures
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

  // Opens the queue and starts the scheduler.
  Status Open() PORO_EXCLUDES(mu_);
  // Adds the transfer to the queue (on disk before this returns). If its owner already submitted
  // one with the same submission_id, returns that one instead (`*existing` = true) and adds nothing;
  // kAlreadyExists if that one asked for something else.
  Result<std::shared_ptr<Transfer>> Submit(const std::shared_ptr<Transfer>& t, bool* existing = nullptr)
      PORO_EXCLUDES(mu_);
  // Start-up: migrates JSON records of earlier versions into the queue, loads the queue, queues
  // again what was accepted and not finished (a transfer that was running when the daemon died
  // resumes from its journal), forgets expired records. A transfer already submitted through the
  // API since start-up is not loaded twice.
  void LoadPersisted() PORO_EXCLUDES(mu_);

  // The transfer with this id, or the only one whose id starts with it (as git takes a commit's
  // prefix). kNotFound names what was asked; a prefix of several ids is kInvalidArgument listing
  // them.
  // `visible` (if given) limits the search to the transfers a caller may see: another user's
  // transfers are not found, and their ids are not listed.
  using Visible = std::function<bool(const Transfer&)>;
  Result<std::shared_ptr<Transfer>> Find(const std::string& id_or_prefix,
                                         const Visible& visible = nullptr) const PORO_EXCLUDES(mu_);
  // Oldest first; only those `visible` (if given) accepts.
  std::vector<std::shared_ptr<Transfer>> List(const Visible& visible = nullptr) const PORO_EXCLUDES(mu_);

  // A bulk job: `entries` (transfers with the same job_id and job_index 0..n-1) are stored in one
  // transaction, then queued; each runs, retries and is scheduled as a transfer of its own. With
  // submission ids (the API gives entry i "SID#i"), a job whose first entry exists already is
  // returned instead (`*existing` = true), or kAlreadyExists if that job asked for something else.
  using Job = std::vector<std::shared_ptr<Transfer>>;  // the entries, in order
  Result<Job> SubmitJob(const Job& entries, bool* existing = nullptr) PORO_EXCLUDES(mu_);
  // Job `id`, or the only one whose id starts with it; `visible` as for Find (a job is its first
  // entry's owner's).
  Result<Job> FindJob(const std::string& id_or_prefix, const Visible& visible = nullptr) const
      PORO_EXCLUDES(mu_);
  // Every job `visible` accepts, oldest first.
  std::vector<Job> ListJobs(const Visible& visible = nullptr) const PORO_EXCLUDES(mu_);
  // A job as the API and its events show it: state (queued while no entry has started, running
  // until every entry has ended, then succeeded, cancelled, failed when none succeeded even in
  // part, else partial), counts by state, summed progress, and (with_entries) each entry.
  static nlohmann::json JobView(const Job& job, bool with_entries);
  // Cancels a transfer (a queued or retrying one ends at once); `id` as for Find().
  Result<std::shared_ptr<Transfer>> Cancel(const std::string& id, const Visible& visible = nullptr)
      PORO_EXCLUDES(mu_);
  // Blocks until `t` ends, `timeout` passes or the manager stops.
  void WaitEnded(Transfer& t, std::chrono::steady_clock::duration timeout) const;
  // The same for every entry of a job.
  void WaitJobEnded(const Job& job, std::chrono::steady_clock::duration timeout) const;
  // The record as the store holds it (what a restarted daemon would read).
  Result<nlohmann::json> StoredRecord(const std::string& id) const;
  // Per-file results of transfer `id` (TransferStore::ListFiles): recorded about once a second
  // while it runs, and all of an attempt's before its outcome is recorded.
  Result<FilePage> Files(const std::vector<std::string>& ids, const std::string& state, uint64_t offset,
                         uint32_t limit) const;
  // The transfers' events (GET /v1/events): each change of state, and progress while they run.
  EventLog& events() { return events_; }
  // How many transfers wait for a slot, and how many run.
  size_t queued() const PORO_EXCLUDES(mu_);
  size_t running() const PORO_EXCLUDES(mu_);
  // The transfers on record by state (indexed by TransferState), the jobs by state (JobView's
  // rule), and queued() and running(), in one pass (the metrics' scrape).
  struct StateCounts {
    std::array<uint64_t, 7> transfers{};
    std::map<std::string, uint64_t> jobs;
    size_t waiting = 0;
    unsigned running = 0;
  };
  StateCounts CountStates() const PORO_EXCLUDES(mu_);
  // A job's state from its entries' states (counts by state name), n entries, whether all ended.
  static std::string JobState(const std::map<std::string, uint64_t>& by_state, uint64_t n, bool all_ended);

  // Stops every transfer where it is: their records keep saying "running" or "retrying", so the
  // next start-up resumes them. Their threads end through the WorkerSet.
  void Stop() PORO_EXCLUDES(mu_);
  bool stopping() const { return stopping_.load(); }

  // Forgets the finished transfers that ended more than keep_finished_s ago (records and memory);
  // at most once per min(60 s, keep_finished_s / 2) unless `force`.
  void PruneFinished(bool force = false) PORO_EXCLUDES(mu_);

  // Fair share, for the scheduler and its tests: which of `waiting` to start next. Among those whose
  // time has come (`not_before_ms` <= now) and whose peer has a free slot: the highest priority; then
  // the institution with the fewest running transfers, then the one that started one least
  // recently; then the same between that institution's users; then the oldest submission. -1 if
  // none may start.
  struct Candidate {
    unsigned priority;
    std::string institution, owner, peer;
    int64_t not_before_ms;
    int64_t created_ms;
  };
  struct Shares {
    std::map<std::string, unsigned> running_by_institution, running_by_owner, running_by_peer;
    std::map<std::string, uint64_t> last_start_institution, last_start_owner;  // start counter, 0 = never
  };
  static int Pick(const std::vector<Candidate>& waiting, const Shares& shares, int64_t now_ms,
                  unsigned max_per_peer);

 private:
  struct Waiting {
    std::shared_ptr<Transfer> t;
    int64_t not_before_ms = 0;  // retrying: when its backoff ends
  };
  void Schedule() PORO_EXCLUDES(mu_);  // the scheduler thread
  // Starts what the limits allow; returns when the earliest waiting transfer's backoff ends (or 0).
  int64_t StartReady() PORO_REQUIRES(mu_);
  void Track(const Transfer& t, int delta) PORO_REQUIRES(mu_);           // running counts
  void AddToJob(const std::shared_ptr<Transfer>& t) PORO_REQUIRES(mu_);  // jobs_, in entry order
  enum class Outcome { kEnded, kRetry, kLeft /* daemon stopping: resumed at the next start-up */ };
  // One attempt: running, the attempt function, the outcome in the record.
  Outcome RunAttempt(const std::shared_ptr<Transfer>& t) PORO_EXCLUDES(mu_);
  // Takes the outcome of an attempt into the record.
  Outcome Settle(Transfer& t, const Result<nlohmann::json>& r);
  // Writes the record to the store and publishes the change as an event.
  Status Persist(const Transfer& t) const;
  // A "transfer" event with the transfer as the API shows it.
  void PublishState(const Transfer& t) const;
  // A "job" event: the job as JobView shows it, without its entries.
  void PublishJob(const Job& job) const;
  // A "progress" event for each running transfer whose counters moved since the last one.
  void PublishProgress() PORO_REQUIRES(mu_);
  // Takes the per-file results `t`'s session gathered since the last call and stores them (and
  // publishes a "file" event for each failed file), under t.files_mu.
  void DrainFileResults(const Transfer& t) const PORO_EXCLUDES(mu_);
  void Migrate() PORO_EXCLUDES(mu_);
  int64_t PruneCutoffMs() const;
  std::chrono::milliseconds Backoff(unsigned attempts) const;

  const Options options_;
  const AttemptFn attempt_;
  WorkerSet* const workers_;
  std::unique_ptr<TransferStore> store_;
  mutable EventLog events_;
  std::atomic<bool> stopping_{false};
  std::thread scheduler_;

  Mutex submit_mu_;   // one submission at a time, so that a submission id is looked up and added together
  mutable Mutex mu_;  // before any Transfer::mu
  CondVar cv_;        // wakes the scheduler (submission, end of an attempt, cancel, stop)
  std::map<std::string, std::shared_ptr<Transfer>> transfers_ PORO_GUARDED_BY(mu_);
  std::map<std::string, Job> jobs_ PORO_GUARDED_BY(mu_);  // by job id: the entries still on record
  // What the job events have said: started, and which entries have ended (the end is published once).
  struct JobTrack {
    std::set<std::string> ended;
    bool started = false, done = false;
  };
  mutable std::map<std::string, JobTrack> job_track_ PORO_GUARDED_BY(mu_);
  std::list<Waiting> waiting_ PORO_GUARDED_BY(mu_);  // queued and retrying, in submission order
  // Running transfers, with the counters of the last progress event published for each.
  std::map<std::string, std::pair<std::shared_ptr<Transfer>, nlohmann::json>> running_set_
      PORO_GUARDED_BY(mu_);
  Shares shares_ PORO_GUARDED_BY(mu_);
  uint64_t starts_ PORO_GUARDED_BY(mu_) = 0;
  std::chrono::steady_clock::time_point last_prune_ PORO_GUARDED_BY(mu_);
  unsigned running_ PORO_GUARDED_BY(mu_) = 0;  // attempts not yet returned: the destructor waits for them
};

}  // namespace pororoca::daemon
