#include "daemon/transfer_manager.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>

#include "base/file_util.h"
#include "base/log.h"

namespace pororoca::daemon {

using nlohmann::json;

namespace {
// How long a claim holds a transfer for this daemon; renewed every third of it while it runs.
constexpr int64_t kLeaseMs = 60000;
}  // namespace

TransferManager::TransferManager(Options options, AttemptFn attempt, WorkerSet* workers)
    : options_(std::move(options)), attempt_(std::move(attempt)), workers_(workers) {}

TransferManager::~TransferManager() {
  Stop();
  if (scheduler_.joinable()) scheduler_.join();
  MutexLock lock(&mu_);
  cv_.Wait(&mu_, [&]() PORO_REQUIRES(mu_) { return running_ == 0; });
}

Status TransferManager::Open() {
  if (store_) return Status::OK();
  PORO_ASSIGN_OR_RETURN(store_, OpenSqliteTransferStore(options_.db_path));
  scheduler_ = std::thread([this] { Schedule(); });
  return Status::OK();
}

Status TransferManager::Persist(const Transfer& t) const {
  Status s = store_->Update(t);
  PublishState(t);
  return s;
}

namespace {
// What an event says of a transfer: its view without the long lists.
json EventView(const Transfer& t) {
  json v = t.View();
  for (const char* k : {"failures", "skipped_special", "summary", "options"}) v.erase(k);
  return v;
}
}  // namespace

void TransferManager::PublishState(const Transfer& t) const {
  events_.Publish("transfer", t.id, t.uid, t.user, EventView(t));
  if (t.job_id.empty()) return;
  // A job's own events: when its first entry starts running, and once its last entry has ended.
  TransferState st;
  {
    MutexLock lock(&t.mu);
    st = t.state;
  }
  Job job;
  {
    MutexLock lock(&mu_);
    auto j = jobs_.find(t.job_id);
    if (j == jobs_.end()) return;  // still being submitted: SubmitJob publishes the job itself
    JobTrack& track = job_track_[t.job_id];
    if (st == TransferState::kRunning && !track.started) {
      track.started = true;
      job = j->second;
    }
    if (IsTerminal(st)) {
      track.ended.insert(t.id);
      if (track.ended.size() == j->second.size() && !track.done) {
        track.done = true;
        job = j->second;
      }
    }
  }
  if (!job.empty()) PublishJob(job);
}

void TransferManager::PublishJob(const Job& job) const {
  json v = JobView(job, false);
  events_.Publish("job", job.front()->job_id, job.front()->uid, job.front()->user, std::move(v));
}

void TransferManager::PublishProgress() {
  for (auto& [id, entry] : running_set_) {
    json v = EventView(*entry.first);
    const json& p = v["progress"];
    json moved{{"bytes_verified", p.value("bytes_verified", uint64_t{0})},
               {"bytes_done", p.value("bytes_done", uint64_t{0})},
               {"files_done", p.value("files_done", uint64_t{0})},
               {"bytes_total", p.value("bytes_total", uint64_t{0})}};
    if (moved == entry.second) continue;
    entry.second = moved;
    events_.Publish("progress", id, entry.first->uid, entry.first->user,
                    json{{"state", v["state"]}, {"progress", v["progress"]}, {"elapsed_s", v["elapsed_s"]}});
  }
}

Result<nlohmann::json> TransferManager::StoredRecord(const std::string& id) const { return store_->Get(id); }

Result<FilePage> TransferManager::Files(const std::vector<std::string>& ids, const std::string& state,
                                        uint64_t offset, uint32_t limit) const {
  return store_->ListFiles(ids, state, offset, limit);
}

void TransferManager::DrainFileResults(const Transfer& t) const {
  std::shared_ptr<engine::TransferStats> stats;
  {
    MutexLock lock(&t.mu);
    stats = t.stats;
  }
  if (!stats) return;
  MutexLock saving(&t.files_mu);
  const std::vector<engine::FileResult> results = stats->TakeFileResults();
  if (results.empty()) return;
  if (Status s = store_->AddFileResults(t.id, results, NowMs()); !s.ok()) {
    PORO_LOG(WARNING) << "transfer " << t.id << ": per-file results not recorded: " << s.message();
  }
  // Failed files are events of their own; the others are read with the files route (a tree of a
  // million files would otherwise push every other event out of the log).
  for (const auto& r : results) {
    if (r.state != "failed") continue;
    events_.Publish("file", t.id, t.uid, t.user,
                    json{{"file",
                          {{"path", r.path},
                           {"size", r.size},
                           {"state", r.state},
                           {"error", r.error},
                           {"retryable", r.retryable}}}});
  }
}

namespace {
// The same request: what a retried submission sends again.
bool SameRequest(const Transfer& a, const Transfer& b) {
  return a.push == b.push && a.local_path == b.local_path && a.remote.endpoint == b.remote.endpoint &&
         a.remote.path == b.remote.path && a.recursive == b.recursive && a.options == b.options &&
         a.priority == b.priority;
}
}  // namespace

Result<std::shared_ptr<Transfer>> TransferManager::Submit(const std::shared_ptr<Transfer>& t,
                                                          bool* existing) {
  if (!store_) return Status::Internal("the transfer queue is not open");
  if (existing != nullptr) *existing = false;
  MutexLock submitting(&submit_mu_);
  if (!t->submission_id.empty()) {
    std::shared_ptr<Transfer> prior;
    {
      MutexLock lock(&mu_);
      for (const auto& [id, x] : transfers_) {
        if (x->submission_id == t->submission_id && x->OwnerKey() == t->OwnerKey()) prior = x;
      }
    }
    if (prior) {
      if (!SameRequest(*prior, *t)) {
        return Status::AlreadyExists("submission_id '" + t->submission_id + "' was used for transfer " +
                                     prior->id + " (" + prior->SourceText() + " -> " + prior->DestText() +
                                     "), a different request");
      }
      if (existing != nullptr) *existing = true;
      return prior;
    }
  }
  PORO_ASSIGN_OR_RETURN(std::string id, store_->Add(*t));
  if (id != t->id) {
    // Stored before, not loaded yet: the start-up scan has not run.
    return Status::Unavailable("the daemon is starting and has not loaded submission '" + t->submission_id +
                               "' yet; submit again");
  }
  PublishState(*t);
  MutexLock lock(&mu_);
  transfers_[t->id] = t;
  waiting_.push_back({t, 0});
  cv_.NotifyAll();
  return t;
}

Result<TransferManager::Job> TransferManager::SubmitJob(const Job& entries, bool* existing) {
  if (!store_) return Status::Internal("the transfer queue is not open");
  if (entries.empty()) return Status::InvalidArgument("a job needs at least one entry");
  if (existing != nullptr) *existing = false;
  MutexLock submitting(&submit_mu_);
  const Transfer& first = *entries.front();
  if (!first.submission_id.empty()) {
    Job prior;
    {
      MutexLock lock(&mu_);
      for (const auto& [id, x] : transfers_) {
        if (x->submission_id == first.submission_id && x->OwnerKey() == first.OwnerKey()) {
          auto j = jobs_.find(x->job_id);
          if (j != jobs_.end()) prior = j->second;
        }
      }
    }
    if (!prior.empty()) {
      bool same = prior.size() == entries.size();
      for (size_t i = 0; same && i < entries.size(); ++i) same = SameRequest(*prior[i], *entries[i]);
      if (!same) {
        return Status::AlreadyExists("submission_id was used for job " + prior.front()->job_id + " (" +
                                     std::to_string(prior.size()) + " entries), a different request");
      }
      if (existing != nullptr) *existing = true;
      return prior;
    }
  }
  PORO_RETURN_IF_ERROR(store_->AddMany(entries));
  for (const auto& t : entries) PublishState(*t);
  {
    MutexLock lock(&mu_);
    for (const auto& t : entries) {
      transfers_[t->id] = t;
      AddToJob(t);
      waiting_.push_back({t, 0});
    }
    cv_.NotifyAll();
  }
  PublishJob(entries);
  return entries;
}

void TransferManager::AddToJob(const std::shared_ptr<Transfer>& t) {
  if (t->job_id.empty()) return;
  Job& job = jobs_[t->job_id];
  auto at = std::lower_bound(job.begin(), job.end(), t->job_index,
                             [](const std::shared_ptr<Transfer>& x, unsigned i) { return x->job_index < i; });
  job.insert(at, t);
}

std::string TransferManager::JobState(const std::map<std::string, uint64_t>& by_state, uint64_t n,
                                      bool all_ended) {
  auto count = [&](const char* s) {
    auto it = by_state.find(s);
    return it == by_state.end() ? uint64_t{0} : it->second;
  };
  // queued: nothing started yet; running: not every entry has ended; then by what ended how.
  if (!all_ended) return count("queued") == n ? "queued" : "running";
  if (count("succeeded") == n) return "succeeded";
  if (count("cancelled") == n) return "cancelled";
  if (count("succeeded") + count("partial") == 0) return "failed";
  return "partial";
}

TransferManager::StateCounts TransferManager::CountStates() const {
  StateCounts c;
  static_assert(static_cast<size_t>(TransferState::kCancelled) + 1 ==
                std::tuple_size_v<decltype(c.transfers)>);
  MutexLock lock(&mu_);
  c.waiting = waiting_.size();
  c.running = running_;
  for (const auto& [id, t] : transfers_) {
    MutexLock tl(&t->mu);
    c.transfers[static_cast<size_t>(t->state)]++;
  }
  for (const auto& [id, job] : jobs_) {
    std::map<std::string, uint64_t> by_state;
    bool all_ended = true;
    for (const auto& t : job) {
      MutexLock tl(&t->mu);
      by_state[std::string(TransferStateName(t->state))]++;
      if (!IsTerminal(t->state)) all_ended = false;
    }
    if (!job.empty()) c.jobs[JobState(by_state, job.size(), all_ended)]++;
  }
  return c;
}

json TransferManager::JobView(const Job& job, bool with_entries) {
  json entries = json::array();
  std::map<std::string, uint64_t> by_state;
  uint64_t files_total = 0, files_done = 0, files_failed = 0, bytes_total = 0, bytes_done = 0,
           bytes_verified = 0;
  int64_t finished_ms = 0;
  bool all_ended = true;
  for (const auto& t : job) {
    json v = t->View();
    const std::string state = v.value("state", std::string());
    by_state[state]++;
    const json& pr = v["progress"];
    files_total += pr.value("files_total", uint64_t{0});
    files_done += pr.value("files_done", uint64_t{0});
    files_failed += pr.value("files_failed", uint64_t{0});
    bytes_total += pr.value("bytes_total", uint64_t{0});
    bytes_done += pr.value("bytes_done", uint64_t{0});
    bytes_verified += pr.value("bytes_verified", uint64_t{0});
    if (auto st = ParseTransferState(state); !st || !IsTerminal(*st)) all_ended = false;
    finished_ms = std::max(finished_ms, v.value("finished_ms", int64_t{0}));
    if (with_entries) {
      entries.push_back(json{{"index", t->job_index},
                             {"transfer", t->id},
                             {"state", state},
                             {"source", v["source"]},
                             {"destination", v["destination"]},
                             {"attempts", v["attempts"]},
                             {"error", v["error"]},
                             {"error_code", v["error_code"]},
                             {"files_done", pr.value("files_done", uint64_t{0})},
                             {"files_failed", pr.value("files_failed", uint64_t{0})},
                             {"bytes_done", pr.value("bytes_done", uint64_t{0})}});
    }
  }
  const uint64_t n = job.size();
  const std::string state = JobState(by_state, n, all_ended);
  const Transfer& first = *job.front();
  json out{{"id", first.job_id},
           {"state", state},
           {"user", first.user},
           {"priority", first.priority},
           {"created_ms", first.created_ms},
           {"finished_ms", all_ended ? finished_ms : 0},
           {"entries", n},
           {"by_state", by_state},
           {"progress",
            {{"files_total", files_total},
             {"files_done", files_done},
             {"files_failed", files_failed},
             {"bytes_total", bytes_total},
             {"bytes_done", bytes_done},
             {"bytes_verified", bytes_verified}}}};
  if (!first.submission_id.empty()) {
    out["submission_id"] = first.submission_id.substr(0, first.submission_id.rfind('#'));
  }
  if (with_entries) out["transfers"] = std::move(entries);
  return out;
}

Result<TransferManager::Job> TransferManager::FindJob(const std::string& id, const Visible& visible) const {
  MutexLock lock(&mu_);
  std::vector<const Job*> matches;
  for (auto it = jobs_.lower_bound(id); it != jobs_.end() && it->first.compare(0, id.size(), id) == 0; ++it) {
    if (!it->second.empty() && (!visible || visible(*it->second.front()))) {
      if (it->first == id) return it->second;
      matches.push_back(&it->second);
    }
  }
  if (matches.size() == 1 && !id.empty()) return *matches.front();
  if (matches.empty() || id.empty())
    return Status::NotFound("no job " + (id.empty() ? std::string("''") : id));
  return Status::InvalidArgument("job id prefix '" + id + "' matches " + std::to_string(matches.size()) +
                                 " jobs; give more digits");
}

std::vector<TransferManager::Job> TransferManager::ListJobs(const Visible& visible) const {
  std::vector<Job> out;
  {
    MutexLock lock(&mu_);
    for (const auto& [id, job] : jobs_) {
      if (!job.empty() && (!visible || visible(*job.front()))) out.push_back(job);
    }
  }
  std::sort(out.begin(), out.end(), [](const Job& a, const Job& b) {
    return a.front()->created_ms != b.front()->created_ms ? a.front()->created_ms < b.front()->created_ms
                                                          : a.front()->job_id < b.front()->job_id;
  });
  return out;
}

void TransferManager::WaitJobEnded(const Job& job, std::chrono::steady_clock::duration timeout) const {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (const auto& t : job) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return;
    WaitEnded(*t, deadline - now);
  }
}

