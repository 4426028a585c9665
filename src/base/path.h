// The one "is this path at or below that one" rule for canonical absolute paths (no ".", "..",
// "//" or trailing '/'; "/" alone is the root), used wherever an export root, a policy prefix or a
// token scope bounds a path.
//
// Thread-safety: pure functions.
#pragma once

#include <string_view>

namespace pororoca {

// True if `path` is `prefix` or lies below it: "/data" contains "/data" and "/data/x" but not
// "/database"; "/" contains every path. Both must be canonical absolute paths.
constexpr bool PathIsUnder(std::string_view path, std::string_view prefix) {
  if (prefix == "/") return true;
  return path.starts_with(prefix) && (path.size() == prefix.size() || path[prefix.size()] == '/');
}

}  // namespace pororoca
