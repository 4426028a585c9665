#include "api/http.h"

#include <doctest/doctest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "base/log.h"
#include "pki/pki.h"
#include "transport/tcp.h"
#include "transport/tls.h"

namespace pororoca::api {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/poro_api_test.XXXXXX";
    PORO_CHECK(::mkdtemp(tmpl) != nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string Sock(const std::string& name = "api.sock") const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// A server with a few routes, already started.
std::unique_ptr<HttpServer> StartServer(const std::string& path,
                                        const std::function<void(HttpServer&)>& extra = {}) {
  auto srv = HttpServer::Listen(path, 0600);
  REQUIRE_MESSAGE(srv.ok(), srv.status().ToString());
  HttpServer& s = **srv;
  s.Route("GET", "/v1/ping", [](const HttpRequest&) { return HttpResponse::Json(200, {{"ok", true}}); });
  s.Route("GET", "/v1/transfers/{id}", [](const HttpRequest& r) {
    return HttpResponse::Json(200, {{"id", r.params.at("id")}, {"path", r.path}, {"query", r.query}});
  });
  s.Route("DELETE", "/v1/transfers/{id}", [](const HttpRequest& r) {
    return HttpResponse::Json(200, {{"deleted", r.params.at("id")}});
  });
  s.Route("GET", "/v1/transfers/stats", [](const HttpRequest&) {
    return HttpResponse::Json(200, {{"stats", true}});
  });
  s.Route("GET", "/v1/transfers/{id}/files/{name}", [](const HttpRequest& r) {
    return HttpResponse::Json(200, {{"id", r.params.at("id")}, {"name", r.params.at("name")}});
  });
  s.Route("POST", "/v1/echo", [](const HttpRequest& r) {
    json in = json::parse(r.body);  // throws on bad JSON: the server answers 400
    return HttpResponse::Json(200, {{"got", in.at("value")}});
  });
  s.Route("GET", "/v1/whoami", [](const HttpRequest& r) {
    return HttpResponse::Json(200, {{"pid", r.peer.pid}, {"uid", r.peer.uid}, {"gid", r.peer.gid}});
  });
  s.Route("GET", "/v1/thread", [](const HttpRequest&) {
    std::ostringstream os;
    os << std::this_thread::get_id();
    return HttpResponse::Json(200, {{"thread", os.str()}});
  });
  s.Route("GET", "/v1/boom", [](const HttpRequest&) -> HttpResponse { throw std::runtime_error("kaboom"); });
  if (extra) extra(s);
  s.Start();
  return std::move(srv).value();
}

std::unique_ptr<HttpClient> MustConnect(const std::string& path) {
  auto c = HttpClient::Connect(path);
  REQUIRE_MESSAGE(c.ok(), c.status().ToString());
  return std::move(c).value();
}

json Body(const HttpResponse& r) { return json::parse(r.body); }

// Sends raw bytes and reads until the server closes or 2 s pass.
std::string RawExchange(const std::string& path, std::string_view data, bool* closed = nullptr) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  REQUIRE(::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0);
  ssize_t sent = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
  CHECK(sent == static_cast<ssize_t>(data.size()));
  std::string out;
  bool eof = false;
  auto until = std::chrono::steady_clock::now() + 2s;
  while (std::chrono::steady_clock::now() < until) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    char buf[4096];
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) {
      eof = true;
      break;
    }
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  if (closed) *closed = eof;
  return out;
}

