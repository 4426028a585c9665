#include "transport/ucx.h"

#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <ucp/api/ucp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>

#include "base/coding.h"
#include "transport/tcp.h"

namespace pororoca::transport {

namespace {

constexpr uint64_t kHeaderTag = 0;
constexpr uint64_t kPayloadTag = 1;
constexpr size_t kLengthPrefix = 8;  // the payload's length, little-endian, before the header
constexpr uint64_t kFullMask = ~uint64_t{0};

Status UcxError(std::string_view what, ucs_status_t st) {
  return Status::Unavailable("ucx: " + std::string(what) + ": " + ucs_status_string(st));
}

// An operation with the peer failed with `st`: a peer that went away (its process, host or link)
// reads as a lost connection, as on tcp.
Status PeerError(std::string_view what, const std::string& peer, ucs_status_t st) {
  switch (st) {
    case UCS_ERR_ENDPOINT_TIMEOUT:
    case UCS_ERR_CONNECTION_RESET:
    case UCS_ERR_NOT_CONNECTED:
    case UCS_ERR_UNREACHABLE:
    case UCS_ERR_REJECTED:
      return Status::Unavailable("ucx: " + std::string(what) + ": connection with " + peer + " lost (" +
                                 ucs_status_string(st) + ")");
    default:
      return UcxError(std::string(what) + " with " + peer, st);
  }
}

}  // namespace

// ---- context -----------------------------------------------------------------------------------------

struct UcxContext::Impl {
  ucp_context_h ctx = nullptr;
  std::byte* region = nullptr;
  size_t region_len = 0;
  ucp_mem_h memh = nullptr;

  // The registration covering [p, p + n), if any.
  ucp_mem_h MemhFor(const void* p, size_t n) const {
    auto* b = static_cast<const std::byte*>(p);
    if (memh == nullptr || b < region || b + n > region + region_len) return nullptr;
    return memh;
  }
};

namespace {

// Channels waiting to be destroyed (UcxChannel::DestroyLater), by one thread started on first use.
class Reaper {
 public:
  static Reaper& Get() {
    static Reaper r;
    return r;
  }
  void Add(std::unique_ptr<UcxChannel> ch, std::chrono::steady_clock::time_point when) {
    std::lock_guard<std::mutex> lock(mu_);
    items_.emplace_back(when, std::move(ch));
    if (!thread_.joinable()) thread_ = std::thread([this] { Main(); });
    cv_.notify_one();
  }
  // Destroys every waiting channel now (a context is going away: its workers must go first).
  void DestroyAll() {
    std::vector<std::unique_ptr<UcxChannel>> now;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& [when, ch] : items_) now.push_back(std::move(ch));
      items_.clear();
    }
  }
  ~Reaper() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_one();
    if (thread_.joinable()) thread_.join();
  }

 private:
  Reaper() = default;
  void Main() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      if (items_.empty()) {
        cv_.wait(lock);
        continue;
      }
      auto first = std::min_element(items_.begin(), items_.end(),
                                    [](const auto& a, const auto& b) { return a.first < b.first; });
      if (std::chrono::steady_clock::now() < first->first) {
        cv_.wait_until(lock, first->first);
        continue;
      }
      std::unique_ptr<UcxChannel> ch = std::move(first->second);
      items_.erase(first);
      lock.unlock();
      ch.reset();
      lock.lock();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::pair<std::chrono::steady_clock::time_point, std::unique_ptr<UcxChannel>>> items_;
  std::thread thread_;
  bool stop_ = false;
};

}  // namespace

