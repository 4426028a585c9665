// A small HTTP/1.1 server and client over unix domain sockets, and over TLS 1.3 on TCP (HTTPS):
// the transport of pororocad's JSON control API (the CLI and workflow engines are the clients).
//
// Scope, on purpose: origin-form targets, Content-Length bodies only (a chunked request is refused
// with 411, any other transfer coding with 501), keep-alive and pipelining, peer credentials via
// SO_PEERCRED on the unix socket. Over HTTPS the caller is anonymous at this level (the API checks
// its bearer token): no client certificate is asked for. Limits: request line + headers 64 KiB (431), body 16
// MiB (413). A malformed request is answered 400 and the connection is closed.
//
// Thread-safety:
//  - HttpServer: Route() and the setters must be called before Start(). Handlers run on the
//    connection's own thread (one thread per connection), so they may run concurrently and must be
//    thread-safe. Stop() may be called from any thread except a handler thread.
//  - HttpClient: not thread-safe; one owner at a time (one client per thread).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "base/unique_fd.h"
#include "pororoca/status.h"

namespace pororoca::transport {
class TlsContext;
class TlsStream;
}  // namespace pororoca::transport

namespace pororoca::api {

inline constexpr size_t kMaxHeaderBytes = 64 * 1024;
inline constexpr size_t kMaxBodyBytes = 16 * 1024 * 1024;

struct HttpRequest {
  struct PeerCred {
    pid_t pid = -1;
    uid_t uid = static_cast<uid_t>(-1);
    gid_t gid = static_cast<gid_t>(-1);
  };

  std::string method;
  std::string target;                          // raw request-target, e.g. "/v1/x%20y?limit=10"
  std::string path;                            // percent-decoded, without the query
  std::map<std::string, std::string> query;    // decoded; '+' means space
  std::map<std::string, std::string> headers;  // names lower-cased; repeated headers joined by ", "
  std::map<std::string, std::string> params;   // values of the route's {name} segments, decoded
  std::string body;
  PeerCred peer;               // unix socket only; over HTTPS uid is -1
  bool tls = false;            // came over HTTPS (TCP): the API authenticates it by bearer token
  std::string remote_address;  // HTTPS: "ip:port" of the client
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";  // empty: no Content-Type header
  std::string body;
  // Extra headers. The server writes Content-Type, Content-Length and Connection itself. In a
  // response returned by HttpClient these are all received headers, names lower-cased.
  std::vector<std::pair<std::string, std::string>> headers;
  // A streamed answer (server-sent events): when set, the server sends the status and headers
  // without Content-Length, then calls `stream` with a writer that sends its argument at once and
  // returns false once the client is gone or the server stops (an empty argument sends nothing and
  // only asks that); the connection closes when `stream` returns. `body` is not sent.
  using Writer = std::function<bool(std::string_view)>;
  std::function<void(const Writer& write)> stream;

  // Body is j.dump(); invalid UTF-8 in strings is replaced rather than thrown.
  static HttpResponse Json(int status, const nlohmann::json& j);
  // Body {"error":{"code":code,"message":message}}.
  static HttpResponse Error(int status, std::string_view code, std::string_view message);
};

// Reason phrase for a status code ("Not Found"); "Unknown" for codes we do not use.
std::string_view StatusReason(int status);

class HttpServer {
 public:
  // Called for each request on the connection's thread. A thrown nlohmann::json::exception becomes
  // 400 {"error":{"code":"bad_request",...}}; any other std::exception becomes 500.
  using Handler = std::function<HttpResponse(const HttpRequest&)>;

  // Binds and listens on `socket_path`, then chmods the socket to `mode` (before listen(), so no
  // client can connect with the umask's permissions). An existing socket file is removed only if
  // nothing answers on it; if a server answers, fails with kAlreadyExists. A missing parent
  // directory is kNotFound naming it; a non-socket file at the path is kAlreadyExists.
  static Result<std::unique_ptr<HttpServer>> Listen(const std::string& socket_path, mode_t mode);
  // HTTPS: listens on host:port (port 0 picks a free one, see port()) and runs a TLS handshake
  // with `tls` (a server context) on each connection's own thread before reading requests. The
  // process must ignore SIGPIPE: OpenSSL writes to sockets without MSG_NOSIGNAL.
  static Result<std::unique_ptr<HttpServer>> ListenTls(const std::string& host, uint16_t port,
                                                       std::shared_ptr<transport::TlsContext> tls);
  // Plain HTTP on host:port (port 0 picks a free one): no TLS and no peer credentials (uid -1),
  // for a local helper that a browser reaches on loopback (`pororoca dashboard`); never the API.
  // `what` names the listener in errors.
  static Result<std::unique_ptr<HttpServer>> ListenTcp(const std::string& host, uint16_t port,
                                                       const std::string& what);

  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;
  // Stop(), then unlinks the socket file if it is still the one we bound.
  ~HttpServer();

