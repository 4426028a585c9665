#include "metrics/metrics.h"

#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <sstream>
#include <thread>

namespace pororoca::metrics {
namespace {

// The lines of an exposition that are samples (not # comments), in order.
std::vector<std::string> Samples(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line[0] != '#') out.push_back(line);
  }
  return out;
}

TEST_SUITE("metrics.writer") {
  TEST_CASE("names: metric names may hold colons, label names may not, and __ is reserved") {
    CHECK(ValidMetricName("pororoca_bytes_total"));
    CHECK(ValidMetricName("job:rate5m"));
    CHECK_FALSE(ValidMetricName("9lives"));
    CHECK_FALSE(ValidMetricName("bytes-total"));
    CHECK_FALSE(ValidMetricName(""));
    CHECK(ValidLabelName("peer_institution"));
    CHECK_FALSE(ValidLabelName("a:b"));
    CHECK_FALSE(ValidLabelName("__name__"));
    CHECK_FALSE(ValidLabelName("1x"));
  }

  TEST_CASE("label values escape backslash, double quote and newline, HELP escapes backslash and newline") {
    CHECK(EscapeLabelValue(R"(a\b"c)"
                           "\n"
                           "d") == R"(a\\b\"c\nd)");
    CHECK(EscapeHelp("x\\y\n\"z\"") == R"(x\\y\n"z")");
    Writer w;
    REQUIRE(w.Family("t_total", Type::kCounter, "help with \\ and\nnewline"));
    w.Sample({{"peer", "in\"st\\x\ny"}}, 3);
    CHECK(w.text() ==
          "# HELP t_total help with \\\\ and\\nnewline\n"
          "# TYPE t_total counter\n"
          "t_total{peer=\"in\\\"st\\\\x\\ny\"} 3\n");
  }

  TEST_CASE("values: integers without a fraction, special values as the format spells them") {
    CHECK(FormatValue(0) == "0");
    CHECK(FormatValue(1073741824) == "1073741824");
    CHECK(FormatValue(-2) == "-2");
    CHECK(FormatValue(0.25) == "0.25");
    CHECK(std::stod(FormatValue(0.1)) == 0.1);
    CHECK(FormatValue(std::numeric_limits<double>::infinity()) == "+Inf");
    CHECK(FormatValue(-std::numeric_limits<double>::infinity()) == "-Inf");
    CHECK(FormatValue(std::nan("")) == "NaN");
  }

  TEST_CASE("a label set is written in order, an invalid label name is dropped, no labels means no braces") {
    Writer w;
    REQUIRE(w.Family("g", Type::kGauge, "h"));
    w.Sample({}, 1);
    w.Sample({{"b", "2"}, {"a", "1"}, {"bad-name", "x"}}, 2);
    CHECK(Samples(w.text()) == std::vector<std::string>{"g 1", "g{b=\"2\",a=\"1\"} 2"});
  }

  TEST_CASE("a family written twice, or with an invalid name, is refused with its samples") {
    Writer w;
    REQUIRE(w.Family("x_total", Type::kCounter, "first"));
    w.Sample({}, 1);
    CHECK_FALSE(w.Family("x_total", Type::kCounter, "again"));
    w.Sample({}, 2);  // dropped
    CHECK_FALSE(w.Family("bad name", Type::kGauge, "h"));
    w.Sample({}, 3);  // dropped
    REQUIRE(w.Family("y", Type::kGauge, "h"));
    w.Sample({}, 4);
    CHECK(w.refused() == 2);
    CHECK(Samples(w.text()) == std::vector<std::string>{"x_total 1", "y 4"});
    CHECK(w.text().find("again") == std::string::npos);
  }
}

