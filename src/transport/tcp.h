// TCP building blocks: listening, connecting, socket tuning, a byte Stream over a socket and the
// data path's MessageChannel over a socket.
//
// Sockets stay in blocking mode. Calls with a non-zero TransportOptions::idle_timeout switch to
// MSG_DONTWAIT + poll(2) so that a stalled peer turns into kDeadlineExceeded; calls without one use
// plain blocking syscalls (one sendmsg / one recv(MSG_WAITALL) for a large payload).
//
// Thread-safety: TcpStream is used by one thread at a time. TcpMessageChannel allows one thread in
// Send and another in Receive at the same time (their state is disjoint). Shutdown() of either may be
// called from any thread and unblocks pending calls, which then fail with kCancelled. Close() must
// not race with any other call.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "base/unique_fd.h"
#include "pororoca/status.h"
#include "pororoca/transport.h"

namespace pororoca::transport {

struct SocketOptions {
  int sndbuf = 0;  // SO_SNDBUF in bytes; 0 = leave kernel autotuning alone
  int rcvbuf = 0;  // SO_RCVBUF in bytes; 0 = leave kernel autotuning alone
  // TCP_CONGESTION, e.g. "bbr" or "cubic"; empty = system default. Failure to set it is logged as a
  // warning (the module may not be loaded or allowed), never an error.
  std::string congestion;
  bool nodelay = true;  // TCP_NODELAY
};

// "127.0.0.1:7001" or "[::1]:7001" -> (host, port). The host may be a name. Port 0 is accepted.
// Malformed input is kInvalidArgument.
Result<std::pair<std::string, uint16_t>> ParseHostPort(const std::string& s);
// Inverse of ParseHostPort: brackets hosts that contain ':'.
std::string FormatHostPort(const std::string& host, uint16_t port);

// Binds and listens (SO_REUSEADDR, close-on-exec). host "" = all addresses; port 0 = ephemeral
// (read it back with LocalPort).
Result<UniqueFd> TcpListen(const std::string& host, uint16_t port, int backlog);
Result<uint16_t> LocalPort(int fd);

// Connects with a deadline (timeout 0 = the kernel's). Refused/unreachable is a retryable
// kUnavailable whose message reads "connect 127.0.0.1:7001: Connection refused"; a timeout is
// kDeadlineExceeded. Errors carry Side::kNetwork. The returned socket is blocking, TCP_NODELAY set.
Result<UniqueFd> TcpConnect(const std::string& host, uint16_t port, std::chrono::milliseconds timeout);

// Accepts one connection (blocking; EINTR and ECONNABORTED are retried). The overload with a timeout
// returns kDeadlineExceeded when nobody connects in time. ::shutdown() of the listening socket from
// another thread unblocks a waiting accept (it then fails).
Result<UniqueFd> TcpAccept(int listen_fd);
Result<UniqueFd> TcpAccept(int listen_fd, std::chrono::milliseconds timeout);

Status ApplySocketOptions(int fd, const SocketOptions& opts);

// "ip:port" / "[ip6]:port" of the socket's peer; "?" if unknown.
std::string PeerAddress(int fd);
// The numeric IP address a connected socket has at this end (the one its peer reached).
Result<std::string> LocalHost(int fd);
// The port of an AF_INET or AF_INET6 address (0 for another family).
uint16_t SockaddrPort(const sockaddr_storage& ss);

class TcpStream : public Stream {
 public:
  explicit TcpStream(UniqueFd fd);
  ~TcpStream() override = default;
  TcpStream(const TcpStream&) = delete;
  TcpStream& operator=(const TcpStream&) = delete;

  Status WriteAll(std::span<const std::byte> data, const TransportOptions& opts) override;
  Result<size_t> ReadSome(std::span<std::byte> buf, const TransportOptions& opts) override;
  // shutdown(SHUT_WR) so the peer reads EOF, then close(2).
  Status Close(const TransportOptions& opts) override;
  // ::shutdown(SHUT_RDWR); pending and later calls fail with kCancelled.
  void Shutdown() override;
  std::string peer_address() const override { return peer_; }

  int fd() const { return fd_.get(); }
  // Gives the socket back (e.g. to hand it to TlsStream). The stream is unusable afterwards.
  UniqueFd ReleaseFd() { return std::move(fd_); }

 private:
  UniqueFd fd_;
  std::string peer_;
  std::atomic<bool> shutdown_{false};
};

// Wire framing of one message (all little-endian):
//   message := header_len:u32 payload_len:u32 header[header_len] payload[payload_len]
//   1 <= header_len <= MessageChannel::kMaxHeader
// After any error other than kDeadlineExceeded from Send/Receive the framing state is unknown and the
// channel must be closed.
class TcpMessageChannel : public MessageChannel {
 public:
  explicit TcpMessageChannel(UniqueFd fd);
  ~TcpMessageChannel() override = default;
  TcpMessageChannel(const TcpMessageChannel&) = delete;
  TcpMessageChannel& operator=(const TcpMessageChannel&) = delete;

  // header must be 1..kMaxHeader bytes (kInvalidArgument otherwise). One sendmsg with three iovecs.
  Status Send(std::span<const std::byte> header, std::span<const std::byte> payload,
              const TransportOptions& opts) override;
  // The sink's buffer receives the payload directly (only bytes already read ahead are copied). A sink
  // buffer smaller than payload_len is kInvalidArgument.
  // prefix+header with MSG_MORE, then sendfile(2) of the payload (no user-space copy).
  Status SendFile(std::span<const std::byte> header, int fd, uint64_t offset, size_t len,
                  const TransportOptions& opts) override;
  Result<Received> Receive(std::span<std::byte> header_buf, const PayloadSink& sink, size_t max_payload,
                           const TransportOptions& opts) override;
  Status Close(const TransportOptions& opts) override;
  void Shutdown() override;
  std::string peer_address() const override { return peer_; }
  const char* name() const override { return "tcp"; }
  // TCP_INFO's tcpi_rtt.
  std::optional<std::chrono::microseconds> rtt() const override;

  int fd() const { return fd_.get(); }

  static constexpr size_t kPrefixSize = 8;

 private:
  // Ensures at least `n` bytes are buffered (n <= rbuf_.size()). `at_boundary` selects the error for
  // an EOF before any byte of a message arrived.
  Status FillBuffer(size_t n, bool at_boundary, const TransportOptions& opts);
  Status ErrorFor(std::string_view what, int err) const;
  // Payloads of at least kLowatMin bytes are received with one wake-up per kLowatMax bytes.
  static constexpr size_t kLowatMin = 256 << 10, kLowatMax = 512 << 10;
  // SO_RCVLOWAT for the next wait (only a changed value costs a syscall); see Receive.
  void SetRcvLowat(int bytes);

  UniqueFd fd_;
  std::string peer_;
  std::atomic<bool> shutdown_{false};
  // Receive-side read-ahead: bytes [rpos_, rend_) of rbuf_ are unread. Only Receive touches these.
  std::vector<std::byte> rbuf_;
  size_t rpos_ = 0;
  size_t rend_ = 0;
  int rcvlowat_ = 1;
};

std::unique_ptr<MessageChannel> MakeTcpMessageChannel(UniqueFd fd);

}  // namespace pororoca::transport
