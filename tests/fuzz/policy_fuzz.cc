// libFuzzer target: the policy parser and evaluator, and ParseRate, on arbitrary bytes. Parse must
// never throw or crash, and whatever it accepts must evaluate and explain a request.
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fuzz/fuzz_check.h"
#include "policy/policy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using pororoca::policy::Policy;
  using pororoca::policy::Request;
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  pororoca::policy::ParseRate(text).status().IgnoreError();

  const nlohmann::json rules = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (rules.is_discarded()) return 0;
  pororoca::Result<Policy> policy = Policy::Parse(rules);
  if (!policy.ok()) return 0;

  static const Request kRequests[] = {
      {"lncc", "gpucloud", pororoca::policy::Direction::kPush, "/datasets/a/b", "/scratch/x", "public",
       1714996800},
      {"a", "b", pororoca::policy::Direction::kPull, "", "rel/path//", "", -1},
  };
  for (const Request& req : kRequests) {
    pororoca::policy::Decision d = policy->Evaluate(req);
    REQUIRE_INVARIANT(!d.allowed || !d.rule_id.empty());  // an allow always names its rule
    REQUIRE_INVARIANT(!d.reason.empty());                 // every decision says why
    REQUIRE_INVARIANT(d.allowed || (d.rate_limit_bytes_per_s == 0 && d.max_concurrent == 0));
    pororoca::policy::Decision again = policy->Evaluate(req);  // evaluation is a pure function
    REQUIRE_INVARIANT(again.allowed == d.allowed && again.rule_id == d.rule_id);
    (void)policy->Explain(req);
  }
  // The type spelled out: with a single pair, gcc finds the braces ambiguous with the copy constructor.
  using Labels = std::vector<std::pair<std::string, std::string>>;
  pororoca::policy::Classifier(Labels{{"/datasets", "public"}}).LabelFor(text);
  return 0;
}
