#include "policy/policy.h"

#include <algorithm>
#include <array>
#include <climits>
#include <nlohmann/json.hpp>
#include <optional>
#include <unordered_map>

#include "base/ids.h"
#include "base/path.h"
#include "policy/text.h"

namespace pororoca::policy {
namespace {

using Json = nlohmann::json;

constexpr int kMinutesPerDay = 24 * 60;
constexpr int64_t kSecondsPerDay = 86400;
constexpr int kMaxOffsetMinutes = 14 * 60;  // UTC-12:00 .. UTC+14:00 exist; accept the symmetric range
constexpr unsigned kMaxConcurrent = 1'000'000;
constexpr std::array<std::string_view, 7> kDayNames = {"mon", "tue", "wed", "thu", "fri", "sat", "sun"};
constexpr std::array<std::string_view, 7> kDayTitles = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
constexpr uint8_t kAllDays = 0x7f;
// An explicit source list times an explicit destination list is indexed pair by pair up to this
// many pairs; a longer product is indexed by source and the destination checked per request.
constexpr size_t kMaxIndexedPairs = 256;
constexpr uint32_t kUnknownInstitution = UINT32_MAX;

// Calls f(component) for each "/"-separated component of `path`, empty ones included.
template <class F>
void ForEachComponent(std::string_view path, F f) {
  size_t i = 0;
  while (i <= path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    f(path.substr(i, j - i));
    i = j + 1;
  }
}

// An export path in canonical form: "/" or "/a/b" (one leading slash, no empty component, no
// trailing slash). Returns false for a "." or ".." component or a NUL byte. *out views `in` itself
// when it is canonical already (the common case: no copy), else *buf.
bool CanonicalPath(std::string_view in, std::string* buf, std::string_view* out) {
  if (in.find('\0') != std::string_view::npos) return false;
  bool dots = false;
  ForEachComponent(in, [&](std::string_view c) { dots |= c == "." || c == ".."; });
  if (dots) return false;
  if (in == "/" ||
      (!in.empty() && in.front() == '/' && in.back() != '/' && in.find("//") == std::string_view::npos)) {
    *out = in;
    return true;
  }
  buf->clear();
  ForEachComponent(in, [&](std::string_view c) {
    if (c.empty()) return;
    *buf += '/';
    buf->append(c);
  });
  if (buf->empty()) *buf = "/";
  *out = *buf;
  return true;
}

std::string Join(const std::vector<std::string>& parts, std::string_view sep) {
  std::string out;
  for (const auto& p : parts) {
    if (!out.empty()) out += sep;
    out += p;
  }
  return out;
}

int64_t FloorDiv(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

std::string TwoDigits(int v) { return std::string{char('0' + v / 10), char('0' + v % 10)}; }
std::string HhMm(int minutes) { return TwoDigits(minutes / 60) + ":" + TwoDigits(minutes % 60); }
std::string UtcOffsetText(int minutes) {
  return std::string("UTC") + (minutes < 0 ? "-" : "+") + HhMm(std::abs(minutes));
}

// "days" is the set of days on which the window starts; a window with end <= start runs past
// midnight into the next day.
struct TimeWindow {
  uint8_t days = kAllDays;  // bit 0 = Monday
  int start = 0;            // minutes after local midnight
  int end = kMinutesPerDay;
  int utc_offset = 0;  // minutes
  std::string text;    // "mon,tue,wed,thu,fri 20:00-06:00 UTC-03:00", for Explain

  // Local weekday (0 = Monday) and minute of the day at `now_unix`.
  std::pair<int, int> LocalDayMinute(int64_t now_unix) const {
    // Clamp so the offset cannot overflow: no clock is that far from 1970 anyway.
    const int64_t kLimit = int64_t(1) << 60;
    int64_t local = std::clamp<int64_t>(now_unix, -kLimit, kLimit) + int64_t(utc_offset) * 60;
    int64_t day = FloorDiv(local, kSecondsPerDay);
    int64_t second = local - day * kSecondsPerDay;
    int weekday = int((day % 7 + 7 + 3) % 7);  // 1970-01-01 was a Thursday
    return {weekday, int(second / 60)};
  }

  bool Contains(int64_t now_unix) const {
    auto [weekday, minute] = LocalDayMinute(now_unix);
    auto starts_on = [this](int d) { return (days >> d & 1) != 0; };
    if (start < end) return starts_on(weekday) && minute >= start && minute < end;
    return (starts_on(weekday) && minute >= start) || (starts_on((weekday + 6) % 7) && minute < end);
  }

  std::string LocalTimeText(int64_t now_unix) const {
    auto [weekday, minute] = LocalDayMinute(now_unix);
    return std::string(kDayTitles[size_t(weekday)]) + " " + HhMm(minute) + " " + UtcOffsetText(utc_offset);
  }
};

// A compiled rule. Empty path and classification lists mean "any".
struct Rule {
  std::string id;
  bool allow = false;
  bool any_source = false;
  bool any_destination = false;
  std::vector<std::string> sources, destinations;     // as written, for messages
  std::vector<uint32_t> source_ids, destination_ids;  // interned, sorted
  std::optional<Direction> direction;
  std::vector<std::string> source_paths, destination_paths;            // canonical
  std::vector<std::string> source_paths_text, destination_paths_text;  // as written
  std::vector<std::string> classifications;
  std::optional<TimeWindow> window;
  uint64_t rate_limit = 0;
  unsigned max_concurrent = 0;
  Protection protection = Protection::kClear;
  std::string reason;  // "allowed by rule 'x'" / "denied by rule 'x'"
};

uint64_t Bit(std::string_view s) { return uint64_t(1) << (std::hash<std::string_view>{}(s)&63); }

// "a" for "/a/b" and "/a", "" for "/".
std::string_view FirstComponent(std::string_view canonical) {
  return canonical.substr(1, canonical.find('/', 1) - 1);
}

// The request with its paths canonical, its institutions interned and its Filter bits.
struct Context {
  const Request& req;
  uint32_t source = kUnknownInstitution;
  uint32_t destination = kUnknownInstitution;
  std::string_view source_path{}, destination_path{};
  std::string_view label{};
  uint64_t source_bit = 0, destination_bit = 0, label_bit = 0;
  uint8_t direction_bit = 0;
};

// A necessary condition for a rule to match, checked before the rule itself is read: one bit per
// hashed first path component of its prefixes, per hashed label, per direction; all ones where the
// rule has no such condition. 32 bytes a rule keep even a scan of all 1,000 rules of one pair in
// cache, and most non-matching rules are passed over here.
struct Filter {
  uint64_t source_paths = ~uint64_t(0);
  uint64_t destination_paths = ~uint64_t(0);
  uint64_t labels = ~uint64_t(0);
  uint8_t directions = 3;

  bool Admits(const Context& c) const {
    return (source_paths & c.source_bit) != 0 && (destination_paths & c.destination_bit) != 0 &&
           (labels & c.label_bit) != 0 && (directions & c.direction_bit) != 0;
  }
};

uint64_t PathBits(const std::vector<std::string>& prefixes) {
  if (prefixes.empty()) return ~uint64_t(0);
  uint64_t bits = 0;
  for (const auto& p : prefixes) bits |= p == "/" ? ~uint64_t(0) : Bit(FirstComponent(p));
  return bits;
}

uint8_t DirectionBit(Direction d) { return d == Direction::kPush ? 1 : 2; }

bool InstitutionMatches(bool any, const std::vector<uint32_t>& ids, uint32_t id) {
  return any || std::binary_search(ids.begin(), ids.end(), id);
}

bool InstitutionsMatch(const Rule& r, const Context& c) {
  return InstitutionMatches(r.any_source, r.source_ids, c.source) &&
         InstitutionMatches(r.any_destination, r.destination_ids, c.destination);
}

bool PathsMatch(const std::vector<std::string>& prefixes, std::string_view path) {
  if (prefixes.empty()) return true;
  return std::any_of(prefixes.begin(), prefixes.end(),
                     [&](const std::string& p) { return PathIsUnder(path, p); });
}

bool ClassificationMatches(const Rule& r, std::string_view label) {
  if (r.classifications.empty()) return true;
  return std::find(r.classifications.begin(), r.classifications.end(), label) != r.classifications.end();
}

bool DirectionMatches(const Rule& r, Direction d) { return !r.direction || *r.direction == d; }

bool WindowMatches(const Rule& r, int64_t now_unix) { return !r.window || r.window->Contains(now_unix); }

// Every condition but the institutions.
bool ConditionsMatch(const Rule& r, const Context& c) {
  return DirectionMatches(r, c.req.direction) && PathsMatch(r.source_paths, c.source_path) &&
         PathsMatch(r.destination_paths, c.destination_path) && ClassificationMatches(r, c.label) &&
         WindowMatches(r, c.req.now_unix);
}

// What ConditionsMatch found wrong, in words.
std::vector<std::string> Mismatches(const Rule& r, const Context& c) {
  std::vector<std::string> why;
  if (!DirectionMatches(r, c.req.direction)) {
    why.push_back("direction is " + std::string(DirectionName(c.req.direction)) + ", the rule is for " +
                  std::string(DirectionName(*r.direction)) + " only");
  }
  if (!PathsMatch(r.source_paths, c.source_path)) {
    why.push_back("source path " + std::string(c.source_path) + " is not under " +
                  Join(r.source_paths_text, " or "));
  }
  if (!PathsMatch(r.destination_paths, c.destination_path)) {
    why.push_back("destination path " + std::string(c.destination_path) + " is not under " +
                  Join(r.destination_paths_text, " or "));
  }
  if (!ClassificationMatches(r, c.label)) {
    why.push_back("classification " + Quoted(c.label) + " is not one of " + Join(r.classifications, ", "));
  }
  if (!WindowMatches(r, c.req.now_unix)) {
    why.push_back(r.window->LocalTimeText(c.req.now_unix) + " is outside the time window " + r.window->text);
  }
  return why;
}

// "HH:MM" -> minutes; "24:00" only if allow_24.
std::optional<int> ParseHhMm(std::string_view s, bool allow_24) {
  if (s.size() != 5 || s[2] != ':') return std::nullopt;
  for (size_t i : {0, 1, 3, 4}) {
    if (s[i] < '0' || s[i] > '9') return std::nullopt;
  }
  int h = (s[0] - '0') * 10 + (s[1] - '0');
  int m = (s[3] - '0') * 10 + (s[4] - '0');
  if (m > 59 || h > 24 || (h == 24 && (m != 0 || !allow_24))) return std::nullopt;
  return h * 60 + m;
}

// Reads one rule; every error names the rule and the field.
class RuleParser {
 public:
  explicit RuleParser(size_t index) : index_(index) {}

  Result<Rule> Parse(const Json& j) {
    if (!j.is_object()) return Fail("", "expected an object");
    auto id = j.find("id");
    if (id == j.end()) return Fail("id", "missing");
    if (!id->is_string() || !ValidId(id->get_ref<const std::string&>())) {
      return Fail("id", (id->is_string() ? Quoted(id->get_ref<const std::string&>()) : "this") + " is not " +
                            std::string(kIdRule));
    }
    rule_.id = id->get_ref<const std::string&>();
    bool have_effect = false;
    for (auto it = j.begin(); it != j.end(); ++it) {
      const std::string& key = it.key();
      const Json& v = it.value();
      if (key == "id" || key == "comment") {
        if (key == "comment" && !v.is_string()) return Fail("comment", "expected a string");
      } else if (key == "effect") {
        if (!v.is_string() || (v != "allow" && v != "deny"))
          return Fail(key, "expected \"allow\" or \"deny\"");
        rule_.allow = v == "allow";
        have_effect = true;
      } else if (key == "source") {
        PORO_RETURN_IF_ERROR(Institutions(key, v, &rule_.any_source, &rule_.sources));
      } else if (key == "destination") {
        PORO_RETURN_IF_ERROR(Institutions(key, v, &rule_.any_destination, &rule_.destinations));
      } else if (key == "direction") {
        auto d = v.is_string() ? ParseDirection(v.get_ref<const std::string&>()) : std::nullopt;
        if (d) {
          rule_.direction = *d;
        } else if (v != "any") {
          return Fail(key, "expected \"push\", \"pull\" or \"any\"");
        }
      } else if (key == "source_paths") {
        PORO_RETURN_IF_ERROR(Paths(key, v, &rule_.source_paths, &rule_.source_paths_text));
      } else if (key == "destination_paths") {
        PORO_RETURN_IF_ERROR(Paths(key, v, &rule_.destination_paths, &rule_.destination_paths_text));
      } else if (key == "classifications") {
        PORO_RETURN_IF_ERROR(Classifications(key, v));
      } else if (key == "time_window") {
        PORO_RETURN_IF_ERROR(Window(v));
      } else if (key == "rate_limit") {
        PORO_RETURN_IF_ERROR(RateLimit(key, v));
      } else if (key == "max_concurrent") {
        if (!v.is_number_integer() || v.get<int64_t>() < 1 || v.get<int64_t>() > int64_t(kMaxConcurrent)) {
          return Fail(key, "expected an integer from 1 to " + std::to_string(kMaxConcurrent));
        }
        rule_.max_concurrent = v.get<unsigned>();
      } else if (key == "protection") {
        auto p = v.is_string() ? ParseProtection(v.get_ref<const std::string&>()) : std::nullopt;
        if (!p) return Fail(key, "expected \"clear\", \"integrity\" or \"private\"");
        rule_.protection = *p;
      } else {
        return Fail("", "unknown key " + Quoted(key));
      }
    }
    if (!have_effect) return Fail("effect", "missing (\"allow\" or \"deny\")");
    if (!rule_.allow && rule_.rate_limit != 0) return Fail("rate_limit", "only an allow rule can have one");
    if (!rule_.allow && rule_.max_concurrent != 0)
      return Fail("max_concurrent", "only an allow rule can have one");
    if (!rule_.allow && rule_.protection != Protection::kClear)
      return Fail("protection", "only an allow rule can have one");
    if (j.find("source") == j.end()) rule_.any_source = true;
    if (j.find("destination") == j.end()) rule_.any_destination = true;
    rule_.reason = std::string(rule_.allow ? "allowed" : "denied") + " by rule '" + rule_.id + "'";
    return std::move(rule_);
  }

  // "policy rule 3 ('x'): field: what".
  Status Fail(std::string_view field, std::string_view what) const {
    std::string msg = "policy rule " + std::to_string(index_);
    if (!rule_.id.empty()) msg += " ('" + rule_.id + "')";
    msg += ": ";
    if (!field.empty()) msg.append(field).append(": ");
    msg.append(what);
    return Status::InvalidArgument(msg);
  }

 private:
  Status Institutions(const std::string& key, const Json& v, bool* any, std::vector<std::string>* out) {
    if (v == "*") {
      *any = true;
      return Status::OK();
    }
    if (v.is_string()) return Institutions(key, Json::array({v}), any, out);
    if (!v.is_array() || v.empty())
      return Fail(key, "expected \"*\" or a non-empty array of institution ids");
    for (size_t i = 0; i < v.size(); ++i) {
      if (!v[i].is_string() || !ValidId(v[i].get_ref<const std::string&>())) {
        return Fail(key + "[" + std::to_string(i) + "]",
                    "expected an institution id (" + std::string(kIdRule) + ")" +
                        (v[i].is_string() ? ", not " + Quoted(v[i].get_ref<const std::string&>()) : ""));
      }
      const std::string& s = v[i].get_ref<const std::string&>();
      if (std::find(out->begin(), out->end(), s) == out->end()) out->push_back(s);
    }
    return Status::OK();
  }

  Status Paths(const std::string& key, const Json& v, std::vector<std::string>* canonical,
               std::vector<std::string>* text) {
    if (!v.is_array() || v.empty()) return Fail(key, "expected a non-empty array of path prefixes");
    for (size_t i = 0; i < v.size(); ++i) {
      const std::string field = key + "[" + std::to_string(i) + "]";
      if (!v[i].is_string()) return Fail(field, "expected a path prefix (a string)");
      const std::string& s = v[i].get_ref<const std::string&>();
      std::string buf;
      std::string_view canon;
      if (s.empty() || s.front() != '/') return Fail(field, Quoted(s) + " is not an absolute path");
      if (!CanonicalPath(s, &buf, &canon)) return Fail(field, Quoted(s) + " has a '.' or '..' component");
      canonical->emplace_back(canon);
      text->push_back(s);
    }
    return Status::OK();
  }

  Status Classifications(const std::string& key, const Json& v) {
    if (!v.is_array() || v.empty()) return Fail(key, "expected a non-empty array of labels");
    for (size_t i = 0; i < v.size(); ++i) {
      if (!v[i].is_string() || v[i].get_ref<const std::string&>().empty()) {
        return Fail(key + "[" + std::to_string(i) + "]", "expected a label (a non-empty string)");
      }
      rule_.classifications.push_back(v[i].get<std::string>());
    }
    return Status::OK();
  }

  Status Window(const Json& v) {
    if (!v.is_object()) return Fail("time_window", "expected an object");
    TimeWindow w;
    std::optional<int> start, end;
    for (auto it = v.begin(); it != v.end(); ++it) {
      const std::string field = "time_window." + it.key();
      const Json& x = it.value();
      if (it.key() == "days") {
        if (!x.is_array() || x.empty())
          return Fail(field, "expected a non-empty array of days (\"mon\"..\"sun\")");
        w.days = 0;
        for (size_t i = 0; i < x.size(); ++i) {
          std::string d = x[i].is_string() ? x[i].get<std::string>() : std::string();
          std::transform(d.begin(), d.end(), d.begin(), [](char c) { return char(c | 0x20); });
          auto day = std::find(kDayNames.begin(), kDayNames.end(), d);
          if (day == kDayNames.end()) {
            return Fail(field + "[" + std::to_string(i) + "]",
                        "expected one of mon, tue, wed, thu, fri, sat, sun");
          }
          w.days |= uint8_t(1u << (day - kDayNames.begin()));
        }
      } else if (it.key() == "start" || it.key() == "end") {
        std::optional<int> t =
            x.is_string() ? ParseHhMm(x.get_ref<const std::string&>(), it.key() == "end") : std::nullopt;
        if (!t) return Fail(field, it.key() == "end" ? "expected HH:MM (00:00 to 24:00)" : "expected HH:MM");
        (it.key() == "start" ? start : end) = t;
      } else if (it.key() == "utc_offset") {
        const std::string s = x.is_string() ? x.get<std::string>() : std::string();
        std::optional<int> hm =
            s.size() == 6 ? ParseHhMm(std::string_view(s).substr(1), false) : std::nullopt;
        if (!hm || (s[0] != '+' && s[0] != '-') || *hm > kMaxOffsetMinutes) {
          return Fail(field, "expected +HH:MM or -HH:MM (at most 14:00)");
        }
        w.utc_offset = s[0] == '-' ? -*hm : *hm;
      } else {
        return Fail("time_window", "unknown key " + Quoted(it.key()));
      }
    }
    if (start.has_value() != end.has_value()) {
      return Fail(start ? "time_window.end" : "time_window.start", "missing (start and end go together)");
    }
    if (start) {
      if (*start == *end % kMinutesPerDay) {
        return Fail("time_window", "start and end are equal; leave both out for whole days");
      }
      w.start = *start;
      w.end = *end;
    }
    std::vector<std::string> days;
    for (size_t d = 0; d < kDayNames.size(); ++d) {
      if (w.days >> d & 1) days.emplace_back(kDayNames[d]);
    }
    w.text = (w.days == kAllDays ? std::string("every day") : Join(days, ",")) + " " +
             (start ? HhMm(w.start) + "-" + HhMm(w.end) : std::string("all day")) + " " +
             UtcOffsetText(w.utc_offset);
    rule_.window = std::move(w);
    return Status::OK();
  }

  Status RateLimit(const std::string& key, const Json& v) {
    if (v.is_number_integer()) {
      if (v.is_number_unsigned() ? v.get<uint64_t>() == 0 : v.get<int64_t>() < 1) {
        return Fail(key, "expected a positive rate");
      }
      rule_.rate_limit = v.get<uint64_t>();
      return Status::OK();
    }
    if (!v.is_string()) return Fail(key, "expected a rate such as \"2Gbit/s\" or an integer in bytes/s");
    Result<uint64_t> r = ParseRate(v.get_ref<const std::string&>());
    if (!r) return Fail(key, r.error().message());
    rule_.rate_limit = *r;
    return Status::OK();
  }

  size_t index_;
  Rule rule_;
};

}  // namespace

std::string_view DirectionName(Direction d) { return d == Direction::kPull ? "pull" : "push"; }

std::optional<Direction> ParseDirection(std::string_view name) {
  for (Direction d : {Direction::kPush, Direction::kPull}) {
    if (name == DirectionName(d)) return d;
  }
  return std::nullopt;
}

struct Policy::Compiled {
  std::vector<Rule> rules;
  std::unordered_map<std::string, uint32_t> institutions;  // every institution a rule names
  // Rule indices, ascending, by what their institution conditions name: both (pair id = source id
  // << 32 | destination id), the source only (any destination, or too many pairs to expand), the
  // destination only (any source), neither.
  std::unordered_map<uint64_t, std::vector<uint32_t>> by_pair;
  std::unordered_map<uint32_t, std::vector<uint32_t>> by_source;
  std::unordered_map<uint32_t, std::vector<uint32_t>> by_destination;
  std::vector<uint32_t> any_pair;
  std::vector<Filter> filters;  // by rule index

