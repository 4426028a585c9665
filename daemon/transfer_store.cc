#include "daemon/transfer_store.h"

#include <sqlite3.h>

#include "base/mutex.h"

namespace pororoca::daemon {

using nlohmann::json;

namespace {

// The schema, by version (PRAGMA user_version). A newer daemon adds a step; an older one refuses a
// file whose version it does not know rather than misread it.
constexpr int kSchemaVersion = 2;
constexpr const char* kSchemaV1 = R"sql(
CREATE TABLE transfers (
  id             TEXT PRIMARY KEY,
  owner_key      TEXT NOT NULL,     -- who submitted it: the federated identity, else uid:N
  submission_id  TEXT,              -- chosen by the client; one transfer per owner and id
  state          TEXT NOT NULL,
  priority       INTEGER NOT NULL,
  created_ms     INTEGER NOT NULL,
  finished_ms    INTEGER NOT NULL DEFAULT 0,
  node           TEXT,              -- the daemon that claimed it, while it runs
  lease_until_ms INTEGER NOT NULL DEFAULT 0,
  record         TEXT NOT NULL,     -- the whole record (Transfer::Record), JSON
  UNIQUE (owner_key, submission_id)
);
CREATE INDEX transfers_by_state ON transfers (state, priority, created_ms);
)sql";
// Version 2: per-file results.
constexpr const char* kSchemaV2 = R"sql(
CREATE TABLE files (
  transfer_id TEXT NOT NULL,
  path        TEXT NOT NULL,        -- relative to the transfer's root
  size        INTEGER NOT NULL,
  digest      TEXT NOT NULL,        -- hex XXH3-128 file digest, when it succeeded
  state       TEXT NOT NULL,        -- succeeded, skipped, failed
  attempts    INTEGER NOT NULL,
  error       TEXT NOT NULL,
  updated_ms  INTEGER NOT NULL,
  PRIMARY KEY (transfer_id, path)
) WITHOUT ROWID;
)sql";

