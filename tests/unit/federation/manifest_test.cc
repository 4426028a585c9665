#include "federation/manifest.h"

#include <doctest/doctest.h>

#include <string>

#include "base/file_util.h"
#include "crypto/encoding.h"
#include "federation/authority.h"
#include "support/temp_dir.h"
#include "unit/federation/requests.h"

namespace pororoca::federation {
namespace {

using json = nlohmann::json;
using test::TempDir;

// A workspace with two institutions, an endpoint each, an issuer and one rule, signed once.
struct Fixture {
  TempDir tmp;
  std::string dir = tmp.path() + "/auth";
  Fixture() {
    REQUIRE(InitAuthority(dir, "test-fed", 2).ok());
    REQUIRE(AddInstitution(dir, "lncc", "Laboratorio Nacional").ok());
    REQUIRE(AddInstitution(dir, "cloud", "GPU cloud").ok());
    EndpointRequest a = Req("dtn-a", "lncc", "127.0.0.1:7001");
    EndpointRequest b = Req("dtn-b", "cloud", "127.0.0.1:7002");
    REQUIRE(AddEndpoint(dir, a).has_value());
    REQUIRE(AddEndpoint(dir, b).has_value());
    REQUIRE(AddIssuer(dir, "https://tokens.lncc", "lncc", std::nullopt).has_value());
    REQUIRE(AddRule(dir, json{{"id", "lncc-to-cloud"},
                              {"effect", "allow"},
                              {"source", {"lncc"}},
                              {"destination", {"cloud"}}})
                .ok());
  }
  crypto::PKey Authority() {
    auto k = crypto::LoadPublicKeyPem(AuthorityPublicKeyFile(dir));
    REQUIRE(k.has_value());
    return std::move(*k);
  }
  std::string Signed() {
    REQUIRE(Sign(dir).has_value());
    auto text = ReadSmallFile(ManifestFile(dir));
    REQUIRE(text.has_value());
    return *text;
  }
};

TEST_CASE("a signed manifest verifies and exposes endpoints, issuers and policy") {
  Fixture f;
  std::string text = f.Signed();
  auto m = VerifyManifest(text, f.Authority(), "m.json");
  REQUIRE_MESSAGE(m.has_value(), m.error().ToString());
  CHECK((*m)->federation() == "test-fed");
  CHECK((*m)->serial() == 1);
  REQUIRE((*m)->FindEndpoint("dtn-a") != nullptr);
  CHECK((*m)->FindEndpoint("dtn-a")->institution == "lncc");
  CHECK((*m)->FindEndpoint("dtn-a")->status == EndpointStatus::kActive);
  CHECK((*m)->FindEndpoint("nope") == nullptr);
  CHECK((*m)->FindIssuer("https://tokens.lncc") != nullptr);
  CHECK((*m)->policy().size() == 1);
  CHECK((*m)->trust_anchors_pem().find("BEGIN CERTIFICATE") != std::string::npos);
}

TEST_CASE("tampering with any byte of the body or the signature is refused") {
  Fixture f;
  std::string text = f.Signed();
  SUBCASE("body edited: an endpoint's status") {
    json env = json::parse(text);
    env["manifest"]["endpoints"][0]["address"] = "10.0.0.1:7001";
    auto m = VerifyManifest(env.dump(), f.Authority(), "m.json");
    REQUIRE_FALSE(m.has_value());
    CHECK(m.error().code() == Code::kUnauthenticated);
    CHECK(std::string(m.error().message()).find("m.json: signature does not verify") != std::string::npos);
  }
  SUBCASE("signature replaced") {
    json env = json::parse(text);
    env["signature"]["value"] = crypto::Base64Encode(std::string(64, 'x'));
    auto m = VerifyManifest(env.dump(), f.Authority(), "m.json");
    REQUIRE_FALSE(m.has_value());
    CHECK(m.error().code() == Code::kUnauthenticated);
  }
  SUBCASE("signed by another authority") {
    Fixture other;
    std::string foreign = other.Signed();
    auto m = VerifyManifest(foreign, f.Authority(), "m.json");
    REQUIRE_FALSE(m.has_value());
    CHECK(std::string(m.error().message()).find("different signing key") != std::string::npos);
  }
  SUBCASE("unsigned") {
    json env = json::parse(text);
    env.erase("signature");
    auto m = VerifyManifest(env.dump(), f.Authority(), "m.json");
    REQUIRE_FALSE(m.has_value());
    CHECK(std::string(m.error().message()).find("not signed") != std::string::npos);
  }
  SUBCASE("another algorithm") {
    json env = json::parse(text);
    env["signature"]["algorithm"] = "none";
    auto m = VerifyManifest(env.dump(), f.Authority(), "m.json");
    REQUIRE_FALSE(m.has_value());
    CHECK(std::string(m.error().message()).find("only Ed25519") != std::string::npos);
  }
  SUBCASE("not JSON") {
    auto m = VerifyManifest(text.substr(0, text.size() / 2), f.Authority(), "m.json");
    REQUIRE_FALSE(m.has_value());
    CHECK(std::string(m.error().message()).find("not valid JSON") != std::string::npos);
  }
}

TEST_CASE("body validation names the field") {
  Fixture f;
  auto draft = LoadDraft(f.dir);
  REQUIRE(draft.has_value());
  json body = *draft;
  body["serial"] = 3;
  auto good = Manifest::FromBody(body, "x");
  REQUIRE_MESSAGE(good.has_value(), good.error().ToString());
  auto expect = [&](json b, const std::string& what) {
    auto m = Manifest::FromBody(b, "x");
    REQUIRE_FALSE(m.has_value());
    INFO(m.error().message());
    CHECK(std::string(m.error().message()).find(what) != std::string::npos);
  };
  json b = body;
  b["endpoints"][1]["status"] = "sleeping";
  expect(b, "endpoints[1] ('dtn-b'): status: must be active, suspended or revoked");
  b = body;
  b["endpoints"][0]["pin"] = "ABC";
  expect(b, "endpoints[0] ('dtn-a'): pin: expected 64 lowercase hex digits");
  b = body;
  b["endpoints"][0]["institution"] = "unknown";
  expect(b, "'unknown' is not listed under institutions");
  b = body;
  b["endpoints"].push_back(body["endpoints"][0]);
  expect(b, "duplicate endpoint id");
  b = body;
  b["colour"] = "blue";
  expect(b, "colour: unknown key");
  b = body;
  b["serial"] = 0;
  expect(b, "serial: expected a positive integer");
  b = body;
  b["trust_anchors"] = json::array({"not a certificate"});
  expect(b, "trust_anchors[0]: not a PEM certificate");
  b = body;
  b["token_issuers"][0]["public_key"] = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
  expect(b, "token_issuers[0] ('https://tokens.lncc'): public_key");
  b = body;
  b["endpoints"][0]["address"] = "127.0.0.1";
  expect(b, "address: expected host:port");
  b = body;
  b["policy"]["rules"][0]["effect"] = "maybe";
  expect(b, "x: ");
}

TEST_CASE("CheckPeer: listed, pinned and active") {
  Fixture f;
  auto m = VerifyManifest(f.Signed(), f.Authority(), "m.json");
  REQUIRE(m.has_value());
  const Endpoint* a = (*m)->FindEndpoint("dtn-a");
  REQUIRE(a != nullptr);
  CHECK((*m)->CheckPeer("dtn-a", a->pin).has_value());
  auto unknown = (*m)->CheckPeer("dtn-z", a->pin);
  REQUIRE_FALSE(unknown.has_value());
  CHECK(std::string(unknown.error().message()).find("'dtn-z' is not a homologated endpoint") !=
        std::string::npos);
  auto wrong = (*m)->CheckPeer("dtn-a", std::string(64, '0'));
  REQUIRE_FALSE(wrong.has_value());
  CHECK(std::string(wrong.error().message()).find("the manifest pins " + a->pin) != std::string::npos);
  REQUIRE(SetEndpointStatus(f.dir, "dtn-a", EndpointStatus::kSuspended).ok());
  auto m2 = VerifyManifest(f.Signed(), f.Authority(), "m.json");
  REQUIRE(m2.has_value());
  auto susp = (*m2)->CheckPeer("dtn-a", a->pin);
  REQUIRE_FALSE(susp.has_value());
  CHECK(std::string(susp.error().message())
            .find("'dtn-a' is suspended in federation 'test-fed' (manifest serial 2)") != std::string::npos);
}

}  // namespace
}  // namespace pororoca::federation
