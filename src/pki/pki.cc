#include "pki/pki.h"

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
#include "base/ids.h"
#include "crypto/keys.h"
#include "crypto/openssl_ptr.h"

namespace pororoca::pki {
namespace {

using crypto::BioPtr;
using crypto::BnPtr;
using crypto::X509Ptr;
using ReqPtr = crypto::X509ReqPtr;
using ExtPtr = crypto::X509ExtPtr;

constexpr int64_t kSecondsPerDay = 86400;

Status SslError(std::string_view what) {
  return Status::Internal(std::string(what) + ": " + crypto::OpenSslErrors());
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

Status RefuseExisting(const std::string& path) {
  if (Exists(path)) return Status::AlreadyExists(path + " already exists; refusing to overwrite it");
  return Status::OK();
}

std::string BioContents(BIO* bio) {
  char* p = nullptr;
  long n = BIO_get_mem_data(bio, &p);
  return std::string(p, size_t(n > 0 ? n : 0));
}

Result<std::string> CertPem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) return SslError("encode certificate");
  return BioContents(bio.get());
}

// Reads the first PEM object `read` finds in `path`; errors name the file as "<what> <path>".
template <class Ptr, class Reader>
Result<Ptr> ReadPemFile(const std::string& path, std::string_view what, Reader read) {
  const std::string named = std::string(what) + " " + path;
  if (!Exists(path)) return Status::IoError(named, errno);
  ERR_clear_error();
  BioPtr bio(BIO_new_file(path.c_str(), "r"));
  if (!bio) return Status::InvalidArgument("open " + named + ": " + crypto::OpenSslErrors());
  Ptr obj(read(bio.get(), nullptr, nullptr, nullptr));
  if (!obj) return Status::InvalidArgument("read " + named + ": " + crypto::OpenSslErrors());
  return obj;
}

Result<X509Ptr> LoadCert(const std::string& path) {
  return ReadPemFile<X509Ptr>(path, "certificate", PEM_read_bio_X509);
}

Result<ReqPtr> LoadCsr(const std::string& path) {
  return ReadPemFile<ReqPtr>(path, "certificate signing request", PEM_read_bio_X509_REQ);
}

Status AddExt(X509* cert, X509V3_CTX* v3, int nid, const std::string& value) {
  ExtPtr ext(X509V3_EXT_nconf_nid(nullptr, v3, nid, value.c_str()));
  if (!ext) return SslError(std::string("build extension ") + OBJ_nid2sn(nid) + "=" + value);
  if (X509_add_ext(cert, ext.get(), -1) != 1)
    return SslError(std::string("add extension ") + OBJ_nid2sn(nid));
  return Status::OK();
}

Status SetCommonName(X509_NAME* name, const std::string& cn) {
  if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(cn.data()),
                                 int(cn.size()), -1, 0) != 1) {
    return SslError("set subject CN");
  }
  return Status::OK();
}

// Writes the key (0600), then the certificate (0644); removes the key again if the certificate
// cannot be written, so that a failure leaves neither.
Status WriteKeyAndCert(const crypto::PKey& key, const std::string& key_path, const std::string& crt_pem,
                       const std::string& crt_path) {
  PORO_RETURN_IF_ERROR(crypto::WritePrivateKeyPem(key, key_path));
  Defer undo([&] { ::unlink(key_path.c_str()); });
  PORO_RETURN_IF_ERROR(crypto::WriteNewFile(crt_path, crt_pem, 0644));
  undo.Cancel();
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
  PORO_RETURN_IF_ERROR(SetCommonName(subject, cn));
  if (X509_set_issuer_name(cert.get(), issuer ? issuer : subject) != 1) return SslError("set issuer");
  return cert;
}

Status CheckEndpointName(const std::string& endpoint_name) {
  if (ValidEndpointName(endpoint_name)) return Status::OK();
  return Status::InvalidArgument("endpoint name '" + endpoint_name + "' must be " + std::string(kIdRule));
}

Status CheckIssueArgs(const std::string& endpoint_name, int days, const IssueOptions& opts) {
  PORO_RETURN_IF_ERROR(CheckEndpointName(endpoint_name));
  if (days <= 0 && !opts.not_after_offset_s) {
    return Status::InvalidArgument("certificate validity must be at least one day");
  }
  return Status::OK();
}

