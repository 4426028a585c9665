#include "transport/tcp.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <limits>

#include "base/coding.h"
#include "base/log.h"
#include "base/poll.h"

namespace pororoca::transport {
namespace {

using Clock = std::chrono::steady_clock;

// Read-ahead for prefix + header; small payloads that arrive with them are taken from here too.
constexpr size_t kReadAhead = 8192;
static_assert(kReadAhead >= TcpMessageChannel::kPrefixSize + MessageChannel::kMaxHeader);

Status NetError(std::string_view context, int err) {
  Status s = Status::IoError(context, err);
  s.WithSide(Side::kNetwork);
  return s;
}

struct AddrInfoFree {
  void operator()(addrinfo* p) const noexcept { ::freeaddrinfo(p); }
};
using AddrInfoPtr = std::unique_ptr<addrinfo, AddrInfoFree>;

Result<AddrInfoPtr> Resolve(const std::string& host, uint16_t port, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
  addrinfo* res = nullptr;
  std::string service = std::to_string(port);
  int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &res);
  if (rc != 0) {
    Status s = Status::Unavailable("resolve " + host + ": " + ::gai_strerror(rc));
    s.WithSide(Side::kNetwork);
    return s;
  }
  return AddrInfoPtr(res);
}

std::string FormatSockaddr(const sockaddr_storage& ss) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    ::inet_ntop(AF_INET, &a->sin_addr, buf, sizeof(buf));
    return FormatHostPort(buf, ntohs(a->sin_port));
  }
  if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    ::inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof(buf));
    return FormatHostPort(buf, ntohs(a->sin6_port));
  }
  return "?";
}

Status SetBlocking(int fd, bool blocking) {
  int fl = ::fcntl(fd, F_GETFL);
  if (fl < 0) return Status::IoError("fcntl F_GETFL", errno);
  int nfl = blocking ? (fl & ~O_NONBLOCK) : (fl | O_NONBLOCK);
  if (nfl != fl && ::fcntl(fd, F_SETFL, nfl) < 0) return Status::IoError("fcntl F_SETFL", errno);
  return Status::OK();
}

// recv(2) that absorbs EINTR and, with an idle timeout or `in_poll`, waits with poll between
// MSG_DONTWAIT tries (so never inside recv). When the poll times out, one last try still takes bytes
// that arrived below the socket's SO_RCVLOWAT: that link is slow, not idle. Returns bytes received
// (0 = EOF) or -1 with errno set (ETIMEDOUT on idle timeout).
ssize_t RecvWait(int fd, void* buf, size_t len, int flags, const TransportOptions& opts,
                 bool in_poll = false) {
  const bool timed = opts.idle_timeout.count() > 0;
  if (timed || in_poll) flags |= MSG_DONTWAIT;
  for (bool last_try = false;;) {
    ssize_t n = ::recv(fd, buf, len, flags);
    if (n >= 0) return n;
    if (errno == EINTR) continue;
    if ((flags & MSG_DONTWAIT) && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (last_try) {
        errno = ETIMEDOUT;
        return -1;
      }
      int rc = PollOne(fd, POLLIN, timed ? opts.idle_timeout : std::chrono::milliseconds(-1));
      if (rc < 0) return -1;
      last_try = rc == 0;
      continue;
    }
    return -1;
  }
}