void TransferManager::Track(const Transfer& t, int delta) {
  auto add = [delta](std::map<std::string, unsigned>& m, const std::string& k) {
    unsigned& n = m[k];
    n = static_cast<unsigned>(static_cast<int>(n) + delta);
    if (n == 0) m.erase(k);
  };
  add(shares_.running_by_institution, t.OwnerInstitution());
  add(shares_.running_by_owner, t.OwnerKey());
  add(shares_.running_by_peer, t.remote.endpoint);
}

int TransferManager::Pick(const std::vector<Candidate>& waiting, const Shares& shares, int64_t now_ms,
                          unsigned max_per_peer) {
  auto count = [](const auto& m, const std::string& k) -> uint64_t {
    auto it = m.find(k);
    return it == m.end() ? 0 : it->second;
  };
  // Smaller is better.
  auto key = [&](const Candidate& c) {
    return std::make_tuple(-static_cast<int>(c.priority), count(shares.running_by_institution, c.institution),
                           count(shares.last_start_institution, c.institution),
                           count(shares.running_by_owner, c.owner), count(shares.last_start_owner, c.owner),
                           c.created_ms);
  };
  int best = -1;
  for (size_t i = 0; i < waiting.size(); ++i) {
    const Candidate& c = waiting[i];
    if (c.not_before_ms > now_ms) continue;
    if (count(shares.running_by_peer, c.peer) >= max_per_peer) continue;
    if (best < 0 || key(c) < key(waiting[static_cast<size_t>(best)])) best = static_cast<int>(i);
  }
  return best;
}

