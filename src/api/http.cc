#include "api/http.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <exception>
#include <system_error>

#include "base/defer.h"
#include "base/log.h"
#include "base/poll.h"
#include "transport/tcp.h"
#include "transport/tls.h"

namespace pororoca::api {
namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kReadChunk = 64 * 1024;
// A client response body is bounded too, so a confused peer cannot make us allocate without end.
constexpr size_t kMaxClientBodyBytes = 256 * 1024 * 1024;

bool IsTokenChar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::strchr("!#$%&'*+-.^_`|~", c) != nullptr && c != '\0';
}

bool IsToken(std::string_view s) { return !s.empty() && std::all_of(s.begin(), s.end(), IsTokenChar); }

std::string ToLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// True if the comma-separated header value contains `token` (case-insensitive).
bool HasToken(std::string_view value, std::string_view token) {
  std::string lower = ToLower(value);
  std::string_view v(lower);
  while (!v.empty()) {
    size_t comma = v.find(',');
    if (Trim(v.substr(0, comma)) == token) return true;
    if (comma == std::string_view::npos) break;
    v.remove_prefix(comma + 1);
  }
  return false;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Percent-decodes `in`; false on a malformed escape or an encoded NUL.
bool PercentDecode(std::string_view in, bool plus_is_space, std::string* out) {
  out->clear();
  out->reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '%') {
      if (i + 2 >= in.size()) return false;
      int hi = HexValue(in[i + 1]), lo = HexValue(in[i + 2]);
      if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) return false;
      out->push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out->push_back(' ');
    } else {
      out->push_back(c);
    }
  }
  return true;
}

// "/a/b" -> {"a","b"}; "/" -> {""}. `path` starts with '/'.
std::vector<std::string_view> SplitSegments(std::string_view path) {
  std::vector<std::string_view> out;
  path.remove_prefix(1);
  while (true) {
    size_t slash = path.find('/');
    out.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return out;
}

bool ParseSize(std::string_view s, size_t* out) {
  if (s.empty() || s.size() > 18) return false;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && ptr == s.data() + s.size();
}

// Parses the header fields between the start line and the blank line (`block` holds
// "name: value\r\n" lines, the last CRLF optional). Names are lower-cased; a repeated field is
// joined with ", " except Content-Length, which must repeat the same value.
bool ParseHeaderFields(std::string_view block, std::map<std::string, std::string>* headers,
                       std::string* err) {
  while (!block.empty()) {
    size_t eol = block.find("\r\n");
    std::string_view line = block.substr(0, eol);
    block.remove_prefix(eol == std::string_view::npos ? block.size() : eol + 2);
    if (line.empty()) continue;
    if (line.front() == ' ' || line.front() == '\t') {
      *err = "obsolete header line folding is not supported";
      return false;
    }
    size_t colon = line.find(':');
    std::string_view name = line.substr(0, colon);
    if (colon == std::string_view::npos || !IsToken(name)) {
      *err = "malformed header line";
      return false;
    }
    std::string_view value = Trim(line.substr(colon + 1));
    for (char c : value) {
      unsigned char u = static_cast<unsigned char>(c);
      if ((u < 0x20 && c != '\t') || u == 0x7f) {
        *err = "control character in header value";
        return false;
      }
    }
    std::string key = ToLower(name);
    auto [it, inserted] = headers->try_emplace(key, value);
    if (!inserted) {
      if (key == "content-length") {
        if (it->second != value) {
          *err = "conflicting Content-Length headers";
          return false;
        }
      } else {
        it->second.append(", ").append(value);
      }
    }
  }
  return true;
}

std::chrono::milliseconds RemainingMs(Clock::time_point deadline) {
  return std::max(std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()),
                  std::chrono::milliseconds(0));
}

// Blocking send of all of `data`; false on error (peer gone, Stop() shut us down).
bool SendAllBlocking(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// The status line and headers; a streamed response has no Content-Length (it ends with the
// connection).
std::string SerializeHead(const HttpResponse& r, bool keep_alive, bool http10) {
  std::string out;
  out.reserve(128 + r.body.size());
  out.append("HTTP/1.1 ").append(std::to_string(r.status)).append(" ");
  out.append(StatusReason(r.status)).append("\r\n");
  if (!r.content_type.empty()) out.append("Content-Type: ").append(r.content_type).append("\r\n");
  if (!r.stream) out.append("Content-Length: ").append(std::to_string(r.body.size())).append("\r\n");
  for (const auto& [name, value] : r.headers) out.append(name).append(": ").append(value).append("\r\n");
  if (!keep_alive) {
    out.append("Connection: close\r\n");
  } else if (http10) {
    out.append("Connection: keep-alive\r\n");
  }
  out.append("\r\n");
  return out;
}

std::string SerializeResponse(const HttpResponse& r, bool keep_alive, bool http10) {
  return SerializeHead(r, keep_alive, http10).append(r.body);
}

sockaddr_un MakeAddr(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());  // length checked by callers
  return addr;
}

