#include "transport/fault.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <thread>
#include <vector>

namespace pororoca::transport {

Status FaultInjectionChannel::SendCorrupted(std::span<const std::byte> header, std::vector<std::byte> payload,
                                            const TransportOptions& opts) {
  payload[payload.size() / 2] ^= std::byte{0x5a};
  if (!opts_.forge || header.size() > kMaxHeader) return MessageChannelWrapper::Send(header, payload, opts);
  std::array<std::byte, kMaxHeader> h;
  std::copy(header.begin(), header.end(), h.begin());
  auto forged = std::span(h.data(), header.size());
  opts_.forge(forged, payload);
  return MessageChannelWrapper::Send(forged, payload, opts);
}

Status FaultInjectionChannel::Send(std::span<const std::byte> header, std::span<const std::byte> payload,
                                   const TransportOptions& opts) {
  if (payload.empty()) return MessageChannelWrapper::Send(header, payload, opts);
  if (opts_.send_delay.count() > 0) std::this_thread::sleep_for(opts_.send_delay);
  uint64_t n = counter_->fetch_add(1) + 1;
  if (opts_.corrupt_every > 0 && n % opts_.corrupt_every == 0) {
    return SendCorrupted(header, std::vector<std::byte>(payload.begin(), payload.end()), opts);
  }
  return MessageChannelWrapper::Send(header, payload, opts);
}

Status FaultInjectionChannel::SendFile(std::span<const std::byte> header, int fd, uint64_t offset, size_t len,
                                       const TransportOptions& opts) {
  if (len == 0) return MessageChannelWrapper::SendFile(header, fd, offset, len, opts);
  // A backend without sendfile: the caller sends with Send(), which counts and delays then.
  if (no_sendfile_) return Status::NotSupported("this transport cannot send from a file");
  if (opts_.send_delay.count() > 0) std::this_thread::sleep_for(opts_.send_delay);
  uint64_t n = counter_->fetch_add(1) + 1;
  if (opts_.corrupt_every > 0 && n % opts_.corrupt_every == 0) {
    std::vector<std::byte> copy(len);
    ssize_t got = ::pread(fd, copy.data(), len, static_cast<off_t>(offset));
    if (got != static_cast<ssize_t>(len)) return Status::IoError("fault injection: pread", errno);
    return SendCorrupted(header, std::move(copy), opts);
  }
  Status s = MessageChannelWrapper::SendFile(header, fd, offset, len, opts);
  if (s.code() == Code::kNotSupported) {
    no_sendfile_ = true;
    counter_->fetch_sub(1);  // this message is counted when it goes through Send()
  }
  return s;
}

}  // namespace pororoca::transport