// Sends every byte of iov[0..iovcnt) (the array is modified). EINTR, short writes and, with an idle
// timeout, EAGAIN are handled here. Returns 0 or an errno (ETIMEDOUT on idle timeout).
int SendAllV(int fd, iovec* iov, int iovcnt, const TransportOptions& opts) {
  const bool timed = opts.idle_timeout.count() > 0;
  const int flags = MSG_NOSIGNAL | (timed ? MSG_DONTWAIT : 0);
  while (iovcnt > 0 && iov->iov_len == 0) {
    ++iov;
    --iovcnt;
  }
  while (iovcnt > 0) {
    msghdr mh{};
    mh.msg_iov = iov;
    mh.msg_iovlen = size_t(iovcnt);
    ssize_t n = ::sendmsg(fd, &mh, flags);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (timed && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        int rc = PollOne(fd, POLLOUT, opts.idle_timeout);
        if (rc == 0) return ETIMEDOUT;
        if (rc < 0) return errno;
        continue;
      }
      return errno;
    }
    // Short write: drop the fully sent iovecs and advance into the partially sent one.
    size_t sent = size_t(n);
    while (iovcnt > 0 && sent >= iov->iov_len) {
      sent -= iov->iov_len;
      ++iov;
      --iovcnt;
    }
    if (iovcnt > 0) {
      iov->iov_base = static_cast<char*>(iov->iov_base) + sent;
      iov->iov_len -= sent;
    }
  }
  return 0;
}

Status TimeoutStatus(std::string_view what, const std::string& peer, const TransportOptions& opts) {
  Status s = Status::DeadlineExceeded(std::string(what) + " " + peer + ": no progress for " +
                                      std::to_string(opts.idle_timeout.count()) + " ms");
  s.WithSide(Side::kNetwork);
  return s;
}

}  // namespace

Result<std::pair<std::string, uint16_t>> ParseHostPort(const std::string& s) {
  std::string host;
  std::string port_str;
  if (!s.empty() && s[0] == '[') {
    size_t close = s.find(']');
    if (close == std::string::npos || close + 1 >= s.size() || s[close + 1] != ':') {
      return Status::InvalidArgument("bad address '" + s + "': expected [ipv6]:port");
    }
    host = s.substr(1, close - 1);
    port_str = s.substr(close + 2);
  } else {
    size_t colon = s.rfind(':');
    if (colon == std::string::npos || s.find(':') != colon) {
      return Status::InvalidArgument("bad address '" + s + "': expected host:port or [ipv6]:port");
    }
    host = s.substr(0, colon);
    port_str = s.substr(colon + 1);
  }
  if (host.empty()) return Status::InvalidArgument("bad address '" + s + "': empty host");
  if (port_str.empty() || port_str.size() > 5 ||
      !std::all_of(port_str.begin(), port_str.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return Status::InvalidArgument("bad address '" + s + "': bad port");
  }
  unsigned long port = std::stoul(port_str);
  if (port > 65535) return Status::InvalidArgument("bad address '" + s + "': port out of range");
  return std::make_pair(host, uint16_t(port));
}

std::string FormatHostPort(const std::string& host, uint16_t port) {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

Result<UniqueFd> TcpListen(const std::string& host, uint16_t port, int backlog) {
  const std::string where = FormatHostPort(host.empty() ? "*" : host, port);
  PORO_ASSIGN_OR_RETURN(AddrInfoPtr ai, Resolve(host, port, /*passive=*/true));
  Status last = Status::Unavailable("listen " + where + ": no address");
  for (addrinfo* a = ai.get(); a != nullptr; a = a->ai_next) {
    UniqueFd fd(::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol));
    if (!fd.valid()) {
      last = NetError("socket for " + where, errno);
      continue;
    }
    int one = 1;
    if (::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0) {
      return NetError("setsockopt SO_REUSEADDR " + where, errno);
    }
    if (::bind(fd.get(), a->ai_addr, a->ai_addrlen) < 0) {
      last = NetError("bind " + where, errno);
      continue;
    }
    if (::listen(fd.get(), backlog) < 0) {
      last = NetError("listen " + where, errno);
      continue;
    }
    return fd;
  }
  return last;
}

Result<uint16_t> LocalPort(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) < 0) {
    return Status::IoError("getsockname", errno);
  }
  if (ss.ss_family != AF_INET && ss.ss_family != AF_INET6)
    return Status::InvalidArgument("LocalPort: not an IP socket");
  return SockaddrPort(ss);
}

