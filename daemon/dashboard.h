// The operator dashboard (docs/operations.md, "Dashboard"): a read-only web page at GET /dashboard
// and its files at GET /dashboard/{file}, on both doors of the API (the unix socket and HTTPS).
//
// The files are the ones in daemon/dashboard/, compiled into the daemon at build time
// (daemon/embed_dashboard.cmake), so nothing is read from disk and nothing is fetched from
// elsewhere at run time. They carry no data, so they are served to anyone who reaches the door,
// without a token: the page's script reads the JSON routes (/v1/transfers, /v1/jobs, ...) with
// the caller's own access (a bearer token over HTTPS, the socket's uid on the socket, or the key
// of `pororoca dashboard`), and those routes apply their usual rules.
//
// Every answer carries Content-Security-Policy (default-src 'self': no inline script, no other
// origin), X-Content-Type-Options: nosniff, Referrer-Policy: no-referrer, Cache-Control: no-cache
// and an ETag (If-None-Match is answered 304).
//
// Thread-safety: the files are immutable; the handlers may run concurrently.
#pragma once

#include <string_view>
#include <vector>

#include "api/http.h"

namespace pororoca::daemon {

struct DashboardFile {
  std::string_view name;  // "index.html", "app.js", ...
  std::string_view content_type;
  std::string_view body;
};

// Every file of daemon/dashboard/, sorted by name (generated at build time).
const std::vector<DashboardFile>& DashboardFiles();

// GET /dashboard (index.html) and GET /dashboard/{file}; an unknown file is 404.
void RegisterDashboard(api::HttpServer& server);

// The answer for `name` ("" is index.html) given the request's If-None-Match.
api::HttpResponse DashboardResponse(const api::HttpRequest& req, std::string_view name);

}  // namespace pororoca::daemon
