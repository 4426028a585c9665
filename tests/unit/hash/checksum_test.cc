#include "pororoca/checksum.h"

#include <doctest/doctest.h>
#include <xxhash.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace pororoca {
namespace {

std::span<const std::byte> Bytes(const std::string& s) {
  return std::as_bytes(std::span<const char>(s.data(), s.size()));
}

// The library's own XXH3_128bits (this file does not include xxh_x86dispatch.h, so it is the
// baseline SSE2 kernel): the reference that Xxh3_128 and Hasher128, which use the run-time
// dispatched AVX2/AVX-512 kernels where the library has them, must match bit for bit.
Digest128 Reference(const std::byte* p, size_t n) {
  XXH128_hash_t h = XXH3_128bits(p, n);
  return Digest128{h.high64, h.low64};
}

std::vector<std::byte> RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::byte> v(n);
  for (auto& b : v) b = std::byte(rng() & 0xff);
  return v;
}

TEST_SUITE("hash.checksum") {
  TEST_CASE("one-shot XXH3-128 equals the library's baseline kernel for every size and alignment") {
    // Every length through 2 KiB covers each of XXH3's length classes (0, 1-3, 4-8, 9-16, 17-128,
    // 129-240, and the striped long path with its 1 KiB block boundary); then around larger powers
    // of two, each at 17 start offsets (unaligned loads in every kernel).
    const std::vector<std::byte> buf = RandomBytes((1 << 20) + 4096, 1);
    std::vector<size_t> sizes;
    for (size_t n = 0; n <= 2048; ++n) sizes.push_back(n);
    for (size_t p = 4096; p <= (1 << 20); p *= 4) {
      for (size_t d : {p - 65, p - 1, p, p + 1, p + 63, p + 1000}) sizes.push_back(d);
    }
    for (size_t n : sizes) {
      for (size_t off : {size_t(0), size_t(1), size_t(3), size_t(7), size_t(8), size_t(15), size_t(16),
                         size_t(31), size_t(32), size_t(33), size_t(63), size_t(64), size_t(100), size_t(255),
                         size_t(511), size_t(1000), size_t(4095)}) {
        if (n >= 4096 && off % 4 != 0 && off != 1) continue;  // bound the run time
        CAPTURE(n);
        CAPTURE(off);
        const std::byte* p = buf.data() + off;
        REQUIRE(Xxh3_128(std::span<const std::byte>(p, n)) == Reference(p, n));
      }
    }
  }

  TEST_CASE("streaming XXH3-128 over random splits equals the library's baseline one-shot") {
    std::mt19937 rng(7);
    for (size_t total : {size_t(0), size_t(1), size_t(239), size_t(241), size_t(1023), size_t(1025),
                         size_t(70000), size_t(1 << 20) + 17}) {
      const std::vector<std::byte> data = RandomBytes(total, uint32_t(total));
      for (int trial = 0; trial < 8; ++trial) {
        Hasher128 h;
        size_t off = 0;
        while (off < total) {
          // Pieces from 1 byte to 128 KiB, so some updates straddle the 256-byte internal buffer
          // and the 1 KiB stripe block and some cover many blocks at once.
          size_t want = size_t(1) << (rng() % 18);
          size_t n = std::min(total - off, size_t(rng() % want) + 1);
          h.Update(std::span<const std::byte>(data.data() + off, n));
          off += n;
        }
        CAPTURE(total);
        CAPTURE(trial);
        REQUIRE(h.Finish() == Reference(data.data(), total));
      }
    }
  }

  TEST_CASE("XXH3-128 of known inputs matches the reference values") {
    // Reference: `printf '' | xxhsum -H2` and `printf abc | xxhsum -H2` (xxHash 0.8.1).
    CHECK(Xxh3_128(Bytes("")).ToHex() == "99aa06d3014798d86001c324468d497f");
    CHECK(Xxh3_128(Bytes("abc")).ToHex() == "06b05ab6733a618578af5f94892f3950");
  }

  TEST_CASE("hex round-trips and rejects bad input") {
    Digest128 d{0x0123456789abcdefull, 0xfedcba9876543210ull};
    auto r = Digest128::FromHex(d.ToHex());
    REQUIRE(r.has_value());
    CHECK(*r == d);
    CHECK_FALSE(Digest128::FromHex("xyz").has_value());
    CHECK_FALSE(Digest128::FromHex(std::string(32, 'g')).has_value());
  }

  TEST_CASE("streaming hash over pieces equals the one-shot hash") {
    std::string data(300000, 'x');
    for (size_t i = 0; i < data.size(); ++i) data[i] = char((i * 7919) & 0xff);
    Hasher128 h;
    for (size_t off = 0; off < data.size(); off += 65536) {
      h.Update(Bytes(data.substr(off, 65536)));
    }
    CHECK(h.Finish() == Xxh3_128(Bytes(data)));
    h.Reset();
    CHECK(h.Finish() == Xxh3_128(Bytes("")));
  }

  TEST_CASE("file digest depends on chunk order and content") {
    Digest128 a = Xxh3_128(Bytes("chunk-a"));
    Digest128 b = Xxh3_128(Bytes("chunk-b"));
    FileDigester ab, ba, ab2;
    ab.AddChunk(a);
    ab.AddChunk(b);
    ba.AddChunk(b);
    ba.AddChunk(a);
    ab2.AddChunk(a);
    ab2.AddChunk(b);
    CHECK(ab.Finish() == ab2.Finish());
    CHECK_FALSE(ab.Finish() == ba.Finish());
    FileDigester empty;
    CHECK_FALSE(empty.Finish() == ab.Finish());
  }
}

}  // namespace
}  // namespace pororoca
