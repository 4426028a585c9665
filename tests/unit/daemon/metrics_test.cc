#include "daemon/metrics.h"

#include <doctest/doctest.h>

#include <string>

namespace pororoca::daemon {
namespace {

// The value of the sample written exactly as `key` (name and labels), or -1.
double Sample(const std::string& text, const std::string& key) {
  const size_t at = text.find("\n" + key + " ");
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + key.size() + 2));
}

const std::string kSent = R"({direction="sent",peer_institution="cenapad",transport="tcp"})";

TEST_SUITE("daemon.metrics") {
  TEST_CASE("a session counts live while it runs, its final figures when it ends, and never goes down") {
    metrics::Registry r;
    DaemonMetrics m(&r);
    auto stats = std::make_shared<engine::TransferStats>();
    const uint64_t id = m.BeginSession({true, "cenapad", "tcp"}, stats);
    CHECK(Sample(r.Expose(), "pororoca_bytes_total" + kSent) == 0);
    CHECK(Sample(r.Expose(), "pororoca_sessions_active" + kSent) == 1);
    stats->bytes_sent = 4096;
    stats->files_done = 3;  // two of them skipped, but the skip is not counted yet: 3 shown
    CHECK(Sample(r.Expose(), "pororoca_bytes_total" + kSent) == 4096);
    CHECK(Sample(r.Expose(), "pororoca_files_total" + kSent) == 3);
    stats->files_skipped = 2;  // 1 file moved: the total shown stays at 3, never lower
    CHECK(Sample(r.Expose(), "pororoca_files_total" + kSent) == 3);
    engine::StatsSnapshot end = stats->Snapshot();
    end.bytes_sent = 8192;
    end.files_done = 5;
    end.chunks_corrupt = 1;
    m.EndSession(id, end);
    const std::string text = r.Expose();
    CHECK(Sample(text, "pororoca_bytes_total" + kSent) == 8192);
    CHECK(Sample(text, "pororoca_files_total" + kSent) == 3);
    CHECK(Sample(text, "pororoca_chunks_corrupt_total" + kSent) == 1);
    CHECK(Sample(text, "pororoca_sessions_active" + kSent) == 0);
    // A second session with the same peer adds to the same series; another direction is its own.
    const uint64_t id2 = m.BeginSession({false, "cenapad", "tcp"}, std::make_shared<engine::TransferStats>());
    engine::StatsSnapshot got;
    got.bytes_sent = 10;
    got.files_done = 1;
    m.EndSession(id2, got);
    CHECK(
        Sample(r.Expose(),
               R"(pororoca_bytes_total{direction="received",peer_institution="cenapad",transport="tcp"})") ==
        10);
    CHECK(Sample(r.Expose(), "pororoca_bytes_total" + kSent) == 8192);
  }

  TEST_CASE("errors by role and kind, decisions by outcome and check, streams into histograms") {
    metrics::Registry r;
    DaemonMetrics m(&r);
    m.SessionError(true, Code::kUnavailable);
    m.SessionError(true, Code::kUnavailable);
    m.SessionError(false, Code::kPermissionDenied);
    m.Decision(DaemonMetrics::Outcome::kDenied, DaemonMetrics::Check::kPolicy);
    m.Decision(DaemonMetrics::Outcome::kDeferred, DaemonMetrics::Check::kConcurrency);
    m.ObserveStreams({true, "cenapad", "tcp"}, {{0.002, 1000000}, {std::nullopt, 3000000}, {0.004, 0}}, 0.5);
    const std::string text = r.Expose();
    CHECK(Sample(text, R"(pororoca_session_errors_total{role="initiator",kind="Unavailable"})") == 2);
    CHECK(Sample(text, R"(pororoca_session_errors_total{role="responder",kind="PermissionDenied"})") == 1);
    CHECK(Sample(text, R"(pororoca_policy_decisions_total{outcome="denied",check="policy"})") == 1);
    CHECK(Sample(text, R"(pororoca_policy_decisions_total{outcome="deferred",check="concurrency"})") == 1);
    const std::string labels = R"({peer_institution="cenapad",transport="tcp"})";
    CHECK(Sample(text, "pororoca_stream_rtt_seconds_count" + labels) == 2);  // two streams knew theirs
    CHECK(Sample(text, "pororoca_stream_rtt_seconds_sum" + labels) == doctest::Approx(0.006));
    // Streams that moved bytes: 2 MB/s and 6 MB/s.
    CHECK(Sample(text, "pororoca_stream_throughput_bytes_per_second_count" + labels) == 2);
    CHECK(Sample(text, "pororoca_stream_throughput_bytes_per_second_sum" + labels) == 8000000);
    CHECK(
        Sample(
            text,
            R"(pororoca_stream_throughput_bytes_per_second_bucket{peer_institution="cenapad",transport="tcp",le="5000000"})") ==
        1);
  }
}

}  // namespace
}  // namespace pororoca::daemon
