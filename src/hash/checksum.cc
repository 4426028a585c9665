#include "pororoca/checksum.h"

#include <xxhash.h>

#include <cstdio>

#include "base/log.h"

namespace pororoca {

std::string Digest128::ToHex() const {
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(hi),
                static_cast<unsigned long long>(lo));
  return std::string(buf, 32);
}

Result<Digest128> Digest128::FromHex(std::string_view hex) {
  if (hex.size() != 32) return Status::InvalidArgument("digest must be 32 hex digits");
  Digest128 d;
  for (size_t i = 0; i < 32; ++i) {
    char c = hex[i];
    uint64_t v;
    if (c >= '0' && c <= '9')
      v = uint64_t(c - '0');
    else if (c >= 'a' && c <= 'f')
      v = uint64_t(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F')
      v = uint64_t(c - 'A' + 10);
    else
      return Status::InvalidArgument("digest has a non-hex character");
    uint64_t& part = i < 16 ? d.hi : d.lo;
    part = (part << 4) | v;
  }
  return d;
}

Digest128 Xxh3_128(std::span<const std::byte> data) {
  XXH128_hash_t h = XXH3_128bits(data.data(), data.size());
  return Digest128{h.high64, h.low64};
}

Hasher128::Hasher128() : state_(XXH3_createState()) {
  PORO_CHECK(state_ != nullptr);
  Reset();
}
Hasher128::~Hasher128() { XXH3_freeState(static_cast<XXH3_state_t*>(state_)); }
void Hasher128::Reset() { XXH3_128bits_reset(static_cast<XXH3_state_t*>(state_)); }
void Hasher128::Update(std::span<const std::byte> data) {
  XXH3_128bits_update(static_cast<XXH3_state_t*>(state_), data.data(), data.size());
}
Digest128 Hasher128::Finish() const {
  XXH128_hash_t h = XXH3_128bits_digest(static_cast<XXH3_state_t*>(state_));
  return Digest128{h.high64, h.low64};
}

FileDigester::FileDigester() : state_(XXH3_createState()) {
  PORO_CHECK(state_ != nullptr);
  XXH3_128bits_reset(static_cast<XXH3_state_t*>(state_));
}

FileDigester::~FileDigester() { XXH3_freeState(static_cast<XXH3_state_t*>(state_)); }

void FileDigester::AddChunk(const Digest128& d) {
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, XXH128_hash_t{d.lo, d.hi});
  XXH3_128bits_update(static_cast<XXH3_state_t*>(state_), &c, sizeof c);
}

Digest128 FileDigester::Finish() const {
  XXH128_hash_t h = XXH3_128bits_digest(static_cast<XXH3_state_t*>(state_));
  return Digest128{h.high64, h.low64};
}

}  // namespace pororoca
