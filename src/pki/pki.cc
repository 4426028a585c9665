#include "pki/pki.h"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <string_view>

#include "base/defer.h"
#include "base/unique_fd.h"

namespace pororoca::pki {
namespace {

struct PkeyFree {
  void operator()(EVP_PKEY* p) const noexcept { EVP_PKEY_free(p); }
};
struct X509Free {
  void operator()(X509* p) const noexcept { X509_free(p); }
};
struct BioFree {
  void operator()(BIO* p) const noexcept { BIO_free(p); }
};
struct BnFree {
  void operator()(BIGNUM* p) const noexcept { BN_free(p); }
};
struct ExtFree {
  void operator()(X509_EXTENSION* p) const noexcept { X509_EXTENSION_free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using BioPtr = std::unique_ptr<BIO, BioFree>;
using BnPtr = std::unique_ptr<BIGNUM, BnFree>;
using ExtPtr = std::unique_ptr<X509_EXTENSION, ExtFree>;

constexpr int64_t kSecondsPerDay = 86400;

// Drains this thread's OpenSSL error queue into "reason; reason".
std::string DrainOpenSslErrors() {
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

Status SslError(std::string_view what) { return Status::Internal(std::string(what) + ": " + DrainOpenSslErrors()); }

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

Status RefuseExisting(const std::string& path) {
  if (Exists(path)) return Status::AlreadyExists(path + " already exists; refusing to overwrite it");
  return Status::OK();
}

// Creates `path` (O_EXCL: never replaces a file) with `mode` and writes `data` to it.
Status WriteNewFile(const std::string& path, std::string_view data, mode_t mode) {
  PORO_ASSIGN_OR_RETURN(UniqueFd fd, UniqueFd::Open(path, O_WRONLY | O_CREAT | O_EXCL, mode));
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd.get(), data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::IoError("write " + path, errno);
    off += size_t(n);
  }
  if (::fsync(fd.get()) < 0) return Status::IoError("fsync " + path, errno);
  return fd.Close();
}

std::string BioContents(BIO* bio) {
  char* p = nullptr;
  long n = BIO_get_mem_data(bio, &p);
  return std::string(p, size_t(n > 0 ? n : 0));
}

Result<std::string> KeyPem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  // Unencrypted PKCS#8 ("BEGIN PRIVATE KEY"); the file mode protects it.
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return SslError("encode private key");
  }
  return BioContents(bio.get());
}

Result<std::string> CertPem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) return SslError("encode certificate");
  return BioContents(bio.get());
}

Result<PkeyPtr> NewEd25519Key() {
  PkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  if (!key) return SslError("generate Ed25519 key");
  return key;
}

Result<X509Ptr> LoadCert(const std::string& path) {
  if (!Exists(path)) return Status::IoError("certificate " + path, errno);
  ERR_clear_error();
  BioPtr bio(BIO_new_file(path.c_str(), "r"));
  if (!bio) return Status::InvalidArgument("open certificate " + path + ": " + DrainOpenSslErrors());
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) return Status::InvalidArgument("read certificate " + path + ": " + DrainOpenSslErrors());
  return cert;
}

Result<PkeyPtr> LoadKey(const std::string& path) {
  if (!Exists(path)) return Status::IoError("private key " + path, errno);
  ERR_clear_error();
  BioPtr bio(BIO_new_file(path.c_str(), "r"));
  if (!bio) return Status::InvalidArgument("open private key " + path + ": " + DrainOpenSslErrors());
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key) return Status::InvalidArgument("read private key " + path + ": " + DrainOpenSslErrors());
  return key;
}

Status AddExt(X509* cert, X509V3_CTX* v3, int nid, const std::string& value) {
  ExtPtr ext(X509V3_EXT_nconf_nid(nullptr, v3, nid, value.c_str()));
  if (!ext) return SslError(std::string("build extension ") + OBJ_nid2sn(nid) + "=" + value);
  if (X509_add_ext(cert, ext.get(), -1) != 1) return SslError(std::string("add extension ") + OBJ_nid2sn(nid));
  return Status::OK();
}

