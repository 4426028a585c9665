// Digests of all-zero chunks (sparse holes), computed once per length and cached.
#pragma once

#include <map>
#include <vector>

#include "base/mutex.h"
#include "pororoca/checksum.h"

namespace pororoca::engine {

class ZeroDigests {
 public:
  explicit ZeroDigests(uint32_t max_len) : max_len_(max_len) {}
  Digest128 Get(uint32_t len) PORO_EXCLUDES(mu_) {
    MutexLock lock(&mu_);
    auto it = cache_.find(len);
    if (it != cache_.end()) return it->second;
    if (zeros_.size() < len) zeros_.assign(std::max(len, max_len_), std::byte(0));
    Digest128 d = Xxh3_128(std::span<const std::byte>(zeros_.data(), len));
    if (cache_.size() < 64) cache_.emplace(len, d);
    return d;
  }

 private:
  uint32_t max_len_;
  Mutex mu_;
  std::vector<std::byte> zeros_ PORO_GUARDED_BY(mu_);
  std::map<uint32_t, Digest128> cache_ PORO_GUARDED_BY(mu_);
};

}  // namespace pororoca::engine
