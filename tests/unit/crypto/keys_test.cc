#include "crypto/keys.h"

#include <doctest/doctest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <string>

#include "base/file_util.h"
#include "crypto/encoding.h"
#include "pki/pki.h"
#include "support/temp_dir.h"

namespace pororoca::crypto {
namespace {

using test::ModeOf;
using test::TempDir;

std::string Unhex(std::string_view hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out += char(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16));
  return out;
}

// RFC 8032 section 7.1, TEST 1.
constexpr char kRfcSecret[] = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
constexpr char kRfcSignature[] =
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0"
    "595bbe24655141438e7a100b";
constexpr char kRfcPublicPem[] =
    "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n-----END "
    "PUBLIC KEY-----\n";
// sha256sum of the 44-byte DER SubjectPublicKeyInfo of that key.
constexpr char kRfcPin[] = "06e3fd8fda29bb60ab59557de61edb0aecdb231134be30e75b455f8e1b792fa9";

PKey RfcKey() {
  const std::string secret = Unhex(kRfcSecret);
  PKey key(EVP_PKEY_new_raw_private_key(
      EVP_PKEY_ED25519, nullptr, reinterpret_cast<const unsigned char*>(secret.data()), secret.size()));
  REQUIRE(key);
  return key;
}

PKey MustGenerate() {
  auto key = GenerateEd25519();
  REQUIRE(key.ok());
  return std::move(key).value();
}

PKey PublicOnly(const PKey& key) {
  auto pem = PublicKeyPem(key);
  REQUIRE(pem.ok());
  auto pub = ParsePublicKeyPem(*pem);
  REQUIRE(pub.ok());
  return std::move(pub).value();
}

std::string ErrorOf(const Status& s, Code code) {
  CHECK(s.code() == code);
  return std::string(s.message());
}

TEST_SUITE("crypto.keys") {
  TEST_CASE("Ed25519 signs the RFC 8032 test vector and its public key has the known pin") {
    PKey key = RfcKey();
    CHECK(key.IsEd25519());
    auto sig = SignEd25519(key, "");
    REQUIRE(sig.ok());
    CHECK(HexLower(*sig) == kRfcSignature);
    auto pub = ParsePublicKeyPem(kRfcPublicPem);
    REQUIRE(pub.ok());
    CHECK(VerifyEd25519(*pub, "", *sig));
    CHECK(PublicKeyPin(*pub) == kRfcPin);
    CHECK(PublicKeyPin(key) == kRfcPin);
    CHECK(*PublicKeyPem(key) == kRfcPublicPem);
  }

  TEST_CASE("a signature verifies only for its message, its bytes and its key") {
    PKey key = MustGenerate();
    PKey pub = PublicOnly(key);
    const std::string msg = "transfer lncc-dtn1 -> cenapad-dtn1";
    std::string sig = *SignEd25519(key, msg);
    REQUIRE(sig.size() == kEd25519SignatureSize);
    CHECK(VerifyEd25519(pub, msg, sig));
    CHECK(VerifyEd25519(key, msg, sig));
    CHECK_FALSE(VerifyEd25519(pub, msg + ".", sig));
    CHECK_FALSE(VerifyEd25519(pub, "", sig));
    for (size_t i : {size_t(0), size_t(31), size_t(63)}) {
      std::string bad = sig;
      bad[i] = char(bad[i] ^ 1);
      CHECK_FALSE(VerifyEd25519(pub, msg, bad));
    }
    CHECK_FALSE(VerifyEd25519(pub, msg, sig.substr(0, 63)));
    CHECK_FALSE(VerifyEd25519(pub, msg, sig + '\0'));
    CHECK_FALSE(VerifyEd25519(pub, msg, ""));
    CHECK_FALSE(VerifyEd25519(MustGenerate(), msg, sig));
    CHECK_FALSE(VerifyEd25519(PKey(), msg, sig));
  }

  TEST_CASE("keys that are not Ed25519 private keys cannot sign, and never verify") {
    PKey ec(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
    REQUIRE(ec);
    CHECK_FALSE(ec.IsEd25519());
    CHECK(ErrorOf(SignEd25519(ec, "m").status(), Code::kInvalidArgument).find("not an Ed25519") !=
          std::string::npos);
    CHECK_FALSE(VerifyEd25519(ec, "m", std::string(64, 'x')));
    CHECK(ErrorOf(SignEd25519(PublicOnly(MustGenerate()), "m").status(), Code::kInvalidArgument)
              .find("without its private part") != std::string::npos);
    CHECK(SignEd25519(PKey(), "m").error().code() == Code::kInvalidArgument);
  }

  TEST_CASE("PKey moves its key and frees it once") {
    PKey a = MustGenerate();
    EVP_PKEY* raw = a.get();
    PKey b(std::move(a));
    CHECK_FALSE(a);  // NOLINT(bugprone-use-after-move): moved-from state is part of the contract
    CHECK(b.get() == raw);
    PKey c;
    c = std::move(b);
    CHECK(c.get() == raw);
    c = MustGenerate();
    CHECK(c.get() != raw);
  }

  TEST_CASE("key files: modes 0600 and 0644, round trips, never overwritten") {
    TempDir t;
    PKey key = MustGenerate();
    const std::string priv = t / "k.key";
    const std::string pub = t / "k.pub";
    REQUIRE(WritePrivateKeyPem(key, priv).ok());
    REQUIRE(WritePublicKeyPem(key, pub).ok());
    CHECK(ModeOf(priv) == 0600);
    CHECK(ModeOf(pub) == 0644);
    CHECK(ReadSmallFile(priv)->rfind("-----BEGIN PRIVATE KEY-----", 0) == 0);
    CHECK(ReadSmallFile(pub)->rfind("-----BEGIN PUBLIC KEY-----", 0) == 0);

    auto loaded = LoadPrivateKeyPem(priv);
    auto loaded_pub = LoadPublicKeyPem(pub);
    REQUIRE(loaded.ok());
    REQUIRE(loaded_pub.ok());
    CHECK(PublicKeyPin(*loaded) == PublicKeyPin(key));
    CHECK(PublicKeyPin(*loaded_pub) == PublicKeyPin(key));
    CHECK(VerifyEd25519(*loaded_pub, "x", *SignEd25519(*loaded, "x")));

    const std::string before = *ReadSmallFile(priv);
    PKey other = MustGenerate();
    CHECK(ErrorOf(WritePrivateKeyPem(other, priv), Code::kAlreadyExists).find(priv) != std::string::npos);
    CHECK(ErrorOf(WritePublicKeyPem(other, pub), Code::kAlreadyExists).find(pub) != std::string::npos);
    CHECK(*ReadSmallFile(priv) == before);
  }

  TEST_CASE("WriteNewFile reports a missing directory and leaves nothing behind") {
    TempDir t;
    Status s = WriteNewFile(t / "no/such/file", "x", 0644);
    CHECK(ErrorOf(s, Code::kNotFound).find(t / "no/such/file") != std::string::npos);
  }

  TEST_CASE("ParsePublicKeyPem says what is wrong with the text") {
    TempDir t;
    PKey key = MustGenerate();
    const std::string priv_pem = *PrivateKeyPem(key);
    std::string pub_pem = *PublicKeyPem(key);
    CHECK(ErrorOf(ParsePublicKeyPem(priv_pem).status(), Code::kInvalidArgument).find("private key") !=
          std::string::npos);
    CHECK(ErrorOf(ParsePublicKeyPem("hello").status(), Code::kInvalidArgument).find("BEGIN PUBLIC KEY") !=
          std::string::npos);
    CHECK(ErrorOf(ParsePublicKeyPem("").status(), Code::kInvalidArgument).find("BEGIN PUBLIC KEY") !=
          std::string::npos);
    REQUIRE(pki::CreateAuthority(t / "ca", "CA", 1).ok());
    CHECK(ErrorOf(ParsePublicKeyPem(*ReadSmallFile(t / "ca/ca.crt")).status(), Code::kInvalidArgument)
              .find("certificate") != std::string::npos);

    std::string damaged = pub_pem;
    damaged[30] = damaged[30] == 'A' ? 'B' : 'A';  // inside the base64 body
    damaged.replace(40, 4, "!!!!");
    CHECK(
        ErrorOf(ParsePublicKeyPem(damaged).status(), Code::kInvalidArgument).find("invalid PUBLIC KEY PEM") !=
        std::string::npos);
    CHECK(ErrorOf(ParsePublicKeyPem(std::string(70000, 'A')).status(), Code::kInvalidArgument)
              .find("more than") != std::string::npos);
  }

  TEST_CASE("loading key files: errors name the file") {
    TempDir t;
    auto missing = LoadPublicKeyPem(t / "none.pub");
    CHECK(ErrorOf(missing.status(), Code::kNotFound).find(t / "none.pub") != std::string::npos);
    auto missing_priv = LoadPrivateKeyPem(t / "none.key");
    CHECK(ErrorOf(missing_priv.status(), Code::kNotFound).find(t / "none.key") != std::string::npos);

    PKey key = MustGenerate();
    REQUIRE(WritePrivateKeyPem(key, t / "k.key").ok());
    auto wrong = LoadPublicKeyPem(t / "k.key");
    std::string msg = ErrorOf(wrong.status(), Code::kInvalidArgument);
    CHECK(msg.find(t / "k.key") != std::string::npos);
    CHECK(msg.find("private key") != std::string::npos);
    REQUIRE(WritePublicKeyPem(key, t / "k.pub").ok());
    CHECK(ErrorOf(LoadPrivateKeyPem(t / "k.pub").status(), Code::kInvalidArgument).find(t / "k.pub") !=
          std::string::npos);
  }

  TEST_CASE("an encrypted private key is refused without prompting for a passphrase") {
    TempDir t;
    PKey key = MustGenerate();
    BIO* bio = BIO_new_file((t / "enc.key").c_str(), "w");
    REQUIRE(bio != nullptr);
    static char pass[] = "secret";
    REQUIRE(PEM_write_bio_PKCS8PrivateKey(bio, key.get(), EVP_aes_256_cbc(), pass, 6, nullptr, nullptr) == 1);
    BIO_free(bio);
    auto r = LoadPrivateKeyPem(t / "enc.key");
    CHECK(ErrorOf(r.status(), Code::kInvalidArgument).find(t / "enc.key") != std::string::npos);
  }

  TEST_CASE("the pin of a key equals the pin pki computes from its certificate") {
    TempDir t;
    REQUIRE(pki::CreateAuthority(t / "ca", "CA", 1).ok());
    REQUIRE(pki::IssueEndpoint(t / "ca", "dtn1", t / "dtn1.key", t / "dtn1.crt", 1).ok());
    auto key = LoadPrivateKeyPem(t / "dtn1.key");
    REQUIRE(key.ok());
    auto cert_pin = pki::PublicKeyPinFromCert(t / "dtn1.crt");
    REQUIRE(cert_pin.ok());
    CHECK(PublicKeyPin(*key) == *cert_pin);
    CHECK(PublicKeyPin(PublicOnly(*key)) == *cert_pin);
    CHECK(cert_pin->size() == 64);
    CHECK(PublicKeyPin(MustGenerate()) != *cert_pin);
    CHECK(PublicKeyPin(PKey()).empty());
    CHECK(PublicKeyPinOfCert(nullptr).empty());
  }

  TEST_CASE("OpenSslErrors drains the queue and says so when it was empty") {
    CHECK_FALSE(ParsePublicKeyPem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").ok());
    CHECK(OpenSslErrors() == "unknown OpenSSL error");  // the parser's reasons went into its Status
    CHECK_FALSE(VerifyEd25519(MustGenerate(), "m", std::string(64, '\0')));
    CHECK(OpenSslErrors() == "unknown OpenSSL error");
  }
}

}  // namespace
}  // namespace pororoca::crypto
