#include "transport/fabric.h"

#include <netinet/in.h>
#include <poll.h>
#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_tagged.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "base/coding.h"
#include "base/unique_fd.h"

namespace pororoca::transport {

struct FabricInfoDeleter {
  void operator()(fi_info* i) const {
    if (i != nullptr) fi_freeinfo(i);
  }
};
using FabricInfoPtr = std::unique_ptr<fi_info, FabricInfoDeleter>;

// One fabric and domain per local address, opened on first use and kept for the context's life.
struct FabricDomain {
  FabricInfoPtr info;  // its src_addr is the local address, port 0
  fid_fabric* fabric = nullptr;
  fid_domain* domain = nullptr;
};

namespace {

constexpr uint64_t kHeaderTag = 0;
constexpr uint64_t kPayloadTag = 1;
// Before the header: the payload's length (u64) and the sender's segment size (u32), little-endian.
constexpr size_t kPrefix = 12;
constexpr size_t kDefaultSegment = 16384;  // ofi_rxm's default buffer size (its eager limit)
constexpr size_t kMinSegment = 512;
constexpr size_t kMaxSegments = size_t{1} << 20;  // per message: bounds what one header makes us post
constexpr size_t kMaxIdlePerAddress = 4;
constexpr uint32_t kApiVersion = FI_VERSION(1, 17);

using Clock = std::chrono::steady_clock;

Status FabricError(std::string_view what, int err) {
  if (err < 0) err = -err;
  return Status::Unavailable("fabric: " + std::string(what) + ": " + fi_strerror(err));
}

// An operation with the peer failed with `err`: a peer that went away reads as a lost connection,
// as on tcp.
Status PeerError(std::string_view what, const std::string& peer, int err) {
  switch (err) {
    case FI_ECONNRESET:
    case FI_ECONNREFUSED:
    case FI_ECONNABORTED:
    case FI_ENOTCONN:
    case FI_ETIMEDOUT:
    case FI_EHOSTUNREACH:
    case FI_ENETUNREACH:
    case FI_ESHUTDOWN:
    case FI_EIO:
      return Status::Unavailable("fabric: " + std::string(what) + ": connection with " + peer + " lost (" +
                                 fi_strerror(err) + ")");
    case FI_ETRUNC:
      return Status::Protocol("fabric: " + std::string(what) + " from " + peer + " longer than announced");
    default:
      return FabricError(std::string(what) + " with " + peer, err);
  }
}

FabricInfoPtr Hints(const std::string& provider) {
  FabricInfoPtr h(fi_allocinfo());
  if (!h) return h;
  h->ep_attr->type = FI_EP_RDM;
  // Tagged messages only: no FI_RMA, no FI_ATOMIC, no memory registered, so a peer reaches
  // nothing but the receives this daemon posts.
  h->caps = FI_TAGGED | FI_SEND | FI_RECV;
  h->mode = FI_CONTEXT;
  h->domain_attr->mr_mode = 0;
  h->domain_attr->threading = FI_THREAD_SAFE;
  h->tx_attr->msg_order = FI_ORDER_SAS;  // a payload's segments match its receives in order
  h->rx_attr->msg_order = FI_ORDER_SAS;
  h->fabric_attr->prov_name = ::strdup(provider.c_str());
  return h;
}

}  // namespace

// One posted operation. The provider hands `ctx` back in the completion (FI_CONTEXT mode); it is
// the first member, so the context pointer is the Op's address.
struct FabricChannel::Op {
  fi_context ctx{};
  size_t expect = 0;                        // bytes
  size_t len = 0;                           // bytes the completion reported
  FabricChannel::Waiter* waiter = nullptr;  // counts it down; null once abandoned
};

// ---- endpoint --------------------------------------------------------------------------------------------

class FabricEndpoint {
 public:
  FabricEndpoint(FabricContext::Impl* o, FabricDomain* d, std::string address_ip)
      : owner(o), domain(d), ip(std::move(address_ip)) {}
  ~FabricEndpoint() {
    StopCompletions();
    CloseFids();
  }

