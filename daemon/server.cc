#include "daemon/server.h"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/rand.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>

#include "base/file_util.h"
#include "base/log.h"
#include "pororoca/config.h"
#include "transport/fault.h"
#include "transport/tcp.h"

namespace pororoca::daemon {

using nlohmann::json;
using transport::TransportOptions;

namespace {

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A transfer in this state will not run again.
bool IsTerminal(const std::string& state) {
  return state == "succeeded" || state == "failed" || state == "cancelled";
}

// A transfer that ended before `cutoff_ms` (Daemon::PruneCutoffMs; 0 = never) is forgotten.
bool Expired(const std::string& state, int64_t finished_ms, int64_t cutoff_ms) {
  return cutoff_ms != 0 && IsTerminal(state) && finished_ms > 0 && finished_ms < cutoff_ms;
}

int HttpStatusFor(Code c) {
  switch (c) {
    case Code::kInvalidArgument:
      return 400;
    case Code::kNotFound:
      return 404;
    case Code::kPermissionDenied:
      return 403;
    case Code::kUnauthenticated:
      return 403;
    case Code::kAlreadyExists:
      return 409;
    case Code::kUnavailable:
      return 503;
    default:
      return 500;
  }
}

api::HttpResponse ErrorResponse(const Status& s) {
  std::string code(CodeName(s.code()));
  return api::HttpResponse::Error(HttpStatusFor(s.code()), code, s.message());
}

std::string StateDirTransfers(const Config& c) { return c.state_dir + "/transfers"; }

struct Location {
  bool remote = false;
  std::string endpoint;
  std::string path;
  bool trailing_slash = false;
};

Result<Location> ParseLocation(const std::string& s) {
  Location l;
  if (s.empty()) return Status::InvalidArgument("empty path");
  if (s.front() == '/') {
    l.path = s;
  } else {
    size_t colon = s.find(':');
    if (colon == std::string::npos || colon == 0) {
      return Status::InvalidArgument("'" + s + "' is neither an absolute local path nor ENDPOINT:/path");
    }
    l.remote = true;
    l.endpoint = s.substr(0, colon);
    l.path = s.substr(colon + 1);
    if (l.path.empty()) l.path = "/";
    if (l.path.front() != '/') l.path = "/" + l.path;
  }
  l.trailing_slash = l.path.size() > 1 && l.path.back() == '/';
  return l;
}

}  // namespace

std::string NewId() {
  unsigned char b[16];
  RAND_bytes(b, sizeof b);
  return proto::HexEncode(std::span<const std::byte>(reinterpret_cast<const std::byte*>(b), sizeof b));
}

// A transfer submitted by a local user; this daemon initiates it.
struct Transfer {
  std::string id;
  bool push = true;
  std::string local_path;  // absolute, as given
  Location remote;
  bool local_trailing_slash = false;
  bool recursive = false;
  json options;  // streams, chunk_size, sync, existing
  int64_t uid = -1;
  std::string user;   // federated identity of the local user
  std::string token;  // bearer token the user gave (else the daemon mints one per attempt)
  int64_t created_ms = 0, started_ms = 0, finished_ms = 0;

  mutable std::mutex mu;          // guards the fields below
  std::condition_variable ended;  // notified (under mu) when `state` becomes terminal
  std::string state = "queued";
  unsigned attempts = 0;
  std::string error;
  std::string error_code;
  uint64_t bytes_sent_prev = 0;  // payload sent by finished attempts
  int64_t first_resumed = -1;    // bytes found at the destination by the first attempt
  json summary;
  engine::StatsSnapshot last;  // snapshot at the end of the last attempt
  std::vector<std::pair<std::string, std::string>> failures;
  std::shared_ptr<engine::TransferStats> stats;  // live, during an attempt
  std::atomic<bool> cancel{false};
  std::string cut_reason;  // guarded by mu: the federation cut the session (peer suspended/revoked)

  std::string SourceText() const { return push ? local_path : remote.endpoint + ":" + remote.path; }
  std::string DestText() const { return push ? remote.endpoint + ":" + remote.path : local_path; }
  json Persisted() const {
    return json{{"id", id},
                {"direction", push ? "push" : "pull"},
                {"local_path", local_path},
                {"endpoint", remote.endpoint},
                {"remote_path", remote.path},
                {"recursive", recursive},
                {"options", options},
                {"uid", uid},
                {"user", user},
                {"token", token},
                {"created_ms", created_ms},
                {"state", state},
                {"attempts", attempts},
                {"error", error},
                {"error_code", error_code},
                {"bytes_sent_prev", bytes_sent_prev},
                {"first_resumed", first_resumed},
                {"summary", summary},
                {"started_ms", started_ms},
                {"finished_ms", finished_ms},
                {"progress", last.ToJson()},
                {"failures", FailuresJson()}};
  }
  json FailuresJson() const {
    json a = json::array();
    for (const auto& [p, m] : failures) a.push_back(json{{"path", p}, {"error", m}});
    return a;
  }
};

struct PendingSession {
  std::vector<std::byte> key;
  unsigned streams = 0;
  unsigned bound = 0;
  std::vector<std::unique_ptr<transport::MessageChannel>> channels;
  bool closed = false;
};

Daemon::Daemon(Config config) : config_(std::move(config)) {}

Daemon::~Daemon() { Stop(); }

Result<std::unique_ptr<Daemon>> Daemon::Create(Config config) {
  std::unique_ptr<Daemon> d(new Daemon(std::move(config)));
  const Config& c = d->config_;
  auto root = engine::ExportRoot::Create(c.export_root);
  if (!root.has_value()) return root.error().Annotate("[storage] export_root");
  d->root_ = std::make_unique<engine::ExportRoot>(std::move(*root));
  if (::mkdir(c.state_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return Status::IoError("[storage] state_dir " + c.state_dir, errno);
  }
  if (::mkdir(StateDirTransfers(c).c_str(), 0700) != 0 && errno != EEXIST) {
    return Status::IoError("create " + StateDirTransfers(c), errno);
  }
  PORO_ASSIGN_OR_RETURN(d->fed_, Federation::Open(d->config_));
  d->config_.sndbuf = ResolveSndbuf(c.sndbuf);
  size_t count = std::max<size_t>(8, c.buffer_pool_bytes / c.chunk_size);
  PORO_ASSIGN_OR_RETURN(d->pool_, io::BufferPool::Create(c.chunk_size, count));
  return d;
}

Status Daemon::Start() {
  PORO_ASSIGN_OR_RETURN(auto hp, transport::ParseHostPort(config_.listen));
  auto lfd = transport::TcpListen(hp.first, hp.second, 128);
  if (!lfd.has_value()) return lfd.error().Annotate("[network] listen " + config_.listen);
  peer_listen_ = std::move(*lfd);
  PORO_ASSIGN_OR_RETURN(peer_port_, transport::LocalPort(peer_listen_.get()));
  auto srv = api::HttpServer::Listen(config_.api_socket, config_.api_socket_mode);
  if (!srv.has_value()) return srv.error().Annotate("[api] socket");
  api_ = std::move(*srv);
  RegisterRoutes();
  api_->Start();
  peer_thread_ = std::thread([this] { PeerAcceptLoop(); });
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
                      << "th chunk sent, delaying each by " << config_.fault_send_delay_us << " us";
  }
  PORO_LOG(INFO) << "pororocad " << PORO_VERSION << " endpoint " << config_.endpoint_name << " exporting "
                 << root_->path() << "; peers on " << hp.first << ":" << peer_port_ << ", API on "
                 << config_.api_socket << "; io " << (io::UringAvailable() ? "io_uring" : "posix")
                 << ", pool " << pool_->count() << " x " << (pool_->buffer_size() >> 10) << " KiB; sndbuf "
                 << (config_.sndbuf ? std::to_string(config_.sndbuf) : std::string("autotuned"));
  fed_->Start();
  LoadPersisted();
  return Status::OK();
}

void Daemon::Stop() {
  if (stopping_.exchange(true)) return;
  if (fed_) fed_->CancelAll();
  if (api_) api_->Stop();
  if (peer_listen_.valid()) ::shutdown(peer_listen_.get(), SHUT_RDWR);
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [id, t] : transfers_) t->cancel = true;
    cv_.notify_all();
  }
  if (peer_thread_.joinable()) peer_thread_.join();
  if (pool_) pool_->StopPopulate();
  if (pool_thread_.joinable()) pool_thread_.join();
  std::list<Worker> workers;
  {
    std::lock_guard<std::mutex> lock(mu_);
    workers.swap(workers_);
  }
  for (auto& w : workers) w.thread.join();
  if (fed_) fed_->Stop();
}

