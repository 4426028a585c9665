// Small helpers for the MessageChannel backends' unit tests (ucx_test.cc, fabric_test.cc).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstring>
#include <span>
#include <vector>

#include "pororoca/transport.h"

namespace pororoca::test {

inline transport::TransportOptions Idle(int ms) {
  transport::TransportOptions o;
  o.idle_timeout = std::chrono::milliseconds(ms);
  return o;
}

// n bytes that differ with `seed` and with the position.
inline std::vector<std::byte> Pattern(size_t n, int seed) {
  std::vector<std::byte> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<std::byte>((i * 131 + seed) & 0xff);
  return v;
}

inline std::span<const std::byte> Text(const char* s) {
  return {reinterpret_cast<const std::byte*>(s), std::strlen(s)};
}

}  // namespace pororoca::test