  FabricContext::Impl* const owner;
  FabricDomain* const domain;
  const std::string ip;
  fid_ep* ep = nullptr;
  fid_cq* cq = nullptr;
  fid_av* av = nullptr;
  int cq_fd = -1;
  UniqueFd wake;  // eventfd: stops the completion thread's poll
  std::vector<std::byte> address;

  std::mutex mu;
  Status broken;                             // closed after a failure: every channel fails with this
  bool dirty = false;                        // an abandoned operation may still be posted: not reused
  std::map<std::string, fi_addr_t> peers;    // address bytes -> fi_addr_t
  std::set<FabricChannel::Waiter*> waiters;  // calls waiting now (woken on a failure)
  // Buffers and operations of channels that went while a receive was posted into them: kept until
  // the endpoint is closed.
  std::vector<std::unique_ptr<std::vector<std::byte>>> graveyard_frames;
  std::vector<std::unique_ptr<FabricChannel::Op>> graveyard_ops;

  Status Open() {
    wake = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!wake.valid()) return Status::IoError("fabric: eventfd", errno);
    fi_cq_attr cqa{};
    cqa.format = FI_CQ_FORMAT_TAGGED;
    cqa.wait_obj = FI_WAIT_FD;
    int rc = fi_cq_open(domain->domain, &cqa, &cq, nullptr);
    if (rc != 0) return FabricError("opening a completion queue", rc);
    rc = fi_control(&cq->fid, FI_GETWAIT, &cq_fd);
    if (rc != 0) return FabricError("the completion queue's wait fd", rc);
    fi_av_attr ava{};
    ava.type = FI_AV_TABLE;
    ava.count = 16;
    rc = fi_av_open(domain->domain, &ava, &av, nullptr);
    if (rc != 0) return FabricError("opening an address vector", rc);
    rc = fi_endpoint(domain->domain, domain->info.get(), &ep, nullptr);
    if (rc != 0) return FabricError("opening an endpoint on " + ip, rc);
    rc = fi_ep_bind(ep, &av->fid, 0);
    if (rc == 0) rc = fi_ep_bind(ep, &cq->fid, FI_TRANSMIT | FI_RECV);
    if (rc == 0) rc = fi_enable(ep);
    if (rc != 0) return FabricError("enabling an endpoint on " + ip, rc);
    std::byte name[128];
    size_t len = sizeof name;
    rc = fi_getname(&ep->fid, name, &len);
    if (rc != 0) return FabricError("the endpoint's address", rc);
    address.assign(name, name + len);
    completions_ = std::thread([this] { CompletionsMain(); });
    return Status::OK();
  }

