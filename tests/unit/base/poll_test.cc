#include "base/poll.h"

#include <doctest/doctest.h>
#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "base/unique_fd.h"

namespace pororoca {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

struct Pipe {
  Pipe() {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    r.Reset(fds[0]);
    w.Reset(fds[1]);
  }
  UniqueFd r, w;
};

TEST_SUITE("base.poll") {
  TEST_CASE("a zero timeout only looks: 0 when nothing is ready, >0 when it is") {
    Pipe p;
    CHECK(PollOne(p.r.get(), POLLIN, milliseconds(0)) == 0);
    CHECK(PollOne(p.w.get(), POLLOUT, milliseconds(0)) > 0);
    REQUIRE(::write(p.w.get(), "x", 1) == 1);
    CHECK(PollOne(p.r.get(), POLLIN, milliseconds(0)) > 0);
  }

  TEST_CASE("a positive timeout waits about that long and then reports 0") {
    Pipe p;
    auto t0 = Clock::now();
    CHECK(PollOne(p.r.get(), POLLIN, milliseconds(50)) == 0);
    CHECK(Clock::now() - t0 >= milliseconds(45));
  }

  TEST_CASE("a negative timeout waits without limit until the fd is ready") {
    Pipe p;
    std::thread writer([&] {
      std::this_thread::sleep_for(milliseconds(30));
      REQUIRE(::write(p.w.get(), "x", 1) == 1);
    });
    CHECK(PollOne(p.r.get(), POLLIN, milliseconds(-1)) > 0);
    writer.join();
  }

  TEST_CASE("a descriptor that is not open is reported at once, not waited on as a timeout") {
    // poll(2) answers POLLNVAL for it: PollOne returns >0 and the caller's read/write sees EBADF.
    auto t0 = Clock::now();
    CHECK(PollOne(1 << 20, POLLIN, milliseconds(200)) > 0);
    CHECK(Clock::now() - t0 < milliseconds(150));
  }
}

}  // namespace
}  // namespace pororoca