UcxContext::UcxContext(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

UcxContext::~UcxContext() {
  Reaper::Get().DestroyAll();
  if (impl_->memh != nullptr) ucp_mem_unmap(impl_->ctx, impl_->memh);
  if (impl_->ctx != nullptr) ucp_cleanup(impl_->ctx);
}

Result<std::unique_ptr<UcxContext>> UcxContext::Create(const UcxOptions& o) {
  ucp_config_t* config = nullptr;
  ucs_status_t st = ucp_config_read(nullptr, nullptr, &config);
  if (st != UCS_OK) return UcxError("reading the configuration", st);
  auto modify = [&](const char* key, const std::string& value) -> Status {
    if (value.empty()) return Status::OK();
    ucs_status_t m = ucp_config_modify(config, key, value.c_str());
    if (m != UCS_OK) return UcxError(std::string("UCX_") + key + "=" + value, m);
    return Status::OK();
  };
  Status s = modify("TLS", o.tls);
  if (s.ok()) s = modify("NET_DEVICES", o.net_devices);
  if (!s.ok()) {
    ucp_config_release(config);
    return s;
  }
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_MT_WORKERS_SHARED | UCP_PARAM_FIELD_NAME;
  // Tagged messages and wake-ups only: no RMA, no AM, so a peer can reach nothing but the
  // receives this daemon posts.
  params.features = UCP_FEATURE_TAG | UCP_FEATURE_WAKEUP;
  params.mt_workers_shared = 1;  // workers live on different threads
  params.name = "pororoca";
  auto impl = std::make_unique<Impl>();
  st = ucp_init(&params, config, &impl->ctx);
  ucp_config_release(config);
  if (st != UCS_OK) {
    impl->ctx = nullptr;
    return UcxError("no usable transport" + (o.tls.empty() ? std::string() : " among UCX_TLS=" + o.tls), st);
  }
  return std::unique_ptr<UcxContext>(new UcxContext(std::move(impl)));
}

Status UcxContext::RegisterRegion(std::byte* base, size_t len) {
  if (impl_->memh != nullptr) return Status::Internal("ucx: a region is already registered");
  ucp_mem_map_params_t p{};
  p.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
  p.address = base;
  p.length = len;
  ucs_status_t st = ucp_mem_map(impl_->ctx, &p, &impl_->memh);
  if (st != UCS_OK) {
    impl_->memh = nullptr;
    return UcxError("registering the buffer pool (" + std::to_string(len >> 20) +
                        " MiB; is the memlock limit high enough?)",
                    st);
  }
  impl_->region = base;
  impl_->region_len = len;
  return Status::OK();
}

// ---- channel --------------------------------------------------------------------------------------------

struct UcxChannel::Worker {
  ucp_worker_h worker = nullptr;
  ucp_listener_h listener = nullptr;  // a receiving end's
  ucp_ep_h ep = nullptr;              // the connection: the sender's own, or the one the receiver took
  int efd = -1;
  ucs_status_t ep_error = UCS_OK;  // set by the endpoint's error handler
};

namespace {

void OnEndpointError(void* arg, ucp_ep_h /*ep*/, ucs_status_t status) {
  static_cast<UcxChannel::Worker*>(arg)->ep_error = status;
}

ucp_ep_params_t EndpointParams(UcxChannel::Worker* w) {
  ucp_ep_params_t ep{};
  ep.field_mask = UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER;
  ep.err_mode = UCP_ERR_HANDLING_MODE_PEER;  // a peer that goes away fails the calls, not hangs them
  ep.err_handler.cb = OnEndpointError;
  ep.err_handler.arg = w;
  return ep;
}

// A receiving end takes the first connection and turns every later one away: one channel, one
// sender. (Runs inside the worker's progress, under the channel's mutex.)
void OnConnectionRequest(ucp_conn_request_h request, void* arg) {
  auto* w = static_cast<UcxChannel::Worker*>(arg);
  if (w->ep != nullptr) {
    ucp_listener_reject(w->listener, request);
    return;
  }
  ucp_ep_params_t ep = EndpointParams(w);
  ep.field_mask |= UCP_EP_PARAM_FIELD_CONN_REQUEST;
  ep.conn_request = request;
  if (ucp_ep_create(w->worker, &ep, &w->ep) != UCS_OK) w->ep = nullptr;
}

Result<sockaddr_storage> SockAddr(const std::string& host, uint16_t port, socklen_t* len) {
  addrinfo hints{};
  hints.ai_flags = AI_NUMERICHOST;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res); rc != 0) {
    return Status::InvalidArgument("ucx: address '" + host + "': " + ::gai_strerror(rc));
  }
  sockaddr_storage out{};
  std::memcpy(&out, res->ai_addr, res->ai_addrlen);
  *len = res->ai_addrlen;
  ::freeaddrinfo(res);
  return out;
}

