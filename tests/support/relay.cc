#include "support/relay.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>
#include <stdexcept>

namespace pororoca::test {
namespace {

constexpr size_t kBindBytes = 86;   // bind request, client -> server (src/proto/wire.h)
constexpr size_t kReplyBytes = 40;  // bind reply, server -> client

bool WriteAll(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// One direction of a relayed connection: where the next flip falls.
struct Direction {
  int from = -1, to = -1;
  bool open = true;
  bool flipping = false;
  uint64_t skip = 0;   // handshake bytes still to pass untouched
  uint64_t until = 0;  // bytes until the next flip
};

}  // namespace

FlippingRelay::FlippingRelay(uint64_t min_gap, uint64_t max_gap, uint64_t seed)
    : min_gap_(min_gap), max_gap_(std::max(min_gap, max_gap)), seed_(seed) {
  listen_ = UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!listen_.valid()) throw std::runtime_error("relay: socket");
  int one = 1;
  ::setsockopt(listen_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(listen_.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 ||
      ::listen(listen_.get(), 64) != 0) {
    throw std::runtime_error(std::string("relay: bind/listen: ") + std::strerror(errno));
  }
  socklen_t len = sizeof sa;
  ::getsockname(listen_.get(), reinterpret_cast<sockaddr*>(&sa), &len);
  port_ = ntohs(sa.sin_port);
  acceptor_ = std::thread([this] { AcceptLoop(); });
}

FlippingRelay::~FlippingRelay() {
  stop_ = true;
  acceptor_.join();
  std::vector<std::thread> threads;
  {
    MutexLock lock(&mu_);
    for (int fd : open_fds_) ::shutdown(fd, SHUT_RDWR);
    threads.swap(threads_);
  }
  for (auto& t : threads) t.join();
}

void FlippingRelay::AcceptLoop() {
  uint64_t n = 0;
  while (!stop_) {
    pollfd p{listen_.get(), POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    int fd = ::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    MutexLock lock(&mu_);
    open_fds_.push_back(fd);
    threads_.emplace_back([this, fd, s = seed_ + 7919 * ++n] { Serve(UniqueFd(fd), s); });
  }
}

void FlippingRelay::Serve(UniqueFd client, uint64_t seed) {
  UniqueFd server(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sa.sin_port = htons(target_.load());
  if (!server.valid() || ::connect(server.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) return;
  {
    MutexLock lock(&mu_);
    open_fds_.push_back(server.get());
  }
  int one = 1;
  ::setsockopt(server.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  ::setsockopt(client.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<uint64_t> gap(min_gap_, max_gap_);
  // Whether it is a data connection shows in the client's first 4 bytes.
  char magic[4];
  size_t have = 0;
  while (have < 4) {
    ssize_t r = ::recv(client.get(), magic + have, 4 - have, MSG_PEEK);
    if (r <= 0) return;
    have = static_cast<size_t>(r);
    if (have < 4) ::usleep(1000);
  }
  const bool data = std::memcmp(magic, "PORD", 4) == 0;
  if (data) data_connections_++;
  Direction dirs[2];
  dirs[0] = Direction{client.get(), server.get(), true, data, kBindBytes, gap(rng)};
  dirs[1] = Direction{server.get(), client.get(), true, data, kReplyBytes, gap(rng)};
  std::vector<char> buf(64 << 10);
  while (!stop_ && (dirs[0].open || dirs[1].open)) {
    pollfd p[2] = {{dirs[0].open ? dirs[0].from : -1, POLLIN, 0},
                   {dirs[1].open ? dirs[1].from : -1, POLLIN, 0}};
    if (::poll(p, 2, 100) <= 0) continue;
    for (int i = 0; i < 2; ++i) {
      Direction& d = dirs[i];
      if (!d.open || !(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t r = ::recv(d.from, buf.data(), buf.size(), 0);
      if (r <= 0) {
        d.open = false;
        ::shutdown(d.to, SHUT_WR);
        continue;
      }
      size_t n = static_cast<size_t>(r);
      if (d.flipping) {
        size_t at = 0;
        if (d.skip > 0) {
          at = static_cast<size_t>(std::min<uint64_t>(d.skip, n));
          d.skip -= at;
        }
        while (at < n) {
          const size_t step = static_cast<size_t>(std::min<uint64_t>(d.until, n - at));
          at += step;
          d.until -= step;
          if (d.until == 0 && at < n) {
            buf[at] = static_cast<char>(buf[at] ^ (1 << (rng() % 8)));
            flips_++;
            d.until = gap(rng);
          }
        }
      }
      if (!WriteAll(d.to, buf.data(), n)) {
        d.open = false;
        dirs[1 - i].open = false;
      }
    }
  }
  MutexLock lock(&mu_);
  std::erase(open_fds_, client.get());
  std::erase(open_fds_, server.get());
}

}  // namespace pororoca::test
