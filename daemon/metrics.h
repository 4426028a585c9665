// The daemon's Prometheus metrics (GET /metrics; docs/operations.md, "Metrics"): what sessions
// moved, by direction, peer institution and transport; session errors by kind; policy decisions by
// outcome and check; per-stream RTT and throughput; and, computed when scraped, transfers and jobs
// by state, the queue, the federation manifest and the build.
//
// Cost: a session adds its figures when it ends (its live counters are read at a scrape while it
// runs), a decision adds to one counter; nothing here runs per chunk.
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "base/mutex.h"
#include "engine/stats.h"
#include "metrics/metrics.h"
#include "pororoca/status.h"

namespace pororoca::daemon {

class TransferManager;
class Federation;
class StagingCache;
struct Config;

class DaemonMetrics {
 public:
  // Registers the families and the session collector on `r`, which must outlive this.
  explicit DaemonMetrics(metrics::Registry* r);
  metrics::Registry& registry() { return *registry_; }

  // A session moving data: from Begin to End its live counters (`stats`) are part of the totals, so
  // a scrape during a long transfer sees the bytes move; End adds its final figures instead.
  struct SessionKey {
    bool sending = false;  // direction "sent" (this end sends) or "received"
    std::string peer_institution;
    std::string transport;
    bool operator<(const SessionKey& o) const {
      return std::tie(sending, peer_institution, transport) <
             std::tie(o.sending, o.peer_institution, o.transport);
    }
  };
  uint64_t BeginSession(const SessionKey& k, std::shared_ptr<const engine::TransferStats> stats)
      PORO_EXCLUDES(mu_);
  void EndSession(uint64_t id, const engine::StatsSnapshot& final_figures) PORO_EXCLUDES(mu_);

  // A session that ended with an error (kind: the Status code's name), by role.
  void SessionError(bool initiator, Code code);
  // The data channels of a session that ended: each one's round-trip time (if the transport knows
  // it) and its throughput (its payload bytes over the session's duration).
  struct StreamFigures {
    std::optional<double> rtt_s;
    uint64_t bytes = 0;
  };
  void ObserveStreams(const SessionKey& k, const std::vector<StreamFigures>& streams, double seconds);

  enum class Outcome { kAllowed, kDenied, kDeferred };
  // Which check decided: the homologated-endpoint check of a peer, the bearer token of a session,
  // the policy, the protection level, the policy's concurrency cap, a path inside a tree, the HTTPS
  // API's token check.
  enum class Check { kEndpoint, kToken, kPolicy, kProtection, kConcurrency, kPath, kApi };
  void Decision(Outcome o, Check c);

 private:
  struct Totals {
    uint64_t bytes = 0, files = 0, chunks_corrupt = 0, bytes_resent = 0;
    void Add(const engine::StatsSnapshot& s);
  };
  struct Live {
    SessionKey key;
    std::shared_ptr<const engine::TransferStats> stats;
  };
  void CollectTraffic(metrics::Writer& w) const PORO_EXCLUDES(mu_);

  metrics::Registry* registry_;
  metrics::CounterFamily& session_errors_;
  metrics::CounterFamily& decisions_;
  metrics::HistogramFamily& stream_rtt_;
  metrics::HistogramFamily& stream_throughput_;
  mutable Mutex mu_;
  std::map<SessionKey, Totals> done_ PORO_GUARDED_BY(mu_);
  std::map<uint64_t, Live> live_ PORO_GUARDED_BY(mu_);
  mutable std::map<SessionKey, Totals> exposed_ PORO_GUARDED_BY(mu_);  // the last totals shown
  uint64_t next_id_ PORO_GUARDED_BY(mu_) = 1;
};

// The collectors of state read when scraped: transfers and jobs by state and the queue (from
// `transfers`), the manifest in force (from `fed`), the build. All must outlive `r`'s expositions.
void AddStateCollectors(metrics::Registry& r, const TransferManager& transfers, const Federation& fed,
                        const Config& config);

// The staging cache's figures ([staging]; docs/staging.md): bytes used and allowed, datasets by
// state, leases, evictions. `staging` must outlive `r`'s expositions.
void AddStagingCollector(metrics::Registry& r, const StagingCache& staging);

}  // namespace pororoca::daemon