uint16_t SockaddrPort(const sockaddr_storage& ss) {
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&ss)->sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_port);
  return 0;
}

Result<std::string> LocalHost(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) < 0)
    return Status::IoError("getsockname", errno);
  char buf[INET6_ADDRSTRLEN] = {};
  const void* addr = ss.ss_family == AF_INET6
                         ? static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(&ss)->sin6_addr)
                         : static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(&ss)->sin_addr);
  if ((ss.ss_family != AF_INET && ss.ss_family != AF_INET6) ||
      ::inet_ntop(ss.ss_family, addr, buf, sizeof(buf)) == nullptr) {
    return Status::InvalidArgument("LocalHost: not an IP socket");
  }
  return std::string(buf);
}

std::string PeerAddress(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) < 0) return "?";
  return FormatSockaddr(ss);
}

Result<UniqueFd> TcpConnect(const std::string& host, uint16_t port, std::chrono::milliseconds timeout) {
  const std::string where = FormatHostPort(host, port);
  PORO_ASSIGN_OR_RETURN(AddrInfoPtr ai, Resolve(host, port, /*passive=*/false));
  const bool timed = timeout.count() > 0;
  const auto deadline = Clock::now() + timeout;
  Status last = Status::Unavailable("connect " + where + ": no address");
  for (addrinfo* a = ai.get(); a != nullptr; a = a->ai_next) {
    UniqueFd fd(::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol));
    if (!fd.valid()) {
      last = NetError("socket for " + where, errno);
      continue;
    }
    // Non-blocking connect so that the deadline covers the SYN exchange.
    int rc = ::connect(fd.get(), a->ai_addr, a->ai_addrlen);
    if (rc < 0 && errno != EINPROGRESS && errno != EINTR) {
      last = NetError("connect " + where, errno);
      continue;
    }
    if (rc < 0) {
      std::chrono::milliseconds left{-1};  // no limit
      if (timed) {
        left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (left.count() <= 0) left = std::chrono::milliseconds(1);
      }
      int prc = PollOne(fd.get(), POLLOUT, left);
      if (prc == 0) {
        Status s = Status::DeadlineExceeded("connect " + where + ": timed out after " +
                                            std::to_string(timeout.count()) + " ms");
        s.WithSide(Side::kNetwork);
        return s;
      }
      if (prc < 0) return NetError("poll connect " + where, errno);
      int err = 0;
      socklen_t len = sizeof(err);
      if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
      if (err != 0) {
        last = NetError("connect " + where, err);
        continue;
      }
    }
    PORO_RETURN_IF_ERROR(SetBlocking(fd.get(), true));
    int one = 1;
    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
  }
  return last;
}

Result<UniqueFd> TcpAccept(int listen_fd) { return TcpAccept(listen_fd, std::chrono::milliseconds(0)); }

Result<UniqueFd> TcpAccept(int listen_fd, std::chrono::milliseconds timeout) {
  const bool timed = timeout.count() > 0;
  for (;;) {
    if (timed) {
      int rc = PollOne(listen_fd, POLLIN, timeout);
      if (rc == 0)
        return Status::DeadlineExceeded("accept: nobody connected within " + std::to_string(timeout.count()) +
                                        " ms");
      if (rc < 0) return Status::IoError("poll accept", errno);
    }
    int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      // ECONNABORTED: the client gave up between SYN and accept; wait for the next one.
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return Status::IoError("accept", errno);
    }
    UniqueFd out(fd);
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return out;
  }
}

