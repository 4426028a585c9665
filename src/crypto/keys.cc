#include "crypto/keys.h"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <memory>

#include "base/defer.h"
#include "base/file_util.h"
#include "base/unique_fd.h"
#include "crypto/encoding.h"
#include "crypto/openssl_ptr.h"

namespace pororoca::crypto {
namespace {

constexpr size_t kMaxPemBytes = 64 * 1024;

Status SslError(std::string_view what) {
  return Status::Internal(std::string(what) + ": " + OpenSslErrors());
}

std::string BioContents(BIO* bio) {
  char* p = nullptr;
  long n = BIO_get_mem_data(bio, &p);
  return std::string(p, size_t(n > 0 ? n : 0));
}

std::string Sha256Hex(const unsigned char* der, int len) {
  if (der == nullptr || len <= 0) return "";
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int md_len = 0;
  if (EVP_Digest(der, size_t(len), md, &md_len, EVP_sha256(), nullptr) != 1) {
    ERR_clear_error();
    return "";
  }
  return HexLower({md, md_len});
}

// Encrypted keys are refused instead of OpenSSL's default of prompting on the terminal, which
// would hang a daemon.
int NoPassphrase(char* /*buf*/, int /*size*/, int /*rwflag*/, void* /*u*/) { return -1; }

}  // namespace

std::string OpenSslErrors() {
  std::string out;
  unsigned long e;
  while ((e = ERR_get_error()) != 0) {
    const char* r = ERR_reason_error_string(e);
    std::string one = r ? r : ("error " + std::to_string(ERR_GET_REASON(e)));
    if (out.find(one) != std::string::npos) continue;
    if (!out.empty()) out += "; ";
    out += one;
  }
  return out.empty() ? "unknown OpenSSL error" : out;
}

PKey& PKey::operator=(PKey&& o) noexcept {
  if (this != &o) {
    EVP_PKEY_free(key_);
    key_ = std::exchange(o.key_, nullptr);
  }
  return *this;
}

PKey::~PKey() { EVP_PKEY_free(key_); }

bool PKey::IsEd25519() const { return key_ != nullptr && EVP_PKEY_get_id(key_) == EVP_PKEY_ED25519; }

Result<PKey> GenerateEd25519() {
  ERR_clear_error();
  PKey key(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  if (!key) return SslError("generate Ed25519 key");
  return key;
}

Result<PKey> LoadPrivateKeyPem(const std::string& path) {
  if (::access(path.c_str(), F_OK) != 0) return Status::IoError("private key " + path, errno);
  ERR_clear_error();
  BioPtr bio(BIO_new_file(path.c_str(), "r"));
  if (!bio) return Status::InvalidArgument("open private key " + path + ": " + OpenSslErrors());
  PKey key(PEM_read_bio_PrivateKey(bio.get(), nullptr, NoPassphrase, nullptr));
  if (!key) return Status::InvalidArgument("read private key " + path + ": " + OpenSslErrors());
  return key;
}

Result<PKey> ParsePublicKeyPem(std::string_view pem) {
  if (pem.size() > kMaxPemBytes) {
    return Status::InvalidArgument("public key PEM is " + std::to_string(pem.size()) + " bytes, more than " +
                                   std::to_string(kMaxPemBytes));
  }
  if (pem.find("-----BEGIN PUBLIC KEY-----") == std::string_view::npos) {
    if (pem.find("PRIVATE KEY-----") != std::string_view::npos) {
      return Status::InvalidArgument("this is a private key, not a public key (no BEGIN PUBLIC KEY block)");
    }
    if (pem.find("-----BEGIN CERTIFICATE-----") != std::string_view::npos) {
      return Status::InvalidArgument("this is a certificate, not a public key (no BEGIN PUBLIC KEY block)");
    }
    return Status::InvalidArgument("no '-----BEGIN PUBLIC KEY-----' PEM block");
  }
  ERR_clear_error();
  BioPtr bio(BIO_new_mem_buf(pem.data(), int(pem.size())));
  if (!bio) return SslError("BIO_new_mem_buf");
  PKey key(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
  if (!key) return Status::InvalidArgument("invalid PUBLIC KEY PEM block: " + OpenSslErrors());
  return key;
}

Result<PKey> LoadPublicKeyPem(const std::string& path) {
  auto text = ReadSmallFile(path, kMaxPemBytes);
  if (!text) return std::move(text.error().Annotate("public key"));
  auto key = ParsePublicKeyPem(*text);
  if (!key) return std::move(key.error().Annotate("public key " + path));
  return key;
}

Result<std::string> PrivateKeyPem(const PKey& key) {
  if (!key) return Status::InvalidArgument("no private key to encode");
  ERR_clear_error();
  BioPtr bio(BIO_new(BIO_s_mem()));
  // Unencrypted PKCS#8 ("BEGIN PRIVATE KEY"); the file mode protects it.
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return SslError("encode private key");
  }
  return BioContents(bio.get());
}

Result<std::string> PublicKeyPem(const PKey& key) {
  if (!key) return Status::InvalidArgument("no public key to encode");
  ERR_clear_error();
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PUBKEY(bio.get(), key.get()) != 1) return SslError("encode public key");
  return BioContents(bio.get());
}

Status WritePrivateKeyPem(const PKey& key, const std::string& path) {
  PORO_ASSIGN_OR_RETURN(std::string pem, PrivateKeyPem(key));
  return WriteNewFile(path, pem, 0600);
}

Status WritePublicKeyPem(const PKey& key, const std::string& path) {
  PORO_ASSIGN_OR_RETURN(std::string pem, PublicKeyPem(key));
  return WriteNewFile(path, pem, 0644);
}

Status WriteNewFile(const std::string& path, std::string_view data, mode_t mode) {
  auto opened = UniqueFd::Open(path, O_WRONLY | O_CREAT | O_EXCL, mode);
  if (!opened) {
    if (opened.error().code() == Code::kAlreadyExists) {
      return Status::AlreadyExists(path + " already exists; refusing to overwrite it");
    }
    return std::move(opened).error();
  }
  UniqueFd fd = std::move(opened).value();
  Defer remove([&] { ::unlink(path.c_str()); });
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd.get(), data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::IoError("write " + path, errno);
    off += size_t(n);
  }
  if (::fsync(fd.get()) < 0) return Status::IoError("fsync " + path, errno);
  PORO_RETURN_IF_ERROR(fd.Close());
  remove.Cancel();
  return Status::OK();
}

