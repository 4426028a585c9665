#include "metrics/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "base/log.h"

namespace pororoca::metrics {

namespace {

bool NameChar(char c, bool first, bool colon) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_') return true;
  if (colon && c == ':') return true;
  return !first && c >= '0' && c <= '9';
}

}  // namespace

bool ValidMetricName(std::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    if (!NameChar(name[i], i == 0, true)) return false;
  }
  return true;
}

bool ValidLabelName(std::string_view name) {
  if (name.empty() || name.starts_with("__")) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    if (!NameChar(name[i], i == 0, false)) return false;
  }
  return true;
}

namespace {

// Backslash and newline escaped, and the double quote too when `quote`.
std::string Escape(std::string_view v, bool quote) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\' || (quote && c == '"')) {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

std::string EscapeLabelValue(std::string_view v) { return Escape(v, true); }

std::string EscapeHelp(std::string_view v) { return Escape(v, false); }

std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  // Integers up to 2^53 are exact in a double: written without exponent or fraction.
  if (v == std::floor(v) && std::fabs(v) < 9007199254740992.0) {
    auto r = std::to_chars(buf, buf + sizeof buf, static_cast<int64_t>(v));
    return std::string(buf, r.ptr);
  }
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

bool Writer::Family(std::string_view name, Type type, std::string_view help) {
  current_.clear();
  if (!ValidMetricName(name) || written_.count(name) != 0) {
    ++refused_;
    PORO_LOG(WARNING) << "metrics: family '" << name << "' refused (an invalid name, or written twice)";
    return false;
  }
  written_.emplace(name);
  current_ = std::string(name);
  type_ = type;
  out_ += "# HELP ";
  out_ += name;
  out_ += ' ';
  out_ += EscapeHelp(help);
  out_ += "\n# TYPE ";
  out_ += name;
  out_ += type == Type::kCounter ? " counter\n" : type == Type::kGauge ? " gauge\n" : " histogram\n";
  return true;
}

void Writer::Line(std::string_view name, std::span<const Label> labels, const Label* extra,
                  std::string_view value) {
  out_ += name;
  bool any = false;
  auto add = [&](const Label& l) {
    if (!ValidLabelName(l.name)) return;
    out_ += any ? ',' : '{';
    any = true;
    out_ += l.name;
    out_ += "=\"";
    out_ += EscapeLabelValue(l.value);
    out_ += '"';
  };
  for (const Label& l : labels) add(l);
  if (extra != nullptr) add(*extra);
  if (any) out_ += '}';
  out_ += ' ';
  out_ += value;
  out_ += '\n';
}

void Writer::Sample(std::span<const Label> labels, double value) {
  if (current_.empty() || type_ == Type::kHistogram) return;
  Line(current_, labels, nullptr, FormatValue(value));
}

void Writer::Histogram(std::span<const Label> labels, const HistogramSnapshot& h) {
  if (current_.empty() || type_ != Type::kHistogram) return;
  const std::string bucket = current_ + "_bucket";
  for (size_t i = 0; i < h.bounds.size() && i < h.cumulative.size(); ++i) {
    const std::string le = FormatValue(h.bounds[i]);
    Label l{"le", le};
    Line(bucket, labels, &l, FormatValue(static_cast<double>(h.cumulative[i])));
  }
  Label inf{"le", "+Inf"};
  Line(bucket, labels, &inf, FormatValue(static_cast<double>(h.count)));
  Line(current_ + "_sum", labels, nullptr, FormatValue(h.sum));
  Line(current_ + "_count", labels, nullptr, FormatValue(static_cast<double>(h.count)));
}

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 0; i + 1 < bounds_.size(); ++i) PORO_CHECK(bounds_[i] < bounds_[i + 1]);
  for (size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0);
}

void Histogram::Observe(double v) {
  if (std::isnan(v)) return;
  // The first bucket whose bound is >= v ("le": less or equal); past the last, +Inf.
  const size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin();
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

HistogramSnapshot Histogram::Snapshot() const {
  HistogramSnapshot s;
  s.bounds = bounds_;
  uint64_t run = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    run += counts_[i].load(std::memory_order_relaxed);
    s.cumulative.push_back(run);
  }
  // The count is the +Inf bucket's, read with the others, so _count always equals it.
  s.count = run + counts_[bounds_.size()].load(std::memory_order_relaxed);
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

CounterFamily& Registry::AddCounter(std::string name, std::string help, std::vector<std::string> label_names,
                                    size_t max_series) {
  PORO_CHECK(ValidMetricName(name));
  for (const auto& l : label_names) PORO_CHECK(ValidLabelName(l));
  MutexLock lock(&mu_);
  Entry e;
  e.name = std::move(name);
  e.help = std::move(help);
  e.counters = std::make_unique<CounterFamily>(std::move(label_names), max_series,
                                               [] { return std::make_unique<Counter>(); });
  entries_.push_back(std::move(e));
  return *entries_.back().counters;
}

HistogramFamily& Registry::AddHistogram(std::string name, std::string help,
                                        std::vector<std::string> label_names, std::vector<double> bounds,
                                        size_t max_series) {
  PORO_CHECK(ValidMetricName(name));
  for (const auto& l : label_names) PORO_CHECK(ValidLabelName(l) && l != "le");
  MutexLock lock(&mu_);
  Entry e;
  e.name = std::move(name);
  e.help = std::move(help);
  e.histograms = std::make_unique<HistogramFamily>(
      std::move(label_names), max_series, [bounds] { return std::make_unique<metrics::Histogram>(bounds); });
  entries_.push_back(std::move(e));
  return *entries_.back().histograms;
}

void Registry::AddCollector(Collector c) {
  MutexLock lock(&mu_);
  collectors_.push_back(std::move(c));
}

std::string Registry::Expose() const {
  Writer w;
  MutexLock lock(&mu_);
  for (const Entry& e : entries_) {
    if (e.counters) {
      if (!w.Family(e.name, Type::kCounter, e.help)) continue;
      e.counters->ForEach([&](std::span<const Label> labels, const Counter& c) {
        w.Sample(labels, static_cast<double>(c.value()));
      });
    } else {
      if (!w.Family(e.name, Type::kHistogram, e.help)) continue;
      e.histograms->ForEach([&](std::span<const Label> labels, const metrics::Histogram& h) {
        w.Histogram(labels, h.Snapshot());
      });
    }
  }
  for (const Collector& c : collectors_) c(w);
  return w.Take();
}

}  // namespace pororoca::metrics