int64_t TransferManager::StartReady() {
  while (!stopping_ && running_ < options_.max_running && !waiting_.empty()) {
    const int64_t now = NowMs();
    std::vector<Candidate> candidates;
    candidates.reserve(waiting_.size());
    for (const auto& w : waiting_) {
      candidates.push_back(Candidate{w.t->priority, w.t->OwnerInstitution(), w.t->OwnerKey(),
                                     w.t->remote.endpoint, w.not_before_ms, w.t->created_ms});
    }
    const int i = Pick(candidates, shares_, now, options_.max_running_per_peer);
    if (i < 0) break;
    auto it = std::next(waiting_.begin(), i);
    std::shared_ptr<Transfer> t = it->t;
    auto claimed = store_->Claim(t->id, options_.node, now, now + kLeaseMs);
    if (!claimed.has_value() || !*claimed) {
      // Another daemon of a shared queue runs it, or the store failed: look again later.
      if (!claimed.has_value())
        PORO_LOG(WARNING) << "transfer " << t->id << " not started: " << claimed.error().message();
      it->not_before_ms = now + 1000;
      continue;
    }
    waiting_.erase(it);
    running_set_[t->id] = {t, json()};
    Track(*t, +1);
    starts_++;
    shares_.last_start_institution[t->OwnerInstitution()] = starts_;
    shares_.last_start_owner[t->OwnerKey()] = starts_;
    running_++;
    workers_->Spawn([this, t] {
      const Outcome outcome = RunAttempt(t);
      if (outcome == Outcome::kEnded) PruneFinished();
      MutexLock lock(&mu_);  // last: the destructor waits for running_ to reach 0
      Track(*t, -1);
      running_set_.erase(t->id);
      // Back in the queue for its backoff. A Cancel that came after Settle finds it `retrying`, not
      // in the queue, and ends it itself (`cancel` is set under mu_, so one of the two sees it).
      if (outcome == Outcome::kRetry && !t->cancel) {
        MutexLock tl(&t->mu);
        waiting_.push_back({t, t->next_attempt_ms});
      }
      running_--;
      cv_.NotifyAll();
    });
  }
  int64_t earliest = 0;
  for (const auto& w : waiting_) {
    if (w.not_before_ms > 0 && (earliest == 0 || w.not_before_ms < earliest)) earliest = w.not_before_ms;
  }
  return earliest;
}

