#include "base/hex.h"

#include <doctest/doctest.h>

#include <array>
#include <string>

#include "base/ids.h"

namespace pororoca {
namespace {

TEST_SUITE("base.hex") {
  TEST_CASE("HexLower writes two lowercase digits a byte, high nibble first") {
    const std::array<std::byte, 5> b{std::byte{0x00}, std::byte{0x0f}, std::byte{0xa0}, std::byte{0xff},
                                     std::byte{0x5c}};
    CHECK(HexLower(b) == "000fa0ff5c");
    CHECK(HexLower(std::string_view("\x01\xAB", 2)) == "01ab");
    CHECK(HexLower(std::string_view()) == "");
  }

  TEST_CASE("every byte value has its own two digits") {
    std::string all;
    for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
    const std::string hex = HexLower(all);
    REQUIRE(hex.size() == 512);
    for (int i = 0; i < 256; ++i) {
      CAPTURE(i);
      CHECK(hex[2 * i] == kHexDigits[i >> 4]);
      CHECK(hex[2 * i + 1] == kHexDigits[i & 15]);
    }
  }
}

TEST_SUITE("base.ids") {
  TEST_CASE("an id is 1 to 64 characters of letters, digits, '.', '_' and '-'") {
    CHECK(ValidId("a"));
    CHECK(ValidId("Inst-1.eu_west"));
    CHECK(ValidId(std::string(64, 'x')));
    CHECK_FALSE(ValidId(""));
    CHECK_FALSE(ValidId(std::string(65, 'x')));
    CHECK_FALSE(ValidId("bad id"));
    CHECK_FALSE(ValidId("a/b"));
    CHECK_FALSE(ValidId("caf\xc3\xa9"));
  }
}

}  // namespace
}  // namespace pororoca