namespace {

// Counts a section of work in *n while it runs (exceptions included).
class BusyScope {
 public:
  explicit BusyScope(std::atomic<int>* n) : n_(n) { n_->fetch_add(1); }
  ~BusyScope() { n_->fetch_sub(1); }
  BusyScope(const BusyScope&) = delete;
  BusyScope& operator=(const BusyScope&) = delete;

 private:
  std::atomic<int>* n_;
};

}  // namespace

void Daemon::SpawnWorker(std::function<void()> fn) {
  std::list<Worker> finished;
  std::lock_guard<std::mutex> lock(mu_);
  // Join the threads that have finished, so a long-running daemon does not accumulate them.
  for (auto it = workers_.begin(); it != workers_.end();) {
    if (it->done->load()) {
      auto next = std::next(it);
      finished.splice(finished.end(), workers_, it);
      it = next;
    } else {
      ++it;
    }
  }
  for (auto& w : finished) w.thread.join();
  auto done = std::make_shared<std::atomic<bool>>(false);
  workers_.push_back(Worker{std::thread([fn = std::move(fn), done]() mutable {
                              fn();
                              done->store(true);
                            }),
                            done});
}

// ---- peer side ---------------------------------------------------------------------------------

void Daemon::PeerAcceptLoop() {
  while (!stopping_) {
    auto fd = transport::TcpAccept(peer_listen_.get(), std::chrono::milliseconds(500));
    if (!fd.has_value()) {
      if (stopping_) return;
      if (fd.error().code() == Code::kDeadlineExceeded) continue;
      PORO_LOG(WARNING) << "accept: " << fd.error().ToString();
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    auto f = std::make_shared<UniqueFd>(std::move(*fd));  // std::function needs a copyable callable
    SpawnWorker([this, f] { ServePeer(std::move(*f)); });
  }
}

void Daemon::ServePeer(UniqueFd fd) {
  // One port for both kinds of connection: a data connection starts with "PORD", TLS with 0x16.
  struct pollfd p {
    fd.get(), POLLIN, 0
  };
  if (::poll(&p, 1, 10000) <= 0) {
    PORO_LOG(WARNING) << "peer " << transport::PeerAddress(fd.get()) << " sent nothing within 10 s";
    return;
  }
  char magic[4];
  ssize_t n = ::recv(fd.get(), magic, 4, MSG_PEEK | MSG_WAITALL);
  if (n == 4 && std::memcmp(magic, "PORD", 4) == 0) {
    ServeBind(std::move(fd));
  } else {
    ServeControl(std::move(fd));
  }
}

void Daemon::ServeBind(UniqueFd fd) {
  std::string addr = transport::PeerAddress(fd.get());
  std::array<std::byte, proto::kBindSize> buf;
  transport::TcpStream stream(std::move(fd));
  TransportOptions o;
  o.idle_timeout = std::chrono::milliseconds(10000);
  if (Status s = stream.ReadFull(buf, o); !s.ok()) {
    PORO_LOG(WARNING) << "data connection from " << addr << ": " << s.ToString();
    return;
  }
  auto req = proto::DecodeBind(buf);
  if (!req.has_value()) {
    PORO_LOG(WARNING) << "data connection from " << addr << " refused: " << req.error().ToString();
    return;
  }
  std::unique_lock<std::mutex> lock(mu_);
  auto it = sessions_.find(req->session);
  bool ok = it != sessions_.end() && !it->second->closed && req->stream < it->second->streams &&
            !it->second->channels[req->stream] &&
            proto::MacEqual(req->mac,
                            proto::BindMac(it->second->key, false, req->session, req->stream, req->nonce));
  if (!ok) {
    lock.unlock();
    PORO_LOG(WARNING) << "data connection from " << addr
                      << " refused: unknown session or bad authenticator (not bound to a control session)";
    proto::Mac zero{};
    stream.WriteAll(proto::EncodeBindReply(1, zero), o).IgnoreError();
    return;
  }
  auto reply =
      proto::EncodeBindReply(0, proto::BindMac(it->second->key, true, req->session, req->stream, req->nonce));
  // The stream object is dropped after we take its fd back for the message channel.
  std::shared_ptr<PendingSession> ps = it->second;
  lock.unlock();
  if (Status s = stream.WriteAll(reply, o); !s.ok()) return;
  UniqueFd raw(::dup(stream.fd()));
  lock.lock();
  if (ps->closed || ps->channels[req->stream]) return;
  transport::SocketOptions so;
  so.sndbuf = config_.sndbuf;
  so.rcvbuf = config_.rcvbuf;
  so.congestion = config_.congestion;
  transport::ApplySocketOptions(raw.get(), so).IgnoreError();
  ps->channels[req->stream] = MaybeFault(transport::MakeTcpMessageChannel(std::move(raw)));
  ps->bound++;
  cv_.notify_all();
}

void Daemon::ServeControl(UniqueFd fd) {
  std::string addr = transport::PeerAddress(fd.get());
  TransportOptions o;
  o.idle_timeout = std::chrono::milliseconds(15000);
  auto tls = transport::TlsStream::Accept(*fed_->tls_server(), std::move(fd), o);
  if (!tls.has_value()) {
    PORO_LOG(WARNING) << "refused connection from " << addr << ": " << tls.error().ToString();
    fed_->AuditHandshakeFailure(addr, "accept", tls.error());
    return;
  }
  transport::TlsStream* raw = tls->get();
  engine::ControlChannel ctl(std::move(*tls));
  Status s;
  try {
    s = RunResponder(raw, ctl);
  } catch (const json::exception& e) {  // a field of the wrong type from an authenticated peer
    s = Status::Protocol(std::string("malformed message from the peer: ") + e.what());
  }
  if (!s.ok()) {
    PORO_LOG(WARNING) << "session with " << raw->peer_common_name() << " (" << addr
                      << ") ended: " << s.ToString();
    if (s.code() != Code::kUnavailable) {
      ctl.SendError(s);
      // Let the peer read the error: read (and drop) what it still sends for a moment instead of
      // closing on unread data, which would reset the connection and lose the error.
      ::shutdown(raw->fd(), SHUT_WR);
      TransportOptions drain;
      drain.idle_timeout = std::chrono::milliseconds(500);
      for (int i = 0; i < 8 && ctl.Receive(drain).has_value(); ++i) {
      }
    }
  }
  ctl.Close().IgnoreError();
}

std::unique_ptr<transport::MessageChannel> Daemon::MaybeFault(std::unique_ptr<transport::MessageChannel> ch) {
  transport::FaultOptions fo;
  fo.corrupt_every = config_.fault_corrupt_every;
  fo.send_delay = std::chrono::microseconds(config_.fault_send_delay_us);
  if (!fo.active()) return ch;
  return std::make_unique<transport::FaultInjectionChannel>(std::move(ch), fo, fault_counter_);
}

engine::EngineOptions Daemon::EngineOptionsFrom(const json& o) const {
  engine::EngineOptions eo;
  eo.chunk_size = o.value("chunk_size", config_.chunk_size);
  eo.sync = o.value("sync", false);
  std::string ex = o.value("existing", std::string("fail"));
  eo.existing = ex == "overwrite" ? engine::ExistingMode::kOverwrite
                : ex == "skip"    ? engine::ExistingMode::kSkip
                                  : engine::ExistingMode::kFail;
  eo.try_direct = config_.direct_io;
  eo.read_ahead = config_.read_ahead;
  return eo;
}

Status Daemon::RunResponder(transport::TlsStream* tls, engine::ControlChannel& ctl) {
  // Homologated-endpoint check first: nothing is read from a peer the federation does not admit.
  PORO_ASSIGN_OR_RETURN(federation::Endpoint peer_ep, fed_->AdmitPeer(*tls, "accept"));
  const std::string peer = peer_ep.id;
  TransportOptions o;
  o.idle_timeout = std::chrono::milliseconds(30000);
  PORO_ASSIGN_OR_RETURN(json hello, ctl.ExpectJson(proto::MsgType::kHello, o));
  if (hello.value("proto", 0) != proto::kProtocolVersion) {
    return Status::NotSupported("peer speaks protocol version " + std::to_string(hello.value("proto", 0)) +
                                ", this daemon speaks " + std::to_string(proto::kProtocolVersion));
  }
  if (hello.value("endpoint", std::string()) != peer) {
    return Status::Unauthenticated("peer announced endpoint '" + hello.value("endpoint", std::string()) +
                                   "' but its certificate names '" + peer + "'");
  }
  proto::SessionId sid;
  RAND_bytes(reinterpret_cast<unsigned char*>(sid.data()), static_cast<int>(sid.size()));
  PORO_ASSIGN_OR_RETURN(auto key, tls->ExportKey(proto::kBindExporterLabel, 32));
  PORO_RETURN_IF_ERROR(
      ctl.SendJson(proto::MsgType::kHello, json{{"proto", proto::kProtocolVersion},
                                                {"endpoint", config_.endpoint_name},
                                                {"software", std::string("pororoca ") + PORO_VERSION},
                                                {"session", proto::HexEncode(sid)}}));
  PORO_ASSIGN_OR_RETURN(json open, ctl.ExpectJson(proto::MsgType::kOpen, o));
  std::string tid = open.value("transfer_id", std::string("?"));
  std::string direction = open.value("direction", std::string());
  std::string path = open.value("path", std::string("/"));
  bool trailing = open.value("trailing_slash", false);
  bool recursive = open.value("recursive", false);
  unsigned streams = open.value("streams", 1u);
  json options = open.value("options", json::object());
  if (direction != "push" && direction != "pull") return Status::Protocol("OPEN has no valid direction");
  if (streams < 1 || streams > config_.max_streams) {
    return Status::InvalidArgument("streams must be between 1 and " + std::to_string(config_.max_streams));
  }
  engine::EngineOptions eo = EngineOptionsFrom(options);
  PORO_RETURN_IF_ERROR(ValidateChunkSize(eo.chunk_size));
  if (eo.chunk_size > pool_->buffer_size()) {
    return Status::InvalidArgument("chunk size " + std::to_string(eo.chunk_size) +
                                   " exceeds this daemon's buffers (" + std::to_string(pool_->buffer_size()) +
                                   ")");
  }
  PORO_ASSIGN_OR_RETURN(std::string rel, root_->Normalize(path));
  json ok{{"transfer_id", tid}};
  std::string target;
  engine::SourceInfo si;
  if (direction == "push") {  // the peer sends, we receive
    si.name = open["src"].value("name", std::string());
    si.is_dir = open["src"].value("is_dir", false);
    if (!si.name.empty()) PORO_RETURN_IF_ERROR(proto::ValidateRelativePath(si.name));
    if (si.name.find('/') != std::string::npos) return Status::Protocol("source name contains '/'");
    PORO_ASSIGN_OR_RETURN(target, engine::ResolveTarget(*root_, rel, trailing, si));
    ok["target"] = config_.endpoint_name + ":/" + target;
  } else {
    PORO_ASSIGN_OR_RETURN(si, engine::StatSource(*root_, rel));
    if (si.is_dir && !recursive) {
      return Status::InvalidArgument(root_->Display(rel) + " is a directory (use -r)");
    }
    ok["src"] = json{{"name", si.name}, {"is_dir", si.is_dir}};
  }
  // Authorisation, before any byte is written: the bearer token's scopes, then the policy.
  const bool push = direction == "push";
  const std::string local_path = "/" + (push ? target : rel);
  TransferAuth auth;
  auth.transfer_id = tid;
  auth.peer = peer_ep;
  auth.sending = !push;  // from this side: we send when the peer pulls
  auth.initiator = false;
  auth.local_path = local_path;
  auth.remote_path = open.value("local_path", std::string());
  auth.classification = push ? open.value("classification", std::string()) : fed_->LabelFor(local_path);
  auth.token = open.value("token", std::string());
  auth.overwrite = eo.existing == engine::ExistingMode::kOverwrite;
  PORO_ASSIGN_OR_RETURN(Admission adm, fed_->AdmitResponder(auth));
  if (!push) ok["classification"] = auth.classification;
  ok["rule"] = adm.decision.rule_id;

  auto ps = std::make_shared<PendingSession>();
  ps->key = key;
  ps->streams = streams;
  ps->channels.resize(streams);
  {
    std::lock_guard<std::mutex> lock(mu_);
    sessions_[sid] = ps;
  }
  auto unregister = [&] {
    std::lock_guard<std::mutex> lock(mu_);
    ps->closed = true;
    sessions_.erase(sid);
  };
  Status s = ctl.SendJson(proto::MsgType::kOpenOk, ok);
  // Wait for the data connections; the initiator may instead refuse now (its own policy decision)
  // with an ERROR on the control connection.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (s.ok()) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (cv_.wait_for(lock, std::chrono::milliseconds(100),
                       [&] { return ps->bound == ps->streams || stopping_; })) {
        if (stopping_) s = Status::Unavailable("the daemon is shutting down");
        break;
      }
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      s = Status::DeadlineExceeded("data connections did not arrive within 30 s");
      break;
    }
    struct pollfd pfd {
      tls->fd(), POLLIN, 0
    };
    if (::poll(&pfd, 1, 0) > 0) {
      TransportOptions brief;
      brief.idle_timeout = std::chrono::milliseconds(2000);
      auto msg = ctl.ExpectJson(proto::MsgType::kHello, brief);
      s = msg.has_value() ? Status::Protocol("unexpected message while waiting for data connections")
                          : msg.error();
    }
  }
  unregister();
  PORO_RETURN_IF_ERROR(s);
  PORO_LOG(INFO) << "transfer " << tid << ": " << peer << (push ? " pushes to " : " pulls from ")
                 << (push ? root_->Display(target) : root_->Display(rel)) << " over " << streams << " streams"
                 << (adm.decision.rule_id.empty() ? "" : " (rule '" + adm.decision.rule_id + "')");
  engine::TransferStats stats;
  std::atomic<bool> cancel{false};
  auto live = fed_->Register(peer_ep.id, tls->peer_cert_sha256(), &cancel);
  engine::DataPath dp;
  dp.ctl = &ctl;
  dp.channels = &ps->channels;
  dp.pool = pool_.get();
  dp.stats = &stats;
  dp.cancel = &cancel;
  dp.cancel_is_shutdown = true;
  dp.cancel_reason = [live] { return live->CutStatus(); };
  if (adm.bucket) dp.pace = [b = adm.bucket, &cancel](uint64_t n) { return b->Acquire(n, &cancel); };
  if (auth.sending) {
    // The peer names no destination path per file on a pull: its root is what it asked for.
    dp.admit_path = [this, &auth, &adm](const std::string& entry_rel, const std::string& entry) {
      return fed_->AdmitPath(auth, adm, auth.remote_path.empty() ? "/" : auth.remote_path, entry_rel, entry);
    };
  } else {
    dp.admit_path = [this, &auth, &adm](const std::string& entry_rel, const std::string& entry) {
      return fed_->AdmitReceivedPath(auth, adm, entry_rel, entry);
    };
  }
  auto t0 = std::chrono::steady_clock::now();
  Result<json> r = Status::Internal("not run");
  {
    BusyScope busy(&moving_);
    r = push ? engine::RunReceiver(*root_, target, eo, dp) : engine::RunSender(*root_, rel, eo, dp);
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  fed_->Unregister(live);
  fed_->Finish(auth, adm, stats.Snapshot(), r.has_value() ? Status::OK() : r.error());
  if (!r.has_value()) return r.error();
  PORO_LOG(INFO) << "transfer " << tid << " done in " << secs << " s: " << r->dump();
  return Status::OK();
}