Status CheckPathLength(const std::string& path) {
  if (path.empty() || path.size() >= sizeof(sockaddr_un{}.sun_path)) {
    return Status::InvalidArgument("unix socket path must be 1.." +
                                   std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) + " bytes: '" + path +
                                   "'");
  }
  return Status::OK();
}

// Connects a blocking stream socket to `path`; returns -1 with errno set on failure.
int ConnectUnix(const std::string& path, int extra_flags) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | extra_flags, 0);
  if (fd < 0) return -1;
  sockaddr_un addr = MakeAddr(path);
  int rc;
  do {
    rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    int err = errno;
    ::close(fd);
    errno = err;
    return -1;
  }
  return fd;
}

// What went wrong with a request, decided while parsing it on the server.
struct RequestError {
  int status = 0;
  std::string code;
  std::string message;
};

// Parses the request head (start line + fields, without the blank line) into `req`.
// Returns status 0 on success.
RequestError ParseRequestHead(std::string_view head, HttpRequest* req, bool* http10, size_t* content_length) {
  size_t eol = head.find("\r\n");
  std::string_view line = head.substr(0, eol);
  std::string_view fields = eol == std::string_view::npos ? std::string_view() : head.substr(eol + 2);

  size_t sp1 = line.find(' ');
  size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
    return {400, "bad_request", "malformed request line"};
  }
  std::string_view method = line.substr(0, sp1);
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string_view version = line.substr(sp2 + 1);
  if (!IsToken(method)) return {400, "bad_request", "malformed request method"};
  if (version == "HTTP/1.0") {
    *http10 = true;
  } else if (version == "HTTP/1.1") {
    *http10 = false;
  } else if (version.size() == 8 && version.substr(0, 5) == "HTTP/") {
    return {505, "http_version_not_supported", "only HTTP/1.0 and HTTP/1.1 are supported"};
  } else {
    return {400, "bad_request", "malformed HTTP version"};
  }
  if (target.empty() || target.front() != '/') {
    return {400, "bad_request", "request target must be an absolute path"};
  }
  for (char c : target) {
    unsigned char u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f) return {400, "bad_request", "control character in request target"};
  }

  req->method = std::string(method);
  req->target = std::string(target);
  size_t q = target.find('?');
  if (!PercentDecode(target.substr(0, q), false, &req->path)) {
    return {400, "bad_request", "malformed percent-encoding in path"};
  }
  if (q != std::string_view::npos) {
    std::string_view query = target.substr(q + 1);
    size_t hash = query.find('#');
    query = query.substr(0, hash);
    while (!query.empty()) {
      size_t amp = query.find('&');
      std::string_view pair = query.substr(0, amp);
      query.remove_prefix(amp == std::string_view::npos ? query.size() : amp + 1);
      if (pair.empty()) continue;
      size_t eq = pair.find('=');
      std::string key, value;
      if (!PercentDecode(pair.substr(0, eq), true, &key) ||
          (eq != std::string_view::npos && !PercentDecode(pair.substr(eq + 1), true, &value))) {
        return {400, "bad_request", "malformed percent-encoding in query"};
      }
      req->query[std::move(key)] = std::move(value);
    }
  }

  std::string err;
  if (!ParseHeaderFields(fields, &req->headers, &err)) return {400, "bad_request", err};

  if (auto it = req->headers.find("transfer-encoding"); it != req->headers.end()) {
    if (HasToken(it->second, "chunked")) {
      return {411, "length_required", "chunked request bodies are not supported; send Content-Length"};
    }
    return {501, "not_implemented", "unsupported Transfer-Encoding '" + it->second + "'"};
  }
  *content_length = 0;
  if (auto it = req->headers.find("content-length"); it != req->headers.end()) {
    if (!ParseSize(it->second, content_length) ||
        !std::all_of(it->second.begin(), it->second.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return {400, "bad_request", "malformed Content-Length"};
    }
    if (*content_length > kMaxBodyBytes) {
      return {413, "payload_too_large",
              "request body of " + it->second + " bytes exceeds the limit of " +
                  std::to_string(kMaxBodyBytes) + " bytes"};
    }
  }
  return {};
}

}  // namespace

