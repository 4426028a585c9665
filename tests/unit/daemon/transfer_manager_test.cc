#include "daemon/transfer_manager.h"

#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <mutex>
#include <thread>

#include "support/temp_dir.h"

namespace pororoca::daemon {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;

std::shared_ptr<Transfer> NewTransfer(const std::string& id) {
  auto t = std::make_shared<Transfer>();
  t->id = id;
  t->local_path = "/export/a";
  t->remote.remote = true;
  t->remote.endpoint = "peer";
  t->remote.path = "/b";
  t->created_ms = NowMs();
  return t;
}

// The record in the manager's queue (null if there is none).
json Stored(const TransferManager& m, const std::string& id) {
  auto r = m.StoredRecord(id);
  return r.has_value() ? *r : json();
}

TransferState StateOf(Transfer& t) {
  MutexLock lock(&t.mu);
  return t.state;
}
unsigned AttemptsOf(Transfer& t) {
  MutexLock lock(&t.mu);
  return t.attempts;
}

struct Fixture {
  test::TempDir dir;
  WorkerSet workers;
  TransferManager::Options Opts() {
    TransferManager::Options o;
    o.db_path = dir / "queue.db";
    o.legacy_dir = dir / "transfers";
    o.retry_attempts = 3;
    o.retry_max_backoff_s = 1;
    o.first_backoff = milliseconds(10);
    return o;
  }
};

TEST_CASE_FIXTURE(Fixture, "a transfer whose attempt succeeds is succeeded after one attempt, on disk too") {
  TransferManager m(
      Opts(),
      [](Transfer&) -> Result<json> {
        return json{{"files_committed", 1}};
      },
      &workers);
  REQUIRE(m.Open().ok());
  auto t = NewTransfer("t1");
  REQUIRE(m.Submit(t).has_value());
  m.WaitEnded(*t, std::chrono::seconds(10));
  CHECK(StateOf(*t) == TransferState::kSucceeded);
  CHECK(AttemptsOf(*t) == 1);
  workers.JoinAll();
  json rec = Stored(m, "t1");
  CHECK(rec["state"] == "succeeded");
  CHECK(rec["summary"]["files_committed"] == 1);
}

TEST_CASE_FIXTURE(Fixture, "a retryable failure is retried and the transfer then succeeds") {
  std::atomic<int> calls{0};
  TransferManager m(
      Opts(),
      [&](Transfer&) -> Result<json> {
        if (calls.fetch_add(1) == 0) return Status::Unavailable("peer closed");
        return json::object();
      },
      &workers);
  REQUIRE(m.Open().ok());
  auto t = NewTransfer("t2");
  REQUIRE(m.Submit(t).has_value());
  m.WaitEnded(*t, std::chrono::seconds(10));
  CHECK(StateOf(*t) == TransferState::kSucceeded);
  CHECK(AttemptsOf(*t) == 2);
}

TEST_CASE_FIXTURE(Fixture,
                  "a protocol error marked retryable is retried, and one that is not fails at once") {
  SUBCASE("retryable") {
    std::atomic<int> calls{0};
    TransferManager m(
        Opts(),
        [&](Transfer&) -> Result<json> {
          if (calls.fetch_add(1) == 0)
            return Status::Protocol("expected HELLO, got FILES").WithRetryable(true);
          return json::object();
        },
        &workers);
    REQUIRE(m.Open().ok());
    auto t = NewTransfer("t3");
    REQUIRE(m.Submit(t).has_value());
    m.WaitEnded(*t, std::chrono::seconds(10));
    CHECK(StateOf(*t) == TransferState::kSucceeded);
    CHECK(AttemptsOf(*t) == 2);
  }
  SUBCASE("not retryable") {
    TransferManager m(
        Opts(), [](Transfer&) -> Result<json> { return Status::PermissionDenied("policy denies"); },
        &workers);
    REQUIRE(m.Open().ok());
    auto t = NewTransfer("t4");
    REQUIRE(m.Submit(t).has_value());
    m.WaitEnded(*t, std::chrono::seconds(10));
    CHECK(StateOf(*t) == TransferState::kFailed);
    CHECK(AttemptsOf(*t) == 1);
    MutexLock lock(&t->mu);
    CHECK(t->error == "policy denies");
    CHECK(t->error_code == "PermissionDenied");
  }
}

// An attempt that ends with `failed` files, `retryable` of them failed by a corrupting path, after
// `corrupt` corrupt copies.
Result<json> EndWithFailures(Transfer& t, uint64_t failed, uint64_t retryable, uint64_t corrupt,
                             uint64_t done = 0) {
  auto stats = std::make_shared<engine::TransferStats>();
  stats->files_done = done;
  stats->files_failed = failed;
  stats->files_failed_retryable = retryable;
  stats->chunks_corrupt = corrupt;
  stats->bytes_sent = 1ull << 30;
  MutexLock lock(&t.mu);
  t.stats = std::move(stats);
  return json{{"files_failed", failed}};
}

TEST_CASE_FIXTURE(Fixture,
                  "files that failed on a corrupting path are retried with the transfer, others are not") {
  SUBCASE("every failed file is retryable: another attempt, which succeeds") {
    std::atomic<int> calls{0};
    TransferManager m(
        Opts(),
        [&](Transfer& t) -> Result<json> {
          if (calls.fetch_add(1) == 0) return EndWithFailures(t, 1, 1, 17);
          return EndWithFailures(t, 0, 0, 2);
        },
        &workers);
    REQUIRE(m.Open().ok());
    auto t = NewTransfer("c1");
    REQUIRE(m.Submit(t).has_value());
    m.WaitEnded(*t, std::chrono::seconds(10));
    CHECK(StateOf(*t) == TransferState::kSucceeded);
    CHECK(AttemptsOf(*t) == 2);
    json v = t->View();
    CHECK(v["progress"]["chunks_corrupt_all_attempts"] == 19);
    CHECK(v["progress"]["corrupt_chunks_per_gib"].get<double>() == doctest::Approx(9.5));
  }
  SUBCASE("one failed file is not retryable: failed at once") {
    std::atomic<int> calls{0};
    TransferManager m(
        Opts(), [&](Transfer& t) -> Result<json> { return calls++, EndWithFailures(t, 2, 1, 17); }, &workers);
    REQUIRE(m.Open().ok());
    auto t = NewTransfer("c2");
    REQUIRE(m.Submit(t).has_value());
    m.WaitEnded(*t, std::chrono::seconds(10));
    CHECK(StateOf(*t) == TransferState::kFailed);
    CHECK(calls.load() == 1);
  }
  SUBCASE("some files failed and the others arrived: partial, not retried") {
    std::atomic<int> calls{0};
    TransferManager m(
        Opts(), [&](Transfer& t) -> Result<json> { return calls++, EndWithFailures(t, 1, 0, 0, 41); },
        &workers);
    REQUIRE(m.Open().ok());
    auto t = NewTransfer("c4");
    REQUIRE(m.Submit(t).has_value());
    m.WaitEnded(*t, std::chrono::seconds(10));
    CHECK(StateOf(*t) == TransferState::kPartial);
    CHECK(calls.load() == 1);
    CHECK(Stored(m, "c4")["state"] == "partial");
    MutexLock lock(&t->mu);
    CHECK(t->error_code == "FilesFailed");
    CHECK(t->error == "1 file(s) could not be transferred");
  }
  SUBCASE("a path that stays bad spends the retry budget, then the transfer fails saying why") {
    std::atomic<int> calls{0};
    TransferManager m(
        Opts(), [&](Transfer& t) -> Result<json> { return calls++, EndWithFailures(t, 1, 1, 17); }, &workers);
    REQUIRE(m.Open().ok());
    auto t = NewTransfer("c3");
    REQUIRE(m.Submit(t).has_value());
    m.WaitEnded(*t, std::chrono::seconds(20));
    CHECK(StateOf(*t) == TransferState::kFailed);
    CHECK(calls.load() == 4);  // the first attempt and retry_attempts = 3 more
    MutexLock lock(&t->mu);
    CHECK(t->error ==
          "1 file(s) could not be transferred (chunks kept failing verification on the path; 4 attempts "
          "spent)");
    CHECK(t->error_code == "FilesFailed");
  }
}

TEST_CASE_FIXTURE(Fixture, "the retry budget ends a transfer that keeps failing") {
  std::atomic<int> calls{0};
  TransferManager m(
      Opts(),
      [&](Transfer&) -> Result<json> {
        calls++;
        return Status::Unavailable("down");
      },
      &workers);
  REQUIRE(m.Open().ok());
  auto t = NewTransfer("t5");
  REQUIRE(m.Submit(t).has_value());
  m.WaitEnded(*t, std::chrono::seconds(20));
  CHECK(StateOf(*t) == TransferState::kFailed);
  CHECK(calls.load() == 4);  // the first attempt and retry_attempts = 3 more
}

TEST_CASE_FIXTURE(Fixture, "a transfer cancelled while it waits to retry ends cancelled") {
  auto o = Opts();
  o.first_backoff = milliseconds(5000);
  std::atomic<int> calls{0};
  TransferManager m(
      o,
      [&](Transfer&) -> Result<json> {
        calls++;
        return Status::Unavailable("down");
      },
      &workers);
  REQUIRE(m.Open().ok());
  auto t = NewTransfer("t6");
  REQUIRE(m.Submit(t).has_value());
  for (int i = 0; i < 500 && StateOf(*t) != TransferState::kRetrying; ++i)
    std::this_thread::sleep_for(milliseconds(10));
  REQUIRE(StateOf(*t) == TransferState::kRetrying);
  auto c = m.Cancel("t6");
  REQUIRE(c.has_value());
  m.WaitEnded(*t, std::chrono::seconds(10));
  CHECK(StateOf(*t) == TransferState::kCancelled);
  workers.JoinAll();
  CHECK(calls.load() == 1);
  CHECK(Stored(m, "t6")["state"] == "cancelled");
  CHECK(m.Cancel("nope").status().code() == Code::kNotFound);
}

TEST_CASE_FIXTURE(Fixture, "a transfer the daemon stops in flight is resumed by the next start-up") {
  std::atomic<bool> entered{false};
  {
    TransferManager m(
        Opts(),
        [&](Transfer& t) -> Result<json> {
          entered = true;
          while (!t.cancel.load()) std::this_thread::sleep_for(milliseconds(5));
          return Status::Unavailable("the daemon is shutting down");
        },
        &workers);
    REQUIRE(m.Open().ok());
    REQUIRE(m.Submit(NewTransfer("t7")).has_value());
    for (int i = 0; i < 500 && !entered; ++i) std::this_thread::sleep_for(milliseconds(10));
    REQUIRE(entered.load());
    m.Stop();
    workers.JoinAll();
    CHECK(Stored(m, "t7")["state"] == "running");
  }
  std::atomic<int> resumed{0};
  TransferManager m2(
      Opts(),
      [&](Transfer&) -> Result<json> {
        resumed++;
        return json::object();
      },
      &workers);
  REQUIRE(m2.Open().ok());
  m2.LoadPersisted();
  auto found = m2.Find("t7");
  REQUIRE(found.has_value());
  std::shared_ptr<Transfer> t = *found;
  m2.WaitEnded(*t, std::chrono::seconds(10));
  CHECK(StateOf(*t) == TransferState::kSucceeded);
  CHECK(resumed.load() == 1);
  CHECK(AttemptsOf(*t) == 2);  // the interrupted attempt counts
}

TEST_CASE_FIXTURE(
    Fixture,
    "a transfer with a user's token is not resumed after a restart: failed, saying to run it again") {
  auto t = NewTransfer("tok1");
  t->token = "user-token-abc";
  t->token_given = true;
  {
    MutexLock lock(&t->mu);
    t->state = TransferState::kRunning;
  }
  REQUIRE(::mkdir((dir / "transfers").c_str(), 0700) == 0);
  {
    std::ofstream out(dir / "transfers/tok1.json");
    out << t->Record().dump(2);
  }
  // A record written before tokens stayed off the disk: resumed once with its token, then rewritten.
  auto old = NewTransfer("tok2");
  {
    MutexLock lock(&old->mu);
    old->state = TransferState::kRetrying;
  }
  json old_rec = old->Record();
  old_rec["token"] = "old-token-xyz";
  {
    std::ofstream out(dir / "transfers/tok2.json");
    out << old_rec.dump(2);
  }
  std::atomic<int> attempts{0};
  std::string seen_token;
  std::mutex seen_mu;
  TransferManager m(
      Opts(),
      [&](Transfer& x) -> Result<json> {
        attempts++;
        std::lock_guard<std::mutex> lock(seen_mu);
        seen_token = x.token;
        return json::object();
      },
      &workers);
  REQUIRE(m.Open().ok());
  m.LoadPersisted();
  auto found = m.Find("tok1");
  REQUIRE(found.has_value());
  CHECK(StateOf(**found) == TransferState::kFailed);
  {
    MutexLock lock(&(*found)->mu);
    CHECK((*found)->error.find("run the same command again with its --token") != std::string::npos);
    CHECK((*found)->error_code == "Unauthenticated");
  }
  CHECK(Stored(m, "tok1")["state"] == "failed");
  // Migrated into the queue: the JSON files of the earlier version are gone.
  CHECK(::access((dir / "transfers/tok1.json").c_str(), F_OK) != 0);
  auto t2 = m.Find("tok2");
  REQUIRE(t2.has_value());
  m.WaitEnded(**t2, std::chrono::seconds(10));
  CHECK(StateOf(**t2) == TransferState::kSucceeded);
  CHECK(attempts.load() == 1);  // tok2 only
  {
    std::lock_guard<std::mutex> lock(seen_mu);
    CHECK(seen_token == "old-token-xyz");
  }
  workers.JoinAll();
  std::string text = Stored(m, "tok2").dump(1);
  CHECK(text.find("old-token-xyz") == std::string::npos);
  CHECK(text.find("\"token_given\": true") != std::string::npos);
}

TEST_CASE_FIXTURE(Fixture, "the start-up scan skips malformed records and deletes expired finished ones") {
  auto o = Opts();
  o.keep_finished_s = 60;
  TransferManager m(
      o, [](Transfer&) -> Result<json> { return json::object(); }, &workers);
  REQUIRE(::mkdir((dir / "transfers").c_str(), 0700) == 0);
  REQUIRE(m.Open().ok());
  {
    std::ofstream(dir / "transfers/bad.json") << R"({"id":"bad","attempts":"x"})";
    std::ofstream(dir / "transfers/junk.json") << "not json";
    auto old = NewTransfer("old");
    {
      MutexLock lock(&old->mu);
      old->state = TransferState::kSucceeded;
      old->finished_ms = NowMs() - 3600 * 1000;
    }
    std::ofstream(dir / "transfers/old.json") << old->Record().dump();
    auto recent = NewTransfer("recent");
    {
      MutexLock lock(&recent->mu);
      recent->state = TransferState::kFailed;
      recent->finished_ms = NowMs() - 1000;
    }
    std::ofstream(dir / "transfers/recent.json") << recent->Record().dump();
  }
  m.LoadPersisted();
  CHECK(!m.Find("bad").has_value());
  CHECK(!m.Find("old").has_value());
  CHECK(::access((dir / "transfers/old.json").c_str(), F_OK) != 0);
  CHECK(m.StoredRecord("old").status().code() == Code::kNotFound);
  // What could not be read stays where it was, for the operator.
  CHECK(::access((dir / "transfers/bad.json").c_str(), F_OK) == 0);
  CHECK(::access((dir / "transfers/junk.json").c_str(), F_OK) == 0);
  auto r = m.Find("recent");
  REQUIRE(r.has_value());
  CHECK(StateOf(**r) == TransferState::kFailed);  // a finished transfer is not run again
  CHECK(m.List().size() == 1);
}

TEST_CASE_FIXTURE(Fixture, "a transfer is found by its id or by a prefix that only it has") {
  TransferManager m(
      Opts(), [](Transfer&) -> Result<json> { return json::object(); }, &workers);
  REQUIRE(m.Open().ok());
  REQUIRE(m.Submit(NewTransfer("ab12")).has_value());
  REQUIRE(m.Submit(NewTransfer("ab34")).has_value());
  REQUIRE(m.Submit(NewTransfer("cd56")).has_value());
  auto exact = m.Find("ab12");
  REQUIRE(exact.has_value());
  CHECK((*exact)->id == "ab12");
  auto prefix = m.Find("c");
  REQUIRE(prefix.has_value());
  CHECK((*prefix)->id == "cd56");
  auto unique = m.Find("ab3");
  REQUIRE(unique.has_value());
  CHECK((*unique)->id == "ab34");
  auto ambiguous = m.Find("ab");
  REQUIRE_FALSE(ambiguous.has_value());
  CHECK(ambiguous.error().code() == Code::kInvalidArgument);
  CHECK(std::string(ambiguous.error().message()).find("ab12, ab34") != std::string::npos);
  auto none = m.Find("ef");
  REQUIRE_FALSE(none.has_value());
  CHECK(none.error().code() == Code::kNotFound);
  CHECK(std::string(none.error().message()) == "no transfer ef");
  CHECK(!m.Find("").has_value());
  // Cancel takes the same prefixes.
  auto c = m.Cancel("cd");
  REQUIRE(c.has_value());
  CHECK((*c)->id == "cd56");
  workers.JoinAll();
}

// An attempt function that holds every attempt until released, recording the order they started in.
struct Gate {
  std::mutex mu;
  std::vector<std::string> started;
  std::atomic<bool> open{false};
  TransferManager::AttemptFn Fn() {
    return [this](Transfer& t) -> Result<json> {
      {
        std::lock_guard<std::mutex> lock(mu);
        started.push_back(t.id);
      }
      while (!open.load() && !t.cancel.load()) std::this_thread::sleep_for(milliseconds(2));
      if (t.cancel.load()) return Status::Cancelled("cancelled");
      return json::object();
    };
  }
  size_t count() {
    std::lock_guard<std::mutex> lock(mu);
    return started.size();
  }
  std::vector<std::string> order() {
    std::lock_guard<std::mutex> lock(mu);
    return started;
  }
};

bool WaitFor(const std::function<bool()>& cond) {
  for (int i = 0; i < 1000; ++i) {
    if (cond()) return true;
    std::this_thread::sleep_for(milliseconds(5));
  }
  return cond();
}

std::shared_ptr<Transfer> OwnedTransfer(const std::string& id, const std::string& user,
                                        const std::string& peer, unsigned priority = kDefaultPriority) {
  auto t = NewTransfer(id);
  t->user = user;
  t->remote.endpoint = peer;
  t->priority = priority;
  return t;
}

TEST_CASE_FIXTURE(Fixture, "at most max_running transfers run, and max_running_per_peer with one peer") {
  auto o = Opts();
  o.max_running = 3;
  o.max_running_per_peer = 2;
  Gate gate;
  TransferManager m(o, gate.Fn(), &workers);
  REQUIRE(m.Open().ok());
  std::vector<std::shared_ptr<Transfer>> all;
  for (int i = 0; i < 4; ++i) all.push_back(OwnedTransfer("p" + std::to_string(i), "alice@lncc", "peer-a"));
  all.push_back(OwnedTransfer("q0", "alice@lncc", "peer-b"));
  for (auto& t : all) REQUIRE(m.Submit(t).has_value());
  REQUIRE(WaitFor([&] { return gate.count() == 3; }));
  std::this_thread::sleep_for(milliseconds(100));  // nothing more starts while they run
  CHECK(gate.count() == 3);
  CHECK(m.running() == 3);
  CHECK(m.queued() == 2);
  // Two with peer-a (its limit), and q0 although it was submitted last.
  auto order = gate.order();
  CHECK(std::count(order.begin(), order.end(), "q0") == 1);
  CHECK(StateOf(*all[2]) == TransferState::kQueued);
  CHECK(Stored(m, "p3")["state"] == "queued");
  gate.open = true;
  for (auto& t : all) {
    m.WaitEnded(*t, std::chrono::seconds(10));
    CHECK(StateOf(*t) == TransferState::kSucceeded);
  }
  CHECK(gate.count() == 5);
  CHECK(m.queued() == 0);
}

TEST_CASE_FIXTURE(Fixture,
                  "a queued transfer of higher priority starts first, a cancelled one never starts") {
  auto o = Opts();
  o.max_running = 1;
  Gate gate;
  TransferManager m(o, gate.Fn(), &workers);
  REQUIRE(m.Open().ok());
  auto blocker = OwnedTransfer("b0", "alice@lncc", "peer");
  REQUIRE(m.Submit(blocker).has_value());
  REQUIRE(WaitFor([&] { return gate.count() == 1; }));
  REQUIRE(m.Submit(OwnedTransfer("low", "alice@lncc", "peer", 1)).has_value());
  REQUIRE(m.Submit(OwnedTransfer("mid", "alice@lncc", "peer", 3)).has_value());
  REQUIRE(m.Submit(OwnedTransfer("gone", "alice@lncc", "peer", 5)).has_value());
  REQUIRE(m.Submit(OwnedTransfer("high", "alice@lncc", "peer", 5)).has_value());
  auto c = m.Cancel("gone");
  REQUIRE(c.has_value());
  CHECK(StateOf(**c) == TransferState::kCancelled);
  gate.open = true;
  auto low = m.Find("low");
  REQUIRE(low.has_value());
  m.WaitEnded(**low, std::chrono::seconds(10));
  CHECK(gate.order() == std::vector<std::string>{"b0", "high", "mid", "low"});
  CHECK(Stored(m, "gone")["state"] == "cancelled");
}

TEST_CASE("fair share: the next start goes to the institution, then the user, that ran least") {
  using C = TransferManager::Candidate;
  std::vector<C> waiting;
  for (int i = 0; i < 1000; ++i) waiting.push_back(C{3, "lncc", "alice@lncc", "peer", 0, 1000 + i});
  waiting.push_back(C{3, "lncc", "bob@lncc", "peer", 0, 5000});  // submitted after alice's thousand
  TransferManager::Shares shares;
  // Alice started one a moment ago: bob goes next, although his is the newest.
  shares.last_start_owner["alice@lncc"] = 7;
  shares.last_start_institution["lncc"] = 7;
  CHECK(TransferManager::Pick(waiting, shares, 0, 8) == 1000);
  // With nothing started yet, the oldest goes first.
  CHECK(TransferManager::Pick(waiting, TransferManager::Shares{}, 0, 8) == 0);
  // Alice's running transfers count against her: bob goes next even if he started more recently.
  shares.last_start_owner["bob@lncc"] = 8;
  shares.running_by_owner["alice@lncc"] = 2;
  CHECK(TransferManager::Pick(waiting, shares, 0, 8) == 1000);
  // Another institution that has run nothing goes before both.
  waiting.push_back(C{3, "sdumont", "carol@sdumont", "peer", 0, 9000});
  shares.running_by_institution["lncc"] = 2;
  CHECK(TransferManager::Pick(waiting, shares, 0, 8) == 1001);
  // Priority comes first; a peer at its limit and a backoff not over yet are skipped.
  waiting.push_back(C{5, "lncc", "alice@lncc", "busy-peer", 0, 9500});
  waiting.push_back(C{4, "lncc", "alice@lncc", "peer", 100, 9600});
  waiting.push_back(C{4, "lncc", "alice@lncc", "peer", 0, 9700});
  shares.running_by_peer["busy-peer"] = 8;
  CHECK(TransferManager::Pick(waiting, shares, 50, 8) == 1004);
  CHECK(TransferManager::Pick(waiting, shares, 150, 8) == 1003);
  shares.running_by_peer["busy-peer"] = 7;
  CHECK(TransferManager::Pick(waiting, shares, 150, 8) == 1002);
  CHECK(TransferManager::Pick({}, shares, 0, 8) == -1);
}

TEST_CASE_FIXTURE(Fixture,
                  "a user with a thousand queued transfers does not starve one who submits one after") {
  auto o = Opts();
  o.max_running = 1;
  Gate gate;
  TransferManager m(o, gate.Fn(), &workers);
  REQUIRE(m.Open().ok());
  for (int i = 0; i < 1000; ++i) {
    REQUIRE(m.Submit(OwnedTransfer("a" + std::to_string(1000 + i), "alice@lncc", "peer")).has_value());
  }
  REQUIRE(WaitFor([&] { return gate.count() == 1; }));
  auto bob = OwnedTransfer("bob", "bob@lncc", "peer");
  REQUIRE(m.Submit(bob).has_value());
  gate.open = true;
  m.WaitEnded(*bob, std::chrono::seconds(20));
  CHECK(StateOf(*bob) == TransferState::kSucceeded);
  auto order = gate.order();
  const auto at = std::find(order.begin(), order.end(), "bob") - order.begin();
  CHECK(at == 1);  // right after alice's first, not after her thousand
  m.Stop();
}

TEST_CASE_FIXTURE(
    Fixture, "a submission id returns the transfer it made, the same id for another request is refused") {
  TransferManager m(
      Opts(), [](Transfer&) -> Result<json> { return json::object(); }, &workers);
  REQUIRE(m.Open().ok());
  auto first = OwnedTransfer("s1", "alice@lncc", "peer");
  first->submission_id = "job-42";
  bool existing = true;
  auto r1 = m.Submit(first, &existing);
  REQUIRE(r1.has_value());
  CHECK(!existing);
  auto again = OwnedTransfer("s2", "alice@lncc", "peer");
  again->submission_id = "job-42";
  auto r2 = m.Submit(again, &existing);
  REQUIRE(r2.has_value());
  CHECK(existing);
  CHECK((*r2)->id == "s1");
  CHECK(!m.Find("s2").has_value());
  auto other = OwnedTransfer("s3", "alice@lncc", "peer");
  other->submission_id = "job-42";
  other->remote.path = "/elsewhere";
  auto r3 = m.Submit(other);
  REQUIRE(!r3.has_value());
  CHECK(r3.error().code() == Code::kAlreadyExists);
  CHECK(std::string(r3.error().message()).find("job-42") != std::string::npos);
  // Another user's id space is their own.
  auto bobs = OwnedTransfer("s4", "bob@lncc", "peer");
  bobs->submission_id = "job-42";
  auto r4 = m.Submit(bobs, &existing);
  REQUIRE(r4.has_value());
  CHECK(!existing);
  CHECK((*r4)->id == "s4");
  workers.JoinAll();
  // After a restart the id still finds the same transfer.
  m.Stop();
  workers.JoinAll();
  TransferManager m2(
      Opts(), [](Transfer&) -> Result<json> { return json::object(); }, &workers);
  REQUIRE(m2.Open().ok());
  m2.LoadPersisted();
  auto once_more = OwnedTransfer("s5", "alice@lncc", "peer");
  once_more->submission_id = "job-42";
  auto r5 = m2.Submit(once_more, &existing);
  REQUIRE(r5.has_value());
  CHECK(existing);
  CHECK((*r5)->id == "s1");
}

TEST_CASE_FIXTURE(Fixture, "a job is queued whole, its events say when it was queued, started and ended") {
  TransferManager m(
      Opts(),
      [](Transfer& t) -> Result<json> {
        if (t.job_index == 1) return Status::NotFound("no such source");  // one entry fails
        return json{{"files_committed", 1}};
      },
      &workers);
  REQUIRE(m.Open().ok());
  TransferManager::Job job;
  for (unsigned i = 0; i < 3; ++i) {
    auto t = NewTransfer("j" + std::to_string(i));
    t->job_id = "job1";
    t->job_index = i;
    job.push_back(t);
  }
  REQUIRE(m.SubmitJob(job).has_value());
  auto found = m.FindJob("jo");
  REQUIRE(found.has_value());
  REQUIRE(found->size() == 3);
  m.WaitJobEnded(*found, std::chrono::seconds(10));
  workers.JoinAll();
  CHECK(TransferManager::JobView(*found, false)["state"] == "partial");
  auto r = m.events().Read(
      0, [](const Event& e) { return e.type == "job"; }, 100, std::chrono::milliseconds(0));
  std::vector<std::string> states;
  for (const auto& e : r.events) {
    CHECK(e.transfer_id == "job1");
    states.push_back(json::parse(e.data)["state"]);
  }
  CHECK(states == std::vector<std::string>{"queued", "running", "partial"});
  // Its entries' own events carry the job.
  auto entries = m.events().Read(
      0, [](const Event& e) { return e.type == "transfer"; }, 100, std::chrono::milliseconds(0));
  REQUIRE_FALSE(entries.events.empty());
  CHECK(json::parse(entries.events.front().data)["job_id"] == "job1");
}

TEST_CASE_FIXTURE(Fixture, "CountStates counts transfers and jobs by state, and the queue, in one pass") {
  std::atomic<bool> release{false};
  TransferManager::Options o = Opts();
  o.max_running = 1;
  TransferManager m(
      o,
      [&](Transfer& t) -> Result<json> {
        if (t.id == "hold") {  // runs until released: the others wait for the one slot
          while (!release.load()) std::this_thread::sleep_for(milliseconds(5));
        }
        if (t.job_index == 1) return Status::NotFound("no such source");
        return json{{"files_committed", 1}};
      },
      &workers);
  REQUIRE(m.Open().ok());
  auto hold = NewTransfer("hold");
  REQUIRE(m.Submit(hold).has_value());
  REQUIRE(WaitFor([&] { return StateOf(*hold) == TransferState::kRunning; }));
  TransferManager::Job job;
  for (unsigned i = 0; i < 2; ++i) {
    auto t = NewTransfer("e" + std::to_string(i));
    t->job_id = "job2";
    t->job_index = i;
    job.push_back(t);
  }
  REQUIRE(m.SubmitJob(job).has_value());
  auto c = m.CountStates();
  CHECK(c.transfers[static_cast<size_t>(TransferState::kRunning)] == 1);
  CHECK(c.transfers[static_cast<size_t>(TransferState::kQueued)] == 2);
  CHECK(c.waiting == 2);
  CHECK(c.running == 1);
  CHECK(c.jobs == std::map<std::string, uint64_t>{{"queued", 1}});
  release = true;
  m.WaitJobEnded(job, std::chrono::seconds(10));
  m.WaitEnded(*hold, std::chrono::seconds(10));
  workers.JoinAll();
  c = m.CountStates();
  CHECK(c.transfers[static_cast<size_t>(TransferState::kSucceeded)] == 2);
  CHECK(c.transfers[static_cast<size_t>(TransferState::kFailed)] == 1);
  CHECK(c.waiting == 0);
  CHECK(c.running == 0);
  CHECK(c.jobs == std::map<std::string, uint64_t>{{"partial", 1}});
}

}  // namespace
}  // namespace pororoca::daemon