  void Wake() {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake.get(), &one, sizeof(one));
  }

  // Closes the endpoint after a failure (under mu): ends every operation posted on it, so no
  // caller's buffer is touched afterwards, and wakes every waiting call. Every channel on it fails
  // with `why`.
  Status Break(std::unique_lock<std::mutex>& lk, Status why) {
    if (broken.ok()) broken = why;
    lk.unlock();
    StopCompletions();
    lk.lock();
    CloseFids();
    for (FabricChannel::Waiter* w : waiters) w->cv.notify_all();
    return why;
  }

 private:
  // The endpoint first: once it is closed the provider touches no buffer of ours.
  void CloseFids() {
    if (ep != nullptr) fi_close(&ep->fid);
    if (av != nullptr) fi_close(&av->fid);
    if (cq != nullptr) fi_close(&cq->fid);
    ep = nullptr;
    av = nullptr;
    cq = nullptr;
  }

  void StopCompletions() {
    std::lock_guard<std::mutex> join(join_mu_);  // one thread joins; the others wait for it
    if (!completions_.joinable()) return;
    stop_.store(true);
    Wake();
    completions_.join();
  }

  // Reads the completion queue once and hands each completion to its operation (under mu).
  // Returns how many there were, or an error the queue itself reported. Only the completion
  // thread reads the queue, and the queue is closed only after that thread has stopped.
  Result<int> Read() {
    fi_cq_tagged_entry entries[32];
    ssize_t n = fi_cq_read(cq, entries, 32);
    if (n > 0) {
      std::lock_guard<std::mutex> lock(mu);
      for (ssize_t i = 0; i < n; ++i) {
        Complete(static_cast<FabricChannel::Op*>(entries[i].op_context), entries[i].len, 0);
      }
      return static_cast<int>(n);
    }
    if (n == -FI_EAGAIN) return 0;
    if (n == -FI_EAVAIL) {
      fi_cq_err_entry err{};
      ssize_t r = fi_cq_readerr(cq, &err, 0);
      if (r < 0) return FabricError("reading a completion error", static_cast<int>(r));
      std::lock_guard<std::mutex> lock(mu);
      Complete(static_cast<FabricChannel::Op*>(err.op_context), err.len, err.err != 0 ? err.err : FI_EOTHER);
      return 1;
    }
    return FabricError("reading the completion queue", static_cast<int>(n));
  }

  static void Complete(FabricChannel::Op* op, size_t len, int err) {
    op->len = len;
    FabricChannel::Waiter* w = op->waiter;
    if (w == nullptr) return;  // abandoned
    --w->pending;
    if (err != 0 && w->err == 0) w->err = err;
    if (w->pending == 0 || err != 0) w->cv.notify_one();
  }

  // The endpoint's completion thread: drives the provider (ofi_rxm makes progress when its queue
  // is read), hands completions to the waiting calls, and sleeps in poll(2) on the queue's wait fd
  // when fi_trywait says nothing is pending.
  void CompletionsMain() {
    while (!stop_.load()) {
      Result<int> n = Read();
      if (!n.has_value()) {
        std::lock_guard<std::mutex> lock(mu);
        if (broken.ok()) broken = n.error();
        for (FabricChannel::Waiter* w : waiters) w->cv.notify_all();
        return;
      }
      if (*n > 0) continue;
      fid* f = &cq->fid;
      if (fi_trywait(domain->fabric, &f, 1) != FI_SUCCESS) {
        sched_yield();  // progress pending (data is moving): read again, but let others run
        continue;
      }
      pollfd fds[2] = {{cq_fd, POLLIN, 0}, {wake.get(), POLLIN, 0}};
      ::poll(fds, 2, 1000);
      if (fds[1].revents & POLLIN) {
        uint64_t v;
        [[maybe_unused]] ssize_t r = ::read(wake.get(), &v, sizeof v);
      }
    }
  }

  std::thread completions_;
  std::atomic<bool> stop_{false};
  std::mutex join_mu_;
};

// ---- context -----------------------------------------------------------------------------------------

struct FabricContext::Impl {
  std::string provider;
  size_t segment = kDefaultSegment;
  std::mutex mu;
  std::map<std::string, FabricDomain> domains;
  std::map<std::string, std::vector<std::unique_ptr<FabricEndpoint>>> idle;
  size_t made = 0;

  Result<FabricDomain*> DomainForLocked(const std::string& ip) {
    auto it = domains.find(ip);
    if (it != domains.end()) return &it->second;
    FabricInfoPtr hints = Hints(provider);
    if (!hints) return Status::ResourceExhausted("fabric: fi_allocinfo");
    fi_info* found = nullptr;
    int rc = fi_getinfo(kApiVersion, ip.c_str(), "0", FI_SOURCE | FI_NUMERICHOST, hints.get(), &found);
    if (rc != 0) return FabricError("no " + provider + " domain for local address " + ip, rc);
    FabricDomain d;
    d.info.reset(found);
    rc = fi_fabric(found->fabric_attr, &d.fabric, nullptr);
    if (rc != 0) return FabricError("opening fabric " + std::string(found->fabric_attr->name), rc);
    rc = fi_domain(d.fabric, found, &d.domain, nullptr);
    if (rc != 0) {
      fi_close(&d.fabric->fid);
      return FabricError("opening domain " + std::string(found->domain_attr->name), rc);
    }
    return &domains.emplace(ip, std::move(d)).first->second;
  }

  // The last channel of a session let go of `e`: kept for the next session if it ended cleanly.
  void Release(FabricEndpoint* e) {
    std::unique_ptr<FabricEndpoint> owned(e);
    {
      // No channel is left, but the completion thread may still record a failed queue.
      std::lock_guard<std::mutex> state(e->mu);
      if (!e->broken.ok() || e->dirty || e->ep == nullptr) return;
    }
    std::lock_guard<std::mutex> lock(mu);
    auto& list = idle[e->ip];
    if (list.size() < kMaxIdlePerAddress) list.push_back(std::move(owned));
  }