std::string_view StatusReason(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 304:
      return "Not Modified";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 410:
      return "Gone";
    case 411:
      return "Length Required";
    case 412:
      return "Precondition Failed";
    case 413:
      return "Content Too Large";
    case 415:
      return "Unsupported Media Type";
    case 421:
      return "Misdirected Request";
    case 422:
      return "Unprocessable Content";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

HttpResponse HttpResponse::Json(int status, const nlohmann::json& j) {
  HttpResponse r;
  r.status = status;
  r.body = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return r;
}

HttpResponse HttpResponse::Error(int status, std::string_view code, std::string_view message) {
  return Json(status, {{"error", {{"code", code}, {"message", message}}}});
}

// ---------------------------------------------------------------------------------------------
// HttpServer

Result<std::unique_ptr<HttpServer>> HttpServer::Listen(const std::string& socket_path, mode_t mode) {
  PORO_RETURN_IF_ERROR(CheckPathLength(socket_path));

  size_t slash = socket_path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : socket_path.substr(0, slash == 0 ? 1 : slash);
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    int err = errno;
    if (err == ENOENT) {
      return Status::NotFound("socket directory " + dir + " does not exist (for " + socket_path + ")");
    }
    return Status::IoError("stat socket directory " + dir, err);
  }
  if (!S_ISDIR(st.st_mode)) {
    return Status::InvalidArgument(dir + " is not a directory (for socket " + socket_path + ")");
  }

  if (::lstat(socket_path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return Status::AlreadyExists(socket_path + " exists and is not a socket");
    }
    // Non-blocking probe: a live server with a full backlog answers EAGAIN instead of blocking us.
    int probe = ConnectUnix(socket_path, SOCK_NONBLOCK);
    if (probe >= 0 || errno == EAGAIN) {
      if (probe >= 0) ::close(probe);
      return Status::AlreadyExists("another daemon is listening on " + socket_path);
    }
    if (errno != ECONNREFUSED) return Status::IoError("probe existing socket " + socket_path, errno);
    if (::unlink(socket_path.c_str()) != 0 && errno != ENOENT) {
      return Status::IoError("remove stale socket " + socket_path, errno);
    }
    PORO_LOG(INFO) << "removed stale socket " << socket_path;
  } else if (errno != ENOENT) {
    return Status::IoError("lstat " + socket_path, errno);
  }

  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return Status::IoError("socket", errno);
  sockaddr_un addr = MakeAddr(socket_path);
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    return Status::IoError("bind " + socket_path, errno);
  }
  Defer unlink_on_error([&] { ::unlink(socket_path.c_str()); });
  // chmod before listen(): until listen() every connect() is refused, so no client ever reaches
  // the socket while it still has the umask's permissions.
  if (::chmod(socket_path.c_str(), mode) != 0) return Status::IoError("chmod " + socket_path, errno);
  if (::listen(fd.get(), SOMAXCONN) != 0) return Status::IoError("listen " + socket_path, errno);
  if (::lstat(socket_path.c_str(), &st) != 0) return Status::IoError("lstat " + socket_path, errno);
  UniqueFd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake.valid()) return Status::IoError("eventfd", errno);
  unlink_on_error.Cancel();
  return std::unique_ptr<HttpServer>(
      new HttpServer(socket_path, std::move(fd), std::move(wake), st.st_dev, st.st_ino));
}

HttpServer::HttpServer(std::string socket_path, UniqueFd listen_fd, UniqueFd wake_fd, dev_t dev, ino_t ino)
    : socket_path_(std::move(socket_path)),
      where_(socket_path_),
      listen_fd_(std::move(listen_fd)),
      wake_fd_(std::move(wake_fd)),
      sock_dev_(dev),
      sock_ino_(ino) {}

HttpServer::~HttpServer() {
  Stop();
  if (socket_path_.empty()) return;  // HTTPS: nothing on disk
  // Unlink only our own socket: a successor daemon may already have replaced the file.
  struct stat st {};
  if (::lstat(socket_path_.c_str(), &st) == 0 && st.st_dev == sock_dev_ && st.st_ino == sock_ino_) {
    ::unlink(socket_path_.c_str());
  }
}

Result<std::unique_ptr<HttpServer>> HttpServer::ListenTls(const std::string& host, uint16_t port,
                                                          std::shared_ptr<transport::TlsContext> tls) {
  if (!tls || !tls->server()) return Status::InvalidArgument("HTTPS API needs a TLS server context");
  auto s = ListenTcp(host, port, "HTTPS API");
  if (!s.has_value()) return s;
  (*s)->tls_ = std::move(tls);
  (*s)->where_ = "https://" + transport::FormatHostPort(host, (*s)->port_);
  return s;
}

Result<std::unique_ptr<HttpServer>> HttpServer::ListenTcp(const std::string& host, uint16_t port,
                                                          const std::string& what) {
  const std::string where = "http://" + transport::FormatHostPort(host, port);
  auto fd = transport::TcpListen(host, port, SOMAXCONN);
  if (!fd.has_value()) return std::move(fd).error().Annotate(what + " " + where);
  // Non-blocking like the unix listener: a connection that vanishes between poll and accept must
  // not block the accept thread.
  int flags = ::fcntl(fd->get(), F_GETFL);
  if (flags < 0 || ::fcntl(fd->get(), F_SETFL, flags | O_NONBLOCK) < 0)
    return Status::IoError("fcntl", errno);
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (::getsockname(fd->get(), reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    return Status::IoError("getsockname", errno);
  }
  const uint16_t bound = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                                        : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  UniqueFd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake.valid()) return Status::IoError("eventfd", errno);
  std::unique_ptr<HttpServer> s(new HttpServer("", std::move(*fd), std::move(wake), 0, 0));
  s->port_ = bound;
  s->where_ = "http://" + transport::FormatHostPort(host, bound);
  return s;
}