// ---- initiator side ----------------------------------------------------------------------------

Result<std::vector<std::unique_ptr<transport::MessageChannel>>> Daemon::OpenDataChannels(
    const std::string& host, uint16_t port, const proto::SessionId& session, std::span<const std::byte> key,
    unsigned n) {
  TransportOptions o;
  o.idle_timeout = std::chrono::milliseconds(10000);
  transport::SocketOptions so;
  so.sndbuf = config_.sndbuf;
  so.rcvbuf = config_.rcvbuf;
  so.congestion = config_.congestion;
  // All N connections are set up at once: on a long link each costs two round trips (TCP, bind).
  std::vector<std::unique_ptr<transport::MessageChannel>> out(n);
  std::vector<Status> errors(n);
  auto open_one = [&](unsigned i) -> Status {
    PORO_ASSIGN_OR_RETURN(UniqueFd fd, transport::TcpConnect(host, port, std::chrono::milliseconds(10000)));
    transport::ApplySocketOptions(fd.get(), so).IgnoreError();
    proto::BindRequest b;
    b.stream = static_cast<uint16_t>(i);
    b.session = session;
    RAND_bytes(reinterpret_cast<unsigned char*>(b.nonce.data()), static_cast<int>(b.nonce.size()));
    b.mac = proto::BindMac(key, false, session, b.stream, b.nonce);
    transport::TcpStream stream(std::move(fd));
    PORO_RETURN_IF_ERROR(stream.WriteAll(proto::EncodeBind(b), o));
    std::array<std::byte, proto::kBindReplySize> rep;
    PORO_RETURN_IF_ERROR(stream.ReadFull(rep, o));
    PORO_ASSIGN_OR_RETURN(auto r, proto::DecodeBindReply(rep));
    if (r.first != 0) return Status::Unauthenticated("peer refused data connection " + std::to_string(i));
    if (!proto::MacEqual(r.second, proto::BindMac(key, true, session, b.stream, b.nonce))) {
      return Status::Unauthenticated("data connection " + std::to_string(i) +
                                     " answered with a bad authenticator");
    }
    out[i] = MaybeFault(transport::MakeTcpMessageChannel(UniqueFd(::dup(stream.fd()))));
    return Status::OK();
  };
  std::vector<std::thread> threads;
  for (unsigned i = 1; i < n; ++i) threads.emplace_back([&, i] { errors[i] = open_one(i); });
  errors[0] = open_one(0);
  for (auto& t : threads) t.join();
  for (auto& e : errors) PORO_RETURN_IF_ERROR(e);
  return out;
}