  ~Impl() {
    idle.clear();  // endpoints before their domains
    for (auto& [ip, d] : domains) {
      if (d.domain != nullptr) fi_close(&d.domain->fid);
      if (d.fabric != nullptr) fi_close(&d.fabric->fid);
    }
  }
};

FabricContext::FabricContext(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
FabricContext::~FabricContext() = default;

size_t FabricContext::segment_size() const { return impl_->segment; }

size_t FabricContext::endpoints_made() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->made;
}

size_t FabricContext::endpoints_idle() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  size_t n = 0;
  for (const auto& [ip, list] : impl_->idle) n += list.size();
  return n;
}

Result<std::unique_ptr<FabricContext>> FabricContext::Create(const FabricOptions& o) {
  const std::string suffix = ";ofi_rxm";
  if (o.provider.size() <= suffix.size() || !o.provider.ends_with(suffix)) {
    return Status::InvalidArgument("fabric: provider '" + o.provider +
                                   "': only ofi_rxm layerings are supported (tcp;ofi_rxm, verbs;ofi_rxm)");
  }
  FabricInfoPtr hints = Hints(o.provider);
  if (!hints) return Status::ResourceExhausted("fabric: fi_allocinfo");
  fi_info* found = nullptr;
  int rc = fi_getinfo(kApiVersion, nullptr, nullptr, 0, hints.get(), &found);
  if (rc != 0) return FabricError("no usable provider " + o.provider, rc);
  fi_freeinfo(found);
  auto impl = std::make_unique<Impl>();
  impl->provider = o.provider;
  // ofi_rxm's eager limit is at least its buffer size (FI_OFI_RXM_BUFFER_SIZE), so segments of
  // that size never take the rendezvous protocol.
  if (const char* env = std::getenv("FI_OFI_RXM_BUFFER_SIZE"); env != nullptr && *env != '\0') {
    char* end = nullptr;
    unsigned long long v = std::strtoull(env, &end, 10);
    if (end == env || *end != '\0' || v < kMinSegment) {
      return Status::InvalidArgument("fabric: FI_OFI_RXM_BUFFER_SIZE='" + std::string(env) + "': at least " +
                                     std::to_string(kMinSegment) + " bytes, a plain number");
    }
    impl->segment = static_cast<size_t>(std::min<unsigned long long>(v, 64u << 20));
  }
  return std::unique_ptr<FabricContext>(new FabricContext(std::move(impl)));
}

Result<std::shared_ptr<FabricEndpoint>> FabricContext::Acquire(const std::string& ip) {
  Impl* impl = impl_.get();
  auto deleter = [impl](FabricEndpoint* e) { impl->Release(e); };
  std::unique_ptr<FabricEndpoint> e;
  {
    std::lock_guard<std::mutex> lock(impl->mu);
    auto& list = impl->idle[ip];
    if (!list.empty()) {
      e = std::move(list.back());
      list.pop_back();
    } else {
      PORO_ASSIGN_OR_RETURN(FabricDomain * d, impl->DomainForLocked(ip));
      e = std::make_unique<FabricEndpoint>(impl, d, ip);
      ++impl->made;
    }
  }
  if (e->ep == nullptr) PORO_RETURN_IF_ERROR(e->Open());  // outside the lock: ofi_rxm zeroes its pools
  return std::shared_ptr<FabricEndpoint>(e.release(), deleter);
}

// ---- channel --------------------------------------------------------------------------------------------

FabricChannel::FabricChannel(std::shared_ptr<FabricEndpoint> ep, uint64_t tag, std::string peer)
    : ep_(std::move(ep)), tag_(tag & ~uint64_t{1}), peer_(std::move(peer)) {}

FabricChannel::~FabricChannel() { Abandon(); }

const std::vector<std::byte>& FabricChannel::address() const { return ep_->address; }

void FabricChannel::Abandon() {
  if (!head_posted_) return;
  head_posted_ = false;
  std::lock_guard<std::mutex> lock(ep_->mu);
  if (ep_->ep == nullptr) return;  // closed: nothing is posted any more
  ep_->dirty = true;
  head_->waiter = nullptr;  // a completion after this goes to no one
  waiter_.pending = 0;
  ep_->graveyard_frames.push_back(std::move(frame_));
  ep_->graveyard_ops.push_back(std::move(head_));
}