struct Authority {
  crypto::PKey key;
  X509Ptr cert;
};

Result<Authority> LoadAuthority(const std::string& ca_dir) {
  PORO_ASSIGN_OR_RETURN(crypto::PKey key, crypto::LoadPrivateKeyPem(ca_dir + "/ca.key"));
  PORO_ASSIGN_OR_RETURN(X509Ptr cert, LoadCert(ca_dir + "/ca.crt"));
  ERR_clear_error();
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    ERR_clear_error();
    return Status::InvalidArgument(ca_dir + "/ca.key does not match " + ca_dir + "/ca.crt");
  }
  return Authority{std::move(key), std::move(cert)};
}

// The endpoint certificate (PEM) of IssueEndpoint for `subject_key`, signed by `ca`.
Result<std::string> EndpointCertPem(const Authority& ca, const std::string& endpoint_name,
                                    EVP_PKEY* subject_key, int days, const IssueOptions& opts) {
  const int64_t not_after = opts.not_after_offset_s.value_or(int64_t(days) * kSecondsPerDay);
  PORO_ASSIGN_OR_RETURN(X509Ptr cert,
                        NewCert(endpoint_name, subject_key, X509_get_subject_name(ca.cert.get()),
                                opts.not_before_offset_s, not_after));
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, ca.cert.get(), cert.get(), nullptr, nullptr, 0);
  PORO_RETURN_IF_ERROR(AddExt(cert.get(), &v3, NID_basic_constraints, "critical,CA:FALSE"));
  PORO_RETURN_IF_ERROR(AddExt(cert.get(), &v3, NID_key_usage, "critical,digitalSignature"));
  PORO_RETURN_IF_ERROR(AddExt(cert.get(), &v3, NID_ext_key_usage, "serverAuth,clientAuth"));
  PORO_RETURN_IF_ERROR(AddExt(cert.get(), &v3, NID_subject_alt_name, "DNS:" + endpoint_name));
  PORO_RETURN_IF_ERROR(AddExt(cert.get(), &v3, NID_subject_key_identifier, "hash"));
  PORO_RETURN_IF_ERROR(AddExt(cert.get(), &v3, NID_authority_key_identifier, "keyid:always"));
  // Ed25519 signs the message itself: no digest.
  if (X509_sign(cert.get(), ca.key.get(), nullptr) <= 0) return SslError("sign endpoint certificate");
  return CertPem(cert.get());
}

}  // namespace

bool ValidEndpointName(const std::string& name) { return ValidId(name); }

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

  PORO_ASSIGN_OR_RETURN(crypto::PKey key, crypto::GenerateEd25519());
  PORO_ASSIGN_OR_RETURN(X509Ptr cert, NewCert(name, key.get(), nullptr, -60, int64_t(days) * kSecondsPerDay));
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, cert.get(), cert.get(), nullptr, nullptr, 0);
  PORO_RETURN_IF_ERROR(AddExt(cert.get(), &v3, NID_basic_constraints, "critical,CA:TRUE"));
  PORO_RETURN_IF_ERROR(AddExt(cert.get(), &v3, NID_key_usage, "critical,keyCertSign,cRLSign"));
  PORO_RETURN_IF_ERROR(AddExt(cert.get(), &v3, NID_subject_key_identifier, "hash"));
  if (X509_sign(cert.get(), key.get(), nullptr) <= 0) return SslError("sign CA certificate");

  PORO_ASSIGN_OR_RETURN(std::string crt_pem, CertPem(cert.get()));
  return WriteKeyAndCert(key, key_path, crt_pem, crt_path);
}

Status IssueEndpoint(const std::string& ca_dir, const std::string& endpoint_name, const std::string& out_key,
                     const std::string& out_crt, int days, const IssueOptions& opts) {
  PORO_RETURN_IF_ERROR(CheckIssueArgs(endpoint_name, days, opts));
  PORO_RETURN_IF_ERROR(RefuseExisting(out_key));
  PORO_RETURN_IF_ERROR(RefuseExisting(out_crt));
  PORO_ASSIGN_OR_RETURN(Authority ca, LoadAuthority(ca_dir));
  PORO_ASSIGN_OR_RETURN(crypto::PKey key, crypto::GenerateEd25519());
  PORO_ASSIGN_OR_RETURN(std::string crt_pem, EndpointCertPem(ca, endpoint_name, key.get(), days, opts));
  return WriteKeyAndCert(key, out_key, crt_pem, out_crt);
}

