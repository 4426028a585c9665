// Questions about a path of this daemon's export root, without a transfer: its entries (`ls`) and
// its file digest (`checksum`). The responder answers them for a peer's OPEN with a query (after
// the same admission as a pull of the path), and the API for this daemon's own paths.
//
// Thread-safety: free functions; safe from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "engine/export_root.h"
#include "pororoca/status.h"

namespace pororoca::daemon {

inline constexpr uint32_t kDefaultListLimit = 10000;
inline constexpr uint32_t kMaxListLimit = 100000;

// The entries of directory `rel` (root-relative, as Normalize gives it), sorted by name, at most
// `limit` (0: kDefaultListLimit): {"type": "dir", "entries": [{"name", "type" (file, dir, link,
// other), "size", "mtime_ns", "mode"}], "truncated"}. A file (or anything but a directory) is one
// entry named by its base name, {"type": "file", ...}. Links are listed, not followed. Memory is
// bounded by `limit`, whatever the directory holds.
Result<nlohmann::json> ListExport(const engine::ExportRoot& root, const std::string& rel, uint32_t limit);

// The file digest pororoca verifies for a regular file `rel` read in `chunk_size` chunks:
// XXH3-128 over the XXH3-128 digests of the chunks (an empty file: over none). {"size",
// "mtime_ns", "chunk_size", "digest" (hex), "algorithm"}. A directory or special file is
// kInvalidArgument naming it. `stop` (if given) set ends it between chunks (kCancelled).
Result<nlohmann::json> ChecksumExport(const engine::ExportRoot& root, const std::string& rel,
                                      uint32_t chunk_size, const std::atomic<bool>* stop = nullptr);

}  // namespace pororoca::daemon