TEST_SUITE("api.http") {
  TEST_CASE("routes match literal and {param} segments, decoding path and query") {
    TempDir dir;
    auto srv = StartServer(dir.Sock());
    auto cli = MustConnect(dir.Sock());

    auto r = cli->Request("GET", "/v1/transfers/job%2F42?limit=10&q=a+b%26c&flag");
    REQUIRE(r.ok());
    CHECK(r->status == 200);
    CHECK(r->content_type == "application/json");
    json b = Body(*r);
    CHECK(b["id"] == "job/42");  // an encoded slash stays inside one segment
    CHECK(b["path"] == "/v1/transfers/job/42");
    CHECK(b["query"]["limit"] == "10");
    CHECK(b["query"]["q"] == "a b&c");
    CHECK(b["query"]["flag"] == "");

    r = cli->Request("GET", "/v1/transfers/stats");
    REQUIRE(r.ok());
    CHECK(Body(*r)["stats"] == true);  // the literal route beats {id}

    r = cli->Request("GET", "/v1/transfers/7/files/data.bin");
    REQUIRE(r.ok());
    CHECK(Body(*r)["id"] == "7");
    CHECK(Body(*r)["name"] == "data.bin");

    r = cli->Request("DELETE", "/v1/transfers/9");
    REQUIRE(r.ok());
    CHECK(Body(*r)["deleted"] == "9");
  }

  TEST_CASE("a streamed answer is sent as it is written, without Content-Length, and ends the connection") {
    TempDir dir;
    std::atomic<bool> saw_stop{false};
    auto srv = StartServer(dir.Sock(), [&](HttpServer& s) {
      s.Route("GET", "/v1/stream", [&](const HttpRequest&) {
        HttpResponse r;
        r.content_type = "text/event-stream";
        r.stream = [&](const HttpResponse::Writer& write) {
          for (int i = 0; i < 3; ++i) {
            if (!write("data: " + std::to_string(i) + "\n\n")) return;
          }
        };
        return r;
      });
      s.Route("GET", "/v1/forever", [&](const HttpRequest&) {
        HttpResponse r;
        r.content_type = "text/event-stream";
        r.stream = [&](const HttpResponse::Writer& write) {
          // Until the server stops: an empty write asks only that.
          for (int i = 0; i < 1000 && write(""); ++i) std::this_thread::sleep_for(10ms);
          saw_stop = true;
        };
        return r;
      });
    });
    bool closed = false;
    std::string out = RawExchange(dir.Sock(), "GET /v1/stream HTTP/1.1\r\nHost: x\r\n\r\n", &closed);
    CHECK(closed);
    CHECK(out.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
    CHECK(out.find("Content-Type: text/event-stream\r\n") != std::string::npos);
    CHECK(out.find("Content-Length") == std::string::npos);
    CHECK(out.find("Connection: close\r\n") != std::string::npos);
    CHECK(out.substr(out.find("\r\n\r\n") + 4) == "data: 0\n\ndata: 1\n\ndata: 2\n\n");
    // A stream that never ends by itself ends when the server stops.
    std::thread client([&] { RawExchange(dir.Sock(), "GET /v1/forever HTTP/1.1\r\nHost: x\r\n\r\n"); });
    std::this_thread::sleep_for(100ms);
    srv->Stop();
    client.join();
    CHECK(saw_stop.load());
  }

  TEST_CASE("unknown path is 404 and a known path with the wrong method is 405") {
    TempDir dir;
    auto srv = StartServer(dir.Sock());
    auto cli = MustConnect(dir.Sock());

    auto r = cli->Request("GET", "/v1/nope");
    REQUIRE(r.ok());
    CHECK(r->status == 404);
    CHECK(Body(*r)["error"]["code"] == "not_found");

    r = cli->Request("GET", "/v1/transfers/");  // an empty {id} does not match
    REQUIRE(r.ok());
    CHECK(r->status == 404);

    r = cli->Request("PUT", "/v1/transfers/3", "{}");
    REQUIRE(r.ok());
    CHECK(r->status == 405);
    CHECK(Body(*r)["error"]["code"] == "method_not_allowed");
    bool has_allow = false;
    for (const auto& [k, v] : r->headers) {
      if (k == "allow") {
        has_allow = true;
        CHECK(v == "GET, DELETE");
      }
    }
    CHECK(has_allow);

    // The connection survives error answers.
    r = cli->Request("GET", "/v1/ping");
    REQUIRE(r.ok());
    CHECK(r->status == 200);
  }

  TEST_CASE("handlers see the peer's credentials") {
    TempDir dir;
    auto srv = StartServer(dir.Sock());
    auto cli = MustConnect(dir.Sock());
    auto r = cli->Request("GET", "/v1/whoami");
    REQUIRE(r.ok());
    json b = Body(*r);
    CHECK(b["uid"].get<uid_t>() == ::getuid());
    CHECK(b["gid"].get<gid_t>() == ::getgid());
    CHECK(b["pid"].get<pid_t>() == ::getpid());
  }

  TEST_CASE("keep-alive serves many requests on one connection, pipelined too") {
    TempDir dir;
    auto srv = StartServer(dir.Sock());
    auto cli = MustConnect(dir.Sock());
    std::set<std::string> threads;
    for (int i = 0; i < 10; ++i) {
      auto r = cli->Request("GET", "/v1/thread");
      REQUIRE(r.ok());
      threads.insert(Body(*r)["thread"].get<std::string>());
    }
    CHECK(threads.size() == 1);  // one thread per connection => one connection

    bool closed = false;
    std::string out = RawExchange(dir.Sock(),
                                  "GET /v1/ping HTTP/1.1\r\nHost: x\r\n\r\n"
                                  "POST /v1/echo HTTP/1.1\r\nContent-Length: 13\r\n\r\n{\"value\": 5}\n"
                                  "GET /v1/ping HTTP/1.1\r\nConnection: close\r\n\r\n",
                                  &closed);
    CHECK(closed);
    size_t first = out.find("HTTP/1.1 200 OK");
    size_t second = out.find("HTTP/1.1 200 OK", first + 1);
    size_t third = out.find("HTTP/1.1 200 OK", second + 1);
    CHECK(first == 0);
    CHECK(second != std::string::npos);
    CHECK(third != std::string::npos);
    CHECK(out.find("{\"got\":5}") != std::string::npos);
    CHECK(out.find("Connection: close") > third);
  }

  TEST_CASE("client reconnects once when the server closed an idle connection") {
    TempDir dir;
    auto srv = StartServer(dir.Sock(), [](HttpServer& s) { s.set_idle_timeout(100ms); });
    auto cli = MustConnect(dir.Sock());
    REQUIRE(cli->Request("GET", "/v1/ping").ok());
    std::this_thread::sleep_for(300ms);
    auto r = cli->Request("GET", "/v1/ping");
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    CHECK(r->status == 200);
  }

  TEST_CASE("oversized body is refused with 413") {
    TempDir dir;
    auto srv = StartServer(dir.Sock());
    auto cli = MustConnect(dir.Sock());
    std::string big(kMaxBodyBytes + 1, 'x');
    auto r = cli->Request("POST", "/v1/echo", big);
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    CHECK(r->status == 413);
    CHECK(Body(*r)["error"]["code"] == "payload_too_large");

    bool closed = false;
    std::string out =
        RawExchange(dir.Sock(), "POST /v1/echo HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n", &closed);
    CHECK(out.rfind("HTTP/1.1 413 ", 0) == 0);
    CHECK(closed);

    // The client recovers on a fresh connection.
    r = cli->Request("GET", "/v1/ping");
    REQUIRE(r.ok());
    CHECK(r->status == 200);
  }

  TEST_CASE("malformed requests get 400 and the connection is closed") {
    TempDir dir;
    auto srv = StartServer(dir.Sock());
    const char* bad[] = {
        "GARBAGE\r\n\r\n",
        "GET /v1/ping\r\n\r\n",
        "GET /v1/ping HTTP/1.1 extra\r\n\r\n",
        "GET v1/ping HTTP/1.1\r\n\r\n",
        "GET /v1/ping HTTP/1.1\r\nNoColonHere\r\n\r\n",
        "GET /v1/ping HTTP/1.1\r\nBad Name: x\r\n\r\n",
        "GET /v1/ping HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
        "GET /v1/ping%zz HTTP/1.1\r\n\r\n",
        "POST /v1/echo HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        "POST /v1/echo HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        "GET /v1/ping FTP/1.1\r\n\r\n",
    };
    for (const char* req : bad) {
      CAPTURE(req);
      bool closed = false;
      std::string out = RawExchange(dir.Sock(), req, &closed);
      CHECK(out.rfind("HTTP/1.1 400 ", 0) == 0);
      CHECK(out.find("Connection: close") != std::string::npos);
      CHECK(closed);
    }

    std::string out = RawExchange(dir.Sock(), "GET /v1/ping HTTP/2.0\r\n\r\n");
    CHECK(out.rfind("HTTP/1.1 505 ", 0) == 0);
    out = RawExchange(dir.Sock(), "POST /v1/echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    CHECK(out.rfind("HTTP/1.1 411 ", 0) == 0);
    out = RawExchange(dir.Sock(), "POST /v1/echo HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n");
    CHECK(out.rfind("HTTP/1.1 501 ", 0) == 0);
    out = RawExchange(dir.Sock(),
                      "GET /v1/ping HTTP/1.1\r\nX-Big: " + std::string(kMaxHeaderBytes, 'a') + "\r\n\r\n");
    CHECK(out.rfind("HTTP/1.1 431 ", 0) == 0);
    // HTTP/1.0 without keep-alive is answered and closed.
    bool closed = false;
    out = RawExchange(dir.Sock(), "GET /v1/ping HTTP/1.0\r\n\r\n", &closed);
    CHECK(out.rfind("HTTP/1.1 200 ", 0) == 0);
    CHECK(closed);
  }

  TEST_CASE("handler exceptions: bad JSON is 400, anything else 500") {
    TempDir dir;
    auto srv = StartServer(dir.Sock());
    auto cli = MustConnect(dir.Sock());

    auto r = cli->Request("POST", "/v1/echo", "{\"value\": ");
    REQUIRE(r.ok());
    CHECK(r->status == 400);
    CHECK(Body(*r)["error"]["code"] == "bad_request");
    CHECK(Body(*r)["error"]["message"].get<std::string>().find("parse") != std::string::npos);

    r = cli->Request("POST", "/v1/echo", "{\"other\": 1}");  // json::out_of_range from at()
    REQUIRE(r.ok());
    CHECK(r->status == 400);

    r = cli->Request("POST", "/v1/echo", "{\"value\": [1, 2]}");
    REQUIRE(r.ok());
    CHECK(r->status == 200);
    CHECK(Body(*r)["got"] == json::array({1, 2}));

    r = cli->Request("GET", "/v1/boom");
    REQUIRE(r.ok());
    CHECK(r->status == 500);
    CHECK(Body(*r)["error"]["message"] == "kaboom");
  }

  TEST_CASE("concurrent clients each get their own answers") {
    TempDir dir;
    auto srv = StartServer(dir.Sock());
    constexpr int kThreads = 8, kRequests = 50;
    std::atomic<int> good{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        auto c = HttpClient::Connect(dir.Sock());
        if (!c.ok()) return;
        for (int i = 0; i < kRequests; ++i) {
          std::string id = std::to_string(t) + "-" + std::to_string(i);
          auto r = (*c)->Request("GET", "/v1/transfers/" + id);
          if (r.ok() && r->status == 200 && json::parse(r->body)["id"] == id) ++good;
        }
      });
    }
    for (auto& th : threads) th.join();
    CHECK(good.load() == kThreads * kRequests);
  }

  TEST_CASE("connections beyond the limit get 503") {
    TempDir dir;
    auto srv = StartServer(dir.Sock(), [](HttpServer& s) { s.set_max_connections(1); });
    auto first = MustConnect(dir.Sock());
    REQUIRE(first->Request("GET", "/v1/ping").ok());  // holds the only slot
    auto second = MustConnect(dir.Sock());
    auto r = second->Request("GET", "/v1/ping");
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    CHECK(r->status == 503);
    CHECK(Body(*r)["error"]["code"] == "unavailable");
  }

  TEST_CASE("listening where a live server listens fails with kAlreadyExists") {
    TempDir dir;
    auto srv = StartServer(dir.Sock());
    auto again = HttpServer::Listen(dir.Sock(), 0600);
    REQUIRE_FALSE(again.ok());
    CHECK(again.error().code() == Code::kAlreadyExists);
    CHECK(std::string(again.error().message()) == "another daemon is listening on " + dir.Sock());
    // The live server is untouched.
    auto r = MustConnect(dir.Sock())->Request("GET", "/v1/ping");
    REQUIRE(r.ok());
    CHECK(r->status == 200);
  }

  TEST_CASE("a stale socket file is replaced but a regular file is kept") {
    TempDir dir;
    {
      // Bound but never listening, then abandoned: what a crashed daemon leaves behind.
      int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
      sockaddr_un addr{};
      addr.sun_family = AF_UNIX;
      std::strncpy(addr.sun_path, dir.Sock().c_str(), sizeof(addr.sun_path) - 1);
      REQUIRE(::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0);
      ::close(fd);
    }
    REQUIRE(std::filesystem::exists(dir.Sock()));
    {
      auto srv = StartServer(dir.Sock());
      struct stat st {};
      REQUIRE(::stat(dir.Sock().c_str(), &st) == 0);
      CHECK((st.st_mode & 0777) == 0600);
      auto r = MustConnect(dir.Sock())->Request("GET", "/v1/ping");
      REQUIRE(r.ok());
      CHECK(r->status == 200);
    }
    CHECK_FALSE(std::filesystem::exists(dir.Sock()));  // the destructor removed our socket

    std::string file = dir.Sock("plain");
    { std::ofstream(file) << "x"; }
    auto srv = HttpServer::Listen(file, 0600);
    REQUIRE_FALSE(srv.ok());
    CHECK(srv.error().code() == Code::kAlreadyExists);
    CHECK(std::filesystem::exists(file));
  }

  TEST_CASE("a missing socket directory is reported with the path") {
    TempDir dir;
    std::string path = dir.Sock("missing/api.sock");
    auto srv = HttpServer::Listen(path, 0600);
    REQUIRE_FALSE(srv.ok());
    CHECK(srv.error().code() == Code::kNotFound);
    CHECK(std::string(srv.error().message()).find(path) != std::string::npos);
  }

  TEST_CASE("client reports kUnavailable when no daemon runs") {
    TempDir dir;
    auto c = HttpClient::Connect(dir.Sock());
    REQUIRE_FALSE(c.ok());
    CHECK(c.error().code() == Code::kUnavailable);
    CHECK(std::string(c.error().message()) == "cannot connect to pororocad at " + dir.Sock() +
                                                  ": No such file or directory (is the daemon running?)");

    // A client whose daemon went away reports the same on its next request.
    std::unique_ptr<HttpClient> cli;
    {
      auto srv = StartServer(dir.Sock());
      cli = MustConnect(dir.Sock());
      REQUIRE(cli->Request("GET", "/v1/ping").ok());
    }
    auto r = cli->Request("GET", "/v1/ping");
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code() == Code::kUnavailable);
  }

  TEST_CASE("request timeout is kDeadlineExceeded") {
    TempDir dir;
    auto srv = StartServer(dir.Sock(), [](HttpServer& s) {
      s.Route("GET", "/v1/slow", [](const HttpRequest&) {
        std::this_thread::sleep_for(300ms);
        return HttpResponse::Json(200, json::object());
      });
    });
    auto cli = MustConnect(dir.Sock());
    auto r = cli->Request("GET", "/v1/slow", {}, 50ms);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code() == Code::kDeadlineExceeded);
    r = cli->Request("GET", "/v1/ping");
    REQUIRE(r.ok());
    CHECK(r->status == 200);
  }

  TEST_CASE("Stop returns promptly with idle clients still connected") {
    TempDir dir;
    auto srv = StartServer(dir.Sock());
    auto a = MustConnect(dir.Sock());
    auto b = MustConnect(dir.Sock());
    REQUIRE(a->Request("GET", "/v1/ping").ok());
    REQUIRE(b->Request("GET", "/v1/ping").ok());
    auto t0 = std::chrono::steady_clock::now();
    srv->Stop();
    CHECK(std::chrono::steady_clock::now() - t0 < 1s);
    srv.reset();
    CHECK_FALSE(std::filesystem::exists(dir.Sock()));
  }
}