Status IssueEndpointFromCsr(const std::string& ca_dir, const std::string& csr_file,
                            const std::string& endpoint_name, const std::string& out_crt, int days,
                            const IssueOptions& opts) {
  PORO_RETURN_IF_ERROR(CheckIssueArgs(endpoint_name, days, opts));
  PORO_RETURN_IF_ERROR(RefuseExisting(out_crt));
  PORO_ASSIGN_OR_RETURN(ReqPtr req, LoadCsr(csr_file));
  ERR_clear_error();
  EVP_PKEY* pub = X509_REQ_get0_pubkey(req.get());
  if (pub == nullptr) {
    return Status::InvalidArgument("certificate signing request " + csr_file +
                                   " carries no usable public key: " + crypto::OpenSslErrors());
  }
  if (EVP_PKEY_get_id(pub) != EVP_PKEY_ED25519) {
    const char* type = EVP_PKEY_get0_type_name(pub);
    return Status::InvalidArgument("certificate signing request " + csr_file + " has " +
                                   (type ? std::string("a ") + type : std::string("an unknown")) +
                                   " key; endpoint certificates are issued for Ed25519 keys only");
  }
  // Proof of possession: only the holder of the private key can have signed the request.
  if (X509_REQ_verify(req.get(), pub) != 1) {
    ERR_clear_error();
    return Status::InvalidArgument("certificate signing request " + csr_file +
                                   ": its signature does not verify with its own public key");
  }
  PORO_ASSIGN_OR_RETURN(Authority ca, LoadAuthority(ca_dir));
  PORO_ASSIGN_OR_RETURN(std::string crt_pem, EndpointCertPem(ca, endpoint_name, pub, days, opts));
  return crypto::WriteNewFile(out_crt, crt_pem, 0644);
}

Status WriteCsr(const std::string& key_file, const std::string& endpoint_name, const std::string& out_csr) {
  PORO_RETURN_IF_ERROR(CheckEndpointName(endpoint_name));
  PORO_RETURN_IF_ERROR(RefuseExisting(out_csr));
  crypto::PKey key;
  const bool generate = !Exists(key_file);
  if (generate) {
    PORO_ASSIGN_OR_RETURN(key, crypto::GenerateEd25519());
    PORO_RETURN_IF_ERROR(crypto::WritePrivateKeyPem(key, key_file));
  } else {
    PORO_ASSIGN_OR_RETURN(key, crypto::LoadPrivateKeyPem(key_file));
    if (!key.IsEd25519()) {
      return Status::InvalidArgument(key_file +
                                     " is not an Ed25519 key; endpoint certificates are Ed25519 only");
    }
  }
  // A key made here goes away with a CSR that could not be written.
  Defer undo([&] {
    if (generate) ::unlink(key_file.c_str());
  });

  ERR_clear_error();
  ReqPtr req(X509_REQ_new());
  if (!req || X509_REQ_set_version(req.get(), X509_REQ_VERSION_1) != 1 ||
      X509_REQ_set_pubkey(req.get(), key.get()) != 1) {
    return SslError("fill certificate signing request");
  }
  PORO_RETURN_IF_ERROR(SetCommonName(X509_REQ_get_subject_name(req.get()), endpoint_name));
  if (X509_REQ_sign(req.get(), key.get(), nullptr) <= 0) return SslError("sign certificate signing request");
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509_REQ(bio.get(), req.get()) != 1) {
    return SslError("encode certificate signing request");
  }
  PORO_RETURN_IF_ERROR(crypto::WriteNewFile(out_csr, BioContents(bio.get()), 0644));
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
  std::string pin = crypto::PublicKeyPinOfCert(cert.get());
  if (pin.empty()) return SslError("SHA-256 of the public key of " + crt_file);
  return pin;
}

}  // namespace pororoca::pki