Result<std::unique_ptr<FabricChannel>> FabricChannel::Listen(std::shared_ptr<FabricEndpoint> ep, uint64_t tag,
                                                             std::string peer) {
  std::unique_ptr<FabricChannel> ch(new FabricChannel(std::move(ep), tag, std::move(peer)));
  ch->receiving_ = true;
  ch->frame_ = std::make_unique<std::vector<std::byte>>(kPrefix + kMaxHeader);
  ch->head_ = std::make_unique<Op>();
  return ch;
}

Result<std::unique_ptr<FabricChannel>> FabricChannel::Connect(std::shared_ptr<FabricEndpoint> ep,
                                                              std::span<const std::byte> address,
                                                              uint64_t tag, std::string peer) {
  std::unique_ptr<FabricChannel> ch(new FabricChannel(std::move(ep), tag, std::move(peer)));
  FabricEndpoint& e = *ch->ep_;
  // The address came from the peer: it must be of this domain's format before libfabric reads it
  // (a sockaddr of the local address's family, for the ofi_rxm providers).
  const fi_info* info = e.domain->info.get();
  size_t want = info->src_addrlen;
  sa_family_t family = AF_UNSPEC;
  if (info->addr_format == FI_SOCKADDR_IN) {
    want = sizeof(sockaddr_in);
    family = AF_INET;
  } else if (info->addr_format == FI_SOCKADDR_IN6) {
    want = sizeof(sockaddr_in6);
    family = AF_INET6;
  }
  if (address.size() != want) {
    return Status::Protocol("fabric: a channel address of " + std::to_string(address.size()) +
                            " bytes from " + ch->peer_ + " (expected " + std::to_string(want) + ")");
  }
  if (family != AF_UNSPEC) {
    sa_family_t got;
    std::memcpy(&got, address.data(), sizeof got);
    if (got != family)
      return Status::Protocol("fabric: a channel address of another family from " + ch->peer_);
  }
  std::lock_guard<std::mutex> lock(e.mu);
  if (e.ep == nullptr) return e.broken;
  const std::string key(reinterpret_cast<const char*>(address.data()), address.size());
  auto it = e.peers.find(key);
  if (it == e.peers.end()) {
    fi_addr_t a = FI_ADDR_UNSPEC;
    int n = fi_av_insert(e.av, address.data(), 1, &a, 0, nullptr);
    if (n != 1) return FabricError("inserting the address of " + ch->peer_, n < 0 ? n : FI_EINVAL);
    it = e.peers.emplace(key, a).first;
  }
  ch->dest_ = it->second;
  return ch;
}

Status FabricChannel::Post(const std::function<ssize_t()>& post, Op& op, const TransportOptions& opts,
                           const char* what) {
  FabricEndpoint& e = *ep_;
  std::unique_lock<std::mutex> lk(e.mu);
  const auto start = Clock::now();
  op.waiter = &waiter_;
  for (;;) {
    if (e.ep == nullptr || !e.broken.ok()) return broken_ = e.Break(lk, e.broken);
    ++waiter_.pending;
    ssize_t rc = post();
    if (rc == 0) return Status::OK();
    --waiter_.pending;
    if (rc != -FI_EAGAIN) {
      return broken_ = e.Break(lk, FabricError(std::string(what) + " with " + peer_, static_cast<int>(rc)));
    }
    // The provider's queue is full: the completion thread frees it.
    if (waiter_.err != 0) return broken_ = e.Break(lk, PeerError(what, peer_, waiter_.err));
    if (shut_.load())
      return broken_ = e.Break(lk, Status::Cancelled("fabric channel with " + peer_ + " shut down"));
    if (opts.idle_timeout.count() > 0 && Clock::now() - start > opts.idle_timeout) {
      return broken_ = e.Break(lk, Status::DeadlineExceeded("fabric: " + std::string(what) + " with " +
                                                            peer_ + ": the provider's queue stayed full"));
    }
    e.waiters.insert(&waiter_);
    waiter_.cv.wait_for(lk, std::chrono::milliseconds(5));
    e.waiters.erase(&waiter_);
  }
}

