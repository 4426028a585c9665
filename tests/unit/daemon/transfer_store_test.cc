#include "daemon/transfer_store.h"

#include <doctest/doctest.h>
#include <sqlite3.h>

#include <fstream>
#include <type_traits>

#include "support/temp_dir.h"

namespace pororoca::daemon {
namespace {

using nlohmann::json;

// The value, or `def` when `r` holds an error.
template <class T>
T Or(Result<T> r, std::type_identity_t<T> def) {
  return r.has_value() ? std::move(*r) : std::move(def);
}

std::unique_ptr<Transfer> Make(const std::string& id, const std::string& user, int64_t created_ms) {
  auto t = std::make_unique<Transfer>();
  t->id = id;
  t->user = user;
  t->local_path = "/export/" + id;
  t->remote.remote = true;
  t->remote.endpoint = "peer";
  t->remote.path = "/in";
  t->created_ms = created_ms;
  return t;
}

void SetState(Transfer& t, TransferState s) {
  MutexLock lock(&t.mu);
  t.state = s;
}

TEST_CASE("the SQLite queue keeps records across a reopen, in submission order") {
  test::TempDir dir;
  const std::string path = dir / "queue.db";
  {
    auto store = OpenSqliteTransferStore(path);
    REQUIRE(store.has_value());
    auto b = Make("b", "alice@lncc", 20), a = Make("a", "bob@lncc", 10);
    REQUIRE(Or((*store)->Add(*b), "") == "b");
    REQUIRE(Or((*store)->Add(*a), "") == "a");
    SetState(*b, TransferState::kSucceeded);
    REQUIRE((*store)->Update(*b).ok());
    auto ghost = Make("ghost", "x", 1);
    CHECK((*store)->Update(*ghost).code() == Code::kNotFound);
  }
  auto store = OpenSqliteTransferStore(path);
  REQUIRE(store.has_value());
  auto all = (*store)->LoadAll();
  REQUIRE(all.has_value());
  REQUIRE(all->size() == 2);
  CHECK((*all)[0]["id"] == "a");
  CHECK((*all)[1]["id"] == "b");
  CHECK((*all)[1]["state"] == "succeeded");
  CHECK(Or((*store)->Get("b"), json())["local_path"] == "/export/b");
  REQUIRE((*store)->Remove({"b"}).ok());
  CHECK((*store)->Get("b").status().code() == Code::kNotFound);
  // Records of an earlier version come in once; an id already stored is skipped.
  auto added =
      (*store)->Import({Make("old", "carol@lncc", 5)->Record(), Make("a", "bob@lncc", 10)->Record()});
  REQUIRE(added.has_value());
  CHECK(*added == 1);
  CHECK(Or((*store)->LoadAll(), std::vector<json>{}).size() == 2);
}

TEST_CASE("one transfer per owner and submission id") {
  test::TempDir dir;
  auto store = OpenSqliteTransferStore(dir / "queue.db");
  REQUIRE(store.has_value());
  auto first = Make("t1", "alice@lncc", 1);
  first->submission_id = "run-7";
  auto second = Make("t2", "alice@lncc", 2);
  second->submission_id = "run-7";
  auto bobs = Make("t3", "bob@lncc", 3);
  bobs->submission_id = "run-7";
  CHECK(Or((*store)->Add(*first), "") == "t1");
  CHECK(Or((*store)->Add(*second), "") == "t1");  // nothing added: the first one's id
  CHECK(Or((*store)->Add(*bobs), "") == "t3");
  // Without an id nothing is deduplicated.
  CHECK(Or((*store)->Add(*Make("t4", "alice@lncc", 4)), "") == "t4");
  CHECK(Or((*store)->Add(*Make("t5", "alice@lncc", 5)), "") == "t5");
  CHECK(Or((*store)->LoadAll(), std::vector<json>{}).size() == 4);
}

TEST_CASE("a claim keeps a transfer for one daemon until its lease ends or it stops running") {
  test::TempDir dir;
  auto store = OpenSqliteTransferStore(dir / "queue.db");
  REQUIRE(store.has_value());
  auto t = Make("t", "alice@lncc", 1);
  REQUIRE((*store)->Add(*t).has_value());
  CHECK(Or((*store)->Claim("t", "dtn1", 1000, 2000), false));
  CHECK(!Or((*store)->Claim("t", "dtn2", 1500, 2500), true));  // dtn1's lease holds
  CHECK(Or((*store)->Claim("t", "dtn1", 1500, 2500), false));  // its own: renewed
  REQUIRE((*store)->Renew("dtn1", 4000).ok());
  CHECK(!Or((*store)->Claim("t", "dtn2", 3000, 5000), true));
  CHECK(Or((*store)->Claim("t", "dtn2", 4001, 5000), false));  // expired: taken over
  SetState(*t, TransferState::kRunning);
  REQUIRE((*store)->Update(*t).ok());
  CHECK(!Or((*store)->Claim("t", "dtn1", 4500, 6000), true));  // still dtn2's while it runs
  SetState(*t, TransferState::kRetrying);
  REQUIRE((*store)->Update(*t).ok());  // not running: the claim is given up
  CHECK(Or((*store)->Claim("t", "dtn1", 4500, 6000), false));
  CHECK(!Or((*store)->Claim("missing", "dtn1", 0, 1), true));
}

TEST_CASE("a queue file that is not a database, or is from a newer version, is refused naming it") {
  test::TempDir dir;
  const std::string junk = dir / "junk.db";
  std::ofstream(junk) << "these are not the bytes of an SQLite database, but they are many enough to look "
                         "like a file header and a page of one, so SQLite reads and rejects it";
  auto r = OpenSqliteTransferStore(junk);
  REQUIRE(!r.has_value());
  CHECK(r.error().code() == Code::kDataLoss);
  CHECK(std::string(r.error().message()).find(junk) != std::string::npos);
  CHECK(std::string(r.error().message()).find("not a database") != std::string::npos);

  const std::string newer = dir / "newer.db";
  {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(newer.c_str(), &db) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db, "PRAGMA user_version=9", nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
  }
  auto n = OpenSqliteTransferStore(newer);
  REQUIRE(!n.has_value());
  CHECK(std::string(n.error().message()).find("version 9 is newer") != std::string::npos);
  CHECK(std::string(n.error().message()).find(newer) != std::string::npos);

  auto nowhere = OpenSqliteTransferStore(dir / "no/such/dir/queue.db");
  REQUIRE(!nowhere.has_value());
  CHECK(std::string(nowhere.error().message()).find("no/such/dir/queue.db") != std::string::npos);
}

TEST_CASE("per-file results: the last one per file, attempts counted, a success kept, pages by path") {
  test::TempDir dir;
  auto store = OpenSqliteTransferStore(dir / "queue.db");
  REQUIRE(store.has_value());
  TransferStore& st = **store;
  auto t = Make("t1", "alice@lncc", 1);
  REQUIRE(st.Add(*t).has_value());
  // Attempt 1: a and c arrive, b fails for a reason worth retrying.
  REQUIRE(st.AddFileResults("t1",
                            {{"d/a", 10, "aa", "succeeded", ""},
                             {"d/b", 20, "", "failed", "connection lost", true},
                             {"d/c", 30, "cc", "succeeded", ""}},
                            100)
              .ok());
  // Attempt 2: a and c are found there already (skipped), b arrives.
  REQUIRE(st.AddFileResults("t1",
                            {{"d/a", 10, "", "skipped", ""},
                             {"d/b", 20, "bb", "succeeded", ""},
                             {"d/c", 30, "", "skipped", ""}},
                            200)
              .ok());
  auto page = st.ListFiles({"t1"}, "", 0, 100);
  REQUIRE(page.has_value());
  REQUIRE(page->files.size() == 3);
  CHECK(page->total == 3);
  CHECK(page->by_state == std::map<std::string, uint64_t>{{"succeeded", 3}});
  CHECK(page->files[0].path == "d/a");
  CHECK(page->files[0].digest == "aa");  // the success is kept, not the later "skipped"
  CHECK(page->files[0].attempts == 1);
  CHECK(page->files[1].path == "d/b");
  CHECK(page->files[1].digest == "bb");
  CHECK(page->files[1].attempts == 2);
  CHECK(page->files[1].error.empty());
  CHECK(page->files[1].updated_ms == 200);
  // Pages and the state filter.
  auto second = st.ListFiles({"t1"}, "", 1, 1);
  REQUIRE(second.has_value());
  REQUIRE(second->files.size() == 1);
  CHECK(second->files[0].path == "d/b");
  REQUIRE(st.AddFileResults("t1", {{"d/e", 5, "", "failed", "destination exists", false}}, 300).ok());
  auto failed = st.ListFiles({"t1"}, "failed", 0, 10);
  REQUIRE(failed.has_value());
  CHECK(failed->total == 1);
  REQUIRE(failed->files.size() == 1);
  CHECK(failed->files[0].error == "destination exists");
  CHECK(failed->by_state.at("succeeded") == 3);
  // Forgetting the transfer forgets its files.
  REQUIRE(st.Remove({"t1"}).ok());
  auto gone = st.ListFiles({"t1"}, "", 0, 10);
  REQUIRE(gone.has_value());
  CHECK(gone->total == 0);
  CHECK(gone->files.empty());
}

TEST_CASE("a queue of the first schema version gains the files table when opened") {
  test::TempDir dir;
  const std::string path = dir / "v1.db";
  {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    const char* v1 =
        "CREATE TABLE transfers (id TEXT PRIMARY KEY, owner_key TEXT NOT NULL, submission_id TEXT, state "
        "TEXT "
        "NOT NULL, priority INTEGER NOT NULL, created_ms INTEGER NOT NULL, finished_ms INTEGER NOT NULL "
        "DEFAULT "
        "0, node TEXT, lease_until_ms INTEGER NOT NULL DEFAULT 0, record TEXT NOT NULL, UNIQUE (owner_key, "
        "submission_id)); PRAGMA user_version=1;";
    REQUIRE(sqlite3_exec(db, v1, nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
  }
  auto store = OpenSqliteTransferStore(path);
  REQUIRE_MESSAGE(store.has_value(), store.status().ToString());
  auto t = Make("t", "alice@lncc", 1);
  REQUIRE((*store)->Add(*t).has_value());
  CHECK((*store)->AddFileResults("t", {{"x", 1, "ab", "succeeded", ""}}, 1).ok());
  CHECK(Or((*store)->ListFiles({"t"}, "", 0, 10), FilePage{}).total == 1);
}

}  // namespace
}  // namespace pororoca::daemon