void TransferManager::Schedule() {
  auto next_renew = std::chrono::steady_clock::now() + std::chrono::milliseconds(kLeaseMs / 3);
  auto next_progress = std::chrono::steady_clock::now();
  MutexLock lock(&mu_);
  while (!stopping_) {
    // Once a second, not at every wake (each submission and each attempt's end wakes it).
    if (!running_set_.empty() && std::chrono::steady_clock::now() >= next_progress) {
      PublishProgress();
      next_progress = std::chrono::steady_clock::now() + std::chrono::seconds(1);
      std::vector<std::shared_ptr<Transfer>> running;
      for (const auto& [id, entry] : running_set_) running.push_back(entry.first);
      lock.Unlock();  // the store's commit waits for the disk: not under the queue's lock
      for (const auto& t : running) DrainFileResults(*t);
      lock.Lock();
      continue;  // look at the queue again: it may have changed meanwhile
    }
    const int64_t wake_ms = StartReady();
    auto deadline = next_renew;
    if (!running_set_.empty()) deadline = std::min(deadline, next_progress);
    if (wake_ms > 0) {
      deadline = std::min(deadline, std::chrono::steady_clock::now() +
                                        std::chrono::milliseconds(std::max<int64_t>(1, wake_ms - NowMs())));
    }
    cv_.WaitUntil(&mu_, deadline);
    if (std::chrono::steady_clock::now() >= next_renew) {
      if (Status s = store_->Renew(options_.node, NowMs() + kLeaseMs); !s.ok()) {
        PORO_LOG(WARNING) << "renewing the queue's leases: " << s.message();
      }
      next_renew = std::chrono::steady_clock::now() + std::chrono::milliseconds(kLeaseMs / 3);
    }
  }
}

