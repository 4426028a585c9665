#include "crypto/chunk_seal.h"

#include <doctest/doctest.h>
#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <set>
#include <span>
#include <vector>

namespace pororoca::crypto {
namespace {

using Bytes = std::vector<std::byte>;
using Tag = std::array<std::byte, ChunkSeal::kTagSize>;

constexpr size_t kBig = (size_t{4} << 20) + 3;  // 4 MiB + 3: many GCM blocks and a partial one

Bytes RandomBytes(size_t n, std::mt19937_64& rng) {
  Bytes out(n);
  for (size_t i = 0; i < n; i += 8) {
    const uint64_t r = rng();
    for (size_t j = 0; j < 8 && i + j < n; ++j) out[i + j] = std::byte((r >> (8 * j)) & 0xff);
  }
  return out;
}

Bytes TestKey(uint64_t seed) {
  std::mt19937_64 rng(seed);
  return RandomBytes(ChunkSeal::kKeySize, rng);
}

ChunkSeal MustCreate(Protection level, const Bytes& key) {
  auto seal = ChunkSeal::Create(level, key);
  REQUIRE(seal.ok());
  CHECK(seal->level() == level);
  return std::move(seal).value();
}

// One data-channel message: plaintext before Seal, sealed after it.
struct Message {
  Bytes aad;
  Bytes secret;
  Bytes payload;
  Tag tag{};
};

Message RandomMessage(size_t aad, size_t secret, size_t payload, std::mt19937_64& rng) {
  return Message{RandomBytes(aad, rng), RandomBytes(secret, rng), RandomBytes(payload, rng), Tag{}};
}

void MustSeal(ChunkSeal& seal, uint32_t channel, uint64_t seq, Message& m) {
  const Status st = seal.Seal(channel, seq, m.aad, m.secret, m.payload, m.tag);
  REQUIRE_MESSAGE(st.ok(), st.ToString());
}

// Opens a copy of `m` (Open works in place, and leaves the parts unspecified when it fails).
Status OpenCopy(ChunkSeal& seal, uint32_t channel, uint64_t seq, Message m) {
  return seal.Open(channel, seq, m.aad, m.secret, m.payload, m.tag);
}

void CheckDataLoss(const Status& st) { CHECK_MESSAGE(st.code() == Code::kDataLoss, st.ToString()); }

// The construction documented in chunk_seal.h, written again with OpenSSL's EVP interface: one
// AAD update with the lengths block (three u64le: aad, secret and payload sizes) and the aad (and,
// at integrity, secret and payload too), one update with secret || payload at private.
struct Reference {
  Bytes ciphertext;  // secret || payload encrypted; empty at integrity
  Tag tag{};
};

void PutLe(Bytes& out, uint64_t v, size_t width) {
  for (size_t i = 0; i < width; ++i) out.push_back(std::byte((v >> (8 * i)) & 0xff));
}

void Append(Bytes& out, const Bytes& part) { out.insert(out.end(), part.begin(), part.end()); }

Reference ReferenceSeal(Protection level, const Bytes& key, uint32_t channel, uint64_t seq,
                        const Message& m) {
  Bytes nonce;
  PutLe(nonce, channel, 4);
  PutLe(nonce, seq, 8);
  Bytes aad;
  PutLe(aad, m.aad.size(), 8);
  PutLe(aad, m.secret.size(), 8);
  PutLe(aad, m.payload.size(), 8);
  Append(aad, m.aad);
  Bytes plaintext;
  Append(plaintext, m.secret);
  Append(plaintext, m.payload);
  if (level == Protection::kIntegrity) {
    Append(aad, plaintext);
    plaintext.clear();
  }
  auto u = [](const Bytes& b) { return reinterpret_cast<const unsigned char*>(b.data()); };

  std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)> ctx(EVP_CIPHER_CTX_new(),
                                                                      EVP_CIPHER_CTX_free);
  REQUIRE(ctx);
  REQUIRE(EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) == 1);
  REQUIRE(EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, static_cast<int>(nonce.size()), nullptr) ==
          1);
  REQUIRE(EVP_EncryptInit_ex(ctx.get(), nullptr, nullptr, u(key), u(nonce)) == 1);
  int outl = 0;
  REQUIRE(EVP_EncryptUpdate(ctx.get(), nullptr, &outl, u(aad), static_cast<int>(aad.size())) == 1);
  Reference ref;
  ref.ciphertext.resize(plaintext.size());
  if (!plaintext.empty()) {
    REQUIRE(EVP_EncryptUpdate(ctx.get(), reinterpret_cast<unsigned char*>(ref.ciphertext.data()), &outl,
                              u(plaintext), static_cast<int>(plaintext.size())) == 1);
    REQUIRE(static_cast<size_t>(outl) == plaintext.size());
  }
  std::array<unsigned char, 16> sink{};
  REQUIRE(EVP_EncryptFinal_ex(ctx.get(), sink.data(), &outl) == 1);
  CHECK(outl == 0);
  REQUIRE(EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, static_cast<int>(ref.tag.size()),
                              ref.tag.data()) == 1);
  return ref;
}