// A certificate with everything but extensions and signature: v3, random positive 128-bit serial,
// validity, subject CN, public key, issuer name.
Result<X509Ptr> NewCert(const std::string& cn, EVP_PKEY* subject_key, const X509_NAME* issuer,
                        int64_t not_before_s, int64_t not_after_s) {
  X509Ptr cert(X509_new());
  if (!cert) return SslError("X509_new");
  unsigned char serial[16];
  if (RAND_bytes(serial, sizeof(serial)) != 1) return SslError("random serial");
  serial[0] = (serial[0] & 0x7f) | 0x40;  // positive (RFC 5280) and exactly 16 bytes long
  BnPtr bn(BN_bin2bn(serial, sizeof(serial), nullptr));
  if (!bn || BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert.get())) == nullptr) {
    return SslError("set serial");
  }
  if (X509_set_version(cert.get(), X509_VERSION_3) != 1 ||
      X509_gmtime_adj(X509_getm_notBefore(cert.get()), long(not_before_s)) == nullptr ||
      X509_gmtime_adj(X509_getm_notAfter(cert.get()), long(not_after_s)) == nullptr ||
      X509_set_pubkey(cert.get(), subject_key) != 1) {
    return SslError("fill certificate");
  }
  X509_NAME* subject = X509_get_subject_name(cert.get());
  if (X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(cn.data()), int(cn.size()), -1,
                                 0) != 1) {
    return SslError("set subject CN");
  }
  if (X509_set_issuer_name(cert.get(), issuer ? issuer : subject) != 1) return SslError("set issuer");
  return cert;
}

std::string HexLower(const unsigned char* p, size_t n) {
  static const char kHex[] = "0123456789abcdef";
  std::string s(n * 2, '0');
  for (size_t i = 0; i < n; ++i) {
    s[2 * i] = kHex[p[i] >> 4];
    s[2 * i + 1] = kHex[p[i] & 0xf];
  }
  return s;
}

}  // namespace

bool ValidEndpointName(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

Status CreateAuthority(const std::string& dir, const std::string& name, int days) {
  if (name.empty() || name.size() > 64) return Status::InvalidArgument("CA name must be 1..64 characters");
  for (char c : name) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return Status::InvalidArgument("CA name contains a control character");
    }
  }
  if (days <= 0) return Status::InvalidArgument("CA validity must be at least one day");
  if (::mkdir(dir.c_str(), 0700) < 0 && errno != EEXIST) return Status::IoError("mkdir " + dir, errno);
  const std::string key_path = dir + "/ca.key";
  const std::string crt_path = dir + "/ca.crt";
  PORO_RETURN_IF_ERROR(RefuseExisting(key_path));
  PORO_RETURN_IF_ERROR(RefuseExisting(crt_path));

  ERR_clear_error();
  PORO_ASSIGN_OR_RETURN(PkeyPtr key, NewEd25519Key());
  PORO_ASSIGN_OR_RETURN(X509Ptr cert, NewCert(name, key.get(), nullptr, -60, int64_t(days) * kSecondsPerDay));
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, cert.get(), cert.get(), nullptr, nullptr, 0);
  PORO_RETURN_IF_ERROR(AddExt(cert.get(), &v3, NID_basic_constraints, "critical,CA:TRUE"));
  PORO_RETURN_IF_ERROR(AddExt(cert.get(), &v3, NID_key_usage, "critical,keyCertSign,cRLSign"));
  PORO_RETURN_IF_ERROR(AddExt(cert.get(), &v3, NID_subject_key_identifier, "hash"));
  // Ed25519 signs the message itself: no digest.
  if (X509_sign(cert.get(), key.get(), nullptr) <= 0) return SslError("sign CA certificate");

  PORO_ASSIGN_OR_RETURN(std::string key_pem, KeyPem(key.get()));
  PORO_ASSIGN_OR_RETURN(std::string crt_pem, CertPem(cert.get()));
  PORO_RETURN_IF_ERROR(WriteNewFile(key_path, key_pem, 0600));
  Defer undo([&] { ::unlink(key_path.c_str()); });
  PORO_RETURN_IF_ERROR(WriteNewFile(crt_path, crt_pem, 0644));
  undo.Cancel();
  return Status::OK();
}

