// ConnectedTcpPair: two ends of one TCP connection on 127.0.0.1 (a: the connecting side, b: the
// accepted side), for tests that drive a transport or a session end by hand.
#pragma once

#include <doctest/doctest.h>

#include <chrono>
#include <utility>

#include "base/unique_fd.h"
#include "transport/tcp.h"

namespace pororoca::test {

struct FdPair {
  UniqueFd a;  // connecting side
  UniqueFd b;  // accepted side
};

inline FdPair ConnectedTcpPair() {
  auto lfd = transport::TcpListen("127.0.0.1", 0, 8);
  REQUIRE(lfd.ok());
  auto port = transport::LocalPort(lfd->get());
  REQUIRE(port.ok());
  auto a = transport::TcpConnect("127.0.0.1", *port, std::chrono::milliseconds(2000));
  REQUIRE(a.ok());
  auto b = transport::TcpAccept(lfd->get(), std::chrono::milliseconds(2000));
  REQUIRE(b.ok());
  return FdPair{std::move(*a), std::move(*b)};
}

}  // namespace pororoca::test