constexpr std::array<Protection, 2> kLevels = {Protection::kIntegrity, Protection::kPrivate};

TEST_SUITE("crypto.chunk_seal") {
  TEST_CASE("Open after Seal restores the exact bytes at both levels, for payloads of 0 to 4 MiB + 3 bytes") {
    std::mt19937_64 rng(1);
    const Bytes key = TestKey(100);
    for (const Protection level : kLevels) {
      ChunkSeal seal = MustCreate(level, key);
      uint64_t seq = 0;
      for (const size_t size :
           {size_t{0}, size_t{1}, size_t{15}, size_t{16}, size_t{17}, size_t{4096}, kBig}) {
        CAPTURE(ProtectionName(level));
        CAPTURE(size);
        const Message plain = RandomMessage(40, 16, size, rng);
        Message m = plain;
        MustSeal(seal, 5, seq, m);
        CHECK(m.aad == plain.aad);  // authenticated only, at both levels
        if (level == Protection::kPrivate) {
          CHECK(m.secret != plain.secret);
          if (size > 0) CHECK(m.payload != plain.payload);
        } else {
          CHECK(m.secret == plain.secret);
          CHECK(m.payload == plain.payload);
        }
        const Status st = seal.Open(5, seq, m.aad, m.secret, m.payload, m.tag);
        REQUIRE_MESSAGE(st.ok(), st.ToString());
        CHECK(m.aad == plain.aad);
        CHECK(m.secret == plain.secret);
        CHECK(m.payload == plain.payload);
        ++seq;
      }
      // Empty secret and aad as well.
      const Message plain = RandomMessage(0, 0, 33, rng);
      Message m = plain;
      MustSeal(seal, 0, 0, m);
      REQUIRE(seal.Open(0, 0, m.aad, m.secret, m.payload, m.tag).ok());
      CHECK(m.payload == plain.payload);
    }
  }

  TEST_CASE("Open hands the payload's plaintext to the caller in order, in pieces of at most kPiece bytes") {
    std::mt19937_64 rng(77);
    const Bytes key = TestKey(78);
    for (Protection level : kLevels) {
      CAPTURE(ProtectionName(level));
      for (size_t size : {size_t{0}, size_t{1}, ChunkSeal::kPiece, ChunkSeal::kPiece + 1, kBig}) {
        CAPTURE(size);
        ChunkSeal seal = MustCreate(level, key);
        Message m = RandomMessage(32, 16, size, rng);
        const Bytes plain = m.payload;
        MustSeal(seal, 3, 9, m);
        Bytes seen;
        size_t pieces = 0;
        bool small = true;
        const Status st =
            seal.Open(3, 9, m.aad, m.secret, m.payload, m.tag, [&](std::span<const std::byte> p) {
              small = small && p.size() <= ChunkSeal::kPiece && !p.empty();
              seen.insert(seen.end(), p.begin(), p.end());
              ++pieces;
            });
        REQUIRE_MESSAGE(st.ok(), st.ToString());
        CHECK(small);
        CHECK(seen == plain);
        CHECK(pieces == (size + ChunkSeal::kPiece - 1) / ChunkSeal::kPiece);
      }
    }
  }

  TEST_CASE("every single-bit flip in aad, secret, payload or tag makes Open fail with kDataLoss") {
    std::mt19937_64 rng(2);
    const Bytes key = TestKey(200);
    for (const Protection level : kLevels) {
      ChunkSeal seal = MustCreate(level, key);
      for (const size_t size : {size_t{0}, size_t{17}, kBig}) {
        CAPTURE(ProtectionName(level));
        CAPTURE(size);
        Message m = RandomMessage(24, 16, size, rng);
        MustSeal(seal, 9, 77, m);
        REQUIRE(OpenCopy(seal, 9, 77, m).ok());

        // Flips bit `bit` of byte `at` of the part that `part` selects in a copy, and opens it.
        auto flipped = [&](int part, size_t at, unsigned bit) {
          CAPTURE(part);
          CAPTURE(at);
          CAPTURE(bit);
          Message t = m;
          std::byte* p = part == 0   ? t.aad.data()
                         : part == 1 ? t.secret.data()
                         : part == 2 ? t.payload.data()
                                     : t.tag.data();
          p[at] ^= std::byte(1u << bit);
          CheckDataLoss(seal.Open(9, 77, t.aad, t.secret, t.payload, t.tag));
        };
        auto every_bit = [&](int part, size_t n) {
          for (size_t at = 0; at < n; ++at) {
            for (unsigned bit = 0; bit < 8; ++bit) flipped(part, at, bit);
          }
        };
        every_bit(0, m.aad.size());
        every_bit(1, m.secret.size());
        every_bit(3, m.tag.size());
        if (size <= 4096) {
          every_bit(2, size);
        } else {  // sampled: the first bit, the last bit and a few random ones
          flipped(2, 0, 0);
          flipped(2, size - 1, 7);
          for (int i = 0; i < 6; ++i)
            flipped(2, static_cast<size_t>(rng() % size), static_cast<unsigned>(rng() % 8));
        }
      }
    }
  }

  TEST_CASE("a message opens only on its channel, at its sequence number and under its key") {
    std::mt19937_64 rng(3);
    const Bytes key = TestKey(300);
    Bytes other_bit = key;
    other_bit[31] ^= std::byte{0x80};
    for (const Protection level : kLevels) {
      CAPTURE(ProtectionName(level));
      ChunkSeal seal = MustCreate(level, key);
      Message m = RandomMessage(32, 16, 1000, rng);
      MustSeal(seal, 3, 1000, m);
      CheckDataLoss(OpenCopy(seal, 4, 1000, m));  // moved to another channel
      CheckDataLoss(OpenCopy(seal, 2, 1000, m));
      CheckDataLoss(OpenCopy(seal, 3, 1001, m));  // replayed: the receiver expects the next number
      CheckDataLoss(OpenCopy(seal, 3, 999, m));   // reordered
      CheckDataLoss(OpenCopy(seal, 1000, 3, m));  // channel and sequence swapped
      ChunkSeal flipped_key = MustCreate(level, other_bit);
      CheckDataLoss(OpenCopy(flipped_key, 3, 1000, m));
      ChunkSeal other_key = MustCreate(level, TestKey(301));
      CheckDataLoss(OpenCopy(other_key, 3, 1000, m));
      // Failed opens leave the seal usable: the genuine message still opens.
      CHECK(OpenCopy(seal, 3, 1000, m).ok());
    }
  }

  TEST_CASE("the parts' lengths are authenticated: a byte moved from one part to the next fails to open") {
    std::mt19937_64 rng(4);
    const Bytes key = TestKey(400);
    for (const Protection level : kLevels) {
      CAPTURE(ProtectionName(level));
      ChunkSeal seal = MustCreate(level, key);
      Message m = RandomMessage(32, 16, 100, rng);
      MustSeal(seal, 1, 2, m);
      REQUIRE(OpenCopy(seal, 1, 2, m).ok());

      // aad 32 + secret 16 read as aad 31 + secret 17, the same bytes in the same order.
      Message t = m;
      t.secret.insert(t.secret.begin(), t.aad.back());
      t.aad.pop_back();
      CheckDataLoss(OpenCopy(seal, 1, 2, t));
      // aad 32 + secret 16 read as aad 33 + secret 15.
      t = m;
      t.aad.push_back(t.secret.front());
      t.secret.erase(t.secret.begin());
      CheckDataLoss(OpenCopy(seal, 1, 2, t));
      // secret 16 + payload 100 read as secret 17 + payload 99, and as secret 15 + payload 101: at
      // private secret and payload are one GCM ciphertext, so only the lengths block tells them apart.
      t = m;
      t.secret.push_back(t.payload.front());
      t.payload.erase(t.payload.begin());
      CheckDataLoss(OpenCopy(seal, 1, 2, t));
      t = m;
      t.payload.insert(t.payload.begin(), t.secret.back());
      t.secret.pop_back();
      CheckDataLoss(OpenCopy(seal, 1, 2, t));
      // The whole secret moved into the payload.
      t = m;
      t.payload.insert(t.payload.begin(), t.secret.begin(), t.secret.end());
      t.secret.clear();
      CheckDataLoss(OpenCopy(seal, 1, 2, t));
    }
  }

  // Non-empty secret or payload only: with both empty the two levels feed GCM the same additional
  // data and no ciphertext, so they compute the same tag (the level itself is not authenticated).
  TEST_CASE("a message sealed at one level does not open at the other under the same key") {
    std::mt19937_64 rng(5);
    const Bytes key = TestKey(500);
    ChunkSeal integrity = MustCreate(Protection::kIntegrity, key);
    ChunkSeal priv = MustCreate(Protection::kPrivate, key);
    for (const size_t size : {size_t{1}, size_t{64}, size_t{4096}}) {
      CAPTURE(size);
      Message m = RandomMessage(32, 16, size, rng);
      MustSeal(integrity, 6, 7, m);
      CheckDataLoss(OpenCopy(priv, 6, 7, m));
      CHECK(OpenCopy(integrity, 6, 7, m).ok());
      Message p = RandomMessage(32, 16, size, rng);
      MustSeal(priv, 6, 8, p);
      CheckDataLoss(OpenCopy(integrity, 6, 8, p));
      CHECK(OpenCopy(priv, 6, 8, p).ok());
    }
  }

  TEST_CASE("one key, channels 0 to 7 and sequence numbers 0 to 99: 800 distinct ciphertexts and tags") {
    std::mt19937_64 rng(6);
    const Bytes key = TestKey(600);
    const Message plain = RandomMessage(32, 16, 64, rng);
    for (const Protection level : kLevels) {
      CAPTURE(ProtectionName(level));
      ChunkSeal seal = MustCreate(level, key);
      std::set<Bytes> ciphertexts;
      std::set<Tag> tags;
      for (uint32_t channel = 0; channel < 8; ++channel) {
        for (uint64_t seq = 0; seq < 100; ++seq) {
          Message m = plain;
          MustSeal(seal, channel, seq, m);
          Bytes ct = m.secret;
          Append(ct, m.payload);
          ciphertexts.insert(ct);
          tags.insert(m.tag);
        }
      }
      CHECK(tags.size() == 800);
      // At private every (channel, seq) gives its own keystream; at integrity nothing is encrypted.
      CHECK(ciphertexts.size() == (level == Protection::kPrivate ? 800u : 1u));
    }
  }

  TEST_CASE("Create refuses the clear level and keys that are not 32 bytes, with kInvalidArgument") {
    const Bytes key = TestKey(700);
    auto clear = ChunkSeal::Create(Protection::kClear, key);
    REQUIRE_FALSE(clear.ok());
    CHECK(clear.error().code() == Code::kInvalidArgument);
    for (const Protection level : kLevels) {
      CAPTURE(ProtectionName(level));
      for (const size_t n : {size_t{0}, size_t{16}, size_t{31}, size_t{33}, size_t{64}}) {
        CAPTURE(n);
        const Bytes bad(n, std::byte{0x5a});
        auto seal = ChunkSeal::Create(level, bad);
        REQUIRE_FALSE(seal.ok());
        CHECK(seal.error().code() == Code::kInvalidArgument);
      }
      CHECK(ChunkSeal::Create(level, key).ok());
    }
  }

  TEST_CASE("known answer: ChunkSeal is the documented construction, computed again with OpenSSL EVP") {
    std::mt19937_64 rng(7);
    const Bytes key = TestKey(800);
    // Sizes off the 16-byte block boundaries, so the parts meet inside GCM blocks.
    const Message plain = RandomMessage(29, 13, 50, rng);
    const uint32_t channel = 0x01020304;
    const uint64_t seq = 0x1122334455667788;
    for (const Protection level : kLevels) {
      CAPTURE(ProtectionName(level));
      const Reference ref = ReferenceSeal(level, key, channel, seq, plain);
      ChunkSeal seal = MustCreate(level, key);
      Message m = plain;
      MustSeal(seal, channel, seq, m);
      CHECK(m.aad == plain.aad);
      if (level == Protection::kPrivate) {
        REQUIRE(ref.ciphertext.size() == plain.secret.size() + plain.payload.size());
        const auto split = ref.ciphertext.begin() + static_cast<std::ptrdiff_t>(plain.secret.size());
        CHECK(m.secret == Bytes(ref.ciphertext.begin(), split));
        CHECK(m.payload == Bytes(split, ref.ciphertext.end()));
      } else {
        CHECK(ref.ciphertext.empty());
        CHECK(m.secret == plain.secret);
        CHECK(m.payload == plain.payload);
      }
      CHECK(m.tag == ref.tag);
    }
  }
}

}  // namespace
}  // namespace pororoca::crypto