void HttpServer::Route(std::string method, std::string path_pattern, Handler handler) {
  RouteEntry r;
  r.method = std::move(method);
  if (path_pattern.empty() || path_pattern.front() != '/') path_pattern.insert(0, "/");
  for (std::string_view seg : SplitSegments(path_pattern)) {
    bool param = seg.size() >= 2 && seg.front() == '{' && seg.back() == '}';
    if (!param) ++r.literals;
    r.segments.emplace_back(seg);
  }
  r.handler = std::move(handler);
  routes_.push_back(std::move(r));
}

std::vector<std::pair<std::string, std::string>> HttpServer::routes() const {
  std::vector<std::pair<std::string, std::string>> out;
  for (const RouteEntry& r : routes_) {
    std::string path;
    for (const auto& seg : r.segments) path += "/" + seg;
    out.emplace_back(r.method, path.empty() ? "/" : path);
  }
  return out;
}

void HttpServer::Start() {
  PORO_CHECK(!accept_thread_.joinable());
  accept_thread_ = std::thread([this] { AcceptLoop(); });
}

void HttpServer::Stop() {
  std::lock_guard<std::mutex> stop_lock(stop_mu_);
  stopping_.store(true);
  if (wake_fd_.valid()) {
    uint64_t one = 1;
    ssize_t n = ::write(wake_fd_.get(), &one, sizeof(one));
    (void)n;  // the counter cannot overflow with a handful of writes; stopping_ is set anyway
  }
  if (accept_thread_.joinable()) accept_thread_.join();
  listen_fd_.Reset();

  std::list<std::unique_ptr<Conn>> all;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // Shutting down (not closing) wakes a thread blocked in poll/recv/send on the fd, and the
    // fd number stays ours until that thread closes it under mu_.
    for (auto& c : conns_) {
      if (!c->done) ::shutdown(c->fd.get(), SHUT_RDWR);
    }
    all.splice(all.end(), conns_);
  }
  for (auto& c : all) c->thread.join();
}

void HttpServer::ReapFinished() {
  std::list<std::unique_ptr<Conn>> finished;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = conns_.begin(); it != conns_.end();) {
      auto next = std::next(it);
      if ((*it)->done) finished.splice(finished.end(), conns_, it);
      it = next;
    }
  }
  for (auto& c : finished) c->thread.join();
}

void HttpServer::AcceptLoop() {
  while (!stopping_.load()) {
    pollfd p[2] = {{listen_fd_.get(), POLLIN, 0}, {wake_fd_.get(), POLLIN, 0}};
    int n = ::poll(p, 2, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      PORO_LOG(ERROR) << "poll on " << where_ << ": " << std::strerror(errno);
      return;
    }
    if (stopping_.load() || p[1].revents != 0) return;
    if ((p[0].revents & POLLIN) == 0) continue;

    int cfd = ::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC);
    if (cfd < 0) {
      int err = errno;
      if (err == EINTR || err == EAGAIN || err == ECONNABORTED) continue;
      // Out of fds or memory: back off instead of spinning on a readable listener.
      PORO_LOG(WARNING) << "accept on " << where_ << ": " << std::strerror(err);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    ReapFinished();

    bool accepted = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (conns_.size() < max_connections_) {
        auto conn = std::make_unique<Conn>();
        conn->fd.Reset(cfd);
        Conn* raw = conn.get();
        try {
          // The new thread cannot finish (it takes mu_ last) before we store its handle.
          raw->thread = std::thread([this, raw, cfd] { ServeConnection(raw, cfd); });
          conns_.push_back(std::move(conn));
          accepted = true;
        } catch (const std::system_error& e) {
          PORO_LOG(WARNING) << "cannot start a connection thread: " << e.what();
          conn->fd.Release();  // closed below after the 503
        }
      }
    }
    if (!accepted) {
      std::string resp = SerializeResponse(
          HttpResponse::Error(503, "unavailable", "too many concurrent connections to pororocad"), false,
          false);
      // Never block the accept thread on a client that does not read.
      ssize_t sent = ::send(cfd, resp.data(), resp.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      (void)sent;
      ::close(cfd);
    }
  }
}

