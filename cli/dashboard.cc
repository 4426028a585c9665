// `pororoca dashboard`: the operator dashboard in a browser (docs/operations.md, "Dashboard").
//
// The daemon serves the page on its unix socket and its HTTPS port, but a browser reaches
// neither: it cannot open a unix socket, and it cannot talk TLS to the HTTPS port, whose
// certificate has an Ed25519 key (no browser accepts Ed25519 in TLS). So this command runs a small
// HTTP server on a loopback port that forwards to the daemon, through the socket (or through a
// DTN's HTTPS API with --api, the CLI's TLS client checking the federation CA and the endpoint's
// name, and --api-token as the caller):
//
//  - only GET, and only the dashboard's files and the read-only routes it reads (kReadRoutes):
//    anything else is answered 404/405 here and never reaches the daemon;
//  - loopback only: plain HTTP must not leave the host (from a workstation, use ssh -L);
//  - an access key, random per run and printed once: the data routes need it as
//    "Authorization: Bearer KEY" (the page asks for it and keeps it in the tab's sessionStorage),
//    since every local user can connect to a loopback port and this helper calls the daemon as the
//    user who runs it. The page's files carry no data and need no key;
//  - the Host header must name this listener (a web page elsewhere cannot rebind a name to
//    127.0.0.1 and read the answers).
#include <sys/random.h>

#include <boost/program_options.hpp>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "api/http.h"
#include "cli/cli.h"
#include "transport/tcp.h"

namespace po = boost::program_options;

namespace pororoca::cli {

namespace {

// The GET routes forwarded with the key: what the page reads (docs/api.md).
constexpr const char* kReadRoutes[] = {
    "/v1/healthz",
    "/v1/endpoints",
    "/v1/federation",
    "/v1/accounting",
    "/v1/transfers",
    "/v1/transfers/{id}",
    "/v1/transfers/{id}/files",
    "/v1/jobs",
    "/v1/jobs/{id}",
    "/v1/jobs/{id}/files",
    "/v1/staging",
    "/v1/stage/{id}",
};
// The headers of the daemon's answer passed on to the browser (the rest are this server's own).
constexpr const char* kPassedHeaders[] = {"etag",
                                          "cache-control",
                                          "content-security-policy",
                                          "referrer-policy",
                                          "www-authenticate",
                                          "x-content-type-options"};

bool IsLoopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

// Equal without an early exit on the first difference (the key is a secret).
bool SameSecret(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

Result<std::string> RandomKey() {
  unsigned char raw[16];
  if (::getrandom(raw, sizeof(raw), 0) != static_cast<ssize_t>(sizeof(raw))) {
    return Status::IoError("getrandom", errno);
  }
  std::string hex;
  for (unsigned char b : raw) {
    char buf[3];
    std::snprintf(buf, sizeof(buf), "%02x", b);
    hex += buf;
  }
  return hex;
}

// Connections to the daemon, reused across requests (HttpClient is one owner at a time).
class UpstreamPool {
 public:
  explicit UpstreamPool(Upstream up) : up_(std::move(up)) {}

  Result<std::unique_ptr<api::HttpClient>> Take() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!idle_.empty()) {
        auto c = std::move(idle_.back());
        idle_.pop_back();
        return c;
      }
    }
    auto c = remote() ? api::HttpClient::ConnectTls(up_.api_url, up_.ca, up_.api_endpoint)
                      : api::HttpClient::Connect(up_.socket);
    if (!c.has_value()) return std::move(c).error();
    if (remote()) (*c)->set_bearer(up_.api_token);
    return std::move(*c);
  }
  void Give(std::unique_ptr<api::HttpClient> c) {
    std::lock_guard<std::mutex> lock(mu_);
    if (idle_.size() < 8) idle_.push_back(std::move(c));
  }
  bool remote() const { return !up_.api_url.empty(); }
  std::string where() const {
    return remote() ? "pororocad at " + up_.api_url : "pororocad at " + up_.socket;
  }

 private:
  const Upstream up_;
  std::mutex mu_;
  std::vector<std::unique_ptr<api::HttpClient>> idle_;
};

api::HttpResponse Forward(UpstreamPool& pool, const api::HttpRequest& req) {
  auto c = pool.Take();
  if (!c.has_value()) return api::HttpResponse::Error(502, "Unavailable", c.error().message());
  // Long polls (?wait=, at most 60 s) pass through.
  auto r = (*c)->Request("GET", req.target, "", std::chrono::seconds(75));
  if (!r.has_value()) return api::HttpResponse::Error(502, "Unavailable", r.error().message());
  pool.Give(std::move(*c));
  api::HttpResponse out;
  out.status = r->status;
  out.body = std::move(r->body);
  out.content_type.clear();
  bool nosniff = false;
  for (const auto& [name, value] : r->headers) {
    if (name == "content-type") out.content_type = value;
    for (const char* passed : kPassedHeaders) {
      if (name == passed) out.headers.emplace_back(name, value);
    }
    nosniff = nosniff || name == "x-content-type-options";
  }
  if (!nosniff) {
    out.headers.emplace_back("X-Content-Type-Options", "nosniff");
    out.headers.emplace_back("Referrer-Policy", "no-referrer");
    out.headers.emplace_back("Cache-Control", "no-store");
  }
  return out;
}

}  // namespace

