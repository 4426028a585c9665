// BindTable: the responder's sessions waiting for their data connections. A session registers
// its id, its key (the TLS exporter of its control connection) and the number of streams; each
// data connection that arrives on the peer port presents a bind request (proto/wire.h) that is
// checked against it. A channel is counted before the connection is told it is bound, so once the
// initiator holds all its answers, the responder's session has all its channels: the initiator may
// start sending on the control connection at once, and the responder never mistakes that for a
// message of the set-up.
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "base/mutex.h"
#include "base/unique_fd.h"
#include "pororoca/transport.h"
#include "proto/wire.h"

namespace pororoca::daemon {

class BindTable {
 public:
  class Entry;
  // Wraps a bound connection in a message channel (socket options, fault injection).
  using ChannelFactory = std::function<std::unique_ptr<transport::MessageChannel>(UniqueFd)>;

  explicit BindTable(ChannelFactory factory) : factory_(std::move(factory)) {}

  // Registers a session that expects `streams` data connections; it is forgotten when the returned
  // handle is destroyed.
  std::shared_ptr<Entry> Open(const proto::SessionId& id, std::vector<std::byte> key, unsigned streams)
      PORO_EXCLUDES(mu_);

  // Serves one data connection (its first bytes are "PORD"): reads the bind request, checks it
  // against the registered session, counts the channel, answers. Errors name the cause; the
  // connection is then closed.
  Status Serve(UniqueFd fd) PORO_EXCLUDES(mu_);

  // Waits until every channel of `e` is bound (true), or `give_up` says stop, or `until` passes
  // (false). `give_up` is polled every `step`.
  bool WaitBound(Entry& e, std::chrono::steady_clock::time_point until, std::chrono::milliseconds step,
                 const std::function<bool()>& give_up) PORO_EXCLUDES(mu_);
  bool AllBound(Entry& e) PORO_EXCLUDES(mu_);
  // Takes the bound channels (stream order); the entry then accepts no more connections.
  std::vector<std::unique_ptr<transport::MessageChannel>> Take(Entry& e) PORO_EXCLUDES(mu_);
  // Wakes every waiter (shutdown).
  void WakeAll() { cv_.NotifyAll(); }

 private:
  void Close(const proto::SessionId& id) PORO_EXCLUDES(mu_);

  ChannelFactory factory_;
  Mutex mu_;
  CondVar cv_;
  std::map<proto::SessionId, Entry*> entries_ PORO_GUARDED_BY(mu_);  // removed by ~Entry
};

class BindTable::Entry {
 public:
  ~Entry() {
    if (table_) table_->Close(id_);
  }

 private:
  friend class BindTable;
  BindTable* table_ = nullptr;
  proto::SessionId id_{};
  std::vector<std::byte> key_;
  unsigned streams_ = 0;
  // Guarded by the table's mu_.
  unsigned bound_ = 0;
  bool closed_ = false;
  std::vector<std::unique_ptr<transport::MessageChannel>> channels_;
};

}  // namespace pororoca::daemon