// HTTPS: a CA, a server certificate it issued, and a server on a free loopback port.
struct TlsSetup {
  TempDir dir;
  std::string ca_dir, crt, key;
  std::unique_ptr<HttpServer> srv;
  std::string url;

  TlsSetup() {
    ::signal(SIGPIPE, SIG_IGN);  // OpenSSL writes without MSG_NOSIGNAL (the daemon and CLI ignore it too)
    ca_dir = dir.Sock("ca");
    REQUIRE(pki::CreateAuthority(ca_dir, "test-ca", 2).ok());
    crt = dir.Sock("srv.crt");
    key = dir.Sock("srv.key");
    REQUIRE(pki::IssueEndpoint(ca_dir, "lncc-dtn1", key, crt, 2).ok());
    transport::TlsConfig tc;
    tc.ca_file = ca_dir + "/ca.crt";
    tc.cert_file = crt;
    tc.key_file = key;
    tc.server = true;
    tc.require_peer_cert = false;
    auto ctx = transport::TlsContext::Create(tc);
    REQUIRE_MESSAGE(ctx.ok(), ctx.status().ToString());
    auto s = HttpServer::ListenTls("127.0.0.1", 0, std::move(*ctx));
    REQUIRE_MESSAGE(s.ok(), s.status().ToString());
    srv = std::move(*s);
    srv->Route("GET", "/v1/who", [](const HttpRequest& r) {
      auto auth = r.headers.find("authorization");
      return HttpResponse::Json(200, {{"tls", r.tls},
                                      {"uid", r.peer.uid},
                                      {"remote", r.remote_address},
                                      {"auth", auth == r.headers.end() ? "" : auth->second}});
    });
    srv->Route("POST", "/v1/echo", [](const HttpRequest& r) {
      return HttpResponse::Json(200, {{"body", r.body}});
    });
    srv->Route("GET", "/v1/stream", [](const HttpRequest&) {
      HttpResponse r;
      r.content_type = "text/event-stream";
      r.stream = [](const HttpResponse::Writer& write) {
        for (int i = 0; i < 3; ++i) {
          if (!write("data: " + std::to_string(i) + "\n\n")) return;
        }
      };
      return r;
    });
    srv->Start();
    CHECK(srv->socket_path().empty());
    url = "https://127.0.0.1:" + std::to_string(srv->port());
  }
};

