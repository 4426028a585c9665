// PeerListener: the daemon's one peer port. Each accepted connection gets a worker thread that
// looks at its first bytes: "PORD" starts a data connection (BindTable), anything else is taken as
// a TLS ClientHello for a control session (the responder's session runner).
//
// Thread-safety: Start and Stop from the owner's thread.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <thread>

#include "base/unique_fd.h"
#include "daemon/bind_table.h"
#include "daemon/workers.h"
#include "pororoca/status.h"

namespace pororoca::daemon {

class PeerListener {
 public:
  using ControlHandler = std::function<void(UniqueFd)>;

  PeerListener(BindTable* binds, ControlHandler on_control, WorkerSet* workers)
      : binds_(binds), on_control_(std::move(on_control)), workers_(workers) {}
  ~PeerListener() { Stop(); }

  // Binds `listen` (host:port; port 0 picks one).
  Status Listen(const std::string& listen);
  void Start();
  void Stop();
  uint16_t port() const { return port_; }
  const std::string& host() const { return host_; }

 private:
  void AcceptLoop();
  void Serve(UniqueFd fd);

  BindTable* const binds_;
  const ControlHandler on_control_;
  WorkerSet* const workers_;
  UniqueFd listen_;
  std::string host_;
  uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace pororoca::daemon
