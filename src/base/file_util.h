// Whole-file helpers for small metadata files (records, manifests, drafts): read with a size limit,
// replace atomically.
//
// Thread-safety: free functions without shared state. Two writers of the same path at once must be
// serialised by the caller (they share the temporary name).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <string>
#include <string_view>

#include "pororoca/status.h"

namespace pororoca {

// Replaces `path` with `data`: writes path.tmp, fsyncs it, renames it over path and fsyncs the
// directory, so a crash leaves either the old or the new contents, never a mix. Errors name the file.
Status WriteFileAtomic(const std::string& path, std::string_view data, mode_t mode = 0600);

// Reads a whole regular file of at most max_bytes (kResourceExhausted beyond, naming the file);
// a missing file is kNotFound naming it.
Result<std::string> ReadSmallFile(const std::string& path, size_t max_bytes = 16u << 20);

// For checks that must not write: `path` is a writable file, or does not exist and its directory
// lets it be created. `what` starts the error ("[audit] log /x/audit.log is not writable").
Status CheckCanWrite(const std::string& path, const std::string& what);

}  // namespace pororoca
