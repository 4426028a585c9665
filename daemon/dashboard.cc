#include "daemon/dashboard.h"

#include <cstdint>
#include <cstdio>
#include <string>

namespace pororoca::daemon {

namespace {

// A strong validator of a file's bytes (FNV-1a 64): the same build serves the same ETag.
std::string ETagOf(std::string_view body) {
  uint64_t h = 1469598103934665603ull;
  for (char c : body) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  char buf[24];
  std::snprintf(buf, sizeof(buf), "\"%016llx\"", static_cast<unsigned long long>(h));
  return buf;
}

void AddSecurityHeaders(api::HttpResponse* r) {
  // The page loads only its own files and talks only to its own origin; nothing may frame it.
  r->headers.emplace_back("Content-Security-Policy",
                          "default-src 'self'; frame-ancestors 'none'; base-uri 'none'");
  r->headers.emplace_back("X-Content-Type-Options", "nosniff");
  r->headers.emplace_back("Referrer-Policy", "no-referrer");
  // Kept by the browser, but checked again (ETag) on every load: a daemon upgrade shows at once.
  r->headers.emplace_back("Cache-Control", "no-cache");
}

}  // namespace

api::HttpResponse DashboardResponse(const api::HttpRequest& req, std::string_view name) {
  if (name.empty()) name = "index.html";
  for (const DashboardFile& f : DashboardFiles()) {
    if (f.name != name) continue;
    api::HttpResponse r;
    const std::string etag = ETagOf(f.body);
    auto inm = req.headers.find("if-none-match");
    if (inm != req.headers.end() && inm->second.find(etag) != std::string::npos) {
      r.status = 304;
      r.content_type.clear();
    } else {
      r.status = 200;
      r.content_type = std::string(f.content_type);
      r.body = std::string(f.body);
    }
    r.headers.emplace_back("ETag", etag);
    AddSecurityHeaders(&r);
    return r;
  }
  api::HttpResponse r =
      api::HttpResponse::Error(404, "NotFound", "no such dashboard file: " + std::string(name));
  AddSecurityHeaders(&r);
  return r;
}

void RegisterDashboard(api::HttpServer& server) {
  server.Route("GET", "/dashboard", [](const api::HttpRequest& req) { return DashboardResponse(req, ""); });
  server.Route("GET", "/dashboard/{file}",
               [](const api::HttpRequest& req) { return DashboardResponse(req, req.params.at("file")); });
}

}  // namespace pororoca::daemon
