#include "daemon/api_routes.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <ctime>

#include "audit/accounting.h"
#include "daemon/dashboard.h"
#include "daemon/export_query.h"
#include "engine/session.h"
#include "pororoca/config.h"
#include "pororoca/storage.h"
#include "proto/messages.h"

namespace pororoca::daemon {

using nlohmann::json;

int HttpStatusFor(Code c) {
  switch (c) {
    case Code::kInvalidArgument:
      return 400;
    case Code::kNotFound:
      return 404;
    case Code::kPermissionDenied:
      return 403;
    case Code::kUnauthenticated:
      return 403;
    case Code::kAlreadyExists:
      return 409;
    case Code::kUnavailable:
      return 503;
    case Code::kNotSupported:
      return 501;
    case Code::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

api::HttpResponse ErrorResponse(const Status& s) {
  return api::HttpResponse::Error(HttpStatusFor(s.code()), CodeName(s.code()), s.message());
}

namespace {

api::HttpResponse BadRequest(const std::string& message) {
  return api::HttpResponse::Error(400, "InvalidArgument", message);
}

// A request body: a JSON object whose fields are read without exceptions; a field of the wrong
// type is an error that names it.
class Body {
 public:
  static Result<Body> Parse(const std::string& text) {
    json j = json::parse(text, nullptr, false);
    if (j.is_discarded()) return Status::InvalidArgument("body is not valid JSON");
    if (!j.is_object()) return Status::InvalidArgument("body must be a JSON object");
    return Body(std::move(j));
  }
  // An object already parsed (an entry of a job).
  explicit Body(json j) : j_(std::move(j)) {}
  const json& json_value() const { return j_; }
  bool Has(const char* name) const { return j_.contains(name) && !j_[name].is_null(); }
  const json& Raw(const char* name) const { return j_[name]; }
  Result<std::string> String(const char* name, std::string def = {}) const {
    if (!Has(name)) return def;
    if (!j_[name].is_string()) return Status::InvalidArgument(std::string(name) + " must be a string");
    return j_[name].get<std::string>();
  }
  Result<bool> Bool(const char* name, bool def) const {
    if (!Has(name)) return def;
    if (!j_[name].is_boolean()) return Status::InvalidArgument(std::string(name) + " must be true or false");
    return j_[name].get<bool>();
  }
  Result<uint64_t> Unsigned(const char* name, uint64_t def) const {
    if (!Has(name)) return def;
    if (!j_[name].is_number_unsigned()) {
      return Status::InvalidArgument(std::string(name) + " must be an unsigned integer");
    }
    return j_[name].get<uint64_t>();
  }
  // A number of bytes, or a size such as "4MiB".
  Result<uint64_t> Size(const char* name, uint64_t def) const {
    if (!Has(name)) return def;
    if (j_[name].is_number_unsigned()) return j_[name].get<uint64_t>();
    if (!j_[name].is_string()) {
      return Status::InvalidArgument(std::string(name) +
                                     " must be a number of bytes or a size such as \"4M\"");
    }
    auto parsed = ParseSize(j_[name].get<std::string>());
    if (!parsed.has_value()) return std::move(parsed).error().Annotate(name);
    return *parsed;
  }
  Result<int64_t> Integer(const char* name, int64_t def) const {
    if (!Has(name)) return def;
    if (!j_[name].is_number_integer())
      return Status::InvalidArgument(std::string(name) + " must be an integer");
    return j_[name].get<int64_t>();
  }

 private:
  json j_;
};

// ?wait=SECONDS of a long poll (at most 60): nullopt without it.
Result<std::optional<std::chrono::steady_clock::duration>> LongPoll(const api::HttpRequest& req) {
  auto w = req.query.find("wait");
  if (w == req.query.end()) return std::optional<std::chrono::steady_clock::duration>();
  char* end = nullptr;
  const double secs = std::strtod(w->second.c_str(), &end);
  if (w->second.empty() || end == nullptr || *end != '\0' || !(secs >= 0)) {
    return Status::InvalidArgument("wait must be a number of seconds, got '" + w->second + "'");
  }
  return std::optional(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(std::min(secs, 60.0))));
}

#define PORO_API_ASSIGN_OR_400(lhs, expr)                      \
  auto PORO_CONCAT_(_r_, __LINE__) = (expr);                   \
  if (!PORO_CONCAT_(_r_, __LINE__).has_value()) {              \
    return ErrorResponse(PORO_CONCAT_(_r_, __LINE__).error()); \
  }                                                            \
  lhs = std::move(*PORO_CONCAT_(_r_, __LINE__))

// A client's name for something (a submission id, a lease): 1..max letters, digits, '.', '_', ':'
// or '-'; "" passes (none given). Otherwise the 400 saying so.
std::optional<api::HttpResponse> CheckName(const char* what, const std::string& v, size_t max) {
  if (v.size() <= max &&
      v.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-") ==
          std::string::npos) {
    return std::nullopt;
  }
  return BadRequest(std::string(what) + " must be at most " + std::to_string(max) +
                    " letters, digits, '.', '_', ':' or '-'");
}

std::string KnownEndpoints(const federation::Manifest& m, const std::string& self) {
  std::string known;
  for (const auto& e : m.endpoints()) {
    if (e.id != self) known += (known.empty() ? "" : ", ") + e.id;
  }
  return known.empty() ? "none" : known;
}

}  // namespace

void ApiRoutes::RegisterOn(api::HttpServer& s) {
  using Handler = std::function<api::HttpResponse(const api::HttpRequest&, const Caller&)>;
  auto add = [this, &s](const char* method, const char* path, Need need, Handler h) {
    s.Route(method, path, [this, need, h = std::move(h)](const api::HttpRequest& r) {
      api::HttpResponse refusal;
      std::optional<Caller> c = Identify(r, need, &refusal);
      if (!c) return refusal;
      return h(r, *c);
    });
  };
  add("GET", "/v1/healthz", Need::kRead, [this](const auto&, const auto&) { return Health(); });
  add("GET", "/v1/endpoints", Need::kRead, [this](const auto&, const auto&) { return Endpoints(); });
  add("GET", "/v1/federation", Need::kRead, [this](const auto&, const auto&) { return FederationInfo(); });
  add("POST", "/v1/federation/refresh", Need::kOperator,
      [this](const auto&, const auto&) { return RefreshFederation(); });
  add("POST", "/v1/policy/check", Need::kRead,
      [this](const auto& r, const auto& c) { return PolicyCheck(r, c); });
  add("GET", "/v1/accounting", Need::kOperator, [this](const auto& r, const auto&) { return Accounting(r); });
  add("POST", "/v1/transfers", Need::kSubmit, [this](const auto& r, const auto& c) { return Submit(r, c); });
  add("GET", "/v1/transfers", Need::kRead, [this](const auto& r, const auto& c) { return List(r, c); });
  add("GET", "/v1/transfers/{id}", Need::kRead, [this](const auto& r, const auto& c) { return Get(r, c); });
  add("GET", "/v1/transfers/{id}/files", Need::kRead,
      [this](const auto& r, const auto& c) { return Files(r, c); });
  add("POST", "/v1/transfers/{id}/cancel", Need::kCancel,
      [this](const auto& r, const auto& c) { return Cancel(r, c); });
  add("DELETE", "/v1/transfers/{id}", Need::kCancel,
      [this](const auto& r, const auto& c) { return Cancel(r, c); });
  add("POST", "/v1/ls", Need::kRead,
      [this](const auto& r, const auto& c) { return PathQuery(r, c, "list"); });
  add("POST", "/v1/checksum", Need::kRead,
      [this](const auto& r, const auto& c) { return PathQuery(r, c, "checksum"); });
  add("GET", "/v1/events", Need::kRead, [this](const auto& r, const auto& c) { return Events(r, c); });
  add("POST", "/v1/jobs", Need::kSubmit, [this](const auto& r, const auto& c) { return SubmitJob(r, c); });
  add("GET", "/v1/jobs", Need::kRead, [this](const auto& r, const auto& c) { return ListJobs(r, c); });
  add("GET", "/v1/jobs/{id}", Need::kRead, [this](const auto& r, const auto& c) { return GetJob(r, c); });
  add("GET", "/v1/jobs/{id}/files", Need::kRead,
      [this](const auto& r, const auto& c) { return JobFiles(r, c); });
  add("POST", "/v1/jobs/{id}/cancel", Need::kCancel,
      [this](const auto& r, const auto& c) { return CancelJob(r, c); });
  add("DELETE", "/v1/jobs/{id}", Need::kCancel,
      [this](const auto& r, const auto& c) { return CancelJob(r, c); });
  add("POST", "/v1/stage", Need::kSubmit, [this](const auto& r, const auto& c) { return Stage(r, c); });
  // The cache is the node's: over HTTPS only its operators read it (who holds which dataset).
  add("GET", "/v1/stage/{id}", Need::kOperator,
      [this](const auto& r, const auto& c) { return GetStaged(r, c); });
  add("POST", "/v1/stage/release", Need::kCancel,
      [this](const auto& r, const auto& c) { return Release(r, c); });
  add("GET", "/v1/staging", Need::kOperator, [this](const auto& r, const auto& c) { return Staging(r, c); });
  RegisterDashboard(s);  // the read-only page (dashboard.h): its files carry no data, no token asked
}

bool ApiRoutes::Caller::Sees(int64_t owner_uid, const std::string& owner_user) const {
  if (sees_all) return true;
  if (remote) return !identity.empty() && owner_user == identity;
  return owner_uid >= 0 && static_cast<uid_t>(owner_uid) == uid;
}

ApiRoutes::Caller ApiRoutes::LocalCaller(const api::HttpRequest& req) const {
  Caller c;
  c.uid = req.peer.uid;
  const UserConfig* u = d_.config->FindUser(c.uid);
  if (u != nullptr) c.identity = u->identity;
  c.sees_all = c.uid == 0 || c.uid == ::geteuid() || (u != nullptr && u->is_operator);
  return c;
}

void ApiRoutes::AuditRemote(const api::HttpRequest& req, const Caller* c, const char* decision, int status,
                            std::string_view reason) const {
  if (d_.fed == nullptr) return;
  json rec{{"event", "api"},       {"decision", decision}, {"remote", req.remote_address},
           {"method", req.method}, {"path", req.path},     {"status", status}};
  if (c != nullptr) {
    rec["user"] = c->identity;
    rec["issuer"] = c->claims.issuer;
  }
  if (!reason.empty()) rec["reason"] = std::string(reason);
  d_.fed->Audit(std::move(rec));
}

std::optional<ApiRoutes::Caller> ApiRoutes::Identify(const api::HttpRequest& req, Need need,
                                                     api::HttpResponse* refusal) const {
  if (!req.tls) return LocalCaller(req);
  const std::string& self = d_.config->endpoint_name;
  auto unauthenticated = [&](const std::string& why, const char* error) {
    *refusal = api::HttpResponse::Error(401, "Unauthenticated", why);
    refusal->headers.emplace_back("WWW-Authenticate", std::string("Bearer realm=\"pororoca\"") +
                                                          (*error ? ", error=\"" : "") + error +
                                                          (*error ? "\"" : ""));
    AuditRemote(req, nullptr, "denied", 401, why);
    return std::nullopt;
  };
  auto h = req.headers.find("authorization");
  constexpr std::string_view kBearer = "bearer ";
  if (h == req.headers.end() || h->second.size() <= kBearer.size() ||
      !std::equal(kBearer.begin(), kBearer.end(), h->second.begin(),
                  [](char a, char b) { return a == std::tolower(static_cast<unsigned char>(b)); })) {
    return unauthenticated("the HTTPS API of endpoint '" + self +
                               "' needs a bearer token (Authorization: Bearer TOKEN) from an issuer of the "
                               "federation, audience '" +
                               self + "'",
                           "");
  }
  if (d_.fed == nullptr) return unauthenticated("no federation to check tokens against", "invalid_token");
  auto claims = d_.fed->VerifyBearer(std::string_view(h->second).substr(kBearer.size()), self);
  if (!claims.has_value())
    return unauthenticated("bearer token refused: " + std::string(claims.error().message()), "invalid_token");
  if (claims->subject.empty())
    return unauthenticated("bearer token refused: it has no subject (sub)", "invalid_token");
  // An issuer speaks for its own institution's people only: "alice@lncc" from an lncc issuer. The
  // identity decides whose transfers the caller sees, whether it is an operator, and what this
  // daemon mints in its name, so another institution's issuer must not be able to claim it.
  {
    const federation::TokenIssuer* iss = d_.fed->manifest()->FindIssuer(claims->issuer);
    const size_t at = claims->subject.rfind('@');
    const std::string inst = at == std::string::npos ? std::string() : claims->subject.substr(at + 1);
    if (iss == nullptr || inst != iss->institution) {
      return unauthenticated("bearer token refused: issuer '" + claims->issuer + "' (institution '" +
                                 (iss ? iss->institution : std::string("?")) + "') does not speak for '" +
                                 claims->subject +
                                 "' (identities are USER@INSTITUTION of the issuer's institution)",
                             "invalid_token");
    }
  }
  Caller c;
  c.remote = true;
  c.identity = claims->subject;
  c.sees_all = d_.config->IsApiOperator(c.identity);
  c.claims = std::move(*claims);
  auto forbidden = [&](const std::string& why) {
    *refusal = api::HttpResponse::Error(403, "PermissionDenied", why);
    AuditRemote(req, &c, "denied", 403, why);
    return std::nullopt;
  };
  if (need == Need::kOperator) {
    if (!c.sees_all) {
      return forbidden("'" + c.identity + "' is not an operator of endpoint '" + self +
                       "' ([api] operators of " + d_.config->source_file + ")");
    }
    return c;
  }
  const char* scope = need == Need::kSubmit   ? "transfer.submit"
                      : need == Need::kCancel ? "transfer.cancel"
                                              : "transfer.read";
  if (std::find(c.claims.scopes.begin(), c.claims.scopes.end(), scope) == c.claims.scopes.end()) {
    std::string have;
    for (const auto& sc : c.claims.scopes) have += (have.empty() ? "" : " ") + sc;
    return forbidden("token grants no " + std::string(scope) + " for " + req.method + " " + req.path +
                     " (scopes: " + (have.empty() ? "none" : have) + ")");
  }
  return c;
}

api::HttpResponse ApiRoutes::Health() const {
  return api::HttpResponse::Json(200, json{{"status", "ok"},
                                           {"endpoint", d_.config->endpoint_name},
                                           {"version", PORO_VERSION},
                                           {"export_root", d_.root->path()},
                                           {"io", io::UringAvailable() ? "io_uring" : "posix"}});
}

api::HttpResponse ApiRoutes::Endpoints() const {
  auto m = d_.fed->manifest();
  json arr = json::array();
  for (const auto& e : m->endpoints()) {
    arr.push_back(json{{"name", e.id},
                       {"institution", e.institution},
                       {"address", e.address},
                       {"status", std::string(federation::EndpointStatusName(e.status))},
                       {"pin", e.pin}});
  }
  return api::HttpResponse::Json(200, json{{"self", d_.config->endpoint_name},
                                           {"institution", d_.fed->self_institution()},
                                           {"federation", m->federation()},
                                           {"serial", m->serial()},
                                           {"endpoints", arr}});
}

api::HttpResponse ApiRoutes::FederationInfo() const {
  auto m = d_.fed->manifest();
  const Config& c = *d_.config;
  return api::HttpResponse::Json(200,
                                 json{{"federation", m->federation()},
                                      {"serial", m->serial()},
                                      {"issued_at", m->issued_at()},
                                      {"source", c.manifest_file.empty() ? c.manifest_url : c.manifest_file},
                                      {"self", c.endpoint_name},
                                      {"institution", d_.fed->self_institution()},
                                      {"institutions", m->body().value("institutions", json::array())},
                                      {"rules", m->policy().size()}});
}

api::HttpResponse ApiRoutes::RefreshFederation() const {
  auto r = d_.fed->Refresh();
  if (!r.has_value()) return ErrorResponse(r.error());
  return FederationInfo();
}

api::HttpResponse ApiRoutes::Accounting(const api::HttpRequest& r) const {
  audit::Accounting::Filter f;
  for (auto [k, dst] : {std::pair<const char*, std::string*>{"since", &f.since},
                        {"until", &f.until},
                        {"user", &f.user},
                        {"institution", &f.institution}}) {
    auto it = r.query.find(k);
    if (it != r.query.end()) *dst = it->second;
  }
  // Days are compared as text: anything but a real YYYY-MM-DD date would select nothing, silently.
  for (auto [k, v] : {std::pair<const char*, const std::string*>{"since", &f.since}, {"until", &f.until}}) {
    if (!v->empty() && !audit::Accounting::ValidDay(*v)) {
      return BadRequest(std::string(k) + " must be a day as YYYY-MM-DD, not '" + *v + "'");
    }
  }
  return api::HttpResponse::Json(200, d_.fed->accounting().Query(f));
}

ApiRoutes::Prepared ApiRoutes::PrepareTransfer(const nlohmann::json& request, const Caller& caller,
                                               bool into_cache) const {
  const Config& c = *d_.config;
  const engine::ExportRoot& root = *d_.root;
  auto refuse = [](const char* check, Status s) {
    api::HttpResponse r = ErrorResponse(s);
    return Prepared(check, std::move(s), std::move(r));
  };
  const Body body(request);
  PORO_API_ASSIGN_OR_400(std::string src_text, body.String("source"));
  PORO_API_ASSIGN_OR_400(std::string dst_text, body.String("destination"));
  auto src = Location::Parse(src_text);
  if (!src.has_value()) return ErrorResponse(src.error().Annotate("source"));
  auto dst = Location::Parse(dst_text);
  if (!dst.has_value()) return ErrorResponse(dst.error().Annotate("destination"));
  // A caller of the HTTPS API names both ends as endpoints: it knows nothing of this host's paths.
  if (caller.remote && (!src->remote || !dst->remote)) {
    return BadRequest(std::string(!src->remote ? "source" : "destination") +
                      ": over the HTTPS API both ends are ENDPOINT:/path (this endpoint is '" +
                      c.endpoint_name + "'), not '" + (!src->remote ? src_text : dst_text) + "'");
  }
  // "SELF:/path" names this daemon: the path is relative to its export root, like any remote path.
  for (Location* l : {&*src, &*dst}) {
    if (l->remote && l->endpoint == c.endpoint_name) {
      auto rel = root.Normalize(l->path);
      if (!rel.has_value()) return refuse("export_root", rel.error());
      l->remote = false;
      l->path = root.Display(*rel) + (l->trailing_slash ? "/" : "");
    }
  }
  if (src->remote == dst->remote) {
    if (caller.remote) {
      // A third-party transfer runs at one of its two ends: that end's daemon pushes or pulls.
      return BadRequest("endpoint '" + c.endpoint_name + "' runs transfers with one end here: submit " +
                        src_text + " -> " + dst_text + " to the API of " + src->endpoint + " or " +
                        dst->endpoint);
    }
    return BadRequest("exactly one of source and destination must be a remote ENDPOINT:/path");
  }
  auto t = std::make_shared<Transfer>();
  PORO_API_ASSIGN_OR_400(t->id, NewId());
  t->push = dst->remote;
  t->remote = t->push ? *dst : *src;
  t->local_path = t->push ? src->path : dst->path;
  t->local_trailing_slash = !t->push && dst->trailing_slash;
  PORO_API_ASSIGN_OR_400(t->recursive, body.Bool("recursive", false));
  t->uid = caller.remote ? -1 : static_cast<int64_t>(caller.uid);
  t->created_ms = NowMs();
  json opts = json::object();
  PORO_API_ASSIGN_OR_400(uint64_t streams, body.Unsigned("streams", c.streams));
  PORO_API_ASSIGN_OR_400(uint64_t chunk, body.Size("chunk_size", c.chunk_size));
  if (Status s = ValidateTransferLimits(c, d_.buffer_size, streams, chunk); !s.ok()) return ErrorResponse(s);
  opts["streams"] = streams;
  opts["chunk_size"] = chunk;
  PORO_API_ASSIGN_OR_400(bool sync, body.Bool("sync", false));
  opts["sync"] = sync;
  PORO_API_ASSIGN_OR_400(bool hard_links, body.Bool("hard_links", false));
  if (hard_links) opts["hard_links"] = true;
  PORO_API_ASSIGN_OR_400(std::string existing, body.String("existing", "fail"));
  if (!proto::ParseExisting(existing).has_value())
    return BadRequest("existing must be fail, overwrite or skip");
  opts["existing"] = existing;
  PORO_API_ASSIGN_OR_400(std::string protection, body.String("protection"));
  if (!protection.empty()) {
    if (!ParseProtection(protection).has_value())
      return BadRequest("protection must be clear, integrity or private, not '" + protection + "'");
    opts["protection"] = protection;  // absent: the stricter of both ends' policy minimums
  }
  PORO_API_ASSIGN_OR_400(std::string transport, body.String("transport"));
  if (!transport.empty()) {
    if (!proto::IsTransportName(transport)) {
      return BadRequest(std::string("transport must be ") + proto::kTransportNames + ", not '" + transport +
                        "'");
    }
    opts["transport"] = transport;  // absent: the first both ends offer
  }
  t->options = opts;
  PORO_API_ASSIGN_OR_400(uint64_t priority, body.Unsigned("priority", kDefaultPriority));
  if (priority < kMinPriority || priority > kMaxPriority) {
    return BadRequest("priority must be 1 (lowest) to 5 (highest), not " + std::to_string(priority));
  }
  t->priority = static_cast<unsigned>(priority);
  PORO_API_ASSIGN_OR_400(t->submission_id, body.String("submission_id"));
  if (auto bad = CheckName("submission_id", t->submission_id, 128)) return *bad;
  // Check what can be checked locally now, so the user gets the error at once.
  auto manifest = d_.fed->manifest();
  if (manifest->FindEndpoint(t->remote.endpoint) == nullptr) {
    Status s = Status::NotFound("unknown endpoint '" + t->remote.endpoint + "': not in federation '" +
                                manifest->federation() +
                                "' (known: " + KnownEndpoints(*manifest, c.endpoint_name) + ")");
    return Prepared("endpoint", s, api::HttpResponse::Error(404, "UnknownEndpoint", s.message()));
  }
  // Who asks: the socket's peer credentials, mapped to a federated identity by [[users]], or the
  // HTTPS caller's token subject.
  t->user = caller.identity;
  PORO_API_ASSIGN_OR_400(t->token, body.String("token"));
  t->token_given = !t->token.empty();
  if (caller.remote) {
    // The identity goes to both data ends: the token for the peer must be the caller's own. Without
    // one, this daemon mints it only for an identity it knows ([[users]]), as for a local user.
    if (t->token_given) {
      if (Status s = CheckPeerToken(caller, t->token, t->remote.endpoint); !s.ok()) return refuse("token", s);
    } else if (c.token_issuer.empty() || c.FindIdentity(caller.identity) == nullptr) {
      return refuse("token", Status::Unauthenticated(
                                 "a transfer submitted over the HTTPS API needs a token for endpoint '" +
                                 t->remote.endpoint + "' in 'token' (audience " + t->remote.endpoint +
                                 ", subject " + caller.identity + ")"));
    }
  }
  if (t->token.empty() && !c.token_issuer.empty() && t->user.empty()) {
    return refuse("identity",
                  Status::PermissionDenied("local user uid " + std::to_string(t->uid) +
                                           " has no federated identity (add it under [[users]] in " +
                                           c.source_file + ") and gave no token"));
  }
  auto rel = root.RelativeFromAbsolute(t->local_path);
  if (!rel.has_value()) return refuse("export_root", rel.error());
  if (!t->push && !into_cache && c.InStagingDir(*rel)) {
    return refuse("destination",
                  Status::PermissionDenied(t->local_path + " is in the staging cache ([staging] dir), "
                                                           "which only its own pulls write: pororoca stage"));
  }
  if (caller.remote) {
    // This end's path too is what the caller's token grants: the daemon reads or writes here on its
    // behalf (storage.read to send, storage.create or .modify to receive).
    // sync replaces files that differ, as overwrite does: both need storage.modify.
    const bool replaces = t->options["existing"] == "overwrite" || t->options["sync"] == true;
    const token::Action act = t->push    ? token::Action::kRead
                              : replaces ? token::Action::kModify
                                         : token::Action::kCreate;
    if (Status s = token::CheckScope(caller.claims, act, "/" + *rel); !s.ok()) {
      return refuse("token", Status(s.code(), "at " + c.endpoint_name + ": " + std::string(s.message())));
    }
  }
  if (t->push) {
    auto si = engine::StatSource(root, *rel);
    if (!si.has_value()) return refuse("source", si.error());
    if (si->is_dir && !t->recursive)
      return refuse("source", Status::InvalidArgument(t->local_path + " is a directory (use -r)"));
  } else {
    auto st = root.Lstat(*rel);
    if (!st.has_value() || !S_ISDIR(st->st_mode)) {
      auto [parent, name] = engine::ExportRoot::Split(*rel);
      auto pst = root.Lstat(parent);
      if (t->local_trailing_slash || !pst.has_value() || !S_ISDIR(pst->st_mode)) {
        // The directory that is missing: the path itself with a trailing '/', else its parent.
        const std::string missing = t->local_trailing_slash ? t->local_path : root.Display(parent);
        return refuse("destination", Status::NotFound("destination directory does not exist: " + missing));
      }
    }
  }
  return Prepared(std::move(t));
}

Status ApiRoutes::CheckPeerToken(const Caller& c, const std::string& token,
                                 const std::string& endpoint) const {
  auto claims = d_.fed->VerifyBearer(token, endpoint);
  if (!claims.has_value()) {
    return Status(claims.error().code(),
                  "token (for endpoint '" + endpoint + "'): " + std::string(claims.error().message()));
  }
  if (claims->subject != c.identity) {
    return Status::PermissionDenied("token (for endpoint '" + endpoint + "') is for '" + claims->subject +
                                    "', but the request is authenticated as '" + c.identity + "'");
  }
  return Status::OK();
}

// {"path": "ENDPOINT:/path" (or, on the socket, a local path), "token", and "limit" (ls) or
// "chunk_size" (checksum)}. This daemon's own paths are answered here; a peer's through a query
// session, which the peer admits as a pull of the path (token storage.read, its policy).
api::HttpResponse ApiRoutes::PathQuery(const api::HttpRequest& req, const Caller& c, const char* op) const {
  const Config& cfg = *d_.config;
  const bool list = std::string_view(op) == "list";
  PORO_API_ASSIGN_OR_400(Body body, Body::Parse(req.body));
  PORO_API_ASSIGN_OR_400(std::string path, body.String("path"));
  if (path.empty()) return BadRequest("path is required: ENDPOINT:/path or a local path");
  auto loc = Location::Parse(path);
  if (!loc.has_value()) return ErrorResponse(loc.error().Annotate("path"));
  proto::Query q;
  q.op = op;
  if (list) {
    PORO_API_ASSIGN_OR_400(uint64_t limit, body.Unsigned("limit", kDefaultListLimit));
    if (limit < 1 || limit > kMaxListLimit) {
      return BadRequest("limit must be 1 to " + std::to_string(kMaxListLimit) + ", not " +
                        std::to_string(limit));
    }
    q.limit = static_cast<uint32_t>(limit);
  } else {
    PORO_API_ASSIGN_OR_400(uint64_t chunk, body.Size("chunk_size", cfg.chunk_size));
    if (chunk < (64u << 10) || chunk > proto::kMaxChunkSize || chunk % 4096 != 0) {
      return BadRequest("chunk_size must be a multiple of 4 KiB from 64 KiB to 64 MiB, not " +
                        std::to_string(chunk));
    }
    q.chunk_size = static_cast<uint32_t>(chunk);
  }
  PORO_API_ASSIGN_OR_400(std::string token, body.String("token"));
  const bool here = !loc->remote || loc->endpoint == cfg.endpoint_name;
  if (!here) {
    SessionRunner::QueryRequest qr{loc->endpoint, loc->path,  q,
                                   token,         c.identity, c.remote ? -1 : int64_t{c.uid}};
    if (c.remote && !token.empty()) {
      if (Status s = CheckPeerToken(c, token, loc->endpoint); !s.ok()) return ErrorResponse(s);
    }
    if (token.empty() && !cfg.token_issuer.empty() && c.identity.empty()) {
      return ErrorResponse(Status::PermissionDenied("local user uid " + std::to_string(c.uid) +
                                                    " has no federated identity (add it under [[users]] in " +
                                                    cfg.source_file + ") and gave no token"));
    }
    if (c.remote && token.empty() && (cfg.token_issuer.empty() || cfg.FindIdentity(c.identity) == nullptr)) {
      return ErrorResponse(Status::Unauthenticated("over the HTTPS API, " + std::string(op) +
                                                   " of a path of endpoint '" + loc->endpoint +
                                                   "' needs a token for it in 'token'"));
    }
    PORO_API_ASSIGN_OR_400(json r, d_.sessions->Query(qr));
    return api::HttpResponse::Json(200, r);
  }
  // This daemon's own export.
  const engine::ExportRoot& root = *d_.root;
  if (c.remote && !loc->remote) {
    return BadRequest("path: over the HTTPS API a path is ENDPOINT:/path (this endpoint is '" +
                      cfg.endpoint_name + "')");
  }
  auto rel = loc->remote ? root.Normalize(loc->path) : root.RelativeFromAbsolute(loc->path);
  if (!rel.has_value()) return ErrorResponse(rel.error());
  if (c.remote) {
    if (Status s = token::CheckScope(c.claims, token::Action::kRead, "/" + *rel); !s.ok()) {
      return ErrorResponse(Status(s.code(), "at " + cfg.endpoint_name + ": " + std::string(s.message())));
    }
  }
  // A named link is followed as a transfer's source is (inside the export root only).
  PORO_API_ASSIGN_OR_400(engine::SourceInfo si, engine::StatSource(root, *rel));
  PORO_API_ASSIGN_OR_400(json r, list ? ListExport(root, si.rel, q.limit)
                                      : ChecksumExport(root, si.rel, q.chunk_size, d_.stopping));
  r["path"] = "/" + *rel;
  r["endpoint"] = cfg.endpoint_name;
  return api::HttpResponse::Json(200, r);
}

api::HttpResponse ApiRoutes::Submit(const api::HttpRequest& req, const Caller& c) const {
  PORO_API_ASSIGN_OR_400(Body body, Body::Parse(req.body));
  Prepared p = PrepareTransfer(body.json_value(), c);
  if (!p.transfer) {
    if (c.remote) AuditRemote(req, &c, "refused", p.response.status, p.refusal.message());
    return p.response;
  }
  bool existing = false;
  PORO_API_ASSIGN_OR_400(std::shared_ptr<Transfer> t, d_.transfers->Submit(p.transfer, &existing));
  if (c.remote) AuditRemote(req, &c, "allowed", existing ? 200 : 201, "transfer " + t->id);
  // A submission id seen before: the transfer it made, as it is now (200, not 201: nothing new).
  return api::HttpResponse::Json(existing ? 200 : 201, t->View());
}

// "Would this transfer be allowed, and by which check?" The body of a submit (source, destination,
// options, token), plus optional "direction", "classification" and "time" for the policy. Runs the
// checks a submit and the transfer's set-up make at this end, in their order, without moving data:
// {"allowed", "check" (the one that decided), "reason", "code" (as the transfer would fail),
// "serial", and once the policy was reached "rule", "request", caps, "explain"}.
api::HttpResponse ApiRoutes::PolicyCheck(const api::HttpRequest& req, const Caller& c) const {
  PORO_API_ASSIGN_OR_400(Body body, Body::Parse(req.body));
  SessionRunner::DryRunOverrides o;
  PORO_API_ASSIGN_OR_400(std::string dir, body.String("direction"));
  if (!dir.empty()) {
    auto d = policy::ParseDirection(dir);
    if (!d.has_value()) return BadRequest("direction must be push or pull, not '" + dir + "'");
    o.direction = *d;
  }
  if (body.Has("classification")) {
    PORO_API_ASSIGN_OR_400(o.classification, body.String("classification"));
  }
  if (body.Has("time")) {
    PORO_API_ASSIGN_OR_400(o.now_unix, body.Integer("time", 0));
  }
  auto m = d_.fed->manifest();
  json out{{"serial", m->serial()}};
  auto refused = [&](const char* check, const Status& s) {
    out["allowed"] = false;
    out["check"] = check;
    out["code"] = CodeName(s.code());
    out["reason"] = std::string(s.message());
    return api::HttpResponse::Json(200, out);
  };
  Prepared p = PrepareTransfer(body.json_value(), c);
  if (!p.transfer) {
    if (*p.check == '\0') return p.response;  // a malformed request, not a refusal
    return refused(p.check, p.refusal);
  }
  SessionRunner::Verdict v = d_.sessions->DryRun(*p.transfer, o);
  if (std::string_view(v.check) != "policy") return refused(v.check, v.refusal);
  const policy::Request& r = v.request;
  const policy::Decision& d = v.decision;
  out["request"] = {{"source_institution", r.source_institution},
                    {"destination_institution", r.destination_institution},
                    {"direction", std::string(policy::DirectionName(r.direction))},
                    {"source_path", r.source_path},
                    {"destination_path", r.destination_path},
                    {"classification", r.classification}};
  out["rule"] = d.rule_id;
  if (!v.refusal.ok()) {
    // The refusal names the federation and this endpoint, as the transfer's would; the root's
    // decision is given too (a tree may be refused for a sub-tree though its root is allowed).
    out["policy_reason"] = d.reason;
    if (d.allowed) out["protection_required"] = std::string(ProtectionName(d.protection));
    if (!d.allowed) out["explain"] = m->policy().Explain(r);
    return refused("policy", v.refusal);
  }
  out["allowed"] = true;
  out["check"] = "policy";
  out["reason"] = d.reason;
  if (d.rate_limit_bytes_per_s) out["rate_limit_bytes_per_s"] = d.rate_limit_bytes_per_s;
  if (d.max_concurrent) out["max_concurrent"] = d.max_concurrent;
  // This end's minimum (the strictest rule of the root and its classified sub-trees), and the level
  // the transfer would run at as far as this end knows (the peer's policy may require more).
  out["protection_required"] = std::string(ProtectionName(d.protection));
  out["protection"] = std::string(
      ProtectionName(Stricter(v.protection_requested.value_or(Protection::kClear), d.protection)));
  return api::HttpResponse::Json(200, out);
}

TransferManager::Visible ApiRoutes::VisibleTo(const Caller& c) {
  if (c.sees_all) return nullptr;
  return [c](const Transfer& t) { return c.Sees(t.uid, t.user); };
}

api::HttpResponse ApiRoutes::List(const api::HttpRequest&, const Caller& c) const {
  json arr = json::array();
  for (const auto& t : d_.transfers->List(VisibleTo(c))) arr.push_back(t->View());
  return api::HttpResponse::Json(200, json{{"transfers", arr}});
}

api::HttpResponse ApiRoutes::Get(const api::HttpRequest& req, const Caller& c) const {
  const std::string& id = req.params.at("id");
  PORO_API_ASSIGN_OR_400(std::shared_ptr<Transfer> t, d_.transfers->Find(id, VisibleTo(c)));
  // ?wait=SECONDS: a long poll. Answers as soon as the transfer has ended, else after SECONDS
  // (at most 60) with its progress: a client follows a transfer without polling on a timer.
  PORO_API_ASSIGN_OR_400(auto wait, LongPoll(req));
  if (wait) d_.transfers->WaitEnded(*t, *wait);
  return api::HttpResponse::Json(200, t->View());
}

// ?state=succeeded|skipped|failed, ?offset=N (default 0), ?limit=N (1..1000, default 100): the
// files by path. {"id", "total" (matching the state filter), "offset", "limit", "by_state" (all
// files), "files": [{"path", "size", "digest", "state", "attempts", "error", "updated_ms"}],
// "next_offset" (when more follow)}.
api::HttpResponse ApiRoutes::Files(const api::HttpRequest& req, const Caller& c) const {
  PORO_API_ASSIGN_OR_400(std::shared_ptr<Transfer> t, d_.transfers->Find(req.params.at("id"), VisibleTo(c)));
  return FilesPage(req, t->id, {t->id});
}

api::HttpResponse ApiRoutes::FilesPage(const api::HttpRequest& req, const std::string& id,
                                       const std::vector<std::string>& transfer_ids) const {
  auto number = [&](const char* name, uint64_t def, uint64_t lo, uint64_t hi) -> Result<uint64_t> {
    auto q = req.query.find(name);
    if (q == req.query.end()) return def;
    char* end = nullptr;
    errno = 0;
    const unsigned long long v = std::strtoull(q->second.c_str(), &end, 10);
    if (q->second.empty() || *end != '\0' || errno != 0 || q->second.front() == '-' || v < lo || v > hi) {
      return Status::InvalidArgument(std::string(name) + " must be a whole number from " +
                                     std::to_string(lo) + " to " + std::to_string(hi) + ", not '" +
                                     q->second + "'");
    }
    return static_cast<uint64_t>(v);
  };
  PORO_API_ASSIGN_OR_400(uint64_t offset, number("offset", 0, 0, UINT64_MAX >> 1));
  PORO_API_ASSIGN_OR_400(uint64_t limit, number("limit", 100, 1, 1000));
  std::string state;
  if (auto q = req.query.find("state"); q != req.query.end()) {
    state = q->second;
    if (state != "succeeded" && state != "skipped" && state != "failed") {
      return BadRequest("state must be succeeded, skipped or failed, not '" + state + "'");
    }
  }
  PORO_API_ASSIGN_OR_400(FilePage page,
                         d_.transfers->Files(transfer_ids, state, offset, static_cast<uint32_t>(limit)));
  const bool job = transfer_ids.size() != 1 || transfer_ids.front() != id;
  json files = json::array();
  for (const auto& f : page.files) {
    json row{{"path", f.path},         {"size", f.size},   {"digest", f.digest},        {"state", f.state},
             {"attempts", f.attempts}, {"error", f.error}, {"updated_ms", f.updated_ms}};
    if (job) row["transfer"] = f.transfer_id;
    files.push_back(std::move(row));
  }
  json out{{"id", id},       {"total", page.total},       {"offset", offset},
           {"limit", limit}, {"by_state", page.by_state}, {"files", std::move(files)}};
  if (offset + page.files.size() < page.total) out["next_offset"] = offset + page.files.size();
  return api::HttpResponse::Json(200, out);
}

api::HttpResponse ApiRoutes::Cancel(const api::HttpRequest& req, const Caller& c) const {
  const std::string& id = req.params.at("id");
  PORO_API_ASSIGN_OR_400(std::shared_ptr<Transfer> t, d_.transfers->Cancel(id, VisibleTo(c)));
  if (c.remote) AuditRemote(req, &c, "allowed", 202, "cancel " + t->id);
  return api::HttpResponse::Json(202, t->View());
}

// GET /v1/events[?since=N][&transfer=ID]: a stream of server-sent events (text/event-stream), one
// per change of a transfer's state ("transfer") and one a second per running transfer whose
// counters moved ("progress"), each "id: N", "event: TYPE", "data: JSON". Only the caller's own
// transfers (all for an operator). Without `since` (or a Last-Event-ID header) the stream starts
// with the events to come; with it, with those after N that are still kept. A comment line every
// 15 s keeps proxies from closing an idle stream.
api::HttpResponse ApiRoutes::Events(const api::HttpRequest& req, const Caller& c) const {
  EventLog& log = d_.transfers->events();
  uint64_t since = log.last_seq();
  std::string from;
  if (auto q = req.query.find("since"); q != req.query.end()) {
    from = q->second;
  } else if (auto h = req.headers.find("last-event-id"); h != req.headers.end()) {
    from = h->second;
  }
  if (!from.empty()) {
    char* end = nullptr;
    errno = 0;
    const unsigned long long n = std::strtoull(from.c_str(), &end, 10);
    if (end == nullptr || *end != '\0' || errno != 0 || from.front() == '-') {
      return BadRequest("since must be an event number (the id: of an event), not '" + from + "'");
    }
    since = n;
  }
  std::string only;
  if (auto q = req.query.find("transfer"); q != req.query.end()) {
    PORO_API_ASSIGN_OR_400(std::shared_ptr<Transfer> t, d_.transfers->Find(q->second, VisibleTo(c)));
    only = t->id;
  }
  const TransferManager* manager = d_.transfers;
  api::HttpResponse r;
  r.content_type = "text/event-stream";
  r.headers.emplace_back("Cache-Control", "no-cache");
  r.stream = [&log, manager, since, c, only](const api::HttpResponse::Writer& write) {
    auto keep = [&](const Event& e) {
      if (!only.empty() && e.transfer_id != only) return false;
      return c.Sees(e.uid, e.user);
    };
    if (!write("retry: 2000\n\n")) return;
    uint64_t after = since;
    auto quiet_since = std::chrono::steady_clock::now();
    while (!manager->stopping()) {
      // Over HTTPS the stream lasts as long as the token that opened it: the client reconnects
      // with a fresh one (and Last-Event-ID).
      if (c.remote && c.claims.expires > 0 && std::time(nullptr) >= c.claims.expires) {
        write(
            "event: expired\ndata: {\"message\": \"the bearer token expired; reconnect with a new "
            "one\"}\n\n");
        return;
      }
      EventLog::ReadResult rr = log.Read(after, keep, 256, std::chrono::milliseconds(1000));
      std::string out;
      if (rr.missed) {
        out += "event: missed\ndata: " +
               json{{"after", after}, {"message", "events were dropped; read the transfers again"}}.dump() +
               "\n\n";
      }
      for (const Event& e : rr.events) {
        out += "id: " + std::to_string(e.seq) + "\nevent: " + e.type + "\ndata: " + e.data + "\n\n";
      }
      after = rr.last;
      const auto now = std::chrono::steady_clock::now();
      if (out.empty() && now - quiet_since >= std::chrono::seconds(15)) out = ": keepalive\n\n";
      if (!write(out)) return;  // an empty write only asks whether the server is stopping
      if (out.empty()) continue;
      quiet_since = now;
    }
  };
  return r;
}

constexpr size_t kMaxJobEntries = 10000;

// {"entries": [{"source", "destination", ...}, ...], and fields every entry takes unless it sets
// its own (recursive, streams, chunk_size, existing, sync, hard_links, protection, transport,
// token, priority), "submission_id"}. All entries are checked as POST /v1/transfers checks one;
// the first refused one is the answer (its message prefixed "entries[i]: ") and nothing is queued.
api::HttpResponse ApiRoutes::SubmitJob(const api::HttpRequest& req, const Caller& c) const {
  PORO_API_ASSIGN_OR_400(Body body, Body::Parse(req.body));
  const json& all = body.json_value();
  if (!body.Has("entries") || !all["entries"].is_array() || all["entries"].empty()) {
    return BadRequest("entries must be a non-empty array of {\"source\", \"destination\", ...} objects");
  }
  const json& entries = all["entries"];
  if (entries.size() > kMaxJobEntries) {
    return BadRequest("entries: " + std::to_string(entries.size()) + " entries, at most " +
                      std::to_string(kMaxJobEntries) + " in one job (a tree is one entry: use recursive)");
  }
  PORO_API_ASSIGN_OR_400(std::string sid, body.String("submission_id"));
  if (auto bad = CheckName("submission_id", sid, 120)) return *bad;  // room for "#i" of each entry
  json defaults = all;
  defaults.erase("entries");
  defaults.erase("submission_id");
  PORO_API_ASSIGN_OR_400(std::string job_id, NewId());
  TransferManager::Job job;
  job.reserve(entries.size());
  const int64_t now = NowMs();
  for (size_t i = 0; i < entries.size(); ++i) {
    const std::string where = "entries[" + std::to_string(i) + "]";
    if (!entries[i].is_object()) return BadRequest(where + " must be an object with source and destination");
    if (entries[i].contains("submission_id")) {
      return BadRequest(where + ": submission_id belongs to the job, not to an entry");
    }
    json merged = defaults;
    for (const auto& [k, v] : entries[i].items()) merged[k] = v;
    Prepared p = PrepareTransfer(merged, c);
    if (!p.transfer) {
      json e = json::parse(p.response.body, nullptr, false);
      const std::string code = e.is_object() ? e["error"].value("code", std::string("InvalidArgument")) : "";
      const std::string msg = e.is_object() ? e["error"].value("message", p.response.body) : p.response.body;
      if (c.remote) AuditRemote(req, &c, "refused", p.response.status, where + ": " + msg);
      return api::HttpResponse::Error(p.response.status, code, where + ": " + msg);
    }
    p.transfer->job_id = job_id;
    p.transfer->job_index = static_cast<unsigned>(i);
    p.transfer->created_ms = now;
    if (!sid.empty()) p.transfer->submission_id = sid + "#" + std::to_string(i);
    job.push_back(std::move(p.transfer));
  }
  bool existing = false;
  PORO_API_ASSIGN_OR_400(TransferManager::Job made, d_.transfers->SubmitJob(job, &existing));
  if (c.remote) {
    AuditRemote(req, &c, "allowed", existing ? 200 : 201,
                "job " + made.front()->job_id + " (" + std::to_string(made.size()) + " entries)");
  }
  return api::HttpResponse::Json(existing ? 200 : 201, TransferManager::JobView(made, true));
}

api::HttpResponse ApiRoutes::ListJobs(const api::HttpRequest&, const Caller& c) const {
  json arr = json::array();
  for (const auto& job : d_.transfers->ListJobs(VisibleTo(c)))
    arr.push_back(TransferManager::JobView(job, false));
  return api::HttpResponse::Json(200, json{{"jobs", arr}});
}

api::HttpResponse ApiRoutes::GetJob(const api::HttpRequest& req, const Caller& c) const {
  PORO_API_ASSIGN_OR_400(TransferManager::Job job, d_.transfers->FindJob(req.params.at("id"), VisibleTo(c)));
  PORO_API_ASSIGN_OR_400(auto wait, LongPoll(req));
  if (wait) d_.transfers->WaitJobEnded(job, *wait);
  return api::HttpResponse::Json(200, TransferManager::JobView(job, true));
}

api::HttpResponse ApiRoutes::JobFiles(const api::HttpRequest& req, const Caller& c) const {
  PORO_API_ASSIGN_OR_400(TransferManager::Job job, d_.transfers->FindJob(req.params.at("id"), VisibleTo(c)));
  std::vector<std::string> ids;
  ids.reserve(job.size());
  for (const auto& t : job) ids.push_back(t->id);
  return FilesPage(req, job.front()->job_id, ids);
}

api::HttpResponse ApiRoutes::CancelJob(const api::HttpRequest& req, const Caller& c) const {
  PORO_API_ASSIGN_OR_400(TransferManager::Job job, d_.transfers->FindJob(req.params.at("id"), VisibleTo(c)));
  for (const auto& t : job) {
    auto r = d_.transfers->Cancel(t->id, VisibleTo(c));
    if (!r.has_value() && r.error().code() != Code::kNotFound) return ErrorResponse(r.error());
  }
  if (c.remote) AuditRemote(req, &c, "allowed", 202, "cancel job " + job.front()->job_id);
  return api::HttpResponse::Json(202, TransferManager::JobView(job, true));
}

// The staging cache (docs/staging.md). Staging is asked on the node, through the daemon's socket
// (a job's prolog, an init container); over HTTPS the cache can be read, not filled.
namespace {
api::HttpResponse NoStaging(const Config& c) {
  return api::HttpResponse::Error(404, "NotFound",
                                  "staging is not configured on endpoint '" + c.endpoint_name +
                                      "' ([staging] dir in " + c.source_file + ")");
}
}  // namespace

api::HttpResponse ApiRoutes::Stage(const api::HttpRequest& req, const Caller& c) const {
  const Config& cfg = *d_.config;
  if (d_.staging == nullptr) return NoStaging(cfg);
  if (c.remote) {
    return api::HttpResponse::Error(403, "PermissionDenied",
                                    "datasets are staged on the node, through the daemon's API socket "
                                    "(pororoca stage); over HTTPS the cache is read-only");
  }
  PORO_API_ASSIGN_OR_400(Body body, Body::Parse(req.body));
  PORO_API_ASSIGN_OR_400(std::string source, body.String("source"));
  auto loc = Location::Parse(source);
  if (!loc.has_value()) return ErrorResponse(loc.error().Annotate("source"));
  if (!loc->remote)
    return BadRequest("source must be ENDPOINT:/path (a dataset of another endpoint), not '" + source + "'");
  if (loc->endpoint == cfg.endpoint_name) {
    return BadRequest("source " + source + " is on this endpoint: read it in place, under " +
                      d_.root->path());
  }
  // The dataset's name: the path made absolute and clean, as a peer's export root takes it.
  std::string path = "/" + loc->path;
  {
    std::string clean;
    size_t i = 0;
    while (i < path.size()) {
      const size_t j = std::min(path.find('/', i), path.size());
      const std::string part = path.substr(i, j - i);
      if (part == "..") return BadRequest("source: '..' is not allowed in " + source);
      if (!part.empty() && part != ".") clean += "/" + part;
      i = j + 1;
    }
    path = clean;
  }
  if (path.empty()) {
    return BadRequest("source: the export root of " + loc->endpoint +
                      " is not a dataset; name a directory or file in it");
  }
  StagingCache::Request sr;
  sr.endpoint = loc->endpoint;
  sr.path = path;
  sr.uid = static_cast<int64_t>(c.uid);
  sr.identity = c.identity;
  PORO_API_ASSIGN_OR_400(sr.lease, body.String("lease"));
  if (auto bad = CheckName("lease", sr.lease, 128)) return *bad;
  PORO_API_ASSIGN_OR_400(uint64_t ttl, body.Unsigned("ttl_s", 0));
  if (ttl != 0 && (ttl < 60 || ttl > 365ull * 86400)) return BadRequest("ttl_s must be 60 s to 365 days");
  sr.ttl_s = static_cast<int64_t>(ttl);
  PORO_API_ASSIGN_OR_400(std::string token, body.String("token"));
  if (d_.fed->manifest()->FindEndpoint(loc->endpoint) == nullptr) {
    return api::HttpResponse::Error(404, "UnknownEndpoint",
                                    "unknown endpoint '" + loc->endpoint + "': not in federation '" +
                                        d_.fed->manifest()->federation() + "'");
  }
  // The pull it would take, checked as the caller's own submission (endpoint, identity, token).
  const std::string dataset = loc->endpoint + ":" + path;
  PORO_API_ASSIGN_OR_400(std::string dest, d_.staging->PrepareDir(loc->endpoint, path));
  json pull{
      {"source", dataset}, {"destination", dest}, {"recursive", true}, {"sync", true}, {"priority", 4u}};
  if (!token.empty()) pull["token"] = token;
  Prepared p = PrepareTransfer(pull, c, /*into_cache=*/true);
  if (!p.transfer) return p.response;
  auto staged = d_.staging->Stage(sr, p.transfer);
  if (staged.has_value() && staged->needs_access_check) {
    // Served from the cache: the source answers whether this caller may read it (the query a
    // `pororoca ls` sends, admitted as a pull of it would be).
    proto::Query q;
    q.op = "list";
    q.limit = 1;
    SessionRunner::QueryRequest qr{loc->endpoint, path, q, p.transfer->token, c.identity, int64_t{c.uid}};
    auto answer = d_.sessions->Query(qr);
    if (!answer.has_value()) return ErrorResponse(answer.error().Annotate("staging " + dataset));
    sr.access_checked = true;
    staged = d_.staging->Stage(sr, p.transfer);
  }
  if (!staged.has_value()) return ErrorResponse(staged.error().Annotate("staging " + dataset));
  return api::HttpResponse::Json(staged->ready ? 200 : 202, staged->view);
}

api::HttpResponse ApiRoutes::GetStaged(const api::HttpRequest& req, const Caller&) const {
  if (d_.staging == nullptr) return NoStaging(*d_.config);
  PORO_API_ASSIGN_OR_400(auto wait, LongPoll(req));
  PORO_API_ASSIGN_OR_400(json v,
                         d_.staging->Get(req.params.at("id"), wait.value_or(std::chrono::seconds(0))));
  return api::HttpResponse::Json(200, v);
}

api::HttpResponse ApiRoutes::Release(const api::HttpRequest& req, const Caller& c) const {
  if (d_.staging == nullptr) return NoStaging(*d_.config);
  if (c.remote) {
    return api::HttpResponse::Error(403, "PermissionDenied",
                                    "leases are released on the node, through the daemon's API socket "
                                    "(pororoca release)");
  }
  PORO_API_ASSIGN_OR_400(Body body, Body::Parse(req.body));
  PORO_API_ASSIGN_OR_400(std::string lease, body.String("lease"));
  if (lease.empty()) return BadRequest("lease is required");
  if (auto bad = CheckName("lease", lease, 128)) return *bad;
  PORO_API_ASSIGN_OR_400(size_t n, d_.staging->Release(lease, int64_t{c.uid}, c.identity, c.sees_all));
  return api::HttpResponse::Json(200, json{{"lease", lease}, {"released", n}});
}

api::HttpResponse ApiRoutes::Staging(const api::HttpRequest&, const Caller&) const {
  if (d_.staging == nullptr) return NoStaging(*d_.config);
  return api::HttpResponse::Json(200, d_.staging->List());
}

}  // namespace pororoca::daemon
