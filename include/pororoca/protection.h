// Protection levels of a transfer's data connections (docs/protocol.md, section 9; docs/policy.md).
//
//   clear      chunks as they are; the XXH3-128 digest catches accidents, not tampering
//   integrity  every data-channel message carries an AES-256-GCM tag over its header and payload
//              (a GMAC: keyed, so a relay that rewrites a chunk and its digest is caught)
//   private    every payload and chunk digest is encrypted with AES-256-GCM, header authenticated
//
// Keys come from the control session's TLS exporter, so each session has fresh ones. The levels
// are ordered: a policy's minimum is met by that level or a stricter one.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace pororoca {

enum class Protection : uint8_t { kClear = 0, kIntegrity = 1, kPrivate = 2 };

// The one spelling of a level: on the wire, in records, in policy rules and on the command line.
inline std::string_view ProtectionName(Protection p) {
  switch (p) {
    case Protection::kIntegrity:
      return "integrity";
    case Protection::kPrivate:
      return "private";
    case Protection::kClear:
      break;
  }
  return "clear";
}

inline std::optional<Protection> ParseProtection(std::string_view name) {
  if (name == "clear") return Protection::kClear;
  if (name == "integrity") return Protection::kIntegrity;
  if (name == "private") return Protection::kPrivate;
  return std::nullopt;
}

inline Protection Stricter(Protection a, Protection b) { return a < b ? b : a; }

}  // namespace pororoca