TEST_SUITE("metrics.histogram") {
  TEST_CASE("buckets are cumulative, le is inclusive, +Inf equals the count, the sum adds up") {
    Histogram h({0.25, 0.5, 1});
    for (double v : {0.125, 0.25, 0.375, 0.75, 1.5, 4.0}) h.Observe(v);  // exact in binary: the sum too
    h.Observe(std::nan(""));                                             // ignored
    HistogramSnapshot s = h.Snapshot();
    CHECK(s.cumulative == std::vector<uint64_t>{2, 3, 4});
    CHECK(s.count == 6);
    CHECK(s.sum == 7);
    Writer w;
    REQUIRE(w.Family("rtt_seconds", Type::kHistogram, "h"));
    w.Histogram(std::vector<Label>{{"transport", "tcp"}}, s);
    CHECK(Samples(w.text()) == std::vector<std::string>{
                                   "rtt_seconds_bucket{transport=\"tcp\",le=\"0.25\"} 2",
                                   "rtt_seconds_bucket{transport=\"tcp\",le=\"0.5\"} 3",
                                   "rtt_seconds_bucket{transport=\"tcp\",le=\"1\"} 4",
                                   "rtt_seconds_bucket{transport=\"tcp\",le=\"+Inf\"} 6",
                                   "rtt_seconds_sum{transport=\"tcp\"} 7",
                                   "rtt_seconds_count{transport=\"tcp\"} 6",
                               });
  }

  TEST_CASE("observations from many threads are all counted") {
    Histogram h({1, 10});
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&] {
        for (int i = 0; i < 10000; ++i) h.Observe(i % 3 == 0 ? 0.5 : 5);
      });
    }
    for (auto& th : threads) th.join();
    HistogramSnapshot s = h.Snapshot();
    CHECK(s.count == 40000);
    CHECK(s.cumulative[0] == 4 * 3334);
    CHECK(s.cumulative[1] == 40000);
  }
}

TEST_SUITE("metrics.registry") {
  TEST_CASE("counters only go up, and concurrent adds are all counted") {
    Registry r;
    CounterFamily& f = r.AddCounter("c_total", "help", {"direction"});
    Counter& sent = f.With({"sent"});
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&] {
        for (int i = 0; i < 10000; ++i) f.With({"sent"}).Add(2);
      });
    }
    uint64_t last = 0;
    for (int i = 0; i < 1000; ++i) {  // a reader never sees it go down
      const uint64_t v = sent.value();
      CHECK(v >= last);
      last = v;
    }
    for (auto& th : threads) th.join();
    CHECK(sent.value() == 80000);
    CHECK(&f.With({"sent"}) == &sent);
    CHECK(Samples(r.Expose()) == std::vector<std::string>{"c_total{direction=\"sent\"} 80000"});
  }

  TEST_CASE("a family keeps at most max_series label sets, the rest go to one series labelled other") {
    Registry r;
    CounterFamily& f = r.AddCounter("peers_total", "h", {"peer", "kind"}, 2);
    f.With({"a", "x"}).Add(1);
    f.With({"b", "x"}).Add(1);
    f.With({"c", "x"}).Add(5);
    f.With({"d", "y"}).Add(7);
    f.With({"a", "x"}).Add(1);  // existing series still found
    CHECK(f.size() == 3);
    CHECK(Samples(r.Expose()) == std::vector<std::string>{"peers_total{peer=\"a\",kind=\"x\"} 2",
                                                          "peers_total{peer=\"b\",kind=\"x\"} 1",
                                                          "peers_total{peer=\"other\",kind=\"other\"} 12"});
  }

  TEST_CASE("the exposition: registered families first, then each collector's, one HELP and TYPE each") {
    Registry r;
    r.AddCounter("a_total", "A.", {}).With({}).Add(4);
    r.AddHistogram("b_seconds", "B.", {}, {1}).With({}).Observe(0.5);
    r.AddCollector([](Writer& w) {
      w.Family("staging_used_bytes", Type::kGauge, "Used.");
      w.Sample({}, 1024);
      w.Family("a_total", Type::kCounter, "a duplicate, refused");
      w.Sample({}, 99);
    });
    const std::string text = r.Expose();
    CHECK(text ==
          "# HELP a_total A.\n# TYPE a_total counter\na_total 4\n"
          "# HELP b_seconds B.\n# TYPE b_seconds histogram\n"
          "b_seconds_bucket{le=\"1\"} 1\nb_seconds_bucket{le=\"+Inf\"} 1\nb_seconds_sum 0.5\nb_seconds_count "
          "1\n"
          "# HELP staging_used_bytes Used.\n# TYPE staging_used_bytes gauge\nstaging_used_bytes 1024\n");
  }
}

}  // namespace
}  // namespace pororoca::metrics
