#include "policy/policy.h"

#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace pororoca::policy {
namespace {

using nlohmann::json;

// Monday 2024-05-06 00:00 UTC.
constexpr int64_t kMonday = 1714953600;
enum Day { kMon, kTue, kWed, kThu, kFri, kSat, kSun };

// UTC time on a day of the week of 2024-05-06 ... 2024-05-12.
int64_t At(Day day, int hh, int mm) { return kMonday + int64_t(day) * 86400 + hh * 3600 + mm * 60; }

Policy MustParse(const std::string& rules) {
  Result<Policy> p = Policy::Parse(json::parse(rules));
  REQUIRE_MESSAGE(p.ok(), p.status().ToString());
  return std::move(p).value();
}

std::string ParseError(const std::string& rules) {
  Result<Policy> p = Policy::Parse(json::parse(rules));
  REQUIRE_FALSE(p.ok());
  CHECK(p.error().code() == Code::kInvalidArgument);
  return std::string(p.error().message());
}

Request Req(std::string src = "lncc", std::string dst = "gpucloud", Direction dir = Direction::kPush,
            std::string src_path = "/datasets/a", std::string dst_path = "/scratch/b",
            std::string label = "public", int64_t now = At(kMon, 12, 0)) {
  return Request{std::move(src),      std::move(dst),   dir, std::move(src_path),
                 std::move(dst_path), std::move(label), now};
}

// The rule that decides `req`, or "" for a deny by default.
std::string Winner(const Policy& p, const Request& req) { return p.Evaluate(req).rule_id; }

bool Allowed(const Policy& p, const Request& req) { return p.Evaluate(req).allowed; }

// Whether p allows a transfer a -> b at this UTC time (with no other condition in play).
bool AllowedAt(const Policy& p, Day day, int hh, int mm) {
  return Allowed(p, Req("a", "b", Direction::kPush, "/x", "/y", "public", At(day, hh, mm)));
}

}  // namespace

