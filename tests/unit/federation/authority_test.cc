#include "federation/authority.h"

#include <doctest/doctest.h>

#include <string>

#include "base/file_util.h"
#include "crypto/keys.h"
#include "support/temp_dir.h"
#include "unit/federation/requests.h"

namespace pororoca::federation {
namespace {

using json = nlohmann::json;
using test::TempDir;

TEST_CASE("init refuses to overwrite an existing workspace") {
  TempDir tmp;
  std::string dir = tmp.path() + "/auth";
  REQUIRE(InitAuthority(dir, "fed", 2).ok());
  Status again = InitAuthority(dir, "fed", 2);
  CHECK(again.code() == Code::kAlreadyExists);
}

TEST_CASE("a generated issuer key goes to --key-out, or under issuers/, and never over an existing file") {
  TempDir tmp;
  std::string dir = tmp.path() + "/auth";
  REQUIRE(InitAuthority(dir, "fed", 2).ok());
  REQUIRE(AddInstitution(dir, "lncc", "").ok());
  auto dflt = AddIssuer(dir, "https://t.lncc", "lncc", std::nullopt);
  REQUIRE(dflt.has_value());
  CHECK(*dflt == IssuerKeyFile(dir, "https://t.lncc"));
  CHECK(ReadSmallFile(*dflt).has_value());

  const std::string out = tmp.path() + "/lncc-issuer.key";
  auto chosen = AddIssuer(dir, "https://t2.lncc", "lncc", std::nullopt, out);
  REQUIRE(chosen.has_value());
  CHECK(*chosen == out);
  auto pem = ReadSmallFile(out);
  REQUIRE(pem.has_value());
  CHECK(pem->find("PRIVATE KEY") != std::string::npos);
  // The public half of that key is the one the draft lists for the issuer.
  auto key = crypto::LoadPrivateKeyPem(out);
  REQUIRE(key.has_value());
  auto pub = crypto::PublicKeyPem(*key);
  REQUIRE(pub.has_value());
  auto d = LoadDraft(dir);
  REQUIRE(d.has_value());
  bool listed = false;
  for (const auto& is : (*d)["token_issuers"]) {
    if (is["id"] == "https://t2.lncc") listed = is["public_key"] == *pub;
  }
  CHECK(listed);

  auto again = AddIssuer(dir, "https://t3.lncc", "lncc", std::nullopt, out);  // O_EXCL: not overwritten
  REQUIRE_FALSE(again.has_value());
  CHECK(ReadSmallFile(out).value() == *pem);
  auto both = AddIssuer(dir, "https://t4.lncc", "lncc", std::string(tmp.path() + "/pub.pem"), out);
  REQUIRE_FALSE(both.has_value());
  CHECK(both.error().code() == Code::kInvalidArgument);
}

TEST_CASE("every signature gets a higher serial, and the draft remembers it") {
  TempDir tmp;
  std::string dir = tmp.path() + "/auth";
  REQUIRE(InitAuthority(dir, "fed", 2).ok());
  REQUIRE(AddInstitution(dir, "lncc", "").ok());
  auto m1 = Sign(dir, tmp.path() + "/published.json");
  REQUIRE(m1.has_value());
  auto m2 = Sign(dir);
  REQUIRE(m2.has_value());
  CHECK((*m1)->serial() == 1);
  CHECK((*m2)->serial() == 2);
  // A draft rolled back to an old serial still signs above the last published manifest.
  auto d = LoadDraft(dir);
  REQUIRE(d.has_value());
  (*d)["serial"] = 0;
  REQUIRE(SaveDraft(dir, *d).ok());
  auto m3 = Sign(dir);
  REQUIRE(m3.has_value());
  CHECK((*m3)->serial() == 3);
  auto published = ReadSmallFile(tmp.path() + "/published.json");
  REQUIRE(published.has_value());
  CHECK(published->find("\"serial\": 1") != std::string::npos);
}

TEST_CASE("endpoints need a known institution, statuses change, revoked stays revoked") {
  TempDir tmp;
  std::string dir = tmp.path() + "/auth";
  REQUIRE(InitAuthority(dir, "fed", 2).ok());
  EndpointRequest r = Req("dtn-a", "lncc", "127.0.0.1:7001");
  auto missing = AddEndpoint(dir, r);
  REQUIRE_FALSE(missing.has_value());
  CHECK(missing.error().code() == Code::kNotFound);
  REQUIRE(AddInstitution(dir, "lncc", "").ok());
  auto issued = AddEndpoint(dir, r);
  REQUIRE(issued.has_value());
  CHECK(issued->pin.size() == 64);
  CHECK(issued->key_file == dir + "/endpoints/dtn-a.key");
  REQUIRE(SetEndpointStatus(dir, "dtn-a", EndpointStatus::kSuspended).ok());
  REQUIRE(SetEndpointStatus(dir, "dtn-a", EndpointStatus::kActive).ok());
  REQUIRE(SetEndpointStatus(dir, "dtn-a", EndpointStatus::kRevoked).ok());
  Status back = SetEndpointStatus(dir, "dtn-a", EndpointStatus::kActive);
  CHECK(back.code() == Code::kInvalidArgument);
  CHECK(SetEndpointStatus(dir, "dtn-z", EndpointStatus::kRevoked).code() == Code::kNotFound);
  auto m = Sign(dir);
  REQUIRE(m.has_value());
  CHECK((*m)->FindEndpoint("dtn-a")->status == EndpointStatus::kRevoked);
}

TEST_CASE("an endpoint issued from a CSR gets the CSR's key, and the name from the authority") {
  TempDir tmp;
  std::string dir = tmp.path() + "/auth";
  REQUIRE(InitAuthority(dir, "fed", 2).ok());
  REQUIRE(AddInstitution(dir, "lncc", "").ok());
  std::string key = tmp.path() + "/dtn.key", csr = tmp.path() + "/dtn.csr";
  REQUIRE(pki::WriteCsr(key, "dtn-a", csr).ok());
  EndpointRequest r = Req("dtn-a", "lncc", "127.0.0.1:7001");
  r.csr_file = csr;
  r.out_dir = tmp.path() + "/out";
  auto issued = AddEndpoint(dir, r);
  REQUIRE_MESSAGE(issued.has_value(), issued.error().ToString());
  CHECK(issued->key_file.empty());
  auto priv = crypto::LoadPrivateKeyPem(key);
  REQUIRE(priv.has_value());
  CHECK(issued->pin == crypto::PublicKeyPin(*priv));
}

TEST_CASE("one CSR used for two endpoint names is issued with a warning naming the first") {
  TempDir tmp;
  std::string dir = tmp.path() + "/auth";
  REQUIRE(InitAuthority(dir, "fed", 2).ok());
  REQUIRE(AddInstitution(dir, "lncc", "").ok());
  std::string key = tmp.path() + "/dtn.key", csr = tmp.path() + "/dtn.csr";
  REQUIRE(pki::WriteCsr(key, "dtn-a", csr).ok());
  EndpointRequest a = Req("dtn-a", "lncc", "127.0.0.1:7001");
  a.csr_file = csr;
  auto first = AddEndpoint(dir, a);
  REQUIRE(first.has_value());
  CHECK(first->warning.empty());
  EndpointRequest b = Req("dtn-b", "lncc", "127.0.0.1:7002");
  b.csr_file = csr;
  auto second = AddEndpoint(dir, b);
  REQUIRE(second.has_value());
  CHECK(second->pin == first->pin);
  CHECK(second->warning.find("endpoint 'dtn-a' has the same key") != std::string::npos);
  // Another key: no warning.
  std::string key_c = tmp.path() + "/dtn-c.key", csr_c = tmp.path() + "/dtn-c.csr";
  REQUIRE(pki::WriteCsr(key_c, "dtn-c", csr_c).ok());
  EndpointRequest c = Req("dtn-c", "lncc", "127.0.0.1:7003");
  c.csr_file = csr_c;
  auto third = AddEndpoint(dir, c);
  REQUIRE(third.has_value());
  CHECK(third->warning.empty());
}

TEST_CASE("policy edits are validated, ordered and removable") {
  TempDir tmp;
  std::string dir = tmp.path() + "/auth";
  REQUIRE(InitAuthority(dir, "fed", 2).ok());
  REQUIRE(AddRule(dir, json{{"id", "r1"}, {"effect", "allow"}}).ok());
  REQUIRE(AddRule(dir, json{{"id", "r0"}, {"effect", "deny"}}, "r1").ok());
  Status bad = AddRule(dir, json{{"id", "r2"}, {"effect", "allow"}, {"direction", "sideways"}});
  CHECK_FALSE(bad.ok());
  CHECK(AddRule(dir, json{{"id", "r3"}, {"effect", "allow"}}, "nope").code() == Code::kNotFound);
  auto d = LoadDraft(dir);
  REQUIRE(d.has_value());
  REQUIRE((*d)["policy"]["rules"].size() == 2);
  CHECK((*d)["policy"]["rules"][0]["id"] == "r0");
  CHECK((*d)["policy"]["rules"][1]["id"] == "r1");
  REQUIRE(RemoveRule(dir, "r0").ok());
  CHECK(RemoveRule(dir, "r0").code() == Code::kNotFound);
  CHECK_FALSE(SetRules(dir, json::object()).ok());
}

TEST_CASE("a hand-edited draft whose items have a non-string id is passed over, not thrown on") {
  TempDir tmp;
  std::string dir = tmp.path() + "/auth";
  REQUIRE(InitAuthority(dir, "fed", 2).ok());
  auto d = LoadDraft(dir);
  REQUIRE(d.has_value());
  (*d)["institutions"] = json::array({json{{"id", 5}}, json{{"name", "no id"}}, "not an object"});
  (*d)["policy"]["rules"] = json::array({json{{"id", 7}, {"effect", "allow"}}});
  REQUIRE(SaveDraft(dir, *d).ok());
  CHECK(AddInstitution(dir, "lncc", "").ok());
  CHECK(RemoveRule(dir, "r1").code() == Code::kNotFound);
  CHECK(AddRule(dir, json{{"id", "r1"}, {"effect", "allow"}}, "7").code() == Code::kNotFound);
  auto after = LoadDraft(dir);
  REQUIRE(after.has_value());
  CHECK((*after)["institutions"].size() == 4);
  CHECK((*after)["institutions"][3]["id"] == "lncc");
}

}  // namespace
}  // namespace pororoca::federation