Result<std::shared_ptr<Transfer>> TransferManager::Find(const std::string& id, const Visible& visible) const {
  MutexLock lock(&mu_);
  auto it = transfers_.find(id);
  if (it != transfers_.end() && (!visible || visible(*it->second))) return it->second;
  std::vector<std::shared_ptr<Transfer>> matches;
  if (!id.empty()) {
    for (it = transfers_.lower_bound(id); it != transfers_.end() && it->first.compare(0, id.size(), id) == 0;
         ++it) {
      if (!visible || visible(*it->second)) matches.push_back(it->second);
    }
  }
  if (matches.size() == 1) return matches.front();
  if (matches.empty()) return Status::NotFound("no transfer " + (id.empty() ? std::string("''") : id));
  std::string list;
  for (size_t i = 0; i < matches.size() && i < 5; ++i) list += (i ? ", " : "") + matches[i]->id;
  if (matches.size() > 5) list += ", ...";
  return Status::InvalidArgument("transfer id prefix '" + id + "' matches " + std::to_string(matches.size()) +
                                 " transfers (" + list + "); give more digits");
}

std::vector<std::shared_ptr<Transfer>> TransferManager::List(const Visible& visible) const {
  std::vector<std::shared_ptr<Transfer>> list;
  {
    MutexLock lock(&mu_);
    for (const auto& [id, t] : transfers_) {
      if (!visible || visible(*t)) list.push_back(t);
    }
  }
  std::stable_sort(list.begin(), list.end(),
                   [](const auto& a, const auto& b) { return a->created_ms < b->created_ms; });
  return list;
}

size_t TransferManager::queued() const {
  MutexLock lock(&mu_);
  return waiting_.size();
}

size_t TransferManager::running() const {
  MutexLock lock(&mu_);
  return running_;
}

