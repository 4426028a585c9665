// The daemon's HTTP/JSON API (docs/api.md): health, federation, endpoints, policy dry run,
// accounting, and the transfers of the TransferManager (submit, list, get with long poll,
// cancel). Requests are validated here, before anything starts; a bad one gets a 4xx with a JSON
// error.
//
// Thread-safety: handlers run on the HTTP server's connection threads, concurrently.
#pragma once

#include <atomic>
#include <optional>

#include "api/http.h"
#include "daemon/config.h"
#include "daemon/federation.h"
#include "daemon/session.h"
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
    const SessionRunner* sessions = nullptr;  // for the dry run of a transfer (policy check)
  };
  explicit ApiRoutes(Deps d) : d_(d) {}

  void RegisterOn(api::HttpServer& server);

  api::HttpResponse Health() const;
  api::HttpResponse Endpoints() const;
  api::HttpResponse FederationInfo() const;
  api::HttpResponse RefreshFederation() const;
  api::HttpResponse Accounting(const api::HttpRequest& req) const;
  api::HttpResponse PolicyCheck(const api::HttpRequest& req) const;
  api::HttpResponse Submit(const api::HttpRequest& req) const;
  api::HttpResponse List(const api::HttpRequest& req) const;
  api::HttpResponse Get(const api::HttpRequest& req) const;
  api::HttpResponse Cancel(const api::HttpRequest& req) const;
  // GET /v1/events: server-sent events of the transfers the caller may see.
  api::HttpResponse Events(const api::HttpRequest& req) const;

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
  Prepared PrepareTransfer(const api::HttpRequest& req) const;
  // Whose transfers the caller may see and cancel: everyone's for an operator (root, the daemon's
  // own user, a [[users]] entry with operator = true: nullopt), else its own uid's.
  std::optional<uid_t> OwnerScope(const api::HttpRequest& req) const;
  // OwnerScope as a filter for the TransferManager (null: all).
  TransferManager::Visible VisibleTo(const api::HttpRequest& req) const;

  Deps d_;
};

// The HTTP status for a Status code (400, 403, 404, 409, 503, else 500).
int HttpStatusFor(Code c);
api::HttpResponse ErrorResponse(const Status& s);

}  // namespace pororoca::daemon