// One prepared statement; finalised when it goes out of scope.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) { rc_ = sqlite3_prepare_v2(db, sql, -1, &s_, nullptr); }
  ~Stmt() { sqlite3_finalize(s_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  bool ok() const { return rc_ == SQLITE_OK; }
  Stmt& Bind(int i, const std::string& v) {
    if (ok()) rc_ = sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& Bind(int i, int64_t v) {
    if (ok()) rc_ = sqlite3_bind_int64(s_, i, v);
    return *this;
  }
  Stmt& BindNull(int i) {
    if (ok()) rc_ = sqlite3_bind_null(s_, i);
    return *this;
  }
  // For another run with new bindings.
  void Reset() {
    if (!ok()) return;
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  // SQLITE_ROW, SQLITE_DONE or an error code.
  int Step() {
    if (!ok()) return rc_;
    return sqlite3_step(s_);
  }
  std::string Text(int col) const {
    const unsigned char* p = sqlite3_column_text(s_, col);
    return p ? std::string(reinterpret_cast<const char*>(p), sqlite3_column_bytes(s_, col)) : std::string();
  }
  int64_t Int(int col) const { return sqlite3_column_int64(s_, col); }

 private:
  sqlite3_stmt* s_ = nullptr;
  int rc_;
};

class SqliteTransferStore final : public TransferStore {
 public:
  SqliteTransferStore(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  ~SqliteTransferStore() override { sqlite3_close_v2(db_); }

  // Sets the connection up and brings the schema to kSchemaVersion.
  Status Init() PORO_EXCLUDES(mu_) {
    MutexLock lock(&mu_);
    sqlite3_busy_timeout(db_, 10000);
    // WAL: readers never wait for the writer; FULL: a commit is on disk when it returns.
    PORO_RETURN_IF_ERROR(Exec("PRAGMA journal_mode=WAL"));
    PORO_RETURN_IF_ERROR(Exec("PRAGMA synchronous=FULL"));
    Stmt v(db_, "PRAGMA user_version");
    if (v.Step() != SQLITE_ROW) return Error("read the schema version");
    const int64_t version = v.Int(0);
    if (version > kSchemaVersion) {
      return Status::InvalidArgument(path_ + ": queue schema version " + std::to_string(version) +
                                     " is newer than this pororocad's (" + std::to_string(kSchemaVersion) +
                                     "); run the newer pororocad, or move the file aside");
    }
    // Each step in its own transaction, so a file of any earlier version is brought up to date.
    for (auto [to, sql] : {std::pair<int, const char*>{1, kSchemaV1}, {2, kSchemaV2}}) {
      if (version >= to) continue;
      PORO_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
      Status s = Exec(sql);
      if (s.ok()) s = Exec(("PRAGMA user_version=" + std::to_string(to)).c_str());
      if (s.ok()) s = Exec("COMMIT");
      if (!s.ok()) {
        Exec("ROLLBACK").IgnoreError();
        return s;
      }
    }
    return Status::OK();
  }

  Result<std::string> Add(const Transfer& t) override PORO_EXCLUDES(mu_) {
    const json record = t.Record();
    MutexLock lock(&mu_);
    Stmt ins(
        db_,
        "INSERT INTO transfers (id, owner_key, submission_id, state, priority, created_ms, finished_ms, "
        "record) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (owner_key, submission_id) DO NOTHING");
    ins.Bind(1, t.id).Bind(2, t.OwnerKey());
    if (t.submission_id.empty()) {
      ins.BindNull(3);
    } else {
      ins.Bind(3, t.submission_id);
    }
    ins.Bind(4, record.value("state", std::string()))
        .Bind(5, int64_t{t.priority})
        .Bind(6, t.created_ms)
        .Bind(7, record.value("finished_ms", int64_t{0}))
        .Bind(8, record.dump());
    if (ins.Step() != SQLITE_DONE) return Error("add transfer " + t.id);
    if (sqlite3_changes(db_) == 1) return t.id;
    Stmt q(db_, "SELECT id FROM transfers WHERE owner_key = ?1 AND submission_id = ?2");
    q.Bind(1, t.OwnerKey()).Bind(2, t.submission_id);
    if (q.Step() != SQLITE_ROW) return Error("find submission " + t.submission_id);
    return q.Text(0);
  }

  Status AddMany(const std::vector<std::shared_ptr<Transfer>>& entries) override PORO_EXCLUDES(mu_) {
    std::vector<json> records;
    records.reserve(entries.size());
    for (const auto& t : entries) records.push_back(t->Record());
    MutexLock lock(&mu_);
    PORO_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
    Stmt ins(
        db_,
        "INSERT INTO transfers (id, owner_key, submission_id, state, priority, created_ms, finished_ms, "
        "record) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (owner_key, submission_id) DO NOTHING");
    for (size_t i = 0; i < entries.size(); ++i) {
      const Transfer& t = *entries[i];
      ins.Reset();
      ins.Bind(1, t.id).Bind(2, t.OwnerKey());
      if (t.submission_id.empty()) {
        ins.BindNull(3);
      } else {
        ins.Bind(3, t.submission_id);
      }
      ins.Bind(4, records[i].value("state", std::string()))
          .Bind(5, int64_t{t.priority})
          .Bind(6, t.created_ms)
          .Bind(7, records[i].value("finished_ms", int64_t{0}))
          .Bind(8, records[i].dump());
      Status s;
      if (ins.Step() != SQLITE_DONE) {
        s = Error("add transfer " + t.id);
      } else if (sqlite3_changes(db_) != 1) {
        s = Status::AlreadyExists(path_ + ": submission id '" + t.submission_id + "' was used before");
      }
      if (!s.ok()) {
        Exec("ROLLBACK").IgnoreError();
        return s;
      }
    }
    return Exec("COMMIT");
  }

  Status Update(const Transfer& t) override PORO_EXCLUDES(mu_) {
    const json record = t.Record();
    const std::string state = record.value("state", std::string());
    MutexLock lock(&mu_);
    Stmt up(db_,
            "UPDATE transfers SET state = ?2, finished_ms = ?3, record = ?4, "
            "node = CASE WHEN ?2 = 'running' THEN node ELSE NULL END, "
            "lease_until_ms = CASE WHEN ?2 = 'running' THEN lease_until_ms ELSE 0 END WHERE id = ?1");
    up.Bind(1, t.id).Bind(2, state).Bind(3, record.value("finished_ms", int64_t{0})).Bind(4, record.dump());
    if (up.Step() != SQLITE_DONE) return Error("update transfer " + t.id);
    if (sqlite3_changes(db_) != 1) return Status::NotFound(path_ + ": no transfer " + t.id + " to update");
    return Status::OK();
  }

  Status Remove(const std::vector<std::string>& ids) override PORO_EXCLUDES(mu_) {
    if (ids.empty()) return Status::OK();
    MutexLock lock(&mu_);
    PORO_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
    for (const auto& id : ids) {
      Stmt del(db_, "DELETE FROM transfers WHERE id = ?1");
      del.Bind(1, id);
      Stmt del_files(db_, "DELETE FROM files WHERE transfer_id = ?1");
      del_files.Bind(1, id);
      if (del.Step() != SQLITE_DONE || del_files.Step() != SQLITE_DONE) {
        Status s = Error("remove transfer " + id);
        Exec("ROLLBACK").IgnoreError();
        return s;
      }
    }
    return Exec("COMMIT");
  }

  Result<std::vector<json>> LoadAll() override PORO_EXCLUDES(mu_) {
    MutexLock lock(&mu_);
    Stmt q(db_, "SELECT id, record FROM transfers ORDER BY created_ms, id");
    std::vector<json> out;
    int rc;
    while ((rc = q.Step()) == SQLITE_ROW) {
      json j = json::parse(q.Text(1), nullptr, false);
      if (j.is_discarded()) {  // only a hand-edited file gets here: say which row, keep the rest
        j = json{{"id", q.Text(0)}, {"unreadable", "the record is not JSON"}};
      }
      out.push_back(std::move(j));
    }
    if (rc != SQLITE_DONE) return Error("read the transfers");
    return out;
  }

  Result<json> Get(const std::string& id) override PORO_EXCLUDES(mu_) {
    MutexLock lock(&mu_);
    Stmt q(db_, "SELECT record FROM transfers WHERE id = ?1");
    q.Bind(1, id);
    int rc = q.Step();
    if (rc == SQLITE_DONE) return Status::NotFound(path_ + ": no transfer " + id);
    if (rc != SQLITE_ROW) return Error("read transfer " + id);
    json j = json::parse(q.Text(0), nullptr, false);
    if (j.is_discarded()) return Status::DataLoss(path_ + ": the record of transfer " + id + " is not JSON");
    return j;
  }

  Result<size_t> Import(const std::vector<json>& records) override PORO_EXCLUDES(mu_) {
    MutexLock lock(&mu_);
    PORO_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
    size_t added = 0;
    for (const auto& r : records) {
      // The columns as Add writes them, from the record read as the daemon reads it.
      auto t = Transfer::FromRecord(r);
      if (!t.has_value()) {
        Exec("ROLLBACK").IgnoreError();
        return t.status().Annotate(path_ + ": import transfer " + r.value("id", std::string("?")));
      }
      Stmt ins(db_,
               "INSERT OR IGNORE INTO transfers (id, owner_key, submission_id, state, priority, created_ms, "
               "finished_ms, record) VALUES (?1, ?2, NULL, ?3, ?4, ?5, ?6, ?7)");
      ins.Bind(1, (*t)->id)
          .Bind(2, (*t)->OwnerKey())
          .Bind(3, r.value("state", std::string("failed")))
          .Bind(4, int64_t{(*t)->priority})
          .Bind(5, (*t)->created_ms)
          .Bind(6, r.value("finished_ms", int64_t{0}))
          .Bind(7, r.dump());
      if (ins.Step() != SQLITE_DONE) {
        Status s = Error("import transfer " + r.value("id", std::string()));
        Exec("ROLLBACK").IgnoreError();
        return s;
      }
      added += static_cast<size_t>(sqlite3_changes(db_));
    }
    PORO_RETURN_IF_ERROR(Exec("COMMIT"));
    return added;
  }

  Status AddFileResults(const std::string& id, const std::vector<engine::FileResult>& results,
                        int64_t now_ms) override PORO_EXCLUDES(mu_) {
    if (results.empty()) return Status::OK();
    MutexLock lock(&mu_);
    PORO_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
    Stmt up(db_,
            "INSERT INTO files (transfer_id, path, size, digest, state, attempts, error, updated_ms) "
            "VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?7) ON CONFLICT (transfer_id, path) DO UPDATE SET "
            "size = excluded.size, digest = excluded.digest, state = excluded.state, "
            "attempts = files.attempts + 1, error = excluded.error, updated_ms = excluded.updated_ms "
            "WHERE NOT (files.state = 'succeeded' AND excluded.state = 'skipped')");
    for (const auto& r : results) {
      up.Reset();
      up.Bind(1, id)
          .Bind(2, r.path)
          .Bind(3, static_cast<int64_t>(r.size))
          .Bind(4, r.digest)
          .Bind(5, r.state)
          .Bind(6, r.error)
          .Bind(7, now_ms);
      if (up.Step() != SQLITE_DONE) {
        Status s = Error("record the files of transfer " + id);
        Exec("ROLLBACK").IgnoreError();
        return s;
      }
    }
    return Exec("COMMIT");
  }

  Result<FilePage> ListFiles(const std::vector<std::string>& ids, const std::string& state, uint64_t offset,
                             uint32_t limit) override PORO_EXCLUDES(mu_) {
    MutexLock lock(&mu_);
    FilePage page;
    // The ids as a JSON array: one statement for one transfer or a job's thousands.
    const std::string id_list = json(ids).dump();
    Stmt counts(db_,
                "SELECT state, COUNT(*) FROM files WHERE transfer_id IN (SELECT value FROM json_each(?1)) "
                "GROUP BY state");
    counts.Bind(1, id_list);
    int rc;
    while ((rc = counts.Step()) == SQLITE_ROW) {
      page.by_state[counts.Text(0)] = static_cast<uint64_t>(counts.Int(1));
      if (state.empty() || counts.Text(0) == state) page.total += static_cast<uint64_t>(counts.Int(1));
    }
    if (rc != SQLITE_DONE) return Error("count the files of transfer " + (ids.empty() ? "" : ids[0]));
    Stmt q(db_,
           "SELECT f.transfer_id, f.path, f.size, f.digest, f.state, f.attempts, f.error, f.updated_ms "
           "FROM json_each(?1) AS t JOIN files AS f ON f.transfer_id = t.value "
           "WHERE (?2 = '' OR f.state = ?2) ORDER BY t.key, f.path LIMIT ?3 OFFSET ?4");
    q.Bind(1, id_list).Bind(2, state).Bind(3, int64_t{limit}).Bind(4, static_cast<int64_t>(offset));
    while ((rc = q.Step()) == SQLITE_ROW) {
      page.files.push_back(FileRecord{q.Text(0), q.Text(1), static_cast<uint64_t>(q.Int(2)), q.Text(3),
                                      q.Text(4), static_cast<unsigned>(q.Int(5)), q.Text(6), q.Int(7)});
    }
    if (rc != SQLITE_DONE) return Error("read the files of transfer " + (ids.empty() ? "" : ids[0]));
    return page;
  }

  Result<bool> Claim(const std::string& id, const std::string& node, int64_t now_ms,
                     int64_t until_ms) override PORO_EXCLUDES(mu_) {
    MutexLock lock(&mu_);
    Stmt up(db_,
            "UPDATE transfers SET node = ?2, lease_until_ms = ?4 WHERE id = ?1 AND "
            "(node IS NULL OR node = ?2 OR lease_until_ms < ?3)");
    up.Bind(1, id).Bind(2, node).Bind(3, now_ms).Bind(4, until_ms);
    if (up.Step() != SQLITE_DONE) return Error("claim transfer " + id);
    return sqlite3_changes(db_) == 1;
  }

  Status Renew(const std::string& node, int64_t until_ms) override PORO_EXCLUDES(mu_) {
    MutexLock lock(&mu_);
    Stmt up(db_, "UPDATE transfers SET lease_until_ms = ?2 WHERE node = ?1");
    up.Bind(1, node).Bind(2, until_ms);
    if (up.Step() != SQLITE_DONE) return Error("renew the leases of " + node);
    return Status::OK();
  }

 private:
  Status Exec(const char* sql) PORO_REQUIRES(mu_) {
    if (sqlite3_exec(db_, sql, nullptr, nullptr, nullptr) != SQLITE_OK) return Error(sql);
    return Status::OK();
  }
  // The connection's last error, naming the file and what was being done.
  Status Error(const std::string& what) const {
    const int code = sqlite3_errcode(db_);
    std::string msg = path_ + ": " + what + ": " + sqlite3_errmsg(db_);
    switch (code) {
      case SQLITE_FULL:
        return Status::ResourceExhausted(msg);
      case SQLITE_CANTOPEN:
      case SQLITE_READONLY:
      case SQLITE_PERM:
        return Status::PermissionDenied(msg);
      case SQLITE_BUSY:
      case SQLITE_LOCKED:
        return Status::Unavailable(msg);
      case SQLITE_CORRUPT:
      case SQLITE_NOTADB:
        return Status::DataLoss(msg);
      default:
        break;
    }
    return Status::Internal(msg);
  }

  Mutex mu_;
  sqlite3* const db_;
  const std::string path_;
};

}  // namespace

Result<std::unique_ptr<TransferStore>> OpenSqliteTransferStore(const std::string& path) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg =
        path + ": cannot open the transfer queue: " + (db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    sqlite3_close_v2(db);
    return Status::PermissionDenied(msg);
  }
  auto store = std::make_unique<SqliteTransferStore>(db, path);
  PORO_RETURN_IF_ERROR(store->Init());
  return std::unique_ptr<TransferStore>(std::move(store));
}

}  // namespace pororoca::daemon
