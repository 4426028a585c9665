#include "pki/pki.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <doctest/doctest.h>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace pororoca::pki {
namespace {

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/poro_pki_test_XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    path_ = tmpl;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

mode_t Mode(const std::string& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return st.st_mode & 0777;
}

TEST_SUITE("pki") {
  TEST_CASE("CreateAuthority writes a PKCS#8 key with mode 0600 and a self-signed CA certificate") {
    TempDir t;
    const std::string ca = t.path() + "/ca";
    REQUIRE(CreateAuthority(ca, "Site CA", 10).ok());
    CHECK(Mode(ca + "/ca.key") == 0600);
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
    CHECK(Mode(d + "/1.key") == 0600);
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
}

}  // namespace
}  // namespace pororoca::pki
