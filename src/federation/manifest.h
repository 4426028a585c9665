// The federation manifest: the one signed source of truth of the e-Science network. It lists the
// institutions, their homologated endpoints (id, institution, address, public-key pin, status), the
// trust anchors (CA certificates endpoint certificates must chain to), the token issuers and their
// keys, and the inter-institution policy rules, under a serial number that only grows.
//
// On disk it is a signed envelope (docs/federation.md has the grammar and a complete example):
//
//   {"format": "pororoca-manifest-1",
//    "manifest": { ...body... },
//    "signature": {"algorithm": "Ed25519", "key_pin": "<sha256 of the authority key>", "value": "<base64>"}}
//
// The signature covers "pororoca-manifest-1\n" followed by the body serialised canonically (keys
// sorted, no whitespace: nlohmann::json::dump()). The verifier re-serialises the body it parsed, so
// what is verified is exactly what is used.
//
// Thread-safety: a Manifest is immutable once built and may be shared between threads (daemons hold
// it in a std::shared_ptr<const Manifest> and swap it when a newer serial arrives).
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "crypto/keys.h"
#include "policy/policy.h"
#include "pororoca/status.h"

namespace pororoca::federation {

inline constexpr std::string_view kManifestFormat = "pororoca-manifest-1";
// Upper bound of a manifest file (a federation with thousands of endpoints and rules fits easily).
inline constexpr size_t kMaxManifestBytes = 32u << 20;

enum class EndpointStatus { kActive, kSuspended, kRevoked };
std::string_view EndpointStatusName(EndpointStatus s);
Result<EndpointStatus> ParseEndpointStatus(std::string_view s);

struct Institution {
  std::string id;
  std::string name;
};

struct Endpoint {
  std::string id;           // the CN of its certificate
  std::string institution;  // an Institution::id
  std::string address;      // host:port of its peer listener
  std::string pin;          // lowercase hex SHA-256 of its public key (DER SubjectPublicKeyInfo)
  EndpointStatus status = EndpointStatus::kActive;
};

struct TokenIssuer {
  std::string id;                           // the "iss" of its tokens
  std::string institution;                  // an Institution::id
  std::shared_ptr<const crypto::PKey> key;  // Ed25519 public key
};

class Manifest {
 public:
  // Validates a manifest body and builds the object. `source` prefixes error messages (a file name
  // or URL): "manifest.json: endpoints[2] ('dtn-b'): pin: expected 64 lowercase hex digits".
  // Unknown keys are errors: a manifest written for a newer version must not be half-understood.
  static Result<std::shared_ptr<const Manifest>> FromBody(const nlohmann::json& body,
                                                          std::string_view source);

  const std::string& federation() const { return federation_; }
  uint64_t serial() const { return serial_; }
  const std::string& issued_at() const { return issued_at_; }
  const nlohmann::json& body() const { return body_; }

  const std::vector<Institution>& institutions() const { return institutions_; }
  const std::vector<Endpoint>& endpoints() const { return endpoints_; }
  const std::vector<TokenIssuer>& token_issuers() const { return issuers_; }
  // PEM certificates, concatenated: the only trust anchors of the federation's TLS.
  const std::string& trust_anchors_pem() const { return anchors_pem_; }
  const policy::Policy& policy() const { return *policy_; }

  const Institution* FindInstitution(std::string_view id) const;
  const Endpoint* FindEndpoint(std::string_view id) const;
  const TokenIssuer* FindIssuer(std::string_view id) const;

  // The homologated-endpoint check for a peer that completed a TLS handshake (its certificate chains
  // to the trust anchors: TLS checked that): it must be listed, its key must match the pin and it
  // must be active. The error is the reason given to the peer and written to the audit log:
  // "endpoint 'x' is suspended in federation 'f' (manifest serial 7)".
  Result<const Endpoint*> CheckPeer(std::string_view cert_common_name, std::string_view key_pin) const;
  // The same check of this daemon's own endpoint `name` (listed and active), with the same words:
  // an endpoint that fails it takes part in no session.
  Status CheckSelf(std::string_view name) const;

 private:
  Manifest() = default;

  std::string federation_;
  uint64_t serial_ = 0;
  std::string issued_at_;
  nlohmann::json body_;
  std::vector<Institution> institutions_;
  std::vector<Endpoint> endpoints_;
  std::vector<TokenIssuer> issuers_;
  std::string anchors_pem_;
  std::unique_ptr<policy::Policy> policy_;
};

// The bytes the authority signs for a body.
std::string SigningInput(const nlohmann::json& body);

// Signs a body with the authority key and returns the envelope, pretty-printed for people.
Result<std::string> SignManifest(const nlohmann::json& body, const crypto::PKey& authority_key);

// Parses an envelope, checks its format and that the signature verifies with `authority` (the key
// the daemon pins), then validates the body. Errors say which of these failed:
// "manifest.json: signature does not verify with the pinned authority key (pin 3f2a...)".
Result<std::shared_ptr<const Manifest>> VerifyManifest(std::string_view envelope,
                                                       const crypto::PKey& authority,
                                                       std::string_view source);

// Reads and verifies a manifest file (errors name the file).
Result<std::shared_ptr<const Manifest>> LoadManifestFile(const std::string& path,
                                                         const crypto::PKey& authority);

}  // namespace pororoca::federation
