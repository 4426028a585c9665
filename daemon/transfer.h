// A transfer that a local user submitted to this daemon (the daemon initiates its sessions): what
// was asked, its state and its progress. The record's fields are written once, in RecordFields
// (transfer.cc), for the file in state_dir/transfers and the start-up scan; the API's view of a
// transfer adds live figures (TransferView).
//
// Thread-safety: the request fields are set before the transfer is shared and never change; the
// fields under `mu` change while it runs.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/mutex.h"
#include "engine/stats.h"
#include "pororoca/status.h"

namespace pororoca::daemon {

// queued -> running -> (retrying -> running)* -> succeeded | partial | failed | cancelled
// partial: the last session completed, some files failed and the others arrived (or were skipped).
enum class TransferState : uint8_t {
  kQueued,
  kRunning,
  kRetrying,
  kSucceeded,
  kPartial,
  kFailed,
  kCancelled
};

std::string_view TransferStateName(TransferState s);
std::optional<TransferState> ParseTransferState(std::string_view name);
// A transfer in this state will not run again.
bool IsTerminal(TransferState s);

// ENDPOINT:/path or an absolute local path, as a user writes it.
struct Location {
  bool remote = false;
  std::string endpoint;
  std::string path;
  bool trailing_slash = false;

  static Result<Location> Parse(const std::string& s);
};

int64_t NowMs();  // wall clock, ms since the epoch
// The record's "skipped_special": [{"path", "kind"}].
nlohmann::json SpecialsJson(const std::vector<std::pair<std::string, std::string>>& specials);
// Random hex id (16 bytes of entropy).
Result<std::string> NewId();

constexpr unsigned kMinPriority = 1, kDefaultPriority = 3, kMaxPriority = 5;

struct Transfer {
  // The request (set before the transfer is shared).
  std::string id;
  bool push = true;
  std::string local_path;  // absolute, as given
  Location remote;
  bool local_trailing_slash = false;
  bool recursive = false;
  nlohmann::json options = nlohmann::json::object();  // streams, chunk_size, sync, existing
  int64_t uid = -1;
  std::string user;  // federated identity of the local user
  // The bearer token the user gave (else the daemon mints one per attempt). Kept in memory only:
  // the record on disk says only that one was given, so reading state_dir never lets anyone act
  // as that user. A restarted daemon cannot go on with such a transfer (TransferManager).
  std::string token;
  bool token_given = false;
  int64_t created_ms = 0;
  // 1 (lowest) to 5; the scheduler starts a higher priority first (TransferManager).
  unsigned priority = kDefaultPriority;
  // Chosen by the client so that a retried submission returns the transfer it already made ("" none).
  std::string submission_id;
  // A bulk job's entry: the job's id and this entry's place in it ("" for a transfer of its own).
  std::string job_id;
  unsigned job_index = 0;

  mutable Mutex mu;
  mutable CondVar ended;  // notified when `state` becomes terminal
  TransferState state PORO_GUARDED_BY(mu) = TransferState::kQueued;
  unsigned attempts PORO_GUARDED_BY(mu) = 0;
  int64_t started_ms PORO_GUARDED_BY(mu) = 0;
  int64_t finished_ms PORO_GUARDED_BY(mu) = 0;
  int64_t next_attempt_ms PORO_GUARDED_BY(mu) = 0;  // retrying: when the next attempt starts
  std::string error PORO_GUARDED_BY(mu);
  std::string error_code PORO_GUARDED_BY(mu);
  uint64_t bytes_sent_prev PORO_GUARDED_BY(mu) = 0;      // payload sent by finished attempts
  uint64_t chunks_corrupt_prev PORO_GUARDED_BY(mu) = 0;  // corrupt copies seen by finished attempts
  int64_t first_resumed PORO_GUARDED_BY(mu) = -1;  // bytes found at the destination by the first attempt
  nlohmann::json summary PORO_GUARDED_BY(mu);
  engine::StatsSnapshot last PORO_GUARDED_BY(mu);  // snapshot at the end of the last attempt
  std::vector<std::pair<std::string, std::string>> failures PORO_GUARDED_BY(mu);
  // Special files of the tree not copied, of the last attempt: [{"path", "kind"}] (first 100).
  nlohmann::json specials PORO_GUARDED_BY(mu) = nlohmann::json::array();
  std::shared_ptr<engine::TransferStats> stats PORO_GUARDED_BY(mu);  // live, during an attempt
  std::string cut_reason PORO_GUARDED_BY(mu);  // the federation cut the session (peer suspended/revoked)
  // The data connections' protection level the last session agreed on ("" before the first one).
  std::string protection PORO_GUARDED_BY(mu);
  // The data transport the last session ran on ("" before the first one) and, when it is not the
  // first this end would have chosen, why (for example "endpoint b does not offer ucx").
  std::string transport PORO_GUARDED_BY(mu);
  std::string transport_note PORO_GUARDED_BY(mu);
  std::atomic<bool> cancel{false};
  // Held while per-file results are taken from `stats` and stored (TransferManager): one batch at
  // a time, so none lands after a later one or after the attempt's outcome. After `mu` if both.
  mutable Mutex files_mu;

  // Who the transfer belongs to, for fair share and idempotent submission: the federated identity,
  // else "uid:N".
  std::string OwnerKey() const { return user.empty() ? "uid:" + std::to_string(uid) : user; }
  // The owner's institution: what follows '@' in the identity ("" for a uid without identity).
  std::string OwnerInstitution() const {
    const size_t at = user.rfind('@');
    return at == std::string::npos ? std::string() : user.substr(at + 1);
  }

  std::string SourceText() const { return push ? local_path : remote.endpoint + ":" + remote.path; }
  std::string DestText() const { return push ? remote.endpoint + ":" + remote.path : local_path; }

  // The record persisted in the queue (TransferStore).
  nlohmann::json Record() const PORO_EXCLUDES(mu);
  // Reads a record written by Record(); a field of the wrong type is an error naming it.
  static Result<std::shared_ptr<Transfer>> FromRecord(const nlohmann::json& j);
  // What the API shows: the record's public fields with live progress.
  nlohmann::json View() const PORO_EXCLUDES(mu);
  // Tells whether the transfer ended before `cutoff_ms` (0 = never).
  bool ExpiredBefore(int64_t cutoff_ms) const PORO_EXCLUDES(mu);
};

}  // namespace pororoca::daemon
