// libFuzzer target: crypto::ChunkSeal (src/crypto/chunk_seal.h), the AES-256-GCM seal of one
// data-channel message, under a fixed key. The input is
//
//   selector u8, channel u32le, seq u64le, aad length u8, secret length u8, then the body
//
// (a short input reads as if padded with zeros). The selector (mod 4) picks the branch and level:
//   0, 1  Open at integrity (0) or private (1) on arbitrary bytes: the body is a 16-byte tag (zero
//         padded), then aad, secret and payload (the lengths are clamped to what is left, the
//         payload takes the rest). Open must not crash and must fail with kDataLoss: an arbitrary
//         tag never verifies.
//   2, 3  Seal the body (split into aad, secret and payload the same way) at integrity (2) or
//         private (3), then Open: it restores the exact bytes; the sealed message with one bit
//         flipped (chosen by the input), or opened at the next sequence number or on the next
//         channel, fails with kDataLoss.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "crypto/chunk_seal.h"
#include "fuzz/fuzz_check.h"

namespace {

namespace crypto = pororoca::crypto;
using pororoca::Code;
using pororoca::Protection;
using Bytes = std::vector<std::byte>;
using Tag = std::array<std::byte, crypto::ChunkSeal::kTagSize>;

constexpr size_t kHeaderSize = 15;

// The same key on every run, so that findings reproduce.
crypto::ChunkSeal& FixedSeal(Protection level) {
  static const std::array<std::byte, crypto::ChunkSeal::kKeySize> kKey = [] {
    std::array<std::byte, crypto::ChunkSeal::kKeySize> k{};
    for (size_t i = 0; i < k.size(); ++i) k[i] = std::byte(0xa5 ^ (i * 29));
    return k;
  }();
  static auto integrity = crypto::ChunkSeal::Create(Protection::kIntegrity, kKey);
  static auto priv = crypto::ChunkSeal::Create(Protection::kPrivate, kKey);
  auto& seal = level == Protection::kPrivate ? priv : integrity;
  REQUIRE_INVARIANT(seal.ok());
  return *seal;
}

struct Message {
  Bytes aad;
  Bytes secret;
  Bytes payload;
  Tag tag{};
};

// Takes up to `n` bytes from the front of `body`.
Bytes Take(std::span<const std::byte>& body, size_t n) {
  n = std::min(n, body.size());
  Bytes out(body.begin(), body.begin() + static_cast<std::ptrdiff_t>(n));
  body = body.subspan(n);
  return out;
}

pororoca::Status Open(crypto::ChunkSeal& seal, uint32_t channel, uint64_t seq, Message m) {
  return seal.Open(channel, seq, m.aad, m.secret, m.payload, m.tag);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::array<uint8_t, kHeaderSize> h{};
  std::copy_n(data, std::min(size, kHeaderSize), h.begin());
  uint32_t channel = 0;
  uint64_t seq = 0;
  for (int i = 0; i < 4; ++i) channel |= uint32_t{h[1 + i]} << (8 * i);
  for (int i = 0; i < 8; ++i) seq |= uint64_t{h[5 + i]} << (8 * i);
  const size_t aad_size = h[13];
  const size_t secret_size = h[14];
  std::span<const std::byte> body;
  if (size > kHeaderSize)
    body = std::span(reinterpret_cast<const std::byte*>(data), size).subspan(kHeaderSize);

  const uint8_t which = h[0] % 4;
  const Protection level = which % 2 == 0 ? Protection::kIntegrity : Protection::kPrivate;
  crypto::ChunkSeal& seal = FixedSeal(level);
  Message m;

  if (which < 2) {
    const Bytes tag = Take(body, m.tag.size());
    std::copy(tag.begin(), tag.end(), m.tag.begin());
    m.aad = Take(body, aad_size);
    m.secret = Take(body, secret_size);
    m.payload = Take(body, body.size());
    const pororoca::Status st = seal.Open(channel, seq, m.aad, m.secret, m.payload, m.tag);
    REQUIRE_INVARIANT(st.code() == Code::kDataLoss);
    return 0;
  }

  m.aad = Take(body, aad_size);
  m.secret = Take(body, secret_size);
  m.payload = Take(body, body.size());
  const Message plain = m;
  REQUIRE_INVARIANT(seal.Seal(channel, seq, m.aad, m.secret, m.payload, m.tag).ok());
  REQUIRE_INVARIANT(m.aad == plain.aad);
  if (level == Protection::kIntegrity)
    REQUIRE_INVARIANT(m.secret == plain.secret && m.payload == plain.payload);
  const Message sealed = m;
  REQUIRE_INVARIANT(seal.Open(channel, seq, m.aad, m.secret, m.payload, m.tag).ok());
  REQUIRE_INVARIANT(m.aad == plain.aad && m.secret == plain.secret && m.payload == plain.payload);

  // One bit of the sealed message flipped: aad, secret, payload and tag in that order.
  const size_t bits =
      8 * (sealed.aad.size() + sealed.secret.size() + sealed.payload.size() + sealed.tag.size());
  size_t at = static_cast<size_t>((seq ^ channel) % bits);
  Message flipped = sealed;
  for (std::span<std::byte> part :
       {std::span<std::byte>(flipped.aad), std::span<std::byte>(flipped.secret),
        std::span<std::byte>(flipped.payload), std::span<std::byte>(flipped.tag)}) {
    if (at < 8 * part.size()) {
      part[at / 8] ^= std::byte(1u << (at % 8));
      break;
    }
    at -= 8 * part.size();
  }
  REQUIRE_INVARIANT(Open(seal, channel, seq, flipped).code() == Code::kDataLoss);
  REQUIRE_INVARIANT(Open(seal, channel, seq + 1, sealed).code() == Code::kDataLoss);
  REQUIRE_INVARIANT(Open(seal, channel + 1, seq, sealed).code() == Code::kDataLoss);
  return 0;
}