Result<json> Daemon::Attempt(Transfer& t) {
  auto manifest = fed_->manifest();
  const federation::Endpoint* peer_ep = manifest->FindEndpoint(t.remote.endpoint);
  if (peer_ep == nullptr) {
    return Status::NotFound("endpoint '" + t.remote.endpoint +
                            "' is not in the federation manifest (serial " +
                            std::to_string(manifest->serial()) + ")");
  }
  const federation::Endpoint peer = *peer_ep;
  PORO_ASSIGN_OR_RETURN(auto hp, transport::ParseHostPort(peer.address));
  PORO_ASSIGN_OR_RETURN(std::string local_rel, root_->RelativeFromAbsolute(t.local_path));
  engine::SourceInfo local_src;
  if (t.push) {
    PORO_ASSIGN_OR_RETURN(local_src, engine::StatSource(*root_, local_rel));
    if (local_src.is_dir && !t.recursive) {
      return Status::InvalidArgument(t.local_path + " is a directory (use -r)");
    }
  }
  TransferAuth auth;
  auth.transfer_id = t.id;
  auth.peer = peer;
  auth.sending = t.push;
  auth.initiator = true;
  auth.local_path = "/" + local_rel;
  auth.remote_path = t.remote.path;
  auth.overwrite = t.options.value("existing", std::string()) == "overwrite";
  auth.user = t.user;
  if (t.push) auth.classification = fed_->LabelFor(auth.local_path);
  // This side's policy decision comes once the peer has accepted the OPEN: it then knows the
  // peer's resolved path (push) or the data's label (pull), and still no data byte has moved.
  std::optional<Admission> adm;
  std::string bearer = t.token;
  if (bearer.empty()) {
    const UserConfig* u = config_.FindUser(t.uid);
    PORO_ASSIGN_OR_RETURN(bearer, fed_->MintToken(auth, u ? u->scopes : std::vector<std::string>{}));
  }
  auto fd = transport::TcpConnect(hp.first, hp.second, std::chrono::milliseconds(10000));
  if (!fd.has_value()) return fd.error().Annotate("endpoint " + peer.id);
  TransportOptions o;
  o.idle_timeout = std::chrono::milliseconds(30000);
  auto tls = transport::TlsStream::Connect(*fed_->tls_client(), std::move(*fd), o);
  if (!tls.has_value()) {
    fed_->AuditHandshakeFailure(peer.address, "connect", tls.error());
    return tls.error().Annotate("endpoint " + peer.id);
  }
  PORO_RETURN_IF_ERROR(fed_->AdmitPeer(**tls, "connect", peer.id).status());
  transport::TlsStream* raw = tls->get();
  const std::string peer_pin = raw->peer_cert_sha256();
  engine::ControlChannel ctl(std::move(*tls));
  unsigned streams = t.options.value("streams", config_.streams);
  json open{{"transfer_id", t.id},      {"direction", t.push ? "push" : "pull"},
            {"path", t.remote.path},    {"trailing_slash", t.remote.trailing_slash},
            {"recursive", t.recursive}, {"streams", streams},
            {"options", t.options},     {"local_path", auth.local_path}};
  if (!bearer.empty()) open["token"] = bearer;
  if (t.push) {
    open["src"] = json{{"name", local_src.name}, {"is_dir", local_src.is_dir}};
    open["classification"] = auth.classification;
  }
  // HELLO and OPEN go out back to back (the responder reads them in order): one round trip saved.
  Status sent =
      ctl.SendJson(proto::MsgType::kHello, json{{"proto", proto::kProtocolVersion},
                                                {"endpoint", config_.endpoint_name},
                                                {"software", std::string("pororoca ") + PORO_VERSION}});
  if (sent.ok()) sent = ctl.SendJson(proto::MsgType::kOpen, open);
  if (!sent.ok()) {
    // The peer may have refused us and closed: its ERROR, if it arrived, says why.
    TransportOptions brief;
    brief.idle_timeout = std::chrono::milliseconds(2000);
    auto reply = ctl.ExpectJson(proto::MsgType::kHello, brief);
    if (!reply.has_value() && reply.error().code() != Code::kUnavailable &&
        reply.error().code() != Code::kDeadlineExceeded) {
      return reply.error();
    }
    return sent;
  }
  PORO_ASSIGN_OR_RETURN(json hello, ctl.ExpectJson(proto::MsgType::kHello, o));
  if (hello.value("proto", 0) != proto::kProtocolVersion) {
    return Status::NotSupported("endpoint " + peer.id + " speaks protocol version " +
                                std::to_string(hello.value("proto", 0)));
  }
  PORO_ASSIGN_OR_RETURN(auto sid_bytes, proto::HexDecode(hello.value("session", std::string())));
  if (sid_bytes.size() != 16) return Status::Protocol("HELLO has no valid session id");
  proto::SessionId sid;
  std::memcpy(sid.data(), sid_bytes.data(), 16);
  PORO_ASSIGN_OR_RETURN(auto key, raw->ExportKey(proto::kBindExporterLabel, 32));
  PORO_ASSIGN_OR_RETURN(json ok, ctl.ExpectJson(proto::MsgType::kOpenOk, o));
  if (t.push) {
    std::string target = ok.value("target", std::string());
    size_t colon = target.find(':');
    if (colon != std::string::npos) auth.remote_path = target.substr(colon + 1);
  } else {
    auth.classification = ok.value("classification", std::string());
  }
  {
    auto a = fed_->AdmitInitiator(auth);
    if (!a.has_value()) {
      ctl.SendError(a.error());  // the peer stops waiting for our data connections
      return a.error();
    }
    adm = std::move(*a);
  }
  PORO_ASSIGN_OR_RETURN(auto channels, OpenDataChannels(hp.first, hp.second, sid, key, streams));
  auto stats = std::make_shared<engine::TransferStats>();
  {
    std::lock_guard<std::mutex> lock(t.mu);
    t.stats = stats;
  }
  auto live = fed_->Register(peer.id, peer_pin, &t.cancel);
  engine::EngineOptions eo = EngineOptionsFrom(t.options);
  engine::DataPath dp;
  dp.ctl = &ctl;
  dp.channels = &channels;
  dp.pool = pool_.get();
  dp.stats = stats.get();
  dp.cancel = &t.cancel;
  dp.cancel_reason = [live] { return live->CutStatus(); };
  if (adm->bucket) dp.pace = [b = adm->bucket, &t](uint64_t n) { return b->Acquire(n, &t.cancel); };
  if (t.push) {
    dp.admit_path = [this, &auth, &adm](const std::string& entry_rel, const std::string& entry) {
      return fed_->AdmitPath(auth, *adm, auth.remote_path, entry_rel, entry);
    };
  } else {
    dp.admit_path = [this, &auth, &adm](const std::string& entry_rel, const std::string& entry) {
      return fed_->AdmitReceivedPath(auth, *adm, entry_rel, entry);
    };
  }
  Result<json> r = Status::Internal("not run");
  if (t.push) {
    BusyScope busy(&moving_);
    r = engine::RunSender(*root_, local_rel, eo, dp);
  } else {
    engine::SourceInfo si;
    si.name = ok["src"].value("name", std::string());
    si.is_dir = ok["src"].value("is_dir", false);
    if (!si.name.empty()) PORO_RETURN_IF_ERROR(proto::ValidateRelativePath(si.name));
    if (si.name.find('/') != std::string::npos) return Status::Protocol("source name contains '/'");
    PORO_ASSIGN_OR_RETURN(std::string target,
                          engine::ResolveTarget(*root_, local_rel, t.local_trailing_slash, si));
    BusyScope busy(&moving_);
    r = engine::RunReceiver(*root_, target, eo, dp);
  }
  fed_->Unregister(live);
  if (Status cut = live->CutStatus(); !cut.ok()) {
    std::lock_guard<std::mutex> lock(t.mu);
    t.cut_reason = std::string(cut.message());
  }
  fed_->Finish(auth, *adm, stats->Snapshot(), r.has_value() ? Status::OK() : r.error());
  ctl.Close().IgnoreError();
  return r;
}