// Completes a request that is being cancelled or whose endpoint is closing; frees it.
void Drain(ucp_worker_h w, void* req) {
  while (ucp_request_check_status(req) == UCS_INPROGRESS) ucp_worker_progress(w);
  ucp_request_free(req);
}

// Closes the worker's endpoint at once: its operations in flight complete with an error.
void ForceClose(UcxChannel::Worker& w) {
  if (w.ep == nullptr) return;
  ucp_request_param_t p{};
  p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
  p.flags = UCP_EP_CLOSE_FLAG_FORCE;
  void* r = ucp_ep_close_nbx(w.ep, &p);
  w.ep = nullptr;
  if (UCS_PTR_IS_PTR(r)) Drain(w.worker, r);
}

}  // namespace

UcxChannel::UcxChannel(UcxContext& ctx, uint64_t tag, std::string peer)
    : ctx_(ctx), tag_(tag & ~uint64_t{1}), peer_(std::move(peer)), w_(std::make_unique<Worker>()) {}

UcxChannel::~UcxChannel() {
  // A sender's last messages may still be on their way: Close() ends a sending end in order (a
  // failed or shut down one by force).
  Close(TransportOptions{}).IgnoreError();
  if (w_->listener != nullptr) ucp_listener_destroy(w_->listener);
  ForceClose(*w_);  // a receiving end's connection: closed before its worker goes
  if (w_->worker != nullptr) ucp_worker_destroy(w_->worker);
}

Result<std::unique_ptr<UcxChannel>> UcxChannel::Listen(UcxContext& ctx, const std::string& ip, uint64_t tag,
                                                       std::string peer) {
  PORO_ASSIGN_OR_RETURN(auto ch, MakeWorker(ctx, tag, std::move(peer)));
  Worker& w = *ch->w_;
  socklen_t len = 0;
  PORO_ASSIGN_OR_RETURN(sockaddr_storage sa, SockAddr(ip, 0, &len));
  ucp_listener_params_t lp{};
  lp.field_mask = UCP_LISTENER_PARAM_FIELD_SOCK_ADDR | UCP_LISTENER_PARAM_FIELD_CONN_HANDLER;
  lp.sockaddr.addr = reinterpret_cast<const sockaddr*>(&sa);
  lp.sockaddr.addrlen = len;
  lp.conn_handler.cb = OnConnectionRequest;
  lp.conn_handler.arg = &w;
  ucs_status_t st = ucp_listener_create(w.worker, &lp, &w.listener);
  if (st != UCS_OK) {
    w.listener = nullptr;
    return UcxError("listening on " + ip, st);
  }
  ucp_listener_attr_t attr{};
  attr.field_mask = UCP_LISTENER_ATTR_FIELD_SOCKADDR;
  st = ucp_listener_query(w.listener, &attr);
  if (st != UCS_OK) return UcxError("the listener's address", st);
  const std::string where = FormatHostPort(ip, SockaddrPort(attr.sockaddr));
  ch->address_.assign(reinterpret_cast<const std::byte*>(where.data()),
                      reinterpret_cast<const std::byte*>(where.data()) + where.size());
  ch->frame_.resize(kLengthPrefix + kMaxHeader);
  return ch;
}

Result<std::unique_ptr<UcxChannel>> UcxChannel::MakeWorker(UcxContext& ctx, uint64_t tag, std::string peer) {
  std::unique_ptr<UcxChannel> ch(new UcxChannel(ctx, tag, std::move(peer)));
  ch->wake_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!ch->wake_.valid()) return Status::IoError("ucx: eventfd", errno);
  ucp_worker_params_t wp{};
  wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  wp.thread_mode = UCS_THREAD_MODE_SINGLE;
  Worker& w = *ch->w_;
  ucs_status_t st = ucp_worker_create(ctx.impl()->ctx, &wp, &w.worker);
  if (st != UCS_OK) {
    w.worker = nullptr;
    return UcxError("creating a worker", st);
  }
  st = ucp_worker_get_efd(w.worker, &w.efd);
  if (st != UCS_OK) return UcxError("the worker's event fd", st);
  return ch;
}

