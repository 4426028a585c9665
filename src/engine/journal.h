// Journal: the receiver's durable record of which chunks of a partially received file are safely
// on disk. One journal file per partial file, next to its hidden temporary file.
//
//   journal := header record*
//   header  := "PORJ" version:u16 pad:u16 size:u64 mtime_ns:i64 chunk_size:u32 pad:u32   (32 bytes)
//   record  := index:u64 digest_hi:u64 digest_lo:u64 check:u64                           (32 bytes)
//   check   := XXH3-64 of the first 24 bytes of the record
//
// Records are appended only after the chunks they name were fdatasync'ed, and the journal is
// fdatasync'ed after the append, so a record found on restart names durable data. A torn record at
// the end (crash during append) fails its check and ends the replay. A header that does not match
// the source file (size, mtime, chunk size) means the source changed: the journal is discarded.
//
// Thread-safety: none; the receiver's committer thread owns journals.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "base/unique_fd.h"
#include "pororoca/checksum.h"
#include "pororoca/status.h"

namespace pororoca::engine {

struct JournalHeader {
  uint64_t size = 0;
  int64_t mtime_ns = 0;
  uint32_t chunk_size = 0;
  bool operator==(const JournalHeader&) const = default;
};

class Journal {
 public:
  // Opens an existing journal at (dirfd, name) and replays it. Returns the durable chunks, or an
  // empty list if the journal is missing, unreadable or for another version of the source.
  static std::vector<std::pair<uint64_t, Digest128>> Replay(int dirfd, const std::string& name,
                                                            const JournalHeader& expect);
  // Creates (truncating) a journal with `header`, fsynced.
  static Result<Journal> Create(int dirfd, const std::string& name, const std::string& display,
                                const JournalHeader& header);
  // Opens an existing journal for appending after its first `valid_records` records (as many as
  // Replay returned, plus those appended since): anything after them is cut off.
  static Result<Journal> OpenAppend(int dirfd, const std::string& name, const std::string& display,
                                    uint64_t valid_records);

  // Appends records and fdatasyncs the journal.
  Status Append(const std::vector<std::pair<uint64_t, Digest128>>& records);

 private:
  Journal(UniqueFd fd, std::string display) : fd_(std::move(fd)), display_(std::move(display)) {}
  UniqueFd fd_;
  std::string display_;
};

}  // namespace pororoca::engine
