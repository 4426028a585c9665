// Printable: how a value taken from a token (or a request) appears in an error message.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace pororoca::token {

// `s` with control characters replaced by '?' and, beyond max_bytes, cut at a UTF-8 character
// boundary and ended with "...", so that hostile input cannot forge log lines or flood them.
inline std::string Printable(std::string_view s, size_t max_bytes = 96) {
  bool cut = false;
  if (s.size() > max_bytes) {
    size_t n = max_bytes;
    while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xc0) == 0x80) --n;
    s = s.substr(0, n);
    cut = true;
  }
  std::string out(s);
  for (char& c : out) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) c = '?';
  }
  if (cut) out += "...";
  return out;
}

}  // namespace pororoca::token
