#include "daemon/federation.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>

#include "base/file_util.h"
#include "base/log.h"
#include "base/path.h"
#include "controlplane/client.h"
#include "token/token.h"

namespace pororoca::daemon {
namespace {

using json = nlohmann::json;

std::string LastGoodFile(const Config& c) { return c.state_dir + "/manifest.json"; }
std::string AnchorsFile(const Config& c) { return c.state_dir + "/trust_anchors.pem"; }
std::string AccountingFile(const Config& c) { return c.state_dir + "/accounting.json"; }
std::string ReceivedAccountingFile(const Config& c) { return c.state_dir + "/accounting-received.json"; }

// How this daemon reaches the control-plane service: its own endpoint certificate (mutual TLS), the
// bootstrap CA, the service's expected name.
controlplane::ClientConfig ServiceClient(const Config& c) {
  controlplane::ClientConfig cc;
  cc.url = c.manifest_url;
  cc.ca_file = c.tls_ca;
  cc.cert_file = c.tls_cert;
  cc.key_file = c.tls_key;
  cc.server_name = c.service_name;
  return cc;
}

std::string SourceName(const Config& c) { return c.manifest_file.empty() ? c.manifest_url : c.manifest_file; }

}  // namespace

Status LiveSession::CutStatus() {
  MutexLock lock(&mu);
  if (cut_reason.empty()) return Status::OK();
  return Status::PermissionDenied(cut_reason);
}

Federation::Federation(const Config& config) : config_(config) {}

Federation::~Federation() { Stop(); }

Result<std::unique_ptr<Federation>> Federation::Open(const Config& c) {
  std::unique_ptr<Federation> f(new Federation(c));
  auto key = crypto::LoadPublicKeyPem(c.authority_key);
  if (!key.has_value()) return key.error().Annotate("[federation] authority_key");
  f->authority_ = std::move(*key);
  if (!c.token_key.empty()) {
    auto tk = crypto::LoadPrivateKeyPem(c.token_key);
    if (!tk.has_value()) return tk.error().Annotate("[tokens] key");
    f->token_key_ = std::move(*tk);
  }
  auto log = audit::AuditLog::Open(c.audit_log);
  if (!log.has_value()) return log.error().Annotate("[audit] log");
  f->audit_ = std::move(*log);
  PORO_ASSIGN_OR_RETURN(f->accounting_, audit::Accounting::Open(AccountingFile(c)));
  const bool seed_received = ::access(ReceivedAccountingFile(c).c_str(), F_OK) != 0;
  PORO_ASSIGN_OR_RETURN(f->received_, audit::Accounting::Open(ReceivedAccountingFile(c)));
  std::vector<std::pair<std::string, std::string>> labels;
  for (const auto& cl : c.classifications) labels.emplace_back(cl.path, cl.label);
  f->classifier_ = std::make_unique<policy::Classifier>(std::move(labels));

  // The last good manifest first, then the source through the same path as every refresh: the
  // newer valid one wins. A source that is older, badly signed or unreachable does not stop a
  // daemon that has a good copy (Refresh logs and audits why it was refused).
  if (auto text = ReadSmallFile(LastGoodFile(c), federation::kMaxManifestBytes); text.has_value()) {
    auto m = federation::VerifyManifest(*text, f->authority_, LastGoodFile(c));
    if (m.has_value()) {
      PORO_RETURN_IF_ERROR(f->Install(*m, *text, /*persist=*/false));
      // A source holding the same text (the usual case for a file source) is not verified twice.
      MutexLock lock(&f->mu_);
      f->last_fetched_ = *text;
    } else {
      PORO_LOG(WARNING) << "ignoring the last good manifest: " << m.error().ToString();
    }
  }
  auto serial = f->Refresh();
  auto best = f->manifest();
  if (!best) return serial.error().Annotate("[federation] manifest");
  if (best->FindEndpoint(c.endpoint_name) == nullptr) {
    PORO_LOG(WARNING) << "this endpoint '" << c.endpoint_name
                      << "' is not in the federation manifest (serial " << best->serial()
                      << "): every peer will refuse it";
  }
  if (seed_received) {
    // A state directory from before accounting-received.json: start from what was reported then
    // (the rows whose destination is this institution), so the service's totals do not go back.
    json rows = json::array();
    for (const auto& r : f->accounting_->Report(c.endpoint_name).value("rows", json::array())) {
      if (r.value("destination", std::string()) == f->self_institution()) rows.push_back(r);
    }
    if (!rows.empty()) PORO_RETURN_IF_ERROR(f->received_->Merge(json{{"rows", rows}}));
    PORO_RETURN_IF_ERROR(f->received_->Flush());
  }
  return f;
}

Result<std::string> Federation::Check(const Config& c) {
  auto key = crypto::LoadPublicKeyPem(c.authority_key);
  if (!key.has_value()) return key.error().Annotate("[federation] authority_key");
  if (!c.token_key.empty()) {
    auto tk = crypto::LoadPrivateKeyPem(c.token_key);
    if (!tk.has_value()) return tk.error().Annotate("[tokens] key");
  }
  // The audit log in a state directory that start-up will create has nothing to check yet.
  const bool in_new_state_dir = c.audit_log.rfind(c.state_dir + "/", 0) == 0 &&
                                c.audit_log.find('/', c.state_dir.size() + 1) == std::string::npos &&
                                ::access(c.state_dir.c_str(), F_OK) != 0;
  if (!in_new_state_dir) PORO_RETURN_IF_ERROR(CheckCanWrite(c.audit_log, "[audit] log"));
  PORO_RETURN_IF_ERROR(audit::Accounting::Open(AccountingFile(c)).status());
  PORO_RETURN_IF_ERROR(audit::Accounting::Open(ReceivedAccountingFile(c)).status());
  // The newer of the last good copy and the source, as Open() would install it.
  std::shared_ptr<const federation::Manifest> best;
  std::string from;
  if (auto text = ReadSmallFile(LastGoodFile(c), federation::kMaxManifestBytes); text.has_value()) {
    auto m = federation::VerifyManifest(*text, *key, LastGoodFile(c));
    if (m.has_value()) {
      best = *m;
      from = LastGoodFile(c);
    }
  }
  Federation probe(c);
  auto text = probe.FetchSource();
  Status source_error;
  if (text.has_value()) {
    auto m = federation::VerifyManifest(*text, *key, SourceName(c));
    if (!m.has_value()) {
      source_error = m.error();
    } else if (!best || (*m)->serial() > best->serial()) {
      best = *m;
      from = SourceName(c);
    }
  } else {
    source_error = text.error();
  }
  if (!best) return source_error.Annotate("[federation] manifest");
  // The anchors go to TLS as a file: an anonymous one in memory, so nothing lands on disk.
  UniqueFd anchors(::memfd_create("pororoca-anchors", MFD_CLOEXEC));
  if (!anchors.valid()) return Status::IoError("memfd_create for the trust anchors", errno);
  const std::string& pem = best->trust_anchors_pem();
  if (::write(anchors.get(), pem.data(), pem.size()) != static_cast<ssize_t>(pem.size())) {
    return Status::IoError("write the trust anchors to memory", errno);
  }
  transport::TlsConfig tc{"/proc/self/fd/" + std::to_string(anchors.get()), c.tls_cert, c.tls_key, true};
  PORO_RETURN_IF_ERROR(transport::TlsContext::Create(tc).status());
  std::string line = "manifest serial " + std::to_string(best->serial()) + " of federation '" +
                     best->federation() + "' from " + from;
  if (!source_error.ok())
    line += " (source " + SourceName(c) + " not usable: " + source_error.ToString() + ")";
  if (best->FindEndpoint(c.endpoint_name) == nullptr) {
    line += "; warning: this endpoint '" + c.endpoint_name + "' is not in it, every peer will refuse it";
  }
  return line;
}

void Federation::Start() {
  refresh_thread_ = std::thread([this] { RefreshLoop(); });
}

void Federation::Stop() {
  {
    MutexLock lock(&mu_);
    if (stopping_.exchange(true)) return;
    stop_cv_.NotifyAll();
  }
  if (refresh_thread_.joinable()) refresh_thread_.join();
  if (accounting_) accounting_->Flush().IgnoreError();
  if (received_) received_->Flush().IgnoreError();
}

std::shared_ptr<const federation::Manifest> Federation::manifest() const {
  MutexLock lock(&mu_);
  return manifest_;
}

std::shared_ptr<transport::TlsContext> Federation::tls_server() const {
  MutexLock lock(&mu_);
  return tls_server_;
}

std::shared_ptr<transport::TlsContext> Federation::tls_client() const {
  MutexLock lock(&mu_);
  return tls_client_;
}

std::string Federation::self_institution() const {
  auto m = manifest();
  const federation::Endpoint* ep = m->FindEndpoint(config_.endpoint_name);
  return ep ? ep->institution : std::string();
}

Result<std::string> Federation::FetchSource() const {
  if (!config_.manifest_file.empty())
    return ReadSmallFile(config_.manifest_file, federation::kMaxManifestBytes);
  controlplane::ClientConfig cc = ServiceClient(config_);
  return controlplane::FetchManifest(cc);
}

Status Federation::BuildTls(const federation::Manifest& m) {
  // TLS trusts exactly the manifest's anchors; the contexts are rebuilt when they change.
  PORO_RETURN_IF_ERROR(WriteFileAtomic(AnchorsFile(config_), m.trust_anchors_pem(), 0644));
  transport::TlsConfig tc{AnchorsFile(config_), config_.tls_cert, config_.tls_key, true};
  PORO_ASSIGN_OR_RETURN(auto server, transport::TlsContext::Create(tc));
  tc.server = false;
  PORO_ASSIGN_OR_RETURN(auto client, transport::TlsContext::Create(tc));
  MutexLock lock(&mu_);
  tls_server_ = std::shared_ptr<transport::TlsContext>(std::move(server));
  tls_client_ = std::shared_ptr<transport::TlsContext>(std::move(client));
  anchors_pem_ = m.trust_anchors_pem();
  return Status::OK();
}

Status Federation::Install(std::shared_ptr<const federation::Manifest> m, const std::string& text,
                           bool persist) {
  bool anchors_changed;
  {
    MutexLock lock(&mu_);
    anchors_changed = anchors_pem_ != m->trust_anchors_pem();
  }
  if (anchors_changed) PORO_RETURN_IF_ERROR(BuildTls(*m));
  if (persist) PORO_RETURN_IF_ERROR(WriteFileAtomic(LastGoodFile(config_), text, 0644));
  {
    MutexLock lock(&mu_);
    manifest_ = m;
  }
  PORO_LOG(INFO) << "federation '" << m->federation() << "' manifest serial " << m->serial()
                 << " in force: " << m->institutions().size() << " institutions, " << m->endpoints().size()
                 << " endpoints, " << m->policy().size() << " policy rules";
  Audit(json{{"event", "manifest"},
             {"decision", "accepted"},
             {"serial", m->serial()},
             {"federation", m->federation()}});
  CutSessions(*m);
  return Status::OK();
}

Result<uint64_t> Federation::Refresh() {
  MutexLock serial_lock(&refresh_mu_);
  auto current = manifest();  // null only during Open() without a last good copy
  const std::string in_force = current ? "serial " + std::to_string(current->serial()) : "no manifest";
  auto text = FetchSource();
  if (!text.has_value()) {
    // Unreachable source: the manifest in force stays. Said (log and audit) once per distinct
    // error, not every refresh_s.
    std::string why(text.error().message());
    bool changed;
    {
      MutexLock lock(&mu_);
      changed = why != last_fetch_error_;
      last_fetch_error_ = why;
    }
    if (changed) {
      PORO_LOG(WARNING) << "manifest source " << SourceName(config_) << " unreachable: " << why
                        << "; keeping " << in_force;
      Audit(json{{"event", "manifest"},
                 {"decision", "unreachable"},
                 {"source", SourceName(config_)},
                 {"reason", why},
                 {"in_force", in_force}});
    }
    if (!current) return text.error();
    return current->serial();
  }
  {
    MutexLock lock(&mu_);
    last_fetch_error_.clear();
    if (current && *text == last_fetched_) return current->serial();
    last_fetched_ = *text;
  }
  auto m = federation::VerifyManifest(*text, authority_, SourceName(config_));
  Status refused;
  if (!m.has_value()) {
    refused = m.error();
  } else if (current && (*m)->serial() < current->serial()) {
    refused = Status::PermissionDenied(SourceName(config_) + ": serial " + std::to_string((*m)->serial()) +
                                       " is older than the manifest in force (" + in_force + ")");
  } else if (current && (*m)->serial() == current->serial()) {
    if ((*m)->body() == current->body()) return current->serial();
    refused =
        Status::PermissionDenied(SourceName(config_) + ": serial " + std::to_string((*m)->serial()) +
                                 " is the serial in force but the content differs (a new manifest needs a "
                                 "higher serial)");
  }
  if (!refused.ok()) {
    PORO_LOG(WARNING) << "manifest refused: " << refused.message() << "; keeping " << in_force;
    Audit(json{{"event", "manifest"},
               {"decision", "refused"},
               {"source", SourceName(config_)},
               {"reason", refused.message()},
               {"in_force", in_force}});
    return refused;
  }
  PORO_RETURN_IF_ERROR(Install(*m, *text, true));
  return (*m)->serial();
}

void Federation::RefreshLoop() {
  auto next_report = std::chrono::steady_clock::now() + std::chrono::seconds(config_.report_s);
  while (true) {
    {
      MutexLock lock(&mu_);
      stop_cv_.WaitFor(&mu_, std::chrono::seconds(config_.refresh_s), [&] { return stopping_.load(); });
      if (stopping_) return;
    }
    if (auto r = Refresh(); !r.has_value()) {
      // Refused or unreadable: already logged and audited; the manifest in force stays.
    }
    accounting_->Flush().IgnoreError();
    received_->Flush().IgnoreError();
    if (config_.report_s > 0 && !config_.manifest_url.empty() &&
        std::chrono::steady_clock::now() >= next_report) {
      ReportAccounting();
      next_report = std::chrono::steady_clock::now() + std::chrono::seconds(config_.report_s);
    }
  }
}

void Federation::ReportAccounting() {
  controlplane::ClientConfig cc = ServiceClient(config_);
  // Both ends account every session; the service adds up all endpoints' reports, so each daemon
  // reports only the sessions it received: every transfer is counted once federation-wide.
  Status s = controlplane::ReportAccounting(cc, received_->Report(config_.endpoint_name));
  if (!s.ok())
    PORO_LOG(WARNING) << "accounting report to " << config_.manifest_url << " failed: " << s.ToString();
}

void Federation::Audit(json record) {
  if (!record.contains("endpoint")) record["endpoint"] = config_.endpoint_name;
  Status s = audit_->Append(std::move(record));
  if (!s.ok()) PORO_LOG(ERROR) << "audit log " << config_.audit_log << ": " << s.ToString();
}

Result<federation::Endpoint> Federation::AdmitPeer(const transport::TlsStream& tls, std::string_view role,
                                                   std::string_view expected_id) {
  auto m = manifest();
  const std::string cn = tls.peer_common_name();
  const std::string pin = tls.peer_cert_sha256();
  json rec{{"event", "handshake"}, {"role", std::string(role)},
           {"peer", cn},           {"peer_address", tls.peer_address()},
           {"peer_pin", pin},      {"serial", m->serial()}};
  Result<const federation::Endpoint*> ep = m->CheckPeer(cn, pin);
  Status refused;
  if (!ep.has_value()) {
    refused = ep.error();
  } else if (!expected_id.empty() && cn != expected_id) {
    refused =
        Status::Unauthenticated("endpoint at " + tls.peer_address() + " presented the certificate of '" + cn +
                                "', expected '" + std::string(expected_id) + "'");
  } else {
    // This endpoint itself suspended, revoked or unlisted: it takes part in no session, from
    // either side, though its peers may not have the new manifest yet.
    refused = m->CheckSelf(self());
  }
  if (!refused.ok()) {
    rec["decision"] = "refused";
    rec["reason"] = refused.message();
    Audit(std::move(rec));
    CountDecision(DaemonMetrics::Outcome::kDenied, DaemonMetrics::Check::kEndpoint);
    return refused;
  }
  CountDecision(DaemonMetrics::Outcome::kAllowed, DaemonMetrics::Check::kEndpoint);
  rec["decision"] = "accepted";
  rec["institution"] = (*ep)->institution;
  Audit(std::move(rec));
  return **ep;
}

void Federation::AuditHandshakeFailure(const std::string& peer_address, std::string_view role,
                                       const Status& s) {
  Audit(json{{"event", "handshake"},
             {"role", std::string(role)},
             {"peer_address", peer_address},
             {"decision", "refused"},
             {"reason", s.message()}});
}

std::shared_ptr<LiveSession> Federation::Register(const std::string& peer, const std::string& pin,
                                                  std::atomic<bool>* cancel) {
  auto s = std::make_shared<LiveSession>();
  s->peer = peer;
  s->peer_pin = pin;
  s->cancel = cancel;
  MutexLock lock(&mu_);
  sessions_.push_back(s);
  return s;
}

void Federation::Unregister(const std::shared_ptr<LiveSession>& s) {
  MutexLock lock(&mu_);
  sessions_.remove(s);
}

void Federation::CutSessions(const federation::Manifest& m) {
  std::vector<std::pair<std::shared_ptr<LiveSession>, std::string>> cut;
  // This endpoint itself suspended or revoked: every session it has ends, from this side too.
  const Status self_ok = m.CheckSelf(config_.endpoint_name);
  {
    MutexLock lock(&mu_);
    for (const auto& s : sessions_) {
      if (!self_ok.ok()) {
        cut.emplace_back(s, std::string(self_ok.message()));
        continue;
      }
      auto ok = m.CheckPeer(s->peer, s->peer_pin);
      if (!ok.has_value()) cut.emplace_back(s, std::string(ok.error().message()));
    }
  }
  for (auto& [s, why] : cut) {
    {
      MutexLock lock(&s->mu);
      if (!s->cut_reason.empty()) continue;
      s->cut_reason = "session cut: " + why;
    }
    s->cancel->store(true);
    PORO_LOG(WARNING) << "cutting the session with " << s->peer << ": " << why;
    Audit(json{{"event", "session"},
               {"decision", "cut"},
               {"peer", s->peer},
               {"reason", why},
               {"serial", m.serial()}});
  }
}

policy::Decision Federation::Decide(const policy::Request& r, const json& extra, bool audit_allowed) {
  auto m = manifest();
  policy::Decision d = m->policy().Evaluate(r);
  if (d.allowed && !audit_allowed) return d;
  json rec = extra;
  rec["event"] = "transfer";
  rec["decision"] = d.allowed ? "allowed" : "denied";
  rec["rule"] = d.rule_id;
  rec["reason"] = d.reason;
  if (d.allowed) rec["protection_required"] = std::string(ProtectionName(d.protection));
  rec["source_institution"] = r.source_institution;
  rec["destination_institution"] = r.destination_institution;
  rec["direction"] = std::string(policy::DirectionName(r.direction));
  rec["source"] = r.source_path;
  rec["destination"] = r.destination_path;
  rec["classification"] = r.classification;
  rec["serial"] = m->serial();
  Audit(std::move(rec));
  return d;
}

policy::Request Federation::RequestFor(const TransferAuth& a) const {
  policy::Request r;
  std::string self_inst = self_institution();
  r.source_institution = a.sending ? self_inst : a.peer.institution;
  r.destination_institution = a.sending ? a.peer.institution : self_inst;
  // push: the source's daemon opened the session; pull: the destination's did.
  r.direction = a.sending == a.initiator ? policy::Direction::kPush : policy::Direction::kPull;
  r.source_path = a.sending ? a.local_path : a.remote_path;
  r.destination_path = a.sending ? a.remote_path : a.local_path;
  r.classification = a.classification.empty() ? std::string(policy::kUnclassified) : a.classification;
  r.now_unix = std::time(nullptr);
  return r;
}

namespace {

// What the initiator's transfer `a` does at the peer, which the peer checks the token's scope for:
// a push creates (or, overwriting, modifies) there, a pull reads.
token::Action ActionAtPeer(const TransferAuth& a) {
  if (!a.sending) return token::Action::kRead;
  return a.overwrite ? token::Action::kModify : token::Action::kCreate;
}

// The manifest's token issuers' keys, for token::VerifyToken.
auto IssuerKeys(const std::shared_ptr<const federation::Manifest>& m) {
  return [m](std::string_view iss) -> const crypto::PKey* {
    const federation::TokenIssuer* i = m->FindIssuer(iss);
    return i ? i->key.get() : nullptr;
  };
}

json TransferRecord(const TransferAuth& a) {
  json rec{{"transfer_id", a.transfer_id},
           {"peer", a.peer.id},
           {"user", a.user},
           {"role", a.initiator ? "initiator" : "responder"}};
  if (!a.query.empty()) rec["query"] = a.query;
  return rec;
}

}  // namespace

Result<Admission> Federation::AdmitResponder(TransferAuth& a) {
  auto m = manifest();
  Status refused;
  if (a.token.empty()) {
    if (config_.require_token) {
      refused = Status::Unauthenticated("the transfer carries no bearer token and endpoint '" + self() +
                                        "' requires one");
    }
  } else {
    auto claims = token::VerifyToken(a.token, IssuerKeys(m), self(), std::time(nullptr));
    if (!claims.has_value()) {
      refused = claims.error();
    } else {
      a.user = claims->subject;
      token::Action act =
          a.sending ? token::Action::kRead : (a.overwrite ? token::Action::kModify : token::Action::kCreate);
      refused = token::CheckScope(*claims, act, a.named_path.empty() ? a.local_path : a.named_path);
    }
  }
  if (!refused.ok()) {
    json rec = TransferRecord(a);
    rec["event"] = "transfer";
    rec["decision"] = "denied";
    rec["reason"] = refused.message();
    rec["local_path"] = a.local_path;
    Audit(std::move(rec));
    CountDecision(DaemonMetrics::Outcome::kDenied, DaemonMetrics::Check::kToken);
    return refused;
  }
  if (!a.token.empty()) CountDecision(DaemonMetrics::Outcome::kAllowed, DaemonMetrics::Check::kToken);
  return AdmitInitiator(a);
}

Status Federation::CheckPolicy(const TransferAuth& a, const policy::Request& r, bool audit,
                               policy::Decision* root) {
  auto decide = [&](const policy::Request& q) {
    return audit ? Decide(q, TransferRecord(a)) : manifest()->policy().Evaluate(q);
  };
  // Only the decisions of real sessions are counted (the dry run's are not).
  auto count = [&](DaemonMetrics::Outcome o, DaemonMetrics::Check c) {
    if (audit) CountDecision(o, c);
  };
  *root = decide(r);
  if (!root->allowed) {
    count(DaemonMetrics::Outcome::kDenied, DaemonMetrics::Check::kPolicy);
    return Status::PermissionDenied("policy of federation '" + manifest()->federation() + "' at " + self() +
                                    ": " + root->reason);
  }
  std::string required_by = root->rule_id;  // the rule whose protection minimum is root->protection
  // A tree sent from here may hold differently classified sub-trees ([[classification]] below its
  // root): each must be allowed too, or the whole transfer is refused.
  if (a.sending) {
    for (const auto& cl : config_.classifications) {
      const std::string& tree = a.local_path;
      if (cl.path == tree || !PathIsUnder(cl.path, tree)) continue;  // strictly below the root
      policy::Request sub = r;
      sub.source_path = cl.path;
      sub.classification = LabelFor(cl.path);
      policy::Decision d = decide(sub);
      if (!d.allowed) {
        count(DaemonMetrics::Outcome::kDenied, DaemonMetrics::Check::kPolicy);
        return Status::PermissionDenied("policy of federation '" + manifest()->federation() + "' at " +
                                        self() + ": " + cl.path + " inside the tree is classified '" +
                                        sub.classification + "': " + d.reason);
      }
      if (d.protection > root->protection) {  // the whole transfer runs at the strictest level
        root->protection = d.protection;
        required_by = d.rule_id;
      }
    }
  }
  if (a.protection_requested && *a.protection_requested < root->protection) {
    Status refused = Status::PermissionDenied(
        "policy of federation '" + manifest()->federation() + "' at " + self() + ": rule '" + required_by +
        "' requires protection '" + std::string(ProtectionName(root->protection)) +
        "', the transfer asked for '" + std::string(ProtectionName(*a.protection_requested)) +
        "' (ask for '" + std::string(ProtectionName(root->protection)) +
        "', or leave the level to the policy)");
    if (audit) {
      json rec = TransferRecord(a);
      rec["event"] = "transfer";
      rec["decision"] = "denied";
      rec["rule"] = required_by;
      rec["reason"] = refused.message();
      rec["protection"] = std::string(ProtectionName(*a.protection_requested));
      rec["protection_required"] = std::string(ProtectionName(root->protection));
      Audit(std::move(rec));
    }
    count(DaemonMetrics::Outcome::kDenied, DaemonMetrics::Check::kProtection);
    return refused;
  }
  count(DaemonMetrics::Outcome::kAllowed, DaemonMetrics::Check::kPolicy);
  return Status::OK();
}

Status Federation::CheckToken(const TransferAuth& a, const std::string& token) const {
  PORO_ASSIGN_OR_RETURN(token::Claims claims,
                        token::VerifyToken(token, IssuerKeys(manifest()), a.peer.id, std::time(nullptr)));
  return token::CheckScope(claims, ActionAtPeer(a), a.remote_path);
}

Result<token::Claims> Federation::VerifyBearer(std::string_view token, std::string_view audience) const {
  return token::VerifyToken(token, IssuerKeys(manifest()), audience, std::time(nullptr));
}

Result<Admission> Federation::AdmitInitiator(const TransferAuth& a) {
  policy::Request r = RequestFor(a);
  Admission adm;
  adm.request = r;
  adm.source_institution = r.source_institution;
  adm.destination_institution = r.destination_institution;
  PORO_RETURN_IF_ERROR(CheckPolicy(a, r, /*audit=*/true, &adm.decision));
  std::string pair = policy::PairLimits::PairKey(r.source_institution, r.destination_institution);
  if (adm.decision.max_concurrent > 0) {
    auto slot = limits_.TryAcquire(pair, adm.decision.max_concurrent, adm.decision.rule_id);
    if (!slot.has_value()) {
      json rec = TransferRecord(a);
      rec["event"] = "transfer";
      rec["decision"] = "deferred";
      rec["rule"] = adm.decision.rule_id;
      rec["reason"] = slot.error().message();
      Audit(std::move(rec));
      CountDecision(DaemonMetrics::Outcome::kDeferred, DaemonMetrics::Check::kConcurrency);
      // Retryable: the initiator waits (with backoff) for a slot instead of failing the transfer.
      return Status::ResourceExhausted(std::string(slot.error().message()) + " at " + self())
          .WithRetryable(true);
    }
    adm.slot = std::move(*slot);
  }
  if (adm.decision.rate_limit_bytes_per_s > 0) {
    adm.bucket = limits_.Bucket(pair, adm.decision.rate_limit_bytes_per_s);
  }
  return adm;
}

Result<std::string> Federation::MintToken(const TransferAuth& a,
                                          const std::vector<std::string>& user_scopes) {
  if (config_.token_issuer.empty()) return std::string();
  const token::Action act = ActionAtPeer(a);
  std::string scope = std::string(token::ActionScope(act)) + ":" + a.remote_path;
  // The user's own grants bound what the daemon mints for it.
  token::Claims grants;
  grants.scopes = user_scopes;
  Status allowed = token::CheckScope(grants, act, a.remote_path);
  // A malformed remote path ("/../x") gets no token: the peer refuses the path itself, and says
  // that it escapes its export root, which is the clearer message.
  if (allowed.code() == Code::kInvalidArgument) return std::string();
  if (!allowed.ok()) {
    return Status::PermissionDenied("user '" + a.user +
                                    "' may not do this: " + std::string(allowed.message()) + " (" +
                                    config_.source_file + " [[users]] scopes)");
  }
  token::Claims c;
  c.issuer = config_.token_issuer;
  c.subject = a.user;
  c.audience = a.peer.id;
  c.id = a.transfer_id;
  c.issued_at = std::time(nullptr);
  c.not_before = c.issued_at;
  c.expires = c.issued_at + config_.token_lifetime_s;
  c.scopes = {scope};
  return token::IssueToken(c, token_key_);
}

Status Federation::AdmitPath(const TransferAuth& a, const Admission& adm, const std::string& remote_root,
                             const std::string& rel, const std::string& entry_path) {
  policy::Request r = adm.request;
  r.source_path = "/" + rel;
  r.destination_path = remote_root == "/" ? "/" + entry_path : remote_root + "/" + entry_path;
  r.classification = LabelFor(r.source_path);
  return AdmitEntry(a, r, "not sent");
}

Status Federation::AdmitReceivedPath(const TransferAuth& a, const Admission& adm, const std::string& rel,
                                     const std::string& entry_path) {
  policy::Request r = adm.request;
  r.source_path = r.source_path == "/" ? "/" + entry_path : r.source_path + "/" + entry_path;
  r.destination_path = "/" + rel;
  return AdmitEntry(a, r, "not received");
}

Status Federation::AdmitEntry(const TransferAuth& a, const policy::Request& r, const char* what) {
  // Allowed entries are not audited one by one (the transfer's own decision is), so the audit
  // record's fields are only gathered for a denial: this runs for every file of a tree, twice.
  if (manifest()->policy().Evaluate(r).allowed) return Status::OK();
  policy::Decision d = Decide(r, TransferRecord(a), /*audit_allowed=*/false);
  if (d.allowed) return Status::OK();  // a newer manifest in between
  CountDecision(DaemonMetrics::Outcome::kDenied, DaemonMetrics::Check::kPath);
  return Status::PermissionDenied(std::string(what) + ": policy of federation '" + manifest()->federation() +
                                  "': " + d.reason);
}

void Federation::Finish(const TransferAuth& a, const Admission& adm, const engine::StatsSnapshot& s,
                        const Status& result) {
  uint64_t files = s.files_done >= s.files_skipped ? s.files_done - s.files_skipped : 0;
  audit::Accounting::Key k{audit::UtcDay(std::chrono::system_clock::now()), adm.source_institution,
                           adm.destination_institution, a.user};
  accounting_->Add(k, s.bytes_sent, files, result.ok() ? 1 : 0);
  if (!a.sending) received_->Add(k, s.bytes_sent, files, result.ok() ? 1 : 0);
  json rec = TransferRecord(a);
  rec["event"] = "transfer_end";
  rec["decision"] = result.ok() ? "completed" : result.code() == Code::kCancelled ? "cancelled" : "failed";
  if (!result.ok()) rec["reason"] = result.message();
  rec["rule"] = adm.decision.rule_id;
  rec["source_institution"] = adm.source_institution;
  rec["destination_institution"] = adm.destination_institution;
  rec["local_path"] = a.local_path;
  rec["protection"] = std::string(ProtectionName(a.protection));
  rec["transport"] = a.transport;
  if (!a.transport_note.empty()) rec["transport_note"] = a.transport_note;
  rec["bytes"] = s.bytes_sent;
  rec["files"] = files;
  rec["chunks_corrupt"] = s.chunks_corrupt;  // copies that failed verification in this session
  Audit(std::move(rec));
}

void Federation::CancelAll() {
  MutexLock lock(&mu_);
  for (const auto& s : sessions_) s->cancel->store(true);
}

}  // namespace pororoca::daemon
