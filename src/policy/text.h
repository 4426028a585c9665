// Text helpers for policy error messages (internal to src/policy).
#pragma once

#include <string>
#include <string_view>

#include "base/hex.h"

namespace pororoca::policy {

// `s` in single quotes, fit for a message shown on a terminal: control and non-ASCII bytes become
// \xNN and anything past 80 bytes is cut ("..."). Manifests are signed, but a message may also
// quote what a user typed.
inline std::string Quoted(std::string_view s) {
  std::string out = "'";
  size_t n = s.size() > 80 ? 80 : s.size();
  for (size_t i = 0; i < n; ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c >= 0x7f || c == '\\') {
      out += "\\x";
      out += kHexDigits[c >> 4];
      out += kHexDigits[c & 0xf];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (n < s.size()) out += "...";
  out += '\'';
  return out;
}

}  // namespace pororoca::policy