void HttpServer::ServeConnection(Conn* conn, int fd) {
  Defer finish([this, conn] {
    std::lock_guard<std::mutex> lock(mu_);
    conn->fd.Reset();
    conn->done = true;
  });

  const int idle_ms = static_cast<int>(std::min<long long>(idle_timeout_.count(), 1 << 30));
  const transport::TransportOptions io{std::chrono::milliseconds(idle_ms)};
  HttpRequest::PeerCred peer;
  // HTTPS: the TLS stream owns a duplicate of fd, so Stop()'s shutdown of fd reaches it too.
  std::unique_ptr<transport::TlsStream> tls;
  if (tls_) {
    UniqueFd dup(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
    if (!dup.valid()) return;
    // An unauthenticated client gets little time to finish its handshake.
    const transport::TransportOptions hs{std::chrono::milliseconds(std::min(idle_ms, 10000))};
    auto accepted = transport::TlsStream::Accept(*tls_, std::move(dup), hs);
    if (!accepted.has_value()) {
      if (!stopping_.load()) PORO_LOG(INFO) << where_ << ": " << accepted.error().message();
      return;
    }
    tls = std::move(*accepted);
  } else {
    ucred cred{};
    socklen_t len = sizeof(cred);
    if (!socket_path_.empty() && ::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
      peer = {cred.pid, cred.uid, cred.gid};
    }
    // A client that stops reading its response must not pin this thread forever either.
    timeval send_timeout{idle_ms / 1000, (idle_ms % 1000) * 1000};
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &send_timeout, sizeof(send_timeout));
  }
  // The TLS session ends with close_notify (bounded: the client may be gone).
  Defer close_tls([&tls] {
    if (tls) tls->Close(transport::TransportOptions{std::chrono::milliseconds(1000)}).IgnoreError();
  });

  // Reads more bytes into `buf`; false on EOF, error or idle timeout.
  auto read_more = [&](std::string* buf) {
    size_t old = buf->size();
    if (tls) {
      buf->resize(old + kReadChunk);
      auto n = tls->ReadSome(std::as_writable_bytes(std::span<char>(buf->data() + old, kReadChunk)), io);
      buf->resize(old + (n.has_value() ? *n : 0));
      return n.has_value() && *n > 0;
    }
    int ready = PollOne(fd, POLLIN, std::chrono::milliseconds(idle_ms));
    if (ready <= 0) return false;
    buf->resize(old + kReadChunk);
    ssize_t n;
    do {
      n = ::recv(fd, buf->data() + old, kReadChunk, 0);
    } while (n < 0 && errno == EINTR);
    buf->resize(old + static_cast<size_t>(std::max<ssize_t>(n, 0)));
    return n > 0;
  };
  auto send_all = [&](std::string_view data) {
    if (!tls) return SendAllBlocking(fd, data);
    return data.empty() ||
           tls->WriteAll(std::as_bytes(std::span<const char>(data.data(), data.size())), io).ok();
  };
  auto fail = [&](int status, std::string_view code, std::string_view message) {
    std::string resp = SerializeResponse(HttpResponse::Error(status, code, message), false, false);
    (void)send_all(resp);  // closing anyway; the peer may already be gone
  };

  std::string buf;
  bool keep_alive = true;
  while (keep_alive && !stopping_.load()) {
    size_t head_end;
    size_t scanned = 0;
    while (true) {
      // RFC 9112 2.2: ignore empty lines before a request line.
      size_t skip = 0;
      while (buf.compare(skip, 2, "\r\n") == 0) skip += 2;
      if (skip > 0) {
        buf.erase(0, skip);
        scanned = 0;
      }
      head_end = buf.find("\r\n\r\n", scanned);
      if (head_end != std::string::npos) break;
      if (buf.size() > kMaxHeaderBytes) {
        return fail(431, "header_too_large", "request line and headers exceed 64 KiB");
      }
      scanned = buf.size() >= 3 ? buf.size() - 3 : 0;
      if (!read_more(&buf)) return;  // EOF, idle timeout or Stop(); nothing to answer
    }
    if (head_end + 4 > kMaxHeaderBytes) {
      return fail(431, "header_too_large", "request line and headers exceed 64 KiB");
    }

    HttpRequest req;
    req.peer = peer;
    if (tls) {
      req.tls = true;
      req.remote_address = tls->peer_address();
    }
    bool http10 = false;
    size_t content_length = 0;
    RequestError perr =
        ParseRequestHead(std::string_view(buf).substr(0, head_end), &req, &http10, &content_length);
    if (perr.status != 0) return fail(perr.status, perr.code, perr.message);

    size_t body_start = head_end + 4;
    if (buf.size() - body_start < content_length) {
      auto expect = req.headers.find("expect");
      if (expect != req.headers.end() && ToLower(expect->second) == "100-continue" && !http10) {
        if (!send_all("HTTP/1.1 100 Continue\r\n\r\n")) return;
      }
      buf.reserve(body_start + content_length);
      while (buf.size() - body_start < content_length) {
        if (!read_more(&buf)) return;  // truncated body: the peer is gone or stalled
      }
    }
    req.body.assign(buf, body_start, content_length);
    buf.erase(0, body_start + content_length);

    auto conn_hdr = req.headers.find("connection");
    if (http10) {
      keep_alive = conn_hdr != req.headers.end() && HasToken(conn_hdr->second, "keep-alive");
    } else {
      keep_alive = conn_hdr == req.headers.end() || !HasToken(conn_hdr->second, "close");
    }

    HttpResponse resp = Dispatch(req);
    if (stopping_.load()) keep_alive = false;
    if (resp.stream) {
      if (!send_all(SerializeHead(resp, false, http10))) return;
      resp.stream([&](std::string_view data) { return !stopping_.load() && send_all(data); });
      return;  // the end of the stream is the end of the connection
    }
    if (!send_all(SerializeResponse(resp, keep_alive, http10))) return;
  }
}

