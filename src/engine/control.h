// ControlChannel: framed control messages (proto::ControlFrame) over a Stream (TLS in production).
//
// Thread-safety: Send() may be called from any thread (serialised inside); Receive() from one
// thread at a time. The underlying Stream must allow one reader and one writer concurrently.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "base/mutex.h"
#include "pororoca/transport.h"
#include "proto/messages.h"
#include "proto/wire.h"

namespace pororoca::engine {

// How long an end that sends ERROR (a cancel, a session cut, a failure) keeps the session's other
// connections open for the peer to read it, at most: the peer answers or closes the control
// connection as soon as it has, so that both ends record the same reason.
inline constexpr std::chrono::seconds kPeerReadsError{2};

// The retryable kDeadlineExceeded of a peer that stopped answering: `what` it did not do ("sent
// nothing", "took no data") for `idle`.
Status PeerStoppedAnswering(std::string_view what, std::chrono::milliseconds idle);

class ControlChannel {
 public:
  explicit ControlChannel(std::unique_ptr<transport::Stream> stream) : stream_(std::move(stream)) {}

  // Sends one frame; `body` is an encoded message (proto::EncodeHello, proto::EncodeFiles, ...).
  Status Send(proto::MsgType type, std::span<const std::byte> body) PORO_EXCLUDES(write_mu_);
  // Sends ERROR for `s` (proto::ErrorMsgFromStatus), best effort: the peer treats it as fatal for
  // the session.
  void SendError(const Status& s);
  // Reads one frame. kUnavailable "closed" on orderly EOF at a frame boundary.
  Result<proto::ControlFrame> Receive(const transport::TransportOptions& opts = {});
  // Receive for a session's control reader: a peer that sends nothing for `idle` (not even
  // KEEPALIVE) has stopped answering, and the session ends with a retryable kDeadlineExceeded
  // saying so. idle 0: wait forever.
  Result<proto::ControlFrame> ReceiveLive(std::chrono::milliseconds idle);
  // Receives one frame and requires it to be `type`; returns its body for the matching
  // proto::DecodeX. An ERROR frame from the peer becomes its Status (proto::StatusFromErrorBody; a
  // malformed ERROR is kProtocol naming the field); any other type is kProtocol.
  Result<std::vector<std::byte>> Expect(proto::MsgType type, const transport::TransportOptions& opts = {});

  // Gives up on a Send that makes no progress for this long (kDeadlineExceeded; 0 = wait forever),
  // so a peer that stopped reading cannot hold a writer forever. Set before the channel is shared.
  void set_write_timeout(std::chrono::milliseconds t) { write_opts_.idle_timeout = t; }

  void Shutdown() { stream_->Shutdown(); }
  Status Close() { return stream_->Close({}); }
  transport::Stream* stream() { return stream_.get(); }

 private:
  std::unique_ptr<transport::Stream> stream_;
  transport::TransportOptions write_opts_;
  // Serialises whole frames on the stream (held across the write: that is its purpose).
  Mutex write_mu_;
};

// Keeps an engine session's control connection live: a thread that sends KEEPALIVE every
// `interval` until destroyed, so the peer's idle timeout (DataPath::idle_timeout) fires only when
// this daemon has really stopped (SIGSTOP, a dead host, a cut link), not during a long file that
// needs no other control message. Best effort: a failed send is left to the session's reader.
class KeepaliveTicker {
 public:
  // interval 0: no keepalives (and no thread unless `verified` is given). With `verified` (the receiver's
  // side), every kProgressInterval the KEEPALIVE also carries the bytes verified so far, when they changed.
  static constexpr std::chrono::milliseconds kProgressInterval{500};
  KeepaliveTicker(ControlChannel* ctl, std::chrono::milliseconds interval,
                  const std::atomic<uint64_t>* verified = nullptr);
  ~KeepaliveTicker() PORO_EXCLUDES(mu_);
  KeepaliveTicker(const KeepaliveTicker&) = delete;
  KeepaliveTicker& operator=(const KeepaliveTicker&) = delete;

 private:
  void Main(std::chrono::milliseconds interval) PORO_EXCLUDES(mu_);

  ControlChannel* ctl_;
  const std::atomic<uint64_t>* verified_;
  Mutex mu_;
  CondVar cv_;
  bool stop_ PORO_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace pororoca::engine
