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
// The invariants below are checked with assert() in every build: NDEBUG must not remove them.
#undef NDEBUG
#include <cassert>
#include <openssl/evp.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "crypto/encoding.h"
#include "crypto/keys.h"
#include "token/token.h"

namespace {

namespace crypto = pororoca::crypto;
namespace token = pororoca::token;

constexpr char kIssuer[] = "https://issuer.fuzz";
constexpr char kAudience[] = "dtn-a.fuzz";
constexpr int64_t kNow = 1795428000;  // 2026-11-23T10:00:00Z


// RFC 8032 test key 1: the same key on every run, so that crashes reproduce.
const crypto::PKey& IssuerKey() {
  static const crypto::PKey key = [] {
    static const unsigned char kSecret[32] = {0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a,
                                              0xf4, 0x92, 0xec, 0x2c, 0xc4, 0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32,
                                              0x69, 0x19, 0x70, 0x3b, 0xac, 0x03, 0x1c, 0xae, 0x7f, 0x60};
    crypto::PKey k(EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, kSecret, sizeof(kSecret)));
    assert(static_cast<bool>(k));
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
  if (modify.ok()) assert(create.ok());
  for (const pororoca::Status* s : {&modify, &create, &read}) {
    assert(s->ok() || s->code() == pororoca::Code::kPermissionDenied || s->code() == pororoca::Code::kInvalidArgument);
  }
  if (read.ok()) {
    std::string below(path);
    if (below.back() != '/') below += '/';
    assert(token::CheckScope(c, token::Action::kRead, below + "child").ok());
  }
}

void Accepted(const token::Claims& c) {
  assert(c.issuer == kIssuer);
  assert(c.audience == kAudience);
  assert(c.expires > INT64_MAX - 60 || kNow < c.expires + 60);
  for (std::string_view path : {"/", "/data", "/data/x", "/database"}) ScopeInvariants(c, path);

  auto again = token::IssueToken(c, IssuerKey());
  if (!again.ok()) return;  // e.g. longer than kMaxTokenBytes once re-encoded
  auto back = token::VerifyToken(*again, Lookup, kAudience, kNow);
  assert(back.ok());
  assert(back->issuer == c.issuer && back->subject == c.subject && back->id == c.id &&
          back->expires == c.expires && back->scopes == c.scopes);
}

void Verify(std::string_view jwt) {
  auto claims = token::VerifyToken(jwt, Lookup, kAudience, kNow);
  if (claims.ok()) {
    Accepted(*claims);
  } else {
    const pororoca::Code code = claims.error().code();
    assert(code == pororoca::Code::kInvalidArgument || code == pororoca::Code::kUnauthenticated);
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
      const std::string_view header = nl == std::string_view::npos ? R"({"alg":"EdDSA"})" : rest.substr(0, nl);
      const std::string_view payload = nl == std::string_view::npos ? rest : rest.substr(nl + 1);
      const std::string input = crypto::Base64UrlEncode(header) + "." + crypto::Base64UrlEncode(payload);
      auto sig = crypto::SignEd25519(IssuerKey(), input);
      assert(sig.ok());
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
