// The engine: one side of a transfer session, sending or receiving a file or a tree over a control
// channel and N data channels. The daemon sets the session up (TLS, bind, policy); the engine moves
// and verifies the bytes:
//
//   sender:   walker -> FILES batches -> (PLAN) -> reader (IoQueue, read-ahead) -> XXH3-128 per
//             chunk -> scheduler (least-queued channel) -> channel threads -> MessageChannel::Send
//   receiver: channel threads -> payload into a pool buffer -> verify XXH3-128 -> write at offset
//             (IoQueue) -> committer: journal durable chunks, compare the file digest, fsync,
//             rename into place, fsync the directory -> FILE_DONE
//
// Thread-safety: RunSender/RunReceiver block the calling thread until the session ends and start
// their own worker threads; `cancel` may be set from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/control.h"
#include "engine/export_root.h"
#include "engine/stats.h"
#include "pororoca/protection.h"
#include "pororoca/storage.h"
#include "pororoca/transport.h"

namespace pororoca::engine {

enum class ExistingMode : uint8_t { kFail = 0, kOverwrite = 1, kSkip = 2 };

struct EngineOptions {
  uint32_t chunk_size = 4u << 20;
  bool sync = false;  // skip files whose size and mtime already match
  // Sender: files of the tree that share an inode are announced once as files, then as hard links
  // of the first (EntryType::kHardLink); the receiver links them once that file is in place.
  bool hard_links = false;
  ExistingMode existing = ExistingMode::kFail;
  bool try_direct = true;
  unsigned read_ahead = 8;                          // sender: chunk reads in flight
  size_t files_per_batch = 1024;                    // sender: FILES batch size
  unsigned batches_in_flight = 8;                   // sender: FILES batches awaiting PLAN
  uint64_t announce_ahead = 16384;                  // sender: entries announced and not yet finished
  std::chrono::milliseconds journal_interval{500};  // receiver: journal at least this often
  uint64_t journal_bytes = 256ull << 20;            // ... or after this many bytes written
  // Receiver: corrupt copies of one chunk tolerated (whole copies and pieces of it counted together);
  // one more fails the file for this attempt (retryable: the transfer is tried again).
  unsigned max_chunk_retries = 16;
};

struct DataPath {
  ControlChannel* ctl = nullptr;
  std::vector<std::unique_ptr<transport::MessageChannel>>* channels = nullptr;
  io::BufferPool* pool = nullptr;
  TransferStats* stats = nullptr;
  const std::atomic<bool>* cancel = nullptr;
  // Set when `cancel` means "this daemon is shutting down": the session then ends with a retryable
  // kUnavailable, so the peer retries later instead of failing the transfer.
  bool cancel_is_shutdown = false;
  // When set and returning an error, the status a cancelled session ends with instead (the daemon
  // cut the session: the peer's endpoint was suspended or revoked).
  std::function<Status()> cancel_reason;
  // When set, called with each data chunk's payload size before the sender sends it and after the
  // receiver received it: the policy's rate cap (a token bucket shared by the institution pair).
  // Blocks as long as the cap requires; returns false when the session is cancelled meanwhile.
  std::function<bool(uint64_t)> pace;
  // When set, the sender asks it for every entry below the root of a tree before announcing it
  // (`rel`: export-relative path, `entry_path`: path inside the transfer). An error skips the entry
  // (a directory with everything in it) and counts it as a failed file with that message: the
  // policy's verdict on paths inside the tree. The receiver asks it for every file and link below
  // the root when planning (`rel`: the export-relative destination) and fails a denied one.
  std::function<Status(const std::string& rel, const std::string& entry_path)> admit_path;
  // The protection level in force on the data channels and its 32-byte key (the TLS exporter of the
  // control session; empty at clear). Above clear every data-channel message is sealed
  // (engine/channel_seal.h) and the sender never uses sendfile.
  Protection protection = Protection::kClear;
  std::vector<std::byte> seal_key;
  // A peer that sends nothing on the control connection for this long (0: no limit) has stopped
  // answering: the session ends with a retryable kDeadlineExceeded. Each end sends KEEPALIVE every
  // quarter of it, and a control write that makes no progress for this long fails too.
  std::chrono::milliseconds idle_timeout{0};
  // When set, how a per-file error is told to the peer (PLAN, FILE_DONE, FILE_END): the daemon
  // names this end's paths as ENDPOINT:/path inside its export, never where the export root lives
  // on this host. The local log and the local record keep the absolute paths.
  std::function<Status(const Status&)> for_peer;
  // When set, one counter per data channel (channels->size() of them): the payload bytes that
  // channel carried (sender: sent; receiver: received), added by the channel's own thread. The
  // daemon's per-stream throughput metric reads them once the session has ended.
  struct alignas(64) StreamBytes {
    std::atomic<uint64_t> bytes{0};
  };
  StreamBytes* stream_bytes = nullptr;

  // `s`'s message as the peer is told it (for_peer applied when set).
  std::string PeerMessage(const Status& s) const {
    return std::string(for_peer ? for_peer(s).message() : s.message());
  }

  Status CancelStatus() const {
    if (cancel_reason) {
      Status s = cancel_reason();
      if (!s.ok()) return s;
    }
    return cancel_is_shutdown ? Status::Unavailable("the daemon is shutting down")
                              : Status::Cancelled("transfer cancelled");
  }
};

// What the source side announces about the transfer root.
// A transfer's source. A symbolic link named as the source is followed (as `cp` follows a named
// link) when it leads to a file or directory beneath the export root: `rel` is then where it leads,
// which is what is read and what the policy and labels see; `name` stays the link's.
struct SourceInfo {
  std::string name;  // basename of the source ("" if the source is the export root itself)
  std::string rel;   // root-relative path to read
  bool is_dir = false;
};

Result<SourceInfo> StatSource(const ExportRoot& root, const std::string& rel);

// cp semantics: if `dst_rel` is an existing directory the copy goes inside it under the source's
// name; otherwise `dst_rel` is the new name (its parent must exist). A trailing '/' in the user's
// path requires an existing directory.
Result<std::string> ResolveTarget(const ExportRoot& root, const std::string& dst_rel, bool dst_trailing_slash,
                                  const SourceInfo& src);

// Runs the sending side. Returns the receiver's SUMMARY (JSON) on success.
Result<nlohmann::json> RunSender(const ExportRoot& root, const std::string& src_rel,
                                 const EngineOptions& opts, const DataPath& dp);

// Runs the receiving side into `target_rel` (from ResolveTarget). Returns the SUMMARY it sent.
Result<nlohmann::json> RunReceiver(const ExportRoot& root, const std::string& target_rel,
                                   const EngineOptions& opts, const DataPath& dp);

// Number of chunks of a file of `size` bytes.
inline uint64_t ChunkCount(uint64_t size, uint32_t chunk_size) {
  return (size + chunk_size - 1) / chunk_size;
}

// Names of the hidden temporary and journal files for final name `name` in the same directory.
std::string PartName(std::string_view name);
std::string JournalName(std::string_view name);

}  // namespace pororoca::engine