  uint32_t Intern(const std::string& name) {
    auto [it, added] = institutions.emplace(name, uint32_t(institutions.size()));
    return it->second;
  }
  uint32_t Find(const std::string& name) const {
    auto it = institutions.find(name);
    return it == institutions.end() ? kUnknownInstitution : it->second;
  }

  void Index(uint32_t i) {
    Rule& r = rules[i];
    for (const auto& s : r.sources) r.source_ids.push_back(Intern(s));
    for (const auto& d : r.destinations) r.destination_ids.push_back(Intern(d));
    std::sort(r.source_ids.begin(), r.source_ids.end());
    std::sort(r.destination_ids.begin(), r.destination_ids.end());
    Filter& f = filters.emplace_back();
    f.source_paths = PathBits(r.source_paths);
    f.destination_paths = PathBits(r.destination_paths);
    if (!r.classifications.empty()) {
      f.labels = 0;
      for (const auto& l : r.classifications) f.labels |= Bit(l);
    }
    if (r.direction) f.directions = DirectionBit(*r.direction);
    if (r.any_source && r.any_destination) {
      any_pair.push_back(i);
    } else if (r.any_source) {
      for (uint32_t d : r.destination_ids) by_destination[d].push_back(i);
    } else if (r.any_destination || r.source_ids.size() * r.destination_ids.size() > kMaxIndexedPairs) {
      for (uint32_t s : r.source_ids) by_source[s].push_back(i);
    } else {
      for (uint32_t s : r.source_ids) {
        for (uint32_t d : r.destination_ids) by_pair[uint64_t(s) << 32 | d].push_back(i);
      }
    }
  }