Status FabricChannel::Wait(const TransportOptions& opts, const char* what, bool timeout_breaks) {
  FabricEndpoint& e = *ep_;
  std::unique_lock<std::mutex> lk(e.mu);
  auto last_progress = Clock::now();
  size_t pending_before = waiter_.pending;
  e.waiters.insert(&waiter_);
  struct Unregister {
    FabricEndpoint& e;
    Waiter* w;
    ~Unregister() { e.waiters.erase(w); }  // under mu: lk is released after this runs
  } unregister{e, &waiter_};
  for (;;) {
    if (e.ep == nullptr) return broken_ = e.broken;  // closed by a failure: nothing is posted now
    if (waiter_.err != 0) return broken_ = e.Break(lk, PeerError(what, peer_, waiter_.err));
    if (!e.broken.ok()) return broken_ = e.Break(lk, e.broken);  // the completion queue failed
    if (waiter_.pending == 0) return Status::OK();
    if (waiter_.pending < pending_before) {
      pending_before = waiter_.pending;
      last_progress = Clock::now();
    }
    if (shut_.load())
      return broken_ = e.Break(lk, Status::Cancelled("fabric channel with " + peer_ + " shut down"));
    int timeout_ms = 1000;
    if (opts.idle_timeout.count() > 0) {
      auto left = opts.idle_timeout -
                  std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - last_progress);
      if (left.count() <= 0) {
        Status s = Status::DeadlineExceeded("fabric: " + std::string(what) + " with " + peer_ +
                                            ": no progress for " + std::to_string(opts.idle_timeout.count()) +
                                            " ms");
        if (!timeout_breaks) return s;
        return broken_ = e.Break(lk, s);
      }
      timeout_ms = static_cast<int>(std::min<int64_t>(left.count(), timeout_ms));
    }
    waiter_.cv.wait_for(lk, std::chrono::milliseconds(timeout_ms));
  }
}

Status FabricChannel::Send(std::span<const std::byte> header, std::span<const std::byte> payload,
                           const TransportOptions& opts) {
  if (!broken_.ok()) return broken_;
  if (receiving_) return Status::Internal("fabric: this end of the channel only receives");
  if (header.empty() || header.size() > kMaxHeader) {
    return Status::InvalidArgument("fabric: header of " + std::to_string(header.size()) + " bytes");
  }
  const size_t seg = ep_->owner->segment;
  const size_t segments = (payload.size() + seg - 1) / seg;
  std::byte frame[kPrefix + kMaxHeader];
  EncodeFixed64(frame, payload.size());
  EncodeFixed32(frame + 8, static_cast<uint32_t>(seg));
  std::memcpy(frame + kPrefix, header.data(), header.size());
  std::vector<Op> ops(1 + segments);
  ops[0].expect = kPrefix + header.size();
  fid_ep* const* ep = &ep_->ep;  // read under the endpoint's lock (Post holds it)
  PORO_RETURN_IF_ERROR(Post(
      [&] { return fi_tsend(*ep, frame, ops[0].expect, nullptr, dest_, tag_ | kHeaderTag, &ops[0].ctx); },
      ops[0], opts, "sending a header"));
  for (size_t i = 0; i < segments; ++i) {
    Op& op = ops[1 + i];
    const size_t off = i * seg;
    op.expect = std::min(seg, payload.size() - off);
    PORO_RETURN_IF_ERROR(Post(
        [&] {
          return fi_tsend(*ep, payload.data() + off, op.expect, nullptr, dest_, tag_ | kPayloadTag, &op.ctx);
        },
        op, opts, "sending a payload"));
  }
  // Returns once the provider is done with every buffer (over tcp: the bytes are in the socket).
  return Wait(opts, "sending a message");
}

