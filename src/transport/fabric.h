// The libfabric backend of the data path's MessageChannel: tagged messages between
// reliable-datagram (FI_EP_RDM) endpoints of an ofi_rxm provider ("tcp;ofi_rxm" here, "verbs;ofi_rxm"
// on InfiniBand or RoCE).
//
// Endpoints. A session's data channels at one end share one endpoint (FabricEndpoint: an RDM
// endpoint with its completion queue and address vector) on the address of that end's side of the
// control connection; each channel is one tag on it. ofi_rxm gives every endpoint two pools of 1024
// bounce buffers, zeroed when it is enabled (34 MiB and about 0.2 s here), so endpoints are not
// made per channel, and an endpoint whose session ended cleanly is kept for the next session on
// that address (FabricContext::Acquire; at most four idle per address). The receiving end sends its
// endpoint's libfabric address (fi_getname) to the sender over the authenticated control channel;
// the sender inserts it into its address vector. Data flows one way per session, sender to
// receiver, as on the TCP path.
//
// Messages. A message is a header message (the payload's length and segment size, then the
// header) with tag `tag | 0`, then the payload as segments with tag `tag | 1`, each at most the
// provider's eager limit (ofi_rxm's buffer size, 16 KiB unless FI_OFI_RXM_BUFFER_SIZE says
// otherwise). The receiver receives the header into a buffer of its own, asks the PayloadSink where
// the payload goes, and only then posts one receive per segment into that buffer: bulk data lands
// only in buffers the receiver offered. Segments never exceed the eager limit so that ofi_rxm never
// takes its rendezvous protocol, in which the receiver reads the payload out of the sender's memory
// with an RMA read: that needs the sender's buffers registered for remote read, and a registration
// covering the daemon's buffer pool would let a peer read the chunks of every other session in it.
// No memory is registered with the domain, so no key for remote access exists; ofi_rxm copies
// through its own registered bounce buffers where the provider needs registered memory (verbs),
// and over tcp it writes straight from and reads straight into the application's buffers.
//
// Binding. The tag is secret: the session derives it from the TLS exporter (proto::DataTag), and
// every receive matches all 64 bits, so messages of anyone who does not know it are never
// delivered. The first message of every channel is the bind request (proto::EncodeBind), which the
// session checks before the engine starts.
//
// Waiting. Each endpoint has a completion thread: it reads the completion queue (which is what
// drives ofi_rxm's progress), hands each completion to the call that posted the operation and
// wakes that call once all of its operations are done, and sleeps in poll(2) on the queue's wait
// fd (FI_WAIT_FD, after fi_trywait) when nothing is pending, so an idle endpoint burns no CPU.
//
// Failures. A failure with operations still posted against a caller's buffers (a timeout, a lost
// peer, Shutdown) closes the endpoint, which ends them: every channel of that session fails then,
// as the session does on tcp when one data connection breaks.
//
// Thread-safety: FabricContext and FabricEndpoint are thread-safe. A FabricChannel carries data
// one way and is used by one thread at a time; Shutdown() may be called from any thread. Close()
// must not race with any other call on the same channel.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "pororoca/status.h"
#include "pororoca/transport.h"

namespace pororoca::transport {

struct FabricOptions {
  std::string provider = "tcp;ofi_rxm";  // an ofi_rxm layering: "tcp;ofi_rxm", "verbs;ofi_rxm"
};

class FabricEndpoint;

class FabricContext {
 public:
  // Checks that libfabric has the provider on this host (kUnavailable with what libfabric said if
  // not). Domains are opened per local address, on first use.
  static Result<std::unique_ptr<FabricContext>> Create(const FabricOptions& o);
  ~FabricContext();
  FabricContext(const FabricContext&) = delete;
  FabricContext& operator=(const FabricContext&) = delete;

  // An endpoint on local address `ip` for one session's channels: an idle one left by an earlier
  // session, or a new one. It goes back when the last channel using it is gone.
  Result<std::shared_ptr<FabricEndpoint>> Acquire(const std::string& ip);

  // The largest segment this host sends: ofi_rxm's eager limit.
  size_t segment_size() const;
  // Endpoints made so far, and idle ones kept now (tests and logs).
  size_t endpoints_made() const;
  size_t endpoints_idle() const;

  struct Impl;

 private:
  explicit FabricContext(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

class FabricChannel : public MessageChannel {
 public:
  // The receiving end: receives the messages tagged `tag` on `ep`. `peer` names the other end in
  // logs and errors.
  static Result<std::unique_ptr<FabricChannel>> Listen(std::shared_ptr<FabricEndpoint> ep, uint64_t tag,
                                                       std::string peer);
  // The sending end: sends from `ep` to the receiving end's endpoint at `address` (what address()
  // gave there).
  static Result<std::unique_ptr<FabricChannel>> Connect(std::shared_ptr<FabricEndpoint> ep,
                                                        std::span<const std::byte> address, uint64_t tag,
                                                        std::string peer);
  ~FabricChannel() override;

  // The libfabric address of the channel's endpoint (a sockaddr for the ofi_rxm providers).
  const std::vector<std::byte>& address() const;

  Status Send(std::span<const std::byte> header, std::span<const std::byte> payload,
              const TransportOptions& opts) override;
  Result<Received> Receive(std::span<std::byte> header_buf, const PayloadSink& sink, size_t max_payload,
                           const TransportOptions& opts) override;
  Status Close(const TransportOptions& opts) override;
  void Shutdown() override;
  std::string peer_address() const override { return peer_; }
  const char* name() const override { return "fabric"; }

  struct Op;
  // The waiting side of a call: how many of its operations are still posted. The endpoint's
  // completion thread counts them down and wakes the call when none is left or one failed.
  struct Waiter {
    std::condition_variable cv;
    size_t pending = 0;
    int err = 0;  // FI_E* of the first failed operation
  };

 private:
  FabricChannel(std::shared_ptr<FabricEndpoint> ep, uint64_t tag, std::string peer);
  // Posts `op` (fi_tsend / fi_trecv through `post`), counted by waiter_, waiting while the provider's
  // queue is full.
  Status Post(const std::function<ssize_t()>& post, Op& op, const TransportOptions& opts, const char* what);
  // Waits until every operation posted since the last Wait is done. A timeout leaves them posted if
  // `timeout_breaks` is false; every other failure closes the endpoint (see above).
  Status Wait(const TransportOptions& opts, const char* what, bool timeout_breaks = true);
  // Leaves an operation that may still be posted to the endpoint (which is then not reused).
  void Abandon();

  std::shared_ptr<FabricEndpoint> ep_;
  const uint64_t tag_;
  const std::string peer_;
  uint64_t dest_ = 0;  // a sending end's fi_addr_t for the peer
  bool receiving_ = false;
  std::atomic<bool> shut_{false};
  Waiter waiter_;  // under the endpoint's mutex
  Status broken_;  // set once a call failed: the channel is unusable after that
  // The receive side's header buffer (prefix + header) and its receive, which stays posted across
  // a timeout. Heap-held: given to the endpoint if the channel goes while it is posted.
  std::unique_ptr<std::vector<std::byte>> frame_;
  std::unique_ptr<Op> head_;
  bool head_posted_ = false;
};

}  // namespace pororoca::transport
