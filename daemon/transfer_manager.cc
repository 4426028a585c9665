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

TransferManager::TransferManager(Options options, AttemptFn attempt, WorkerSet* workers)
    : options_(std::move(options)), attempt_(std::move(attempt)), workers_(workers) {}

TransferManager::~TransferManager() {
  Stop();
  MutexLock lock(&mu_);
  cv_.Wait(&mu_, [&]() PORO_REQUIRES(mu_) { return running_ == 0; });
}

Status TransferManager::Open() {
  if (::mkdir(options_.dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return Status::IoError("create " + options_.dir, errno);
  }
  return Status::OK();
}

std::string TransferManager::RecordPath(const std::string& id) const {
  return options_.dir + "/" + id + ".json";
}

Status TransferManager::Persist(const Transfer& t) const {
  return WriteFileAtomic(RecordPath(t.id), t.Record().dump(2));
}

Status TransferManager::Submit(const std::shared_ptr<Transfer>& t) {
  PORO_RETURN_IF_ERROR(Persist(*t));
  Start(t);
  return Status::OK();
}

void TransferManager::Start(const std::shared_ptr<Transfer>& t) {
  {
    MutexLock lock(&mu_);
    transfers_[t->id] = t;
    running_++;
  }
  SpawnRun(t);
}

void TransferManager::SpawnRun(const std::shared_ptr<Transfer>& t) {
  workers_->Spawn([this, t] {
    Run(t);
    MutexLock lock(&mu_);
    running_--;
    cv_.NotifyAll();
  });
}

Result<std::shared_ptr<Transfer>> TransferManager::Find(const std::string& id) const {
  MutexLock lock(&mu_);
  auto it = transfers_.find(id);
  if (it != transfers_.end()) return it->second;
  std::vector<std::shared_ptr<Transfer>> matches;
  if (!id.empty()) {
    for (it = transfers_.lower_bound(id); it != transfers_.end() && it->first.compare(0, id.size(), id) == 0;
         ++it)
      matches.push_back(it->second);
  }
  if (matches.size() == 1) return matches.front();
  if (matches.empty()) return Status::NotFound("no transfer " + (id.empty() ? std::string("''") : id));
  std::string list;
  for (size_t i = 0; i < matches.size() && i < 5; ++i) list += (i ? ", " : "") + matches[i]->id;
  if (matches.size() > 5) list += ", ...";
  return Status::InvalidArgument("transfer id prefix '" + id + "' matches " + std::to_string(matches.size()) +
                                 " transfers (" + list + "); give more digits");
}

std::vector<std::shared_ptr<Transfer>> TransferManager::List() const {
  std::vector<std::shared_ptr<Transfer>> list;
  {
    MutexLock lock(&mu_);
    for (const auto& [id, t] : transfers_) list.push_back(t);
  }
  std::stable_sort(list.begin(), list.end(),
                   [](const auto& a, const auto& b) { return a->created_ms < b->created_ms; });
  return list;
}

Result<std::shared_ptr<Transfer>> TransferManager::Cancel(const std::string& id) {
  PORO_ASSIGN_OR_RETURN(std::shared_ptr<Transfer> t, Find(id));
  {
    MutexLock lock(&mu_);
    t->cancel = true;
    cv_.NotifyAll();
  }
  {
    MutexLock lock(&t->mu);
    if (t->state == TransferState::kQueued || t->state == TransferState::kRetrying) {
      t->state = TransferState::kCancelled;
      t->finished_ms = NowMs();
    }
  }
  Persist(*t).IgnoreError();
  t->ended.NotifyAll();
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
      t.state = TransferState::kFailed;
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

void TransferManager::Run(const std::shared_ptr<Transfer>& t) {
  auto backoff = options_.first_backoff;
  while (true) {
    {
      MutexLock lock(&t->mu);
      t->state = TransferState::kRunning;
      t->attempts++;
      if (t->started_ms == 0) t->started_ms = NowMs();
      PORO_LOG(INFO) << "transfer " << t->id << " attempt " << t->attempts << ": " << t->SourceText()
                     << " -> " << t->DestText();
    }
    Persist(*t).IgnoreError();
    Result<json> r = attempt_(*t);
    const Outcome outcome = Settle(*t, r);
    if (outcome == Outcome::kLeft) return;  // the record says "running"; the next start-up resumes it
    Persist(*t).IgnoreError();
    std::string state, error;
    unsigned attempts;
    {
      MutexLock lock(&t->mu);
      state = TransferStateName(t->state);
      error = t->error;
      attempts = t->attempts;
    }
    if (outcome == Outcome::kEnded) {
      t->ended.NotifyAll();
      PORO_LOG(INFO) << "transfer " << t->id << " " << state << (error.empty() ? "" : ": " + error);
      PruneFinished();
      return;
    }
    PORO_LOG(WARNING) << "transfer " << t->id << " attempt " << attempts << " failed (" << error
                      << "); retrying in " << backoff.count() / 1000.0 << " s";
    {
      MutexLock lock(&t->mu);
      t->next_attempt_ms = NowMs() + backoff.count();  // shown to the user while it waits
    }
    {
      MutexLock lock(&mu_);
      cv_.WaitFor(&mu_, backoff, [&] { return t->cancel.load() || stopping_.load(); });
    }
    if (stopping_) return;
    if (t->cancel) {
      {
        MutexLock lock(&t->mu);
        t->state = TransferState::kCancelled;
        t->finished_ms = NowMs();
      }
      Persist(*t).IgnoreError();
      t->ended.NotifyAll();
      PruneFinished();
      return;
    }
    backoff = std::min(backoff * 2, std::chrono::milliseconds(int64_t(options_.retry_max_backoff_s) * 1000));
  }
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
        it = transfers_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (const auto& id : gone) ::unlink(RecordPath(id).c_str());
  if (!gone.empty()) {
    PORO_LOG(INFO) << "forgot " << gone.size() << " transfer(s) that ended more than "
                   << options_.keep_finished_s << " s ago ([storage] keep_finished_s)";
  }
}

void TransferManager::LoadPersisted() {
  DIR* d = ::opendir(options_.dir.c_str());
  if (d == nullptr) return;
  std::vector<std::string> names;
  while (struct dirent* de = ::readdir(d)) {
    std::string n = de->d_name;
    if (n.size() > 5 && n.compare(n.size() - 5, 5, ".json") == 0) names.push_back(n);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  const int64_t cutoff = PruneCutoffMs();
  for (const auto& n : names) {
    const std::string path = options_.dir + "/" + n;
    std::ifstream in(path);
    json j = json::parse(in, nullptr, false);
    if (j.is_discarded()) {
      PORO_LOG(WARNING) << "ignoring unreadable transfer record " << path << ": not JSON";
      continue;
    }
    auto t = Transfer::FromRecord(j);
    if (!t.has_value()) {  // a field of the wrong type: skip the record, keep serving
      PORO_LOG(WARNING) << "ignoring malformed transfer record " << path << ": " << t.error().message();
      continue;
    }
    if ((*t)->ExpiredBefore(cutoff)) {
      ::unlink(path.c_str());  // ended longer ago than [storage] keep_finished_s
      continue;
    }
    bool unfinished;
    bool scrub = false;
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
    }
    if (scrub) Persist(**t).IgnoreError();
    {
      // The API answers before this runs: a transfer submitted since start-up is already here and
      // running. Resuming its record as well would run it twice.
      MutexLock lock(&mu_);
      if (transfers_.count((*t)->id) != 0) continue;
      transfers_[(*t)->id] = *t;
      if (unfinished) running_++;
    }
    if (unfinished) {
      PORO_LOG(INFO) << "resuming transfer " << (*t)->id << " (" << (*t)->SourceText() << " -> "
                     << (*t)->DestText() << ")";
      SpawnRun(*t);
    }
  }
}

}  // namespace pororoca::daemon
