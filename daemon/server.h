// pororocad: the daemon on a DTN. It listens for peers (one TCP port: TLS control connections and
// bound data connections), serves the local HTTP/JSON API on a unix socket, runs the transfers that
// local users submit (persisted in the state directory, retried after failures and after a restart)
// and answers the transfers that peers open.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "api/http.h"
#include "daemon/config.h"
#include "daemon/federation.h"
#include "engine/export_root.h"
#include "engine/session.h"
#include "pororoca/storage.h"
#include "proto/wire.h"
#include "transport/tls.h"

namespace pororoca::daemon {

struct Transfer;
struct PendingSession;

class Daemon {
 public:
  static Result<std::unique_ptr<Daemon>> Create(Config config);
  ~Daemon();

  // Binds the peer port and the API socket, resumes persisted transfers, starts serving.
  Status Start();
  // Stops accepting, cancels running work, joins threads.
  void Stop();
  uint16_t peer_port() const { return peer_port_; }

 private:
  explicit Daemon(Config config);

  // Peer side.
  void PeerAcceptLoop();
  void ServePeer(UniqueFd fd);
  void ServeBind(UniqueFd fd);
  void ServeControl(UniqueFd fd);
  Status RunResponder(transport::TlsStream* tls, engine::ControlChannel& ctl);

  // Initiator side.
  void StartTransfer(const std::shared_ptr<Transfer>& t);
  void RunTransfer(std::shared_ptr<Transfer> t);
  Result<nlohmann::json> Attempt(Transfer& t);
  Status Persist(const Transfer& t);
  void LoadPersisted();
  void LoadRecord(const std::string& path);
  // Forgets the finished transfers that ended more than [storage] keep_finished_s ago (their
  // records and their entries in transfers_); at most once per min(60 s, keep_finished_s / 2).
  void PruneFinished();
  // A record of a transfer that ended before this (ms since the epoch) is forgotten; 0 = never.
  int64_t PruneCutoffMs() const;

  // API.
  void RegisterRoutes();
  api::HttpResponse ApiSubmit(const api::HttpRequest& req);
  api::HttpResponse ApiList(const api::HttpRequest& req);
  api::HttpResponse ApiGet(const api::HttpRequest& req);
  api::HttpResponse ApiCancel(const api::HttpRequest& req);
  api::HttpResponse ApiFederation();
  api::HttpResponse ApiPolicyCheck(const api::HttpRequest& req);
  nlohmann::json TransferJson(const Transfer& t) const;

  Result<std::vector<std::unique_ptr<transport::MessageChannel>>> OpenDataChannels(
      const std::string& host, uint16_t port, const proto::SessionId& session, std::span<const std::byte> key,
      unsigned n);
  engine::EngineOptions EngineOptionsFrom(const nlohmann::json& o) const;
  // Wraps a data channel in the fault-injection decorator when [fault_injection] asks for it.
  std::unique_ptr<transport::MessageChannel> MaybeFault(std::unique_ptr<transport::MessageChannel> ch);

  Config config_;
  std::unique_ptr<engine::ExportRoot> root_;
  std::unique_ptr<io::BufferPool> pool_;
  std::unique_ptr<Federation> fed_;
  std::unique_ptr<api::HttpServer> api_;
  UniqueFd peer_listen_;
  uint16_t peer_port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread peer_thread_;
  std::thread pool_thread_;     // maps the buffer pool's pages in idle time (BufferPool::Populate)
  std::atomic<int> moving_{0};  // sessions moving data (in the engine): the pool's mapping waits for 0

  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::shared_ptr<Transfer>> transfers_;  // guarded by mu_
  std::chrono::steady_clock::time_point last_prune_;            // guarded by mu_ (PruneFinished)
  struct Worker {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  void SpawnWorker(std::function<void()> fn);
  std::list<Worker> workers_;                                             // guarded by mu_
  std::map<proto::SessionId, std::shared_ptr<PendingSession>> sessions_;  // guarded by mu_
  std::shared_ptr<std::atomic<uint64_t>> fault_counter_ = std::make_shared<std::atomic<uint64_t>>(0);
};

// Random hex id (16 bytes of entropy).
std::string NewId();

}  // namespace pororoca::daemon
