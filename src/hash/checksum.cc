#include "pororoca/checksum.h"

#include <xxhash.h>

#include <cstdio>

#include "base/log.h"

// Debian's libxxhash is built for baseline x86-64, so XXH3_128bits runs its SSE2 kernel. The
// *_dispatch entry points of the same library (xxh_x86dispatch.h) pick SSE2, AVX2 or AVX-512 once,
// at the first call, from cpuid; their digests are the same bits (tests/unit/hash checks this
// against XXH3_128bits). Called by name: the header's macros that rename XXH3_128bits are off.
#if PORO_HAVE_XXH_DISPATCH
#define XXH_DISPATCH_DISABLE_REPLACE 1
#include <immintrin.h>
#include <xxh_x86dispatch.h>
#define PORO_XXH3_128 XXH3_128bits_dispatch
#define PORO_XXH3_128_UPDATE XXH3_128bits_update_dispatch
#else
#define PORO_XXH3_128 XXH3_128bits
#define PORO_XXH3_128_UPDATE XXH3_128bits_update
#endif

namespace pororoca {
namespace {

#if PORO_HAVE_XXH_DISPATCH
// The library's AVX2/AVX-512 kernels return with the upper halves of the vector registers in use
// (no vzeroupper). Every legacy-SSE instruction the thread runs afterwards (our code and the
// libraries built for baseline x86-64) then pays for that state: in one process, the baseline
// XXH3 kernel ran at 3.6 GB/s after a dispatched call instead of 15.5 GB/s (docs/performance.md).
// vzeroupper after each call clears it; it costs about a cycle and runs only where there is AVX.
__attribute__((target("avx"))) void ZeroUpperAvx() { _mm256_zeroupper(); }

void AfterDispatch() {
  static const bool have_avx = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx") != 0;
  }();
  if (have_avx) ZeroUpperAvx();
}
#else
void AfterDispatch() {}
#endif

}  // namespace

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
  XXH128_hash_t h = PORO_XXH3_128(data.data(), data.size());
  AfterDispatch();
  return Digest128{h.high64, h.low64};
}

Hasher128::Hasher128() : state_(XXH3_createState()) {
  PORO_CHECK(state_ != nullptr);
  Reset();
}
Hasher128::~Hasher128() { XXH3_freeState(static_cast<XXH3_state_t*>(state_)); }
void Hasher128::Reset() { XXH3_128bits_reset(static_cast<XXH3_state_t*>(state_)); }
void Hasher128::Update(std::span<const std::byte> data) {
  PORO_XXH3_128_UPDATE(static_cast<XXH3_state_t*>(state_), data.data(), data.size());
  AfterDispatch();
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
  PORO_XXH3_128_UPDATE(static_cast<XXH3_state_t*>(state_), &c, sizeof c);
  AfterDispatch();
}

Digest128 FileDigester::Finish() const {
  XXH128_hash_t h = XXH3_128bits_digest(static_cast<XXH3_state_t*>(state_));
  return Digest128{h.high64, h.low64};
}

}  // namespace pororoca
