#include "crypto/chunk_seal.h"

#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cstring>

#include "base/coding.h"
#include "crypto/keys.h"

namespace pororoca::crypto {

namespace {

using Bytes = unsigned char;

Bytes* U(std::byte* p) { return reinterpret_cast<Bytes*>(p); }
const Bytes* U(const std::byte* p) { return reinterpret_cast<const Bytes*>(p); }

Result<CipherCtxPtr> NewContext(bool encrypt, std::span<const std::byte> key) {
  CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  if (!ctx) return Status::Internal("EVP_CIPHER_CTX_new failed");
  const EVP_CIPHER* c = EVP_aes_256_gcm();
  int ok = encrypt ? EVP_EncryptInit_ex(ctx.get(), c, nullptr, U(key.data()), nullptr)
                   : EVP_DecryptInit_ex(ctx.get(), c, nullptr, U(key.data()), nullptr);
  if (ok != 1) return Status::Internal("AES-256-GCM key set-up: " + OpenSslErrors());
  return ctx;
}

// GCM's updates take an int length: a longer part goes in pieces.
bool Update(EVP_CIPHER_CTX* ctx, bool encrypt, Bytes* out, const Bytes* in, size_t len) {
  while (len > 0) {
    const int n = static_cast<int>(std::min<size_t>(len, INT_MAX / 2));
    int outl = 0;
    int ok = encrypt ? EVP_EncryptUpdate(ctx, out, &outl, in, n) : EVP_DecryptUpdate(ctx, out, &outl, in, n);
    if (ok != 1 || (out != nullptr && outl != n)) return false;
    if (out != nullptr) out += n;
    in += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

Result<ChunkSeal> ChunkSeal::Create(Protection level, std::span<const std::byte> key) {
  if (level == Protection::kClear) return Status::InvalidArgument("protection 'clear' has no seal");
  if (key.size() != kKeySize) {
    return Status::InvalidArgument("seal key has " + std::to_string(key.size()) + " bytes, expected 32");
  }
  PORO_ASSIGN_OR_RETURN(CipherCtxPtr enc, NewContext(true, key));
  PORO_ASSIGN_OR_RETURN(CipherCtxPtr dec, NewContext(false, key));
  return ChunkSeal(level, std::move(enc), std::move(dec));
}

Status ChunkSeal::Seal(uint32_t channel, uint64_t seq, std::span<const std::byte> aad,
                       std::span<std::byte> secret, std::span<std::byte> payload,
                       std::span<std::byte, kTagSize> tag) {
  return Run(true, channel, seq, aad, secret, payload, tag, nullptr);
}

Status ChunkSeal::Open(uint32_t channel, uint64_t seq, std::span<const std::byte> aad,
                       std::span<std::byte> secret, std::span<std::byte> payload,
                       std::span<const std::byte, kTagSize> tag, const PieceFn& plain) {
  std::array<std::byte, kTagSize> t;
  std::memcpy(t.data(), tag.data(), kTagSize);
  return Run(false, channel, seq, aad, secret, payload, t, plain ? &plain : nullptr);
}

Status ChunkSeal::Run(bool encrypt, uint32_t channel, uint64_t seq, std::span<const std::byte> aad,
                      std::span<std::byte> secret, std::span<std::byte> payload,
                      std::span<std::byte, kTagSize> tag, const PieceFn* plain) {
  EVP_CIPHER_CTX* ctx = encrypt ? enc_.get() : dec_.get();
  std::array<std::byte, 12> nonce;
  EncodeFixed32(nonce.data(), channel);
  EncodeFixed64(nonce.data() + 4, seq);
  int ok = encrypt ? EVP_EncryptInit_ex(ctx, nullptr, nullptr, nullptr, U(nonce.data()))
                   : EVP_DecryptInit_ex(ctx, nullptr, nullptr, nullptr, U(nonce.data()));
  if (ok != 1) return Status::Internal("AES-256-GCM nonce set-up: " + OpenSslErrors());
  std::array<std::byte, 24> lengths;
  EncodeFixed64(lengths.data(), aad.size());
  EncodeFixed64(lengths.data() + 8, secret.size());
  EncodeFixed64(lengths.data() + 16, payload.size());
  bool good = Update(ctx, encrypt, nullptr, U(lengths.data()), lengths.size()) &&
              Update(ctx, encrypt, nullptr, U(aad.data()), aad.size());
  const bool in_place = level_ == Protection::kPrivate;  // else everything is additional data
  good = good && Update(ctx, encrypt, in_place ? U(secret.data()) : nullptr, U(secret.data()), secret.size());
  for (size_t at = 0; good && at < payload.size(); at += kPiece) {
    const size_t n = std::min(kPiece, payload.size() - at);
    Bytes* p = U(payload.data() + at);
    good = Update(ctx, encrypt, in_place ? p : nullptr, p, n);
    if (good && plain != nullptr) (*plain)(payload.subspan(at, n));
  }
  if (!good) return Status::Internal("AES-256-GCM update: " + OpenSslErrors());
  int outl = 0;
  std::array<Bytes, 16> sink;  // GCM writes nothing at the end
  if (encrypt) {
    if (EVP_EncryptFinal_ex(ctx, sink.data(), &outl) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, kTagSize, U(tag.data())) != 1) {
      return Status::Internal("AES-256-GCM final: " + OpenSslErrors());
    }
    return Status::OK();
  }
  if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, kTagSize, U(tag.data())) != 1) {
    return Status::Internal("AES-256-GCM tag set-up: " + OpenSslErrors());
  }
  if (EVP_DecryptFinal_ex(ctx, sink.data(), &outl) != 1) {
    return Status::DataLoss("message " + std::to_string(seq) + " on data channel " + std::to_string(channel) +
                            " failed authentication (" + std::string(ProtectionName(level_)) + ")");
  }
  return Status::OK();
}

}  // namespace pororoca::crypto