TEST_CASE(
    "HTTPS: requests over TLS 1.3, the server's certificate checked against the CA, no client certificate") {
  TlsSetup t;
  auto c = HttpClient::ConnectTls(t.url, t.ca_dir + "/ca.crt");
  REQUIRE_MESSAGE(c.ok(), c.status().ToString());
  (*c)->set_bearer("abc.def.ghi");
  for (int i = 0; i < 3; ++i) {  // kept alive across requests
    auto r = (*c)->Request("GET", "/v1/who");
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    json j = json::parse(r->body);
    CHECK(j["tls"] == true);
    CHECK(j["uid"] == static_cast<uid_t>(-1));
    CHECK(j["remote"].get<std::string>().rfind("127.0.0.1:", 0) == 0);
    CHECK(j["auth"] == "Bearer abc.def.ghi");
  }
  std::string big(3 << 20, 'x');  // larger than one TLS record and one read
  auto e = (*c)->Request("POST", "/v1/echo", json{{"x", big}}.dump());
  REQUIRE_MESSAGE(e.ok(), e.status().ToString());
  CHECK(json::parse(json::parse(e->body)["body"].get<std::string>())["x"] == big);
  auto st = (*c)->Request("GET", "/v1/stream");
  REQUIRE_MESSAGE(st.ok(), st.status().ToString());
  CHECK(st->body == "data: 0\n\ndata: 1\n\ndata: 2\n\n");
}