TEST_SUITE("policy.policy") {
  TEST_CASE("a direction's name parses back to that direction, and nothing else parses") {
    for (Direction d : {Direction::kPush, Direction::kPull}) {
      auto back = ParseDirection(DirectionName(d));
      REQUIRE(back.has_value());
      CHECK(*back == d);
    }
    CHECK(DirectionName(Direction::kPush) == "push");
    CHECK(DirectionName(Direction::kPull) == "pull");
    CHECK_FALSE(ParseDirection("any").has_value());
    CHECK_FALSE(ParseDirection("Push").has_value());
    CHECK_FALSE(ParseDirection("").has_value());
  }

  TEST_CASE("an empty policy denies by default and says what it denied") {
    Policy p;
    CHECK(p.size() == 0);
    Decision d = p.Evaluate(Req());
    CHECK_FALSE(d.allowed);
    CHECK(d.rule_id.empty());
    CHECK(d.reason ==
          "default deny: no rule allows lncc -> gpucloud push of /datasets/a -> /scratch/b (public)");
    CHECK(MustParse("[]").Evaluate(Req("a", "b", Direction::kPull, "/x", "/y", "")).reason ==
          "default deny: no rule allows a -> b pull of /x -> /y (unclassified)");
  }

  TEST_CASE("an allow rule names itself and carries its caps") {
    Policy p = MustParse(R"([{"id": "lncc-to-cloud", "effect": "allow", "source": ["lncc"],
                             "destination": ["gpucloud"], "rate_limit": "2Gbit/s", "max_concurrent": 4,
                             "comment": "training data"}])");
    CHECK(p.size() == 1);
    Decision d = p.Evaluate(Req());
    CHECK(d.allowed);
    CHECK(d.rule_id == "lncc-to-cloud");
    CHECK(d.reason == "allowed by rule 'lncc-to-cloud'");
    CHECK(d.rate_limit_bytes_per_s == 250'000'000);
    CHECK(d.max_concurrent == 4);
    CHECK(d.protection == Protection::kClear);  // no minimum unless the rule names one
  }

  TEST_CASE("an allow rule may require a protection level for the data connections") {
    Policy p = MustParse(R"([{"id": "health", "effect": "allow", "classifications": ["sensitive"],
                              "protection": "private"},
                             {"id": "pair", "effect": "allow", "source": ["lncc"], "protection": "integrity"},
                             {"id": "rest", "effect": "allow"}])");
    CHECK(p.Evaluate(Req("lncc", "gpucloud", Direction::kPush, "/a", "/b", "sensitive")).protection ==
          Protection::kPrivate);
    CHECK(p.Evaluate(Req("lncc", "gpucloud", Direction::kPush, "/a", "/b", "")).protection ==
          Protection::kIntegrity);
    CHECK(p.Evaluate(Req("sdumont", "gpucloud", Direction::kPush, "/a", "/b", "")).protection ==
          Protection::kClear);
  }

  TEST_CASE("source and destination institutions must both match") {
    Policy p = MustParse(R"([{"id": "r", "effect": "allow", "source": ["lncc", "sdumont"],
                             "destination": ["gpucloud"]}])");
    CHECK(Allowed(p, Req("lncc", "gpucloud")));
    CHECK(Allowed(p, Req("sdumont", "gpucloud")));
    CHECK_FALSE(Allowed(p, Req("cenapad", "gpucloud")));
    CHECK_FALSE(Allowed(p, Req("lncc", "sdumont")));
    CHECK_FALSE(Allowed(p, Req("gpucloud", "lncc")));  // a rule has a direction of flow
    CHECK_FALSE(Allowed(p, Req("", "")));
  }

  TEST_CASE("\"*\", a missing key and a single id") {
    SUBCASE("wildcard source") {
      Policy p = MustParse(R"([{"id": "r", "effect": "allow", "source": "*", "destination": ["gpucloud"]}])");
      CHECK(Allowed(p, Req("anyone", "gpucloud")));
      CHECK_FALSE(Allowed(p, Req("lncc", "other")));
    }
    SUBCASE("wildcard destination") {
      Policy p = MustParse(R"([{"id": "r", "effect": "allow", "source": ["lncc"], "destination": "*"}])");
      CHECK(Allowed(p, Req("lncc", "anywhere")));
      CHECK_FALSE(Allowed(p, Req("other", "gpucloud")));
    }
    SUBCASE("both keys missing means both wildcards") {
      Policy p = MustParse(R"([{"id": "r", "effect": "allow"}])");
      CHECK(Allowed(p, Req("x", "y")));
    }
    SUBCASE("a single id as a string") {
      Policy p =
          MustParse(R"([{"id": "r", "effect": "allow", "source": "lncc", "destination": "gpucloud"}])");
      CHECK(Allowed(p, Req("lncc", "gpucloud")));
      CHECK_FALSE(Allowed(p, Req("lncc", "other")));
    }
  }

  TEST_CASE("direction push, pull and any") {
    Policy push = MustParse(R"([{"id": "r", "effect": "allow", "direction": "push"}])");
    Policy pull = MustParse(R"([{"id": "r", "effect": "allow", "direction": "pull"}])");
    Policy any = MustParse(R"([{"id": "r", "effect": "allow", "direction": "any"}])");
    Request pushed = Req("a", "b", Direction::kPush);
    Request pulled = Req("a", "b", Direction::kPull);
    CHECK(Allowed(push, pushed));
    CHECK_FALSE(Allowed(push, pulled));
    CHECK(Allowed(pull, pulled));
    CHECK_FALSE(Allowed(pull, pushed));
    CHECK(Allowed(any, pushed));
    CHECK(Allowed(any, pulled));
  }

  TEST_CASE("source path prefixes stop at component boundaries") {
    Policy p = MustParse(R"([{"id": "r", "effect": "allow", "source_paths": ["/data", "/archive/"]}])");
    auto src = [&](const std::string& path) {
      return Allowed(p, Req("a", "b", Direction::kPush, path, "/x"));
    };
    CHECK(src("/data"));
    CHECK(src("/data/x"));
    CHECK(src("/data/x/y.bin"));
    CHECK_FALSE(src("/database"));
    CHECK_FALSE(src("/database/x"));
    CHECK_FALSE(src("/dat"));
    CHECK_FALSE(src("/"));
    CHECK(src("/archive"));  // "/archive/" is the directory /archive
    CHECK(src("/archive/2020"));
    CHECK_FALSE(src("/archives"));
    CHECK_FALSE(src("/other/data"));
  }

  TEST_CASE("destination path prefixes stop at component boundaries") {
    Policy p = MustParse(R"([{"id": "r", "effect": "allow", "destination_paths": ["/scratch/"]}])");
    auto dst = [&](const std::string& path) {
      return Allowed(p, Req("a", "b", Direction::kPush, "/x", path));
    };
    CHECK(dst("/scratch"));
    CHECK(dst("/scratch/job1/in"));
    CHECK_FALSE(dst("/scratchpad"));
    CHECK_FALSE(dst("/home/a"));
    // Source and destination prefixes are separate conditions.
    CHECK_FALSE(Allowed(p, Req("a", "b", Direction::kPush, "/scratch/x", "/home/a")));
  }

  TEST_CASE("the root prefix covers every path") {
    Policy p = MustParse(R"([{"id": "r", "effect": "allow", "source_paths": ["/"]}])");
    CHECK(Allowed(p, Req("a", "b", Direction::kPush, "/", "/x")));
    CHECK(Allowed(p, Req("a", "b", Direction::kPush, "/any/thing", "/x")));
  }

  TEST_CASE("request paths are export paths in any spelling, but never with . or ..") {
    Policy p = MustParse(R"([{"id": "r", "effect": "allow", "source_paths": ["/data"],
                             "destination_paths": ["/"]}])");
    auto src = [&](const std::string& path) { return p.Evaluate(Req("a", "b", Direction::kPush, path, "")); };
    CHECK(src("data/x").allowed);  // root-relative, as ExportRoot::Normalize gives it
    CHECK(src("//data//x/").allowed);
    CHECK(src("/data/").allowed);
    CHECK_FALSE(src("/database//").allowed);
    CHECK(src("/data/x").reason == "allowed by rule 'r'");

    Decision up = src("/data/../etc/passwd");
    CHECK_FALSE(up.allowed);
    CHECK(up.rule_id.empty());
    CHECK(up.reason == "denied: source path '/data/../etc/passwd' has a '.' or '..' component or a NUL byte");
    CHECK_FALSE(src("/data/./x").allowed);
    CHECK_FALSE(src(std::string("/data/x\0y", 9)).allowed);
    Decision dst = p.Evaluate(Req("a", "b", Direction::kPush, "/data/x", "/scratch/.."));
    CHECK_FALSE(dst.allowed);
    CHECK(dst.reason == "denied: destination path '/scratch/..' has a '.' or '..' component or a NUL byte");
    // The default deny shows the canonical paths.
    CHECK(p.Evaluate(Req("a", "b", Direction::kPush, "x//y/", "")).reason ==
          "default deny: no rule allows a -> b push of /x/y -> / (public)");
  }

  TEST_CASE("classification labels") {
    Policy p = MustParse(R"([{"id": "r", "effect": "allow", "classifications": ["public", "internal"]}])");
    auto label = [&](const std::string& l) {
      return Allowed(p, Req("a", "b", Direction::kPush, "/x", "/y", l));
    };
    CHECK(label("public"));
    CHECK(label("internal"));
    CHECK_FALSE(label("clinical"));
    CHECK_FALSE(label("Public"));
    CHECK_FALSE(label(""));  // empty is "unclassified"
    Policy u = MustParse(R"([{"id": "r", "effect": "allow", "classifications": ["unclassified"]}])");
    CHECK(Allowed(u, Req("a", "b", Direction::kPush, "/x", "/y", "")));
  }

  TEST_CASE("a time window within one day: start included, end excluded") {
    Policy p = MustParse(R"([{"id": "r", "effect": "allow",
                             "time_window": {"start": "09:00", "end": "17:30"}}])");
    CHECK_FALSE(AllowedAt(p, kMon, 8, 59));
    CHECK(AllowedAt(p, kMon, 9, 0));
    CHECK(AllowedAt(p, kSun, 17, 29));  // no days: every day
    CHECK_FALSE(AllowedAt(p, kMon, 17, 30));
    CHECK_FALSE(AllowedAt(p, kMon, 23, 0));
  }

  TEST_CASE("a night window wraps past midnight and belongs to the day it starts") {
    Policy p = MustParse(R"([{"id": "night", "effect": "allow",
                             "time_window": {"days": ["mon", "tue", "wed", "thu", "fri"],
                                             "start": "20:00", "end": "06:00"}}])");
    CHECK_FALSE(AllowedAt(p, kMon, 19, 59));
    CHECK(AllowedAt(p, kMon, 20, 0));
    CHECK(AllowedAt(p, kMon, 23, 59));
    CHECK(AllowedAt(p, kTue, 0, 0));
    CHECK(AllowedAt(p, kTue, 5, 59));
    CHECK_FALSE(AllowedAt(p, kTue, 6, 0));
    CHECK_FALSE(AllowedAt(p, kTue, 12, 0));
    CHECK(AllowedAt(p, kFri, 23, 0));
    CHECK(AllowedAt(p, kSat, 5, 59));  // Friday's window
    CHECK_FALSE(AllowedAt(p, kSat, 21, 0));
    CHECK_FALSE(AllowedAt(p, kSun, 22, 0));
    CHECK_FALSE(AllowedAt(p, kMon, 5, 0));  // would be Sunday's window
  }

  TEST_CASE("days alone select whole days") {
    Policy p =
        MustParse(R"([{"id": "weekend", "effect": "allow", "time_window": {"days": ["SAT", "sun"]}}])");
    CHECK_FALSE(AllowedAt(p, kFri, 23, 59));
    CHECK(AllowedAt(p, kSat, 0, 0));
    CHECK(AllowedAt(p, kSun, 23, 59));
    CHECK_FALSE(AllowedAt(p, kMon, 0, 0));
    CHECK_FALSE(AllowedAt(p, kWed, 12, 0));
  }

  TEST_CASE("utc_offset shifts the window and the day of week") {
    Policy p = MustParse(R"([{"id": "r", "effect": "allow",
                             "time_window": {"days": ["mon"], "start": "20:00", "end": "23:00",
                                             "utc_offset": "-03:00"}}])");
    CHECK_FALSE(AllowedAt(p, kMon, 20, 30));  // 17:30 local
    CHECK(AllowedAt(p, kMon, 23, 0));         // 20:00 local
    CHECK(AllowedAt(p, kTue, 1, 59));         // Monday 22:59 local
    CHECK_FALSE(AllowedAt(p, kTue, 2, 0));    // Monday 23:00 local
    Policy east = MustParse(R"([{"id": "r", "effect": "allow",
                                "time_window": {"days": ["tue"], "utc_offset": "+05:30"}}])");
    CHECK_FALSE(AllowedAt(east, kMon, 18, 29));  // Monday 23:59 local
    CHECK(AllowedAt(east, kMon, 18, 30));        // Tuesday 00:00 local
    CHECK(AllowedAt(east, kTue, 18, 29));
    CHECK_FALSE(AllowedAt(east, kTue, 18, 30));
  }

  TEST_CASE("end 24:00 runs to midnight") {
    Policy p =
        MustParse(R"([{"id": "r", "effect": "allow", "time_window": {"start": "18:00", "end": "24:00"}}])");
    CHECK(AllowedAt(p, kWed, 23, 59));
    CHECK_FALSE(AllowedAt(p, kThu, 0, 0));
  }

  TEST_CASE("the first matching rule decides, deny or allow") {
    Policy p = MustParse(R"([
      {"id": "no-clinical-out", "effect": "deny", "source": ["lncc"], "classifications": ["clinical"]},
      {"id": "lncc-out", "effect": "allow", "source": ["lncc"]},
      {"id": "never-reached", "effect": "deny", "source": ["lncc"]}])");
    Decision clinical = p.Evaluate(Req("lncc", "gpucloud", Direction::kPush, "/x", "/y", "clinical"));
    CHECK_FALSE(clinical.allowed);
    CHECK(clinical.rule_id == "no-clinical-out");
    CHECK(clinical.reason == "denied by rule 'no-clinical-out'");
    Decision pub = p.Evaluate(Req("lncc", "gpucloud", Direction::kPush, "/x", "/y", "public"));
    CHECK(pub.allowed);
    CHECK(pub.rule_id == "lncc-out");

    Policy reversed = MustParse(R"([
      {"id": "lncc-out", "effect": "allow", "source": ["lncc"]},
      {"id": "no-clinical-out", "effect": "deny", "source": ["lncc"], "classifications": ["clinical"]}])");
    CHECK(Winner(reversed, Req("lncc", "gpucloud", Direction::kPush, "/x", "/y", "clinical")) == "lncc-out");
  }

  TEST_CASE("a deny rule carries no caps") {
    Policy p = MustParse(R"([{"id": "d", "effect": "deny"}])");
    Decision d = p.Evaluate(Req());
    CHECK_FALSE(d.allowed);
    CHECK(d.rule_id == "d");
    CHECK(d.rate_limit_bytes_per_s == 0);
    CHECK(d.max_concurrent == 0);
  }

  TEST_CASE("policy order holds across pair, source, destination and wildcard rules") {
    // Each rule sits in a different index list; every one matches lncc -> gpucloud.
    const char* kinds[] = {
        R"({"id": "%", "effect": "allow", "source": ["lncc"], "destination": ["gpucloud"]})",
        R"({"id": "%", "effect": "allow", "source": ["lncc"]})",
        R"({"id": "%", "effect": "allow", "destination": ["gpucloud"]})",
        R"({"id": "%", "effect": "allow"})",
    };
    for (int first = 0; first < 4; ++first) {
      CAPTURE(first);
      // The `first` kind goes first with a path condition that fails, then all four in turn
      // starting after it: the winner is the earliest in the array that matches.
      json rules = json::array();
      json failing = json::parse(std::string(kinds[first]));
      failing["id"] = "failing";
      failing["source_paths"] = {"/nowhere"};
      rules.push_back(failing);
      for (int k = 0; k < 4; ++k) {
        json r = json::parse(std::string(kinds[(first + 1 + k) % 4]));
        r["id"] = "rule" + std::to_string(k);
        rules.push_back(r);
      }
      Result<Policy> p = Policy::Parse(rules);
      REQUIRE(p.ok());
      CHECK(Winner(*p, Req()) == "rule0");
      CHECK(Winner(*p, Req("lncc", "gpucloud", Direction::kPush, "/nowhere/x")) == "failing");
    }
  }

  TEST_CASE("long institution lists are matched exactly") {
    // 20 x 20 pairs: beyond what is indexed pair by pair.
    json src = json::array(), dst = json::array();
    for (int i = 0; i < 20; ++i) {
      src.push_back("s" + std::to_string(i));
      dst.push_back("d" + std::to_string(i));
    }
    json rules = json::array({{{"id", "wide"}, {"effect", "allow"}, {"source", src}, {"destination", dst}}});
    Result<Policy> p = Policy::Parse(rules);
    REQUIRE(p.ok());
    CHECK(Winner(*p, Req("s7", "d19")) == "wide");
    CHECK(Winner(*p, Req("s0", "d0")) == "wide");
    CHECK(Winner(*p, Req("s7", "s8")).empty());
    CHECK(Winner(*p, Req("d7", "d8")).empty());
    CHECK(Winner(*p, Req("s7", "x")).empty());
  }

  TEST_CASE("copies share the rules and stay valid") {
    Policy copy;
    {
      Policy p = MustParse(R"([{"id": "r", "effect": "allow"}])");
      copy = p;
    }
    CHECK(copy.size() == 1);
    CHECK(Allowed(copy, Req()));
  }

  TEST_CASE("Explain gives every failed condition of the rules for the pair") {
    Policy p = MustParse(R"([
      {"id": "other-pair", "effect": "allow", "source": ["sdumont"], "destination": ["gpucloud"]},
      {"id": "night", "effect": "allow", "source": ["lncc"], "destination": ["gpucloud"], "direction": "push",
       "source_paths": ["/datasets/"], "destination_paths": ["/scratch/", "/tmp/"],
       "classifications": ["public", "internal"],
       "time_window": {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "20:00", "end": "06:00",
                       "utc_offset": "-03:00"}},
      {"id": "home", "effect": "allow", "source": "*", "destination": ["gpucloud"],
       "destination_paths": ["/home"]},
      {"id": "after", "effect": "deny"}])");
    Request req =
        Req("lncc", "gpucloud", Direction::kPull, "/other/a", "/home/a", "clinical", At(kSat, 17, 3));
    std::vector<std::string> lines = p.Explain(req);
    REQUIRE(lines.size() == 2);
    CHECK(lines[0] ==
          "rule 'night': direction is pull, the rule is for push only; source path /other/a is not under "
          "/datasets/; destination path /home/a is not under /scratch/ or /tmp/; classification 'clinical' "
          "is not "
          "one of public, internal; Sat 14:03 UTC-03:00 is outside the time window mon,tue,wed,thu,fri "
          "20:00-06:00 UTC-03:00");
    CHECK(lines[1] == "rule 'home' matches and allows");
    CHECK(p.Evaluate(req).rule_id == "home");

    Request nothing =
        Req("lncc", "gpucloud", Direction::kPush, "/datasets/x", "/elsewhere", "public", At(kMon, 23, 30));
    lines = p.Explain(nothing);
    REQUIRE(lines.size() == 3);
    CHECK(lines[0] == "rule 'night': destination path /elsewhere is not under /scratch/ or /tmp/");
    CHECK(lines[1] == "rule 'home': destination path /elsewhere is not under /home");
    CHECK(lines[2] == "rule 'after' matches and denies");

    Policy narrow = MustParse(R"([{"id": "x", "effect": "allow", "source": ["a"], "destination": ["b"]},
                                  {"id": "y", "effect": "allow", "source": ["c"]}])");
    CHECK(narrow.Explain(Req("lncc", "gpucloud")) ==
          std::vector<std::string>{"none of the 2 rules applies to lncc -> gpucloud"});
    CHECK(narrow.Explain(Req("a", "b", Direction::kPush, "/..", "/")) ==
          std::vector<std::string>{"denied: source path '/..' has a '.' or '..' component or a NUL byte"});
    Policy days = MustParse(R"([{"id": "w", "effect": "allow", "time_window": {"days": ["sat"]}}])");
    CHECK(days.Explain(Req("a", "b", Direction::kPush, "/", "/", "", At(kMon, 0, 0))) ==
          std::vector<std::string>{
              "rule 'w': Mon 00:00 UTC+00:00 is outside the time window sat all day UTC+00:00"});
  }

  TEST_CASE("parse errors name the rule, the field and the fault") {
    struct Case {
      const char* rules;
      const char* message;
    };
    const Case cases[] = {
        {R"({"rules": []})", "policy.rules: expected an array of rules"},
        {R"([3])", "policy rule 0: expected an object"},
        {R"([{"effect": "allow"}])", "policy rule 0: id: missing"},
        {R"([{"id": "bad id", "effect": "allow"}])",
         "policy rule 0: id: 'bad id' is not 1-64 characters of [A-Za-z0-9._-]"},
        {R"([{"id": 7, "effect": "allow"}])",
         "policy rule 0: id: this is not 1-64 characters of [A-Za-z0-9._-]"},
        {R"([{"id": "a", "effect": "allow"}, {"id": "b", "effect": "allow"}, {"id": "a", "effect": "deny"}])",
         "policy rule 2 ('a'): id: already used by rule 0"},
        {R"([{"id": "x"}])", "policy rule 0 ('x'): effect: missing (\"allow\" or \"deny\")"},
        {R"([{"id": "x", "effect": "permit"}])",
         "policy rule 0 ('x'): effect: expected \"allow\" or \"deny\""},
        {R"([{"id": "x", "effect": "allow", "sorce": ["a"]}])", "policy rule 0 ('x'): unknown key 'sorce'"},
        {R"([{"id": "x", "effect": "allow", "source": []}])",
         "policy rule 0 ('x'): source: expected \"*\" or a non-empty array of institution ids"},
        {R"([{"id": "x", "effect": "allow", "destination": ["ok", "not ok"]}])",
         "policy rule 0 ('x'): destination[1]: expected an institution id (1-64 characters of "
         "[A-Za-z0-9._-]), "
         "not 'not ok'"},
        {R"([{"id": "x", "effect": "allow", "source": ["*"]}])",
         "policy rule 0 ('x'): source[0]: expected an institution id (1-64 characters of [A-Za-z0-9._-]), "
         "not '*'"},
        {R"([{"id": "x", "effect": "allow", "direction": "both"}])",
         "policy rule 0 ('x'): direction: expected \"push\", \"pull\" or \"any\""},
        {R"([{"id": "x", "effect": "allow", "source_paths": "/data"}])",
         "policy rule 0 ('x'): source_paths: expected a non-empty array of path prefixes"},
        {R"([{"id": "x", "effect": "allow", "source_paths": ["data"]}])",
         "policy rule 0 ('x'): source_paths[0]: 'data' is not an absolute path"},
        {R"([{"id": "x", "effect": "allow", "destination_paths": ["/a", "/a/../b"]}])",
         "policy rule 0 ('x'): destination_paths[1]: '/a/../b' has a '.' or '..' component"},
        {R"([{"id": "x", "effect": "allow", "classifications": ["public", ""]}])",
         "policy rule 0 ('x'): classifications[1]: expected a label (a non-empty string)"},
        {R"([{"id": "x", "effect": "allow", "time_window": "night"}])",
         "policy rule 0 ('x'): time_window: expected an object"},
        {R"([{"id": "x", "effect": "allow", "time_window": {"start": "8:00", "end": "17:00"}}])",
         "policy rule 0 ('x'): time_window.start: expected HH:MM"},
        {R"([{"id": "x", "effect": "allow", "time_window": {"start": "24:00", "end": "17:00"}}])",
         "policy rule 0 ('x'): time_window.start: expected HH:MM"},
        {R"([{"id": "x", "effect": "allow", "time_window": {"start": "08:00", "end": "17:60"}}])",
         "policy rule 0 ('x'): time_window.end: expected HH:MM (00:00 to 24:00)"},
        {R"([{"id": "x", "effect": "allow", "time_window": {"start": "08:00"}}])",
         "policy rule 0 ('x'): time_window.end: missing (start and end go together)"},
        {R"([{"id": "x", "effect": "allow",)"
         R"("time_window": {"start": "00:00", "end": "24:00", "days": ["fri", 1]}}])",
         "policy rule 0 ('x'): time_window.days[1]: expected one of mon, tue, wed, thu, fri, sat, sun"},
        {R"([{"id": "x", "effect": "allow", "time_window": {"days": []}}])",
         "policy rule 0 ('x'): time_window.days: expected a non-empty array of days (\"mon\"..\"sun\")"},
        {R"([{"id": "x", "effect": "allow", "time_window": {"start": "06:00", "end": "06:00"}}])",
         "policy rule 0 ('x'): time_window: start and end are equal; leave both out for whole days"},
        {R"([{"id": "x", "effect": "allow", "time_window": {"utc_offset": "-3"}}])",
         "policy rule 0 ('x'): time_window.utc_offset: expected +HH:MM or -HH:MM (at most 14:00)"},
        {R"([{"id": "x", "effect": "allow", "time_window": {"utc_offset": "+15:00"}}])",
         "policy rule 0 ('x'): time_window.utc_offset: expected +HH:MM or -HH:MM (at most 14:00)"},
        {R"([{"id": "x", "effect": "allow", "time_window": {"tz": "America/Sao_Paulo"}}])",
         "policy rule 0 ('x'): time_window: unknown key 'tz'"},
        {R"([{"id": "x", "effect": "allow", "rate_limit": "2Gb/s"}])",
         "policy rule 0 ('x'): rate_limit: rate '2Gb/s': unknown unit 'Gb/s' (bit/s, kbit/s, Mbit/s, Gbit/s, "
         "Tbit/s, B/s, KB/s, MB/s, GB/s, TB/s, KiB/s, MiB/s, GiB/s, TiB/s)"},
        {R"([{"id": "x", "effect": "allow", "rate_limit": 0}])",
         "policy rule 0 ('x'): rate_limit: expected a positive rate"},
        {R"([{"id": "x", "effect": "allow", "rate_limit": 1.5}])",
         "policy rule 0 ('x'): rate_limit: expected a rate such as \"2Gbit/s\" or an integer in bytes/s"},
        {R"([{"id": "x", "effect": "allow", "max_concurrent": 0}])",
         "policy rule 0 ('x'): max_concurrent: expected an integer from 1 to 1000000"},
        {R"([{"id": "x", "effect": "allow", "max_concurrent": "4"}])",
         "policy rule 0 ('x'): max_concurrent: expected an integer from 1 to 1000000"},
        {R"([{"id": "x", "effect": "deny", "rate_limit": "1MB/s"}])",
         "policy rule 0 ('x'): rate_limit: only an allow rule can have one"},
        {R"([{"id": "x", "effect": "deny", "max_concurrent": 2}])",
         "policy rule 0 ('x'): max_concurrent: only an allow rule can have one"},
        {R"([{"id": "x", "effect": "deny", "protection": "private"}])",
         "policy rule 0 ('x'): protection: only an allow rule can have one"},
        {R"([{"id": "x", "effect": "allow", "protection": "encrypted"}])",
         "policy rule 0 ('x'): protection: expected \"clear\", \"integrity\" or \"private\""},
        {R"([{"id": "x", "effect": "allow", "protection": 2}])",
         "policy rule 0 ('x'): protection: expected \"clear\", \"integrity\" or \"private\""},
        {R"([{"id": "x", "effect": "allow", "comment": 5}])",
         "policy rule 0 ('x'): comment: expected a string"},
        {R"([{"id": "ok", "effect": "allow"},)"
         R"({"id": "x", "effect": "allow", "time_window": {"end": "05:00"}}])",
         "policy rule 1 ('x'): time_window.start: missing (start and end go together)"},
    };
    for (const Case& c : cases) {
      CAPTURE(c.rules);
      CHECK(ParseError(c.rules) == c.message);
    }
  }

  TEST_CASE("integer rates are bytes per second") {
    Policy p = MustParse(R"([{"id": "x", "effect": "allow", "rate_limit": 1000000}])");
    CHECK(p.Evaluate(Req()).rate_limit_bytes_per_s == 1000000);
  }

  TEST_CASE("Parse does not throw on any JSON") {
    for (const char* text : {"null", "1", "\"x\"", "{}", "[null]", "[[]]", R"([{"id": {}}])",
                             R"([{"id": "x", "effect": "allow", "source": [1, 2]}])",
                             R"([{"id": "x", "effect": "allow", "max_concurrent": -1}])",
                             R"([{"id": "x", "effect": "allow", "max_concurrent": 1e300}])",
                             R"([{"id": "x", "effect": "allow", "rate_limit": -5}])",
                             R"([{"id": "x", "effect": "allow", "rate_limit": 18446744073709551615}])",
                             R"([{"id": "x", "effect": "allow", "direction": null}])",
                             R"([{"id": "x", "effect": "allow", "time_window": {"days": "mon"}}])"}) {
      CAPTURE(text);
      Result<Policy> p = Policy::Parse(json::parse(text));
      if (std::string(text).find("18446744073709551615") != std::string::npos) {
        CHECK(p.ok());
      } else {
        CHECK_FALSE(p.ok());
      }
    }
  }
}