Result<MessageChannel::Received> FabricChannel::Receive(std::span<std::byte> header_buf,
                                                        const PayloadSink& sink, size_t max_payload,
                                                        const TransportOptions& opts) {
  if (!broken_.ok()) return broken_;
  if (!receiving_) return Status::Internal("fabric: this end of the channel only sends");
  std::vector<std::byte>& frame = *frame_;
  fid_ep* const* ep = &ep_->ep;
  // The header's receive stays posted across a timeout: a quiet peer may still speak later, into
  // this same receive.
  if (!head_posted_) {
    *head_ = Op{};
    head_->expect = frame.size();
    PORO_RETURN_IF_ERROR(Post(
        [&] {
          return fi_trecv(*ep, frame.data(), frame.size(), nullptr, FI_ADDR_UNSPEC, tag_ | kHeaderTag, 0,
                          &head_->ctx);
        },
        *head_, opts, "receiving a header"));
    head_posted_ = true;
  }
  Status waited = Wait(opts, "receiving a header", /*timeout_breaks=*/false);
  if (waited.code() == Code::kDeadlineExceeded && broken_.ok()) return waited;  // still posted
  head_posted_ = false;
  PORO_RETURN_IF_ERROR(waited);
  auto fail = [&](Status s) -> Status {
    std::unique_lock<std::mutex> lk(ep_->mu);
    return broken_ = ep_->Break(lk, std::move(s));
  };
  const size_t got = head_->len;
  if (got <= kPrefix || got > frame.size()) {
    return fail(
        Status::Protocol("fabric: a message header of " + std::to_string(got) + " bytes from " + peer_));
  }
  const uint64_t payload_len = DecodeFixed64(frame.data());
  const uint32_t seg = DecodeFixed32(frame.data() + 8);
  Received out;
  out.header_len = got - kPrefix;
  out.payload_len = static_cast<size_t>(payload_len);
  std::memcpy(header_buf.data(), frame.data() + kPrefix, out.header_len);
  if (payload_len > max_payload) {
    return fail(Status::Protocol("fabric: payload of " + std::to_string(payload_len) + " bytes from " +
                                 peer_ + " (at most " + std::to_string(max_payload) + ")"));
  }
  if (payload_len > 0 && (seg < kMinSegment || (payload_len + seg - 1) / seg > kMaxSegments)) {
    return fail(Status::Protocol("fabric: segments of " + std::to_string(seg) + " bytes for a payload of " +
                                 std::to_string(payload_len) + " from " + peer_));
  }
  // The sink sees every message, also one without a payload (it reads the header).
  auto dest = sink(header_buf.first(out.header_len), out.payload_len);
  if (!dest.has_value()) {
    // A refused payload is never received: this channel is out of step now.
    if (payload_len > 0) fail(dest.error()).IgnoreError();
    return dest.error();
  }
  if (payload_len == 0) return out;
  if (dest->size() < out.payload_len) {
    return fail(Status::Internal("fabric: payload sink returned " + std::to_string(dest->size()) +
                                 " bytes for a payload of " + std::to_string(out.payload_len)));
  }
  const size_t segments = (out.payload_len + seg - 1) / seg;
  std::vector<Op> ops(segments);
  for (size_t i = 0; i < segments; ++i) {
    Op& op = ops[i];
    const size_t off = i * seg;
    op.expect = std::min<size_t>(seg, out.payload_len - off);
    PORO_RETURN_IF_ERROR(Post(
        [&] {
          return fi_trecv(*ep, dest->data() + off, op.expect, nullptr, FI_ADDR_UNSPEC, tag_ | kPayloadTag, 0,
                          &op.ctx);
        },
        op, opts, "receiving a payload"));
  }
  PORO_RETURN_IF_ERROR(Wait(opts, "receiving a payload"));
  for (const Op& op : ops) {
    if (op.len != op.expect) {
      return fail(Status::Protocol("fabric: a payload segment of " + std::to_string(op.len) + " bytes from " +
                                   peer_ + ", announced " + std::to_string(op.expect)));
    }
  }
  return out;
}

Status FabricChannel::Close(const TransportOptions& opts) {
  (void)opts;
  // Send() returns once the provider is done with the bytes, so a sending end has nothing in
  // flight; a receive still posted is left to the endpoint, which is then not reused.
  Abandon();
  return broken_;
}

void FabricChannel::Shutdown() {
  shut_.store(true);
  std::lock_guard<std::mutex> lock(ep_->mu);
  waiter_.cv.notify_all();
}

}  // namespace pororoca::transport
