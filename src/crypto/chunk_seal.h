// ChunkSeal: AES-256-GCM over one data-channel message, for the `integrity` and `private`
// protection levels (pororoca/protection.h).
//
// A message is sealed as three parts: `aad` (authenticated only), then `secret` and `payload`
// (encrypted in place at `private`, authenticated only at `integrity`, where the whole message is
// GCM's additional data and the tag is a GMAC). A 24-byte block with the three lengths is
// authenticated first, so no byte can move from one part to another. The 12-byte nonce is
// (channel:u32le, sequence:u64le): the sender numbers the messages of each channel from 0 and
// the receiver expects exactly the next number, so a message that is replayed, reordered,
// dropped or moved to another channel fails to open. Keys are fresh per session (TLS exporter),
// and a sender never uses one (channel, sequence) twice, so no nonce repeats under a key.
//
// Thread-safety: one ChunkSeal per channel and thread (it keeps an EVP context); not shared.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>

#include "crypto/openssl_ptr.h"
#include "pororoca/protection.h"
#include "pororoca/status.h"

namespace pororoca::crypto {

using CipherCtxPtr = OpenSslPtr<EVP_CIPHER_CTX, EVP_CIPHER_CTX_free>;

class ChunkSeal {
 public:
  static constexpr size_t kKeySize = 32;
  static constexpr size_t kTagSize = 16;

  // `level` is kIntegrity or kPrivate; `key` is kKeySize bytes. kInvalidArgument otherwise.
  static Result<ChunkSeal> Create(Protection level, std::span<const std::byte> key);

  // Seals one message and writes its tag. At kPrivate `secret` and `payload` are encrypted in place.
  Status Seal(uint32_t channel, uint64_t seq, std::span<const std::byte> aad, std::span<std::byte> secret,
              std::span<std::byte> payload, std::span<std::byte, kTagSize> tag);
  // Checks the tag and, at kPrivate, decrypts `secret` and `payload` in place. A wrong tag is
  // kDataLoss ("failed authentication"); the parts' contents are then unspecified. `plain`, if set,
  // sees the payload's plaintext in order, in pieces of at most kPiece bytes, each right after it
  // was decrypted (or authenticated), while it is in the cache: the caller hashes it there instead
  // of reading the whole payload again. It sees the bytes before the tag is checked.
  using PieceFn = std::function<void(std::span<const std::byte>)>;
  static constexpr size_t kPiece = 256 << 10;
  Status Open(uint32_t channel, uint64_t seq, std::span<const std::byte> aad, std::span<std::byte> secret,
              std::span<std::byte> payload, std::span<const std::byte, kTagSize> tag,
              const PieceFn& plain = {});

  Protection level() const { return level_; }

 private:
  ChunkSeal(Protection level, CipherCtxPtr enc, CipherCtxPtr dec)
      : level_(level), enc_(std::move(enc)), dec_(std::move(dec)) {}
  Status Run(bool encrypt, uint32_t channel, uint64_t seq, std::span<const std::byte> aad,
             std::span<std::byte> secret, std::span<std::byte> payload, std::span<std::byte, kTagSize> tag,
             const PieceFn* plain);

  Protection level_;
  CipherCtxPtr enc_;  // key set once; each message sets only its nonce
  CipherCtxPtr dec_;
};

}  // namespace pororoca::crypto
