// WorkerSet: the daemon's threads for transfers and peer connections. A finished thread is joined
// the next time a thread is started, so a long-running daemon does not accumulate them; the rest
// are joined by JoinAll at shutdown.
//
// Thread-safety: every method may be called from any thread; JoinAll must not be called from a
// worker.
#pragma once

#include <atomic>
#include <functional>
#include <list>
#include <memory>
#include <thread>

#include "base/mutex.h"

namespace pororoca::daemon {

class WorkerSet {
 public:
  WorkerSet() = default;
  WorkerSet(const WorkerSet&) = delete;
  WorkerSet& operator=(const WorkerSet&) = delete;
  ~WorkerSet() { JoinAll(); }

  void Spawn(std::function<void()> fn) PORO_EXCLUDES(mu_);
  void JoinAll() PORO_EXCLUDES(mu_);
  size_t running() const PORO_EXCLUDES(mu_);

 private:
  struct Worker {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  mutable Mutex mu_;
  std::list<Worker> workers_ PORO_GUARDED_BY(mu_);
};

}  // namespace pororoca::daemon