TEST_SUITE("policy.classifier") {
  TEST_CASE("the longest prefix on a component boundary gives the label") {
    Classifier c({{"/data", "internal"}, {"/data/clinical/", "clinical"}, {"/data/public", "public"}});
    CHECK(c.LabelFor("/data/x") == "internal");
    CHECK(c.LabelFor("/data") == "internal");
    CHECK(c.LabelFor("/data/clinical") == "clinical");
    CHECK(c.LabelFor("/data/clinical/p1/scan.dcm") == "clinical");
    CHECK(c.LabelFor("/data/clinicalish") == "internal");
    CHECK(c.LabelFor("/data/public/a") == "public");
    CHECK(c.LabelFor("/database") == "unclassified");
    CHECK(c.LabelFor("/other") == "unclassified");
    CHECK(c.LabelFor("data/clinical/x") == "clinical");  // root-relative spelling
    CHECK(c.LabelFor("//data//clinical/") == "clinical");
  }

  TEST_CASE("a root prefix sets the default, and paths with . or .. are unclassified") {
    Classifier c({{"/", "internal"}, {"/pub", "public"}});
    CHECK(c.LabelFor("/anything") == "internal");
    CHECK(c.LabelFor("") == "internal");
    CHECK(c.LabelFor("/pub/x") == "public");
    CHECK(c.LabelFor("/pub/../secret") == "unclassified");
    CHECK(Classifier().LabelFor("/x") == "unclassified");
  }

  TEST_CASE("of equal prefixes the first wins") {
    Classifier c({{"/a/", "first"}, {"/a", "second"}});
    CHECK(c.LabelFor("/a/b") == "first");
  }
}

}  // namespace pororoca::policy
