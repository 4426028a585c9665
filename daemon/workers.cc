#include "daemon/workers.h"

namespace pororoca::daemon {

void WorkerSet::Spawn(std::function<void()> fn) {
  std::list<Worker> finished;
  {
    MutexLock lock(&mu_);
    for (auto it = workers_.begin(); it != workers_.end();) {
      auto next = std::next(it);
      if (it->done->load()) finished.splice(finished.end(), workers_, it);
      it = next;
    }
    auto done = std::make_shared<std::atomic<bool>>(false);
    workers_.push_back(Worker{std::thread([fn = std::move(fn), done] {
                                fn();
                                done->store(true);
                              }),
                              done});
  }
  for (auto& w : finished) w.thread.join();  // they have returned: the join does not wait
}

void WorkerSet::JoinAll() {
  while (true) {
    std::list<Worker> workers;
    {
      MutexLock lock(&mu_);
      workers.swap(workers_);
    }
    if (workers.empty()) return;
    for (auto& w : workers) w.thread.join();  // a worker may have started another meanwhile
  }
}

size_t WorkerSet::running() const {
  MutexLock lock(&mu_);
  size_t n = 0;
  for (const auto& w : workers_) n += w.done->load() ? 0 : 1;
  return n;
}

}  // namespace pororoca::daemon
