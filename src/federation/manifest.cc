#include "federation/manifest.h"

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <algorithm>
#include <set>

#include "base/file_util.h"
#include "base/ids.h"
#include "crypto/encoding.h"
#include "crypto/openssl_ptr.h"
#include "pki/pki.h"

namespace pororoca::federation {
namespace {

using json = nlohmann::json;

// Reads one JSON object strictly: every key must be known, every field of the expected type; errors
// carry the object's path ("endpoints[2] ('dtn-b')").
class Fields {
 public:
  Fields(const json& obj, std::string where, std::string_view source)
      : obj_(obj), where_(std::move(where)), source_(source) {}

  Status Known(std::initializer_list<std::string_view> keys) const {
    if (!obj_.is_object()) return Error("", "expected an object");
    for (auto it = obj_.begin(); it != obj_.end(); ++it) {
      if (std::find(keys.begin(), keys.end(), it.key()) == keys.end()) return Error(it.key(), "unknown key");
    }
    return Status::OK();
  }
  Result<std::string> String(std::string_view key, bool required = true) const {
    auto it = obj_.find(key);
    if (it == obj_.end()) {
      if (required) return Error(key, "missing");
      return std::string();
    }
    if (!it->is_string()) return Error(key, "expected a string");
    return it->get<std::string>();
  }
  Status Error(std::string_view key, std::string_view what) const {
    std::string m(source_);
    m += ": ";
    m += where_;
    if (!key.empty()) {
      if (!where_.empty()) m += ": ";
      m += key;
    }
    m += ": ";
    m += what;
    return Status::InvalidArgument(m);
  }

