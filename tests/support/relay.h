// FlippingRelay: a TCP relay the test process runs between two daemons, standing for a bad network
// path. It forwards every connection to a target port on 127.0.0.1 in both directions; on data
// connections (those whose first bytes are the bind request "PORD"), after the bind handshake, it
// flips one bit every K bytes in each direction, K drawn uniformly from [min_gap, max_gap] by a
// seeded generator. Control connections (TLS) pass untouched. Its threads stop in the destructor.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "base/mutex.h"
#include "base/unique_fd.h"

namespace pororoca::test {

class FlippingRelay {
 public:
  // Listens on 127.0.0.1 (a free port) at once; forwards to the target set by SetTarget().
  FlippingRelay(uint64_t min_gap, uint64_t max_gap, uint64_t seed);
  ~FlippingRelay();
  FlippingRelay(const FlippingRelay&) = delete;
  FlippingRelay& operator=(const FlippingRelay&) = delete;

  void SetTarget(uint16_t port) { target_ = port; }
  uint16_t port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  uint64_t flips() const { return flips_.load(); }
  uint64_t data_connections() const { return data_connections_.load(); }

 private:
  void AcceptLoop();
  void Serve(UniqueFd client, uint64_t seed);

  const uint64_t min_gap_, max_gap_, seed_;
  UniqueFd listen_;
  uint16_t port_ = 0;
  std::atomic<uint16_t> target_{0};
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> flips_{0}, data_connections_{0};
  Mutex mu_;
  std::vector<int> open_fds_ PORO_GUARDED_BY(mu_);  // shut down by the destructor to end Serve()
  std::vector<std::thread> threads_ PORO_GUARDED_BY(mu_);
  std::thread acceptor_;
};

}  // namespace pororoca::test