void Daemon::StartTransfer(const std::shared_ptr<Transfer>& t) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    transfers_[t->id] = t;
  }
  SpawnWorker([this, t] { RunTransfer(t); });
}

void Daemon::RunTransfer(std::shared_ptr<Transfer> t) {
  unsigned backoff_s = 1;
  while (true) {
    {
      std::lock_guard<std::mutex> lock(t->mu);
      t->state = "running";
      t->attempts++;
      if (t->started_ms == 0) t->started_ms = NowMs();
    }
    Persist(*t).IgnoreError();
    PORO_LOG(INFO) << "transfer " << t->id << " attempt " << t->attempts << ": " << t->SourceText() << " -> "
                   << t->DestText();
    Result<json> r = Status::Internal("not run");
    try {
      r = Attempt(*t);
    } catch (const json::exception& e) {
      r = Status::Protocol(std::string("malformed message from the peer: ") + e.what());
    }
    bool retry = false;
    {
      std::lock_guard<std::mutex> lock(t->mu);
      if (t->stats) {
        t->last = t->stats->Snapshot();
        t->failures = t->stats->Failures();
        t->bytes_sent_prev += t->last.bytes_sent;
        if (t->first_resumed < 0) t->first_resumed = static_cast<int64_t>(t->last.bytes_resumed);
        t->stats.reset();
      }
      if (r.has_value()) {
        t->summary = *r;
        t->finished_ms = NowMs();
        if (t->last.files_failed > 0) {
          t->state = "failed";
          t->error_code = "FilesFailed";
          t->error = std::to_string(t->last.files_failed) + " file(s) could not be transferred";
        } else {
          t->state = "succeeded";
          t->error.clear();
          t->error_code.clear();
        }
      } else {
        const Status& s = r.error();
        t->error = std::string(s.message());
        t->error_code = std::string(CodeName(s.code()));
        if (!t->cut_reason.empty()) {
          t->error = t->cut_reason;
          t->error_code = std::string(CodeName(Code::kPermissionDenied));
          t->state = "failed";
          t->finished_ms = NowMs();
        } else if (t->cancel && stopping_) {
          return;  // daemon shutting down: the persisted state says "running", a restart resumes it
        } else if (t->cancel) {
          t->state = "cancelled";
          t->finished_ms = NowMs();
        } else if (s.retryable() && t->attempts <= config_.retry_attempts) {
          t->state = "retrying";
          retry = true;
        } else {
          t->state = "failed";
          t->finished_ms = NowMs();
        }
      }
    }
    Persist(*t).IgnoreError();
    if (!retry) {
      t->ended.notify_all();
      PORO_LOG(INFO) << "transfer " << t->id << " " << t->state << (t->error.empty() ? "" : ": " + t->error);
      PruneFinished();
      return;
    }
    PORO_LOG(WARNING) << "transfer " << t->id << " attempt " << t->attempts << " failed (" << t->error
                      << "); retrying in " << backoff_s << " s";
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, std::chrono::seconds(backoff_s), [&] { return t->cancel.load() || stopping_.load(); });
    if (stopping_) return;
    if (t->cancel) {
      lock.unlock();
      {
        std::lock_guard<std::mutex> tl(
            t->mu);  // never held while taking mu_ (PruneFinished: mu_, then t->mu)
        t->state = "cancelled";
        t->finished_ms = NowMs();
      }
      lock.lock();
    }
    backoff_s = std::min(backoff_s * 2, config_.retry_max_backoff_s);
    if (t->cancel) {
      lock.unlock();
      Persist(*t).IgnoreError();
      t->ended.notify_all();
      PruneFinished();
      return;
    }
  }
}

