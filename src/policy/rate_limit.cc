#include "policy/rate_limit.h"

#include <algorithm>
#include <array>
#include <limits>
#include <map>

#include "policy/text.h"

namespace pororoca::policy {
namespace {

constexpr __int128 kNano = 1'000'000'000;
constexpr auto kCancelPoll = std::chrono::milliseconds(100);

struct Unit {
  std::string_view name;
  uint64_t bytes_num;  // bytes/s per unit = bytes_num / bytes_den
  uint64_t bytes_den;
};

constexpr uint64_t kKi = 1024;
constexpr std::array<Unit, 15> kUnits = {{
    {"bit/s", 1, 8},
    {"kbit/s", 1000, 8},
    {"Mbit/s", 1000 * 1000, 8},
    {"Gbit/s", 1000 * 1000 * 1000, 8},
    {"Tbit/s", 1000ull * 1000 * 1000 * 1000, 8},
    {"B/s", 1, 1},
    {"KB/s", 1000, 1},
    {"kB/s", 1000, 1},
    {"MB/s", 1000 * 1000, 1},
    {"GB/s", 1000 * 1000 * 1000, 1},
    {"TB/s", 1000ull * 1000 * 1000 * 1000, 1},
    {"KiB/s", kKi, 1},
    {"MiB/s", kKi* kKi, 1},
    {"GiB/s", kKi* kKi* kKi, 1},
    {"TiB/s", kKi* kKi* kKi* kKi, 1},
}};

bool IsBlank(char c) { return c == ' ' || c == '\t'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsBlank(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsBlank(s.back())) s.remove_suffix(1);
  return s;
}

}  // namespace

Result<uint64_t> ParseRate(std::string_view text) {
  const std::string_view s = Trim(text);
  auto fail = [&](std::string_view what) {
    return Status::InvalidArgument("rate " + Quoted(text) + ": " + std::string(what));
  };
  // The value is digits / 10^frac_digits, kept exact in 128 bits: at most 20 significant integer
  // digits and 18 fraction digits make less than 10^38.
  size_t i = 0;
  unsigned __int128 digits = 0;
  size_t int_digits = 0, significant = 0, frac_digits = 0;
  for (; i < s.size() && IsDigit(s[i]); ++i, ++int_digits) {
    if (digits != 0 || s[i] != '0') ++significant;
    if (significant > 20) return fail("too large");
    digits = digits * 10 + unsigned(s[i] - '0');
  }
  if (int_digits == 0) return fail("expected a number and a unit, such as 2Gbit/s or 500MiB/s");
  if (i < s.size() && s[i] == '.') {
    for (++i; i < s.size() && IsDigit(s[i]); ++i) {
      if (frac_digits == 18) return fail("more than 18 decimal places");
      digits = digits * 10 + unsigned(s[i] - '0');
      ++frac_digits;
    }
    if (frac_digits == 0) return fail("expected digits after the decimal point");
  }
  while (i < s.size() && IsBlank(s[i])) ++i;
  const std::string_view unit_name = s.substr(i);
  Unit unit{"", 1, 1};
  if (unit_name.empty()) {
    if (frac_digits > 0) return fail("a number without a unit is bytes/s and must be whole");
  } else {
    auto it = std::find_if(kUnits.begin(), kUnits.end(), [&](const Unit& u) { return u.name == unit_name; });
    if (it == kUnits.end()) {
      return fail(
          "unknown unit " + Quoted(unit_name) +
          " (bit/s, kbit/s, Mbit/s, Gbit/s, Tbit/s, B/s, KB/s, MB/s, GB/s, TB/s, KiB/s, MiB/s, GiB/s, "
          "TiB/s)");
    }
    unit = *it;
  }
  unsigned __int128 den = unit.bytes_den;
  for (size_t k = 0; k < frac_digits; ++k) den *= 10;
  const unsigned __int128 max = ~static_cast<unsigned __int128>(0);
  if (digits > max / unit.bytes_num) return fail("too large");
  const unsigned __int128 bytes = digits * unit.bytes_num / den;
  if (bytes > std::numeric_limits<uint64_t>::max()) return fail("too large");
  if (bytes == 0) return fail("below 1 byte/s");
  return static_cast<uint64_t>(bytes);
}

TokenBucket::TokenBucket(uint64_t rate_bytes_per_s, uint64_t burst_bytes)
    : burst_(burst_bytes),
      rate_(rate_bytes_per_s),
      credit_(NanoBytes(burst_bytes) * kNano),
      refilled_(0),
      last_(Clock::now()) {}

void TokenBucket::RefillLocked(Clock::time_point now) {
  if (now <= last_) return;
  const int64_t ns = std::chrono::duration_cast<std::chrono::nanoseconds>(now - last_).count();
  last_ = now;
  const NanoBytes add = NanoBytes(ns) * rate_;
  refilled_ += add;
  credit_ = std::min(credit_ + add, NanoBytes(burst_) * kNano);
}

bool TokenBucket::Acquire(uint64_t n, const std::atomic<bool>* cancel) {
  auto cancelled = [cancel] { return cancel != nullptr && cancel->load(std::memory_order_relaxed); };
  if (cancelled()) return false;
  std::unique_lock<std::mutex> lock(mu_);
  if (rate_ == 0) return true;
  RefillLocked(Clock::now());
  credit_ -= NanoBytes(n) * kNano;
  if (credit_ >= 0) return true;
  // This reservation is paid once the bucket has refilled the debt it left, whatever later callers
  // add to the debt: callers pass in the order they reserved. `refilled_` only grows, so the target
  // stays right across SetRate.
  const NanoBytes target = refilled_ - credit_;
  for (;;) {
    if (rate_ == 0) return true;
    const NanoBytes missing = target - refilled_;
    if (missing <= 0) return true;
    if (cancelled()) {
      // Nothing was sent: give the bytes back to whoever comes next.
      credit_ = std::min(credit_ + NanoBytes(n) * kNano, NanoBytes(burst_) * kNano);
      return false;
    }
    const NanoBytes wait_ns = (missing + rate_ - 1) / rate_;
    const auto now = Clock::now();
    auto deadline = now + kCancelPoll;
    if (wait_ns < std::chrono::nanoseconds(kCancelPoll).count()) {
      deadline = now + std::chrono::nanoseconds(static_cast<int64_t>(wait_ns));
    }
    cv_.wait_until(lock, deadline);
    RefillLocked(Clock::now());
  }
}

void TokenBucket::SetRate(uint64_t rate_bytes_per_s) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    RefillLocked(Clock::now());  // the time so far counts at the old rate
    if (rate_bytes_per_s == rate_) return;
    rate_ = rate_bytes_per_s;
    if (rate_ == 0) credit_ = NanoBytes(burst_) * kNano;  // unlimited forgives the debt
  }
  cv_.notify_all();
}

