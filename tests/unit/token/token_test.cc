#include "token/token.h"

#include <doctest/doctest.h>

#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "crypto/encoding.h"

namespace pororoca::token {
namespace {

using json = nlohmann::json;

constexpr char kIssuer[] = "https://auth.lncc.example";
constexpr char kAudience[] = "dtn-a.cloud";
constexpr int64_t kT0 = 1795428000;  // 2026-11-23T10:00:00Z

crypto::PKey NewKey() {
  auto k = crypto::GenerateEd25519();
  REQUIRE(k.ok());
  return std::move(k).value();
}

// One issuer key for the whole suite; the lookup knows kIssuer only.
const crypto::PKey& IssuerKey() {
  static crypto::PKey key = NewKey();
  return key;
}

IssuerKeyLookup Known() {
  return [](std::string_view iss) -> const crypto::PKey* { return iss == kIssuer ? &IssuerKey() : nullptr; };
}

Claims Valid() {
  Claims c;
  c.issuer = kIssuer;
  c.subject = "alice";
  c.audience = kAudience;
  c.id = "job-42";
  c.issued_at = kT0;
  c.not_before = kT0;
  c.expires = kT0 + 3600;
  c.scopes = {"storage.read:/data", "storage.create:/incoming"};
  return c;
}

std::string Issue(const Claims& c, const crypto::PKey& key = IssuerKey()) {
  auto t = IssueToken(c, key);
  REQUIRE_MESSAGE(t.ok(), t.status().ToString());
  return *t;
}

// A compact JWS of arbitrary header and payload text, signed with `key` (as an attacker or a
// foreign issuer might write it).
std::string SignText(const std::string& header, const std::string& payload,
                     const crypto::PKey& key = IssuerKey()) {
  std::string input = crypto::Base64UrlEncode(header) + "." + crypto::Base64UrlEncode(payload);
  auto sig = crypto::SignEd25519(key, input);
  REQUIRE(sig.ok());
  return input + "." + crypto::Base64UrlEncode(*sig);
}

std::string SignRaw(const json& header, const json& payload) {
  return SignText(header.dump(), payload.dump());
}

json ValidPayload() {
  return {{"iss", kIssuer}, {"sub", "alice"}, {"aud", kAudience}, {"exp", kT0 + 3600}, {"iat", kT0}};
}
const json kHeader = {{"alg", "EdDSA"}, {"typ", "JWT"}};

Result<Claims> VerifyAt(std::string_view jwt, int64_t now = kT0 + 300, int64_t leeway = 60) {
  return VerifyToken(jwt, Known(), kAudience, now, leeway);
}

// The message of a refusal with `code`.
std::string Refusal(const Result<Claims>& r, Code code) {
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code() == code);
  return std::string(r.error().message());
}
std::string Unauth(const Result<Claims>& r) { return Refusal(r, Code::kUnauthenticated); }
std::string Malformed(const Result<Claims>& r) {
  std::string m = Refusal(r, Code::kInvalidArgument);
  CHECK(m.rfind("malformed token: ", 0) == 0);
  return m;
}

std::map<std::string, std::string> Parts(const std::string& jwt) {
  size_t d1 = jwt.find('.');
  size_t d2 = jwt.find('.', d1 + 1);
  return {{"header", *crypto::Base64UrlDecode(jwt.substr(0, d1))},
          {"payload", *crypto::Base64UrlDecode(jwt.substr(d1 + 1, d2 - d1 - 1))},
          {"sig", jwt.substr(d2 + 1)}};
}

bool Has(const std::string& haystack, const std::string& needle) {
  if (haystack.find(needle) != std::string::npos) return true;
  MESSAGE("'" << needle << "' not in: " << haystack);
  return false;
}

TEST_SUITE("token.jwt") {
  TEST_CASE("a token round-trips every claim") {
    Claims in = Valid();
    std::string jwt = Issue(in);
    auto out = VerifyAt(jwt);
    REQUIRE_MESSAGE(out.ok(), out.status().ToString());
    CHECK(out->issuer == in.issuer);
    CHECK(out->subject == "alice");
    CHECK(out->audience == kAudience);
    CHECK(out->id == "job-42");
    CHECK(out->issued_at == kT0);
    CHECK(out->not_before == kT0);
    CHECK(out->expires == kT0 + 3600);
    CHECK(out->scopes == in.scopes);
  }

  TEST_CASE("the token is a JWS with alg EdDSA, the scope claim is one space-separated string") {
    auto jwt = IssueToken(Valid(), IssuerKey(), "key-2026");
    REQUIRE(jwt.ok());
    auto parts = Parts(*jwt);
    json header = json::parse(parts["header"]);
    CHECK(header == json{{"alg", "EdDSA"}, {"typ", "JWT"}, {"kid", "key-2026"}});
    json payload = json::parse(parts["payload"]);
    CHECK(payload["scope"] == "storage.read:/data storage.create:/incoming");
    CHECK(payload["aud"] == kAudience);
    CHECK(crypto::Base64UrlDecode(parts["sig"])->size() == 64);
    CHECK(VerifyAt(*jwt).ok());
  }

  TEST_CASE("empty claims are left out and read back as empty") {
    Claims c;
    c.issuer = kIssuer;
    c.audience = kAudience;
    c.expires = kT0 + 10;
    std::string jwt = Issue(c);
    json payload = json::parse(Parts(jwt)["payload"]);
    CHECK(payload == json{{"iss", kIssuer}, {"aud", kAudience}, {"exp", kT0 + 10}});
    auto out = VerifyAt(jwt, kT0);
    REQUIRE(out.ok());
    CHECK(out->subject.empty());
    CHECK(out->scopes.empty());
    CHECK(out->not_before == 0);
  }

  TEST_CASE("expired, not yet valid and future-issued tokens are refused with both times") {
    CHECK(Unauth(VerifyAt(Issue(Valid()), kT0 + 3600 + 60)) ==
          "token expired at 2026-11-23T11:00:00Z (now 2026-11-23T11:01:00Z)");
    Claims c = Valid();
    c.expires = kT0;
    CHECK(Unauth(VerifyAt(Issue(c), kT0 + 300, 0)) ==
          "token expired at 2026-11-23T10:00:00Z (now 2026-11-23T10:05:00Z)");

    Claims early = Valid();
    early.not_before = kT0 + 600;
    early.issued_at = 0;
    CHECK(Unauth(VerifyAt(Issue(early), kT0)) ==
          "token is not valid before 2026-11-23T10:10:00Z (now 2026-11-23T10:00:00Z)");

    Claims future = Valid();
    future.not_before = 0;
    future.issued_at = kT0 + 600;
    CHECK(
        Has(Unauth(VerifyAt(Issue(future), kT0)), "token was issued in the future, at 2026-11-23T10:10:00Z"));
  }

  TEST_CASE("the leeway allows that much clock skew and no more") {
    Claims c = Valid();
    c.expires = kT0;
    c.not_before = kT0 + 100;
    c.issued_at = 0;
    std::string jwt = Issue(c);
    // Valid for now in [nbf - leeway, exp + leeway).
    CHECK(VerifyAt(jwt, kT0 + 59, 60).ok());
    CHECK_FALSE(VerifyAt(jwt, kT0 + 60, 60).ok());
    CHECK(VerifyAt(jwt, kT0 + 40, 60).ok());
    CHECK(Has(Unauth(VerifyAt(jwt, kT0 - 1, 100)), "not valid before"));
    CHECK(Has(Unauth(VerifyAt(jwt, kT0 + 1, 0)), "expired"));
    CHECK(VerifyToken(jwt, Known(), kAudience, kT0, -1).error().code() == Code::kInvalidArgument);
  }

  TEST_CASE("extreme times neither overflow nor wrap around") {
    Claims c = Valid();
    c.expires = std::numeric_limits<int64_t>::max();
    c.issued_at = std::numeric_limits<int64_t>::min();
    c.not_before = std::numeric_limits<int64_t>::min();
    CHECK(VerifyAt(Issue(c), kT0, std::numeric_limits<int64_t>::max()).ok());
    c.expires = std::numeric_limits<int64_t>::min();
    c.issued_at = c.not_before = 0;
    CHECK(Has(Unauth(VerifyAt(Issue(c), kT0, std::numeric_limits<int64_t>::max())),
              "expired at -9223372036854775808 (seconds since 1970)"));
    json p = ValidPayload();
    p["exp"] = 18446744073709551615ull;
    CHECK(Has(Malformed(VerifyAt(SignRaw(kHeader, p))), "'exp' is out of range"));
  }

  TEST_CASE("the audience must name this endpoint, an array must contain it") {
    Claims c = Valid();
    c.audience = "dtn-b.lncc";
    CHECK(Unauth(VerifyAt(Issue(c))) == "token audience is 'dtn-b.lncc', this endpoint is 'dtn-a.cloud'");
    c.audience.clear();
    CHECK(Unauth(VerifyAt(Issue(c))) == "token has no audience (aud), this endpoint is 'dtn-a.cloud'");

    json p = ValidPayload();
    p["aud"] = {"dtn-b.lncc", kAudience};
    auto ok = VerifyAt(SignRaw(kHeader, p));
    REQUIRE_MESSAGE(ok.ok(), ok.status().ToString());
    CHECK(ok->audience == kAudience);
    p["aud"] = {"dtn-b.lncc", "dtn-c.lncc"};
    CHECK(Unauth(VerifyAt(SignRaw(kHeader, p))) ==
          "token audiences are 'dtn-b.lncc', 'dtn-c.lncc', this endpoint is 'dtn-a.cloud'");
    p["aud"] = json::array();
    CHECK(Has(Unauth(VerifyAt(SignRaw(kHeader, p))), "token has no audience"));
    p["aud"] = "DTN-A.CLOUD";
    CHECK(Has(Unauth(VerifyAt(SignRaw(kHeader, p))), "token audience is 'DTN-A.CLOUD'"));

    CHECK(VerifyToken(Issue(Valid()), Known(), "", kT0).error().code() == Code::kInvalidArgument);
  }

  TEST_CASE("an issuer the lookup does not know is refused") {
    Claims c = Valid();
    c.issuer = "https://x";
    CHECK(Unauth(VerifyAt(Issue(c))) == "token issuer 'https://x' is not in the federation manifest");
    CHECK(Has(Unauth(VerifyToken(Issue(Valid()), IssuerKeyLookup(), kAudience, kT0)),
              "is not in the federation"));
    auto empty_key = [](std::string_view) -> const crypto::PKey* {
      static crypto::PKey none;
      return &none;
    };
    CHECK(Has(Unauth(VerifyToken(Issue(Valid()), empty_key, kAudience, kT0)), "is not in the federation"));
  }

  TEST_CASE("a token signed by another key does not verify") {
    crypto::PKey other = NewKey();
    CHECK(Unauth(VerifyAt(Issue(Valid(), other))) ==
          std::string("token signature does not verify with the key of issuer '") + kIssuer + "'");
  }

  TEST_CASE("tampering with the payload or the signature breaks the signature") {
    std::string jwt = Issue(Valid());
    auto parts = Parts(jwt);
    size_t d1 = jwt.find('.');
    size_t d2 = jwt.find('.', d1 + 1);

    json payload = json::parse(parts["payload"]);
    payload["scope"] = "storage.modify:/";
    std::string forged = jwt.substr(0, d1 + 1) + crypto::Base64UrlEncode(payload.dump()) + jwt.substr(d2);
    CHECK(Has(Unauth(VerifyAt(forged)), "signature does not verify"));

    json header = json::parse(parts["header"]);
    header["kid"] = "x";
    std::string new_header = crypto::Base64UrlEncode(header.dump()) + jwt.substr(d1);
    CHECK(Has(Unauth(VerifyAt(new_header)), "signature does not verify"));

    for (size_t i : {size_t(0), size_t(40), size_t(63)}) {
      std::string sig = *crypto::Base64UrlDecode(parts["sig"]);
      sig[i] = char(sig[i] ^ 0x20);
      CHECK(Has(Unauth(VerifyAt(jwt.substr(0, d2 + 1) + crypto::Base64UrlEncode(sig))),
                "signature does not verify"));
    }
    std::string sig = *crypto::Base64UrlDecode(parts["sig"]);
    CHECK(Has(Malformed(VerifyAt(jwt.substr(0, d2 + 1) + crypto::Base64UrlEncode(sig.substr(0, 63)))),
              "signature is 63 bytes"));
    CHECK(Has(Malformed(VerifyAt(jwt.substr(0, d2 + 1))), "signature is 0 bytes"));
  }

  TEST_CASE("algorithms other than EdDSA are refused by name, before the issuer is looked at") {
    for (const char* alg : {"none", "HS256", "RS256", "ES256", "Ed25519", "eddsa", ""}) {
      CAPTURE(alg);
      json h = {{"alg", alg}, {"typ", "JWT"}};
      json p = ValidPayload();
      p["iss"] = "https://unknown";
      CHECK(Unauth(VerifyAt(SignRaw(h, p))) ==
            std::string("token algorithm '") + alg + "' is not accepted (only EdDSA)");
    }
    // The classic unsigned token: empty signature part.
    std::string none = crypto::Base64UrlEncode(R"({"alg":"none"})") + "." +
                       crypto::Base64UrlEncode(ValidPayload().dump()) + ".";
    CHECK(Unauth(VerifyAt(none)) == "token algorithm 'none' is not accepted (only EdDSA)");
    CHECK(Has(Malformed(VerifyAt(SignRaw(json{{"typ", "JWT"}}, ValidPayload()))), "header has no 'alg'"));
    CHECK(Has(Malformed(VerifyAt(SignRaw(json{{"alg", 1}}, ValidPayload()))), "'alg' is not a string"));
    json crit = {{"alg", "EdDSA"}, {"crit", {"exp"}}};
    CHECK(Has(Unauth(VerifyAt(SignRaw(crit, ValidPayload()))), "critical extensions"));
  }

  TEST_CASE("checks run in order: form, algorithm, issuer, signature, time, audience") {
    crypto::PKey other = NewKey();
    Claims c = Valid();
    c.audience = "elsewhere";
    c.expires = kT0 - 1000;
    // Expired and for another audience: the time is reported.
    CHECK(Has(Unauth(VerifyAt(Issue(c))), "expired"));
    // ... and also signed by a wrong key: the signature is reported.
    CHECK(Has(Unauth(VerifyAt(Issue(c, other))), "signature does not verify"));
    // ... and also from an unknown issuer: the issuer is reported.
    c.issuer = "https://x";
    CHECK(Has(Unauth(VerifyAt(Issue(c, other))), "is not in the federation manifest"));
    // ... and also HS256: the algorithm is reported.
    json p = ValidPayload();
    p["iss"] = "https://x";
    p["exp"] = kT0 - 1000;
    CHECK(Has(Unauth(VerifyAt(SignRaw(json{{"alg", "HS256"}}, p))), "algorithm 'HS256'"));
    // ... and a payload that is not an object: malformed.
    CHECK(Has(Malformed(VerifyAt(SignText(R"({"alg":"HS256"})", "[1]"))), "payload is not a JSON object"));
  }

  TEST_CASE("malformed tokens are InvalidArgument and say what is wrong") {
    const std::string good = Issue(Valid());
    const std::string h = good.substr(0, good.find('.'));
    CHECK(Has(Malformed(VerifyAt("")), "empty"));
    CHECK(Has(Malformed(VerifyAt("abc")), "three dot-separated parts"));
    CHECK(Has(Malformed(VerifyAt("a.b")), "three dot-separated parts"));
    CHECK(Has(Malformed(VerifyAt(good + ".x")), "three dot-separated parts"));
    CHECK(Has(Malformed(VerifyAt("e30=.e30.AAAA")), "header is not base64url"));
    CHECK(Has(Malformed(VerifyAt(h + "." + crypto::Base64UrlEncode(ValidPayload().dump()) + ".AA+A")),
              "signature is not base64url"));
    CHECK(Has(Malformed(VerifyAt(crypto::Base64UrlEncode("{") + ".e30.AAAA")), "header is not JSON"));
    CHECK(Has(Malformed(VerifyAt(h + "." + crypto::Base64UrlEncode("\"x\"") + ".AAAA")),
              "payload is not a JSON object"));
    CHECK(Has(Malformed(VerifyAt(std::string(kMaxTokenBytes + 1, 'a'))), "more than the limit of 16384"));
    CHECK(Has(Malformed(VerifyAt(h + "." + crypto::Base64UrlEncode("{\"iss\":\"\xff\"}") + ".AAAA")),
              "payload is not JSON"));

    struct Case {
      const char* claim;
      json value;
      const char* says;
    };
    const Case cases[] = {
        {"iss", nullptr, "no issuer"},
        {"iss", "", "no issuer"},
        {"iss", 7, "'iss' is not a string"},
        {"exp", nullptr, "no expiry time"},
        {"exp", "1795428000", "'exp' is not an integer"},
        {"exp", 1795428000.5, "'exp' is not an integer"},
        {"nbf", true, "'nbf' is not an integer"},
        {"iat", json::array(), "'iat' is not an integer"},
        {"aud", 5, "'aud' is neither a string nor an array"},
        {"aud", {kAudience, 5}, "not a string"},
        {"sub", json::object(), "'sub' is not a string"},
        {"jti", 1, "'jti' is not a string"},
        {"scope", {"storage.read:/"}, "'scope' is not a string"},
    };
    for (const Case& k : cases) {
      CAPTURE(k.claim);
      json p = ValidPayload();
      if (k.value.is_null()) {
        p.erase(k.claim);
      } else {
        p[k.claim] = k.value;
      }
      CHECK(Has(Malformed(VerifyAt(SignRaw(kHeader, p))), k.says));
    }
  }

  TEST_CASE("scope words are split on any number of spaces, unknown claims are ignored") {
    json p = ValidPayload();
    p["scope"] = "  openid storage.read:/a   storage.create:/b ";
    p["wlcg.ver"] = "1.0";
    p["nested"] = {{"deep", {1, 2, 3}}};
    auto c = VerifyAt(SignRaw(kHeader, p));
    REQUIRE(c.ok());
    CHECK(c->scopes == std::vector<std::string>{"openid", "storage.read:/a", "storage.create:/b"});
  }

  TEST_CASE("values from the token reach messages without control characters and cut short") {
    json p = ValidPayload();
    p["iss"] = "https://evil\n2026-01-01 fake log line";
    std::string m = Unauth(VerifyAt(SignRaw(kHeader, p)));
    CHECK(m.find('\n') == std::string::npos);
    CHECK(Has(m, "https://evil?2026"));
    p["iss"] = std::string(5000, 'x');
    m = Unauth(VerifyAt(SignRaw(kHeader, p)));
    CHECK(m.size() < 200);
    CHECK(Has(m, "...'"));
  }

  TEST_CASE("IssueToken refuses what it cannot sign honestly") {
    Claims c = Valid();
    c.issuer.clear();
    CHECK(Has(std::string(IssueToken(c, IssuerKey()).error().message()), "needs an issuer"));
    c = Valid();
    c.expires = 0;
    CHECK(Has(std::string(IssueToken(c, IssuerKey()).error().message()), "needs an expiry"));
    c = Valid();
    c.scopes = {"storage.read:/a storage.modify:/"};
    CHECK(IssueToken(c, IssuerKey()).error().code() == Code::kInvalidArgument);
    c.scopes = {""};
    CHECK(IssueToken(c, IssuerKey()).error().code() == Code::kInvalidArgument);
    c = Valid();
    c.subject = "\xff\xfe";
    CHECK(IssueToken(c, IssuerKey()).error().code() == Code::kInvalidArgument);
    c = Valid();
    c.scopes = {std::string(kMaxTokenBytes, 'a')};
    CHECK(Has(std::string(IssueToken(c, IssuerKey()).error().message()), "a verifier accepts"));

    auto pub = crypto::ParsePublicKeyPem(*crypto::PublicKeyPem(IssuerKey()));
    REQUIRE(pub.ok());
    CHECK(Has(std::string(IssueToken(Valid(), *pub).error().message()), "sign token"));
    CHECK(IssueToken(Valid(), crypto::PKey()).error().code() == Code::kInvalidArgument);
  }

  TEST_CASE("an expired token can still be made on purpose (for tests and drills)") {
    Claims c = Valid();
    c.expires = kT0 - 10;
    c.not_before = kT0 - 100;
    CHECK(Has(Unauth(VerifyAt(Issue(c), kT0, 0)), "expired"));
  }
}

}  // namespace
}  // namespace pororoca::token
