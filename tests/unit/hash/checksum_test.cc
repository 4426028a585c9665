#include "pororoca/checksum.h"

#include <doctest/doctest.h>

#include <string>
#include <vector>

namespace pororoca {
namespace {

std::span<const std::byte> Bytes(const std::string& s) {
  return std::as_bytes(std::span<const char>(s.data(), s.size()));
}

TEST_SUITE("hash.checksum") {
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