HttpResponse HttpServer::Dispatch(HttpRequest& req) const {
  // Match on raw segments, decoded one by one, so an id containing "%2F" stays one segment.
  std::string_view raw_path = std::string_view(req.target).substr(0, req.target.find('?'));
  std::vector<std::string> segments;
  for (std::string_view seg : SplitSegments(raw_path)) {
    std::string decoded;
    PercentDecode(seg, false, &decoded);  // cannot fail: the whole path decoded already
    segments.push_back(std::move(decoded));
  }

  const RouteEntry* best = nullptr;
  std::string allow;
  for (const RouteEntry& r : routes_) {
    if (r.segments.size() != segments.size()) continue;
    bool match = true;
    for (size_t i = 0; i < segments.size() && match; ++i) {
      const std::string& pat = r.segments[i];
      bool param = pat.size() >= 2 && pat.front() == '{' && pat.back() == '}';
      match = param ? !segments[i].empty() : pat == segments[i];
    }
    if (!match) continue;
    if (r.method != req.method) {
      if (allow.find(r.method) == std::string::npos) allow.append(allow.empty() ? "" : ", ").append(r.method);
      continue;
    }
    if (best == nullptr || r.literals > best->literals) best = &r;
  }
  if (best == nullptr) {
    if (allow.empty())
      return HttpResponse::Error(404, "not_found",
                                 "no such API route: " + req.path + " (the routes are in docs/api.md)");
    HttpResponse resp = HttpResponse::Error(405, "method_not_allowed",
                                            "method " + req.method + " not allowed on " + req.path);
    resp.headers.emplace_back("Allow", allow);
    return resp;
  }

  for (size_t i = 0; i < segments.size(); ++i) {
    const std::string& pat = best->segments[i];
    if (pat.size() >= 2 && pat.front() == '{' && pat.back() == '}') {
      req.params[pat.substr(1, pat.size() - 2)] = segments[i];
    }
  }
  try {
    return best->handler(req);
  } catch (const nlohmann::json::exception& e) {
    return HttpResponse::Error(400, "bad_request", e.what());
  } catch (const std::exception& e) {
    PORO_LOG(ERROR) << req.method << " " << req.path << ": handler failed: " << e.what();
    return HttpResponse::Error(500, "internal", e.what());
  } catch (...) {
    PORO_LOG(ERROR) << req.method << " " << req.path << ": handler threw a non-std exception";
    return HttpResponse::Error(500, "internal", "unknown error");
  }
}

// ---------------------------------------------------------------------------------------------
// HttpClient

Result<std::unique_ptr<HttpClient>> HttpClient::Connect(const std::string& socket_path) {
  PORO_RETURN_IF_ERROR(CheckPathLength(socket_path));
  std::unique_ptr<HttpClient> c(new HttpClient());
  c->socket_path_ = socket_path;
  c->where_ = "pororocad at " + socket_path;
  PORO_RETURN_IF_ERROR(c->Open(std::chrono::seconds(30)));
  return c;
}

Result<std::unique_ptr<HttpClient>> HttpClient::ConnectTls(const std::string& url, const std::string& ca_file,
                                                           const std::string& endpoint) {
  constexpr std::string_view kScheme = "https://";
  std::string rest = url.rfind(kScheme, 0) == 0 ? url.substr(kScheme.size()) : std::string();
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  if (rest.empty() || rest.find('/') != std::string::npos) {
    return Status::InvalidArgument("API address must be https://HOST:PORT, not '" + url + "'");
  }
  auto hp = transport::ParseHostPort(rest);
  if (!hp.has_value()) return std::move(hp).error().Annotate("API address " + url);
  if (ca_file.empty()) {
    return Status::InvalidArgument(
        "HTTPS API " + url + ": the federation CA certificate is needed to trust it (--ca or $PORO_CA)");
  }
  transport::TlsConfig tc;
  tc.ca_file = ca_file;
  auto ctx = transport::TlsContext::Create(tc);
  if (!ctx.has_value()) return std::move(ctx).error();
  std::unique_ptr<HttpClient> c(new HttpClient());
  c->host_ = hp->first;
  c->port_ = hp->second;
  c->where_ = "pororocad at https://" + rest;
  c->tls_ctx_ = std::move(*ctx);
  // Which endpoint the server must be: the CA vouches for every endpoint of the federation, so
  // the name is what stops another endpoint from answering (and reading the caller's tokens).
  c->endpoint_ = endpoint;
  if (c->endpoint_.empty()) {
    in6_addr a6{};
    in_addr a4{};
    if (::inet_pton(AF_INET, c->host_.c_str(), &a4) != 1 &&
        ::inet_pton(AF_INET6, c->host_.c_str(), &a6) != 1) {
      c->endpoint_ = c->host_;
    }
  }
  PORO_RETURN_IF_ERROR(c->Open(std::chrono::seconds(30)));
  return c;
}

HttpClient::~HttpClient() = default;

void HttpClient::Drop() {
  tls_.reset();
  fd_.Reset();
  reused_ = false;
}

