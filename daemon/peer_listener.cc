#include "daemon/peer_listener.h"

#include <poll.h>
#include <sys/socket.h>

#include <cstring>

#include "base/log.h"
#include "base/poll.h"
#include "transport/tcp.h"

namespace pororoca::daemon {

Status PeerListener::Listen(const std::string& listen) {
  PORO_ASSIGN_OR_RETURN(auto hp, transport::ParseHostPort(listen));
  auto fd = transport::TcpListen(hp.first, hp.second, 128);
  if (!fd.has_value()) return fd.error().Annotate("[network] listen " + listen);
  listen_ = std::move(*fd);
  host_ = hp.first;
  PORO_ASSIGN_OR_RETURN(port_, transport::LocalPort(listen_.get()));
  return Status::OK();
}

void PeerListener::Start() {
  thread_ = std::thread([this] { AcceptLoop(); });
}

void PeerListener::Stop() {
  if (stopping_.exchange(true)) return;
  if (listen_.valid()) ::shutdown(listen_.get(), SHUT_RDWR);
  if (thread_.joinable()) thread_.join();
}

void PeerListener::AcceptLoop() {
  while (!stopping_) {
    auto fd = transport::TcpAccept(listen_.get(), std::chrono::milliseconds(500));
    if (!fd.has_value()) {
      if (stopping_) return;
      if (fd.error().code() == Code::kDeadlineExceeded) continue;
      PORO_LOG(WARNING) << "accept: " << fd.error().ToString();
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    auto f = std::make_shared<UniqueFd>(std::move(*fd));  // std::function needs a copyable callable
    workers_->Spawn([this, f] { Serve(std::move(*f)); });
  }
}

void PeerListener::Serve(UniqueFd fd) {
  const std::string addr = transport::PeerAddress(fd.get());
  // One port for both kinds of connection: a data connection starts with "PORD", TLS with 0x16.
  if (PollOne(fd.get(), POLLIN, std::chrono::milliseconds(10000)) <= 0) {
    PORO_LOG(WARNING) << "peer " << addr << " sent nothing within 10 s";
    return;
  }
  char magic[4];
  ssize_t n = ::recv(fd.get(), magic, 4, MSG_PEEK | MSG_WAITALL);
  if (n == 4 && std::memcmp(magic, "PORD", 4) == 0) {
    if (Status s = binds_->Serve(std::move(fd)); !s.ok()) {
      PORO_LOG(WARNING) << "data connection from " << addr << " refused: " << s.ToString();
    }
    return;
  }
  on_control_(std::move(fd));
}

}  // namespace pororoca::daemon
