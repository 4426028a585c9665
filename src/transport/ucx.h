// The UCX backend of the data path's MessageChannel: tagged messages between two UCP workers.
//
// One data channel is one worker at each end. The receiving end's worker listens (UCX's
// client/server connection set-up) on an ephemeral port; its "ip:port" goes to the sender over the
// authenticated control channel (UcxChannel::Listen, address()). The sending end creates a worker
// and an endpoint to it (UcxChannel::Connect). The listener takes the first connection and turns
// later ones away; it owns that endpoint and closes it before its worker goes. Data flows one way,
// sender to receiver, as on the TCP path.
//
// A message is two tagged sends: the header (prefixed by the payload's length) with tag `tag | 0`,
// then the payload, if any, with tag `tag | 1`. The receiver posts a receive for the header into a
// buffer of its own, asks the PayloadSink where the payload goes, and only then posts the payload's
// receive into that buffer: bulk data lands only in buffers the receiver offered (UCX's rendezvous
// protocol keeps a large payload at the sender until that receive is posted). No remote memory
// access is enabled (no UCP_FEATURE_RMA, no rkey ever leaves the daemon): in UCX 1.13 the software
// emulation of put/get, which is what runs over tcp and shared memory, does not check the target
// address against a registration.
//
// The tag is secret: the session derives it from the TLS exporter (proto::DataTag), and the
// receiver matches the full 64 bits, so messages of anyone who does not know it are never
// delivered. The first message of every channel is the bind request (proto::EncodeBind), which the
// session checks before the engine starts.
//
// Memory: the daemon's buffer pool is registered once with the context (RegisterRegion); a send or
// receive whose buffer lies inside it passes that handle, so no operation registers memory.
//
// Waiting: a call that cannot complete at once arms the worker's event fd (ucp_worker_arm) and
// sleeps in poll(2) on it and on the channel's shutdown eventfd, so an idle channel burns no CPU.
//
// Thread-safety: UcxContext is thread-safe. A UcxChannel carries data one way, so it is used by one
// thread at a time (a listening channel only receives, a connected one only sends); its worker is
// touched under a mutex, as a sending end also drives it from a progress thread of its own.
// Shutdown() may be called from any thread. Close() must not race with any other call.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/unique_fd.h"
#include "pororoca/status.h"
#include "pororoca/transport.h"

namespace pororoca::transport {

struct UcxOptions {
  std::string tls;          // UCX_TLS for this context ("" = the environment's, or UCX's choice)
  std::string net_devices;  // UCX_NET_DEVICES ("" = the environment's, or all)
};

class UcxContext {
 public:
  // A UCP context with the tag and wakeup features only. Fails (kUnavailable) if UCX finds no
  // usable transport with these settings; the message says what UCX reported.
  static Result<std::unique_ptr<UcxContext>> Create(const UcxOptions& o);
  ~UcxContext();
  UcxContext(const UcxContext&) = delete;
  UcxContext& operator=(const UcxContext&) = delete;

  // Registers [base, base + len) once: the daemon's buffer pool. At most one region.
  Status RegisterRegion(std::byte* base, size_t len);

  struct Impl;
  Impl* impl() const { return impl_.get(); }

 private:
  explicit UcxContext(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

class UcxChannel : public MessageChannel {
 public:
  // The receiving end: a worker that listens on `ip` (an ephemeral port), takes the first
  // connection and turns later ones away, and receives the messages tagged `tag`. `peer` names the
  // other end in logs and errors.
  static Result<std::unique_ptr<UcxChannel>> Listen(UcxContext& ctx, const std::string& ip, uint64_t tag,
                                                    std::string peer);
  // The sending end: a worker and an endpoint to the receiving end's address() ("ip:port").
  static Result<std::unique_ptr<UcxChannel>> Connect(UcxContext& ctx, std::span<const std::byte> address,
                                                     uint64_t tag, std::string peer);
  ~UcxChannel() override;

  // Where a receiving end listens, "ip:port": what the sending end's Connect needs.
  const std::vector<std::byte>& address() const { return address_; }

  Status Send(std::span<const std::byte> header, std::span<const std::byte> payload,
              const TransportOptions& opts) override;
  Result<Received> Receive(std::span<std::byte> header_buf, const PayloadSink& sink, size_t max_payload,
                           const TransportOptions& opts) override;
  Status Close(const TransportOptions& opts) override;
  void Shutdown() override;
  // Shuts the channel down and destroys it 10 s from now, or when its context goes: for a
  // receiving end given up on while the peer may still be connecting to its listener (UCX 1.13
  // crashes in its async thread on a connection request for a listener just destroyed).
  static void DestroyLater(std::unique_ptr<UcxChannel> ch);
  std::string peer_address() const override { return peer_; }
  const char* name() const override { return "ucx"; }

  struct Worker;

 private:
  UcxChannel(UcxContext& ctx, uint64_t tag, std::string peer);
  static Result<std::unique_ptr<UcxChannel>> MakeWorker(UcxContext& ctx, uint64_t tag, std::string peer);
  // Drives the worker until the request `req` completes, the idle timeout passes or Shutdown().
  // On a failure the request is cancelled (a send: the endpoint is closed) and completed before
  // returning, so the caller's buffer is free again either way. Frees the request.
  // A close that does not finish in time is left to the worker's destruction.
  enum class Op { kSend, kReceive };
  // A sender's orderly end: waits (bounded) until the receiver has closed its side.
  void AwaitPeerClose(std::chrono::milliseconds limit);
  // `lock` holds mu_; it is released while the thread sleeps.
  Status Wait(std::unique_lock<std::mutex>& lock, void* req, Op op, const TransportOptions& opts,
              const char* what, size_t* received = nullptr);
  void ProgressMain();
  // Arms the worker and sleeps until it has an event, Shutdown() or `timeout_ms`; returns at once
  // if events are pending. Releases `lock` (if given) while asleep.
  void SleepOnWorker(std::unique_lock<std::mutex>* lock, int timeout_ms);
  void StopProgress();

  UcxContext& ctx_;
  const uint64_t tag_;
  const std::string peer_;
  std::vector<std::byte> address_;
  // Every call into the worker holds mu_: the channel's thread and, on a sending end, the progress
  // thread that drives the worker while that thread is away.
  std::mutex mu_;
  std::unique_ptr<Worker> w_;
  std::thread progress_;
  bool stop_progress_ = false;  // under mu_
  bool sending_ = false;        // under mu_: Send() drives the worker, the progress thread waits
  std::condition_variable idle_;
  UniqueFd wake_;  // eventfd written by Shutdown()
  std::atomic<bool> shut_{false};
  Status broken_;                 // set once a call failed: the channel is unusable after that
  std::vector<std::byte> frame_;  // the receive side's header buffer (length prefix + header)
};

}  // namespace pororoca::transport
