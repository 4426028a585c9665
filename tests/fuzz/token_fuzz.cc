// libFuzzer target: bearer tokens (src/token). The first byte picks what the rest is:
//   0: a whole token for VerifyToken;
//   1: "header-json\npayload-json" (or only a payload under {"alg":"EdDSA"}), signed here with the
//      fixed issuer key, so that the checks after the signature (times, audience, scopes) are
//      reached as well;
//   2: "path\nscope\nscope..." for CheckScope.
// Nothing may crash or throw. Invariants: an accepted token names the known issuer and this
// audience and has not expired; re-issuing its claims gives a token that verifies to the same
// claims; storage.modify grants imply storage.create grants; a grant on a path extends to what is
// below it.
#include "fuzz/token_fuzz.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "crypto/encoding.h"
#include "crypto/keys.h"
#include "fuzz/fuzz_check.h"
#include "token/token.h"

namespace {

namespace crypto = pororoca::crypto;
namespace token = pororoca::token;

using pororoca::fuzz::token_fuzz::kAudience;
using pororoca::fuzz::token_fuzz::kIssuer;
using pororoca::fuzz::token_fuzz::kNow;

const crypto::PKey& IssuerKey() {
  static const crypto::PKey key = [] {
    crypto::PKey k = pororoca::fuzz::token_fuzz::NewIssuerKey();
    REQUIRE_INVARIANT(static_cast<bool>(k));
    return k;
  }();
  return key;
}

const crypto::PKey* Lookup(std::string_view issuer) { return issuer == kIssuer ? &IssuerKey() : nullptr; }

std::vector<std::string_view> Lines(std::string_view s) {
  std::vector<std::string_view> out;
  for (size_t start = 0; start <= s.size();) {
    size_t nl = s.find('\n', start);
    if (nl == std::string_view::npos) nl = s.size();
    out.push_back(s.substr(start, nl - start));
    start = nl + 1;
  }
  return out;
}

void ScopeInvariants(const token::Claims& c, std::string_view path) {
  const pororoca::Status modify = token::CheckScope(c, token::Action::kModify, path);
  const pororoca::Status create = token::CheckScope(c, token::Action::kCreate, path);
  const pororoca::Status read = token::CheckScope(c, token::Action::kRead, path);
  if (modify.ok()) REQUIRE_INVARIANT(create.ok());
  for (const pororoca::Status* s : {&modify, &create, &read}) {
    REQUIRE_INVARIANT(s->ok() || s->code() == pororoca::Code::kPermissionDenied ||
                      s->code() == pororoca::Code::kInvalidArgument);
  }
  if (read.ok()) {
    std::string below(path);
    if (below.back() != '/') below += '/';
    REQUIRE_INVARIANT(token::CheckScope(c, token::Action::kRead, below + "child").ok());
  }
}

void Accepted(const token::Claims& c) {
  REQUIRE_INVARIANT(c.issuer == kIssuer);
  REQUIRE_INVARIANT(c.audience == kAudience);
  REQUIRE_INVARIANT(c.expires > INT64_MAX - 60 || kNow < c.expires + 60);
  for (std::string_view path : {"/", "/data", "/data/x", "/database"}) ScopeInvariants(c, path);

  auto again = token::IssueToken(c, IssuerKey());
  if (!again.ok()) return;  // e.g. longer than kMaxTokenBytes once re-encoded
  auto back = token::VerifyToken(*again, Lookup, kAudience, kNow);
  REQUIRE_INVARIANT(back.ok());
  REQUIRE_INVARIANT(back->issuer == c.issuer && back->subject == c.subject && back->id == c.id &&
                    back->expires == c.expires && back->scopes == c.scopes);
}

void Verify(std::string_view jwt) {
  auto claims = token::VerifyToken(jwt, Lookup, kAudience, kNow);
  if (claims.ok()) {
    Accepted(*claims);
  } else {
    const pororoca::Code code = claims.error().code();
    REQUIRE_INVARIANT(code == pororoca::Code::kInvalidArgument || code == pororoca::Code::kUnauthenticated);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  switch (data[0] % 3) {
    case 0:
      Verify(rest);
      break;
    case 1: {
      const size_t nl = rest.find('\n');
      const std::string_view header =
          nl == std::string_view::npos ? R"({"alg":"EdDSA"})" : rest.substr(0, nl);
      const std::string_view payload = nl == std::string_view::npos ? rest : rest.substr(nl + 1);
      const std::string input = crypto::Base64UrlEncode(header) + "." + crypto::Base64UrlEncode(payload);
      auto sig = crypto::SignEd25519(IssuerKey(), input);
      REQUIRE_INVARIANT(sig.ok());
      Verify(input + "." + crypto::Base64UrlEncode(*sig));
      break;
    }
    default: {
      std::vector<std::string_view> lines = Lines(rest);
      token::Claims c;
      for (size_t i = 1; i < lines.size(); ++i) c.scopes.emplace_back(lines[i]);
      if (!lines[0].empty() && lines[0].front() == '/') ScopeInvariants(c, lines[0]);
      for (token::Action a : {token::Action::kRead, token::Action::kCreate, token::Action::kModify}) {
        token::CheckScope(c, a, lines[0]).IgnoreError();
      }
      break;
    }
  }
  return 0;
}
