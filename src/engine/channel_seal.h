// The data channels' protection (pororoca/protection.h) as the engine applies it: one
// crypto::ChunkSeal per channel, the sealed chunk header's layout (proto/wire.h), and the message
// numbering that makes every nonce unique. The sender seals a message in its own pool buffer just
// before it goes to the transport (so every transport carries sealed bytes); the receiver opens it
// before the digest check.
//
// Thread-safety: one ChannelSeal per channel; Seal and Open are called by whichever thread sends or
// receives on that channel at the time, never by two at once.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "crypto/chunk_seal.h"
#include "pororoca/protection.h"
#include "pororoca/status.h"
#include "proto/wire.h"

namespace pororoca::engine {

class ChannelSeal {
 public:
  // One per channel, at `level` (not kClear) with the session's key.
  static Result<std::vector<ChannelSeal>> ForChannels(Protection level, std::span<const std::byte> key,
                                                      size_t channels);

  // `hdr` holds the encoded 48-byte chunk header; the tag is written after it. At private the
  // header's digest and the payload are encrypted in place. Numbers the message.
  Status Seal(std::span<std::byte, proto::kSealedChunkHeaderSize> hdr, std::span<std::byte> payload);
  // Checks the next message of this channel and, at private, decrypts its digest and payload in
  // place. kDataLoss if it fails authentication (it still counts as received).
  // `plain` as for crypto::ChunkSeal::Open: the payload's plaintext piece by piece, while in the cache.
  Status Open(std::span<std::byte, proto::kSealedChunkHeaderSize> hdr, std::span<std::byte> payload,
              const crypto::ChunkSeal::PieceFn& plain = {});

 private:
  ChannelSeal(crypto::ChunkSeal seal, uint32_t channel) : seal_(std::move(seal)), channel_(channel) {}

  crypto::ChunkSeal seal_;
  uint32_t channel_;
  uint64_t seq_ = 0;  // the next message's number on this channel
};

}  // namespace pororoca::engine
