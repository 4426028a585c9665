#include "daemon/events.h"

#include "daemon/transfer.h"

namespace pororoca::daemon {

void EventLog::Publish(std::string type, std::string transfer_id, int64_t uid, std::string user,
                       nlohmann::json data) {
  {
    MutexLock lock(&mu_);
    Event e;
    e.seq = next_seq_++;
    e.type = std::move(type);
    e.transfer_id = std::move(transfer_id);
    e.uid = uid;
    e.user = std::move(user);
    data["seq"] = e.seq;
    data["time_ms"] = NowMs();
    data["type"] = e.type;
    data["id"] = e.transfer_id;
    e.data = data.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    events_.push_back(std::move(e));
    while (events_.size() > capacity_) events_.pop_front();
  }
  published_.NotifyAll();
}

EventLog::ReadResult EventLog::Read(uint64_t after, const std::function<bool(const Event&)>& keep, size_t max,
                                    std::chrono::milliseconds wait) {
  const auto deadline = std::chrono::steady_clock::now() + wait;
  ReadResult r;
  MutexLock lock(&mu_);
  while (true) {
    // `after` may be a number from before a restart (larger than any now): start from the present.
    if (after >= next_seq_) after = next_seq_ - 1;
    r.missed = !events_.empty() && events_.front().seq > after + 1;
    for (const Event& e : events_) {
      if (e.seq <= after) continue;
      after = e.seq;
      if (keep && !keep(e)) continue;
      r.events.push_back(e);
      if (r.events.size() >= max) break;
    }
    r.last = after;
    if (!r.events.empty() || r.missed) return r;
    if (published_.WaitUntil(&mu_, deadline) == std::cv_status::timeout) {
      r.last = std::max(r.last, next_seq_ - 1);
      return r;
    }
  }
}

uint64_t EventLog::last_seq() const {
  MutexLock lock(&mu_);
  return next_seq_ - 1;
}

}  // namespace pororoca::daemon