Result<std::unique_ptr<UcxChannel>> UcxChannel::Connect(UcxContext& ctx, std::span<const std::byte> address,
                                                        uint64_t tag, std::string peer) {
  PORO_ASSIGN_OR_RETURN(auto ch, MakeWorker(ctx, tag, std::move(peer)));
  const std::string text(reinterpret_cast<const char*>(address.data()), address.size());
  auto hp = ParseHostPort(text);
  if (!hp.has_value()) return Status::Protocol("ucx: channel address '" + text + "' from " + ch->peer_);
  socklen_t len = 0;
  PORO_ASSIGN_OR_RETURN(sockaddr_storage sa, SockAddr(hp->first, hp->second, &len));
  ucp_ep_params_t ep = EndpointParams(ch->w_.get());
  ep.field_mask |= UCP_EP_PARAM_FIELD_SOCK_ADDR | UCP_EP_PARAM_FIELD_FLAGS;
  ep.flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
  ep.sockaddr.addr = reinterpret_cast<const sockaddr*>(&sa);
  ep.sockaddr.addrlen = len;
  ucs_status_t st = ucp_ep_create(ch->w_->worker, &ep, &ch->w_->ep);
  if (st != UCS_OK) {
    ch->w_->ep = nullptr;
    return UcxError("connecting to " + ch->peer_ + " at " + text, st);
  }
  UcxChannel* raw = ch.get();
  ch->progress_ = std::thread([raw] { raw->ProgressMain(); });
  return ch;
}

Status UcxChannel::Wait(std::unique_lock<std::mutex>& lock, void* req, Op op, const TransportOptions& opts,
                        const char* what, size_t* received) {
  Worker& w = *w_;
  using Clock = std::chrono::steady_clock;
  auto last_progress = Clock::now();
  Status failure;
  for (;;) {
    bool moved = false;
    while (ucp_worker_progress(w.worker) != 0) moved = true;
    ucs_status_t st;
    if (received != nullptr) {
      ucp_tag_recv_info_t info{};
      st = ucp_tag_recv_request_test(req, &info);
      if (st != UCS_INPROGRESS) *received = info.length;
    } else {
      st = ucp_request_check_status(req);
    }
    if (st != UCS_INPROGRESS) {
      ucp_request_free(req);
      if (st == UCS_OK) return Status::OK();
      if (st == UCS_ERR_MESSAGE_TRUNCATED) {
        return Status::Protocol("ucx: " + std::string(what) + " from " + peer_ + " longer than announced");
      }
      return PeerError(what, peer_, w.ep_error != UCS_OK ? w.ep_error : st);
    }
    if (moved) last_progress = Clock::now();
    if (shut_.load()) {
      failure = Status::Cancelled("ucx channel with " + peer_ + " shut down");
      break;
    }
    int timeout_ms = 1000;
    if (opts.idle_timeout.count() > 0) {
      auto left = opts.idle_timeout -
                  std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - last_progress);
      if (left.count() <= 0) {
        failure =
            Status::DeadlineExceeded("ucx: " + std::string(what) + " with " + peer_ + ": no progress for " +
                                     std::to_string(opts.idle_timeout.count()) + " ms");
        break;
      }
      timeout_ms = static_cast<int>(std::min<int64_t>(left.count(), timeout_ms));
    }
    SleepOnWorker(&lock, timeout_ms);
  }
  // The caller's buffer must be released before returning: cancel a receive, close the endpoint
  // under a send (a send cannot be cancelled; closing by force completes it with an error).
  if (op == Op::kSend) {
    ForceClose(w);  // completes the send, with an error
    Drain(w.worker, req);
  } else {
    ucp_request_cancel(w.worker, req);
    Drain(w.worker, req);
  }
  return failure;
}

