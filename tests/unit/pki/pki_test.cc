#include "pki/pki.h"

#include <doctest/doctest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "base/file_util.h"
#include "crypto/encoding.h"
#include "crypto/keys.h"
#include "crypto/openssl_ptr.h"
#include "support/temp_dir.h"

namespace pororoca::pki {
namespace {

using test::ModeOf;
using test::TempDir;

std::string Slurp(const std::string& path) {
  auto text = ReadSmallFile(path);
  REQUIRE_MESSAGE(text.ok(), text.status().ToString());
  return *text;
}

using crypto::X509Ptr;

X509Ptr ReadCert(const std::string& path) {
  crypto::BioPtr bio(BIO_new_file(path.c_str(), "r"));
  REQUIRE(bio);
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  REQUIRE(cert);
  return cert;
}

// The DNS names of the certificate's subjectAltName.
std::vector<std::string> DnsNames(X509* cert) {
  std::vector<std::string> out;
  auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  for (int i = 0; names && i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* n = sk_GENERAL_NAME_value(names, i);
    if (n->type != GEN_DNS) continue;
    out.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(n->d.dNSName)),
                     size_t(ASN1_STRING_length(n->d.dNSName)));
  }
  GENERAL_NAMES_free(names);
  return out;
}

bool SignedBy(X509* cert, const std::string& ca_crt) {
  X509Ptr ca = ReadCert(ca_crt);
  return X509_verify(cert, X509_get0_pubkey(ca.get())) == 1;
}

// Rewrites a one-block PEM file with the last byte of its DER flipped: for a CSR signed with
// Ed25519, that is inside the signature.
void FlipLastDerByte(const std::string& path) {
  const std::string pem = Slurp(path);
  const size_t body = pem.find('\n') + 1;
  const size_t footer = pem.find("-----END");
  std::string b64;
  for (char c : pem.substr(body, footer - body)) {
    if (c != '\n') b64 += c;
  }
  auto der = crypto::Base64Decode(b64);
  REQUIRE(der.ok());
  der->back() = char(der->back() ^ 1);
  std::string out = pem.substr(0, body);
  const std::string enc = crypto::Base64Encode(*der);
  for (size_t i = 0; i < enc.size(); i += 64) out += enc.substr(i, 64) + "\n";
  out += pem.substr(footer);
  std::filesystem::remove(path);
  REQUIRE(crypto::WriteNewFile(path, out, 0644).ok());
}