Result<std::shared_ptr<Transfer>> TransferManager::Cancel(const std::string& id, const Visible& visible) {
  PORO_ASSIGN_OR_RETURN(std::shared_ptr<Transfer> t, Find(id, visible));
  {
    MutexLock lock(&mu_);
    t->cancel = true;
    // Waiting for a slot or for its backoff: it ends here. Running: its attempt ends cancelled.
    waiting_.remove_if([&](const Waiting& w) { return w.t == t; });
    cv_.NotifyAll();
  }
  bool ended_here = false;
  {
    MutexLock lock(&t->mu);
    if (t->state == TransferState::kQueued || t->state == TransferState::kRetrying) {
      t->state = TransferState::kCancelled;
      t->finished_ms = NowMs();
      ended_here = true;
    }
  }
  if (ended_here) {  // a running one is written when its attempt ends
    Persist(*t).IgnoreError();
    t->ended.NotifyAll();
  }
  return t;
}

void TransferManager::WaitEnded(Transfer& t, std::chrono::steady_clock::duration timeout) const {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  MutexLock lock(&t.mu);
  // In slices, so that a daemon shutting down is not held up by a waiting client.
  while (!IsTerminal(t.state) && !stopping_.load() && std::chrono::steady_clock::now() < deadline) {
    t.ended.WaitUntil(&t.mu,
                      std::min(deadline, std::chrono::steady_clock::now() + std::chrono::milliseconds(200)));
  }
}

void TransferManager::Stop() {
  if (stopping_.exchange(true)) return;
  MutexLock lock(&mu_);
  for (auto& [id, t] : transfers_) t->cancel = true;
  cv_.NotifyAll();
}

std::chrono::milliseconds TransferManager::Backoff(unsigned attempts) const {
  const auto cap = std::chrono::milliseconds(int64_t(options_.retry_max_backoff_s) * 1000);
  auto b = options_.first_backoff;
  for (unsigned i = 1; i < attempts && b < cap; ++i) b *= 2;
  return std::min(b, cap);
}

TransferManager::Outcome TransferManager::Settle(Transfer& t, const Result<json>& r) {
  MutexLock lock(&t.mu);
  if (t.stats) {
    t.last = t.stats->Snapshot();
    t.failures = t.stats->Failures();
    t.specials = SpecialsJson(t.stats->Specials());
    t.bytes_sent_prev += t.last.bytes_sent;
    t.chunks_corrupt_prev += t.last.chunks_corrupt;
    if (t.first_resumed < 0) t.first_resumed = static_cast<int64_t>(t.last.bytes_resumed);
    t.stats.reset();
  }
  if (r.has_value()) {
    t.summary = *r;
    t.finished_ms = NowMs();
    if (t.last.files_failed > 0) {
      t.error_code = "FilesFailed";
      t.error = std::to_string(t.last.files_failed) + " file(s) could not be transferred";
      // Files that failed only because the path kept corrupting them are tried again with the
      // transfer (each resumes from its verified chunks), within the retry budget.
      if (t.last.files_failed == t.last.files_failed_retryable && !t.cancel) {
        if (t.attempts <= options_.retry_attempts) {
          t.error += " (chunks kept failing verification on the path; trying again)";
          t.state = TransferState::kRetrying;
          t.finished_ms = 0;
          return Outcome::kRetry;
        }
        t.error += " (chunks kept failing verification on the path; " + std::to_string(t.attempts) +
                   " attempts spent)";
      }
      // The others arrived (or were there already): partial, not failed.
      t.state = t.last.files_done > 0 ? TransferState::kPartial : TransferState::kFailed;
    } else {
      t.state = TransferState::kSucceeded;
      t.error.clear();
      t.error_code.clear();
    }
    return Outcome::kEnded;
  }
  const Status& s = r.error();
  t.error = std::string(s.message());
  t.error_code = std::string(CodeName(s.code()));
  if (!t.cut_reason.empty()) {
    t.error = t.cut_reason;
    t.error_code = std::string(CodeName(Code::kPermissionDenied));
    t.state = TransferState::kFailed;
  } else if (t.cancel && stopping_) {
    return Outcome::kLeft;  // shutting down: the record keeps "running", a restart resumes it
  } else if (t.cancel) {
    t.state = TransferState::kCancelled;
  } else if (s.retryable() && t.attempts <= options_.retry_attempts) {
    t.state = TransferState::kRetrying;
    return Outcome::kRetry;
  } else {
    t.state = TransferState::kFailed;
  }
  t.finished_ms = NowMs();
  return Outcome::kEnded;
}

