// What one daemon knows and enforces of the federation: the verified manifest (kept fresh from its
// source, the last good copy kept on disk), this endpoint's place in it, the TLS contexts built on
// its trust anchors, the homologated-endpoint check of every peer, policy decisions, the sessions
// in flight (cut when their peer stops being active), the audit log and accounting.
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <atomic>
#include <functional>
#include <list>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "audit/accounting.h"
#include "audit/audit_log.h"
#include "base/mutex.h"
#include "crypto/keys.h"
#include "daemon/config.h"
#include "daemon/metrics.h"
#include "engine/stats.h"
#include "federation/manifest.h"
#include "policy/policy.h"
#include "token/token.h"
#include "transport/tls.h"

namespace pororoca::daemon {

// A session with a peer that the federation may cut: registered while it runs.
struct LiveSession {
  std::string peer;      // endpoint id
  std::string peer_pin;  // the key pin it presented
  std::atomic<bool>* cancel = nullptr;
  Mutex mu;
  std::string cut_reason PORO_GUARDED_BY(mu);  // set when the session was cut
  Status CutStatus();
};

// One transfer as the federation sees it from this daemon's side.
struct TransferAuth {
  std::string transfer_id;
  federation::Endpoint peer;
  bool sending = true;     // this side is the source
  bool initiator = true;   // this side opened the session
  std::string local_path;  // absolute inside this export ("/datasets/x")
  // The path as the request named it, when that is a symbolic link local_path is where it leads:
  // the token's scopes are checked against the name asked for, the policy and labels against the
  // data read. Empty: the same as local_path.
  std::string named_path;
  std::string remote_path;     // the peer's path, as the initiator named it or the peer reported it
  std::string classification;  // the data's label (from the source side's [[classification]])
  std::string token;           // the bearer token the initiator presented
  bool overwrite = false;      // the receiver may replace existing files
  std::string user;            // federated identity (token subject, or the local user's mapping)
  // The level the user asked for (none: whatever the policies require); a request below what this
  // end's policy requires is refused, never raised.
  std::optional<Protection> protection_requested;
  Protection protection = Protection::kClear;  // in force, once the session has agreed on it
  std::string transport = "tcp";               // the data transport the session runs on
  std::string transport_note;                  // why not this end's first choice ("" if it is)
  std::string query;  // not a transfer: the question ("list", "checksum") asked about the path
};

// What an allowed transfer holds while it runs: the concurrency slot and the pair's rate bucket.
struct Admission {
  policy::Request request;  // the transfer's own request (its root paths and label)
  policy::Decision decision;
  policy::PairLimits::Slot slot;
  std::shared_ptr<policy::TokenBucket> bucket;  // null: no rate cap
  std::string source_institution, destination_institution;
};

class Federation {
 public:
  static Result<std::unique_ptr<Federation>> Open(const Config& config);
  // What Open() would find, without writing anything (no state file, no audit record, no
  // anchors file): the keys load, the audit log could be opened, the accounting files parse, the
  // manifest source and the last good copy verify, and the TLS files fit the newer manifest's
  // anchors. Returns a line for the operator ("manifest serial 6 from ...").
  static Result<std::string> Check(const Config& config);
  ~Federation();

  // Starts the refresh thread (and the accounting reporter when a service URL is configured).
  void Start();
  void Stop();

  std::shared_ptr<const federation::Manifest> manifest() const;
  std::shared_ptr<transport::TlsContext> tls_server() const;
  std::shared_ptr<transport::TlsContext> tls_client() const;
  const std::string& self() const { return config_.endpoint_name; }
  // This endpoint's institution in the current manifest ("" if it is not listed).
  std::string self_institution() const;

  // The homologated-endpoint check of a peer after its TLS handshake (`role` is "accept" for a
  // peer that connected to us, "connect" for one we connected to). Writes the audit record.
  Result<federation::Endpoint> AdmitPeer(const transport::TlsStream& tls, std::string_view role,
                                         std::string_view expected_id = {});
  // Audits a handshake that failed before any certificate could be checked (e.g. another CA).
  void AuditHandshakeFailure(const std::string& peer_address, std::string_view role, const Status& s);

  // Registers a session with `peer` so a manifest that suspends or revokes it cuts the session
  // (sets *cancel and records the reason). The session is unregistered when the handle dies.
  std::shared_ptr<LiveSession> Register(const std::string& peer, const std::string& pin,
                                        std::atomic<bool>* cancel);
  void Unregister(const std::shared_ptr<LiveSession>& s);

  // Policy decision, audited (an allow only if `audit_allowed`). `extra` adds fields to the audit
  // record (user, transfer id, ...).
  policy::Decision Decide(const policy::Request& r, const nlohmann::json& extra, bool audit_allowed = true);
  // The policy request for a transfer as seen from this side.
  policy::Request RequestFor(const TransferAuth& a) const;