Status Daemon::Persist(const Transfer& t) {
  std::string data;
  {
    std::lock_guard<std::mutex> lock(t.mu);
    data = t.Persisted().dump(2);
  }
  return WriteFileAtomic(StateDirTransfers(config_) + "/" + t.id + ".json", data);
}

int64_t Daemon::PruneCutoffMs() const {
  if (config_.keep_finished_s == 0) return 0;
  return NowMs() - int64_t(config_.keep_finished_s) * 1000;
}

void Daemon::PruneFinished() {
  const int64_t cutoff = PruneCutoffMs();
  if (cutoff == 0) return;
  std::vector<std::string> gone;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const auto now = std::chrono::steady_clock::now();  // not the wall clock: a clock step must not stop it
    const auto every =
        std::chrono::milliseconds(std::min<int64_t>(60000, int64_t(config_.keep_finished_s) * 500));
    if (last_prune_ != std::chrono::steady_clock::time_point() && now - last_prune_ < every) return;
    last_prune_ = now;
    for (auto it = transfers_.begin(); it != transfers_.end();) {
      bool expired;
      {
        const Transfer& t = *it->second;
        std::lock_guard<std::mutex> tl(t.mu);  // released before the erase, which may free `t`
        expired = Expired(t.state, t.finished_ms, cutoff);
      }
      if (expired) {
        gone.push_back(it->first);
        it = transfers_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (const auto& id : gone) ::unlink((StateDirTransfers(config_) + "/" + id + ".json").c_str());
  if (!gone.empty()) {
    PORO_LOG(INFO) << "forgot " << gone.size() << " transfer(s) that ended more than "
                   << config_.keep_finished_s << " s ago ([storage] keep_finished_s)";
  }
}

void Daemon::LoadPersisted() {
  std::string dir = StateDirTransfers(config_);
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return;
  std::vector<std::string> names;
  while (struct dirent* de = ::readdir(d)) {
    std::string n = de->d_name;
    if (n.size() > 5 && n.compare(n.size() - 5, 5, ".json") == 0) names.push_back(n);
  }
  ::closedir(d);
  for (const auto& n : names) {
    try {
      LoadRecord(dir + "/" + n);
    } catch (const json::exception& e) {  // a field of the wrong type: skip the record, keep serving
      PORO_LOG(WARNING) << "ignoring malformed transfer record " << dir << "/" << n << ": " << e.what();
    }
  }
}

void Daemon::LoadRecord(const std::string& path) {
  {
    std::ifstream in(path);
    json j = json::parse(in, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      PORO_LOG(WARNING) << "ignoring unreadable transfer record " << path;
      return;
    }
    auto t = std::make_shared<Transfer>();
    t->id = j.value("id", std::string());
    if (t->id.empty()) return;
    t->push = j.value("direction", std::string("push")) == "push";
    t->local_path = j.value("local_path", std::string());
    t->local_trailing_slash = t->local_path.size() > 1 && t->local_path.back() == '/';
    t->remote.remote = true;
    t->remote.endpoint = j.value("endpoint", std::string());
    t->remote.path = j.value("remote_path", std::string("/"));
    t->remote.trailing_slash = t->remote.path.size() > 1 && t->remote.path.back() == '/';
    t->recursive = j.value("recursive", false);
    t->options = j.value("options", json::object());
    t->uid = j.value("uid", int64_t(-1));
    t->user = j.value("user", std::string());
    t->token = j.value("token", std::string());
    t->created_ms = j.value("created_ms", int64_t(0));
    t->state = j.value("state", std::string("failed"));
    t->attempts = j.value("attempts", 0u);
    t->error = j.value("error", std::string());
    t->error_code = j.value("error_code", std::string());
    t->bytes_sent_prev = j.value("bytes_sent_prev", uint64_t(0));
    t->first_resumed = j.value("first_resumed", int64_t(-1));
    t->summary = j.value("summary", json());
    t->finished_ms = j.value("finished_ms", int64_t(0));
    t->started_ms = j.value("started_ms", int64_t(0));
    if (j.contains("progress") && j["progress"].is_object())
      t->last = engine::StatsSnapshot::FromJson(j["progress"]);
    if (j.contains("failures") && j["failures"].is_array()) {
      for (const auto& f : j["failures"]) {
        if (f.is_object())
          t->failures.emplace_back(f.value("path", std::string()), f.value("error", std::string()));
      }
    }
    bool unfinished = t->state == "queued" || t->state == "running" || t->state == "retrying";
    if (Expired(t->state, t->finished_ms, PruneCutoffMs())) {
      ::unlink(path.c_str());  // ended longer ago than [storage] keep_finished_s
      return;
    }
    {
      // The API answers before this runs: a transfer submitted since start-up is already in
      // transfers_ (StartTransfer puts it there before its record is written) and already running.
      // Resuming its record as well ran it twice, both copies failing on each other's files.
      std::lock_guard<std::mutex> lock(mu_);
      if (transfers_.count(t->id) != 0) return;
      transfers_[t->id] = t;
    }
    if (unfinished) {
      PORO_LOG(INFO) << "resuming transfer " << t->id << " (" << t->SourceText() << " -> " << t->DestText()
                     << ")";
      SpawnWorker([this, t] { RunTransfer(t); });
    }
  }
}

// ---- API ---------------------------------------------------------------------------------------

json Daemon::TransferJson(const Transfer& t) const {
  std::lock_guard<std::mutex> lock(t.mu);
  engine::StatsSnapshot s = t.stats ? t.stats->Snapshot() : t.last;
  uint64_t sent_total = t.bytes_sent_prev + (t.stats ? s.bytes_sent : 0);
  uint64_t needed = s.bytes_total - std::min(s.bytes_total, s.bytes_skipped);
  uint64_t first_resumed = t.first_resumed >= 0 ? static_cast<uint64_t>(t.first_resumed) : s.bytes_resumed;
  needed -= std::min(needed, first_resumed);
  uint64_t resent = sent_total > needed ? sent_total - needed : 0;
  json progress = s.ToJson();
  progress["bytes_sent_all_attempts"] = sent_total;
  progress["bytes_resent"] = std::max<uint64_t>(resent, s.bytes_resent);
  json failures = json::array();
  auto fl = t.stats ? t.stats->Failures() : t.failures;
  for (const auto& [p, m] : fl) failures.push_back(json{{"path", p}, {"error", m}});
  int64_t end = t.finished_ms ? t.finished_ms : NowMs();
  return json{{"id", t.id},
              {"state", t.state},
              {"direction", t.push ? "push" : "pull"},
              {"source", t.SourceText()},
              {"destination", t.DestText()},
              {"recursive", t.recursive},
              {"options", t.options},
              {"attempts", t.attempts},
              {"error", t.error},
              {"error_code", t.error_code},
              {"created_ms", t.created_ms},
              {"started_ms", t.started_ms},
              {"finished_ms", t.finished_ms},
              {"elapsed_s", t.started_ms ? double(end - t.started_ms) / 1000.0 : 0.0},
              {"progress", progress},
              {"failures", failures},
              {"summary", t.summary}};
}

void Daemon::RegisterRoutes() {
  api_->Route("GET", "/v1/healthz", [this](const api::HttpRequest&) {
    return api::HttpResponse::Json(200, json{{"status", "ok"},
                                             {"endpoint", config_.endpoint_name},
                                             {"version", PORO_VERSION},
                                             {"export_root", root_->path()},
                                             {"io", io::UringAvailable() ? "io_uring" : "posix"}});
  });
  api_->Route("GET", "/v1/endpoints", [this](const api::HttpRequest&) {
    auto m = fed_->manifest();
    json arr = json::array();
    for (const auto& e : m->endpoints()) {
      arr.push_back(json{{"name", e.id},
                         {"institution", e.institution},
                         {"address", e.address},
                         {"status", std::string(federation::EndpointStatusName(e.status))},
                         {"pin", e.pin}});
    }
    return api::HttpResponse::Json(200, json{{"self", config_.endpoint_name},
                                             {"institution", fed_->self_institution()},
                                             {"federation", m->federation()},
                                             {"serial", m->serial()},
                                             {"endpoints", arr}});
  });
  api_->Route("GET", "/v1/federation", [this](const api::HttpRequest&) { return ApiFederation(); });
  api_->Route("POST", "/v1/federation/refresh", [this](const api::HttpRequest&) {
    auto r = fed_->Refresh();
    if (!r.has_value()) return ErrorResponse(r.error());
    return ApiFederation();
  });
  api_->Route("POST", "/v1/policy/check", [this](const api::HttpRequest& r) { return ApiPolicyCheck(r); });
  api_->Route("GET", "/v1/accounting", [this](const api::HttpRequest& r) {
    audit::Accounting::Filter f;
    for (auto [k, dst] : {std::pair<const char*, std::string*>{"since", &f.since},
                          {"until", &f.until},
                          {"user", &f.user},
                          {"institution", &f.institution}}) {
      auto it = r.query.find(k);
      if (it != r.query.end()) *dst = it->second;
    }
    return api::HttpResponse::Json(200, fed_->accounting().Query(f));
  });
  api_->Route("POST", "/v1/transfers", [this](const api::HttpRequest& r) { return ApiSubmit(r); });
  api_->Route("GET", "/v1/transfers", [this](const api::HttpRequest& r) { return ApiList(r); });
  api_->Route("GET", "/v1/transfers/{id}", [this](const api::HttpRequest& r) { return ApiGet(r); });
  api_->Route("POST", "/v1/transfers/{id}/cancel",
              [this](const api::HttpRequest& r) { return ApiCancel(r); });
  api_->Route("DELETE", "/v1/transfers/{id}", [this](const api::HttpRequest& r) { return ApiCancel(r); });
}

api::HttpResponse Daemon::ApiSubmit(const api::HttpRequest& req) {
  json body = json::parse(req.body);  // a parse error becomes 400 in the HTTP server
  if (!body.is_object())
    return api::HttpResponse::Error(400, "InvalidArgument", "body must be a JSON object");
  auto src = ParseLocation(body.value("source", std::string()));
  if (!src.has_value()) return ErrorResponse(src.error().Annotate("source"));
  auto dst = ParseLocation(body.value("destination", std::string()));
  if (!dst.has_value()) return ErrorResponse(dst.error().Annotate("destination"));
  // "SELF:/path" names this daemon: the path is relative to its export root, like any remote path.
  for (Location* l : {&*src, &*dst}) {
    if (l->remote && l->endpoint == config_.endpoint_name) {
      auto rel = root_->Normalize(l->path);
      if (!rel.has_value()) return ErrorResponse(rel.error());
      l->remote = false;
      l->path = root_->Display(*rel) + (l->trailing_slash ? "/" : "");
    }
  }
  if (src->remote == dst->remote) {
    return api::HttpResponse::Error(400, "InvalidArgument",
                                    "exactly one of source and destination must be a remote ENDPOINT:/path");
  }
  auto t = std::make_shared<Transfer>();
  t->id = NewId();
  t->push = dst->remote;
  t->remote = t->push ? *dst : *src;
  t->local_path = t->push ? src->path : dst->path;
  t->local_trailing_slash = !t->push && dst->trailing_slash;
  t->recursive = body.value("recursive", false);
  t->uid = req.peer.uid;
  t->created_ms = NowMs();
  json opts = json::object();
  unsigned streams = body.value("streams", config_.streams);
  if (streams < 1 || streams > config_.max_streams) {
    return api::HttpResponse::Error(400, "InvalidArgument",
                                    "streams must be between 1 and " + std::to_string(config_.max_streams));
  }
  opts["streams"] = streams;
  uint64_t chunk = config_.chunk_size;
  if (body.contains("chunk_size")) {
    if (body["chunk_size"].is_number_unsigned()) {
      chunk = body["chunk_size"].get<uint64_t>();
    } else {
      auto c = ParseSize(body["chunk_size"].get<std::string>());
      if (!c.has_value()) return ErrorResponse(c.error().Annotate("chunk_size"));
      chunk = *c;
    }
  }
  if (Status s = ValidateChunkSize(chunk); !s.ok()) return ErrorResponse(s);
  if (chunk > pool_->buffer_size()) {
    return api::HttpResponse::Error(400, "InvalidArgument",
                                    "chunk_size exceeds this daemon's buffer size (" +
                                        std::to_string(pool_->buffer_size() >> 10) + " KiB)");
  }
  opts["chunk_size"] = chunk;
  opts["sync"] = body.value("sync", false);
  std::string existing = body.value("existing", std::string("fail"));
  if (existing != "fail" && existing != "overwrite" && existing != "skip") {
    return api::HttpResponse::Error(400, "InvalidArgument", "existing must be fail, overwrite or skip");
  }
  opts["existing"] = existing;
  t->options = opts;
  // Check what can be checked locally now, so the user gets the error at once.
  auto manifest = fed_->manifest();
  if (manifest->FindEndpoint(t->remote.endpoint) == nullptr) {
    std::string known;
    for (const auto& e : manifest->endpoints()) {
      if (e.id != config_.endpoint_name) known += (known.empty() ? "" : ", ") + e.id;
    }
    return api::HttpResponse::Error(404, "UnknownEndpoint",
                                    "unknown endpoint '" + t->remote.endpoint + "': not in federation '" +
                                        manifest->federation() +
                                        "' (known: " + (known.empty() ? "none" : known) + ")");
  }
  // Who asks: the socket's peer credentials, mapped to a federated identity by [[users]].
  if (const UserConfig* u = config_.FindUser(t->uid)) t->user = u->identity;
  if (body.contains("token")) {
    if (!body["token"].is_string())
      return api::HttpResponse::Error(400, "InvalidArgument", "token must be a string");
    t->token = body["token"].get<std::string>();
  }
  if (t->token.empty() && !config_.token_issuer.empty() && t->user.empty()) {
    return api::HttpResponse::Error(403, "PermissionDenied",
                                    "local user uid " + std::to_string(t->uid) +
                                        " has no federated identity (add it under [[users]] in " +
                                        config_.source_file + ") and gave no token");
  }
  auto rel = root_->RelativeFromAbsolute(t->local_path);
  if (!rel.has_value()) return ErrorResponse(rel.error());
  if (t->push) {
    auto si = engine::StatSource(*root_, *rel);
    if (!si.has_value()) return ErrorResponse(si.error());
    if (si->is_dir && !t->recursive) {
      return api::HttpResponse::Error(400, "InvalidArgument", t->local_path + " is a directory (use -r)");
    }
  } else {
    auto st = root_->Lstat(*rel);
    if (!st.has_value() || !S_ISDIR(st->st_mode)) {
      std::string parent =
          rel->rfind('/') == std::string::npos ? std::string() : rel->substr(0, rel->rfind('/'));
      auto pst = root_->Lstat(parent);
      if (t->local_trailing_slash || !pst.has_value() || !S_ISDIR(pst->st_mode)) {
        return api::HttpResponse::Error(404, "NotFound",
                                        "destination directory does not exist: " + t->local_path);
      }
    }
  }
  if (Status s = Persist(*t); !s.ok()) return ErrorResponse(s);
  StartTransfer(t);
  return api::HttpResponse::Json(201, TransferJson(*t));
}

api::HttpResponse Daemon::ApiFederation() {
  auto m = fed_->manifest();
  return api::HttpResponse::Json(
      200, json{{"federation", m->federation()},
                {"serial", m->serial()},
                {"issued_at", m->issued_at()},
                {"source", config_.manifest_file.empty() ? config_.manifest_url : config_.manifest_file},
                {"self", config_.endpoint_name},
                {"institution", fed_->self_institution()},
                {"institutions", m->body().value("institutions", json::array())},
                {"rules", m->policy().size()}});
}

// "Would this transfer be allowed, and by which rule?" Both ends' view, from this daemon's manifest:
// {"source": "SRC", "destination": "DST"} with one of them remote (ENDPOINT:/path), as in a submit.
api::HttpResponse Daemon::ApiPolicyCheck(const api::HttpRequest& req) {
  json body = json::parse(req.body);
  if (!body.is_object())
    return api::HttpResponse::Error(400, "InvalidArgument", "body must be a JSON object");
  auto src = ParseLocation(body.value("source", std::string()));
  if (!src.has_value()) return ErrorResponse(src.error().Annotate("source"));
  auto dst = ParseLocation(body.value("destination", std::string()));
  if (!dst.has_value()) return ErrorResponse(dst.error().Annotate("destination"));
  auto m = fed_->manifest();
  auto endpoint_of = [&](const Location& l) { return l.remote ? l.endpoint : config_.endpoint_name; };
  const federation::Endpoint* se = m->FindEndpoint(endpoint_of(*src));
  const federation::Endpoint* de = m->FindEndpoint(endpoint_of(*dst));
  if (se == nullptr || de == nullptr) {
    return api::HttpResponse::Error(404, "UnknownEndpoint",
                                    "endpoint '" + (se == nullptr ? endpoint_of(*src) : endpoint_of(*dst)) +
                                        "' is not in federation '" + m->federation() + "'");
  }
  auto abs_path = [&](const Location& l) -> std::string {
    if (l.remote) return l.path;
    auto rel = root_->RelativeFromAbsolute(l.path);
    return rel.has_value() ? "/" + *rel : l.path;
  };
  policy::Request r;
  r.source_institution = se->institution;
  r.destination_institution = de->institution;
  std::string dir = body.value("direction", std::string());
  bool src_initiates = dir.empty() ? !src->remote : dir == "push";
  r.direction = src_initiates ? policy::Direction::kPush : policy::Direction::kPull;
  r.source_path = abs_path(*src);
  r.destination_path = abs_path(*dst);
  r.classification = body.value(
      "classification", src->remote ? std::string(policy::kUnclassified) : fed_->LabelFor(r.source_path));
  r.now_unix = body.value("time", static_cast<int64_t>(std::time(nullptr)));
  policy::Decision d = m->policy().Evaluate(r);
  json out{{"allowed", d.allowed},
           {"rule", d.rule_id},
           {"reason", d.reason},
           {"serial", m->serial()},
           {"request",
            {{"source_institution", r.source_institution},
             {"destination_institution", r.destination_institution},
             {"direction", std::string(policy::DirectionName(r.direction))},
             {"source_path", r.source_path},
             {"destination_path", r.destination_path},
             {"classification", r.classification}}}};
  if (d.rate_limit_bytes_per_s) out["rate_limit_bytes_per_s"] = d.rate_limit_bytes_per_s;
  if (d.max_concurrent) out["max_concurrent"] = d.max_concurrent;
  if (!d.allowed) out["explain"] = m->policy().Explain(r);
  return api::HttpResponse::Json(200, out);
}

api::HttpResponse Daemon::ApiList(const api::HttpRequest&) {
  std::vector<std::shared_ptr<Transfer>> list;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [id, t] : transfers_) list.push_back(t);
  }
  std::sort(list.begin(), list.end(),
            [](const auto& a, const auto& b) { return a->created_ms < b->created_ms; });
  json arr = json::array();
  for (auto& t : list) arr.push_back(TransferJson(*t));
  return api::HttpResponse::Json(200, json{{"transfers", arr}});
}

