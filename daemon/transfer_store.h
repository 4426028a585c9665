// TransferStore: where the transfer queue lives. Every accepted transfer is a row (its record as
// JSON, plus the columns the queue is searched by); the TransferManager writes it at every change
// of state, so a daemon killed at any point finds every accepted transfer again at start-up.
//
// SqliteTransferStore (OpenSqliteTransferStore) keeps it in one SQLite file in state_dir, in WAL
// mode with full synchronous commits: a transfer the API answered 201 for is on disk. The interface
// is what a store shared by a site's several DTNs implements next (PostgreSQL): Claim and Renew are
// the leases by which one daemon takes a queued transfer so that no other runs it at the same time
// (in PostgreSQL, UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED)); with one daemon per
// file they always succeed for it.
//
// Thread-safety: every method may be called from any thread (calls are serialised).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "daemon/transfer.h"
#include "engine/stats.h"
#include "pororoca/status.h"

namespace pororoca::daemon {

// One file's result as stored: the last result of any attempt, and how many attempts had one.
struct FileRecord {
  std::string transfer_id;
  std::string path;  // relative to the transfer's root ("" = a transfer of one file)
  uint64_t size = 0;
  std::string digest;
  std::string state;  // succeeded, skipped, failed
  unsigned attempts = 0;
  std::string error;
  int64_t updated_ms = 0;
};

struct FilePage {
  uint64_t total = 0;  // files matching the filter
  std::vector<FileRecord> files;
  std::map<std::string, uint64_t> by_state;  // every file of the transfer, per state
};

class TransferStore {
 public:
  virtual ~TransferStore() = default;

  // Adds a new transfer and returns its id. If its owner (Transfer::OwnerKey) already submitted a
  // transfer with the same non-empty submission_id, adds nothing and returns that transfer's id.
  virtual Result<std::string> Add(const Transfer& t) = 0;
  // Adds the entries of a bulk job in one transaction: all of them or none (an entry whose
  // submission id its owner used already is kAlreadyExists, naming it).
  virtual Status AddMany(const std::vector<std::shared_ptr<Transfer>>& entries) = 0;
  // Writes the transfer's current record. A transfer that is not running gives up its claim.
  virtual Status Update(const Transfer& t) = 0;
  virtual Status Remove(const std::vector<std::string>& ids) = 0;
  // Every record, oldest first.
  virtual Result<std::vector<nlohmann::json>> LoadAll() = 0;
  // One record; kNotFound if there is none.
  virtual Result<nlohmann::json> Get(const std::string& id) = 0;
  // Adds records kept elsewhere before (the JSON files of earlier versions), in one transaction;
  // records whose id is already stored are skipped. Returns how many were added.
  virtual Result<size_t> Import(const std::vector<nlohmann::json>& records) = 0;

  // Records per-file results of an attempt of transfer `id` (one transaction). A file seen before
  // takes the new result and counts one attempt more; a file that succeeded keeps that when a later
  // attempt finds it there already ("skipped").
  virtual Status AddFileResults(const std::string& id, const std::vector<engine::FileResult>& results,
                                int64_t now_ms) = 0;
  // The files of the transfers `ids` (one, or a job's), by transfer in the order given and then by
  // path: `offset` and at most `limit` of them, only those in `state` unless it is empty.
  virtual Result<FilePage> ListFiles(const std::vector<std::string>& ids, const std::string& state,
                                     uint64_t offset, uint32_t limit) = 0;

  // Takes transfer `id` for `node` until `until_ms`, unless another node holds a lease on it that
  // has not expired at `now_ms`: false then.
  virtual Result<bool> Claim(const std::string& id, const std::string& node, int64_t now_ms,
                             int64_t until_ms) = 0;
  // Extends every lease `node` holds to `until_ms`.
  virtual Status Renew(const std::string& node, int64_t until_ms) = 0;
};

// Opens (creating if needed) the SQLite queue at `path`. Errors name the file and the cause: not a
// database, a schema newer than this program, a directory that cannot be written.
Result<std::unique_ptr<TransferStore>> OpenSqliteTransferStore(const std::string& path);

}  // namespace pororoca::daemon
