// Accounting: how much data moved between institutions, per user and per day.
//
// Counters (bytes, files, transfers) are kept per Key = (UTC day, source institution, destination
// institution, user). A daemon adds to them as transfers finish, flushes them to a JSON file in its
// state directory, answers queries from them (its API) and sends Report() to the control plane. The
// control-plane service merges the reports of every endpoint with Merge() and answers the same
// Query() over the federation.
//
// Every row holds the full total of its key, never a delta: sending a report twice, or a newer one
// over an older one, is harmless.
//
// File and report format (one grammar for both; the file adds "format", a report adds "endpoint"
// and "generated"):
//
//   {"format":"pororoca-accounting","version":1,
//    "rows":[{"day":"2026-11-23","source":"LNCC","destination":"CENAPAD","user":"alice",
//             "bytes":1073741824,"files":12,"transfers":1}, ...]}
//
// Thread-safety: every method may be called from any thread at once.
#pragma once

#include <chrono>
#include <compare>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>

#include "pororoca/status.h"

namespace pororoca::audit {

class Accounting {
 public:
  struct Key {
    std::string day;          // "YYYY-MM-DD", UTC (UtcDay)
    std::string source;       // source institution
    std::string destination;  // destination institution
    std::string user;         // local user or token subject; may be empty
    auto operator<=>(const Key&) const = default;
  };
  struct Counters {
    uint64_t bytes = 0;
    uint64_t files = 0;
    uint64_t transfers = 0;
    bool operator==(const Counters&) const = default;
  };
  // Empty fields do not filter. since/until are inclusive days ("YYYY-MM-DD"); check them with
  // ValidDay first (a malformed bound compares as a string). institution matches either side.
  struct Filter {
    std::string since, until;
    std::string user;
    std::string institution;
  };

  // An in-memory table: Flush() does nothing (the control-plane service merges reports into one).
  Accounting() = default;

  // Loads `path` if it exists (a missing file is an empty table); later Flush() calls write it.
  // A malformed file is kDataLoss naming it (and the row).
  static Result<std::unique_ptr<Accounting>> Open(const std::string& path);

  Accounting(const Accounting&) = delete;
  Accounting& operator=(const Accounting&) = delete;

  // Adds to the counters of `key` (saturating at 2^64-1).
  void Add(const Key& key, uint64_t bytes, uint64_t files, uint64_t transfers);

  // Adds every row of a report or file body ({"rows":[...]}). The whole body is checked before
  // anything is added: a malformed one is kInvalidArgument naming the row and field, and changes
  // nothing.
  Status Merge(const nlohmann::json& body);

  // Writes the table to its file if anything was added since the last Flush: temporary file, fsync,
  // rename, directory fsync (a crash leaves the old or the new table). OK at once when clean or
  // in memory.
  Status Flush();

  // {"total":{bytes,files,transfers},
  //  "by_pair":[{"source","destination",bytes,files,transfers}],  sorted by source, destination
  //  "by_user":[{"user",...}], "by_day":[{"day",...}],
  //  "rows":[{"day","source","destination","user",...}]}          sorted by day, source, ...
  nlohmann::json Query(const Filter& filter) const;

  // The body a daemon POSTs to the control plane: {"endpoint":endpoint,"generated":<UTC time>,
  // "rows":[every row]}.
  nlohmann::json Report(const std::string& endpoint) const;

  std::map<Key, Counters> Rows() const;
  bool dirty() const;

  // True for "YYYY-MM-DD" naming a day that exists (leap years included).
  static bool ValidDay(const std::string& day);

 private:
  explicit Accounting(std::string path) : path_(std::move(path)) {}
  nlohmann::json RowsJson() const;  // callers hold mu_

  const std::string path_;  // empty: in memory
  std::mutex flush_mu_;     // one Flush at a time (they share the temporary file name)
  mutable std::mutex mu_;
  std::map<Key, Counters> rows_;  // guarded by mu_
  uint64_t generation_ = 0;       // guarded by mu_: bumped by every change
  uint64_t flushed_generation_ = 0;
};

// "2026-11-23": the UTC day of t.
std::string UtcDay(std::chrono::system_clock::time_point t);

}  // namespace pororoca::audit
