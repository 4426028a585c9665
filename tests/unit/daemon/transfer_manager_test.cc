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

TransferState StateOf(Transfer& t) {
  MutexLock lock(&t.mu);
  return t.state;
}
unsigned AttemptsOf(Transfer& t) {
  MutexLock lock(&t.mu);
  return t.attempts;
}

json ReadRecord(const std::string& path) {
  std::ifstream in(path);
  return json::parse(in, nullptr, false);
}

struct Fixture {
  test::TempDir dir;
  WorkerSet workers;
  TransferManager::Options Opts() {
    TransferManager::Options o;
    o.dir = dir / "transfers";
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
  REQUIRE(m.Submit(t).ok());
  m.WaitEnded(*t, std::chrono::seconds(10));
  CHECK(StateOf(*t) == TransferState::kSucceeded);
  CHECK(AttemptsOf(*t) == 1);
  workers.JoinAll();
  json rec = ReadRecord(dir / "transfers/t1.json");
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
  REQUIRE(m.Submit(t).ok());
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
    REQUIRE(m.Submit(t).ok());
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
    REQUIRE(m.Submit(t).ok());
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
Result<json> EndWithFailures(Transfer& t, uint64_t failed, uint64_t retryable, uint64_t corrupt) {
  auto stats = std::make_shared<engine::TransferStats>();
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
    REQUIRE(m.Submit(t).ok());
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
    REQUIRE(m.Submit(t).ok());
    m.WaitEnded(*t, std::chrono::seconds(10));
    CHECK(StateOf(*t) == TransferState::kFailed);
    CHECK(calls.load() == 1);
  }
  SUBCASE("a path that stays bad spends the retry budget, then the transfer fails saying why") {
    std::atomic<int> calls{0};
    TransferManager m(
        Opts(), [&](Transfer& t) -> Result<json> { return calls++, EndWithFailures(t, 1, 1, 17); }, &workers);
    REQUIRE(m.Open().ok());
    auto t = NewTransfer("c3");
    REQUIRE(m.Submit(t).ok());
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
  REQUIRE(m.Submit(t).ok());
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
  REQUIRE(m.Submit(t).ok());
  for (int i = 0; i < 500 && StateOf(*t) != TransferState::kRetrying; ++i)
    std::this_thread::sleep_for(milliseconds(10));
  REQUIRE(StateOf(*t) == TransferState::kRetrying);
  auto c = m.Cancel("t6");
  REQUIRE(c.has_value());
  m.WaitEnded(*t, std::chrono::seconds(10));
  CHECK(StateOf(*t) == TransferState::kCancelled);
  workers.JoinAll();
  CHECK(calls.load() == 1);
  CHECK(ReadRecord(dir / "transfers/t6.json")["state"] == "cancelled");
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
    REQUIRE(m.Submit(NewTransfer("t7")).ok());
    for (int i = 0; i < 500 && !entered; ++i) std::this_thread::sleep_for(milliseconds(10));
    REQUIRE(entered.load());
    m.Stop();
    workers.JoinAll();
  }
  CHECK(ReadRecord(dir / "transfers/t7.json")["state"] == "running");
  std::atomic<int> resumed{0};
  TransferManager m2(
      Opts(),
      [&](Transfer&) -> Result<json> {
        resumed++;
        return json::object();
      },
      &workers);
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
  m.LoadPersisted();
  auto found = m.Find("tok1");
  REQUIRE(found.has_value());
  CHECK(StateOf(**found) == TransferState::kFailed);
  {
    MutexLock lock(&(*found)->mu);
    CHECK((*found)->error.find("run the same command again with its --token") != std::string::npos);
    CHECK((*found)->error_code == "Unauthenticated");
  }
  CHECK(ReadRecord(dir / "transfers/tok1.json")["state"] == "failed");
  auto t2 = m.Find("tok2");
  REQUIRE(t2.has_value());
  m.WaitEnded(**t2, std::chrono::seconds(10));
  CHECK(StateOf(**t2) == TransferState::kSucceeded);
  CHECK(attempts.load() == 1);  // tok2 only
  {
    std::lock_guard<std::mutex> lock(seen_mu);
    CHECK(seen_token == "old-token-xyz");
  }
  std::ifstream in(dir / "transfers/tok2.json");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK(text.find("old-token-xyz") == std::string::npos);
  CHECK(text.find("\"token_given\": true") != std::string::npos);
}

TEST_CASE_FIXTURE(Fixture, "the start-up scan skips malformed records and deletes expired finished ones") {
  auto o = Opts();
  o.keep_finished_s = 60;
  TransferManager m(
      o, [](Transfer&) -> Result<json> { return json::object(); }, &workers);
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
  auto r = m.Find("recent");
  REQUIRE(r.has_value());
  CHECK(StateOf(**r) == TransferState::kFailed);  // a finished transfer is not run again
  CHECK(m.List().size() == 1);
}

TEST_CASE_FIXTURE(Fixture, "a transfer is found by its id or by a prefix that only it has") {
  TransferManager m(
      Opts(), [](Transfer&) -> Result<json> { return json::object(); }, &workers);
  REQUIRE(m.Open().ok());
  REQUIRE(m.Submit(NewTransfer("ab12")).ok());
  REQUIRE(m.Submit(NewTransfer("ab34")).ok());
  REQUIRE(m.Submit(NewTransfer("cd56")).ok());
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

}  // namespace
}  // namespace pororoca::daemon
