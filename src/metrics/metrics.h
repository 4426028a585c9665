// Prometheus metrics: a registry of counters and histograms with bounded label sets, collect
// callbacks for values computed when scraped (gauges of state), and a writer of the text
// exposition format 0.0.4 (what GET /metrics answers; docs/operations.md, "Metrics").
//
// The data path only adds to atomics: a component looks its labelled series up once (per session,
// per file), keeps the reference, and adds to it; the lookup takes the family's mutex, the add
// takes none. Counters are unsigned and only go up.
//
// Thread-safety: Counter, Histogram and the families may be used from any thread. Registry's
// methods may be called from any thread; Expose() runs the collectors under the registry's lock,
// so a collector must not call back into the registry. A Writer belongs to one exposition.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/mutex.h"

namespace pororoca::metrics {

enum class Type { kCounter, kGauge, kHistogram };

struct Label {
  std::string_view name, value;
};

// [a-zA-Z_:][a-zA-Z0-9_:]* and [a-zA-Z_][a-zA-Z0-9_]* (not starting "__": reserved).
bool ValidMetricName(std::string_view name);
bool ValidLabelName(std::string_view name);
// A label value in double quotes' escaping: \ -> \\, " -> \", newline -> \n.
std::string EscapeLabelValue(std::string_view v);
// A HELP text's escaping: \ -> \\, newline -> \n.
std::string EscapeHelp(std::string_view v);
// A sample value: integers as such, +Inf, -Inf, NaN, else the shortest text that reads back exactly.
std::string FormatValue(double v);

// The cumulative view of a histogram: counts[i] observations <= bounds[i]; count also takes those
// above the last bound (the +Inf bucket).
struct HistogramSnapshot {
  std::vector<double> bounds;
  std::vector<uint64_t> cumulative;  // one per bound
  uint64_t count = 0;
  double sum = 0;
};

// One exposition, family by family: Family() writes # HELP and # TYPE, then the samples of that
// family follow. A family name written twice in one exposition is refused (the format forbids it):
// Family() returns false and drops that family's samples, so a faulty collector cannot make the
// whole answer unreadable.
class Writer {
 public:
  bool Family(std::string_view name, Type type, std::string_view help);
  // A sample of the current family (a counter or a gauge). Labels with an invalid name are dropped.
  void Sample(std::initializer_list<Label> labels, double value) {
    Sample(std::span(labels.begin(), labels.size()), value);
  }
  void Sample(std::span<const Label> labels, double value);
  // The _bucket, _sum and _count samples of the current (histogram) family.
  void Histogram(std::span<const Label> labels, const HistogramSnapshot& h);
  // Families refused so far (invalid or repeated names).
  size_t refused() const { return refused_; }
  const std::string& text() const { return out_; }
  std::string Take() { return std::move(out_); }

 private:
  void Line(std::string_view name, std::span<const Label> labels, const Label* extra, std::string_view value);

  std::string out_;
  std::string current_;  // "" while a refused family's samples are dropped
  Type type_ = Type::kGauge;
  std::set<std::string, std::less<>> written_;
  size_t refused_ = 0;
};

class Counter {
 public:
  void Add(uint64_t n = 1) { v_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> v_{0};
};

class Histogram {
 public:
  // `bounds`: the buckets' upper bounds, strictly increasing (checked).
  explicit Histogram(std::vector<double> bounds);
  // NaN is ignored.
  void Observe(double v);
  HistogramSnapshot Snapshot() const;
  const std::vector<double>& bounds() const { return bounds_; }

 private:
  const std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // per bucket, the last one is +Inf
  std::atomic<double> sum_{0};
};

// A family of series that differ by the values of fixed labels. With() finds or makes the series
// (under the family's mutex); a family holds at most `max_series`, and values beyond that go to
// one series whose every label is "other", so a label never grows without bound.
template <class M>
class Family {
 public:
  using Factory = std::function<std::unique_ptr<M>()>;
  Family(std::vector<std::string> label_names, size_t max_series, Factory make)
      : names_(std::move(label_names)), max_series_(max_series), make_(std::move(make)) {}
  // `values` in the order of the label names (a missing value is "").
  M& With(std::initializer_list<std::string_view> values) PORO_EXCLUDES(mu_) {
    std::vector<std::string> key;
    key.reserve(names_.size());
    auto it = values.begin();
    for (size_t i = 0; i < names_.size(); ++i) key.emplace_back(it != values.end() ? *it++ : "");
    MutexLock lock(&mu_);
    auto found = series_.find(key);
    if (found != series_.end()) return *found->second;
    if (series_.size() >= max_series_) key.assign(names_.size(), "other");
    auto& slot = series_[key];
    if (!slot) slot = make_();
    return *slot;
  }
  // Calls fn(labels, series) for every series, in label order.
  template <class Fn>
  void ForEach(Fn&& fn) const PORO_EXCLUDES(mu_) {
    MutexLock lock(&mu_);
    std::vector<Label> labels(names_.size());
    for (const auto& [values, m] : series_) {
      for (size_t i = 0; i < names_.size(); ++i) labels[i] = Label{names_[i], values[i]};
      fn(std::span<const Label>(labels), *m);
    }
  }
  size_t size() const PORO_EXCLUDES(mu_) {
    MutexLock lock(&mu_);
    return series_.size();
  }

 private:
  const std::vector<std::string> names_;
  const size_t max_series_;
  const Factory make_;
  mutable Mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<M>> series_ PORO_GUARDED_BY(mu_);
};

using CounterFamily = Family<Counter>;
using HistogramFamily = Family<Histogram>;

class Registry {
 public:
  static constexpr size_t kDefaultMaxSeries = 1000;
  // A counter family, exposed as `name` (which should end in _total). The family lives as long as
  // the registry.
  CounterFamily& AddCounter(std::string name, std::string help, std::vector<std::string> label_names,
                            size_t max_series = kDefaultMaxSeries) PORO_EXCLUDES(mu_);
  HistogramFamily& AddHistogram(std::string name, std::string help, std::vector<std::string> label_names,
                                std::vector<double> bounds, size_t max_series = kDefaultMaxSeries)
      PORO_EXCLUDES(mu_);
  // A callback that writes whole families (Writer::Family, then its samples) at each exposition,
  // after the registered counters and histograms, in the order the collectors were added: the way to
  // expose values computed when scraped (a queue's depth, a cache's size).
  using Collector = std::function<void(Writer&)>;
  void AddCollector(Collector c) PORO_EXCLUDES(mu_);
  // The exposition (text format 0.0.4).
  std::string Expose() const PORO_EXCLUDES(mu_);
  static constexpr const char* kContentType = "text/plain; version=0.0.4; charset=utf-8";

 private:
  struct Entry {
    std::string name, help;
    std::unique_ptr<CounterFamily> counters;
    std::unique_ptr<HistogramFamily> histograms;
  };
  mutable Mutex mu_;
  std::vector<Entry> entries_ PORO_GUARDED_BY(mu_);
  std::vector<Collector> collectors_ PORO_GUARDED_BY(mu_);
};

}  // namespace pororoca::metrics