 private:
  const json& obj_;
  std::string where_;
  std::string_view source_;
};

bool ValidPin(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

bool ValidAddress(std::string_view s) {
  size_t colon = s.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 >= s.size()) return false;
  std::string_view port = s.substr(colon + 1);
  if (port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return false;
  }
  int p = std::stoi(std::string(port));
  return p > 0 && p < 65536;
}

// Checks that `pem` holds one or more PEM certificates and nothing else.
Status CheckCertificatesPem(const std::string& pem) {
  crypto::BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return Status::Internal("BIO_new_mem_buf failed");
  int n = 0;
  for (;;) {
    crypto::X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (!cert) break;
    ++n;
  }
  crypto::OpenSslErrors();  // the end of input leaves a "no start line" error behind
  if (n == 0) return Status::InvalidArgument("not a PEM certificate");
  return Status::OK();
}

std::string Describe(std::string_view list, size_t i, const json& item) {
  std::string w = std::string(list) + "[" + std::to_string(i) + "]";
  if (item.is_object()) {
    auto it = item.find("id");
    if (it != item.end() && it->is_string()) w += " ('" + it->get<std::string>() + "')";
  }
  return w;
}

}  // namespace

std::string_view EndpointStatusName(EndpointStatus s) {
  switch (s) {
    case EndpointStatus::kActive:
      return "active";
    case EndpointStatus::kSuspended:
      return "suspended";
    case EndpointStatus::kRevoked:
      return "revoked";
  }
  return "unknown";
}

Result<EndpointStatus> ParseEndpointStatus(std::string_view s) {
  if (s == "active") return EndpointStatus::kActive;
  if (s == "suspended") return EndpointStatus::kSuspended;
  if (s == "revoked") return EndpointStatus::kRevoked;
  return Status::InvalidArgument("must be active, suspended or revoked, not '" + std::string(s) + "'");
}

Result<std::shared_ptr<const Manifest>> Manifest::FromBody(const json& body, std::string_view source) {
  std::shared_ptr<Manifest> m(new Manifest());
  Fields top(body, "", source);
  PORO_RETURN_IF_ERROR(top.Known({"federation", "serial", "issued_at", "trust_anchors", "institutions",
                                  "endpoints", "token_issuers", "policy"}));
  PORO_ASSIGN_OR_RETURN(m->federation_, top.String("federation"));
  if (!ValidId(m->federation_)) return top.Error("federation", "expected " + std::string(kIdRule));
  auto serial = body.find("serial");
  if (serial == body.end() || !serial->is_number_integer() ||
      (serial->is_number_unsigned() ? serial->get<uint64_t>() == 0 : serial->get<int64_t>() <= 0)) {
    return top.Error("serial", "expected a positive integer");
  }
  m->serial_ = serial->get<uint64_t>();
  PORO_ASSIGN_OR_RETURN(m->issued_at_, top.String("issued_at", false));

  auto anchors = body.find("trust_anchors");
  if (anchors == body.end() || !anchors->is_array() || anchors->empty()) {
    return top.Error("trust_anchors", "expected a non-empty array of PEM certificates");
  }
  for (size_t i = 0; i < anchors->size(); ++i) {
    const json& a = (*anchors)[i];
    if (!a.is_string()) return top.Error("trust_anchors[" + std::to_string(i) + "]", "expected a PEM string");
    Status s = CheckCertificatesPem(a.get<std::string>());
    if (!s.ok()) return top.Error("trust_anchors[" + std::to_string(i) + "]", std::string(s.message()));
    m->anchors_pem_ += a.get<std::string>();
    if (m->anchors_pem_.back() != '\n') m->anchors_pem_ += '\n';
  }

  auto array_of = [&](std::string_view key, bool required) -> Result<const json*> {
    auto it = body.find(key);
    if (it == body.end()) {
      if (required) return top.Error(key, "missing");
      static const json kEmpty = json::array();
      return &kEmpty;
    }
    if (!it->is_array()) return top.Error(key, "expected an array");
    return &*it;
  };

  std::set<std::string> ids;
  PORO_ASSIGN_OR_RETURN(const json* insts, array_of("institutions", true));
  for (size_t i = 0; i < insts->size(); ++i) {
    const json& item = (*insts)[i];
    Fields f(item, Describe("institutions", i, item), source);
    PORO_RETURN_IF_ERROR(f.Known({"id", "name"}));
    Institution inst;
    PORO_ASSIGN_OR_RETURN(inst.id, f.String("id"));
    PORO_ASSIGN_OR_RETURN(inst.name, f.String("name", false));
    if (!ValidId(inst.id)) return f.Error("id", "expected " + std::string(kIdRule));
    if (!ids.insert(inst.id).second) return f.Error("id", "duplicate institution id");
    m->institutions_.push_back(std::move(inst));
  }

  ids.clear();
  PORO_ASSIGN_OR_RETURN(const json* eps, array_of("endpoints", true));
  for (size_t i = 0; i < eps->size(); ++i) {
    const json& item = (*eps)[i];
    Fields f(item, Describe("endpoints", i, item), source);
    PORO_RETURN_IF_ERROR(f.Known({"id", "institution", "address", "pin", "status"}));
    Endpoint ep;
    PORO_ASSIGN_OR_RETURN(ep.id, f.String("id"));
    PORO_ASSIGN_OR_RETURN(ep.institution, f.String("institution"));
    PORO_ASSIGN_OR_RETURN(ep.address, f.String("address"));
    PORO_ASSIGN_OR_RETURN(ep.pin, f.String("pin"));
    PORO_ASSIGN_OR_RETURN(std::string status, f.String("status"));
    if (!pki::ValidEndpointName(ep.id)) return f.Error("id", "expected " + std::string(kIdRule));
    if (!ids.insert(ep.id).second) return f.Error("id", "duplicate endpoint id");
    if (m->FindInstitution(ep.institution) == nullptr) {
      return f.Error("institution", "'" + ep.institution + "' is not listed under institutions");
    }
    if (!ValidAddress(ep.address)) return f.Error("address", "expected host:port");
    if (!ValidPin(ep.pin))
      return f.Error("pin", "expected 64 lowercase hex digits (SHA-256 of the public key)");
    auto st = ParseEndpointStatus(status);
    if (!st.has_value()) return f.Error("status", std::string(st.error().message()));
    ep.status = *st;
    m->endpoints_.push_back(std::move(ep));
  }

  ids.clear();
  PORO_ASSIGN_OR_RETURN(const json* iss, array_of("token_issuers", false));
  for (size_t i = 0; i < iss->size(); ++i) {
    const json& item = (*iss)[i];
    Fields f(item, Describe("token_issuers", i, item), source);
    PORO_RETURN_IF_ERROR(f.Known({"id", "institution", "public_key"}));
    TokenIssuer ti;
    PORO_ASSIGN_OR_RETURN(ti.id, f.String("id"));
    PORO_ASSIGN_OR_RETURN(ti.institution, f.String("institution"));
    PORO_ASSIGN_OR_RETURN(std::string pem, f.String("public_key"));
    if (ti.id.empty() || ti.id.size() > 256) return f.Error("id", "expected 1-256 characters");
    if (!ids.insert(ti.id).second) return f.Error("id", "duplicate issuer id");
    if (m->FindInstitution(ti.institution) == nullptr) {
      return f.Error("institution", "'" + ti.institution + "' is not listed under institutions");
    }
    auto key = crypto::ParsePublicKeyPem(pem);
    if (!key.has_value()) return f.Error("public_key", std::string(key.error().message()));
    ti.key = std::make_shared<const crypto::PKey>(std::move(*key));
    m->issuers_.push_back(std::move(ti));
  }

  json rules = json::array();
  auto pol = body.find("policy");
  if (pol != body.end()) {
    Fields f(*pol, "policy", source);
    PORO_RETURN_IF_ERROR(f.Known({"rules"}));
    auto r = pol->find("rules");
    if (r != pol->end()) rules = *r;
  }
  auto parsed = policy::Policy::Parse(rules);
  if (!parsed.has_value())
    return Status::InvalidArgument(std::string(source) + ": " + std::string(parsed.error().message()));
  m->policy_ = std::make_unique<policy::Policy>(std::move(*parsed));
  m->body_ = body;
  return std::shared_ptr<const Manifest>(std::move(m));
}

const Institution* Manifest::FindInstitution(std::string_view id) const {
  for (const auto& i : institutions_) {
    if (i.id == id) return &i;
  }
  return nullptr;
}

const Endpoint* Manifest::FindEndpoint(std::string_view id) const {
  for (const auto& e : endpoints_) {
    if (e.id == id) return &e;
  }
  return nullptr;
}

const TokenIssuer* Manifest::FindIssuer(std::string_view id) const {
  for (const auto& i : issuers_) {
    if (i.id == id) return &i;
  }
  return nullptr;
}

Result<const Endpoint*> Manifest::CheckPeer(std::string_view cn, std::string_view pin) const {
  std::string where =
      " in federation '" + federation_ + "' (manifest serial " + std::to_string(serial_) + ")";
  const Endpoint* ep = FindEndpoint(cn);
  if (ep == nullptr) {
    return Status::Unauthenticated("endpoint '" + std::string(cn) + "' is not a homologated endpoint" +
                                   where);
  }
  if (ep->pin != pin) {
    return Status::Unauthenticated("endpoint '" + ep->id + "' presented a key with pin " + std::string(pin) +
                                   ", the manifest pins " + ep->pin + where);
  }
  if (ep->status != EndpointStatus::kActive) {
    return Status::Unauthenticated("endpoint '" + ep->id + "' is " +
                                   std::string(EndpointStatusName(ep->status)) + where);
  }
  return ep;
}

Status Manifest::CheckSelf(std::string_view name) const {
  const Endpoint* me = FindEndpoint(name);
  return CheckPeer(name, me != nullptr ? std::string_view(me->pin) : std::string_view()).status();
}

std::string SigningInput(const json& body) {
  std::string in(kManifestFormat);
  in += '\n';
  in += body.dump();
  return in;
}

Result<std::string> SignManifest(const json& body, const crypto::PKey& authority_key) {
  PORO_ASSIGN_OR_RETURN(std::string sig, crypto::SignEd25519(authority_key, SigningInput(body)));
  json env{{"format", std::string(kManifestFormat)},
           {"manifest", body},
           {"signature",
            {{"algorithm", "Ed25519"},
             {"key_pin", crypto::PublicKeyPin(authority_key)},
             {"value", crypto::Base64Encode(sig)}}}};
  return env.dump(2) + "\n";
}

Result<std::shared_ptr<const Manifest>> VerifyManifest(std::string_view envelope,
                                                       const crypto::PKey& authority,
                                                       std::string_view source) {
  std::string src(source);
  if (envelope.size() > kMaxManifestBytes) return Status::InvalidArgument(src + ": larger than 32 MiB");
  json env = json::parse(envelope.begin(), envelope.end(), nullptr, /*allow_exceptions=*/false);
  if (env.is_discarded()) return Status::InvalidArgument(src + ": not valid JSON");
  Fields f(env, "", source);
  PORO_RETURN_IF_ERROR(f.Known({"format", "manifest", "signature"}));
  PORO_ASSIGN_OR_RETURN(std::string format, f.String("format"));
  if (format != kManifestFormat) {
    return Status::InvalidArgument(src + ": format is '" + format + "', this version reads '" +
                                   std::string(kManifestFormat) + "'");
  }
  auto body = env.find("manifest");
  if (body == env.end() || !body->is_object()) return f.Error("manifest", "expected an object");
  auto sig = env.find("signature");
  if (sig == env.end()) return f.Error("signature", "missing: the manifest is not signed");
  Fields sf(*sig, "signature", source);
  PORO_RETURN_IF_ERROR(sf.Known({"algorithm", "key_pin", "value"}));
  PORO_ASSIGN_OR_RETURN(std::string alg, sf.String("algorithm"));
  PORO_ASSIGN_OR_RETURN(std::string key_pin, sf.String("key_pin", false));
  PORO_ASSIGN_OR_RETURN(std::string value, sf.String("value"));
  if (alg != "Ed25519") return sf.Error("algorithm", "'" + alg + "' is not accepted (only Ed25519)");
  auto raw = crypto::Base64Decode(value);
  if (!raw.has_value()) return sf.Error("value", "not valid base64");
  std::string pinned = crypto::PublicKeyPin(authority);
  if (!crypto::VerifyEd25519(authority, SigningInput(*body), *raw)) {
    std::string m = src + ": signature does not verify with the pinned authority key (pin " +
                    pinned.substr(0, 16) + "...)";
    if (!key_pin.empty() && key_pin != pinned)
      m += "; it names a different signing key (pin " + key_pin.substr(0, 16) + "...)";
    return Status::Unauthenticated(m);
  }
  return Manifest::FromBody(*body, source);
}

Result<std::shared_ptr<const Manifest>> LoadManifestFile(const std::string& path,
                                                         const crypto::PKey& authority) {
  PORO_ASSIGN_OR_RETURN(std::string text, ReadSmallFile(path, kMaxManifestBytes));
  return VerifyManifest(text, authority, path);
}

}  // namespace pororoca::federation
