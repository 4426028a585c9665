// libFuzzer target: the federation manifest (src/federation/manifest.h). The input is taken two
// ways: as a whole signed envelope for VerifyManifest (with a fixed authority key, so almost every
// input stops at format or signature checks), and as a manifest body for Manifest::FromBody, which
// reaches the field validation, the PEM parsing of anchors and issuer keys, and the policy parser.
// Nothing may crash or throw. Invariant: a body that validates signs and verifies back to a manifest
// with the same serial, endpoints and rules.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "crypto/keys.h"
#include "federation/manifest.h"
#include "fuzz/fuzz_check.h"

namespace {

namespace crypto = pororoca::crypto;
namespace federation = pororoca::federation;

const crypto::PKey& AuthorityKey() {
  static const crypto::PKey key = [] {
    auto k = crypto::GenerateEd25519();
    REQUIRE_INVARIANT(k.has_value());
    return std::move(*k);
  }();
  return key;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto env = federation::VerifyManifest(text, AuthorityKey(), "fuzz");
  (void)env;
  nlohmann::json body = nlohmann::json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return 0;
  auto m = federation::Manifest::FromBody(body, "fuzz");
  if (!m.has_value()) return 0;
  auto signed_text = federation::SignManifest(body, AuthorityKey());
  REQUIRE_INVARIANT(signed_text.has_value());
  auto back = federation::VerifyManifest(*signed_text, AuthorityKey(), "fuzz");
  REQUIRE_INVARIANT(back.has_value());
  REQUIRE_INVARIANT((*back)->serial() == (*m)->serial());
  REQUIRE_INVARIANT((*back)->endpoints().size() == (*m)->endpoints().size());
  REQUIRE_INVARIANT((*back)->policy().size() == (*m)->policy().size());
  for (const auto& e : (*m)->endpoints()) {
    auto checked = (*m)->CheckPeer(e.id, e.pin);
    REQUIRE_INVARIANT(checked.has_value() == (e.status == federation::EndpointStatus::kActive));
  }
  return 0;
}
