#include "base/coding.h"

#include <doctest/doctest.h>

namespace pororoca {
namespace {

TEST_SUITE("base.coding") {
  TEST_CASE("fixed-width values round-trip little-endian") {
    std::byte b[8];
    EncodeFixed32(b, 0x01020304u);
    CHECK(std::to_integer<int>(b[0]) == 4);
    CHECK(DecodeFixed32(b) == 0x01020304u);
    EncodeFixed64(b, 0xfedcba9876543210ull);
    CHECK(std::to_integer<int>(b[0]) == 0x10);
    CHECK(DecodeFixed64(b) == 0xfedcba9876543210ull);
    EncodeFixed16(b, 0xbeef);
    CHECK(DecodeFixed16(b) == 0xbeef);
  }
}

}  // namespace
}  // namespace pororoca