TransferManager::Outcome TransferManager::RunAttempt(const std::shared_ptr<Transfer>& t) {
  {
    MutexLock lock(&t->mu);
    t->state = TransferState::kRunning;
    t->attempts++;
    t->next_attempt_ms = 0;
    if (t->started_ms == 0) t->started_ms = NowMs();
    PORO_LOG(INFO) << "transfer " << t->id << " attempt " << t->attempts << ": " << t->SourceText() << " -> "
                   << t->DestText();
  }
  Persist(*t).IgnoreError();
  Result<json> r = attempt_(*t);
  // The attempt's last per-file results, stored before its outcome is (after any batch the
  // scheduler thread is storing: files_mu).
  DrainFileResults(*t);
  const Outcome outcome = Settle(*t, r);
  if (outcome == Outcome::kLeft) return outcome;  // the record says "running"; the next start-up resumes it
  std::string state, error;
  unsigned attempts;
  {
    MutexLock lock(&t->mu);
    if (outcome == Outcome::kRetry) t->next_attempt_ms = NowMs() + Backoff(t->attempts).count();
    state = TransferStateName(t->state);
    error = t->error;
    attempts = t->attempts;
  }
  Persist(*t).IgnoreError();
  if (outcome == Outcome::kEnded) {
    t->ended.NotifyAll();
    PORO_LOG(INFO) << "transfer " << t->id << " " << state << (error.empty() ? "" : ": " + error);
  } else {
    PORO_LOG(WARNING) << "transfer " << t->id << " attempt " << attempts << " failed (" << error
                      << "); retrying in " << Backoff(attempts).count() / 1000.0 << " s";
  }
  return outcome;
}

int64_t TransferManager::PruneCutoffMs() const {
  if (options_.keep_finished_s == 0) return 0;
  return NowMs() - int64_t(options_.keep_finished_s) * 1000;
}

void TransferManager::PruneFinished(bool force) {
  const int64_t cutoff = PruneCutoffMs();
  if (cutoff == 0) return;
  std::vector<std::string> gone;
  {
    MutexLock lock(&mu_);
    const auto now = std::chrono::steady_clock::now();  // not the wall clock: a clock step must not stop it
    const auto every =
        std::chrono::milliseconds(std::min<int64_t>(60000, int64_t(options_.keep_finished_s) * 500));
    if (!force && last_prune_ != std::chrono::steady_clock::time_point() && now - last_prune_ < every) return;
    last_prune_ = now;
    for (auto it = transfers_.begin(); it != transfers_.end();) {
      if (it->second->ExpiredBefore(cutoff)) {  // takes and releases the transfer's mu before the erase
        gone.push_back(it->first);
        if (auto j = jobs_.find(it->second->job_id); j != jobs_.end()) {
          std::erase(j->second, it->second);
          if (j->second.empty()) {
            jobs_.erase(j);
            job_track_.erase(it->second->job_id);
          }
        }
        it = transfers_.erase(it);
      } else {
        ++it;
      }
    }
  }
  if (Status st = store_->Remove(gone); !st.ok())
    PORO_LOG(WARNING) << "forgetting finished transfers: " << st.message();
  if (!gone.empty()) {
    PORO_LOG(INFO) << "forgot " << gone.size() << " transfer(s) that ended more than "
                   << options_.keep_finished_s << " s ago ([storage] keep_finished_s)";
  }
}

