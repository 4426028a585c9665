#include "io/direct_align.h"

#include <doctest/doctest.h>

namespace pororoca::io {
namespace {

TEST_SUITE("io.direct_align") {
  TEST_CASE("a length is rounded up to the next whole O_DIRECT block, a whole one is kept") {
    CHECK(RoundUpToDirectAlign(0) == 0);
    CHECK(RoundUpToDirectAlign(1) == kDirectAlign);
    CHECK(RoundUpToDirectAlign(kDirectAlign - 1) == kDirectAlign);
    CHECK(RoundUpToDirectAlign(kDirectAlign) == kDirectAlign);
    CHECK(RoundUpToDirectAlign(kDirectAlign + 1) == 2 * kDirectAlign);
    CHECK(RoundUpToDirectAlign(8u << 20) == 8u << 20);
    CHECK(RoundUpToDirectAlign((8u << 20) - 100) == 8u << 20);
  }
}

}  // namespace
}  // namespace pororoca::io
