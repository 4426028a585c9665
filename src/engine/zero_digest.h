// Digests of all-zero chunks (sparse holes), computed once per length and cached.
#pragma once

#include <map>
#include <mutex>
#include <vector>

#include "pororoca/checksum.h"

namespace pororoca::engine {

class ZeroDigests {
 public:
  explicit ZeroDigests(uint32_t max_len) : max_len_(max_len) {}
  Digest128 Get(uint32_t len) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = cache_.find(len);
    if (it != cache_.end()) return it->second;
    if (zeros_.size() < len) zeros_.assign(std::max(len, max_len_), std::byte(0));
    Digest128 d = Xxh3_128(std::span<const std::byte>(zeros_.data(), len));
    if (cache_.size() < 64) cache_.emplace(len, d);
    return d;
  }

 private:
  uint32_t max_len_;
  std::mutex mu_;
  std::vector<std::byte> zeros_;
  std::map<uint32_t, Digest128> cache_;
};

}  // namespace pororoca::engine
