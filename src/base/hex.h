// Lowercase hex of bytes: digests, key fingerprints, session ids, escaped bytes in messages. The
// one encoder; crypto::HexLower and proto::HexEncode forward here.
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>

namespace pororoca {

inline constexpr char kHexDigits[] = "0123456789abcdef";

// Two lowercase hex digits a byte.
inline std::string HexLower(std::span<const std::byte> bytes) {
  std::string s(bytes.size() * 2, '0');
  for (size_t i = 0; i < bytes.size(); ++i) {
    const auto b = std::to_integer<unsigned>(bytes[i]);
    s[2 * i] = kHexDigits[b >> 4];
    s[2 * i + 1] = kHexDigits[b & 0xf];
  }
  return s;
}
inline std::string HexLower(std::string_view bytes) { return HexLower(std::as_bytes(std::span(bytes))); }

}  // namespace pororoca
