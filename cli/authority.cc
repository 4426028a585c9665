// `pororoca federation ...` and `pororoca token ...`: the federation authority's tools and test
// tokens. They work on files only (an authority workspace, keys); no daemon is involved.
#include "federation/authority.h"

#include <boost/program_options.hpp>
#include <ctime>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/file_util.h"
#include "cli/cli.h"
#include "pki/pki.h"
#include "token/token.h"

namespace po = boost::program_options;
using nlohmann::json;

namespace pororoca::cli {
namespace {

int ExitFor(const Status& s) {
  switch (s.code()) {
    case Code::kInvalidArgument:
    case Code::kAlreadyExists:
      return kExitUsage;
    case Code::kNotFound:
      return kExitNotFound;
    case Code::kUnauthenticated:
    case Code::kPermissionDenied:
      return kExitDenied;
    default:
      return kExitFailed;
  }
}

int Fail(const Status& s) {
  std::cerr << "pororoca: " << s.message() << "\n";
  return ExitFor(s);
}

// Parses `args` with `desc` plus positional names; prints help on --help.
bool Parse(const std::vector<std::string>& args, po::options_description& desc,
           const std::vector<std::string>& positional, po::variables_map* vm, int* exit_code) {
  desc.add_options()("help,h", "this help");
  po::options_description hidden;
  po::positional_options_description pos;
  for (const auto& p : positional) {
    hidden.add_options()(p.c_str(), po::value<std::string>(), "");
    pos.add(p.c_str(), 1);
  }
  po::options_description all;
  all.add(desc).add(hidden);
  po::store(po::command_line_parser(args).options(all).positional(pos).run(), *vm);
  if (vm->count("help")) {
    std::cout << desc << "\n";
    *exit_code = kExitOk;
    return false;
  }
  po::notify(*vm);
  for (const auto& p : positional) {
    if (!vm->count(p)) {
      std::cerr << "pororoca: missing " << p << "\n" << desc << "\n";
      *exit_code = kExitUsage;
      return false;
    }
  }
  return true;
}

std::string Str(const po::variables_map& vm, const char* k) {
  return vm.count(k) ? vm[k].as<std::string>() : std::string();
}

// A JSON argument given inline or as @file.
Result<json> JsonArg(const std::string& v) {
  std::string text = v;
  if (!v.empty() && v[0] == '@') {
    PORO_ASSIGN_OR_RETURN(text, ReadSmallFile(v.substr(1)));
  }
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded())
    return Status::InvalidArgument((v[0] == '@' ? v.substr(1) : std::string("rule")) + ": not valid JSON");
  return j;
}

void PrintFederationUsage() {
  std::cout
      << "Usage: pororoca federation COMMAND [options]   (the authority's tools; docs/federation.md)\n"
         "  init --dir DIR --name FEDERATION [--days N]       authority key, CA and an empty draft\n"
         "  add-institution ID --dir DIR [--name TEXT]\n"
         "  add-endpoint NAME --dir DIR --institution ID --address HOST:PORT [--csr FILE] [--out DIR]\n"
         "  add-service NAME --dir DIR [--csr FILE] [--out DIR]  the control-plane service's certificate\n"
         "  suspend|revoke|activate NAME --dir DIR            change an endpoint's status\n"
         "  add-issuer ID --dir DIR --institution ID [--public-key FILE | --key-out FILE]\n"
         "  policy add --dir DIR --rule JSON|@FILE [--before ID]\n"
         "  policy remove ID --dir DIR\n"
         "  policy set --dir DIR --rules JSON|@FILE            replace all rules\n"
         "  show --dir DIR                                    the draft and the last signed serial\n"
         "  sign --dir DIR [--publish FILE]                   sign the draft with the next serial\n"
         "  verify FILE --authority-key PUB                   check a manifest's signature and content\n"
         "  csr --key KEY --name NAME --out FILE              an endpoint operator's certificate request\n";
}

int FedInit(const std::vector<std::string>& args) {
  po::options_description d("Usage: pororoca federation init --dir DIR --name FEDERATION\nOptions");
  d.add_options()("dir", po::value<std::string>()->required(), "workspace directory (created)")(
      "name", po::value<std::string>()->default_value("pororoca-test-federation"),
      "federation name (its id)")("days", po::value<int>()->default_value(3650), "CA validity in days");
  po::variables_map vm;
  int ec;
  if (!Parse(args, d, {}, &vm, &ec)) return ec;
  std::string dir = Str(vm, "dir");
  Status s = federation::InitAuthority(dir, Str(vm, "name"), vm["days"].as<int>());
  if (!s.ok()) return Fail(s);
  std::cout
      << "created federation authority in " << dir
      << ": authority.key/.pub (signs manifests: give authority.pub to every daemon), ca.key/.crt (trust "
         "anchor), draft.json\n";
  return kExitOk;
}

int FedAddInstitution(const std::vector<std::string>& args) {
  po::options_description d("Usage: pororoca federation add-institution ID --dir DIR [--name TEXT]\nOptions");
  d.add_options()("dir", po::value<std::string>()->required(), "workspace")("name", po::value<std::string>(),
                                                                            "full name");
  po::variables_map vm;
  int ec;
  if (!Parse(args, d, {"id"}, &vm, &ec)) return ec;
  Status s = federation::AddInstitution(Str(vm, "dir"), Str(vm, "id"), Str(vm, "name"));
  if (!s.ok()) return Fail(s);
  std::cout << "institution " << Str(vm, "id") << " in the draft (sign to publish)\n";
  return kExitOk;
}

int FedAddEndpoint(const std::vector<std::string>& args) {
  po::options_description d(
      "Usage: pororoca federation add-endpoint NAME --dir DIR --institution ID --address HOST:PORT\nOptions");
  d.add_options()("dir", po::value<std::string>()->required(), "workspace")(
      "institution", po::value<std::string>()->required(), "the endpoint's institution")(
      "address", po::value<std::string>()->required(), "host:port of its peer port")(
      "csr", po::value<std::string>(), "issue for this certificate request (else a key is generated)")(
      "out", po::value<std::string>(), "where NAME.key/NAME.crt go (default DIR/endpoints)")(
      "days", po::value<int>()->default_value(365), "certificate validity in days")(
      "not-before-offset", po::value<int64_t>(), "validity start relative to now, seconds (drills)")(
      "not-after-offset", po::value<int64_t>(), "validity end relative to now, seconds (drills: expired)");
  po::variables_map vm;
  int ec;
  if (!Parse(args, d, {"name"}, &vm, &ec)) return ec;
  federation::EndpointRequest req;
  req.name = Str(vm, "name");
  req.institution = Str(vm, "institution");
  req.address = Str(vm, "address");
  if (vm.count("csr")) req.csr_file = Str(vm, "csr");
  req.out_dir = Str(vm, "out");
  req.days = vm["days"].as<int>();
  if (vm.count("not-before-offset")) req.issue.not_before_offset_s = vm["not-before-offset"].as<int64_t>();
  if (vm.count("not-after-offset")) req.issue.not_after_offset_s = vm["not-after-offset"].as<int64_t>();
  auto r = federation::AddEndpoint(Str(vm, "dir"), req);
  if (!r.has_value()) return Fail(r.error());
  std::cout << "endpoint " << req.name << " (" << req.institution << ", " << req.address
            << ") active in the draft\n"
            << "  certificate: " << r->cert_file << "\n";
  if (!r->key_file.empty()) std::cout << "  key:         " << r->key_file << "\n";
  std::cout << "  key pin:     " << r->pin << "\n";
  if (!r->warning.empty()) std::cerr << "pororoca: warning: " << r->warning << "\n";
  return kExitOk;
}

int FedAddService(const std::vector<std::string>& args) {
  po::options_description d(
      "Usage: pororoca federation add-service NAME --dir DIR\n  the control-plane service's certificate "
      "(pororoca-fedd): from the federation CA, never a DTN\nOptions");
  d.add_options()("dir", po::value<std::string>()->required(), "workspace")(
      "csr", po::value<std::string>(), "issue for this certificate request (else a key is generated)")(
      "out", po::value<std::string>(), "where NAME.key/NAME.crt go (default DIR/services)")(
      "days", po::value<int>()->default_value(365), "certificate validity in days");
  po::variables_map vm;
  int ec;
  if (!Parse(args, d, {"name"}, &vm, &ec)) return ec;
  federation::EndpointRequest req;
  req.name = Str(vm, "name");
  if (vm.count("csr")) req.csr_file = Str(vm, "csr");
  req.out_dir = Str(vm, "out");
  req.days = vm["days"].as<int>();
  auto r = federation::AddService(Str(vm, "dir"), req);
  if (!r.has_value()) return Fail(r.error());
  std::cout << "service " << req.name
            << ": certificate from the federation CA, not in the manifest (no DTN admits it as a peer)\n"
            << "  certificate: " << r->cert_file << "\n";
  if (!r->key_file.empty()) std::cout << "  key:         " << r->key_file << "\n";
  std::cout << "  daemons reach it with [federation] url = \"https://HOST:PORT\" and service_name = \""
            << req.name << "\"\n";
  return kExitOk;
}

int FedStatus(const std::vector<std::string>& args, federation::EndpointStatus st) {
  po::options_description d("Usage: pororoca federation suspend|revoke|activate NAME --dir DIR\nOptions");
  d.add_options()("dir", po::value<std::string>()->required(), "workspace");
  po::variables_map vm;
  int ec;
  if (!Parse(args, d, {"name"}, &vm, &ec)) return ec;
  Status s = federation::SetEndpointStatus(Str(vm, "dir"), Str(vm, "name"), st);
  if (!s.ok()) return Fail(s);
  std::cout << "endpoint " << Str(vm, "name") << " is " << federation::EndpointStatusName(st)
            << " in the draft; sign and publish to apply "
            << (st == federation::EndpointStatus::kActive
                    ? "(daemons accept its sessions again within their refresh interval)\n"
                    : "(daemons cut its sessions within their refresh interval)\n");
  return kExitOk;
}

int FedAddIssuer(const std::vector<std::string>& args) {
  po::options_description d("Usage: pororoca federation add-issuer ID --dir DIR --institution ID\nOptions");
  d.add_options()("dir", po::value<std::string>()->required(), "workspace")(
      "institution", po::value<std::string>()->required(), "the issuer's institution")(
      "public-key", po::value<std::string>(),
      "the issuer's Ed25519 public key (PEM); else a key pair is generated")(
      "key-out", po::value<std::string>(),
      "where the generated private key goes (default DIR/issuers/<ID>.key)");
  po::variables_map vm;
  int ec;
  if (!Parse(args, d, {"id"}, &vm, &ec)) return ec;
  std::optional<std::string> pub, key_out;
  if (vm.count("public-key")) pub = Str(vm, "public-key");
  if (vm.count("key-out")) key_out = Str(vm, "key-out");
  auto r = federation::AddIssuer(Str(vm, "dir"), Str(vm, "id"), Str(vm, "institution"), pub, key_out);
  if (!r.has_value()) return Fail(r.error());
  std::cout << "token issuer " << Str(vm, "id") << " in the draft";
  if (!r->empty()) std::cout << "; its private key: " << *r;
  std::cout << "\n";
  return kExitOk;
}

int FedPolicy(const std::vector<std::string>& args) {
  if (args.empty()) {
    std::cerr << "Usage: pororoca federation policy add|remove|set ...\n";
    return kExitUsage;
  }
  std::string sub = args[0];
  std::vector<std::string> rest(args.begin() + 1, args.end());
  po::options_description d("Usage: pororoca federation policy " + sub + " --dir DIR ...\nOptions");
  d.add_options()("dir", po::value<std::string>()->required(), "workspace")(
      "rule", po::value<std::string>(), "one rule: JSON or @FILE (docs/policy.md)")(
      "rules", po::value<std::string>(), "all rules: a JSON array or @FILE")(
      "before", po::value<std::string>(), "insert before this rule id (order matters: first match wins)");
  po::variables_map vm;
  int ec;
  std::vector<std::string> pos;
  if (sub == "remove") pos = {"id"};
  if (!Parse(rest, d, pos, &vm, &ec)) return ec;
  Status s;
  if (sub == "add") {
    if (!vm.count("rule")) return Fail(Status::InvalidArgument("policy add needs --rule"));
    auto rule = JsonArg(Str(vm, "rule"));
    if (!rule.has_value()) return Fail(rule.error());
    s = federation::AddRule(Str(vm, "dir"), *rule, Str(vm, "before"));
  } else if (sub == "remove") {
    s = federation::RemoveRule(Str(vm, "dir"), Str(vm, "id"));
  } else if (sub == "set") {
    if (!vm.count("rules")) return Fail(Status::InvalidArgument("policy set needs --rules"));
    auto rules = JsonArg(Str(vm, "rules"));
    if (!rules.has_value()) return Fail(rules.error());
    s = federation::SetRules(Str(vm, "dir"), *rules);
  } else {
    std::cerr << "pororoca: unknown policy command '" << sub << "' (add, remove, set)\n";
    return kExitUsage;
  }
  if (!s.ok()) return Fail(s);
  std::cout << "policy updated in the draft (sign to publish)\n";
  return kExitOk;
}

int FedShow(const std::vector<std::string>& args) {
  po::options_description d("Usage: pororoca federation show --dir DIR\nOptions");
  d.add_options()("dir", po::value<std::string>()->required(), "workspace")("json",
                                                                            "print the draft as JSON");
  po::variables_map vm;
  int ec;
  if (!Parse(args, d, {}, &vm, &ec)) return ec;
  auto draft = federation::LoadDraft(Str(vm, "dir"));
  if (!draft.has_value()) return Fail(draft.error());
  if (vm.count("json")) {
    std::cout << draft->dump(2) << "\n";
    return kExitOk;
  }
  const json& j = *draft;
  std::cout << "federation " << j.value("federation", std::string()) << ", last serial "
            << j.value("serial", uint64_t{0}) << "\ninstitutions:\n";
  for (const auto& i : j["institutions"]) {
    std::cout << "  " << i.value("id", std::string()) << "  " << i.value("name", std::string()) << "\n";
  }
  std::cout << "endpoints:\n";
  for (const auto& e : j["endpoints"]) {
    std::cout << "  " << e.value("id", std::string()) << "  " << e.value("institution", std::string()) << "  "
              << e.value("address", std::string()) << "  " << e.value("status", std::string()) << "\n";
  }
  std::cout << "token issuers:\n";
  for (const auto& e : j["token_issuers"]) {
    std::cout << "  " << e.value("id", std::string()) << "  " << e.value("institution", std::string())
              << "\n";
  }
  std::cout << "policy rules (first match wins):\n";
  for (const auto& r : j["policy"]["rules"]) std::cout << "  " << r.dump() << "\n";
  return kExitOk;
}

int FedSign(const std::vector<std::string>& args) {
  po::options_description d("Usage: pororoca federation sign --dir DIR [--publish FILE]\nOptions");
  d.add_options()("dir", po::value<std::string>()->required(), "workspace")(
      "publish", po::value<std::string>(), "also write the signed manifest here (atomically)");
  po::variables_map vm;
  int ec;
  if (!Parse(args, d, {}, &vm, &ec)) return ec;
  auto m = federation::Sign(Str(vm, "dir"), Str(vm, "publish"));
  if (!m.has_value()) return Fail(m.error());
  std::cout << "signed manifest serial " << (*m)->serial() << " of federation " << (*m)->federation() << ": "
            << federation::ManifestFile(Str(vm, "dir"));
  if (vm.count("publish")) std::cout << ", published to " << Str(vm, "publish");
  std::cout << "\n";
  return kExitOk;
}

int FedVerify(const std::vector<std::string>& args) {
  po::options_description d("Usage: pororoca federation verify FILE --authority-key PUB\nOptions");
  d.add_options()("authority-key", po::value<std::string>()->required(), "the authority's public key (PEM)");
  po::variables_map vm;
  int ec;
  if (!Parse(args, d, {"file"}, &vm, &ec)) return ec;
  auto key = crypto::LoadPublicKeyPem(Str(vm, "authority-key"));
  if (!key.has_value()) return Fail(key.error());
  auto m = federation::LoadManifestFile(Str(vm, "file"), *key);
  if (!m.has_value()) return Fail(m.error());
  std::cout << Str(vm, "file") << ": valid manifest of federation " << (*m)->federation() << ", serial "
            << (*m)->serial() << " (issued " << (*m)->issued_at() << "): " << (*m)->institutions().size()
            << " institutions, " << (*m)->endpoints().size() << " endpoints, " << (*m)->token_issuers().size()
            << " token issuers, " << (*m)->policy().size() << " policy rules\n";
  return kExitOk;
}

int FedCsr(const std::vector<std::string>& args) {
  po::options_description d("Usage: pororoca federation csr --key KEY --name NAME --out FILE\nOptions");
  d.add_options()("key", po::value<std::string>()->required(), "private key (generated if missing)")(
      "name", po::value<std::string>()->required(), "endpoint name")(
      "out", po::value<std::string>()->required(), "where the CSR goes");
  po::variables_map vm;
  int ec;
  if (!Parse(args, d, {}, &vm, &ec)) return ec;
  Status s = pki::WriteCsr(Str(vm, "key"), Str(vm, "name"), Str(vm, "out"));
  if (!s.ok()) return Fail(s);
  std::cout << "certificate request for " << Str(vm, "name") << ": " << Str(vm, "out")
            << " (send it to the federation authority; keep " << Str(vm, "key") << ")\n";
  return kExitOk;
}

}  // namespace

