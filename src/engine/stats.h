// TransferStats: live counters of one transfer, updated by the engine threads and read by the
// daemon's API (progress display). All fields are atomics; readers take a snapshot with Snapshot().
#pragma once

#include <atomic>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/mutex.h"

namespace pororoca::engine {

struct StatsSnapshot {
  uint64_t files_total = 0, bytes_total = 0;      // discovered so far (walk_done says if final)
  uint64_t files_done = 0, bytes_done = 0;        // committed at the destination (incl. skipped)
  uint64_t files_skipped = 0, bytes_skipped = 0;  // already there (--sync, --skip-existing)
  uint64_t files_failed = 0;
  uint64_t files_failed_retryable = 0;  // of those, failed for a reason worth another attempt (bad path)
  uint64_t bytes_sent = 0;              // payload bytes moved on data channels this attempt
  uint64_t bytes_verified = 0;          // of them, verified and written at the receiver (live progress)
  uint64_t bytes_resumed = 0;           // found durable at the destination (journal)
  uint64_t chunks_corrupt = 0;          // failed verification at the receiver, re-sent
  uint64_t bytes_resent = 0;            // payload sent again (corruption, earlier attempts)
  uint64_t specials_skipped = 0;  // FIFOs, sockets and devices in a tree: not copied (named in Specials())
  bool walk_done = false;
  nlohmann::json ToJson() const;
  static StatsSnapshot FromJson(const nlohmann::json& j);
};

// What became of one file of a transfer, as the initiating end learned it (per-file results).
struct FileResult {
  std::string path;  // relative to the transfer's root, '/'-separated; "" = a transfer of one file
  uint64_t size = 0;
  std::string
      digest;  // succeeded: the file digest verified at the receiver (XXH3-128 over the chunk digests), hex
  std::string state;  // "succeeded", "skipped" (already there) or "failed"
  std::string error;  // failed: why
  bool retryable = false;
};

class TransferStats {
 public:
  std::atomic<uint64_t> files_total{0}, bytes_total{0};
  std::atomic<uint64_t> files_done{0}, bytes_done{0};
  std::atomic<uint64_t> files_skipped{0}, bytes_skipped{0};
  std::atomic<uint64_t> files_failed{0};
  std::atomic<uint64_t> files_failed_retryable{0};
  std::atomic<uint64_t> bytes_sent{0};
  // At the receiver: payload bytes verified and written; at the sender: what the receiver last
  // reported (KEEPALIVE "verified").
  std::atomic<uint64_t> bytes_verified{0};
  std::atomic<uint64_t> bytes_resumed{0};
  std::atomic<uint64_t> chunks_corrupt{0};
  std::atomic<uint64_t> bytes_resent{0};
  std::atomic<uint64_t> specials_skipped{0};
  std::atomic<bool> walk_done{false};

  StatsSnapshot Snapshot() const;
  // Per-file failures, kept for status output (first 100).
  void AddFailure(const std::string& path, const std::string& message) PORO_EXCLUDES(mu_);
  std::vector<std::pair<std::string, std::string>> Failures() const PORO_EXCLUDES(mu_);
  // A special file of the tree that was not copied: its path inside the transfer and its kind
  // ("FIFO", "socket", "character device", "block device"); counts it, keeps the first 100.
  void AddSpecial(const std::string& path, const std::string& kind) PORO_EXCLUDES(mu_);
  std::vector<std::pair<std::string, std::string>> Specials() const PORO_EXCLUDES(mu_);

  // Per-file results, kept only when record_files is set (the initiator's daemon sets it and takes
  // them about once a second, so they never pile up; the responder keeps none).
  std::atomic<bool> record_files{false};
  void AddFileResult(FileResult r) PORO_EXCLUDES(mu_);
  std::vector<FileResult> TakeFileResults() PORO_EXCLUDES(mu_);

 private:
  mutable Mutex mu_;
  std::vector<std::pair<std::string, std::string>> failures_ PORO_GUARDED_BY(mu_);
  std::vector<std::pair<std::string, std::string>> specials_ PORO_GUARDED_BY(mu_);
  std::vector<FileResult> results_ PORO_GUARDED_BY(mu_);
};

}  // namespace pororoca::engine