  // `path_pattern` segments of the form {name} match any one non-empty segment, whose decoded
  // value goes to HttpRequest::params[name]. When several patterns match, the one with the most
  // literal segments wins, then the first registered. Before Start() only.
  void Route(std::string method, std::string path_pattern, Handler handler);
  // Connections beyond this many get 503 and are closed (default 64). Before Start() only.
  void set_max_connections(size_t n) { max_connections_ = n; }
  // A connection idle (or stalled mid-request) this long is closed (default 60 s). Before Start().
  void set_idle_timeout(std::chrono::milliseconds t) { idle_timeout_ = t; }

  const std::string& socket_path() const { return socket_path_; }  // "" for HTTPS
  // Every registered route as (method, path pattern), in registration order.
  std::vector<std::pair<std::string, std::string>> routes() const;
  uint16_t port() const { return port_; }              // HTTPS: the bound port
  const std::string& where() const { return where_; }  // the socket path, https:// or http://HOST:PORT

  // Starts the accept thread. Call once.
  void Start();
  // Closes the listener and every connection, then joins all threads (waits for running handlers
  // to return). Idempotent.
  void Stop();

 private:
  struct RouteEntry {
    std::string method;
    std::vector<std::string> segments;  // "{name}" marks a parameter
    size_t literals = 0;
    Handler handler;
  };
  struct Conn {
    UniqueFd fd;  // guarded by mu_: closed by the connection thread, shut down by Stop()
    std::thread thread;
    bool done = false;  // guarded by mu_
  };

  HttpServer(std::string socket_path, UniqueFd listen_fd, UniqueFd wake_fd, dev_t dev, ino_t ino);
  void AcceptLoop();
  // The HTTPS side of ServeConnection: the handshake, then the same loop over the TLS stream.
  void ServeConnection(Conn* conn, int fd);
  HttpResponse Dispatch(HttpRequest& req) const;
  void ReapFinished();

  const std::string socket_path_;
  std::string where_;                           // the socket path or "https://host:port", for messages
  std::shared_ptr<transport::TlsContext> tls_;  // HTTPS
  uint16_t port_ = 0;
  UniqueFd listen_fd_;
  UniqueFd wake_fd_;  // eventfd: wakes the accept thread on Stop()
  const dev_t sock_dev_;
  const ino_t sock_ino_;
  std::vector<RouteEntry> routes_;
  size_t max_connections_ = 64;
  std::chrono::milliseconds idle_timeout_{60000};

  std::atomic<bool> stopping_{false};
  std::thread accept_thread_;
  std::mutex stop_mu_;  // serialises Stop()
  std::mutex mu_;
  std::list<std::unique_ptr<Conn>> conns_;  // guarded by mu_
};

class HttpClient {
 public:
  // Connects to the daemon's socket. Failure is kUnavailable:
  // "cannot connect to pororocad at <path>: <strerror> (is the daemon running?)".
  static Result<std::unique_ptr<HttpClient>> Connect(const std::string& socket_path);
  // HTTPS to a daemon's API port: `url` is https://HOST:PORT (no path). The server's certificate
  // must chain to `ca_file` (the federation CA; the system store is not used); no client
  // certificate is sent. Failure names the URL: kUnavailable when nothing answers,
  // kUnauthenticated when the server is not trusted. The process must ignore SIGPIPE.
  // `endpoint`: the name the server's certificate must carry (CN); "" takes the URL's host when it
  // is a name, and accepts any certificate of the CA when it is an IP address.
  static Result<std::unique_ptr<HttpClient>> ConnectTls(const std::string& url, const std::string& ca_file,
                                                        const std::string& endpoint = "");

  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Sent as "Authorization: Bearer TOKEN" with every request ("" none).
  void set_bearer(std::string token) { bearer_ = std::move(token); }

  // Sends one request and reads the whole response over the kept-alive connection. If a reused
  // connection turns out to be closed by the server before any response byte arrived, reconnects
  // once and resends. A non-empty body is sent as application/json. Errors: kDeadlineExceeded
  // when `timeout` (for the whole exchange) expires, kUnavailable when the connection is lost,
  // kProtocol for a malformed response. After an error the connection is dropped; the next
  // Request() reconnects.
  Result<HttpResponse> Request(std::string_view method, std::string_view target, std::string_view body = {},
                               std::chrono::milliseconds timeout = std::chrono::seconds(30));

 private:
  HttpClient() = default;
  // (Re)connects fd_ (and tls_ for HTTPS).
  Status Open(std::chrono::milliseconds timeout);
  void Drop();
  Result<HttpResponse> RoundTrip(const std::string& request, std::chrono::steady_clock::time_point deadline,
                                 bool* nothing_received);

  std::string socket_path_;  // unix socket, or "" for HTTPS
  std::string where_;        // "pororocad at PATH" / "pororocad at https://HOST:PORT", for messages
  std::string host_;         // HTTPS
  uint16_t port_ = 0;
  std::string endpoint_;  // HTTPS: the certificate name required ("" any of the CA's)
  std::shared_ptr<transport::TlsContext> tls_ctx_;
  std::unique_ptr<transport::TlsStream> tls_;  // HTTPS: owns the socket; fd_ then holds a duplicate
  UniqueFd fd_;
  std::string bearer_;
  bool reused_ = false;  // the connection has carried a complete exchange already
};

}  // namespace pororoca::api