int CmdFederation(const std::vector<std::string>& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    PrintFederationUsage();
    return args.empty() ? kExitUsage : kExitOk;
  }
  const std::string& sub = args[0];
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (sub == "init") return FedInit(rest);
  if (sub == "add-institution") return FedAddInstitution(rest);
  if (sub == "add-endpoint") return FedAddEndpoint(rest);
  if (sub == "add-service") return FedAddService(rest);
  if (sub == "suspend") return FedStatus(rest, federation::EndpointStatus::kSuspended);
  if (sub == "revoke") return FedStatus(rest, federation::EndpointStatus::kRevoked);
  if (sub == "activate") return FedStatus(rest, federation::EndpointStatus::kActive);
  if (sub == "add-issuer") return FedAddIssuer(rest);
  if (sub == "policy") return FedPolicy(rest);
  if (sub == "show") return FedShow(rest);
  if (sub == "sign") return FedSign(rest);
  if (sub == "verify") return FedVerify(rest);
  if (sub == "csr") return FedCsr(rest);
  std::cerr << "pororoca: unknown federation command '" << sub << "'\n";
  PrintFederationUsage();
  return kExitUsage;
}

int CmdToken(const std::vector<std::string>& args) {
  if (args.empty() || args[0] != "issue") {
    std::cerr
        << "Usage: pororoca token issue --key KEY --issuer ISS --subject SUB --audience ENDPOINT --scope "
           "SCOPE... [--lifetime SECONDS]\n";
    return args.empty() ? kExitUsage : (args[0] == "--help" ? kExitOk : kExitUsage);
  }
  std::vector<std::string> rest(args.begin() + 1, args.end());
  po::options_description d(
      "Usage: pororoca token issue [options]   (test federations: real issuers are IdPs)\nOptions");
  d.add_options()("key", po::value<std::string>()->required(), "the issuer's Ed25519 private key (PEM)")(
      "issuer", po::value<std::string>()->required(), "iss: the issuer id in the manifest")(
      "subject", po::value<std::string>()->required(), "sub: the federated identity")(
      "audience", po::value<std::string>()->required(), "aud: the endpoint the token is for")(
      "scope", po::value<std::vector<std::string>>()->required(),
      "storage.read:/path, storage.create:/path or storage.modify:/path (repeatable)")(
      "lifetime", po::value<int64_t>()->default_value(3600),
      "seconds until expiry (negative: already expired)")("id", po::value<std::string>(), "jti");
  po::variables_map vm;
  int ec;
  if (!Parse(rest, d, {}, &vm, &ec)) return ec;
  auto key = crypto::LoadPrivateKeyPem(Str(vm, "key"));
  if (!key.has_value()) return Fail(key.error());
  token::Claims c;
  c.issuer = Str(vm, "issuer");
  c.subject = Str(vm, "subject");
  c.audience = Str(vm, "audience");
  c.id = Str(vm, "id");
  c.issued_at = std::time(nullptr);
  int64_t lifetime = vm["lifetime"].as<int64_t>();
  c.not_before = lifetime < 0 ? c.issued_at + lifetime - 60 : c.issued_at;
  c.expires = c.issued_at + lifetime;
  c.scopes = vm["scope"].as<std::vector<std::string>>();
  auto t = token::IssueToken(c, *key);
  if (!t.has_value()) return Fail(t.error());
  std::cout << *t << "\n";
  return kExitOk;
}

}  // namespace pororoca::cli