uint64_t TokenBucket::rate() const {
  std::lock_guard<std::mutex> lock(mu_);
  return rate_;
}

class PairLimits::State {
 public:
  std::mutex mu;
  std::map<std::string, std::weak_ptr<TokenBucket>, std::less<>> buckets;
  std::map<std::string, unsigned, std::less<>> slots;  // pair '\0' rule id -> slots held
};

namespace {

std::string SlotKey(std::string_view pair, std::string_view rule_id) {
  std::string key(pair);
  key += '\0';
  key.append(rule_id);
  return key;
}

}  // namespace

PairLimits::PairLimits() : state_(std::make_shared<State>()) {}

std::string PairLimits::PairKey(std::string_view source, std::string_view destination) {
  std::string key(source);
  key += "->";
  key.append(destination);
  return key;
}

std::shared_ptr<TokenBucket> PairLimits::Bucket(const std::string& pair, uint64_t rate_bytes_per_s) {
  std::lock_guard<std::mutex> lock(state_->mu);
  auto it = state_->buckets.find(pair);
  if (it != state_->buckets.end()) {
    if (std::shared_ptr<TokenBucket> b = it->second.lock()) {
      b->SetRate(rate_bytes_per_s);
      return b;
    }
  }
  // Forget the buckets nobody holds any more before adding one (pairs are few; this is rare).
  std::erase_if(state_->buckets, [](const auto& kv) { return kv.second.expired(); });
  constexpr uint64_t kMinBurst = 64 * 1024;
  auto b = std::make_shared<TokenBucket>(rate_bytes_per_s, std::max(rate_bytes_per_s / 10, kMinBurst));
  state_->buckets[pair] = b;
  return b;
}

Result<PairLimits::Slot> PairLimits::TryAcquire(const std::string& pair, unsigned max,
                                                std::string_view rule_id) {
  std::string key = SlotKey(pair, rule_id);
  std::lock_guard<std::mutex> lock(state_->mu);
  unsigned& held = state_->slots[key];
  if (max != 0 && held >= max) {
    std::string shown = pair;
    if (size_t arrow = shown.find("->"); arrow != std::string::npos) shown.replace(arrow, 2, " -> ");
    Status st = Status::ResourceExhausted("concurrency cap of " + std::to_string(max) + " transfer" +
                                          (max == 1 ? "" : "s") + " for " + shown + " reached (rule '" +
                                          std::string(rule_id) + "')");
    st.WithRetryable(true);  // a slot frees up when one of the running transfers ends
    return st;
  }
  ++held;
  return Slot(state_, std::move(key));
}

unsigned PairLimits::InUse(const std::string& pair, std::string_view rule_id) const {
  std::lock_guard<std::mutex> lock(state_->mu);
  auto it = state_->slots.find(SlotKey(pair, rule_id));
  return it == state_->slots.end() ? 0 : it->second;
}

PairLimits::Slot& PairLimits::Slot::operator=(Slot&& o) noexcept {
  if (this != &o) {
    Release();
    state_ = std::move(o.state_);
    key_ = std::move(o.key_);
  }
  return *this;
}

void PairLimits::Slot::Release() {
  if (!state_) return;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    auto it = state_->slots.find(key_);
    if (it != state_->slots.end() && --it->second == 0) state_->slots.erase(it);
  }
  state_.reset();
}

}  // namespace pororoca::policy