Status HttpClient::Open(std::chrono::milliseconds timeout) {
  Drop();
  if (!tls_ctx_) {
    UniqueFd fd(ConnectUnix(socket_path_, 0));
    if (!fd.valid()) {
      return Status::Unavailable("cannot connect to " + where_ + ": " + std::strerror(errno) +
                                 " (is the daemon running?)");
    }
    // Non-blocking from here on: every wait is a poll() bounded by the request's deadline.
    int flags = ::fcntl(fd.get(), F_GETFL);
    if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK) < 0) {
      return Status::IoError("fcntl O_NONBLOCK", errno);
    }
    fd_ = std::move(fd);
    return Status::OK();
  }
  auto fd = transport::TcpConnect(host_, port_, timeout);
  if (!fd.has_value()) {
    return Status::Unavailable("cannot connect to " + where_ + ": " + std::string(fd.error().message()));
  }
  UniqueFd watch(::fcntl(fd->get(), F_DUPFD_CLOEXEC, 0));  // for the idle-connection check
  if (!watch.valid()) return Status::IoError("dup", errno);
  auto s = transport::TlsStream::Connect(*tls_ctx_, std::move(*fd), transport::TransportOptions{timeout});
  if (!s.has_value()) return std::move(s).error();
  if (!endpoint_.empty() && (*s)->peer_common_name() != endpoint_) {
    return Status::Unauthenticated(where_ + " presented the certificate of endpoint '" +
                                   (*s)->peer_common_name() + "', not of '" + endpoint_ + "'");
  }
  tls_ = std::move(*s);
  fd_ = std::move(watch);
  return Status::OK();
}

Result<HttpResponse> HttpClient::Request(std::string_view method, std::string_view target,
                                         std::string_view body, std::chrono::milliseconds timeout) {
  if (!IsToken(method)) return Status::InvalidArgument("invalid HTTP method '" + std::string(method) + "'");
  if (target.empty() || target.front() != '/' || std::any_of(target.begin(), target.end(), [](char c) {
        return static_cast<unsigned char>(c) <= 0x20 || c == 0x7f;
      })) {
    return Status::InvalidArgument("invalid request target '" + std::string(target) + "'");
  }
  const auto deadline = Clock::now() + timeout;

  std::string req;
  req.reserve(128 + body.size());
  req.append(method).append(" ").append(target).append(" HTTP/1.1\r\nHost: ");
  req.append(tls_ctx_ ? transport::FormatHostPort(host_, port_) : std::string("localhost")).append("\r\n");
  if (!bearer_.empty()) req.append("Authorization: Bearer ").append(bearer_).append("\r\n");
  req.append("Content-Length: ").append(std::to_string(body.size())).append("\r\n");
  if (!body.empty()) req.append("Content-Type: application/json\r\n");
  req.append("\r\n").append(body);

  for (int attempt = 0;; ++attempt) {
    // An idle kept-alive connection the server has closed polls readable (EOF): replace it now
    // rather than find out after writing the request.
    if (fd_.valid() && reused_ && PollOne(fd_.get(), POLLIN, std::chrono::milliseconds(0)) != 0) Drop();
    if (!fd_.valid())
      PORO_RETURN_IF_ERROR(Open(std::max(RemainingMs(deadline), std::chrono::milliseconds(1))));
    bool was_reused = reused_;
    bool nothing_received = false;
    Result<HttpResponse> r = RoundTrip(req, deadline, &nothing_received);
    if (r.ok()) return r;
    Drop();
    // The server closed a kept-alive connection before answering (idle timeout race): it did not
    // process the request, so sending it once more on a fresh connection is safe.
    if (attempt == 0 && was_reused && nothing_received && r.error().code() == Code::kUnavailable) {
      continue;
    }
    Status st = std::move(r).error();
    st.Annotate(std::string(method) + " " + std::string(target));
    return st;
  }
}