TEST_SUITE("pki") {
  TEST_CASE("CreateAuthority writes a PKCS#8 key with mode 0600 and a self-signed CA certificate") {
    TempDir t;
    const std::string ca = t.path() + "/ca";
    REQUIRE(CreateAuthority(ca, "Site CA", 10).ok());
    CHECK(ModeOf(ca + "/ca.key") == 0600);
    CHECK(Slurp(ca + "/ca.key").rfind("-----BEGIN PRIVATE KEY-----", 0) == 0);
    CHECK(Slurp(ca + "/ca.crt").rfind("-----BEGIN CERTIFICATE-----", 0) == 0);
    auto cn = CertCommonName(ca + "/ca.crt");
    REQUIRE(cn.ok());
    CHECK(*cn == "Site CA");
  }

  TEST_CASE("CreateAuthority and IssueEndpoint refuse to overwrite existing files") {
    TempDir t;
    const std::string ca = t.path() + "/ca";
    REQUIRE(CreateAuthority(ca, "CA", 10).ok());
    const std::string key_before = Slurp(ca + "/ca.key");
    Status s = CreateAuthority(ca, "CA", 10);
    CHECK(s.code() == Code::kAlreadyExists);
    CHECK(std::string(s.message()).find(ca + "/ca.key") != std::string::npos);
    CHECK(Slurp(ca + "/ca.key") == key_before);

    const std::string key = t.path() + "/e.key";
    const std::string crt = t.path() + "/e.crt";
    REQUIRE(IssueEndpoint(ca, "dtn1", key, crt, 10).ok());
    Status s2 = IssueEndpoint(ca, "dtn1", key, crt, 10);
    CHECK(s2.code() == Code::kAlreadyExists);
    CHECK(std::string(s2.message()).find(key) != std::string::npos);
  }

  TEST_CASE("IssueEndpoint rejects bad endpoint names") {
    TempDir t;
    const std::string ca = t.path() + "/ca";
    REQUIRE(CreateAuthority(ca, "CA", 10).ok());
    for (const std::string& bad : {std::string(), std::string("a b"), std::string("dtn/1"),
                                   std::string("x\n"), std::string(65, 'a'), std::string("dtn1;rm")}) {
      CAPTURE(bad);
      Status s = IssueEndpoint(ca, bad, t.path() + "/k", t.path() + "/c", 10);
      CHECK(s.code() == Code::kInvalidArgument);
    }
    CHECK(ValidEndpointName(std::string(64, 'a')));
    CHECK(ValidEndpointName("dtn-1.site_a.example.org"));
    CHECK_FALSE(std::filesystem::exists(t.path() + "/k"));
  }

  TEST_CASE("IssueEndpoint reports a missing CA") {
    TempDir t;
    Status s = IssueEndpoint(t.path() + "/none", "dtn1", t.path() + "/k", t.path() + "/c", 10);
    CHECK(s.code() == Code::kNotFound);
    CHECK(std::string(s.message()).find(t.path() + "/none/ca.key") != std::string::npos);
  }

  TEST_CASE("endpoint certificates carry the name and distinct keys give distinct pins") {
    TempDir t;
    const std::string ca = t.path() + "/ca";
    REQUIRE(CreateAuthority(ca, "CA", 10).ok());
    const std::string d = t.path();
    REQUIRE(IssueEndpoint(ca, "dtn1.example.org", d + "/1.key", d + "/1.crt", 10).ok());
    REQUIRE(IssueEndpoint(ca, "dtn2", d + "/2.key", d + "/2.crt", 10).ok());
    CHECK(ModeOf(d + "/1.key") == 0600);
    CHECK(*CertCommonName(d + "/1.crt") == "dtn1.example.org");
    CHECK(*CertCommonName(d + "/2.crt") == "dtn2");
    auto p1 = PublicKeyPinFromCert(d + "/1.crt");
    auto p2 = PublicKeyPinFromCert(d + "/2.crt");
    REQUIRE(p1.ok());
    REQUIRE(p2.ok());
    CHECK(p1->size() == 64);
    CHECK(p1->find_first_not_of("0123456789abcdef") == std::string::npos);
    CHECK(*p1 != *p2);
    CHECK(*PublicKeyPinFromCert(d + "/1.crt") == *p1);
  }

  TEST_CASE("reading a file that is not a certificate fails with the file name") {
    TempDir t;
    const std::string ca = t.path() + "/ca";
    REQUIRE(CreateAuthority(ca, "CA", 10).ok());
    auto r = CertCommonName(ca + "/ca.key");
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code() == Code::kInvalidArgument);
    CHECK(std::string(r.error().message()).find(ca + "/ca.key") != std::string::npos);
    CHECK(PublicKeyPinFromCert(t.path() + "/missing.crt").error().code() == Code::kNotFound);
  }

  TEST_CASE("WriteCsr makes a key when there is none, and the CA certifies exactly that key") {
    TempDir t;
    REQUIRE(CreateAuthority(t / "ca", "CA", 10).ok());
    REQUIRE(WriteCsr(t / "dtn1.key", "dtn1", t / "dtn1.csr").ok());
    CHECK(ModeOf(t / "dtn1.key") == 0600);
    CHECK(ModeOf(t / "dtn1.csr") == 0644);
    CHECK(Slurp(t / "dtn1.csr").rfind("-----BEGIN CERTIFICATE REQUEST-----", 0) == 0);

    REQUIRE(IssueEndpointFromCsr(t / "ca", t / "dtn1.csr", "dtn1", t / "dtn1.crt", 10).ok());
    CHECK(ModeOf(t / "dtn1.crt") == 0644);
    CHECK(*CertCommonName(t / "dtn1.crt") == "dtn1");
    auto key = crypto::LoadPrivateKeyPem(t / "dtn1.key");
    REQUIRE(key.ok());
    CHECK(*PublicKeyPinFromCert(t / "dtn1.crt") == crypto::PublicKeyPin(*key));
    X509Ptr cert = ReadCert(t / "dtn1.crt");
    CHECK(SignedBy(cert.get(), t / "ca/ca.crt"));
    CHECK(DnsNames(cert.get()) == std::vector<std::string>{"dtn1"});
    CHECK((X509_get_extended_key_usage(cert.get()) & (XKU_SSL_SERVER | XKU_SSL_CLIENT)) ==
          (XKU_SSL_SERVER | XKU_SSL_CLIENT));
    CHECK(X509_check_ca(cert.get()) == 0);
  }

  TEST_CASE("IssueEndpointFromCsr takes the name from its argument, never from the request") {
    TempDir t;
    REQUIRE(CreateAuthority(t / "ca", "CA", 10).ok());
    REQUIRE(WriteCsr(t / "k.key", "cenapad-dtn1", t / "r.csr").ok());
    REQUIRE(IssueEndpointFromCsr(t / "ca", t / "r.csr", "lncc-dtn1", t / "r.crt", 10).ok());
    CHECK(*CertCommonName(t / "r.crt") == "lncc-dtn1");
    CHECK(DnsNames(ReadCert(t / "r.crt").get()) == std::vector<std::string>{"lncc-dtn1"});
  }

  TEST_CASE("WriteCsr signs with an existing key and leaves it unchanged") {
    TempDir t;
    REQUIRE(CreateAuthority(t / "ca", "CA", 10).ok());
    auto key = crypto::GenerateEd25519();
    REQUIRE(key.ok());
    REQUIRE(crypto::WritePrivateKeyPem(*key, t / "own.key").ok());
    const std::string before = Slurp(t / "own.key");
    REQUIRE(WriteCsr(t / "own.key", "dtn2", t / "own.csr").ok());
    CHECK(Slurp(t / "own.key") == before);
    REQUIRE(IssueEndpointFromCsr(t / "ca", t / "own.csr", "dtn2", t / "own.crt", 10).ok());
    CHECK(*PublicKeyPinFromCert(t / "own.crt") == crypto::PublicKeyPin(*key));
  }

  TEST_CASE("a request whose signature does not verify is refused and nothing is written") {
    TempDir t;
    REQUIRE(CreateAuthority(t / "ca", "CA", 10).ok());
    REQUIRE(WriteCsr(t / "k.key", "dtn1", t / "r.csr").ok());
    FlipLastDerByte(t / "r.csr");
    Status s = IssueEndpointFromCsr(t / "ca", t / "r.csr", "dtn1", t / "r.crt", 10);
    CHECK(s.code() == Code::kInvalidArgument);
    CHECK(std::string(s.message()).find("signature does not verify") != std::string::npos);
    CHECK(std::string(s.message()).find(t / "r.csr") != std::string::npos);
    CHECK_FALSE(std::filesystem::exists(t / "r.crt"));
  }

  TEST_CASE("a request for a key that is not Ed25519 is refused") {
    TempDir t;
    REQUIRE(CreateAuthority(t / "ca", "CA", 10).ok());
    crypto::PKey ec(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
    REQUIRE(ec);
    X509_REQ* req = X509_REQ_new();
    REQUIRE(req != nullptr);
    REQUIRE(X509_REQ_set_pubkey(req, ec.get()) == 1);
    REQUIRE(X509_REQ_sign(req, ec.get(), EVP_sha256()) > 0);
    BIO* bio = BIO_new_file((t / "ec.csr").c_str(), "w");
    REQUIRE(PEM_write_bio_X509_REQ(bio, req) == 1);
    BIO_free(bio);
    X509_REQ_free(req);
    Status s = IssueEndpointFromCsr(t / "ca", t / "ec.csr", "dtn1", t / "ec.crt", 10);
    CHECK(s.code() == Code::kInvalidArgument);
    CHECK(std::string(s.message()).find("Ed25519 keys only") != std::string::npos);

    REQUIRE(crypto::WritePrivateKeyPem(ec, t / "ec.key").ok());
    Status w = WriteCsr(t / "ec.key", "dtn1", t / "ec2.csr");
    CHECK(w.code() == Code::kInvalidArgument);
    CHECK(std::string(w.message()).find("not an Ed25519 key") != std::string::npos);
    CHECK_FALSE(std::filesystem::exists(t / "ec2.csr"));
  }

  TEST_CASE("IssueEndpointFromCsr: missing, wrong and existing files, bad names") {
    TempDir t;
    REQUIRE(CreateAuthority(t / "ca", "CA", 10).ok());
    Status missing = IssueEndpointFromCsr(t / "ca", t / "none.csr", "dtn1", t / "c.crt", 10);
    CHECK(missing.code() == Code::kNotFound);
    CHECK(std::string(missing.message()).find(t / "none.csr") != std::string::npos);

    Status not_csr = IssueEndpointFromCsr(t / "ca", t / "ca/ca.crt", "dtn1", t / "c.crt", 10);
    CHECK(not_csr.code() == Code::kInvalidArgument);
    CHECK(std::string(not_csr.message()).find(t / "ca/ca.crt") != std::string::npos);

    REQUIRE(WriteCsr(t / "k.key", "dtn1", t / "r.csr").ok());
    Status bad_name = IssueEndpointFromCsr(t / "ca", t / "r.csr", "dtn/1", t / "c.crt", 10);
    CHECK(bad_name.code() == Code::kInvalidArgument);
    Status no_ca = IssueEndpointFromCsr(t / "nope", t / "r.csr", "dtn1", t / "c.crt", 10);
    CHECK(no_ca.code() == Code::kNotFound);

    REQUIRE(IssueEndpointFromCsr(t / "ca", t / "r.csr", "dtn1", t / "c.crt", 10).ok());
    const std::string crt = Slurp(t / "c.crt");
    Status again = IssueEndpointFromCsr(t / "ca", t / "r.csr", "dtn1", t / "c.crt", 10);
    CHECK(again.code() == Code::kAlreadyExists);
    CHECK(std::string(again.message()).find(t / "c.crt") != std::string::npos);
    CHECK(Slurp(t / "c.crt") == crt);
  }

  TEST_CASE("WriteCsr refuses an existing request and a bad name, creating no key") {
    TempDir t;
    REQUIRE(WriteCsr(t / "k.key", "dtn1", t / "r.csr").ok());
    const std::string csr = Slurp(t / "r.csr");
    Status again = WriteCsr(t / "k.key", "dtn1", t / "r.csr");
    CHECK(again.code() == Code::kAlreadyExists);
    CHECK(Slurp(t / "r.csr") == csr);

    Status bad = WriteCsr(t / "new.key", "a b", t / "new.csr");
    CHECK(bad.code() == Code::kInvalidArgument);
    CHECK_FALSE(std::filesystem::exists(t / "new.key"));
    Status no_dir = WriteCsr(t / "new.key", "dtn1", t / "no/such/dir.csr");
    CHECK(no_dir.code() == Code::kNotFound);
    CHECK_FALSE(std::filesystem::exists(t / "new.key"));
  }
}

}  // namespace
}  // namespace pororoca::pki
