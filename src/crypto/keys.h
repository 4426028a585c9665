// Keys and signatures on OpenSSL 3, for the parts of pororoca that sign or pin: the PKI, the TLS
// peer pin, bearer tokens and the federation manifest. Ed25519 only for signing.
//
// Key files are PEM: private keys unencrypted PKCS#8 ("PRIVATE KEY", mode 0600), public keys
// SubjectPublicKeyInfo ("PUBLIC KEY", mode 0644). Writers never overwrite (O_EXCL; kAlreadyExists
// names the file). Errors name the file or say what is wrong with the text, plus OpenSSL's reason.
//
// Thread-safety: free functions without shared state, safe from any thread (OpenSSL's error queue
// is per thread). A PKey may be used for signing and verifying from several threads at once.
#pragma once

#include <openssl/types.h>
#include <sys/types.h>

#include <string>
#include <string_view>
#include <utility>

#include "pororoca/status.h"

namespace pororoca::crypto {

inline constexpr size_t kEd25519SignatureSize = 64;

// Drains this thread's OpenSSL error queue into "reason; reason" (repeats dropped);
// "unknown OpenSSL error" when it is empty.
std::string OpenSslErrors();

// Sole owner of an EVP_PKEY. Move-only.
class PKey {
 public:
  PKey() = default;
  explicit PKey(EVP_PKEY* key) noexcept : key_(key) {}  // adopts `key`
  PKey(PKey&& o) noexcept : key_(std::exchange(o.key_, nullptr)) {}
  PKey& operator=(PKey&& o) noexcept;
  PKey(const PKey&) = delete;
  PKey& operator=(const PKey&) = delete;
  ~PKey();

  EVP_PKEY* get() const { return key_; }
  explicit operator bool() const { return key_ != nullptr; }
  bool IsEd25519() const;

 private:
  EVP_PKEY* key_ = nullptr;
};

Result<PKey> GenerateEd25519();

// A PKCS#8 (or traditional) unencrypted PEM private key. A missing file is kNotFound; a file that
// is not a private key is kInvalidArgument; both name the file.
Result<PKey> LoadPrivateKeyPem(const std::string& path);
// A "PUBLIC KEY" PEM block (at most 64 KiB of text); kInvalidArgument says what is wrong.
Result<PKey> ParsePublicKeyPem(std::string_view pem);
// ParsePublicKeyPem of a file; errors name the file.
Result<PKey> LoadPublicKeyPem(const std::string& path);

Result<std::string> PrivateKeyPem(const PKey& key);
Result<std::string> PublicKeyPem(const PKey& key);
// Create the file (O_EXCL) with mode 0600 / 0644 and fsync it.
Status WritePrivateKeyPem(const PKey& key, const std::string& path);
Status WritePublicKeyPem(const PKey& key, const std::string& path);

// Creates `path` (O_EXCL: never replaces a file; kAlreadyExists names it) with `mode`, writes all of
// `data` and fsyncs it. A partly written file is removed.
Status WriteNewFile(const std::string& path, std::string_view data, mode_t mode);

// The 64-byte raw Ed25519 signature of `message`. kInvalidArgument unless `key` is an Ed25519
// private key.
Result<std::string> SignEd25519(const PKey& key, std::string_view message);
// True only if `key` is an Ed25519 key and `signature` (64 bytes) is its valid signature of
// `message`. Any other key type, length or input gives false; never aborts.
bool VerifyEd25519(const PKey& key, std::string_view message, std::string_view signature);

// The public-key pin: lowercase hex SHA-256 of the DER SubjectPublicKeyInfo ("" for an empty key).
// Equal to pki::PublicKeyPinFromCert() and transport::TlsStream::peer_cert_sha256() for the same key.
std::string PublicKeyPin(const PKey& key);
// The same pin, of the key a certificate carries.
std::string PublicKeyPinOfCert(const X509* cert);

}  // namespace pororoca::crypto
