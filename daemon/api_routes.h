// The daemon's HTTP/JSON API (docs/api.md): health, federation, endpoints, policy dry run,
// accounting, and the transfers of the TransferManager (submit, list, get with long poll,
// cancel, events). Requests are validated here, before anything starts; a bad one gets a 4xx with
// a JSON error.
//
// Two doors, one set of routes: the unix socket (the caller is its uid, SO_PEERCRED) and HTTPS
// ([api] listen: the caller is the subject of a bearer token from one of the manifest's issuers,
// audience this endpoint, with a transfer.read / transfer.submit / transfer.cancel scope for the
// route; refusals are 401/403 and audited).
//
// Thread-safety: handlers run on the HTTP server's connection threads, concurrently.
#pragma once

#include <atomic>
#include <optional>

#include "api/http.h"
#include "daemon/config.h"
#include "daemon/federation.h"
#include "daemon/session.h"
#include "daemon/staging.h"
#include "daemon/transfer_manager.h"
#include "engine/export_root.h"

namespace pororoca::daemon {

class ApiRoutes {
 public:
  struct Deps {
    const Config* config = nullptr;
    const engine::ExportRoot* root = nullptr;
    size_t buffer_size = 0;  // the pool's buffers: the largest chunk this daemon takes
    Federation* fed = nullptr;
    TransferManager* transfers = nullptr;
    SessionRunner* sessions = nullptr;  // the dry run of a transfer (policy check); queries (ls, checksum)
    const std::atomic<bool>* stopping = nullptr;  // the daemon stops: a long checksum here ends
    StagingCache* staging = nullptr;              // [staging] (null: not configured)
  };
  explicit ApiRoutes(Deps d) : d_(d) {}

  // Who asks, and whose transfers it may see and cancel.
  struct Caller {
    bool remote = false;                 // HTTPS, authenticated by a bearer token
    uid_t uid = static_cast<uid_t>(-1);  // unix socket: the peer's uid
    std::string identity;   // federated identity: the token's subject, or the uid's [[users]] one
    bool sees_all = false;  // an operator: root, the daemon's user, operator = true, [api] operators
    token::Claims claims;   // remote: the verified token
    // Whether a transfer owned by (uid, user) is visible: a local caller's by uid, a remote one's
    // by identity.
    bool Sees(int64_t owner_uid, const std::string& owner_user) const;
  };
  // What a route needs of an HTTPS caller: a scope, or to be an operator. The unix socket's
  // callers pass as before (the socket's mode is the door).
  enum class Need { kRead, kSubmit, kCancel, kOperator };

  void RegisterOn(api::HttpServer& server);
  // The caller of a request; for HTTPS, the token's check for `need` (nullopt and *refusal set:
  // 401 without a valid token, 403 without the scope; both audited).
  std::optional<Caller> Identify(const api::HttpRequest& req, Need need, api::HttpResponse* refusal) const;
  // The caller of a request on the unix socket.
  Caller LocalCaller(const api::HttpRequest& req) const;

  api::HttpResponse Health() const;
  api::HttpResponse Endpoints() const;
  api::HttpResponse FederationInfo() const;
  api::HttpResponse RefreshFederation() const;
  api::HttpResponse Accounting(const api::HttpRequest& req) const;
  api::HttpResponse PolicyCheck(const api::HttpRequest& req, const Caller& c) const;
  api::HttpResponse Submit(const api::HttpRequest& req, const Caller& c) const;
  api::HttpResponse List(const api::HttpRequest& req, const Caller& c) const;
  api::HttpResponse Get(const api::HttpRequest& req, const Caller& c) const;
  api::HttpResponse Cancel(const api::HttpRequest& req, const Caller& c) const;
  // POST /v1/ls and POST /v1/checksum: a path's entries, a file's digest (this daemon's export, or
  // a peer's through a query session).
  api::HttpResponse PathQuery(const api::HttpRequest& req, const Caller& c, const char* op) const;
  // GET /v1/transfers/{id}/files: per-file results, a page at a time.
  api::HttpResponse Files(const api::HttpRequest& req, const Caller& c) const;
  // Bulk jobs: POST /v1/jobs, GET /v1/jobs[/{id}[/files]], POST /v1/jobs/{id}/cancel.
  api::HttpResponse SubmitJob(const api::HttpRequest& req, const Caller& c) const;
  api::HttpResponse ListJobs(const api::HttpRequest& req, const Caller& c) const;
  api::HttpResponse GetJob(const api::HttpRequest& req, const Caller& c) const;
  api::HttpResponse CancelJob(const api::HttpRequest& req, const Caller& c) const;
  api::HttpResponse JobFiles(const api::HttpRequest& req, const Caller& c) const;

  // The staging cache: POST /v1/stage, GET /v1/stage/{id}, POST /v1/stage/release, GET /v1/staging.
  api::HttpResponse Stage(const api::HttpRequest& req, const Caller& c) const;
  api::HttpResponse GetStaged(const api::HttpRequest& req, const Caller& c) const;
  api::HttpResponse Release(const api::HttpRequest& req, const Caller& c) const;
  api::HttpResponse Staging(const api::HttpRequest& req, const Caller& c) const;

  // GET /v1/events: server-sent events of the transfers the caller may see.
  api::HttpResponse Events(const api::HttpRequest& req, const Caller& c) const;

 private:
  // A submission's body made into a transfer, after the checks answered at once; the dry run
  // (PolicyCheck) and Submit share it. Refused: `transfer` is null, `response` is the answer and
  // `check` names the admission check that refused ("endpoint", "identity", "export_root",
  // "source", "destination"), or is empty for a malformed request.
  struct Prepared {
    Prepared(api::HttpResponse r) : response(std::move(r)) {}          // NOLINT: a malformed request
    Prepared(std::shared_ptr<Transfer> t) : transfer(std::move(t)) {}  // NOLINT
    Prepared(const char* c, Status s, api::HttpResponse r)
        : response(std::move(r)), check(c), refusal(std::move(s)) {}
    std::shared_ptr<Transfer> transfer;
    api::HttpResponse response;
    const char* check = "";
    Status refusal;
  };
  // `into_cache`: the staging cache's own pull, the only transfer that may write in [staging] dir.
  Prepared PrepareTransfer(const nlohmann::json& request, const Caller& c, bool into_cache = false) const;
  // Caller::Sees as a filter for the TransferManager (null: all).
  static TransferManager::Visible VisibleTo(const Caller& c);
  // A token an HTTPS caller gives for a peer: valid there (audience `endpoint`) and its own
  // (the same subject), so the identity at both ends is the caller's.
  Status CheckPeerToken(const Caller& c, const std::string& token, const std::string& endpoint) const;
  // One page of per-file results of `transfer_ids` (a transfer's, or a job's), answered as `id`'s.
  api::HttpResponse FilesPage(const api::HttpRequest& req, const std::string& id,
                              const std::vector<std::string>& transfer_ids) const;
  // Audits an HTTPS request: a refusal, or an accepted submit or cancel.
  void AuditRemote(const api::HttpRequest& req, const Caller* c, const char* decision, int status,
                   std::string_view reason) const;

  Deps d_;
};

// The HTTP status for a Status code (400, 403, 404, 409, 503, else 500).
int HttpStatusFor(Code c);
api::HttpResponse ErrorResponse(const Status& s);

}  // namespace pororoca::daemon