Status ApplySocketOptions(int fd, const SocketOptions& opts) {
  // The *FORCE variants pass net.core.[wr]mem_max for a process with CAP_NET_ADMIN; without it the
  // plain option applies, which the kernel caps at that limit. After one refusal the process stops
  // asking (each refused capability check may be logged by a security module).
  static std::atomic<bool> may_force{true};
  auto set = [fd](int force_opt, int opt, int v) {
    if (may_force.load(std::memory_order_relaxed)) {
      if (::setsockopt(fd, SOL_SOCKET, force_opt, &v, sizeof(v)) == 0) return 0;
      if (errno == EPERM) may_force.store(false, std::memory_order_relaxed);
    }
    return ::setsockopt(fd, SOL_SOCKET, opt, &v, sizeof(v));
  };
  if (opts.sndbuf > 0 && set(SO_SNDBUFFORCE, SO_SNDBUF, opts.sndbuf) < 0) {
    return Status::IoError("setsockopt SO_SNDBUF " + std::to_string(opts.sndbuf), errno);
  }
  if (opts.rcvbuf > 0 && set(SO_RCVBUFFORCE, SO_RCVBUF, opts.rcvbuf) < 0) {
    return Status::IoError("setsockopt SO_RCVBUF " + std::to_string(opts.rcvbuf), errno);
  }
  int nodelay = opts.nodelay ? 1 : 0;
  if (::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &nodelay, sizeof(nodelay)) < 0) {
    return Status::IoError("setsockopt TCP_NODELAY", errno);
  }
  if (!opts.congestion.empty() && ::setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, opts.congestion.data(),
                                               socklen_t(opts.congestion.size())) < 0) {
    // Often the module is not loaded or not in net.ipv4.tcp_allowed_congestion_control.
    PORO_LOG(WARNING) << "cannot set TCP congestion control '" << opts.congestion
                      << "': " << std::strerror(errno) << "; keeping the system default";
  }
  return Status::OK();
}

TcpStream::TcpStream(UniqueFd fd) : fd_(std::move(fd)), peer_(PeerAddress(fd_.get())) {}

Status TcpStream::WriteAll(std::span<const std::byte> data, const TransportOptions& opts) {
  iovec iov{const_cast<std::byte*>(data.data()), data.size()};  // sendmsg does not write to it
  int err = SendAllV(fd_.get(), &iov, 1, opts);
  if (err == 0) return Status::OK();
  if (shutdown_.load()) return Status::Cancelled("send to " + peer_ + ": stream shut down");
  if (err == ETIMEDOUT) return TimeoutStatus("send to", peer_, opts);
  return NetError("send to " + peer_, err);
}

Result<size_t> TcpStream::ReadSome(std::span<std::byte> buf, const TransportOptions& opts) {
  if (buf.empty()) return size_t{0};
  ssize_t n = RecvWait(fd_.get(), buf.data(), buf.size(), 0, opts);
  if (shutdown_.load()) return Status::Cancelled("recv from " + peer_ + ": stream shut down");
  if (n >= 0) return size_t(n);
  if (errno == ETIMEDOUT) return TimeoutStatus("recv from", peer_, opts);
  return NetError("recv from " + peer_, errno);
}

Status TcpStream::Close(const TransportOptions& /*opts*/) {
  if (!fd_.valid()) return Status::OK();
  ::shutdown(fd_.get(), SHUT_WR);  // ENOTCONN after a reset is fine: close() below still runs.
  return fd_.Close();
}

void TcpStream::Shutdown() {
  shutdown_.store(true);
  if (fd_.valid()) ::shutdown(fd_.get(), SHUT_RDWR);
}

TcpMessageChannel::TcpMessageChannel(UniqueFd fd)
    : fd_(std::move(fd)), peer_(PeerAddress(fd_.get())), rbuf_(kReadAhead) {}

Status TcpMessageChannel::ErrorFor(std::string_view what, int err) const {
  if (shutdown_.load()) return Status::Cancelled(std::string(what) + " " + peer_ + ": channel shut down");
  if (err == ETIMEDOUT) {
    Status s = Status::DeadlineExceeded(std::string(what) + " " + peer_ + ": idle timeout");
    s.WithSide(Side::kNetwork);
    return s;
  }
  return NetError(std::string(what) + " " + peer_, err);
}