Result<std::string> SignEd25519(const PKey& key, std::string_view message) {
  if (!key.IsEd25519()) return Status::InvalidArgument("signing key is not an Ed25519 key");
  size_t priv_len = 0;
  if (EVP_PKEY_get_raw_private_key(key.get(), nullptr, &priv_len) != 1) {
    ERR_clear_error();
    return Status::InvalidArgument("signing key is an Ed25519 public key, without its private part");
  }
  ERR_clear_error();
  MdCtxPtr ctx(EVP_MD_CTX_new());
  std::string sig(kEd25519SignatureSize, '\0');
  size_t sig_len = sig.size();
  // Ed25519 signs the message itself: no digest.
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, key.get()) != 1 ||
      EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &sig_len,
                     reinterpret_cast<const unsigned char*>(message.data()), message.size()) != 1) {
    return SslError("Ed25519 sign");
  }
  if (sig_len != kEd25519SignatureSize) return Status::Internal("Ed25519 signature of unexpected length");
  return sig;
}

bool VerifyEd25519(const PKey& key, std::string_view message, std::string_view signature) {
  if (!key.IsEd25519() || signature.size() != kEd25519SignatureSize) return false;
  MdCtxPtr ctx(EVP_MD_CTX_new());
  bool ok =
      ctx && EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, key.get()) == 1 &&
      EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()), signature.size(),
                       reinterpret_cast<const unsigned char*>(message.data()), message.size()) == 1;
  // A failed verification leaves its reason queued; it must not surface in some later error.
  ERR_clear_error();
  return ok;
}

std::string PublicKeyPin(const PKey& key) {
  if (!key) return "";
  unsigned char* der = nullptr;
  int len = i2d_PUBKEY(key.get(), &der);
  std::string pin = Sha256Hex(der, len);
  OPENSSL_free(der);
  return pin;
}

std::string PublicKeyPinOfCert(const X509* cert) {
  if (cert == nullptr) return "";
  unsigned char* der = nullptr;
  int len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
  std::string pin = Sha256Hex(der, len);
  OPENSSL_free(der);
  return pin;
}

}  // namespace pororoca::crypto
