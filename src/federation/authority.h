// The federation authority's workspace: what `pororoca federation ...` edits and signs.
//
// A workspace is a directory (mode 0700):
//   authority.key  authority.pub   Ed25519 key that signs manifests (daemons pin authority.pub)
//   ca.key         ca.crt          the federation CA: the trust anchor endpoint certificates chain to
//   draft.json                     the manifest body being edited (unsigned)
//   manifest.json                  the last signed manifest (what the control-plane service publishes)
//   endpoints/                     keys and certificates generated for test federations
//   issuers/                       token issuer keys generated for test federations
//
// Edits change draft.json only and are validated when signed: Sign() takes the draft, gives it a
// serial higher than both the draft's and the last signed one, validates it as a Manifest and writes
// manifest.json atomically.
//
// Thread-safety: none; one authority tool at a time per workspace.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "federation/manifest.h"
#include "pki/pki.h"
#include "pororoca/status.h"

namespace pororoca::federation {

// Creates the workspace: CA (pki::CreateAuthority), authority key pair and a draft with the CA as its
// trust anchor and no institutions, endpoints or rules. Never overwrites (kAlreadyExists).
Status InitAuthority(const std::string& dir, const std::string& federation, int days);

Result<nlohmann::json> LoadDraft(const std::string& dir);
Status SaveDraft(const std::string& dir, const nlohmann::json& draft);

Status AddInstitution(const std::string& dir, const std::string& id, const std::string& name);

struct EndpointRequest {
  std::string name;
  std::string institution;
  std::string address;                       // host:port of its peer port
  std::optional<std::string> csr_file;       // issue for this CSR's key; else generate a key
  std::optional<std::string> existing_cert;  // list an endpoint with a certificate it already has
  std::string out_dir;                       // where NAME.key / NAME.crt go (default dir/endpoints)
  int days = 365;
  pki::IssueOptions issue;  // validity offsets (tests make expired certificates)
};
struct EndpointIssued {
  std::string key_file;  // empty when issued from a CSR
  std::string cert_file;
  std::string pin;
  // Set when another endpoint of the draft has the same key (one CSR used for two names): either
  // could then pass as the other.
  std::string warning;
};
// Issues the endpoint certificate and adds (or, for an endpoint already listed, re-keys) the
// endpoint in the draft with status active.
Result<EndpointIssued> AddEndpoint(const std::string& dir, const EndpointRequest& req);

Status SetEndpointStatus(const std::string& dir, const std::string& name, EndpointStatus status);

// The control-plane service's certificate (pororoca-fedd): issued by the federation CA, so the
// daemons' mutual TLS with the service works, but never listed in the manifest, so no DTN admits it
// as a peer. `req.institution` and `req.address` are unused. Written to req.out_dir (default
// dir/services) as NAME.crt (and NAME.key without a CSR). A name that is an endpoint in the draft is
// refused, and add-endpoint refuses a service's name (dir/services/NAME.crt).
Result<EndpointIssued> AddService(const std::string& dir, const EndpointRequest& req);
std::string ServiceCertFile(const std::string& dir, const std::string& name);

// Adds a token issuer. Without public_key_file a key pair is generated, its private key written to
// `key_out` (default IssuerKeyFile(dir, id)) and that path returned; both given is kInvalidArgument.
Result<std::string> AddIssuer(const std::string& dir, const std::string& id, const std::string& institution,
                              const std::optional<std::string>& public_key_file,
                              const std::optional<std::string>& key_out = std::nullopt);

// Policy edits. AddRule appends (or inserts before the rule with id `before`); an existing id is
// replaced in place. Rules are validated as a whole policy before the draft is saved.
Status AddRule(const std::string& dir, const nlohmann::json& rule, const std::string& before = "");
Status RemoveRule(const std::string& dir, const std::string& id);
Status SetRules(const std::string& dir, const nlohmann::json& rules);

// Signs the draft with the next serial and writes dir/manifest.json (and `publish_to` too, atomically,
// when given: the file a control-plane service or the daemons read). Returns the signed manifest.
Result<std::shared_ptr<const Manifest>> Sign(const std::string& dir, const std::string& publish_to = "");

std::string AuthorityPublicKeyFile(const std::string& dir);
// Where AddIssuer puts a generated issuer key: dir/issuers/<id with every non-alphanumeric as '_'>.key
std::string IssuerKeyFile(const std::string& dir, const std::string& issuer_id);
std::string ManifestFile(const std::string& dir);

}  // namespace pororoca::federation
