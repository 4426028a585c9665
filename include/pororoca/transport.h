// Transports: how bytes and chunk-sized messages move between two daemons.
//
// Stream is one ordered byte stream (a TCP connection, or TLS on top of one): the control channel
// uses it. MessageChannel carries the data path's messages, each a small header plus a payload
// received straight into a caller-provided (for RDMA: registered) buffer; TCP implements it over a
// Stream-like socket, libfabric and UCX backends implement it natively with tagged/RDM messages.
//
// Thread-safety: one owner at a time for each object, except that one thread may Send while another
// Receives on the same MessageChannel, and Shutdown() may be called from any thread to unblock both.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "pororoca/status.h"

namespace pororoca::transport {

struct TransportOptions {
  // Give up on a call that makes no progress for this long (kDeadlineExceeded). 0 = wait forever.
  std::chrono::milliseconds idle_timeout{0};
};

class Stream {
 public:
  virtual ~Stream() = default;
  // Writes all of `data` or fails. Short writes and EAGAIN/EINTR are handled inside.
  virtual Status WriteAll(std::span<const std::byte> data, const TransportOptions& opts) = 0;
  // Reads 1..buf.size() bytes; 0 means orderly EOF.
  virtual Result<size_t> ReadSome(std::span<std::byte> buf, const TransportOptions& opts) = 0;
  // Flushes and closes; reports peer errors.
  virtual Status Close(const TransportOptions& opts) = 0;
  // Unblocks pending reads and writes from another thread (they fail with kCancelled/kUnavailable).
  virtual void Shutdown() = 0;
  // "ip:port" of the other end.
  virtual std::string peer_address() const = 0;

  // Reads exactly buf.size() bytes; EOF before that is kUnavailable ("connection closed by peer").
  Status ReadFull(std::span<std::byte> buf, const TransportOptions& opts);
};

// The data path's message interface. Wire framing is the backend's business; the contract is that a
// message sent as (header, payload) arrives as the same header and payload, in order per channel.
class MessageChannel {
 public:
  virtual ~MessageChannel() = default;
  static constexpr size_t kMaxHeader = 256;
  // Sends one message. `header` is at most kMaxHeader bytes. Returns when the payload buffer may be reused.
  virtual Status Send(std::span<const std::byte> header, std::span<const std::byte> payload,
                      const TransportOptions& opts) = 0;
  // Sends one message whose payload is `len` bytes of the open file `fd` at `offset`, without a
  // user-space copy where the backend can (TCP: sendfile, so page-cache pages go to the socket by
  // reference). kNotSupported if the backend cannot: the caller then reads and uses Send(). The bytes
  // sent are whatever the file holds when the kernel reads it; the receiver's digest check catches a
  // file that changed.
  virtual Status SendFile(std::span<const std::byte> header, int fd, uint64_t offset, size_t len,
                          const TransportOptions& opts) {
    (void)header, (void)fd, (void)offset, (void)len, (void)opts;
    return Status::NotSupported("this transport cannot send from a file");
  }
  // Decides where a message's payload goes once its header is known: returns a buffer of at least
  // `payload_len` bytes, or an error to reject the message (which fails Receive with that error).
  // Called for every message, also one without a payload (payload_len 0).
  using PayloadSink =
      std::function<Result<std::span<std::byte>>(std::span<const std::byte> header, size_t payload_len)>;
  struct Received {
    size_t header_len = 0;
    size_t payload_len = 0;
  };
  // Receives one message: header into `header_buf` (kMaxHeader bytes), payload into the sink's buffer.
  // Orderly EOF before a message starts is kUnavailable with message "closed"; a malformed frame is
  // kProtocol. A payload_len above `max_payload` is rejected before any payload byte is read.
  virtual Result<Received> Receive(std::span<std::byte> header_buf, const PayloadSink& sink,
                                   size_t max_payload, const TransportOptions& opts) = 0;
  virtual Status Close(const TransportOptions& opts) = 0;
  virtual void Shutdown() = 0;
  virtual std::string peer_address() const = 0;
  virtual const char* name() const = 0;  // "tcp", "fabric", "ucx"
  // The round-trip time the transport measured to the peer, if it knows one (TCP: the kernel's
  // smoothed RTT). The sender uses it to tell a near peer (a send rarely blocks) from a far one.
  virtual std::optional<std::chrono::microseconds> rtt() const { return std::nullopt; }
};

// Decorators override only what they change.
class MessageChannelWrapper : public MessageChannel {
 public:
  explicit MessageChannelWrapper(std::unique_ptr<MessageChannel> target) : target_(std::move(target)) {}
  Status Send(std::span<const std::byte> header, std::span<const std::byte> payload,
              const TransportOptions& opts) override {
    return target_->Send(header, payload, opts);
  }
  Status SendFile(std::span<const std::byte> header, int fd, uint64_t offset, size_t len,
                  const TransportOptions& opts) override {
    return target_->SendFile(header, fd, offset, len, opts);
  }
  Result<Received> Receive(std::span<std::byte> header_buf, const PayloadSink& sink, size_t max_payload,
                           const TransportOptions& opts) override {
    return target_->Receive(header_buf, sink, max_payload, opts);
  }
  Status Close(const TransportOptions& opts) override { return target_->Close(opts); }
  void Shutdown() override { target_->Shutdown(); }
  std::string peer_address() const override { return target_->peer_address(); }
  const char* name() const override { return target_->name(); }
  std::optional<std::chrono::microseconds> rtt() const override { return target_->rtt(); }

 protected:
  MessageChannel* target() { return target_.get(); }

 private:
  std::unique_ptr<MessageChannel> target_;
};

}  // namespace pororoca::transport
