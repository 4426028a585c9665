#include "daemon/transfer.h"

#include <doctest/doctest.h>

namespace pororoca::daemon {
namespace {

using nlohmann::json;

TEST_CASE("every transfer state has one name that parses back to it") {
  for (auto s :
       {TransferState::kQueued, TransferState::kRunning, TransferState::kRetrying, TransferState::kSucceeded,
        TransferState::kPartial, TransferState::kFailed, TransferState::kCancelled}) {
    auto back = ParseTransferState(TransferStateName(s));
    REQUIRE(back.has_value());
    CHECK(*back == s);
  }
  CHECK_FALSE(ParseTransferState("done").has_value());
  CHECK(TransferStateName(TransferState::kRetrying) == "retrying");
  CHECK(IsTerminal(TransferState::kCancelled));
  CHECK(IsTerminal(TransferState::kPartial));
  CHECK(TransferStateName(TransferState::kPartial) == "partial");
  CHECK_FALSE(IsTerminal(TransferState::kRetrying));
}

TEST_CASE("Location parses local paths and ENDPOINT:/path, and refuses anything else") {
  auto l = Location::Parse("/data/x/");
  REQUIRE(l.ok());
  CHECK_FALSE(l->remote);
  CHECK(l->trailing_slash);
  auto r = Location::Parse("cenapad-dtn1:data");
  REQUIRE(r.ok());
  CHECK(r->remote);
  CHECK(r->endpoint == "cenapad-dtn1");
  CHECK(r->path == "/data");
  CHECK(Location::Parse("relative/path").error().code() == Code::kInvalidArgument);
  CHECK(Location::Parse(":/x").error().code() == Code::kInvalidArgument);
  CHECK(Location::Parse("").error().code() == Code::kInvalidArgument);
}

TEST_CASE("NewId gives 32 hex digits, different each time") {
  auto a = NewId(), b = NewId();
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(a->size() == 32);
  CHECK(a->find_first_not_of("0123456789abcdef") == std::string::npos);
  CHECK(*a != *b);
}

TEST_CASE("a transfer record written by Record() reads back with every field") {
  Transfer t;
  t.id = "0123456789abcdef0123456789abcdef";
  t.push = false;
  t.local_path = "/export/in/";
  t.remote.endpoint = "lncc-dtn1";
  t.remote.path = "/datasets/x/";
  t.recursive = true;
  t.options = json{{"streams", 4}, {"existing", "skip"}};
  t.uid = 1000;
  t.user = "alice@lncc";
  t.created_ms = 1234;
  {
    MutexLock lock(&t.mu);
    t.state = TransferState::kRetrying;
    t.attempts = 3;
    t.error = "peer: closed";
    t.error_code = "Unavailable";
    t.bytes_sent_prev = 99;
    t.first_resumed = 7;
    t.started_ms = 2000;
    t.failures = {{"a/b", "denied"}};
  }
  auto back = Transfer::FromRecord(t.Record());
  REQUIRE(back.ok());
  const Transfer& b = **back;
  CHECK(b.id == t.id);
  CHECK_FALSE(b.push);
  CHECK(b.local_path == "/export/in/");
  CHECK(b.local_trailing_slash);
  CHECK(b.remote.remote);
  CHECK(b.remote.endpoint == "lncc-dtn1");
  CHECK(b.remote.trailing_slash);
  CHECK(b.recursive);
  CHECK(b.options == t.options);
  CHECK(b.uid == 1000);
  CHECK(b.user == "alice@lncc");
  CHECK(b.created_ms == 1234);
  MutexLock lock(&b.mu);
  CHECK(b.state == TransferState::kRetrying);
  CHECK(b.attempts == 3);
  CHECK(b.error == "peer: closed");
  CHECK(b.error_code == "Unavailable");
  CHECK(b.bytes_sent_prev == 99);
  CHECK(b.first_resumed == 7);
  CHECK(b.started_ms == 2000);
  REQUIRE(b.failures.size() == 1);
  CHECK(b.failures[0].second == "denied");
}

TEST_CASE("the record on disk says a token was given but never holds the token") {
  Transfer t;
  t.id = "0123456789abcdef0123456789abcdef";
  t.token = "eyJhbGciOiJFZERTQSJ9.secret-claims.signature";
  t.token_given = true;
  const json rec = t.Record();
  CHECK(rec.dump().find("secret-claims") == std::string::npos);
  CHECK_FALSE(rec.contains("token"));
  CHECK(rec["token_given"] == true);
  auto back = Transfer::FromRecord(rec);
  REQUIRE(back.ok());
  CHECK((*back)->token.empty());
  CHECK((*back)->token_given);
}

TEST_CASE("a record with a field of the wrong type is refused naming the field") {
  Transfer t;
  t.id = "abc";
  json j = t.Record();
  SUBCASE("attempts") {
    j["attempts"] = "three";
    auto r = Transfer::FromRecord(j);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().message().find("attempts") != std::string_view::npos);
  }
  SUBCASE("state") {
    j["state"] = "finished";
    auto r = Transfer::FromRecord(j);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().message().find("state") != std::string_view::npos);
  }
  SUBCASE("direction") {
    j["direction"] = "sideways";
    auto r = Transfer::FromRecord(j);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().message().find("direction") != std::string_view::npos);
  }
  SUBCASE("failures") {
    j["failures"] = json::array({1});
    CHECK_FALSE(Transfer::FromRecord(j).ok());
  }
  SUBCASE("no id") {
    j.erase("id");
    CHECK_FALSE(Transfer::FromRecord(j).ok());
  }
  SUBCASE("not an object") { CHECK_FALSE(Transfer::FromRecord(json::array()).ok()); }
}

TEST_CASE("the API view leaves out the token and the uid, and shows source and destination") {
  Transfer t;
  t.id = "x";
  t.push = true;
  t.local_path = "/e/a";
  t.remote.endpoint = "peer";
  t.remote.path = "/b";
  t.token = "secret-token";
  json v = t.View();
  CHECK(v.dump().find("secret-token") == std::string::npos);
  CHECK_FALSE(v.contains("uid"));
  CHECK(v["source"] == "/e/a");
  CHECK(v["destination"] == "peer:/b");
  CHECK(v["state"] == "queued");
  CHECK(v["progress"].contains("bytes_sent_all_attempts"));
}

}  // namespace
}  // namespace pororoca::daemon