Status UcxChannel::Send(std::span<const std::byte> header, std::span<const std::byte> payload,
                        const TransportOptions& opts) {
  if (!broken_.ok()) return broken_;
  if (w_->listener != nullptr) return Status::Internal("ucx: this end of the channel only receives");
  if (w_->ep == nullptr) return Status::Internal("ucx: the channel is closed");
  if (header.empty() || header.size() > kMaxHeader) {
    return Status::InvalidArgument("ucx: header of " + std::to_string(header.size()) + " bytes");
  }
  std::unique_lock<std::mutex> lock(mu_);
  // The progress thread stands aside while this thread drives the worker: both sleeping on the
  // event fd, one could take the other's wake-up.
  sending_ = true;
  struct Done {
    UcxChannel* ch;
    ~Done() {
      ch->sending_ = false;
      ch->idle_.notify_one();
    }
  } done{this};
  std::byte frame[kLengthPrefix + kMaxHeader];
  EncodeFixed64(frame, payload.size());
  std::memcpy(frame + kLengthPrefix, header.data(), header.size());
  auto send = [&](const void* buf, size_t len, uint64_t kind, const char* what) -> Status {
    ucp_request_param_t p{};
    if (ucp_mem_h memh = ctx_.impl()->MemhFor(buf, len); memh != nullptr) {
      p.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMH;
      p.memh = memh;
    }
    void* r = ucp_tag_send_nbx(w_->ep, buf, len, tag_ | kind, &p);
    if (r == nullptr) return Status::OK();  // done at once (the data is on its way or copied)
    if (UCS_PTR_IS_ERR(r)) return PeerError(what, peer_, UCS_PTR_STATUS(r));
    return Wait(lock, r, Op::kSend, opts, what);
  };
  Status s = send(frame, kLengthPrefix + header.size(), kHeaderTag, "sending a header");
  if (s.ok() && !payload.empty()) s = send(payload.data(), payload.size(), kPayloadTag, "sending a payload");
  // A send that "completed at once" may still have bytes in the transport's queue: the progress
  // thread moves them while this thread is away (see ProgressMain).
  if (!s.ok()) broken_ = s;
  return s;
}

Result<MessageChannel::Received> UcxChannel::Receive(std::span<std::byte> header_buf, const PayloadSink& sink,
                                                     size_t max_payload, const TransportOptions& opts) {
  if (!broken_.ok()) return broken_;
  if (frame_.empty()) return Status::Internal("ucx: this end of the channel only sends");
  std::unique_lock<std::mutex> lock(mu_);
  auto recv = [&](void* buf, size_t len, uint64_t kind, const char* what, size_t* got) -> Status {
    // Always a request (never "completed at once"): UCX 1.13 leaves recv_info.tag_info unset when
    // an unexpected message completes the receive inside the call, and Wait() reads the length
    // from the request.
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FLAG_NO_IMM_CMPL;
    if (ucp_mem_h memh = ctx_.impl()->MemhFor(buf, len); memh != nullptr) {
      p.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMH;
      p.memh = memh;
    }
    void* r = ucp_tag_recv_nbx(w_->worker, buf, len, tag_ | kind, kFullMask, &p);
    if (UCS_PTR_IS_ERR(r)) return UcxError(std::string(what) + " from " + peer_, UCS_PTR_STATUS(r));
    return Wait(lock, r, Op::kReceive, opts, what, got);
  };
  size_t got = 0;
  Status s = recv(frame_.data(), frame_.size(), kHeaderTag, "receiving a header", &got);
  if (s.ok() && (got <= kLengthPrefix || got > frame_.size())) {
    s = Status::Protocol("ucx: a message header of " + std::to_string(got) + " bytes from " + peer_);
  }
  if (!s.ok()) {
    if (s.code() != Code::kDeadlineExceeded) broken_ = s;  // a quiet peer may still speak later
    return s;
  }
  const uint64_t payload_len = DecodeFixed64(frame_.data());
  Received out;
  out.header_len = got - kLengthPrefix;
  out.payload_len = static_cast<size_t>(payload_len);
  std::memcpy(header_buf.data(), frame_.data() + kLengthPrefix, out.header_len);
  if (payload_len > max_payload) {
    broken_ = Status::Protocol("ucx: payload of " + std::to_string(payload_len) + " bytes from " + peer_ +
                               " (at most " + std::to_string(max_payload) + ")");
    return broken_;
  }
  // The sink sees every message, also one without a payload (it reads the header).
  auto dest = sink(header_buf.first(out.header_len), out.payload_len);
  if (!dest.has_value()) {
    // A refused payload is never received: this channel is out of step now.
    if (payload_len > 0) broken_ = dest.error();
    return dest.error();
  }
  if (payload_len == 0) return out;
  if (dest->size() < out.payload_len) {
    broken_ = Status::Internal("ucx: payload sink returned " + std::to_string(dest->size()) +
                               " bytes for a payload of " + std::to_string(out.payload_len));
    return broken_;
  }
  s = recv(dest->data(), out.payload_len, kPayloadTag, "receiving a payload", &got);
  if (s.ok() && got != out.payload_len) {
    s = Status::Protocol("ucx: payload of " + std::to_string(got) + " bytes from " + peer_ + ", announced " +
                         std::to_string(out.payload_len));
  }
  if (!s.ok()) {
    broken_ = s;  // half a message: the channel cannot go on
    return s;
  }
  return out;
}