  // Fills *ctx from req; false (and *refusal) if a path is not a valid export path.
  bool Prepare(const Request& req, Context* ctx, std::string* src_buf, std::string* dst_buf,
               std::string* refusal) const {
    if (!CanonicalPath(req.source_path, src_buf, &ctx->source_path)) {
      *refusal =
          "denied: source path " + Quoted(req.source_path) + " has a '.' or '..' component or a NUL byte";
      return false;
    }
    if (!CanonicalPath(req.destination_path, dst_buf, &ctx->destination_path)) {
      *refusal = "denied: destination path " + Quoted(req.destination_path) +
                 " has a '.' or '..' component or a NUL byte";
      return false;
    }
    ctx->source = Find(req.source_institution);
    ctx->destination = Find(req.destination_institution);
    ctx->label = req.classification.empty() ? kUnclassified : std::string_view(req.classification);
    ctx->source_bit = Bit(FirstComponent(ctx->source_path));
    ctx->destination_bit = Bit(FirstComponent(ctx->destination_path));
    ctx->label_bit = Bit(ctx->label);
    ctx->direction_bit = DirectionBit(req.direction);
    return true;
  }

  // The first rule, in policy order, that matches ctx entirely; nullptr if none does.
  const Rule* FirstMatch(const Context& ctx) const {
    std::array<const std::vector<uint32_t>*, 4> lists{};
    size_t n = 0;
    if (ctx.source != kUnknownInstitution && ctx.destination != kUnknownInstitution) {
      if (auto it = by_pair.find(uint64_t(ctx.source) << 32 | ctx.destination); it != by_pair.end()) {
        lists[n++] = &it->second;
      }
    }
    if (auto it = by_source.find(ctx.source); it != by_source.end()) lists[n++] = &it->second;
    if (auto it = by_destination.find(ctx.destination); it != by_destination.end()) lists[n++] = &it->second;
    if (!any_pair.empty()) lists[n++] = &any_pair;
    // Merge the ascending lists so rules are tried in policy order.
    std::array<size_t, 4> pos{};
    for (;;) {
      size_t best_list = n;
      uint32_t best = UINT32_MAX;
      for (size_t k = 0; k < n; ++k) {
        if (pos[k] < lists[k]->size() && (*lists[k])[pos[k]] < best) {
          best = (*lists[k])[pos[k]];
          best_list = k;
        }
      }
      if (best_list == n) return nullptr;
      ++pos[best_list];
      if (!filters[best].Admits(ctx)) continue;
      const Rule& r = rules[best];
      if (InstitutionsMatch(r, ctx) && ConditionsMatch(r, ctx)) return &r;
    }
  }
};

Policy::Policy() : c_(std::make_shared<Compiled>()) {}

Result<Policy> Policy::Parse(const nlohmann::json& rules) {
  try {
    if (!rules.is_array()) return Status::InvalidArgument("policy.rules: expected an array of rules");
    auto c = std::make_shared<Compiled>();
    std::unordered_map<std::string, size_t> seen;
    for (size_t i = 0; i < rules.size(); ++i) {
      RuleParser parser(i);
      PORO_ASSIGN_OR_RETURN(Rule r, parser.Parse(rules[i]));
      if (auto [it, added] = seen.emplace(r.id, i); !added) {
        return Status::InvalidArgument("policy rule " + std::to_string(i) + " ('" + r.id +
                                       "'): id: already used by rule " + std::to_string(it->second));
      }
      c->rules.push_back(std::move(r));
      c->Index(uint32_t(i));
    }
    return Policy(std::move(c));
  } catch (const std::exception& e) {
    // nlohmann's type errors and bad_alloc: not expected past the checks above, but Parse sees
    // untrusted input and must not throw.
    return Status::InvalidArgument(std::string("policy.rules: ") + e.what());
  }
}

size_t Policy::size() const { return c_->rules.size(); }

Decision Policy::Evaluate(const Request& req) const {
  Decision d;
  Context ctx{req};
  std::string src_buf, dst_buf;
  if (!c_->Prepare(req, &ctx, &src_buf, &dst_buf, &d.reason)) return d;
  if (const Rule* r = c_->FirstMatch(ctx)) {
    d.allowed = r->allow;
    d.rule_id = r->id;
    d.reason = r->reason;
    d.rate_limit_bytes_per_s = r->rate_limit;
    d.max_concurrent = r->max_concurrent;
    d.protection = r->protection;
    return d;
  }
  d.reason = "default deny: no rule allows " + req.source_institution + " -> " + req.destination_institution +
             " " + std::string(DirectionName(req.direction)) + " of " + std::string(ctx.source_path) +
             " -> " + std::string(ctx.destination_path) + " (" + std::string(ctx.label) + ")";
  return d;
}

std::vector<std::string> Policy::Explain(const Request& req) const {
  Context ctx{req};
  std::string src_buf, dst_buf, refusal;
  if (!c_->Prepare(req, &ctx, &src_buf, &dst_buf, &refusal)) return {refusal};
  std::vector<std::string> lines;
  for (const Rule& r : c_->rules) {
    if (!InstitutionsMatch(r, ctx)) continue;
    std::vector<std::string> why = Mismatches(r, ctx);
    if (why.empty()) {
      lines.push_back("rule '" + r.id + "' matches and " + (r.allow ? "allows" : "denies"));
      return lines;
    }
    lines.push_back("rule '" + r.id + "': " + Join(why, "; "));
  }
  if (lines.empty()) {
    lines.push_back("none of the " + std::to_string(c_->rules.size()) + " rules applies to " +
                    req.source_institution + " -> " + req.destination_institution);
  }
  return lines;
}

Classifier::Classifier(std::vector<std::pair<std::string, std::string>> prefix_labels) {
  for (auto& [prefix, label] : prefix_labels) {
    std::string buf;
    std::string_view canon;
    // A prefix with a "." or ".." component is kept as written: it matches nothing, since such paths
    // are never looked up.
    std::string key = CanonicalPath(prefix, &buf, &canon) ? std::string(canon) : prefix;
    entries_.emplace_back(std::move(key), std::move(label));
  }
  std::stable_sort(entries_.begin(), entries_.end(),
                   [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
}

std::string Classifier::LabelFor(std::string_view path) const {
  std::string buf;
  std::string_view canon;
  if (!CanonicalPath(path, &buf, &canon)) return std::string(kUnclassified);
  for (const auto& [prefix, label] : entries_) {
    if (PathIsUnder(canon, prefix)) return label;
  }
  return std::string(kUnclassified);
}

}  // namespace pororoca::policy
