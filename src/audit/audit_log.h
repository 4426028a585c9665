// AuditLog: the daemon's append-only record of every trust and policy decision, one JSON object a
// line (JSON Lines), durable before Append returns.
//
// Record shape written by pororocad (every field but "time" and "event" is optional; a field that
// does not apply is left out rather than written as null):
//
//   {"time":"2026-11-23T10:00:00.123Z",  UTC, milliseconds; always the first field of the line
//    "event":"handshake" | "transfer" | "transfer_end" | "session" | "manifest",
//    "endpoint":"lncc-dtn1",              this daemon's endpoint id
//    "peer":"cenapad-dtn1",               the other daemon's endpoint id (certificate CN)
//    "peer_address":"10.0.0.7:7701",
//    "decision":"accepted" | "refused"    (handshake; manifest, also "unreachable")
//              | "allowed" | "denied"     (transfer: token and policy decision)
//              | "deferred"               (transfer: concurrency cap reached, retried later)
//              | "completed" | "failed"   (transfer_end)
//              | "cut",                   (session: the peer was suspended or revoked mid-way)
//    "reason":"...",                      human-readable why, e.g. "key does not match the pin"
//    "rule":"lncc-to-cenapad-results",    the policy rule that decided, if any
//    "user":"alice@lncc",                 federated identity (token subject or local mapping)
//    "transfer_id":"...", "direction":"push" | "pull", "role":"initiator" | "responder",
//    "source":"/data/x", "destination":"/incoming/x", "serial":7,
//    "bytes":123, "files":4}              (transfer_end: what was moved)
//
// Events: "handshake" (a peer connection accepted or refused), "transfer" (the token and policy
// decision for one transfer, taken at each end before any byte is written), "transfer_end" (its
// outcome and totals), "session" (a session cut), "manifest" (a federation manifest accepted or
// refused, or its source unreachable).
//
// Durability: each record is written with a single write(2) on an O_APPEND descriptor, so lines of
// concurrent writers (threads, or processes sharing the file) never interleave, and then
// fdatasync(2)ed: Append returns only when the record survives a crash. A record is bounded to
// kMaxRecordBytes: past that its long strings are cut (and "truncated":true added) instead of
// splitting the record. Records are per decision, not per chunk, so the fdatasync is affordable:
// measured on this project's 2-core VM (ext4 on a virtio disk), one appender alone waits about 4 ms
// per record; 8 threads appending at once get about 0.3 ms per record, because their fdatasync
// calls are committed together. A transfer writes two or three records at each end.
//
// A crash in the middle of a write can leave a last line without its newline. Open() cuts such a
// torn tail off (it was never acknowledged) so the next record starts on a line of its own, and
// ReadAll() skips it.
//
// Thread-safety: Append may be called from any number of threads at once. ReadAll is a free
// function over the file.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/unique_fd.h"
#include "pororoca/status.h"

namespace pororoca::audit {

class AuditLog {
 public:
  // The most bytes one record line may take, newline included.
  static constexpr size_t kMaxRecordBytes = 64 * 1024;

  // Opens `path` for appending (O_APPEND | O_CLOEXEC), creating it with mode 0640 (before umask).
  // Its directory must exist; the error names the file. A torn last line is cut off (logged).
  static Result<std::unique_ptr<AuditLog>> Open(const std::string& path);

  AuditLog(const AuditLog&) = delete;
  AuditLog& operator=(const AuditLog&) = delete;
  ~AuditLog() = default;

  // Writes `record` (a JSON object, else kInvalidArgument) as one line, with "time" first: the
  // record's own "time" if it has one, else now. Returns after fdatasync; an I/O error names the file.
  Status Append(nlohmann::json record);

  // Every complete record of the file at `path`, in order. A last line without its newline (a torn
  // write) is skipped; any other line that is not a JSON object is an error naming file and line.
  static Result<std::vector<nlohmann::json>> ReadAll(const std::string& path);

  // Opens the path again (after logrotate moved the file away; a new file is created) and puts it
  // in place of the old one under the write lock: no record is split between the two files.
  Status Reopen();

  const std::string& path() const { return path_; }

 private:
  AuditLog(std::string path, UniqueFd fd) : path_(std::move(path)), fd_(std::move(fd)) {}

  const std::string path_;
  const UniqueFd fd_;
  std::mutex mu_;  // serialises the write(2) calls of this process (and the repair of a failed one)
};

// "2026-11-23T10:00:00.123Z": UTC, ISO 8601 with milliseconds.
std::string UtcTimestamp(std::chrono::system_clock::time_point t);

}  // namespace pororoca::audit