int CmdDashboard(const Upstream& upstream, const std::vector<std::string>& args) {
  po::options_description desc(
      "Usage: pororoca dashboard [--listen 127.0.0.1:8780]\n"
      "  Serves the daemon's dashboard to a browser on this host: a loopback HTTP server that forwards\n"
      "  the page and the read-only GET routes it reads to the daemon's socket (or to the HTTPS API), and\n"
      "  nothing else. Prints the page's address and an access key to paste into the page; runs until\n"
      "  interrupted. From another host: ssh -L 8780:127.0.0.1:8780 DTN, then open the same address.\n"
      "Options");
  desc.add_options()("listen", po::value<std::string>()->default_value("127.0.0.1:8780"),
                     "loopback HOST:PORT to listen on (port 0: any free port)")("help,h", "this help");
  po::variables_map vm;
  po::positional_options_description none;  // no arguments: a word is a usage error
  po::store(po::command_line_parser(args).options(desc).positional(none).run(), vm);
  po::notify(vm);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return kExitOk;
  }
  auto hp = transport::ParseHostPort(vm["listen"].as<std::string>());
  if (!hp.has_value()) {
    std::cerr << "pororoca: --listen: " << hp.error().message() << "\n";
    return kExitUsage;
  }
  if (!IsLoopback(hp->first)) {
    std::cerr << "pororoca: --listen " << hp->first
              << " is not a loopback address: the dashboard helper speaks plain HTTP and stays on this host "
                 "(reach it from elsewhere with ssh -L)\n";
    return kExitUsage;
  }
  if (!upstream.api_url.empty() && upstream.api_token.empty()) {
    std::cerr << "pororoca: --api " << upstream.api_url
              << " needs a bearer token with transfer.read (--api-token TOKEN|@FILE|-, or $PORO_API_TOKEN)\n";
    return kExitUsage;
  }
  UpstreamPool pool(upstream);
  {
    // The daemon answers before anything is promised to the operator.
    auto c = pool.Take();
    if (!c.has_value()) {
      std::cerr << "pororoca: " << c.error().message() << "\n";
      return c.error().code() == Code::kUnauthenticated ? kExitDenied : kExitNoDaemon;
    }
    auto r = (*c)->Request("GET", "/dashboard");
    if (!r.has_value() || r->status != 200) {
      std::cerr << "pororoca: " << pool.where() << " does not serve the dashboard: "
                << (r.has_value() ? "HTTP " + std::to_string(r->status) : r.error().message()) << "\n";
      return kExitNoDaemon;
    }
    pool.Give(std::move(*c));
  }
  auto key = RandomKey();
  if (!key.has_value()) {
    std::cerr << "pororoca: " << key.error().message() << "\n";
    return kExitFailed;
  }

  // The signals are waited for below; the server's threads must not take them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  auto server = api::HttpServer::ListenTcp(hp->first, hp->second, "pororoca dashboard");
  if (!server.has_value()) {
    std::cerr << "pororoca: " << server.error().message() << "\n";
    return kExitUsage;
  }
  const uint16_t port = (*server)->port();
  std::set<std::string> hosts = {
      transport::FormatHostPort(hp->first, port), transport::FormatHostPort("127.0.0.1", port),
      transport::FormatHostPort("localhost", port), transport::FormatHostPort("::1", port)};
  const std::string url = "http://" + transport::FormatHostPort(hp->first, port) + "/dashboard";
  auto host_ok = [hosts, url](const api::HttpRequest& req, api::HttpResponse* refusal) {
    auto h = req.headers.find("host");
    if (h != req.headers.end() && hosts.count(h->second) == 1) return true;
    *refusal = api::HttpResponse::Error(421, "Misdirected", "this helper answers only at " + url);
    return false;
  };
  const std::string want = "Bearer " + *key;
  for (const char* file_route : {"/dashboard", "/dashboard/{file}"}) {
    (*server)->Route("GET", file_route, [&pool, host_ok](const api::HttpRequest& req) {
      api::HttpResponse refusal;
      if (!host_ok(req, &refusal)) return refusal;
      return Forward(pool, req);
    });
  }
  for (const char* route : kReadRoutes) {
    (*server)->Route("GET", route, [&pool, host_ok, want](const api::HttpRequest& req) {
      api::HttpResponse refusal;
      if (!host_ok(req, &refusal)) return refusal;
      auto auth = req.headers.find("authorization");
      if (auth == req.headers.end() || !SameSecret(auth->second, want)) {
        api::HttpResponse r = api::HttpResponse::Error(
            401, "Unauthenticated", "paste the access key that `pororoca dashboard` printed into the page");
        r.headers.emplace_back("WWW-Authenticate", "Bearer");
        return r;
      }
      return Forward(pool, req);
    });
  }
  (*server)->Start();
  std::cout << "pororoca dashboard: " << url << "\n"
            << "  forwards GET of the page and of the read-only routes to " << pool.where()
            << "; Ctrl-C stops it\n"
            << "access key: " << *key << std::endl;
  int sig = 0;
  sigwait(&stop_signals, &sig);
  (*server)->Stop();
  return kExitOk;
}

}  // namespace pororoca::cli
