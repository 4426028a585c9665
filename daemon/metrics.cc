#include "daemon/metrics.h"

#include <algorithm>
#include <ctime>

#include "daemon/config.h"
#include "daemon/federation.h"
#include "daemon/staging.h"
#include "daemon/transfer_manager.h"
#include "pororoca/config.h"

namespace pororoca::daemon {

namespace {

using metrics::Label;
using metrics::Type;
using metrics::Writer;

const char* DirectionName(bool sending) { return sending ? "sent" : "received"; }

const char* OutcomeName(DaemonMetrics::Outcome o) {
  switch (o) {
    case DaemonMetrics::Outcome::kAllowed:
      return "allowed";
    case DaemonMetrics::Outcome::kDenied:
      return "denied";
    case DaemonMetrics::Outcome::kDeferred:
      return "deferred";
  }
  return "unknown";
}

const char* CheckName(DaemonMetrics::Check c) {
  switch (c) {
    case DaemonMetrics::Check::kEndpoint:
      return "endpoint";
    case DaemonMetrics::Check::kToken:
      return "token";
    case DaemonMetrics::Check::kPolicy:
      return "policy";
    case DaemonMetrics::Check::kProtection:
      return "protection";
    case DaemonMetrics::Check::kConcurrency:
      return "concurrency";
    case DaemonMetrics::Check::kPath:
      return "path";
    case DaemonMetrics::Check::kApi:
      return "api";
  }
  return "unknown";
}

// "2026-12-07T06:42:23Z" (the manifest's issued_at) as seconds since the epoch; nullopt otherwise.
std::optional<int64_t> ParseUtc(const std::string& text) {
  std::tm tm{};
  const char* end = ::strptime(text.c_str(), "%Y-%m-%dT%H:%M:%SZ", &tm);
  if (end == nullptr || *end != '\0') return std::nullopt;
  return static_cast<int64_t>(::timegm(&tm));
}

// RTT from 50 us (a LAN) to 1 s (a satellite hop); per-stream throughput from 1 MB/s to 25 GB/s.
const std::vector<double> kRttBounds{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                     0.01,    0.025,  0.05,    0.1,    0.25,  0.5,    1};
const std::vector<double> kThroughputBounds{1e6, 5e6, 1e7,   2.5e7, 5e7,  1e8,   2.5e8,
                                            5e8, 1e9, 2.5e9, 5e9,   1e10, 2.5e10};

}  // namespace

DaemonMetrics::DaemonMetrics(metrics::Registry* r)
    : registry_(r),
      session_errors_(
          r->AddCounter("pororoca_session_errors_total",
                        "Sessions with a peer that ended with an error, by role (initiator or "
                        "responder) and kind (the error's code: Unavailable, PermissionDenied, ...).",
                        {"role", "kind"})),
      decisions_(
          r->AddCounter("pororoca_policy_decisions_total",
                        "Admission decisions by outcome (allowed, denied, deferred) and the check that "
                        "decided (endpoint, token, policy, protection, concurrency, path, api).",
                        {"outcome", "check"})),
      stream_rtt_(r->AddHistogram("pororoca_stream_rtt_seconds",
                                  "Round-trip time of each data stream of a session that ended, as the "
                                  "transport measured it (TCP: the kernel's smoothed RTT).",
                                  {"peer_institution", "transport"}, kRttBounds)),
      stream_throughput_(r->AddHistogram("pororoca_stream_throughput_bytes_per_second",
                                         "Payload bytes per second of each data stream of a session that "
                                         "ended (its bytes over the session's duration).",
                                         {"peer_institution", "transport"}, kThroughputBounds)) {
  r->AddCollector([this](Writer& w) { CollectTraffic(w); });
}

void DaemonMetrics::Totals::Add(const engine::StatsSnapshot& s) {
  bytes += s.bytes_sent;
  files += s.files_done >= s.files_skipped ? s.files_done - s.files_skipped : 0;
  chunks_corrupt += s.chunks_corrupt;
  bytes_resent += s.bytes_resent;
}

uint64_t DaemonMetrics::BeginSession(const SessionKey& k,
                                     std::shared_ptr<const engine::TransferStats> stats) {
  MutexLock lock(&mu_);
  const uint64_t id = next_id_++;
  live_.emplace(id, Live{k, std::move(stats)});
  done_[k];  // the series exists from the first session on, at 0
  return id;
}

void DaemonMetrics::EndSession(uint64_t id, const engine::StatsSnapshot& final_figures) {
  MutexLock lock(&mu_);
  auto it = live_.find(id);
  if (it == live_.end()) return;
  done_[it->second.key].Add(final_figures);
  live_.erase(it);
}

void DaemonMetrics::SessionError(bool initiator, Code code) {
  session_errors_.With({initiator ? "initiator" : "responder", CodeName(code)}).Add();
}

void DaemonMetrics::ObserveStreams(const SessionKey& k, const std::vector<StreamFigures>& streams,
                                   double seconds) {
  metrics::Histogram& rtt = stream_rtt_.With({k.peer_institution, k.transport});
  metrics::Histogram& tput = stream_throughput_.With({k.peer_institution, k.transport});
  for (const StreamFigures& f : streams) {
    if (f.rtt_s) rtt.Observe(*f.rtt_s);
    if (seconds > 0 && f.bytes > 0) tput.Observe(static_cast<double>(f.bytes) / seconds);
  }
}

void DaemonMetrics::Decision(Outcome o, Check c) { decisions_.With({OutcomeName(o), CheckName(c)}).Add(); }

void DaemonMetrics::CollectTraffic(Writer& w) const {
  std::map<SessionKey, Totals> totals;
  std::map<SessionKey, unsigned> active;
  {
    MutexLock lock(&mu_);
    totals = done_;
    for (const auto& [id, l] : live_) {
      totals[l.key].Add(l.stats->Snapshot());
      active[l.key]++;
    }
    // A live session's files are its files done less those skipped, two counters read one after
    // the other: never show a total below one shown before.
    for (auto& [k, t] : totals) {
      Totals& seen = exposed_[k];
      for (uint64_t Totals::*f :
           {&Totals::bytes, &Totals::files, &Totals::chunks_corrupt, &Totals::bytes_resent}) {
        t.*f = std::max(t.*f, seen.*f);
      }
      seen = t;
    }
  }
  struct Counter {
    const char* name;
    const char* help;
    uint64_t Totals::*field;
  };
  for (const Counter& c : {
           Counter{"pororoca_bytes_total",
                   "Payload bytes moved over data channels, by direction (sent, received), peer institution "
                   "and transport; sessions in progress count as they go.",
                   &Totals::bytes},
           Counter{"pororoca_files_total",
                   "Files moved (committed at the destination, not counting those already there), by "
                   "direction, peer institution and transport.",
                   &Totals::files},
           Counter{"pororoca_chunks_corrupt_total",
                   "Chunks that failed verification at the receiver and were sent again.",
                   &Totals::chunks_corrupt},
           Counter{"pororoca_bytes_resent_total",
                   "Payload bytes sent again (after a corrupt chunk, or by an earlier attempt).",
                   &Totals::bytes_resent},
       }) {
    w.Family(c.name, Type::kCounter, c.help);
    for (const auto& [k, t] : totals) {
      w.Sample({{"direction", DirectionName(k.sending)},
                {"peer_institution", k.peer_institution},
                {"transport", k.transport}},
               static_cast<double>(t.*c.field));
    }
  }
  w.Family("pororoca_sessions_active", Type::kGauge,
           "Sessions moving data now, by direction, peer institution and transport.");
  for (const auto& [k, t] : totals) {
    auto a = active.find(k);
    w.Sample({{"direction", DirectionName(k.sending)},
              {"peer_institution", k.peer_institution},
              {"transport", k.transport}},
             a == active.end() ? 0 : a->second);
  }
}

void AddStateCollectors(metrics::Registry& r, const TransferManager& transfers, const Federation& fed,
                        const Config& config) {
  r.AddCollector([&transfers, &config](Writer& w) {
    TransferManager::StateCounts c = transfers.CountStates();
    w.Family("pororoca_transfers", Type::kGauge,
             "Transfers on record (submitted here, not yet forgotten) by state.");
    for (size_t i = 0; i < c.transfers.size(); ++i) {
      const std::string state(TransferStateName(static_cast<TransferState>(i)));
      w.Sample({{"state", state}}, static_cast<double>(c.transfers[i]));
    }
    w.Family("pororoca_jobs", Type::kGauge, "Bulk jobs on record by state.");
    for (const char* state : {"queued", "running", "succeeded", "partial", "failed", "cancelled"}) {
      auto it = c.jobs.find(state);
      w.Sample({{"state", state}}, it == c.jobs.end() ? 0 : static_cast<double>(it->second));
    }
    w.Family("pororoca_queue_waiting", Type::kGauge,
             "Transfers waiting to start: queued, or retrying after their backoff.");
    w.Sample({}, static_cast<double>(c.waiting));
    w.Family("pororoca_queue_running", Type::kGauge, "Transfer attempts running now.");
    w.Sample({}, static_cast<double>(c.running));
    w.Family("pororoca_queue_max_running", Type::kGauge,
             "[queue] max_running: attempts that may run at once.");
    w.Sample({}, config.max_running);
  });
  r.AddCollector([&fed](Writer& w) {
    auto m = fed.manifest();
    w.Family("pororoca_manifest_serial", Type::kGauge, "Serial of the federation manifest in force.");
    w.Sample({}, static_cast<double>(m->serial()));
    if (auto issued = ParseUtc(m->issued_at())) {
      w.Family("pororoca_manifest_issued_timestamp_seconds", Type::kGauge,
               "When the manifest in force was signed (its issued_at), in seconds since the epoch.");
      w.Sample({}, static_cast<double>(*issued));
      w.Family("pororoca_manifest_age_seconds", Type::kGauge,
               "Seconds since the manifest in force was signed.");
      w.Sample({}, static_cast<double>(std::time(nullptr) - *issued));
    }
    w.Family("pororoca_federation_endpoints", Type::kGauge,
             "Endpoints of the manifest in force by status (active, suspended, revoked).");
    std::map<std::string_view, unsigned> by_status{{"active", 0}, {"suspended", 0}, {"revoked", 0}};
    for (const auto& e : m->endpoints()) by_status[federation::EndpointStatusName(e.status)]++;
    for (const auto& [status, n] : by_status) w.Sample({{"status", status}}, n);
  });
  r.AddCollector([&config](Writer& w) {
    w.Family("pororoca_build_info", Type::kGauge,
             "Always 1: the version of this daemon and its endpoint name.");
    w.Sample({{"version", PORO_VERSION}, {"endpoint", config.endpoint_name}}, 1);
  });
}

void AddStagingCollector(metrics::Registry& r, const StagingCache& staging) {
  r.AddCollector([&staging](Writer& w) {
    const StagingCache::Totals t = staging.GetTotals();
    w.Family("pororoca_staging_used_bytes", Type::kGauge,
             "Bytes the staging cache's datasets take (ready, and what pulls have written so far).");
    w.Sample({}, static_cast<double>(t.used));
    w.Family("pororoca_staging_quota_bytes", Type::kGauge, "[staging] quota: the cache's size.");
    w.Sample({}, static_cast<double>(t.quota));
    w.Family("pororoca_staging_datasets", Type::kGauge, "Datasets in the staging cache by state.");
    const char* states[] = {"ready", "staging", "failed"};
    for (size_t i = 0; i < 3; ++i) w.Sample({{"state", states[i]}}, static_cast<double>(t.datasets[i]));
    w.Family("pororoca_staging_leases", Type::kGauge, "Leases held by jobs on staged datasets.");
    w.Sample({}, static_cast<double>(t.leases));
    w.Family("pororoca_staging_evictions_total", Type::kCounter,
             "Datasets evicted from the staging cache (least recently used, above the high watermark).");
    w.Sample({}, static_cast<double>(t.evictions));
    w.Family("pororoca_staging_evicted_bytes_total", Type::kCounter, "Bytes evicted from the staging cache.");
    w.Sample({}, static_cast<double>(t.evicted_bytes));
  });
}

}  // namespace pororoca::daemon
