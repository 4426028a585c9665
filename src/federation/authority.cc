#include "federation/authority.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>

#include "base/file_util.h"

namespace pororoca::federation {
namespace {

using json = nlohmann::json;

std::string DraftFile(const std::string& dir) { return dir + "/draft.json"; }

std::string NowIso() {
  std::time_t t = std::time(nullptr);
  std::tm tm;
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

Status MakeDir(const std::string& path) {
  if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) return Status::IoError("mkdir " + path, errno);
  return Status::OK();
}

// The element of `array` that is an object with the string "id" `id`, or array.end(). Items of
// another shape (a hand-edited draft) are passed over, never thrown on.
json::iterator FindIt(json& array, const std::string& id) {
  return std::find_if(array.begin(), array.end(), [&](const json& item) {
    if (!item.is_object()) return false;
    auto f = item.find("id");
    return f != item.end() && f->is_string() && f->get_ref<const std::string&>() == id;
  });
}

json* FindById(json& array, const std::string& id) {
  auto it = FindIt(array, id);
  return it == array.end() ? nullptr : &*it;
}

// Validates rules the way a signed manifest will, so a bad rule is refused when it is added.
Status CheckRules(const json& rules) {
  auto p = policy::Policy::Parse(rules);
  return p.has_value() ? Status::OK() : p.error();
}

}  // namespace

std::string AuthorityPublicKeyFile(const std::string& dir) { return dir + "/authority.pub"; }
std::string ManifestFile(const std::string& dir) { return dir + "/manifest.json"; }

std::string IssuerKeyFile(const std::string& dir, const std::string& issuer_id) {
  std::string base;
  for (char c : issuer_id) base += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  return dir + "/issuers/" + base + ".key";
}

Status InitAuthority(const std::string& dir, const std::string& federation, int days) {
  PORO_RETURN_IF_ERROR(pki::CreateAuthority(dir, federation, days));
  PORO_ASSIGN_OR_RETURN(crypto::PKey key, crypto::GenerateEd25519());
  PORO_RETURN_IF_ERROR(crypto::WritePrivateKeyPem(key, dir + "/authority.key"));
  PORO_RETURN_IF_ERROR(crypto::WritePublicKeyPem(key, AuthorityPublicKeyFile(dir)));
  PORO_ASSIGN_OR_RETURN(std::string ca, ReadSmallFile(dir + "/ca.crt"));
  std::string fed_id;
  for (char c : federation)
    fed_id += (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-') ? c : '-';
  if (fed_id.size() > 64) fed_id.resize(64);
  json draft{{"federation", fed_id},
             {"serial", 0},
             {"trust_anchors", json::array({ca})},
             {"institutions", json::array()},
             {"endpoints", json::array()},
             {"token_issuers", json::array()},
             {"policy", {{"rules", json::array()}}}};
  return SaveDraft(dir, draft);
}

Result<json> LoadDraft(const std::string& dir) {
  PORO_ASSIGN_OR_RETURN(std::string text, ReadSmallFile(DraftFile(dir), kMaxManifestBytes));
  json d = json::parse(text, nullptr, false);
  if (d.is_discarded() || !d.is_object())
    return Status::InvalidArgument(DraftFile(dir) + ": not a JSON object");
  for (const char* k : {"institutions", "endpoints", "token_issuers"}) {
    if (!d.contains(k) || !d[k].is_array()) d[k] = json::array();
  }
  if (!d.contains("policy") || !d["policy"].is_object()) d["policy"] = json::object();
  if (!d["policy"].contains("rules") || !d["policy"]["rules"].is_array())
    d["policy"]["rules"] = json::array();
  return d;
}

Status SaveDraft(const std::string& dir, const json& draft) {
  return WriteFileAtomic(DraftFile(dir), draft.dump(2) + "\n", 0600);
}

Status AddInstitution(const std::string& dir, const std::string& id, const std::string& name) {
  PORO_ASSIGN_OR_RETURN(json d, LoadDraft(dir));
  if (!pki::ValidEndpointName(id)) {
    return Status::InvalidArgument("institution id '" + id + "': expected 1-64 characters of [A-Za-z0-9._-]");
  }
  if (json* inst = FindById(d["institutions"], id)) {
    (*inst)["name"] = name;
  } else {
    d["institutions"].push_back(json{{"id", id}, {"name", name}});
  }
  return SaveDraft(dir, d);
}

Result<EndpointIssued> AddEndpoint(const std::string& dir, const EndpointRequest& req) {
  PORO_ASSIGN_OR_RETURN(json d, LoadDraft(dir));
  if (FindById(d["institutions"], req.institution) == nullptr) {
    return Status::NotFound("institution '" + req.institution + "' is not in " + DraftFile(dir) +
                            " (add it first: pororoca federation add-institution)");
  }
  if (!pki::ValidEndpointName(req.name)) {
    return Status::InvalidArgument("endpoint name '" + req.name +
                                   "': expected 1-64 characters of [A-Za-z0-9._-]");
  }
  if (::access(ServiceCertFile(dir, req.name).c_str(), F_OK) == 0) {
    return Status::AlreadyExists("'" + req.name + "' is the control-plane service's name (" +
                                 ServiceCertFile(dir, req.name) + "): a service cannot be a DTN");
  }
  EndpointIssued out;
  std::string out_dir = req.out_dir.empty() ? dir + "/endpoints" : req.out_dir;
  PORO_RETURN_IF_ERROR(MakeDir(out_dir));
  out.cert_file = out_dir + "/" + req.name + ".crt";
  if (req.existing_cert) {
    out.cert_file = *req.existing_cert;
  } else if (req.csr_file) {
    PORO_RETURN_IF_ERROR(
        pki::IssueEndpointFromCsr(dir, *req.csr_file, req.name, out.cert_file, req.days, req.issue));
  } else {
    out.key_file = out_dir + "/" + req.name + ".key";
    PORO_RETURN_IF_ERROR(pki::IssueEndpoint(dir, req.name, out.key_file, out.cert_file, req.days, req.issue));
  }
  PORO_ASSIGN_OR_RETURN(out.pin, pki::PublicKeyPinFromCert(out.cert_file));
  for (const auto& other : d["endpoints"]) {
    if (!other.is_object() || other.value("id", std::string()) == req.name) continue;
    if (other.value("pin", std::string()) == out.pin) {
      out.warning = "endpoint '" + other.value("id", std::string()) + "' has the same key (pin " + out.pin +
                    "): either could pass as the other; give each endpoint its own key and CSR";
    }
  }
  json ep{{"id", req.name},
          {"institution", req.institution},
          {"address", req.address},
          {"pin", out.pin},
          {"status", "active"}};
  if (json* old = FindById(d["endpoints"], req.name)) {
    *old = ep;
  } else {
    d["endpoints"].push_back(ep);
  }
  PORO_RETURN_IF_ERROR(SaveDraft(dir, d));
  return out;
}

std::string ServiceCertFile(const std::string& dir, const std::string& name) {
  return dir + "/services/" + name + ".crt";
}

Result<EndpointIssued> AddService(const std::string& dir, const EndpointRequest& req) {
  PORO_ASSIGN_OR_RETURN(json d, LoadDraft(dir));
  if (!pki::ValidEndpointName(req.name)) {
    return Status::InvalidArgument("service name '" + req.name +
                                   "': expected 1-64 characters of [A-Za-z0-9._-]");
  }
  if (FindById(d["endpoints"], req.name) != nullptr) {
    return Status::AlreadyExists(
        "'" + req.name + "' is an endpoint in " + DraftFile(dir) +
        ": the service needs a name no DTN has, or its certificate would pass as that DTN");
  }
  EndpointIssued out;
  std::string out_dir = req.out_dir.empty() ? dir + "/services" : req.out_dir;
  PORO_RETURN_IF_ERROR(MakeDir(dir + "/services"));
  PORO_RETURN_IF_ERROR(MakeDir(out_dir));
  out.cert_file = out_dir + "/" + req.name + ".crt";
  if (req.csr_file) {
    PORO_RETURN_IF_ERROR(
        pki::IssueEndpointFromCsr(dir, *req.csr_file, req.name, out.cert_file, req.days, req.issue));
  } else {
    out.key_file = out_dir + "/" + req.name + ".key";
    PORO_RETURN_IF_ERROR(pki::IssueEndpoint(dir, req.name, out.key_file, out.cert_file, req.days, req.issue));
  }
  // The authority's record of the name (add-endpoint checks it), wherever the files went.
  if (out.cert_file != ServiceCertFile(dir, req.name)) {
    PORO_ASSIGN_OR_RETURN(std::string pem, ReadSmallFile(out.cert_file));
    PORO_RETURN_IF_ERROR(WriteFileAtomic(ServiceCertFile(dir, req.name), pem, 0644));
  }
  PORO_ASSIGN_OR_RETURN(out.pin, pki::PublicKeyPinFromCert(out.cert_file));
  return out;
}

Status SetEndpointStatus(const std::string& dir, const std::string& name, EndpointStatus status) {
  PORO_ASSIGN_OR_RETURN(json d, LoadDraft(dir));
  json* ep = FindById(d["endpoints"], name);
  if (ep == nullptr) return Status::NotFound("endpoint '" + name + "' is not in " + DraftFile(dir));
  if ((*ep).value("status", std::string()) == "revoked" && status != EndpointStatus::kRevoked) {
    return Status::InvalidArgument("endpoint '" + name +
                                   "' is revoked: a revoked key stays revoked (issue a new certificate with "
                                   "add-endpoint to re-homologate it)");
  }
  (*ep)["status"] = std::string(EndpointStatusName(status));
  return SaveDraft(dir, d);
}

Result<std::string> AddIssuer(const std::string& dir, const std::string& id, const std::string& institution,
                              const std::optional<std::string>& public_key_file,
                              const std::optional<std::string>& key_out) {
  if (public_key_file && key_out) {
    return Status::InvalidArgument("an issuer given by its public key has no private key to write");
  }
  PORO_ASSIGN_OR_RETURN(json d, LoadDraft(dir));
  if (FindById(d["institutions"], institution) == nullptr) {
    return Status::NotFound("institution '" + institution + "' is not in " + DraftFile(dir));
  }
  std::string pem, private_key;
  if (public_key_file) {
    PORO_ASSIGN_OR_RETURN(crypto::PKey pub, crypto::LoadPublicKeyPem(*public_key_file));
    PORO_ASSIGN_OR_RETURN(pem, crypto::PublicKeyPem(pub));
  } else {
    if (key_out) {
      private_key = *key_out;
    } else {
      PORO_RETURN_IF_ERROR(MakeDir(dir + "/issuers"));
      private_key = IssuerKeyFile(dir, id);
    }
    PORO_ASSIGN_OR_RETURN(crypto::PKey key, crypto::GenerateEd25519());
    PORO_RETURN_IF_ERROR(crypto::WritePrivateKeyPem(key, private_key));
    PORO_ASSIGN_OR_RETURN(pem, crypto::PublicKeyPem(key));
  }
  json is{{"id", id}, {"institution", institution}, {"public_key", pem}};
  if (json* old = FindById(d["token_issuers"], id)) {
    *old = is;
  } else {
    d["token_issuers"].push_back(is);
  }
  PORO_RETURN_IF_ERROR(SaveDraft(dir, d));
  return private_key;
}

Status AddRule(const std::string& dir, const json& rule, const std::string& before) {
  PORO_ASSIGN_OR_RETURN(json d, LoadDraft(dir));
  json& rules = d["policy"]["rules"];
  if (!rule.is_object() || !rule.contains("id") || !rule["id"].is_string()) {
    return Status::InvalidArgument("a rule is a JSON object with a string \"id\"");
  }
  std::string id = rule["id"].get<std::string>();
  if (json* old = FindById(rules, id)) {
    *old = rule;
  } else if (!before.empty()) {
    auto it = FindIt(rules, before);
    if (it == rules.end()) return Status::NotFound("no rule '" + before + "' to insert before");
    rules.insert(it, rule);
  } else {
    rules.push_back(rule);
  }
  PORO_RETURN_IF_ERROR(CheckRules(rules));
  return SaveDraft(dir, d);
}

Status RemoveRule(const std::string& dir, const std::string& id) {
  PORO_ASSIGN_OR_RETURN(json d, LoadDraft(dir));
  json& rules = d["policy"]["rules"];
  auto it = FindIt(rules, id);
  if (it == rules.end()) return Status::NotFound("no rule '" + id + "' in " + DraftFile(dir));
  rules.erase(it);
  return SaveDraft(dir, d);
}

Status SetRules(const std::string& dir, const json& rules) {
  PORO_ASSIGN_OR_RETURN(json d, LoadDraft(dir));
  if (!rules.is_array()) return Status::InvalidArgument("rules must be a JSON array");
  PORO_RETURN_IF_ERROR(CheckRules(rules));
  d["policy"]["rules"] = rules;
  return SaveDraft(dir, d);
}

Result<std::shared_ptr<const Manifest>> Sign(const std::string& dir, const std::string& publish_to) {
  PORO_ASSIGN_OR_RETURN(json d, LoadDraft(dir));
  PORO_ASSIGN_OR_RETURN(crypto::PKey key, crypto::LoadPrivateKeyPem(dir + "/authority.key"));
  PORO_ASSIGN_OR_RETURN(crypto::PKey pub, crypto::LoadPublicKeyPem(AuthorityPublicKeyFile(dir)));
  uint64_t serial = d.value("serial", uint64_t{0});
  auto last = LoadManifestFile(ManifestFile(dir), pub);
  if (last.has_value()) serial = std::max(serial, (*last)->serial());
  d["serial"] = serial + 1;
  d["issued_at"] = NowIso();
  PORO_ASSIGN_OR_RETURN(auto manifest, Manifest::FromBody(d, DraftFile(dir)));
  PORO_ASSIGN_OR_RETURN(std::string text, SignManifest(d, key));
  PORO_RETURN_IF_ERROR(WriteFileAtomic(ManifestFile(dir), text, 0644));
  if (!publish_to.empty()) PORO_RETURN_IF_ERROR(WriteFileAtomic(publish_to, text, 0644));
  PORO_RETURN_IF_ERROR(SaveDraft(dir, d));
  return manifest;
}

}  // namespace pororoca::federation