Status IssueEndpoint(const std::string& ca_dir, const std::string& endpoint_name, const std::string& out_key,
                     const std::string& out_crt, int days, const IssueOptions& opts) {
  if (!ValidEndpointName(endpoint_name)) {
    return Status::InvalidArgument("endpoint name '" + endpoint_name +
                                   "' must be 1..64 characters of [A-Za-z0-9._-]");
  }
  if (days <= 0 && !opts.not_after_offset_s) {
    return Status::InvalidArgument("certificate validity must be at least one day");
  }
  PORO_RETURN_IF_ERROR(RefuseExisting(out_key));
  PORO_RETURN_IF_ERROR(RefuseExisting(out_crt));
  PORO_ASSIGN_OR_RETURN(PkeyPtr ca_key, LoadKey(ca_dir + "/ca.key"));
  PORO_ASSIGN_OR_RETURN(X509Ptr ca_cert, LoadCert(ca_dir + "/ca.crt"));
  ERR_clear_error();
  if (X509_check_private_key(ca_cert.get(), ca_key.get()) != 1) {
    return Status::InvalidArgument(ca_dir + "/ca.key does not match " + ca_dir + "/ca.crt");
  }

  PORO_ASSIGN_OR_RETURN(PkeyPtr key, NewEd25519Key());
  const int64_t not_after = opts.not_after_offset_s.value_or(int64_t(days) * kSecondsPerDay);
  PORO_ASSIGN_OR_RETURN(X509Ptr cert, NewCert(endpoint_name, key.get(), X509_get_subject_name(ca_cert.get()),
                                              opts.not_before_offset_s, not_after));
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, ca_cert.get(), cert.get(), nullptr, nullptr, 0);
  PORO_RETURN_IF_ERROR(AddExt(cert.get(), &v3, NID_basic_constraints, "critical,CA:FALSE"));
  PORO_RETURN_IF_ERROR(AddExt(cert.get(), &v3, NID_key_usage, "critical,digitalSignature"));
  PORO_RETURN_IF_ERROR(AddExt(cert.get(), &v3, NID_ext_key_usage, "serverAuth,clientAuth"));
  PORO_RETURN_IF_ERROR(AddExt(cert.get(), &v3, NID_subject_alt_name, "DNS:" + endpoint_name));
  PORO_RETURN_IF_ERROR(AddExt(cert.get(), &v3, NID_subject_key_identifier, "hash"));
  PORO_RETURN_IF_ERROR(AddExt(cert.get(), &v3, NID_authority_key_identifier, "keyid:always"));
  if (X509_sign(cert.get(), ca_key.get(), nullptr) <= 0) return SslError("sign endpoint certificate");

  PORO_ASSIGN_OR_RETURN(std::string key_pem, KeyPem(key.get()));
  PORO_ASSIGN_OR_RETURN(std::string crt_pem, CertPem(cert.get()));
  PORO_RETURN_IF_ERROR(WriteNewFile(out_key, key_pem, 0600));
  Defer undo([&] { ::unlink(out_key.c_str()); });
  PORO_RETURN_IF_ERROR(WriteNewFile(out_crt, crt_pem, 0644));
  undo.Cancel();
  return Status::OK();
}

Result<std::string> CertCommonName(const std::string& crt_file) {
  PORO_ASSIGN_OR_RETURN(X509Ptr cert, LoadCert(crt_file));
  X509_NAME* name = X509_get_subject_name(cert.get());
  int idx = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
  if (idx < 0) return Status::InvalidArgument("certificate " + crt_file + " has no subject CN");
  unsigned char* utf8 = nullptr;
  int len = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx)));
  if (len < 0) return SslError("decode CN of " + crt_file);
  std::string cn(reinterpret_cast<char*>(utf8), size_t(len));
  OPENSSL_free(utf8);
  return cn;
}

Result<std::string> PublicKeyPinFromCert(const std::string& crt_file) {
  PORO_ASSIGN_OR_RETURN(X509Ptr cert, LoadCert(crt_file));
  unsigned char* der = nullptr;
  int len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert.get()), &der);
  if (len <= 0) return SslError("encode public key of " + crt_file);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int md_len = 0;
  int ok = EVP_Digest(der, size_t(len), md, &md_len, EVP_sha256(), nullptr);
  OPENSSL_free(der);
  if (ok != 1) return SslError("SHA-256 of public key");
  return HexLower(md, md_len);
}

}  // namespace pororoca::pki
