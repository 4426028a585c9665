#include "daemon/events.h"

#include <doctest/doctest.h>

#include <thread>

namespace pororoca::daemon {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;

TEST_CASE("events are numbered in order, read after a number, filtered, and waited for") {
  EventLog log;
  CHECK(log.last_seq() == 0);
  log.Publish("transfer", "t1", 1000, "", json{{"state", "queued"}});
  log.Publish("transfer", "t2", 1001, "", json{{"state", "queued"}});
  log.Publish("progress", "t1", 1000, "", json{{"progress", {{"bytes_verified", 5}}}});
  CHECK(log.last_seq() == 3);
  auto all = log.Read(0, nullptr, 100, milliseconds(0));
  REQUIRE(all.events.size() == 3);
  CHECK(!all.missed);
  CHECK(all.last == 3);
  const json first_data = json::parse(all.events[0].data);
  CHECK(first_data["seq"] == 1);
  CHECK(first_data["type"] == "transfer");
  CHECK(first_data["id"] == "t1");
  CHECK(first_data["state"] == "queued");
  CHECK(first_data["time_ms"].get<int64_t>() > 0);
  CHECK(all.events[2].type == "progress");
  // Only those the filter keeps; the next number still moves past the others.
  auto mine = log.Read(
      0, [](const Event& e) { return e.uid == 1000; }, 100, milliseconds(0));
  REQUIRE(mine.events.size() == 2);
  CHECK(mine.events[1].seq == 3);
  CHECK(mine.last == 3);
  // At most `max`, then on from there.
  auto first = log.Read(0, nullptr, 1, milliseconds(0));
  REQUIRE(first.events.size() == 1);
  CHECK(first.last == 1);
  CHECK(log.Read(first.last, nullptr, 100, milliseconds(0)).events.size() == 2);
  // Nothing new: waits, and returns what is published meanwhile.
  std::thread later([&] {
    std::this_thread::sleep_for(milliseconds(50));
    log.Publish("transfer", "t1", 1000, "", json{{"state", "running"}});
  });
  auto next = log.Read(3, nullptr, 100, milliseconds(5000));
  later.join();
  REQUIRE(next.events.size() == 1);
  CHECK(json::parse(next.events[0].data)["state"] == "running");
  // Nothing at all: an empty answer after the wait.
  auto none = log.Read(4, nullptr, 100, milliseconds(20));
  CHECK(none.events.empty());
  CHECK(none.last == 4);
  // A number from before a restart (larger than any): from the present on.
  CHECK(log.Read(99, nullptr, 100, milliseconds(0)).last == 4);
}

TEST_CASE("a reader that fell behind the kept events is told so") {
  EventLog log(2);
  for (int i = 0; i < 5; ++i) log.Publish("transfer", "t", 1, "", json::object());
  auto r = log.Read(1, nullptr, 100, milliseconds(0));
  CHECK(r.missed);
  REQUIRE(r.events.size() == 2);
  CHECK(r.events[0].seq == 4);
  CHECK(!log.Read(3, nullptr, 100, milliseconds(0)).missed);
}

}  // namespace
}  // namespace pororoca::daemon
