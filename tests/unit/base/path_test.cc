#include "base/path.h"

#include <doctest/doctest.h>

namespace pororoca {
namespace {

TEST_SUITE("base.path") {
  TEST_CASE("a path is under itself and under each of its ancestors") {
    CHECK(PathIsUnder("/data", "/data"));
    CHECK(PathIsUnder("/data/x", "/data"));
    CHECK(PathIsUnder("/data/x/y", "/data/x"));
    CHECK(PathIsUnder("/data/x/y", "/data"));
  }

  TEST_CASE("a shared string prefix that is not a whole component does not count") {
    CHECK_FALSE(PathIsUnder("/database", "/data"));
    CHECK_FALSE(PathIsUnder("/data-old/x", "/data"));
    CHECK_FALSE(PathIsUnder("/dat", "/data"));
  }

  TEST_CASE("the root contains every path, and nothing else contains the root") {
    CHECK(PathIsUnder("/", "/"));
    CHECK(PathIsUnder("/anything/at/all", "/"));
    CHECK_FALSE(PathIsUnder("/", "/data"));
  }

  TEST_CASE("siblings and parents are not under") {
    CHECK_FALSE(PathIsUnder("/data", "/data/x"));
    CHECK_FALSE(PathIsUnder("/other/x", "/data"));
  }
}

}  // namespace
}  // namespace pororoca