Status TcpMessageChannel::Send(std::span<const std::byte> header, std::span<const std::byte> payload,
                               const TransportOptions& opts) {
  if (header.empty() || header.size() > kMaxHeader) {
    return Status::InvalidArgument("message header of " + std::to_string(header.size()) +
                                   " bytes; must be 1.." + std::to_string(kMaxHeader));
  }
  if (payload.size() > std::numeric_limits<uint32_t>::max()) {
    return Status::InvalidArgument("payload of " + std::to_string(payload.size()) + " bytes is too large");
  }
  std::byte prefix[kPrefixSize];
  EncodeFixed32(prefix, uint32_t(header.size()));
  EncodeFixed32(prefix + 4, uint32_t(payload.size()));
  // sendmsg never writes through iov_base; the casts only satisfy the C API.
  iovec iov[3] = {{prefix, kPrefixSize},
                  {const_cast<std::byte*>(header.data()), header.size()},
                  {const_cast<std::byte*>(payload.data()), payload.size()}};
  int err = SendAllV(fd_.get(), iov, 3, opts);
  if (err != 0) return ErrorFor("send to", err);
  return Status::OK();
}

Status TcpMessageChannel::SendFile(std::span<const std::byte> header, int file_fd, uint64_t offset,
                                   size_t len, const TransportOptions& opts) {
  if (header.empty() || header.size() > kMaxHeader) {
    return Status::InvalidArgument("message header of " + std::to_string(header.size()) +
                                   " bytes; must be 1.." + std::to_string(kMaxHeader));
  }
  if (len > std::numeric_limits<uint32_t>::max()) {
    return Status::InvalidArgument("payload of " + std::to_string(len) + " bytes is too large");
  }
  std::byte prefix[kPrefixSize];
  EncodeFixed32(prefix, uint32_t(header.size()));
  EncodeFixed32(prefix + 4, uint32_t(len));
  iovec iov[2] = {{prefix, kPrefixSize}, {const_cast<std::byte*>(header.data()), header.size()}};
  // MSG_MORE keeps the small prefix and header in the same segment as the file's first bytes.
  const bool timed = opts.idle_timeout.count() > 0;
  {
    int err = 0;
    size_t want = kPrefixSize + header.size(), sent = 0;
    while (sent < want) {
      msghdr mh{};
      mh.msg_iov = iov;
      mh.msg_iovlen = 2;
      ssize_t n = ::sendmsg(fd_.get(), &mh, MSG_NOSIGNAL | MSG_MORE | (timed ? MSG_DONTWAIT : 0));
      if (n < 0) {
        if (errno == EINTR) continue;
        if (timed && (errno == EAGAIN || errno == EWOULDBLOCK)) {
          int rc = PollOne(fd_.get(), POLLOUT, opts.idle_timeout);
          if (rc == 0) return ErrorFor("send to", ETIMEDOUT);
          if (rc < 0) return ErrorFor("send to", errno);
          continue;
        }
        err = errno;
        break;
      }
      sent += size_t(n);
      size_t skip = size_t(n);
      for (auto& v : iov) {
        size_t d = std::min(skip, v.iov_len);
        v.iov_base = static_cast<char*>(v.iov_base) + d;
        v.iov_len -= d;
        skip -= d;
      }
    }
    if (err != 0) return ErrorFor("send to", err);
  }
  off_t off = static_cast<off_t>(offset);
  size_t left = len;
  while (left > 0) {
    ssize_t n = ::sendfile(fd_.get(), file_fd, &off, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        int rc = PollOne(fd_.get(), POLLOUT, timed ? opts.idle_timeout : std::chrono::milliseconds(-1));
        if (rc == 0) return ErrorFor("send to", ETIMEDOUT);
        if (rc < 0) return ErrorFor("send to", errno);
        continue;
      }
      return ErrorFor("sendfile to", errno);
    }
    if (n == 0) {
      // The file is shorter than announced (it shrank after it was hashed). The message's length is
      // already on the wire: fill it with zeros so the stream stays in step; the receiver's digest
      // check rejects the chunk and asks for it again, and the re-read finds the file changed.
      PORO_LOG(WARNING) << "sendfile to " << peer_ << ": the file ended " << left
                        << " bytes early (it shrank while being sent); sending zeros in their place";
      static const std::byte kZeros[64 << 10] = {};
      while (left > 0) {
        iovec zeros{const_cast<std::byte*>(kZeros), std::min(left, sizeof kZeros)};
        size_t n_zeros = zeros.iov_len;
        int err = SendAllV(fd_.get(), &zeros, 1, opts);
        if (err != 0) return ErrorFor("send to", err);
        left -= n_zeros;
      }
      break;
    }
    left -= size_t(n);
  }
  return Status::OK();
}

