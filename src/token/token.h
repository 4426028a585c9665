// Bearer tokens: JWTs (RFC 7519) in JWS compact serialization, signed with Ed25519 (alg "EdDSA",
// RFC 8037), carrying WLCG-profile storage scopes (storage.read:/path, storage.create:/path,
// storage.modify:/path). Remote callers and third-party transfers present them; a daemon never
// writes outside what the token allows.
//
// Deliberately small and strict: EdDSA is the only algorithm (a token naming any other, "none"
// included, is refused before its issuer or signature is looked at); the issuer's key comes from
// the federation manifest through a lookup, never from the token ("kid", "jwk", "jku", "x5u", "x5c"
// are ignored); a header with critical extensions ("crit") is refused.
//
// Errors: malformed input is kInvalidArgument; every other refusal is kUnauthenticated, and a
// scope that does not cover a request is kPermissionDenied. Each message names the cause (expired
// at <time>, audience A vs B, unknown issuer, ...). Values copied from a token into a message are
// quoted, cut to a readable length and stripped of control characters.
//
// Thread-safety: free functions without shared state; safe from any thread. The IssuerKeyLookup is
// called on the caller's thread, at most once per VerifyToken.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "crypto/keys.h"
#include "pororoca/status.h"

namespace pororoca::token {

// Longest token VerifyToken reads (bigger input is refused before it is decoded).
inline constexpr size_t kMaxTokenBytes = 16 * 1024;

// The registered claims pororoca uses (RFC 7519 section 4.1) and the WLCG "scope" claim.
// Times are seconds since the Unix epoch; 0 means absent.
struct Claims {
  std::string issuer;      // iss (required)
  std::string subject;     // sub
  std::string audience;    // aud: one string. A token whose aud is an array verifies as the expected one.
  std::string id;          // jti
  int64_t issued_at = 0;   // iat
  int64_t not_before = 0;  // nbf
  int64_t expires = 0;     // exp (required)
  std::vector<std::string> scopes;  // scope: space-separated in the token
};

// Signs `claims` with the issuer's Ed25519 private key: header {"alg":"EdDSA","typ":"JWT"} plus
// "kid" when key_id is not empty. Claims with empty / zero values are left out. Does not judge
// times (an expired token can be made on purpose); kInvalidArgument if issuer is empty, expires is
// 0, a scope is empty or contains a space, a string is not UTF-8, or the key cannot sign.
Result<std::string> IssueToken(const Claims& claims, const crypto::PKey& issuer_key,
                               std::string_view key_id = {});

// Returns the key of a trusted issuer, or nullptr for an issuer that is not trusted. The pointer
// need only stay valid until the lookup's caller returns.
using IssuerKeyLookup = std::function<const crypto::PKey*(std::string_view issuer)>;

// Verifies a token for this endpoint (expected_audience, which must not be empty) at time now_unix,
// allowing leeway_s seconds of clock skew. Checks, in this order: form (three base64url parts,
// JSON objects, claim types; iss and exp present), algorithm (EdDSA only), issuer (the lookup
// knows it), signature, times (exp, nbf, iat not in the future) and audience.
Result<Claims> VerifyToken(std::string_view jwt, const IssuerKeyLookup& issuers,
                           std::string_view expected_audience, int64_t now_unix, int64_t leeway_s = 60);

// What a request does to a path (WLCG token profile, storage.* scopes).
enum class Action {
  kRead,    // needs storage.read
  kCreate,  // needs storage.create or storage.modify (modify implies create)
  kModify,  // needs storage.modify (overwrite, delete, rename)
};

// "storage.read", "storage.create" or "storage.modify".
std::string_view ActionScope(Action action);

// OK if one of claims.scopes grants `action` on `path`. `path` is absolute inside the export root
// ("/data/x"); a trailing '/' is ignored, and a path that is empty, relative, or has empty, "." or
// ".." components (or a NUL) is kInvalidArgument. A scope "<action>:P" covers P and everything below
// it on a component boundary: "/data" covers "/data" and "/data/x" but not "/database"; "/" covers
// everything. A scope whose path is missing or not of that form grants nothing. Otherwise
// kPermissionDenied: "token grants no storage.create for /x (scopes: storage.read:/data)".
Status CheckScope(const Claims& claims, Action action, std::string_view path);

}  // namespace pororoca::token