void TransferManager::Migrate() {
  if (options_.legacy_dir.empty()) return;
  DIR* d = ::opendir(options_.legacy_dir.c_str());
  if (d == nullptr) return;
  std::vector<std::string> names;
  while (struct dirent* de = ::readdir(d)) {
    std::string n = de->d_name;
    if (n.size() > 5 && n.compare(n.size() - 5, 5, ".json") == 0) names.push_back(n);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  std::vector<json> records;
  std::vector<std::string> imported;
  for (const auto& n : names) {
    const std::string path = options_.legacy_dir + "/" + n;
    std::ifstream in(path);
    json j = json::parse(in, nullptr, false);
    if (j.is_discarded()) {
      PORO_LOG(WARNING) << "not migrating transfer record " << path << ": not JSON (left where it is)";
      continue;
    }
    if (auto t = Transfer::FromRecord(j); !t.has_value()) {
      PORO_LOG(WARNING) << "not migrating transfer record " << path << ": " << t.error().message()
                        << " (left where it is)";
      continue;
    }
    records.push_back(std::move(j));
    imported.push_back(path);
  }
  if (records.empty()) return;
  auto added = store_->Import(records);
  if (!added.has_value()) {
    PORO_LOG(ERROR) << "migrating " << records.size() << " transfer record(s) from " << options_.legacy_dir
                    << " into " << options_.db_path << " failed, the files stay: " << added.error().message();
    return;
  }
  for (const auto& p : imported) ::unlink(p.c_str());
  ::rmdir(options_.legacy_dir.c_str());  // only if nothing is left in it
  PORO_LOG(INFO) << "migrated " << records.size() << " transfer record(s) from " << options_.legacy_dir
                 << " into " << options_.db_path;
}

void TransferManager::LoadPersisted() {
  if (!store_) return;
  Migrate();
  auto records = store_->LoadAll();
  if (!records.has_value()) {
    PORO_LOG(ERROR) << "loading the transfer queue: " << records.error().message();
    return;
  }
  const int64_t cutoff = PruneCutoffMs();
  std::vector<std::string> expired;
  for (const json& j : *records) {
    const std::string where = options_.db_path + ", transfer " + j.value("id", std::string("?"));
    if (j.contains("unreadable")) {
      PORO_LOG(WARNING) << "ignoring unreadable transfer record in " << where << ": not JSON";
      continue;
    }
    auto t = Transfer::FromRecord(j);
    if (!t.has_value()) {  // a field of the wrong type: skip the record, keep serving
      PORO_LOG(WARNING) << "ignoring malformed transfer record in " << where << ": " << t.error().message();
      continue;
    }
    if ((*t)->ExpiredBefore(cutoff)) {
      expired.push_back((*t)->id);  // ended longer ago than [storage] keep_finished_s
      continue;
    }
    bool unfinished;
    bool scrub = false;
    int64_t not_before = 0;
    {
      MutexLock lock(&(*t)->mu);
      unfinished = !IsTerminal((*t)->state);
      if (auto old = j.find("token");
          old != j.end() && old->is_string() && !old->get<std::string>().empty()) {
        // A record from before tokens stayed off the disk: use it this once and rewrite the record
        // without it.
        (*t)->token = old->get<std::string>();
        (*t)->token_given = true;
        scrub = true;
      }
      if (unfinished && (*t)->token_given && (*t)->token.empty()) {
        (*t)->state = TransferState::kFailed;
        (*t)->error =
            "the bearer token given with this transfer is not kept on disk, so the transfer cannot go on "
            "after the daemon restarted: run the same command again with its --token (what was already "
            "copied is kept and resumed)";
        (*t)->error_code = CodeName(Code::kUnauthenticated);
        (*t)->finished_ms = NowMs();
        unfinished = false;
        scrub = true;
        PORO_LOG(WARNING) << "transfer " << (*t)->id << " not resumed: " << (*t)->error;
      }
      if (unfinished) {
        // Running when the daemon stopped: it waits for a slot again (and resumes from its journal).
        if ((*t)->state == TransferState::kRunning) (*t)->state = TransferState::kQueued;
        if ((*t)->state == TransferState::kRetrying) not_before = (*t)->next_attempt_ms;
      }
    }
    if (scrub) Persist(**t).IgnoreError();
    // The API answers before this runs: a transfer submitted since start-up is already here. Queuing
    // its record as well would run it twice.
    MutexLock lock(&mu_);
    if (transfers_.count((*t)->id) != 0) continue;
    transfers_[(*t)->id] = *t;
    AddToJob(*t);
    if (!(*t)->job_id.empty() && !unfinished) {
      // Ended before the restart: counted, so the job's end is published once its last entry ends.
      JobTrack& track = job_track_[(*t)->job_id];
      track.ended.insert((*t)->id);
      track.started = true;
    }
    if (unfinished) {
      PORO_LOG(INFO) << "queued again after the restart: transfer " << (*t)->id << " (" << (*t)->SourceText()
                     << " -> " << (*t)->DestText() << ")";
      waiting_.push_back({*t, not_before});
    }
  }
  if (Status s = store_->Remove(expired); !s.ok())
    PORO_LOG(WARNING) << "forgetting expired transfers: " << s.message();
  MutexLock lock(&mu_);
  cv_.NotifyAll();
}

}  // namespace pororoca::daemon