Status TcpMessageChannel::FillBuffer(size_t n, bool at_boundary, const TransportOptions& opts) {
  if (rend_ - rpos_ >= n) return Status::OK();
  SetRcvLowat(1);  // a header's length is unknown: any byte must wake us (a payload left it higher)
  if (rpos_ + n > rbuf_.size()) {
    std::memmove(rbuf_.data(), rbuf_.data() + rpos_, rend_ - rpos_);
    rend_ -= rpos_;
    rpos_ = 0;
  }
  while (rend_ - rpos_ < n) {
    ssize_t got = RecvWait(fd_.get(), rbuf_.data() + rend_, rbuf_.size() - rend_, 0, opts);
    if (got < 0) return ErrorFor("recv from", errno);
    if (got == 0) {
      if (shutdown_.load()) return ErrorFor("recv from", 0);
      Status s = (at_boundary && rend_ == rpos_) ? Status::Unavailable("closed")
                                                 : Status::Unavailable("connection closed mid-message");
      s.WithSide(Side::kNetwork);
      return s;
    }
    rend_ += size_t(got);
  }
  return Status::OK();
}

Result<MessageChannel::Received> TcpMessageChannel::Receive(std::span<std::byte> header_buf,
                                                            const PayloadSink& sink, size_t max_payload,
                                                            const TransportOptions& opts) {
  PORO_RETURN_IF_ERROR(FillBuffer(kPrefixSize, /*at_boundary=*/true, opts));
  const size_t header_len = DecodeFixed32(rbuf_.data() + rpos_);
  const size_t payload_len = DecodeFixed32(rbuf_.data() + rpos_ + 4);
  if (header_len == 0 || header_len > kMaxHeader) {
    return Status::Protocol("message from " + peer_ + " has header length " + std::to_string(header_len) +
                            "; must be 1.." + std::to_string(kMaxHeader));
  }
  if (payload_len > max_payload) {
    return Status::Protocol("message from " + peer_ + " has a payload of " + std::to_string(payload_len) +
                            " bytes, above the limit of " + std::to_string(max_payload));
  }
  if (header_buf.size() < header_len) {
    return Status::InvalidArgument("header buffer of " + std::to_string(header_buf.size()) +
                                   " bytes is smaller than the message header");
  }
  PORO_RETURN_IF_ERROR(FillBuffer(kPrefixSize + header_len, /*at_boundary=*/false, opts));
  std::memcpy(header_buf.data(), rbuf_.data() + rpos_ + kPrefixSize, header_len);
  rpos_ += kPrefixSize + header_len;

  PORO_ASSIGN_OR_RETURN(std::span<std::byte> dst, sink(header_buf.first(header_len), payload_len));
  if (dst.size() < payload_len) {
    return Status::InvalidArgument("payload sink returned " + std::to_string(dst.size()) +
                                   " bytes for a payload of " + std::to_string(payload_len));
  }
  // Only what was read ahead is copied; the rest goes straight from the socket into dst.
  size_t have = std::min(payload_len, rend_ - rpos_);
  if (have > 0) std::memcpy(dst.data(), rbuf_.data() + rpos_, have);
  rpos_ += have;
  if (rpos_ == rend_) rpos_ = rend_ = 0;
  // A mark that needs more than the receive buffer holds makes the kernel grow the buffer but also
  // clamp the advertised window to the mark (tcp_set_rcvlowat): 512 KiB per 100 ms RTT, a tenth of a
  // long link. So the mark stays at most a quarter of the buffer autotuning has reached so far.
  size_t lowat_cap = 0;
  if (payload_len - have >= kLowatMin) {
    int rcvbuf = 0;
    socklen_t len = sizeof rcvbuf;
    if (::getsockopt(fd_.get(), SOL_SOCKET, SO_RCVBUF, &rcvbuf, &len) == 0 && rcvbuf > 0)
      lowat_cap = size_t(rcvbuf) / 4;
  }
  while (have < payload_len) {
    // A large payload arriving at less than memory speed (a WAN, or loopback under load) would wake this
    // thread for every packet (9 KB at MTU 9000, each wake-up a context switch: 19 % of the receiving
    // daemon's CPU over the emulated WAN). With SO_RCVLOWAT the kernel wakes it once per 512 KiB.
    // The kernel compares the low-water mark with the bytes queued, not with what a sleeping recv
    // still needs, so a recv that copied part of the payload and then slept could wait for bytes that
    // never come. Hence: poll (woken when at least the mark is queued), then a recv that does not
    // sleep, and the mark never above the bytes still due. It is put back to 1 before any other
    // wait (the rest of a payload below kLowatMin here, a header in FillBuffer).
    const size_t left = payload_len - have;
    const bool marked = left >= kLowatMin && lowat_cap >= kLowatMin;
    SetRcvLowat(marked ? int(std::min({left, kLowatMax, lowat_cap})) : 1);
    ssize_t got =
        RecvWait(fd_.get(), dst.data() + have, left, marked ? 0 : MSG_WAITALL, opts, /*in_poll=*/marked);
    if (got < 0) return ErrorFor("recv from", errno);
    if (got == 0) {
      if (shutdown_.load()) return ErrorFor("recv from", 0);
      Status s = Status::Unavailable("connection closed mid-message");
      s.WithSide(Side::kNetwork);
      return s;
    }
    have += size_t(got);
  }
  return Received{header_len, payload_len};
}