  // Authorises a transfer at the responder: the bearer token (signature, expiry, audience = this
  // endpoint, scope for the path and action; its subject becomes a.user), then the policy, the
  // concurrency cap and the rate cap. Refusals are audited and name their cause.
  Result<Admission> AdmitResponder(TransferAuth& a);
  // The same at the initiator (its own policy evaluation; the token is the peer's business).
  Result<Admission> AdmitInitiator(const TransferAuth& a);
  // The policy's verdict on a transfer: its root (request `r`), then every classified sub-tree of
  // a tree sent from here. OK or the refusal a transfer gets ("policy of federation 'f' at x: ...");
  // *root gets the root's decision. `audit`: the decisions go to the audit log, as for a transfer;
  // the dry run (policy check) passes false.
  Status CheckPolicy(const TransferAuth& a, const policy::Request& r, bool audit, policy::Decision* root);
  // The check the peer makes of `token` for the initiator's transfer `a` (signature, expiry,
  // audience = the peer, the scope a minted token would carry), made here for the dry run. OK, or
  // the peer's refusal.
  Status CheckToken(const TransferAuth& a, const std::string& token) const;
  // A bearer token checked against the manifest's issuers for `audience` (signature, times,
  // audience): the HTTPS API's callers (audience = this endpoint), and the token a remote caller
  // gives for the peer of its transfer.
  Result<token::Claims> VerifyBearer(std::string_view token, std::string_view audience) const;
  // Mints a token for a local user's transfer when [tokens] is configured: audience = the peer,
  // subject = the user's identity, one scope for exactly this transfer, checked against the user's
  // [[users]] scopes. Empty when this daemon mints no tokens.
  Result<std::string> MintToken(const TransferAuth& a, const std::vector<std::string>& user_scopes);
  // The policy's verdict on one path inside a tree this side sends (engine DataPath::admit_path):
  // the admitted transfer's request with this path, the remote path below the transfer's remote
  // root and the path's own label. Denials are audited.
  Status AdmitPath(const TransferAuth& a, const Admission& adm, const std::string& remote_root,
                   const std::string& rel, const std::string& entry_path);
  // The same verdict at the receiving end, for one entry below the root of a tree this side
  // receives (engine DataPath::admit_path): the source path below the transfer's source root, the
  // local destination `rel` (root-relative), and the label the sender announced for the transfer
  // (this end cannot label the sender's files). So the policy holds at both ends for every file,
  // not only for the transfer's root, whatever the sending daemon does. Denials are audited.
  Status AdmitReceivedPath(const TransferAuth& a, const Admission& adm, const std::string& rel,
                           const std::string& entry_path);
  // Accounts and audits the end of a session.
  void Finish(const TransferAuth& a, const Admission& adm, const engine::StatsSnapshot& s,
              const Status& result);
  // Sets the cancel flag of every registered session (shutdown).
  void CancelAll();
  std::string LabelFor(std::string_view path) const { return classifier_->LabelFor(path); }
  policy::PairLimits& limits() { return limits_; }

  // Checks the manifest source now; installs a newer valid manifest. Returns the serial in force.
  Result<uint64_t> Refresh();

  // The daemon's metrics: decisions are counted there from now on (null: none counted). Set before
  // sessions start.
  void set_metrics(DaemonMetrics* m) { metrics_ = m; }
  // Counts an admission decision (the HTTPS API's refusals are counted by the API).
  void CountDecision(DaemonMetrics::Outcome o, DaemonMetrics::Check c) const {
    if (metrics_ != nullptr) metrics_->Decision(o, c);
  }

  audit::AuditLog& audit() { return *audit_; }
  audit::Accounting& accounting() { return *accounting_; }
  void Audit(nlohmann::json record);

 private:
  explicit Federation(const Config& config);
  Result<std::string> FetchSource() const;
  Status Install(std::shared_ptr<const federation::Manifest> m, const std::string& text, bool persist);
  Status BuildTls(const federation::Manifest& m);
  void CutSessions(const federation::Manifest& m);
  void RefreshLoop();
  void ReportAccounting();
  // AdmitPath, AdmitReceivedPath: the decision on one entry's request; a denial says `what` ("not sent").
  Status AdmitEntry(const TransferAuth& a, const policy::Request& r, const char* what);

  const Config& config_;
  crypto::PKey authority_;
  crypto::PKey token_key_;  // [tokens] key, loaded once; empty when this daemon mints no tokens
  std::unique_ptr<audit::AuditLog> audit_;
  std::unique_ptr<audit::Accounting> accounting_;
  // The sessions this daemon received, the part of accounting_ it reports to the control-plane
  // service: the service adds up every endpoint's report, so each transfer is reported once, by
  // its receiving end (also inside one institution, where both ends share the destination).
  std::unique_ptr<audit::Accounting> received_;
  std::unique_ptr<policy::Classifier> classifier_;
  policy::PairLimits limits_;
  DaemonMetrics* metrics_ = nullptr;

  Mutex refresh_mu_ PORO_ACQUIRED_BEFORE(mu_);  // serialises Refresh(); taken before mu_
  mutable Mutex mu_;
  std::shared_ptr<const federation::Manifest> manifest_ PORO_GUARDED_BY(mu_);
  std::string anchors_pem_ PORO_GUARDED_BY(mu_);
  std::shared_ptr<transport::TlsContext> tls_server_ PORO_GUARDED_BY(mu_), tls_client_ PORO_GUARDED_BY(mu_);
  std::string last_fetched_ PORO_GUARDED_BY(mu_);      // the source's last text
  std::string last_fetch_error_ PORO_GUARDED_BY(mu_);  // why the source was unreachable
  std::list<std::shared_ptr<LiveSession>> sessions_ PORO_GUARDED_BY(mu_);

  std::atomic<bool> stopping_{false};
  CondVar stop_cv_;
  std::thread refresh_thread_;
};

}  // namespace pororoca::daemon
