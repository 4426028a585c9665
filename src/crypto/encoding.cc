#include "crypto/encoding.h"

#include <array>
#include <cstdint>

#include "base/hex.h"

namespace pororoca::crypto {
namespace {

constexpr char kStd[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr char kUrl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

// Reverse of an alphabet: sextet value, or -1 for a character outside it.
constexpr std::array<int8_t, 256> Reverse(const char* alphabet) {
  std::array<int8_t, 256> r{};
  for (auto& v : r) v = -1;
  for (int i = 0; i < 64; ++i) r[static_cast<unsigned char>(alphabet[i])] = int8_t(i);
  return r;
}
constexpr std::array<int8_t, 256> kStdRev = Reverse(kStd);
constexpr std::array<int8_t, 256> kUrlRev = Reverse(kUrl);

std::string Encode(std::string_view in, const char* alphabet, bool pad) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  const auto* p = reinterpret_cast<const unsigned char*>(in.data());
  size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    uint32_t v = uint32_t(p[i]) << 16 | uint32_t(p[i + 1]) << 8 | p[i + 2];
    out += alphabet[v >> 18];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
    out += alphabet[v & 63];
  }
  const size_t rest = in.size() - i;
  if (rest == 0) return out;
  uint32_t v = uint32_t(p[i]) << 16 | (rest == 2 ? uint32_t(p[i + 1]) << 8 : 0);
  out += alphabet[v >> 18];
  out += alphabet[(v >> 12) & 63];
  if (rest == 2) out += alphabet[(v >> 6) & 63];
  if (pad) out.append(3 - rest, '=');
  return out;
}

std::string Describe(char c) {
  const auto u = static_cast<unsigned char>(c);
  if (u > 0x20 && u < 0x7f) return std::string("'") + c + "'";
  return "byte 0x" + ::pororoca::HexLower(std::string_view(&c, 1));
}

Result<std::string> Decode(std::string_view in, const std::array<int8_t, 256>& rev, bool padded,
                           std::string_view name) {
  auto bad = [&](const std::string& why) {
    return Status::InvalidArgument("invalid " + std::string(name) + ": " + why);
  };
  size_t n = in.size();
  if (padded) {
    if (n % 4 != 0) return bad("length " + std::to_string(n) + " is not a multiple of 4");
    if (n > 0 && in[n - 1] == '=') --n;
    if (n > 0 && in[n - 1] == '=' && n % 4 == 3) --n;
  }
  if (n % 4 == 1) return bad("length " + std::to_string(n) + " cannot encode whole bytes");
  std::string out;
  out.reserve(n / 4 * 3 + 2);
  uint32_t acc = 0;
  for (size_t i = 0; i < n; ++i) {
    const int8_t v = rev[static_cast<unsigned char>(in[i])];
    if (v < 0) {
      if (in[i] == '=')
        return bad(padded ? "padding inside the text at offset " + std::to_string(i)
                          : "padding '=' is not allowed");
      return bad(Describe(in[i]) + " at offset " + std::to_string(i));
    }
    acc = acc << 6 | uint32_t(v);
    if (i % 4 == 3) {
      out += char(acc >> 16);
      out += char(acc >> 8);
      out += char(acc);
      acc = 0;
    }
  }
  // A partial last group: 2 characters carry 1 byte (4 spare bits), 3 carry 2 bytes (2 spare bits).
  // Non-zero spare bits would give a second text for the same bytes.
  switch (n % 4) {
    case 2:
      if (acc & 0xf) return bad("non-zero trailing bits");
      out += char(acc >> 4);
      break;
    case 3:
      if (acc & 0x3) return bad("non-zero trailing bits");
      out += char(acc >> 10);
      out += char(acc >> 2);
      break;
    default:
      break;
  }
  return out;
}

}  // namespace

std::string HexLower(std::span<const unsigned char> bytes) {
  return ::pororoca::HexLower(std::as_bytes(bytes));
}

std::string Base64Encode(std::string_view bytes) { return Encode(bytes, kStd, true); }

Result<std::string> Base64Decode(std::string_view text) { return Decode(text, kStdRev, true, "base64"); }

std::string Base64UrlEncode(std::string_view bytes) { return Encode(bytes, kUrl, false); }

Result<std::string> Base64UrlDecode(std::string_view text) {
  return Decode(text, kUrlRev, false, "base64url");
}

}  // namespace pororoca::crypto
