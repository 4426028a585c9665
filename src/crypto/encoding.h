// Text encodings of binary data: lowercase hex, base64 (RFC 4648 section 4) and base64url without
// padding (RFC 4648 section 5, as JWS uses it).
//
// The decoders are strict, because what they decode is often signed: there is exactly one accepted
// text for each byte string (no whitespace, no missing or extra padding, unused trailing bits must
// be zero). Errors are kInvalidArgument and say what is wrong and where.
//
// Thread-safety: pure functions; safe from any thread.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "pororoca/status.h"

namespace pororoca::crypto {

// Lowercase hex, two characters a byte.
std::string HexLower(std::span<const unsigned char> bytes);
inline std::string HexLower(std::string_view bytes) {
  return HexLower({reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size()});
}

// Standard alphabet (+/), padded with '=' to a multiple of four characters.
std::string Base64Encode(std::string_view bytes);
// Accepts only what Base64Encode produces.
Result<std::string> Base64Decode(std::string_view text);

// URL-safe alphabet (-_), no padding.
std::string Base64UrlEncode(std::string_view bytes);
// Accepts only what Base64UrlEncode produces: '=' is refused, as are '+', '/' and whitespace.
Result<std::string> Base64UrlDecode(std::string_view text);

}  // namespace pororoca::crypto
