// EventLog: the daemon's recent transfer events, numbered, for GET /v1/events (server-sent
// events). The TransferManager publishes one at every change of a transfer's state and, while it
// runs, one a second with its progress when that moved; a reader asks for the events after the
// last number it saw and waits for new ones. The log keeps the last `capacity` events in memory
// only: a reader that fell further behind is told so (ReadResult::missed) and re-reads the
// transfers it cares about.
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/mutex.h"

namespace pororoca::daemon {

struct Event {
  uint64_t seq = 0;
  std::string type;         // "transfer" (a change of state) or "progress"
  std::string transfer_id;  // the transfer it is about
  int64_t uid = -1;         // the transfer's owner, for who may see it: its local uid (-1: none)
  std::string user;         // and its federated identity (a remote caller sees it by this)
  // The event's body as JSON text (has "seq", "time_ms", "type", "id"): kept as text, a quarter
  // of the memory of the parsed object, and what the stream sends.
  std::string data;
};

class EventLog {
 public:
  explicit EventLog(size_t capacity = 10000) : capacity_(capacity) {}

  // Numbers the event (data gets "seq", "time_ms", "type" and "id") and wakes the readers.
  void Publish(std::string type, std::string transfer_id, int64_t uid, std::string user, nlohmann::json data)
      PORO_EXCLUDES(mu_);

  struct ReadResult {
    std::vector<Event> events;
    bool missed = false;  // events after `after` were dropped before this read
    uint64_t last = 0;    // the number to pass as `after` next time
  };
  // The events after number `after` that `keep` accepts (at most `max`), waiting up to `wait`
  // for one if there is none yet.
  ReadResult Read(uint64_t after, const std::function<bool(const Event&)>& keep, size_t max,
                  std::chrono::milliseconds wait) PORO_EXCLUDES(mu_);
  uint64_t last_seq() const PORO_EXCLUDES(mu_);

 private:
  const size_t capacity_;
  mutable Mutex mu_;
  CondVar published_;
  std::deque<Event> events_ PORO_GUARDED_BY(mu_);
  uint64_t next_seq_ PORO_GUARDED_BY(mu_) = 1;
};

}  // namespace pororoca::daemon
