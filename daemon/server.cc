#include "daemon/server.h"

#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"
#include "pororoca/checksum.h"
#include "pororoca/config.h"
#include "proto/wire.h"
#include "transport/fault.h"
#include "transport/tcp.h"
#if PORO_WITH_FABRIC
#include "transport/fabric.h"
#else
namespace pororoca::transport {
class FabricContext {};  // never made without libfabric
}  // namespace pororoca::transport
#endif
#if PORO_WITH_UCX
#include "transport/ucx.h"
#else
namespace pororoca::transport {
class UcxContext {};  // never made without UCX
}  // namespace pororoca::transport
#endif

namespace pororoca::daemon {

Result<std::unique_ptr<Daemon>> Daemon::Create(Config config) {
  std::unique_ptr<Daemon> d(new Daemon(std::move(config)));
  Config& c = d->config_;
  auto root = engine::ExportRoot::Create(c.export_root);
  if (!root.has_value()) return root.error().Annotate("[storage] export_root");
  d->root_ = std::make_unique<engine::ExportRoot>(std::move(*root));
  if (::mkdir(c.state_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return Status::IoError("[storage] state_dir " + c.state_dir, errno);
  }
  PORO_ASSIGN_OR_RETURN(d->fed_, Federation::Open(c));
  c.sndbuf = ResolveSndbuf(c.sndbuf);
  size_t count = std::max<size_t>(8, c.buffer_pool_bytes / c.chunk_size);
  PORO_ASSIGN_OR_RETURN(d->pool_, io::BufferPool::Create(c.chunk_size, count));
  d->SetUpTransports();

  Daemon* self = d.get();
  d->binds_ = std::make_unique<BindTable>([self](UniqueFd fd) { return self->MakeChannel(std::move(fd)); });
  SessionDeps deps;
  deps.config = &d->config_;
  deps.root = d->root_.get();
  deps.pool = d->pool_.get();
  deps.fed = d->fed_.get();
  deps.binds = d->binds_.get();
  deps.make_channel = [self](UniqueFd fd) { return self->MakeChannel(std::move(fd)); };
  deps.wrap_channel = [self](std::unique_ptr<transport::MessageChannel> ch) {
    return self->WrapChannel(std::move(ch));
  };
  deps.transports = &d->transports_;
  deps.moving = &d->moving_;
  deps.stopping = &d->stopping_;
  d->sessions_ = std::make_unique<SessionRunner>(std::move(deps));
  TransferManager::Options to;
  to.db_path = c.state_dir + "/queue.db";
  to.legacy_dir = c.state_dir + "/transfers";
  to.node = c.endpoint_name;
  to.max_running = c.max_running;
  to.max_running_per_peer = c.max_running_per_peer;
  to.retry_attempts = c.retry_attempts;
  to.retry_max_backoff_s = c.retry_max_backoff_s;
  to.keep_finished_s = c.keep_finished_s;
  d->transfers_ = std::make_unique<TransferManager>(
      to, [self](Transfer& t) { return self->sessions_->Initiate(t); }, &d->workers_);
  PORO_RETURN_IF_ERROR(d->transfers_->Open());
  if (!c.staging_dir.empty()) {
    StagingCache::Options so;
    // Under the export root as the daemon resolved it, so the pulls' destinations are inside it.
    size_t root_len = c.export_root.size();
    while (root_len > 1 && c.export_root[root_len - 1] == '/') --root_len;
    so.dir = d->root_->path() + c.staging_dir.substr(root_len);
    so.state_file = c.state_dir + "/staging.json";
    so.quota = c.staging_quota;
    so.high_watermark = c.staging_high_watermark;
    so.low_watermark = c.staging_low_watermark;
    so.revalidate_s = c.staging_revalidate_s;
    so.default_ttl_s = c.staging_default_ttl_s;
    d->staging_ = std::make_unique<StagingCache>(std::move(so), d->transfers_.get());
    if (Status s = d->staging_->Open(); !s.ok()) return s.Annotate("[staging]");
  }
  d->routes_ = std::make_unique<ApiRoutes>(
      ApiRoutes::Deps{&d->config_, d->root_.get(), d->pool_->buffer_size(), d->fed_.get(),
                      d->transfers_.get(), d->sessions_.get(), &d->stopping_, d->staging_.get()});
  d->peers_ = std::make_unique<PeerListener>(
      d->binds_.get(), [self](UniqueFd fd) { self->sessions_->Respond(std::move(fd)); }, &d->workers_);
  return d;
}

Result<std::string> Daemon::Check(const Config& c) {
  auto root = engine::ExportRoot::Create(c.export_root);
  if (!root.has_value()) return root.error().Annotate("[storage] export_root");
  struct stat st {};
  if (::stat(c.state_dir.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode))
      return Status::InvalidArgument("[storage] state_dir " + c.state_dir + " is not a directory");
    if (::access(c.state_dir.c_str(), R_OK | W_OK | X_OK) != 0)
      return Status::IoError("[storage] state_dir " + c.state_dir + " is not writable", errno);
  } else if (errno != ENOENT) {
    return Status::IoError("[storage] state_dir " + c.state_dir, errno);
  }
  PORO_ASSIGN_OR_RETURN(std::string manifest, Federation::Check(c));
  return "endpoint " + c.endpoint_name + ", export root " + root->path() + ", " + manifest;
}

Daemon::~Daemon() { Stop(); }

void Daemon::SetUpTransports() {
  for (const std::string& name : config_.transports) {
    Status why;
    if (name == "ucx") {
#if PORO_WITH_UCX
      transport::UcxOptions o;
      o.tls = config_.ucx_tls;
      o.net_devices = config_.ucx_net_devices;
      auto ctx = transport::UcxContext::Create(o);
      if (ctx.has_value()) why = (*ctx)->RegisterRegion(pool_->base(), pool_->total_bytes());
      if (ctx.has_value() && why.ok()) {
        ucx_ = std::move(*ctx);
        transports_.ucx = ucx_.get();
      } else if (!ctx.has_value()) {
        why = ctx.error();
      }
#else
      why = Status::NotSupported("this build has no UCX support (PORO_WITH_UCX=OFF)");
#endif
    } else if (name == "fabric") {
#if PORO_WITH_FABRIC
      // No memory is registered: see transport/fabric.h for why the pool is not.
      transport::FabricOptions o;
      o.provider = config_.fabric_provider;
      auto ctx = transport::FabricContext::Create(o);
      if (ctx.has_value()) {
        fabric_ = std::move(*ctx);
        transports_.fabric = fabric_.get();
      } else {
        why = ctx.error();
      }
#else
      why = Status::NotSupported("this build has no libfabric support (PORO_WITH_FABRIC=OFF)");
#endif
    }
    if (why.ok()) {
      transports_.offered.push_back(name);
    } else {
      PORO_LOG(WARNING) << "[network] transports lists " << name
                        << ", which is unavailable: " << why.message() << "; sessions will not use it";
      transports_.unavailable[name] = std::string(why.message());
    }
  }
  if (transports_.offered.empty()) {
    PORO_LOG(WARNING) << "no transport of [network] transports is available: offering tcp";
    transports_.offered.push_back("tcp");
  }
}

std::unique_ptr<transport::MessageChannel> Daemon::MakeChannel(UniqueFd fd) {
  transport::SocketOptions so;
  so.sndbuf = config_.sndbuf;
  so.rcvbuf = config_.rcvbuf;
  so.congestion = config_.congestion;
  transport::ApplySocketOptions(fd.get(), so).IgnoreError();  // best effort, as the kernel allows
  return WrapChannel(transport::MakeTcpMessageChannel(std::move(fd)));
}

std::unique_ptr<transport::MessageChannel> Daemon::WrapChannel(
    std::unique_ptr<transport::MessageChannel> ch) {
  transport::FaultOptions fo;
  fo.corrupt_every = config_.fault_corrupt_every;
  fo.send_delay = std::chrono::microseconds(config_.fault_send_delay_us);
  if (config_.fault_forge_digest) {
    fo.forge = [](std::span<std::byte> header, std::span<const std::byte> payload) {
      // The chunk header's digest, rewritten to match (a sealed header's tag then fails, as it must).
      if (header.size() < proto::kChunkHeaderSize) return;
      auto plain = header.first<proto::kChunkHeaderSize>();
      auto h = proto::DecodeChunkHeader(plain);
      if (!h.has_value()) return;
      h->digest = Xxh3_128(payload);
      proto::EncodeChunkHeader(*h, plain);
    };
  }
  if (!fo.active()) return ch;
  return std::make_unique<transport::FaultInjectionChannel>(std::move(ch), fo, fault_counter_);
}

Status Daemon::Start() {
  if (Status s = peers_->Listen(config_.listen); !s.ok()) {
    if (s.sys_errno() == EADDRINUSE) {
      return Status(Code::kUnavailable,
                    std::string(s.message()) + ": another process (another pororocad?) has " +
                        "this port; stop it, or set another port in [network] listen of " +
                        config_.source_file);
    }
    return s;
  }
  auto srv = api::HttpServer::Listen(config_.api_socket, config_.api_socket_mode);
  if (!srv.has_value()) return srv.error().Annotate("[api] socket");
  api_ = std::move(*srv);
  routes_->RegisterOn(*api_);
  if (!config_.api_listen.empty()) {
    // The HTTPS API presents this endpoint's certificate (issued by the federation CA) and asks
    // for none: its callers authenticate with bearer tokens.
    transport::TlsConfig tc;
    tc.ca_file = config_.tls_ca;
    tc.cert_file = config_.tls_cert;
    tc.key_file = config_.tls_key;
    tc.server = true;
    tc.require_peer_cert = false;
    auto ctx = transport::TlsContext::Create(tc);
    if (!ctx.has_value()) return ctx.error().Annotate("[api] listen");
    auto hp = transport::ParseHostPort(config_.api_listen);
    if (!hp.has_value()) return hp.error().Annotate("[api] listen");
    auto https = api::HttpServer::ListenTls(hp->first, hp->second, std::move(*ctx));
    if (!https.has_value()) return https.error().Annotate("[api] listen");
    https_ = std::move(*https);
    routes_->RegisterOn(*https_);
    https_->Start();
  }
  api_->Start();
  peers_->Start();
  // The pool's pages are mapped by a thread at the lowest priority (nice 19, not SCHED_IDLE: it
  // holds the address space's lock while it maps, and must not sit on it indefinitely on a busy
  // host), only once the daemon has moved no data for a second, and pausing while it moves any: the daemon
  // answers at once (a restart after a crash resumes sooner), and a transfer that starts first maps
  // the few buffers it takes itself: the mapping never competes with a transfer for CPU or for the
  // address space's lock (docs/performance.md has the measurements, which disagree on how much that
  // cost). A daemon that is never idle has its pool mapped by use alone.
  pool_thread_ = std::thread([this] {
    ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), 19);  // this thread only; best effort
    Status s = pool_->Populate(&moving_, std::chrono::seconds(1));
    if (!s.ok() && s.code() != Code::kCancelled)
      PORO_LOG(INFO) << s.ToString() << "; pages are mapped on first use";
  });
  if (config_.fault_corrupt_every || config_.fault_send_delay_us) {
    PORO_LOG(WARNING) << "FAULT INJECTION ACTIVE: corrupting every " << config_.fault_corrupt_every
                      << "th chunk sent" << (config_.fault_forge_digest ? " (digest forged to match)" : "")
                      << ", delaying each by " << config_.fault_send_delay_us << " us";
  }
  PORO_LOG(INFO) << "pororocad " << PORO_VERSION << " endpoint " << config_.endpoint_name << " exporting "
                 << root_->path() << "; peers on " << peers_->host() << ":" << peers_->port() << ", API on "
                 << config_.api_socket << (https_ ? " and " + https_->where() : std::string()) << "; io "
                 << (io::UringAvailable() ? "io_uring" : "posix") << ", pool " << pool_->count() << " x "
                 << (pool_->buffer_size() >> 10) << " KiB; sndbuf "
                 << (config_.sndbuf ? std::to_string(config_.sndbuf) : std::string("autotuned"));
  fed_->Start();
  transfers_->LoadPersisted();
  // After the queue: a pull that was staging a dataset when the daemon stopped is found there.
  if (staging_) staging_->Start();
  return Status::OK();
}

void Daemon::Stop() {
  if (stopping_.exchange(true)) return;
  if (fed_) fed_->CancelAll();
  if (api_) api_->Stop();
  if (https_) https_->Stop();
  if (peers_) peers_->Stop();
  if (staging_) staging_->Stop();
  if (transfers_) transfers_->Stop();
  if (binds_) binds_->WakeAll();
  if (pool_) pool_->StopPopulate();
  if (pool_thread_.joinable()) pool_thread_.join();
  workers_.JoinAll();
  if (fed_) fed_->Stop();
}

}  // namespace pororoca::daemon