void TcpMessageChannel::SetRcvLowat(int bytes) {
  if (bytes == rcvlowat_) return;
  // Fails only for a descriptor that is no longer a socket, and then the recv fails as well.
  if (::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVLOWAT, &bytes, sizeof(bytes)) == 0) rcvlowat_ = bytes;
}

Status TcpMessageChannel::Close(const TransportOptions& /*opts*/) {
  if (!fd_.valid()) return Status::OK();
  ::shutdown(fd_.get(), SHUT_WR);  // the peer's Receive sees "closed" at a message boundary
  return fd_.Close();
}

std::optional<std::chrono::microseconds> TcpMessageChannel::rtt() const {
  struct tcp_info ti {};
  socklen_t len = sizeof ti;
  if (::getsockopt(fd_.get(), IPPROTO_TCP, TCP_INFO, &ti, &len) != 0 ||
      len < offsetof(tcp_info, tcpi_rttvar)) {
    return std::nullopt;
  }
  return std::chrono::microseconds(ti.tcpi_rtt);
}

void TcpMessageChannel::Shutdown() {
  shutdown_.store(true);
  if (fd_.valid()) ::shutdown(fd_.get(), SHUT_RDWR);
}

std::unique_ptr<MessageChannel> MakeTcpMessageChannel(UniqueFd fd) {
  return std::make_unique<TcpMessageChannel>(std::move(fd));
}

}  // namespace pororoca::transport