Result<HttpResponse> HttpClient::RoundTrip(const std::string& request, Clock::time_point deadline,
                                           bool* nothing_received) {
  const int fd = fd_.get();
  auto timed_out = [&] { return Status::DeadlineExceeded("no response from " + where_ + " in time"); };
  auto tls_opts = [&] {
    return transport::TransportOptions{std::max(RemainingMs(deadline), std::chrono::milliseconds(1))};
  };

  // Write the request. If the server gives up early (e.g. 413 before reading a large body) the
  // write fails with EPIPE, but its answer may already be waiting: read it before reporting.
  std::string_view out(request);
  int send_errno = 0;
  if (tls_) {
    Status st = tls_->WriteAll(std::as_bytes(std::span<const char>(out.data(), out.size())), tls_opts());
    if (st.code() == Code::kDeadlineExceeded) return timed_out();
    if (!st.ok()) send_errno = EPIPE;
    out = {};
  }
  while (!out.empty()) {
    ssize_t n = ::send(fd, out.data(), out.size(), MSG_NOSIGNAL);
    if (n >= 0) {
      out.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN) {
      send_errno = errno;
      break;
    }
    int ready = PollOne(fd, POLLOUT, RemainingMs(deadline));
    if (ready == 0) return timed_out();
    if (ready < 0) return Status::IoError("poll", errno);
  }

  std::string buf;
  bool eof = false;
  auto read_more = [&]() -> Status {
    if (tls_) {
      size_t old = buf.size();
      buf.resize(old + kReadChunk);
      auto n =
          tls_->ReadSome(std::as_writable_bytes(std::span<char>(buf.data() + old, kReadChunk)), tls_opts());
      buf.resize(old + (n.has_value() ? *n : 0));
      if (n.has_value()) {
        if (*n == 0) eof = true;
        return Status::OK();
      }
      if (n.error().code() == Code::kDeadlineExceeded) return timed_out();
      if (n.error().code() == Code::kUnavailable) {
        eof = true;  // dropped without close_notify: as a closed connection
        return Status::OK();
      }
      return Status::Unavailable("read from " + where_ + ": " + std::string(n.error().message()));
    }
    while (true) {
      int ready = PollOne(fd, POLLIN, RemainingMs(deadline));
      if (ready == 0) return timed_out();
      if (ready < 0) return Status::IoError("poll", errno);
      size_t old = buf.size();
      buf.resize(old + kReadChunk);
      ssize_t n = ::recv(fd, buf.data() + old, kReadChunk, 0);
      buf.resize(old + static_cast<size_t>(std::max<ssize_t>(n, 0)));
      if (n > 0) return Status::OK();
      if (n == 0) {
        eof = true;
        return Status::OK();
      }
      if (errno == EINTR || errno == EAGAIN) continue;
      return Status::IoError("recv from " + where_, errno);
    }
  };
  auto lost = [&] {
    *nothing_received = buf.empty();
    if (send_errno != 0 && buf.empty()) {
      return Status::IoError("send to " + where_, send_errno);
    }
    return Status::Unavailable(where_ + " closed the connection" +
                               (buf.empty() ? std::string() : " mid-response"));
  };

  HttpResponse resp;
  std::map<std::string, std::string> headers;
  bool http10 = false;
  size_t head_end;
  while (true) {
    size_t scanned = 0;
    while ((head_end = buf.find("\r\n\r\n", scanned)) == std::string::npos) {
      if (buf.size() > kMaxHeaderBytes) return Status::Protocol("response headers exceed 64 KiB");
      scanned = buf.size() >= 3 ? buf.size() - 3 : 0;
      if (eof) return lost();
      Status st = read_more();
      if (!st.ok()) {
        if (st.code() == Code::kUnavailable) *nothing_received = buf.empty();
        return st;
      }
    }
    std::string_view head = std::string_view(buf).substr(0, head_end);
    std::string_view line = head.substr(0, head.find("\r\n"));
    // "HTTP/1.1 200 OK"
    if (line.size() < 12 || line.substr(0, 7) != "HTTP/1." || line[8] != ' ' ||
        (line.size() > 12 && line[12] != ' ')) {
      return Status::Protocol("malformed response status line from pororocad");
    }
    http10 = line[7] == '0';
    int status = 0;
    auto [ptr, ec] = std::from_chars(line.data() + 9, line.data() + 12, status);
    if (ec != std::errc() || ptr != line.data() + 12 || status < 100) {
      return Status::Protocol("malformed response status code from pororocad");
    }
    if (status < 200) {  // interim (100 Continue): the real response follows
      buf.erase(0, head_end + 4);
      continue;
    }
    std::string err;
    std::string_view fields = line.size() < head.size() ? head.substr(line.size() + 2) : std::string_view();
    if (!ParseHeaderFields(fields, &headers, &err)) return Status::Protocol("response: " + err);
    resp.status = status;
    break;
  }
  buf.erase(0, head_end + 4);

  if (headers.count("transfer-encoding") != 0) {
    return Status::Protocol("chunked responses are not supported");
  }
  auto cl = headers.find("content-length");
  bool keep = !eof;
  if (cl != headers.end()) {
    size_t length = 0;
    if (!ParseSize(cl->second, &length) || length > kMaxClientBodyBytes) {
      return Status::Protocol("bad response Content-Length '" + cl->second + "'");
    }
    buf.reserve(length);
    while (buf.size() < length) {
      if (eof) return lost();
      PORO_RETURN_IF_ERROR(read_more());
    }
    if (buf.size() > length) keep = false;  // unsolicited bytes: do not trust this connection
    buf.resize(length);
  } else {
    // No length: the body runs to the end of the connection.
    while (!eof) {
      if (buf.size() > kMaxClientBodyBytes) return Status::Protocol("response body too large");
      PORO_RETURN_IF_ERROR(read_more());
    }
    keep = false;
  }
  resp.body = std::move(buf);

  auto conn = headers.find("connection");
  if (conn != headers.end() && HasToken(conn->second, "close")) keep = false;
  if (http10 && (conn == headers.end() || !HasToken(conn->second, "keep-alive"))) keep = false;
  if (send_errno != 0) keep = false;
  if (auto ct = headers.find("content-type"); ct != headers.end()) {
    resp.content_type = ct->second;
  } else {
    resp.content_type.clear();
  }
  resp.headers.assign(headers.begin(), headers.end());

  if (keep) {
    reused_ = true;
  } else {
    Drop();
  }
  return resp;
}

}  // namespace pororoca::api
