// The one rule for names that end up in messages, file names and certificates: institution,
// federation and policy rule ids, endpoint names.
//
// Thread-safety: pure functions.
#pragma once

#include <algorithm>
#include <string_view>

namespace pororoca {

// The rule in words, for error messages.
inline constexpr std::string_view kIdRule = "1-64 characters of [A-Za-z0-9._-]";

// True if `s` follows kIdRule.
constexpr bool ValidId(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

}  // namespace pororoca
