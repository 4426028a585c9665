#include "token/token.h"

#include <time.h>

#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <utility>

#include "crypto/encoding.h"
#include "token/printable.h"

namespace pororoca::token {
namespace {

using json = nlohmann::json;

constexpr char kAlgorithm[] = "EdDSA";

Status Malformed(std::string_view why) {
  return Status::InvalidArgument("malformed token: " + std::string(why));
}

std::string Quoted(std::string_view s) { return "'" + Printable(s) + "'"; }

// "2026-11-23T10:00:00Z"; out of the years 0000..9999, the bare number of seconds.
std::string Utc(int64_t t) {
  constexpr int64_t kYear10000 = 253402300800;
  if (t < -62167219200 || t >= kYear10000) return std::to_string(t) + " (seconds since 1970)";
  const time_t tt = static_cast<time_t>(t);
  struct tm tm {};
  char buf[32];
  if (gmtime_r(&tt, &tm) == nullptr || strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
    return std::to_string(t) + " (seconds since 1970)";
  }
  return buf;
}

int64_t SaturatingAdd(int64_t a, int64_t b) {
  int64_t r;
  if (!__builtin_add_overflow(a, b, &r)) return r;
  return b > 0 ? std::numeric_limits<int64_t>::max() : std::numeric_limits<int64_t>::min();
}

// A token taken apart: its JSON halves, the bytes the signature covers and the signature.
struct Parsed {
  json header;
  Claims claims;
  std::vector<std::string> audiences;
  bool has_iat = false;
  bool has_nbf = false;
  std::string_view signing_input;
  std::string signature;
};

Result<json> DecodeObject(std::string_view part, std::string_view name) {
  auto bytes = crypto::Base64UrlDecode(part);
  if (!bytes)
    return Malformed(std::string(name) + " is not base64url (" + std::string(bytes.error().message()) + ")");
  json j = json::parse(*bytes, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Malformed(std::string(name) + " is not JSON");
  if (!j.is_object()) return Malformed(std::string(name) + " is not a JSON object");
  return j;
}

Result<std::optional<std::string>> StringClaim(const json& payload, const char* name) {
  auto it = payload.find(name);
  if (it == payload.end()) return std::optional<std::string>();
  if (!it->is_string()) return Malformed(std::string("claim '") + name + "' is not a string");
  return std::optional<std::string>(it->get<std::string>());
}

// A NumericDate: whole seconds since 1970 (fractions are refused rather than rounded).
Result<std::optional<int64_t>> TimeClaim(const json& payload, const char* name) {
  auto it = payload.find(name);
  if (it == payload.end()) return std::optional<int64_t>();
  if (it->is_number_unsigned() && it->get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max())) {
    return Malformed(std::string("claim '") + name + "' is out of range");
  }
  if (!it->is_number_integer()) {
    return Malformed(std::string("claim '") + name + "' is not an integer number of seconds since 1970");
  }
  return std::optional<int64_t>(it->get<int64_t>());
}

Status ReadClaims(const json& p, Parsed* out) {
  Claims& c = out->claims;
  PORO_ASSIGN_OR_RETURN(auto iss, StringClaim(p, "iss"));
  if (!iss || iss->empty()) return Malformed("no issuer (iss)");
  c.issuer = std::move(*iss);
  PORO_ASSIGN_OR_RETURN(auto sub, StringClaim(p, "sub"));
  c.subject = sub.value_or("");
  PORO_ASSIGN_OR_RETURN(auto jti, StringClaim(p, "jti"));
  c.id = jti.value_or("");

  if (auto it = p.find("aud"); it != p.end()) {
    if (it->is_string()) {
      out->audiences.push_back(it->get<std::string>());
    } else if (it->is_array()) {
      for (const json& a : *it) {
        if (!a.is_string()) return Malformed("claim 'aud' is an array with a member that is not a string");
        out->audiences.push_back(a.get<std::string>());
      }
    } else {
      return Malformed("claim 'aud' is neither a string nor an array of strings");
    }
  }

  PORO_ASSIGN_OR_RETURN(auto exp, TimeClaim(p, "exp"));
  if (!exp) return Malformed("no expiry time (exp)");
  c.expires = *exp;
  PORO_ASSIGN_OR_RETURN(auto nbf, TimeClaim(p, "nbf"));
  out->has_nbf = nbf.has_value();
  c.not_before = nbf.value_or(0);
  PORO_ASSIGN_OR_RETURN(auto iat, TimeClaim(p, "iat"));
  out->has_iat = iat.has_value();
  c.issued_at = iat.value_or(0);

  PORO_ASSIGN_OR_RETURN(auto scope, StringClaim(p, "scope"));
  std::string_view rest = scope ? std::string_view(*scope) : std::string_view();
  while (!rest.empty()) {
    const size_t sp = rest.find(' ');
    std::string_view word = rest.substr(0, sp);
    if (!word.empty()) c.scopes.emplace_back(word);
    rest = sp == std::string_view::npos ? std::string_view() : rest.substr(sp + 1);
  }
  return Status::OK();
}

// header.payload.signature -> Parsed, or kInvalidArgument saying what is wrong with the form.
Result<Parsed> Parse(std::string_view jwt) {
  if (jwt.empty()) return Malformed("empty");
  if (jwt.size() > kMaxTokenBytes) {
    return Malformed(std::to_string(jwt.size()) + " bytes, more than the limit of " +
                     std::to_string(kMaxTokenBytes));
  }
  const size_t dot1 = jwt.find('.');
  const size_t dot2 = dot1 == std::string_view::npos ? dot1 : jwt.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || jwt.find('.', dot2 + 1) != std::string_view::npos) {
    return Malformed("not three dot-separated parts (header.payload.signature)");
  }
  Parsed out;
  PORO_ASSIGN_OR_RETURN(out.header, DecodeObject(jwt.substr(0, dot1), "header"));
  PORO_ASSIGN_OR_RETURN(json payload, DecodeObject(jwt.substr(dot1 + 1, dot2 - dot1 - 1), "payload"));
  PORO_RETURN_IF_ERROR(ReadClaims(payload, &out));
  auto sig = crypto::Base64UrlDecode(jwt.substr(dot2 + 1));
  if (!sig) return Malformed("signature is not base64url (" + std::string(sig.error().message()) + ")");
  out.signature = std::move(*sig);
  out.signing_input = jwt.substr(0, dot2);
  return out;
}

Status CheckAlgorithm(const json& header) {
  auto alg = header.find("alg");
  if (alg == header.end()) return Malformed("header has no 'alg'");
  if (!alg->is_string()) return Malformed("header 'alg' is not a string");
  const std::string& name = alg->get_ref<const std::string&>();
  if (name != kAlgorithm) {
    return Status::Unauthenticated("token algorithm " + Quoted(name) + " is not accepted (only EdDSA)");
  }
  if (header.contains("crit")) {
    return Status::Unauthenticated(
        "token header lists critical extensions ('crit'), which are not supported");
  }
  return Status::OK();
}

Status CheckSignature(const Parsed& t, const crypto::PKey* key) {
  if (key == nullptr || !*key) {
    return Status::Unauthenticated("token issuer " + Quoted(t.claims.issuer) +
                                   " is not in the federation manifest");
  }
  // Checked after the algorithm, so that e.g. an unsigned "none" token is refused for what it is.
  if (t.signature.size() != crypto::kEd25519SignatureSize) {
    return Malformed("signature is " + std::to_string(t.signature.size()) + " bytes, not the 64 of Ed25519");
  }
  if (!crypto::VerifyEd25519(*key, t.signing_input, t.signature)) {
    return Status::Unauthenticated("token signature does not verify with the key of issuer " +
                                   Quoted(t.claims.issuer));
  }
  return Status::OK();
}

Status CheckTimes(const Parsed& t, int64_t now, int64_t leeway) {
  const Claims& c = t.claims;
  if (now >= SaturatingAdd(c.expires, leeway)) {
    return Status::Unauthenticated("token expired at " + Utc(c.expires) + " (now " + Utc(now) + ")");
  }
  if (t.has_nbf && SaturatingAdd(now, leeway) < c.not_before) {
    return Status::Unauthenticated("token is not valid before " + Utc(c.not_before) + " (now " + Utc(now) +
                                   ")");
  }
  if (t.has_iat && SaturatingAdd(now, leeway) < c.issued_at) {
    return Status::Unauthenticated("token was issued in the future, at " + Utc(c.issued_at) + " (now " +
                                   Utc(now) + ")");
  }
  return Status::OK();
}

Status CheckAudience(const std::vector<std::string>& audiences, std::string_view expected) {
  for (const std::string& a : audiences) {
    if (a == expected) return Status::OK();
  }
  const std::string self = ", this endpoint is " + Quoted(expected);
  if (audiences.empty()) return Status::Unauthenticated("token has no audience (aud)" + self);
  if (audiences.size() == 1)
    return Status::Unauthenticated("token audience is " + Quoted(audiences[0]) + self);
  std::string list;
  for (size_t i = 0; i < audiences.size() && i < 4; ++i) list += (i ? ", " : "") + Quoted(audiences[i]);
  if (audiences.size() > 4) list += ", ...";
  return Status::Unauthenticated("token audiences are " + list + self);
}

Result<Claims> Verify(std::string_view jwt, const IssuerKeyLookup& issuers,
                      std::string_view expected_audience, int64_t now, int64_t leeway) {
  if (expected_audience.empty()) {
    return Status::InvalidArgument(
        "cannot verify a token without the expected audience (this endpoint's name)");
  }
  if (leeway < 0) return Status::InvalidArgument("token clock leeway must not be negative");
  PORO_ASSIGN_OR_RETURN(Parsed t, Parse(jwt));
  PORO_RETURN_IF_ERROR(CheckAlgorithm(t.header));
  PORO_RETURN_IF_ERROR(CheckSignature(t, issuers ? issuers(t.claims.issuer) : nullptr));
  PORO_RETURN_IF_ERROR(CheckTimes(t, now, leeway));
  PORO_RETURN_IF_ERROR(CheckAudience(t.audiences, expected_audience));
  t.claims.audience = std::string(expected_audience);
  return std::move(t.claims);
}

Result<std::string> Issue(const Claims& c, const crypto::PKey& key, std::string_view key_id) {
  if (c.issuer.empty()) return Status::InvalidArgument("a token needs an issuer (iss)");
  if (c.expires == 0) return Status::InvalidArgument("a token needs an expiry time (exp)");
  std::string scope;
  for (const std::string& s : c.scopes) {
    if (s.empty() || s.find(' ') != std::string::npos) {
      return Status::InvalidArgument("token scope " + Quoted(s) + " must be one word, without spaces");
    }
    scope += (scope.empty() ? "" : " ") + s;
  }
  json header = {{"alg", kAlgorithm}, {"typ", "JWT"}};
  if (!key_id.empty()) header["kid"] = std::string(key_id);
  json payload = {{"iss", c.issuer}, {"exp", c.expires}};
  if (!c.subject.empty()) payload["sub"] = c.subject;
  if (!c.audience.empty()) payload["aud"] = c.audience;
  if (!c.id.empty()) payload["jti"] = c.id;
  if (c.issued_at != 0) payload["iat"] = c.issued_at;
  if (c.not_before != 0) payload["nbf"] = c.not_before;
  if (!scope.empty()) payload["scope"] = scope;

  const std::string input =
      crypto::Base64UrlEncode(header.dump()) + "." + crypto::Base64UrlEncode(payload.dump());
  auto sig = crypto::SignEd25519(key, input);
  if (!sig) return std::move(sig.error().Annotate("sign token"));
  std::string jwt = input + "." + crypto::Base64UrlEncode(*sig);
  if (jwt.size() > kMaxTokenBytes) {
    return Status::InvalidArgument("token would be " + std::to_string(jwt.size()) + " bytes, more than the " +
                                   std::to_string(kMaxTokenBytes) + " a verifier accepts");
  }
  return jwt;
}

}  // namespace

Result<std::string> IssueToken(const Claims& claims, const crypto::PKey& issuer_key,
                               std::string_view key_id) {
  try {
    return Issue(claims, issuer_key, key_id);
  } catch (const json::exception& e) {
    // dump() throws on strings that are not UTF-8.
    return Status::InvalidArgument(std::string("token claims cannot be encoded: ") + e.what());
  } catch (const std::exception& e) {
    return Status::Internal(std::string("issue token: ") + e.what());
  }
}

Result<Claims> VerifyToken(std::string_view jwt, const IssuerKeyLookup& issuers,
                           std::string_view expected_audience, int64_t now_unix, int64_t leeway_s) {
  try {
    return Verify(jwt, issuers, expected_audience, now_unix, leeway_s);
  } catch (const json::exception& e) {
    return Malformed(e.what());
  } catch (const std::exception& e) {
    return Status::Internal(std::string("verify token: ") + e.what());
  }
}

}  // namespace pororoca::token
