// The inter-institution transfer policy (docs/policy.md).
//
// The federation manifest carries an ordered list of rules ("policy.rules"). Both daemons of a
// transfer evaluate it before any byte is written: the first rule whose every condition matches
// decides, allow or deny, and no match is a deny ("default deny"). A Decision names the rule that
// made it and says why in words meant for a user and for the audit log.
//
// Paths are export paths: "/a/b" names the file a/b under the endpoint's export root; "a/b" (what
// engine::ExportRoot::Normalize returns) names the same file, and "" and "/" the root. A request
// path with a "." or ".." component is denied whatever the rules say.
//
// Thread-safety: a Policy is immutable once parsed. Evaluate and Explain may run on any number of
// threads at once; copies share the compiled rules, so installing the policy of a newer manifest is
// one assignment (under the caller's lock). Classifier likewise. rate_limit.h has the thread-safe
// token buckets and concurrency slots that enforce a Decision's caps.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "policy/rate_limit.h"
#include "pororoca/protection.h"
#include "pororoca/status.h"

namespace pororoca::policy {

// push: the source's daemon initiated the transfer; pull: the destination's did.
enum class Direction : uint8_t { kPush, kPull };

// The one spelling of a direction, on the wire, in records and in policy rules: "push", "pull".
std::string_view DirectionName(Direction d);
// The direction DirectionName spells `name`; nullopt for anything else.
std::optional<Direction> ParseDirection(std::string_view name);

// The label of data that no classifier prefix covers, and of a request with an empty label.
inline constexpr std::string_view kUnclassified = "unclassified";

struct Request {
  std::string source_institution;       // where the data comes from
  std::string destination_institution;  // where it goes
  Direction direction = Direction::kPush;
  std::string source_path;       // export path on the source endpoint
  std::string destination_path;  // export path on the destination endpoint
  // The source endpoint's label for source_path (Classifier::LabelFor); "" means "unclassified".
  std::string classification;
  int64_t now_unix = 0;  // seconds since the epoch, for time windows
};

struct Decision {
  bool allowed = false;
  std::string rule_id;  // the deciding rule; empty for the default deny and refused paths
  // "allowed by rule 'x'", "denied by rule 'x'", "default deny: no rule allows lncc -> gpucloud
  // push of /a -> /b (internal)", or why the request itself was refused.
  std::string reason;
  uint64_t rate_limit_bytes_per_s = 0;  // allow only; 0 = no cap
  unsigned max_concurrent = 0;          // allow only; 0 = no cap
  // allow only: the least protection of the data connections the rule allows the transfer with
  Protection protection = Protection::kClear;
};

class Policy {
 public:
  // No rules: denies everything.
  Policy();

  // Compiles the "policy.rules" array. Never throws. kInvalidArgument names the rule (its index
  // from 0 and its id), the field and the fault: "policy rule 3 ('x'): time_window.start: expected
  // HH:MM". Unknown keys and duplicate ids are errors.
  static Result<Policy> Parse(const nlohmann::json& rules);

  // The first matching rule decides; no match denies. Rules are indexed by institution pair, so
  // this costs about the rules that name the request's pair (or a wildcard), not all of them.
  Decision Evaluate(const Request& req) const;

  // For `pororoca policy check`: one line for each rule that names this source and destination (or
  // a wildcard), in order, up to the deciding one: "rule 'x': destination path /home/a is not under
  // /scratch/" (every failed condition, joined by "; "), and "rule 'y' matches and allows" (or
  // "denies"). If no rule names the pair: "none of the 12 rules applies to lncc -> gpucloud".
  std::vector<std::string> Explain(const Request& req) const;

  size_t size() const;

 private:
  struct Compiled;
  explicit Policy(std::shared_ptr<const Compiled> c) : c_(std::move(c)) {}
  std::shared_ptr<const Compiled> c_;
};

// The classification labels of an endpoint's export, from the daemon configuration: (path prefix,
// label) pairs. The longest prefix that contains the path, on component boundaries, gives its
// label ("/data" covers /data and /data/x, not /database); of equal prefixes the first wins.
// Paths no prefix covers, and paths with a "." or ".." component, are "unclassified".
class Classifier {
 public:
  Classifier() = default;
  explicit Classifier(std::vector<std::pair<std::string, std::string>> prefix_labels);

  std::string LabelFor(std::string_view path) const;

 private:
  std::vector<std::pair<std::string, std::string>> entries_;  // canonical prefix, label; longest first
};

}  // namespace pororoca::policy
