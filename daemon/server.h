// pororocad: the daemon on a DTN. Daemon wires its rooms together and owns their lifetime:
//
//   PeerListener  the peer port: data connections go to the BindTable, control connections to the
//                 SessionRunner's responder
//   SessionRunner one session with a peer, either end (session.h)
//   TransferManager  the transfers local users submitted: records, attempts, retries (transfer_manager.h)
//   StagingCache  datasets pulled into [staging] dir for the node's jobs, leases, eviction (staging.h)
//   ApiRoutes     the HTTP/JSON API on the unix socket (api_routes.h)
//   Federation    what the daemon knows and enforces of the federation (federation.h)
#pragma once

#include <atomic>
#include <memory>
#include <thread>

#include "api/http.h"
#include "daemon/api_routes.h"
#include "daemon/bind_table.h"
#include "daemon/config.h"
#include "daemon/federation.h"
#include "daemon/peer_listener.h"
#include "daemon/session.h"
#include "daemon/staging.h"
#include "daemon/transfer_manager.h"
#include "daemon/workers.h"
#include "engine/export_root.h"
#include "pororoca/storage.h"

namespace pororoca::daemon {

class Daemon {
 public:
  static Result<std::unique_ptr<Daemon>> Create(Config config);
  // --check-config: what Create() would refuse, found without writing anything, so a check of a
  // running daemon's configuration leaves its state alone. Returns what was found, for the operator.
  static Result<std::string> Check(const Config& config);
  ~Daemon();

  // Binds the peer port and the API socket, resumes persisted transfers, starts serving.
  Status Start();
  // Stops accepting, cancels running work, joins threads.
  void Stop();
  // SIGHUP: the audit log is opened again under its name (logrotate moved the old file away).
  Status ReopenLogs() { return fed_->audit().Reopen(); }
  uint16_t peer_port() const { return peers_ ? peers_->port() : 0; }
  TransferManager& transfers() { return *transfers_; }

 private:
  explicit Daemon(Config config) : config_(std::move(config)) {}
  // A connected data socket as a message channel: socket options, and the fault-injection
  // decorator when [fault_injection] asks for it.
  std::unique_ptr<transport::MessageChannel> MakeChannel(UniqueFd fd);
  std::unique_ptr<transport::MessageChannel> WrapChannel(std::unique_ptr<transport::MessageChannel> ch);
  // The transports of [network] transports that can run here (a UCX context for "ucx").
  void SetUpTransports();

  Config config_;
  std::atomic<bool> stopping_{false};
  std::atomic<int> moving_{0};  // sessions moving data (in the engine): the pool's mapping waits for 0
  std::shared_ptr<std::atomic<uint64_t>> fault_counter_ = std::make_shared<std::atomic<uint64_t>>(0);
  std::unique_ptr<engine::ExportRoot> root_;
  std::unique_ptr<io::BufferPool> pool_;
  // The data transports offered (after pool_: the UCX context's registration of the pool goes first).
  std::shared_ptr<transport::UcxContext> ucx_;  // shared_ptr: the type is incomplete here
  std::shared_ptr<transport::FabricContext> fabric_;
  TransportSet transports_;
  std::unique_ptr<Federation> fed_;
  WorkerSet workers_;
  std::unique_ptr<BindTable> binds_;
  std::unique_ptr<SessionRunner> sessions_;
  std::unique_ptr<TransferManager> transfers_;
  std::unique_ptr<StagingCache> staging_;  // [staging]: null when off; opened in Start()
  std::unique_ptr<ApiRoutes> routes_;
  std::unique_ptr<PeerListener> peers_;
  std::unique_ptr<api::HttpServer> api_;
  std::unique_ptr<api::HttpServer> https_;  // [api] listen
  std::thread pool_thread_;  // maps the buffer pool's pages in idle time (BufferPool::Populate)
};

}  // namespace pororoca::daemon