void UcxChannel::ProgressMain() {
  // A sending end's worker must make progress while its thread is elsewhere (waiting for the
  // receiver's plan, say): an eager send "completes" once its bytes are queued in the transport,
  // and the tail of a message the socket could not take at once moves only with progress.
  Worker& w = *w_;
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_progress_ && !shut_.load()) {
    if (sending_) {
      idle_.wait(lock);
      continue;
    }
    if (ucp_worker_progress(w.worker) == 0) SleepOnWorker(&lock, 200);
  }
}

void UcxChannel::SleepOnWorker(std::unique_lock<std::mutex>* lock, int timeout_ms) {
  // Sleep only once the worker is armed: events that came in before make arm say BUSY.
  if (ucp_worker_arm(w_->worker) == UCS_ERR_BUSY) return;
  if (lock != nullptr) lock->unlock();
  pollfd fds[2] = {{w_->efd, POLLIN, 0}, {wake_.get(), POLLIN, 0}};
  ::poll(fds, 2, timeout_ms);
  if (lock != nullptr) lock->lock();
}

void UcxChannel::StopProgress() {
  if (!progress_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_progress_ = true;
  }
  idle_.notify_one();
  ucp_worker_signal(w_->worker);  // wakes the poll on the event fd (thread-safe in UCX)
  progress_.join();
}

void UcxChannel::AwaitPeerClose(std::chrono::milliseconds limit) {
  // Closing the endpoint while the receiver has not yet read the last messages can lose them: the
  // transport's socket may hold bytes the receiver sent (acknowledgements), and closing a socket
  // with unread bytes resets the connection, which discards what the receiver had not read yet.
  // The receiver closes its side once it has everything (its session ends after the end-of-stream
  // message of every channel), which the endpoint's error handler reports here.
  Worker& w = *w_;
  const auto until = std::chrono::steady_clock::now() + limit;
  while (w.ep_error == UCS_OK && !shut_.load() && std::chrono::steady_clock::now() < until) {
    if (ucp_worker_progress(w.worker) == 0) SleepOnWorker(nullptr, 100);  // the progress thread has stopped
  }
}

Status UcxChannel::Close(const TransportOptions& opts) {
  StopProgress();
  // A receiving end's connection is closed with its worker; a failure may have closed a sender's.
  if (w_->listener != nullptr || w_->ep == nullptr) return broken_;
  // The orderly end of a sending end: the receiver closes its side once it has read everything
  // (see AwaitPeerClose); then the endpoint goes.
  if (broken_.ok() && !shut_.load()) {
    AwaitPeerClose(opts.idle_timeout.count() > 0 ? opts.idle_timeout : std::chrono::milliseconds(10000));
  }
  ForceClose(*w_);
  return broken_;
}

void UcxChannel::DestroyLater(std::unique_ptr<UcxChannel> ch) {
  ch->Shutdown();
  Reaper::Get().Add(std::move(ch), std::chrono::steady_clock::now() + std::chrono::seconds(10));
}

void UcxChannel::Shutdown() {
  shut_.store(true);
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(wake_.get(), &one, sizeof(one));
}

}  // namespace pororoca::transport
