// Policy decisions per second with a generated 1,000-rule policy: every transfer is evaluated at
// both ends, and a tree transfer may be evaluated once per file.
#include <benchmark/benchmark.h>

#include <nlohmann/json.hpp>
#include <string>

#include "policy/policy.h"

namespace {

using nlohmann::json;
using pororoca::policy::Decision;
using pororoca::policy::Direction;
using pororoca::policy::Policy;
using pororoca::policy::Request;

constexpr int kRules = 1000;
constexpr int kInstitutions = 50;
constexpr int64_t kNoon = 1714996800;  // Monday 2024-05-06 12:00 UTC

std::string Institution(int i) { return "inst" + std::to_string(i % kInstitutions); }

// 999 rules that do not match the benchmark request, then one allow rule for inst3 -> inst7 of
// /datasets. Spread: the rules name 50 institutions in varied pairs, with a few wildcard deny rules
// among them (the realistic shape; the index narrows the candidates). Same pair: every rule names
// inst3 -> inst7 and differs only in its paths, so all 1,000 are checked (the worst case).
json GenerateRules(bool same_pair) {
  json rules = json::array();
  for (int i = 0; i < kRules - 1; ++i) {
    json r = {{"id", "rule-" + std::to_string(i)}, {"effect", i % 5 == 0 ? "deny" : "allow"}};
    if (!same_pair && i % 97 == 0) {
      r["classifications"] = {"clinical"};  // source and destination "*"
    } else {
      r["source"] = {same_pair ? Institution(3) : Institution(i)};
      // i + 1 + i / 50: never the source, and every pair a few times over the policy.
      r["destination"] = {same_pair ? Institution(7) : Institution(i + 1 + i / kInstitutions)};
      r["source_paths"] = {"/project" + std::to_string(i) + "/", "/shared/p" + std::to_string(i)};
      r["destination_paths"] = {"/scratch/" + std::to_string(i)};
      r["classifications"] = {"public", "internal"};
      if (i % 3 == 0) {
        r["time_window"] = {{"days", {"mon", "tue", "wed", "thu", "fri"}},
                            {"start", "20:00"},
                            {"end", "06:00"},
                            {"utc_offset", "-03:00"}};
      }
      if (i % 5 != 0) r["rate_limit"] = "2Gbit/s";
    }
    rules.push_back(r);
  }
  rules.push_back({{"id", "datasets"},
                   {"effect", "allow"},
                   {"source", {Institution(3)}},
                   {"destination", {Institution(7)}},
                   {"source_paths", {"/datasets"}},
                   {"rate_limit", "500MiB/s"}});
  return rules;
}

Request MatchingRequest() {
  return Request{Institution(3),
                 Institution(7),
                 Direction::kPush,
                 "/datasets/run7/part-0001.h5",
                 "/scratch/job1/part-0001.h5",
                 "public",
                 kNoon};
}

Request UnmatchedRequest() {
  Request r = MatchingRequest();
  r.source_path = "/home/user/notes.txt";
  return r;
}

// Same pair: the worst case (see GenerateRules).
void BM_PolicyEvaluate(benchmark::State& state, bool same_pair, const Request& req, bool want_allowed) {
  Policy policy = *Policy::Parse(GenerateRules(same_pair));
  if (policy.Evaluate(req).allowed != want_allowed) {
    state.SkipWithError("the generated policy does not decide as intended");
    return;
  }
  for (auto _ : state) {
    Decision d = policy.Evaluate(req);
    benchmark::DoNotOptimize(d);
  }
  state.SetItemsProcessed(int64_t(state.iterations()));
}
BENCHMARK_CAPTURE(BM_PolicyEvaluate, 1000Rules_MatchNearEnd, false, MatchingRequest(), true);
BENCHMARK_CAPTURE(BM_PolicyEvaluate, 1000Rules_NoMatch, false, UnmatchedRequest(), false);
BENCHMARK_CAPTURE(BM_PolicyEvaluate, 1000RulesSamePair_MatchLast, true, MatchingRequest(), true);
BENCHMARK_CAPTURE(BM_PolicyEvaluate, 1000RulesSamePair_NoMatch, true, UnmatchedRequest(), false);

void BM_PolicyParse_1000Rules(benchmark::State& state) {
  json rules = GenerateRules(false);
  for (auto _ : state) {
    auto p = Policy::Parse(rules);
    benchmark::DoNotOptimize(p);
  }
  state.SetItemsProcessed(int64_t(state.iterations()) * kRules);
}
BENCHMARK(BM_PolicyParse_1000Rules);

}  // namespace
