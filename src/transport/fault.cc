#include "transport/fault.h"

#include <unistd.h>

#include <cerrno>
#include <thread>
#include <vector>

namespace pororoca::transport {

Status FaultInjectionChannel::Send(std::span<const std::byte> header, std::span<const std::byte> payload,
                                   const TransportOptions& opts) {
  if (payload.empty()) return MessageChannelWrapper::Send(header, payload, opts);
  if (opts_.send_delay.count() > 0) std::this_thread::sleep_for(opts_.send_delay);
  uint64_t n = counter_->fetch_add(1) + 1;
  if (opts_.corrupt_every > 0 && n % opts_.corrupt_every == 0) {
    std::vector<std::byte> copy(payload.begin(), payload.end());
    copy[copy.size() / 2] ^= std::byte{0x5a};
    return MessageChannelWrapper::Send(header, copy, opts);
  }
  return MessageChannelWrapper::Send(header, payload, opts);
}

Status FaultInjectionChannel::SendFile(std::span<const std::byte> header, int fd, uint64_t offset, size_t len,
                                       const TransportOptions& opts) {
  if (len == 0) return MessageChannelWrapper::SendFile(header, fd, offset, len, opts);
  if (opts_.send_delay.count() > 0) std::this_thread::sleep_for(opts_.send_delay);
  uint64_t n = counter_->fetch_add(1) + 1;
  if (opts_.corrupt_every > 0 && n % opts_.corrupt_every == 0) {
    std::vector<std::byte> copy(len);
    ssize_t got = ::pread(fd, copy.data(), len, static_cast<off_t>(offset));
    if (got != static_cast<ssize_t>(len)) return Status::IoError("fault injection: pread", errno);
    copy[copy.size() / 2] ^= std::byte{0x5a};
    return MessageChannelWrapper::Send(header, copy, opts);
  }
  return MessageChannelWrapper::SendFile(header, fd, offset, len, opts);
}

}  // namespace pororoca::transport
