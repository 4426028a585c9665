// FaultInjectionChannel: a MessageChannel decorator for tests and drills. It corrupts the payload of
// every Nth message sent (one flipped byte, in a private copy: the caller's buffer is untouched) and
// can slow sending down, so integration tests can prove that corruption is detected and re-sent, and
// can kill a daemon in the middle of a transfer. Enabled only by the daemon's [fault_injection]
// config section; off by default.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "pororoca/transport.h"

namespace pororoca::transport {

struct FaultOptions {
  unsigned corrupt_every = 0;               // 0 = never
  std::chrono::microseconds send_delay{0};  // sleep before each message with a payload
  // When set, a corrupted message's header is rewritten too (header copy, corrupted payload), as a
  // relay that tampers would: the daemon's forges the chunk's digest to match the new payload.
  std::function<void(std::span<std::byte> header, std::span<const std::byte> payload)> forge;
  bool active() const { return corrupt_every > 0 || send_delay.count() > 0; }
};

class FaultInjectionChannel : public MessageChannelWrapper {
 public:
  // `counter` is shared by all channels of a daemon, so "every Nth" spans streams.
  FaultInjectionChannel(std::unique_ptr<MessageChannel> target, FaultOptions opts,
                        std::shared_ptr<std::atomic<uint64_t>> counter)
      : MessageChannelWrapper(std::move(target)), opts_(opts), counter_(std::move(counter)) {}

  Status Send(std::span<const std::byte> header, std::span<const std::byte> payload,
              const TransportOptions& opts) override;
  Status SendFile(std::span<const std::byte> header, int fd, uint64_t offset, size_t len,
                  const TransportOptions& opts) override;

 private:
  // Flips one byte of `payload` (a private copy) and sends it, with a forged header if asked.
  Status SendCorrupted(std::span<const std::byte> header, std::vector<std::byte> payload,
                       const TransportOptions& opts);

  FaultOptions opts_;
  std::shared_ptr<std::atomic<uint64_t>> counter_;
  bool no_sendfile_ = false;  // the target said it cannot send from a file (used by the sending thread only)
};

}  // namespace pororoca::transport