TEST_CASE("HTTPS: a server whose certificate another CA issued is refused, and so is a bad URL") {
  TlsSetup t;
  const std::string other = t.dir.Sock("other");
  REQUIRE(pki::CreateAuthority(other, "other-ca", 2).ok());
  auto c = HttpClient::ConnectTls(t.url, other + "/ca.crt");
  REQUIRE_FALSE(c.ok());
  CHECK(c.status().code() == Code::kUnauthenticated);
  CHECK(c.status().message().find("certificate verify failed") != std::string::npos);
  for (const char* bad : {"http://127.0.0.1:1", "https://127.0.0.1:1/v1", "127.0.0.1:7780", "https://"}) {
    CAPTURE(bad);
    auto b = HttpClient::ConnectTls(bad, t.ca_dir + "/ca.crt");
    REQUIRE_FALSE(b.ok());
    CHECK(b.status().code() == Code::kInvalidArgument);
  }
  auto no_ca = HttpClient::ConnectTls(t.url, "");
  REQUIRE_FALSE(no_ca.ok());
  CHECK(no_ca.status().message().find("--ca") != std::string::npos);
}

TEST_CASE("HTTPS: plain HTTP on the TLS port gets no answer, and the server goes on serving") {
  TlsSetup t;
  auto fd = transport::TcpConnect("127.0.0.1", t.srv->port(), 5s);
  REQUIRE(fd.ok());
  const std::string req = "GET /v1/who HTTP/1.1\r\nHost: x\r\n\r\n";
  REQUIRE(::send(fd->get(), req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size()));
  char buf[256];
  pollfd p{fd->get(), POLLIN, 0};
  REQUIRE(::poll(&p, 1, 5000) == 1);
  ssize_t n = ::recv(fd->get(), buf, sizeof buf, 0);
  // Closed, or a TLS alert (record type 21): never an HTTP answer.
  CHECK((n <= 0 || buf[0] == 21));
  auto c = HttpClient::ConnectTls(t.url, t.ca_dir + "/ca.crt");
  REQUIRE_MESSAGE(c.ok(), c.status().ToString());
  CHECK((*c)->Request("GET", "/v1/who").ok());
  auto t0 = std::chrono::steady_clock::now();
  t.srv->Stop();  // with a kept-alive TLS client connected
  CHECK(std::chrono::steady_clock::now() - t0 < 2s);
}

}  // namespace
}  // namespace pororoca::api