api::HttpResponse Daemon::ApiGet(const api::HttpRequest& req) {
  std::shared_ptr<Transfer> t;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = transfers_.find(req.params.at("id"));
    if (it != transfers_.end()) t = it->second;
  }
  if (!t) return api::HttpResponse::Error(404, "NotFound", "no transfer " + req.params.at("id"));
  // ?wait=SECONDS: a long poll. Answers as soon as the transfer has ended, else after SECONDS
  // (at most 60) with its progress: a client follows a transfer without polling on a timer.
  auto w = req.query.find("wait");
  if (w != req.query.end()) {
    char* end = nullptr;
    double secs = std::strtod(w->second.c_str(), &end);
    if (w->second.empty() || end == nullptr || *end != '\0' || !(secs >= 0)) {
      return api::HttpResponse::Error(400, "InvalidArgument",
                                      "wait must be a number of seconds, got '" + w->second + "'");
    }
    auto deadline =
        std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                               std::chrono::duration<double>(std::min(secs, 60.0)));
    std::unique_lock<std::mutex> lock(t->mu);
    auto ended = [&] { return IsTerminal(t->state); };
    // In slices, so that a daemon shutting down is not held up by a waiting client.
    while (!ended() && !stopping_.load() && std::chrono::steady_clock::now() < deadline) {
      t->ended.wait_until(
          lock, std::min(deadline, std::chrono::steady_clock::now() + std::chrono::milliseconds(200)));
    }
  }  // TransferJson takes t->mu itself
  return api::HttpResponse::Json(200, TransferJson(*t));
}

api::HttpResponse Daemon::ApiCancel(const api::HttpRequest& req) {
  std::shared_ptr<Transfer> t;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = transfers_.find(req.params.at("id"));
    if (it != transfers_.end()) t = it->second;
    if (t) {
      t->cancel = true;
      cv_.notify_all();
    }
  }
  if (!t) return api::HttpResponse::Error(404, "NotFound", "no transfer " + req.params.at("id"));
  {
    std::lock_guard<std::mutex> lock(t->mu);
    if (t->state == "queued" || t->state == "retrying") {
      t->state = "cancelled";
      t->finished_ms = NowMs();
    }
  }
  Persist(*t).IgnoreError();
  t->ended.notify_all();
  return api::HttpResponse::Json(202, TransferJson(*t));
}

}  // namespace pororoca::daemon
