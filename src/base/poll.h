// PollOne: poll(2) on one descriptor, the wait under every timed socket read, write, connect and
// accept (transport/tcp.cc, api/http.cc).
//
// Thread-safety: a free function without shared state.
#pragma once

#include <chrono>

namespace pororoca {

// Waits until `fd` is ready for `events` (POLLIN, POLLOUT...). A negative `timeout` waits without
// limit; zero only looks. EINTR is retried with what is left of the timeout. Returns >0 when ready,
// 0 on timeout, -1 on error with errno set.
int PollOne(int fd, short events, std::chrono::milliseconds timeout);

}  // namespace pororoca
