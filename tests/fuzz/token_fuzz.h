// What token_fuzz.cc verifies tokens against: issuer, audience, time and the issuer's key. Shared
// with the replay of the target in the unit tests (tests/unit/fuzz_replay), which signs its seed
// tokens with them so that they pass.
#pragma once

#include <openssl/evp.h>

#include <cstdint>

#include "crypto/keys.h"

namespace pororoca::fuzz::token_fuzz {

inline constexpr char kIssuer[] = "https://issuer.fuzz";
inline constexpr char kAudience[] = "dtn-a.fuzz";
inline constexpr int64_t kNow = 1795428000;  // 2026-11-23T10:00:00Z

// RFC 8032 test key 1: the same key on every run, so that crashes reproduce. Null if OpenSSL
// refuses it.
inline crypto::PKey NewIssuerKey() {
  static const unsigned char kSecret[32] = {0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a,
                                            0xf4, 0x92, 0xec, 0x2c, 0xc4, 0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32,
                                            0x69, 0x19, 0x70, 0x3b, 0xac, 0x03, 0x1c, 0xae, 0x7f, 0x60};
  return crypto::PKey(EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, kSecret, sizeof(kSecret)));
}

}  // namespace pororoca::fuzz::token_fuzz
