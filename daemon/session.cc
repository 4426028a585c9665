#include "daemon/session.h"

#include <openssl/rand.h>
#include <poll.h>
#include <sys/socket.h>

#include <cstring>
#include <optional>
#include <thread>

#include "base/defer.h"
#include "base/log.h"
#include "base/poll.h"
#include "crypto/chunk_seal.h"
#include "daemon/export_query.h"
#include "pororoca/config.h"
#include "transport/tcp.h"
#if PORO_WITH_FABRIC
#include "transport/fabric.h"
#endif
#if PORO_WITH_UCX
#include "transport/ucx.h"
#endif

namespace pororoca::daemon {

using nlohmann::json;
using transport::TransportOptions;

namespace {

// Counts a section of work in *n while it runs.
class BusyScope {
 public:
  explicit BusyScope(std::atomic<int>* n) : n_(n) { n_->fetch_add(1); }
  ~BusyScope() { n_->fetch_sub(1); }
  BusyScope(const BusyScope&) = delete;
  BusyScope& operator=(const BusyScope&) = delete;

 private:
  std::atomic<int>* n_;
};

TransportOptions Timeout(int ms) {
  TransportOptions o;
  o.idle_timeout = std::chrono::milliseconds(ms);
  return o;
}

Status RandomBytes(std::span<std::byte> out) {
  if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(out.size())) != 1) {
    return Status::Internal("RAND_bytes failed");
  }
  return Status::OK();
}

std::string Software() { return std::string("pororoca ") + PORO_VERSION; }

// Runs fn(0) .. fn(n-1) at once (fn(0) on this thread): setting up a data channel costs round
// trips, so all of them are set up together. Returns the first error in stream order.
Status OnEveryStream(unsigned n, const std::function<Status(unsigned)>& fn) {
  std::vector<Status> errors(n);
  std::vector<std::thread> threads;
  for (unsigned i = 1; i < n; ++i) threads.emplace_back([&, i] { errors[i] = fn(i); });
  errors[0] = fn(0);
  for (auto& th : threads) th.join();
  for (auto& e : errors) PORO_RETURN_IF_ERROR(e);
  return Status::OK();
}

std::string JoinNames(const std::vector<std::string>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + v[i];
  return out + "]";
}

// The transfer's options (as the API validated and the record keeps them) into OPEN; a record
// edited by hand into the wrong types is an error naming the field, not an exception.
Status ReadOptions(const json& o, const Config& c, proto::Open& open) {
  auto get_unsigned = [&](const char* k, uint64_t def) -> Result<uint64_t> {
    auto it = o.find(k);
    if (it == o.end()) return def;
    if (!it->is_number_unsigned())
      return Status::InvalidArgument(std::string("options.") + k + ": not a number");
    return it->get<uint64_t>();
  };
  PORO_ASSIGN_OR_RETURN(uint64_t streams, get_unsigned("streams", c.streams));
  PORO_ASSIGN_OR_RETURN(uint64_t chunk, get_unsigned("chunk_size", c.chunk_size));
  open.streams = static_cast<uint32_t>(std::min<uint64_t>(streams, proto::kMaxStreams));
  open.options.chunk_size = static_cast<uint32_t>(std::min<uint64_t>(chunk, proto::kMaxChunkSize));
  auto sync = o.find("sync");
  open.options.sync = sync != o.end() && sync->is_boolean() && sync->get<bool>();
  auto hl = o.find("hard_links");
  open.options.hard_links = hl != o.end() && hl->is_boolean() && hl->get<bool>();
  auto pr = o.find("protection");
  if (pr != o.end()) {
    auto level = pr->is_string() ? ParseProtection(pr->get<std::string>()) : std::nullopt;
    if (!level) return Status::InvalidArgument("options.protection: must be clear, integrity or private");
    open.protection = *level;
  }
  auto ex = o.find("existing");
  if (ex != o.end()) {
    if (!ex->is_string()) return Status::InvalidArgument("options.existing: not a string");
    PORO_ASSIGN_OR_RETURN(open.options.existing, proto::ParseExisting(ex->get<std::string>()));
  }
  return Status::OK();
}

}  // namespace

// One session's state, at either end.
struct SessionRunner::Session {
  bool initiator = false;
  Transfer* transfer = nullptr;  // the initiator's transfer
  std::string address;           // the peer's address, for logs and audit
  std::unique_ptr<engine::ControlChannel> ctl;
  transport::TlsStream* tls = nullptr;  // owned by ctl
  federation::Endpoint peer;
  std::string peer_pin;
  proto::Open open;  // as sent (initiator) or received (responder)
  proto::SessionId sid{};
  std::vector<std::byte> key;               // TLS exporter: authenticates the data connections
  std::vector<std::byte> seal_key;          // TLS exporter: seals the data-channel messages (above clear)
  Protection offered = Protection::kClear;  // OPEN_OK's level (the initiator may raise it in START)
  TransferAuth auth;
  std::optional<Admission> adm;
  engine::EngineOptions eo;
  std::string local_rel;   // the initiator's local path, export-relative
  std::string engine_rel;  // what the engine works on: the sender's source or the receiver's target
  std::shared_ptr<BindTable::Entry> bind;  // responder: its data connections
  std::vector<std::unique_ptr<transport::MessageChannel>> channels;
  // fabric: the endpoint this session's channels share at this end (transport/fabric.h).
  std::shared_ptr<transport::FabricEndpoint> fabric_endpoint;
  std::vector<std::string> offer;  // initiator: the transports its HELLO offers
  std::string transport = "tcp";   // the one both ends chose
  std::string transport_note;      // why not this end's first choice
  std::atomic<bool>* cancel = nullptr;
  std::atomic<bool> own_cancel{false};  // the responder's (no transfer record)
  bool queried = false;                 // responder: OPEN was a query, answered; no data follows
  std::shared_ptr<engine::TransferStats> stats = std::make_shared<engine::TransferStats>();
};

bool TransportSet::Offers(const std::string& name) const {
  return std::find(offered.begin(), offered.end(), name) != offered.end();
}

Status SessionRunner::Offer(const json& options, Session& s) const {
  const TransportSet& ts = *d_.transports;
  auto it = options.find("transport");
  if (it != options.end()) {
    const std::string name = it->is_string() ? it->get<std::string>() : std::string();
    if (!proto::IsTransportName(name))
      return Status::InvalidArgument(std::string("options.transport: must be ") + proto::kTransportNames);
    if (!ts.Offers(name)) {
      auto why = ts.unavailable.find(name);
      return Status::NotSupported("transport " + name + " is not available on this endpoint: " +
                                  (why != ts.unavailable.end()
                                       ? why->second
                                       : "not in its [network] transports " + JoinNames(ts.offered)));
    }
    s.offer = {name};
    return Status::OK();
  }
  s.offer = ts.offered;
  // A transport the operator put first that cannot run here is never dropped silently.
  for (const std::string& name : d_.config->transports) {
    if (name == s.offer.front()) break;
    auto why = ts.unavailable.find(name);
    if (why != ts.unavailable.end()) {
      s.transport_note += (s.transport_note.empty() ? "" : "; ") + name + " unavailable here: " + why->second;
    }
  }
  return Status::OK();
}

Status SessionRunner::ChooseTransport(Session& s, const proto::Hello& theirs) const {
  const TransportSet& ts = *d_.transports;
  const std::vector<std::string> want =
      theirs.transports.empty() ? std::vector<std::string>{"tcp"} : theirs.transports;
  auto chosen = std::find_if(want.begin(), want.end(), [&](const std::string& n) { return ts.Offers(n); });
  std::string why_not;
  if (auto u = ts.unavailable.find(want.front()); u != ts.unavailable.end()) why_not = " (" + u->second + ")";
  if (chosen == want.end()) {
    return Status::NotSupported("no data transport in common: endpoint " + s.peer.id + " offers " +
                                JoinNames(want) + ", endpoint " + d_.config->endpoint_name + " offers " +
                                JoinNames(ts.offered) + why_not);
  }
  s.transport = *chosen;
  if (chosen != want.begin()) {
    s.transport_note = "endpoint " + d_.config->endpoint_name + " does not offer " + want.front() + why_not;
  }
  return Status::OK();
}

Status SessionRunner::TakeTransport(Session& s, const proto::Hello& theirs) const {
  const std::string chosen = theirs.transport.value_or("tcp");
  if (std::find(s.offer.begin(), s.offer.end(), chosen) == s.offer.end()) {
    // A responder from before the negotiation answers without a choice: that is tcp.
    return Status::NotSupported("endpoint " + s.peer.id + " does not offer " + JoinNames(s.offer) +
                                " (it answered '" + chosen + "')");
  }
  s.transport = chosen;
  if (chosen != s.offer.front()) {
    s.transport_note += (s.transport_note.empty() ? "" : "; ") + std::string("endpoint ") + s.peer.id +
                        " does not offer " + s.offer.front();
  }
  return Status::OK();
}

engine::EngineOptions SessionRunner::EngineOptionsFrom(const proto::OpenOptions& o) const {
  engine::EngineOptions eo;
  eo.chunk_size = o.chunk_size;
  eo.sync = o.sync;
  eo.hard_links = o.hard_links;
  eo.existing = o.existing == proto::Existing::kOverwrite ? engine::ExistingMode::kOverwrite
                : o.existing == proto::Existing::kSkip    ? engine::ExistingMode::kSkip
                                                          : engine::ExistingMode::kFail;
  eo.try_direct = d_.config->direct_io;
  eo.read_ahead = d_.config->read_ahead;
  return eo;
}

Status SessionRunner::CheckPeerHello(const Session& s, const proto::Hello& h) const {
  if (h.proto != proto::kProtocolVersion) {
    return Status::NotSupported("endpoint " + s.peer.id + " speaks protocol version " +
                                std::to_string(h.proto) + ", this daemon speaks " +
                                std::to_string(proto::kProtocolVersion));
  }
  if (h.endpoint != s.peer.id) {
    return Status::Unauthenticated("peer announced endpoint '" + h.endpoint +
                                   "' but its certificate names '" + s.peer.id + "'");
  }
  if (s.initiator && !h.session) return Status::Protocol("HELLO.session: missing in the responder's HELLO");
  return Status::OK();
}

Result<std::string> SessionRunner::ReceiveTarget(const std::string& rel, bool trailing_slash,
                                                 const proto::Source& src) const {
  engine::SourceInfo si;  // src.name is "" or one clean component (proto::DecodeOpen, DecodeOpenOk)
  si.name = src.name;
  si.is_dir = src.is_dir;
  return engine::ResolveTarget(*d_.root, rel, trailing_slash, si);
}

Status SessionRunner::ForPeer(const Status& s) const {
  const std::string& root = d_.root->path();
  if (s.ok() || root == "/") return s;  // with "/" as the root, local and exported paths read the same
  std::string msg(s.message());
  const std::string shown = d_.config->endpoint_name + ":";
  for (size_t at = msg.find(root); at != std::string::npos; at = msg.find(root, at)) {
    const size_t end = at + root.size();
    const bool whole = end == msg.size() || msg[end] == '/' || msg[end] == ' ' || msg[end] == ':' ||
                       msg[end] == ',' || msg[end] == ')' || msg[end] == '\'';
    if (!whole) {
      at = end;
      continue;
    }
    const bool bare = end == msg.size() || msg[end] != '/';
    msg.replace(at, root.size(), bare ? shown + "/" : shown);
    at += shown.size();
  }
  Status out(s.code(), msg);
  out.WithRetryable(s.retryable());
  return out;
}

// ---- 1. connection -------------------------------------------------------------------------------

Status SessionRunner::Connect(Session& s) {
  PORO_ASSIGN_OR_RETURN(auto hp, transport::ParseHostPort(s.peer.address));
  auto fd = transport::TcpConnect(hp.first, hp.second, std::chrono::milliseconds(10000));
  if (!fd.has_value()) return fd.error().Annotate("endpoint " + s.peer.id);
  auto tls = transport::TlsStream::Connect(*d_.fed->tls_client(), std::move(*fd), Timeout(30000));
  if (!tls.has_value()) {
    d_.fed->AuditHandshakeFailure(s.peer.address, "connect", tls.error());
    return tls.error().Annotate("endpoint " + s.peer.id);
  }
  PORO_RETURN_IF_ERROR(d_.fed->AdmitPeer(**tls, "connect", s.peer.id).status());
  s.tls = tls->get();
  s.peer_pin = s.tls->peer_cert_sha256();
  s.ctl = std::make_unique<engine::ControlChannel>(std::move(*tls));
  return Status::OK();
}

// ---- 2. HELLO --------------------------------------------------------------------------------------

Status SessionRunner::ExchangeHello(Session& s) {
  const TransportOptions o = Timeout(30000);
  proto::Hello mine;
  mine.endpoint = d_.config->endpoint_name;
  mine.software = Software();
  if (s.initiator) mine.transports = s.offer;
  if (s.initiator) {
    // HELLO and OPEN go out back to back (the responder reads them in order): a round trip saved.
    Status sent = s.ctl->Send(proto::MsgType::kHello, proto::EncodeHello(mine));
    if (sent.ok()) sent = s.ctl->Send(proto::MsgType::kOpen, proto::EncodeOpen(s.open));
    if (!sent.ok()) {
      // The peer may have refused us and closed: its ERROR, if it arrived, says why.
      auto reply = s.ctl->Expect(proto::MsgType::kHello, Timeout(2000));
      if (!reply.has_value() && reply.error().code() != Code::kUnavailable &&
          reply.error().code() != Code::kDeadlineExceeded) {
        return reply.error();
      }
      return sent;
    }
    PORO_ASSIGN_OR_RETURN(auto body, s.ctl->Expect(proto::MsgType::kHello, o));
    PORO_ASSIGN_OR_RETURN(proto::Hello theirs, proto::DecodeHello(body));
    PORO_RETURN_IF_ERROR(CheckPeerHello(s, theirs));
    PORO_RETURN_IF_ERROR(TakeTransport(s, theirs));
    s.sid = *theirs.session;
  } else {
    PORO_ASSIGN_OR_RETURN(auto body, s.ctl->Expect(proto::MsgType::kHello, o));
    PORO_ASSIGN_OR_RETURN(proto::Hello theirs, proto::DecodeHello(body));
    PORO_RETURN_IF_ERROR(CheckPeerHello(s, theirs));
    PORO_RETURN_IF_ERROR(ChooseTransport(s, theirs));
    PORO_RETURN_IF_ERROR(RandomBytes(s.sid));
    mine.session = s.sid;
    mine.transports = d_.transports->offered;
    mine.transport = s.transport;
    PORO_RETURN_IF_ERROR(s.ctl->Send(proto::MsgType::kHello, proto::EncodeHello(mine)));
  }
  PORO_ASSIGN_OR_RETURN(s.key, s.tls->ExportKey(proto::kBindExporterLabel, 32));
  s.auth.transport = s.transport;
  s.auth.transport_note = s.transport_note;
  return Status::OK();
}

// ---- 3. OPEN -> OPEN_OK ------------------------------------------------------------------------------

Status SessionRunner::AnswerOpen(Session& s) {
  const Config& c = *d_.config;
  PORO_ASSIGN_OR_RETURN(auto body, s.ctl->Expect(proto::MsgType::kOpen, Timeout(30000)));
  PORO_ASSIGN_OR_RETURN(s.open, proto::DecodeOpen(body));
  const proto::Open& open = s.open;
  PORO_RETURN_IF_ERROR(
      ValidateTransferLimits(c, d_.pool->buffer_size(), open.streams, open.options.chunk_size));
  s.eo = EngineOptionsFrom(open.options);
  PORO_ASSIGN_OR_RETURN(std::string rel, d_.root->Normalize(open.path));
  const bool push = open.direction == proto::Direction::kPush;  // the peer sends, we receive
  proto::OpenOk ok;
  ok.transfer_id = open.transfer_id;
  if (push) {
    PORO_ASSIGN_OR_RETURN(s.engine_rel, ReceiveTarget(rel, open.trailing_slash, *open.src));
    if (c.InStagingDir(s.engine_rel)) {
      return Status::PermissionDenied(d_.root->Display(s.engine_rel) +
                                      " is in the staging cache of endpoint '" + c.endpoint_name +
                                      "', which only its own pulls write");
    }
    ok.target = c.endpoint_name + ":/" + s.engine_rel;
  } else {
    PORO_ASSIGN_OR_RETURN(engine::SourceInfo si, engine::StatSource(*d_.root, rel));
    if (si.is_dir && !open.recursive)
      return Status::InvalidArgument(d_.root->Display(rel) + " is a directory (use -r)");
    ok.src = proto::Source{si.name, si.is_dir};
    s.engine_rel = si.rel;  // a named link: where it leads, for the engine, the policy and the label
  }
  // Authorisation, before any byte is written: the bearer token's scopes, then the policy.
  TransferAuth& a = s.auth;
  a.transfer_id = open.transfer_id;
  a.peer = s.peer;
  a.sending = !push;
  a.initiator = false;
  a.local_path = "/" + s.engine_rel;
  if (!push) a.named_path = "/" + rel;  // a named link: the token covers the name asked for
  a.remote_path = open.local_path;
  a.classification = push ? open.classification.value_or("") : d_.fed->LabelFor(a.local_path);
  a.token = open.token.value_or("");
  // sync replaces destination files that differ, as overwrite does: both need storage.modify.
  a.overwrite = s.eo.existing == engine::ExistingMode::kOverwrite || s.eo.sync;
  a.protection_requested = open.protection;
  if (open.query) a.query = open.query->op;
  PORO_ASSIGN_OR_RETURN(Admission adm, d_.fed->AdmitResponder(a));
  if (open.query) return AnswerQuery(s);
  if (!push) ok.classification = a.classification;
  ok.rule = adm.decision.rule_id;
  ok.protection = Stricter(open.protection.value_or(Protection::kClear), adm.decision.protection);
  s.offered = ok.protection;
  s.adm = std::move(adm);
  // Registered before OPEN_OK: the initiator connects as soon as it reads it.
  if (s.transport == "tcp") s.bind = d_.binds->Open(s.sid, s.key, open.streams);
  return s.ctl->Send(proto::MsgType::kOpenOk, proto::EncodeOpenOk(ok));
}

Status SessionRunner::AnswerQuery(Session& s) {
  const proto::Query& q = *s.open.query;
  Result<json> r = Status::InvalidArgument("unknown query " + q.op);
  if (q.op == "list") {
    r = ListExport(*d_.root, s.engine_rel, q.limit);
  } else if (q.op == "checksum") {
    if (q.chunk_size < (64u << 10) || q.chunk_size % 4096 != 0) {
      return Status::InvalidArgument("checksum chunk size " + std::to_string(q.chunk_size) +
                                     " is not a multiple of 4 KiB of at least 64 KiB");
    }
    r = ChecksumExport(*d_.root, s.engine_rel, q.chunk_size, d_.stopping);
  }
  if (!r.has_value()) return r.error();
  (*r)["path"] = s.open.path;
  (*r)["endpoint"] = d_.config->endpoint_name;
  s.queried = true;
  PORO_LOG(INFO) << "answered " << q.op << " of " << d_.root->Display(s.engine_rel) << " for " << PeerLabel(s)
                 << (s.auth.user.empty() ? "" : " (" + s.auth.user + ")");
  const std::string text = r->dump(-1, ' ', false, json::error_handler_t::replace);
  return s.ctl->Send(proto::MsgType::kQueryResult,
                     std::as_bytes(std::span<const char>(text.data(), text.size())));
}

Result<json> SessionRunner::Query(const QueryRequest& q) {
  Session s;
  s.initiator = true;
  s.cancel = &s.own_cancel;
  auto manifest = d_.fed->manifest();
  const federation::Endpoint* peer = manifest->FindEndpoint(q.endpoint);
  if (peer == nullptr) {
    return Status::NotFound("unknown endpoint '" + q.endpoint + "': not in federation '" +
                            manifest->federation() + "'");
  }
  s.peer = *peer;
  PORO_ASSIGN_OR_RETURN(std::string id, NewId());
  proto::Open& open = s.open;
  open.transfer_id = id;
  open.direction = proto::Direction::kPull;
  open.path = q.path;
  open.recursive = true;  // a directory is what `ls` asks about
  open.streams = 1;
  open.options.chunk_size = d_.config->chunk_size;
  open.local_path = "/";
  open.query = q.query;
  s.offer = d_.transports->offered;  // no data channel follows: whichever both ends have
  TransferAuth& a = s.auth;
  a.transfer_id = id;
  a.peer = s.peer;
  a.sending = false;
  a.initiator = true;
  a.local_path = "/";
  a.remote_path = q.path;
  a.user = q.user;
  a.query = q.query.op;
  std::string bearer = q.token;
  if (bearer.empty()) {
    const UserConfig* u = q.uid >= 0 ? d_.config->FindUser(q.uid) : d_.config->FindIdentity(q.user);
    PORO_ASSIGN_OR_RETURN(bearer, d_.fed->MintToken(a, u ? u->scopes : std::vector<std::string>{}));
  }
  if (!bearer.empty()) open.token = bearer;
  PORO_RETURN_IF_ERROR(Connect(s));
  Status st = ExchangeHello(s);
  Result<json> out = st;
  if (st.ok()) {
    // A checksum reads the whole file at the peer before it answers: wait for the answer in
    // slices (at most an hour), so that a daemon that stops does not wait with it.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::hours(1);
    bool ready = false;
    while (!ready && !(d_.stopping != nullptr && d_.stopping->load()) &&
           std::chrono::steady_clock::now() < deadline) {
      ready = s.tls->HasBuffered() || PollOne(s.tls->fd(), POLLIN, std::chrono::milliseconds(500)) != 0;
    }
    Result<proto::ControlFrame> f =
        Status::DeadlineExceeded("no answer to " + q.query.op + " within an hour");
    if (ready) {
      f = s.ctl->Receive(Timeout(60000));
    } else if (d_.stopping != nullptr && d_.stopping->load()) {
      f = Status::Cancelled("the daemon is stopping");
    }
    if (!f.has_value()) {
      out = f.error();
    } else if (f->type == proto::MsgType::kError) {
      out = proto::StatusFromErrorBody(f->body);
    } else if (f->type == proto::MsgType::kQueryResult) {
      out = proto::DecodeJsonBody(*f);
    } else {
      // An older pororocad took the query for a pull and accepted it: say so, and end the session.
      s.ctl->SendError(Status::Cancelled("a query, not a transfer"));
      out =
          Status::NotSupported("endpoint '" + q.endpoint + "' runs an older pororocad that does not answer " +
                               q.query.op + " (it answered " + proto::MsgTypeName(f->type) + ")");
    }
  }
  s.ctl->Close().IgnoreError();
  if (!out.has_value()) return std::move(out).error().Annotate("endpoint " + q.endpoint);
  return out;
}

Status SessionRunner::ReadOpenOk(Session& s) {
  PORO_ASSIGN_OR_RETURN(auto body, s.ctl->Expect(proto::MsgType::kOpenOk, Timeout(30000)));
  PORO_ASSIGN_OR_RETURN(proto::OpenOk ok, proto::DecodeOpenOk(body, s.open.direction));
  Transfer& t = *s.transfer;
  if (t.push) {
    size_t colon = ok.target->find(':');
    if (colon != std::string::npos) s.auth.remote_path = ok.target->substr(colon + 1);
    s.engine_rel = s.local_rel;
  } else {
    s.auth.classification = ok.classification.value_or("");
    PORO_ASSIGN_OR_RETURN(s.engine_rel, ReceiveTarget(s.local_rel, t.local_trailing_slash, *ok.src));
  }
  if (s.open.protection && ok.protection < *s.open.protection) {
    Status down = Status::Protocol("OPEN_OK.protection: the peer answered '" +
                                   std::string(ProtectionName(ok.protection)) + "' to a request for '" +
                                   std::string(ProtectionName(*s.open.protection)) + "'");
    s.ctl->SendError(down);
    return down;
  }
  auto a = d_.fed->AdmitInitiator(s.auth);
  if (!a.has_value()) {
    s.ctl->SendError(a.error());  // the peer stops waiting for our data connections
    return a.error();
  }
  s.adm = std::move(*a);
  // The stricter of what the peer's policy and this end's require: never less than either.
  s.auth.protection = Stricter(ok.protection, s.adm->decision.protection);
  PORO_RETURN_IF_ERROR(s.ctl->Send(proto::MsgType::kStart, proto::EncodeStart({s.auth.protection})));
  return ExportSealKey(s);
}

Status SessionRunner::ReadStart(Session& s) {
  PORO_ASSIGN_OR_RETURN(auto body, s.ctl->Expect(proto::MsgType::kStart, Timeout(30000)));
  PORO_ASSIGN_OR_RETURN(proto::Start start, proto::DecodeStart(body));
  if (start.protection < s.offered) {
    return Status::Protocol("START.protection: '" + std::string(ProtectionName(start.protection)) +
                            "' is below the '" + std::string(ProtectionName(s.offered)) +
                            "' this end requires");
  }
  s.auth.protection = start.protection;
  return ExportSealKey(s);
}

Status SessionRunner::ExportSealKey(Session& s) {
  if (s.auth.protection == Protection::kClear) return Status::OK();
  // One label per level: a key serves one level only.
  const std::string label =
      std::string(proto::kSealExporterLabel) + "-" + std::string(ProtectionName(s.auth.protection));
  PORO_ASSIGN_OR_RETURN(s.seal_key, s.tls->ExportKey(label, crypto::ChunkSeal::kKeySize));
  return Status::OK();
}

// ---- 4. data connections -------------------------------------------------------------------------------

Status SessionRunner::OpenDataChannels(Session& s) {
  if (s.transport != "tcp") return SetUpChannels(s);
  PORO_ASSIGN_OR_RETURN(auto hp, transport::ParseHostPort(s.peer.address));
  const unsigned n = s.open.streams;
  const TransportOptions o = Timeout(10000);
  // All N connections are set up at once: on a long link each costs two round trips (TCP, bind).
  s.channels.resize(n);
  auto open_one = [&](unsigned i) -> Status {
    PORO_ASSIGN_OR_RETURN(UniqueFd fd,
                          transport::TcpConnect(hp.first, hp.second, std::chrono::milliseconds(10000)));
    proto::BindRequest b;
    b.stream = static_cast<uint16_t>(i);
    b.session = s.sid;
    PORO_RETURN_IF_ERROR(RandomBytes(b.nonce));
    b.mac = proto::BindMac(s.key, false, s.sid, b.stream, b.nonce);
    transport::TcpStream stream(std::move(fd));
    PORO_RETURN_IF_ERROR(stream.WriteAll(proto::EncodeBind(b), o));
    std::array<std::byte, proto::kBindReplySize> rep;
    PORO_RETURN_IF_ERROR(stream.ReadFull(rep, o));
    PORO_ASSIGN_OR_RETURN(auto r, proto::DecodeBindReply(rep));
    if (r.first != 0) return Status::Unauthenticated("peer refused data connection " + std::to_string(i));
    if (!proto::MacEqual(r.second, proto::BindMac(s.key, true, s.sid, b.stream, b.nonce))) {
      return Status::Unauthenticated("data connection " + std::to_string(i) +
                                     " answered with a bad authenticator");
    }
    UniqueFd raw(::dup(stream.fd()));
    if (!raw.valid()) return Status::IoError("dup data connection", errno);
    s.channels[i] = d_.make_channel(std::move(raw));
    return Status::OK();
  };
  return OnEveryStream(n, open_one);
}

Status SessionRunner::AwaitDataChannels(Session& s) {
  if (s.transport != "tcp") return SetUpChannels(s);
  // The initiator may instead refuse now (its own policy decision) with an ERROR on the control
  // connection: watch it while waiting.
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  bool control_readable = false;
  auto give_up = [&] {
    control_readable = PollOne(s.tls->fd(), POLLIN, std::chrono::milliseconds(0)) > 0;
    return control_readable || d_.stopping->load();
  };
  if (d_.binds->WaitBound(*s.bind, until, std::chrono::milliseconds(100), give_up)) {
    s.channels = d_.binds->Take(*s.bind);  // a message waiting now is the engine's (see BindTable)
    return Status::OK();
  }
  if (d_.stopping->load()) return Status::Unavailable("the daemon is shutting down");
  if (!control_readable) return Status::DeadlineExceeded("data connections did not arrive within 30 s");
  // Not every channel is bound, so the initiator has not started: this is its refusal, or a
  // violation of the protocol.
  auto msg = s.ctl->Receive(Timeout(2000));
  if (!msg.has_value()) return msg.error();
  if (msg->type == proto::MsgType::kError) return proto::StatusFromErrorBody(msg->body);
  return Status::Protocol(proto::MsgTypeName(msg->type) + " while waiting for the data connections");
}

// The peer as data-channel errors name it: its endpoint and the address its control connection has.
std::string SessionRunner::PeerLabel(const Session& s) {
  return s.peer.id + " (" + (s.initiator ? s.peer.address : s.address) + ")";
}

Status SessionRunner::SetUpChannels(Session& s) {
  const TransportSet& ts = *d_.transports;
  if (!(s.transport == "ucx" && ts.ucx != nullptr) && !(s.transport == "fabric" && ts.fabric != nullptr)) {
    return Status::Internal("transport " + s.transport + " chosen but not set up in this daemon");
  }
  const unsigned n = s.open.streams;
  s.channels.clear();
#if PORO_WITH_FABRIC
  if (s.transport == "fabric") {
    // One endpoint for all of the session's channels, on this end of the control connection.
    PORO_ASSIGN_OR_RETURN(const std::string host, transport::LocalHost(s.tls->fd()));
    PORO_ASSIGN_OR_RETURN(s.fabric_endpoint, ts.fabric->Acquire(host));
  }
#endif
  if (s.auth.sending) {
    PORO_ASSIGN_OR_RETURN(auto body, s.ctl->Expect(proto::MsgType::kChannels, Timeout(30000)));
    PORO_ASSIGN_OR_RETURN(proto::Channels where, proto::DecodeChannels(body, n));
    if (where.transport != s.transport) {
      return Status::Protocol("CHANNELS.transport: '" + where.transport + "' in a session on " + s.transport);
    }
    Status st = ConnectChannels(s, where);
    if (!st.ok()) {
      // The receiving end may have refused a channel and said why on the control connection (its
      // channels are gone then, so the next one fails): its reason comes first.
      auto msg = s.ctl->Receive(Timeout(2000));
      if (msg.has_value() && msg->type == proto::MsgType::kError)
        return proto::StatusFromErrorBody(msg->body);
    }
    return st;
  }
  return AcceptChannels(s);
}

// The receiving end of one data channel, on `host` (where the peer reached this daemon), and the
// address the sending end needs.
Result<SessionRunner::ListeningChannel> SessionRunner::ListenChannel(Session& s, const std::string& host,
                                                                     uint16_t stream) {
  const uint64_t tag = proto::DataTag(s.key, s.sid, stream);
  ListeningChannel out;
#if PORO_WITH_UCX
  if (s.transport == "ucx") {
    PORO_ASSIGN_OR_RETURN(auto ch,
                          transport::UcxChannel::Listen(*d_.transports->ucx, host, tag, PeerLabel(s)));
    out.address = ch->address();
    out.channel = std::move(ch);
    return out;
  }
#endif
#if PORO_WITH_FABRIC
  if (s.transport == "fabric") {
    PORO_ASSIGN_OR_RETURN(auto ch, transport::FabricChannel::Listen(s.fabric_endpoint, tag, PeerLabel(s)));
    out.address = ch->address();
    out.channel = std::move(ch);
    return out;
  }
#endif
  (void)host, (void)tag;
  return Status::NotSupported("transport " + s.transport + ": not in this build");
}

// The sending end of one data channel, to the receiving end's `address`.
Result<std::unique_ptr<transport::MessageChannel>> SessionRunner::ConnectChannel(
    Session& s, std::span<const std::byte> address, uint16_t stream) {
  const uint64_t tag = proto::DataTag(s.key, s.sid, stream);
#if PORO_WITH_UCX
  if (s.transport == "ucx") {
    PORO_ASSIGN_OR_RETURN(auto ch,
                          transport::UcxChannel::Connect(*d_.transports->ucx, address, tag, PeerLabel(s)));
    return std::unique_ptr<transport::MessageChannel>(std::move(ch));
  }
#endif
#if PORO_WITH_FABRIC
  if (s.transport == "fabric") {
    PORO_ASSIGN_OR_RETURN(auto ch,
                          transport::FabricChannel::Connect(s.fabric_endpoint, address, tag, PeerLabel(s)));
    return std::unique_ptr<transport::MessageChannel>(std::move(ch));
  }
#endif
  (void)address, (void)tag;
  return Status::NotSupported("transport " + s.transport + ": not in this build");
}

Status SessionRunner::ConnectChannels(Session& s, const proto::Channels& where) {
  // All channels at once, as on tcp: each costs a few round trips to set up.
  const unsigned n = s.open.streams;
  std::vector<std::unique_ptr<transport::MessageChannel>> channels(n);
  auto open_one = [&](unsigned i) -> Status {
    const auto stream = static_cast<uint16_t>(i);
    PORO_ASSIGN_OR_RETURN(auto ch, ConnectChannel(s, where.addresses[i], stream));
    // The first message proves knowledge of this session, as a TCP data connection's bind does.
    proto::BindRequest b;
    b.stream = stream;
    b.session = s.sid;
    PORO_RETURN_IF_ERROR(RandomBytes(b.nonce));
    b.mac = proto::BindMac(s.key, false, s.sid, b.stream, b.nonce);
    if (d_.config->fault_forge_bind) b.mac = proto::BindMac(b.nonce, false, s.sid, b.stream, b.nonce);
    PORO_RETURN_IF_ERROR(
        ch->Send(proto::EncodeBind(b), {}, Timeout(10000)).Annotate("data channel " + std::to_string(i)));
    channels[i] = d_.wrap_channel(std::move(ch));
    return Status::OK();
  };
  PORO_RETURN_IF_ERROR(OnEveryStream(n, open_one));
  s.channels = std::move(channels);
  return Status::OK();
}

Status SessionRunner::AcceptChannels(Session& s) {
  const unsigned n = s.open.streams;
  std::vector<std::unique_ptr<transport::MessageChannel>> mine;
  // Channels this set-up gives up on may still see the peer's connections arriving: UCX 1.13
  // crashes in its async thread on a connection request for a listener just destroyed, so its
  // channels are destroyed a little later (UcxChannel::DestroyLater).
  Defer retire([&mine, &s] {
    for (auto& ch : mine) {
#if PORO_WITH_UCX
      if (ch && s.transport == "ucx") {
        transport::UcxChannel::DestroyLater(
            std::unique_ptr<transport::UcxChannel>(static_cast<transport::UcxChannel*>(ch.release())));
      }
#endif
      ch.reset();
    }
    (void)s;
  });
  proto::Channels where;
  where.transport = s.transport;
  // The channels listen on the address the peer reached this daemon at.
  PORO_ASSIGN_OR_RETURN(const std::string host, transport::LocalHost(s.tls->fd()));
  for (unsigned i = 0; i < n; ++i) {
    PORO_ASSIGN_OR_RETURN(ListeningChannel l, ListenChannel(s, host, static_cast<uint16_t>(i)));
    where.addresses.push_back(std::move(l.address));
    mine.push_back(std::move(l.channel));
  }
  PORO_RETURN_IF_ERROR(s.ctl->Send(proto::MsgType::kChannels, proto::EncodeChannels(where)));
  // Each channel's first message must be its bind request; nothing else is taken before it. The
  // peer may instead give up with an ERROR on the control connection: once that connection has
  // something to read, the binds get a few more seconds (the sender sends them before any control
  // message of the engine), then the control message is read.
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  bool control_readable = false;
  std::array<std::byte, transport::MessageChannel::kMaxHeader> hdr;
  auto no_payload = [](std::span<const std::byte>, size_t len) -> Result<std::span<std::byte>> {
    if (len > 0) return Status::Protocol("a payload before the bind");
    return std::span<std::byte>();
  };
  for (unsigned i = 0; i < n; ++i) {
    Result<transport::MessageChannel::Received> r = Status::DeadlineExceeded("");
    while (!(r = mine[i]->Receive(hdr, no_payload, 0, Timeout(200))).has_value() &&
           r.error().code() == Code::kDeadlineExceeded) {
      if (d_.stopping->load()) return Status::Unavailable("the daemon is shutting down");
      if (s.cancel->load()) return Status::Cancelled("cancelled while setting up the data channels");
      if (!control_readable && PollOne(s.tls->fd(), POLLIN, std::chrono::milliseconds(0)) > 0) {
        control_readable = true;
        until = std::min(until, std::chrono::steady_clock::now() + std::chrono::seconds(5));
      }
      if (std::chrono::steady_clock::now() < until) continue;
      if (!control_readable)
        return Status::DeadlineExceeded("data channels over " + s.transport + " did not bind within 30 s");
      auto msg = s.ctl->Receive(Timeout(2000));
      if (!msg.has_value()) return msg.error();
      if (msg->type == proto::MsgType::kError) return proto::StatusFromErrorBody(msg->body);
      return Status::Protocol(proto::MsgTypeName(msg->type) + " while waiting for the data channels' binds");
    }
    const Status refused =
        Status::Unauthenticated("data channel " + std::to_string(i) + " over " + s.transport + " from " +
                                PeerLabel(s) + " did not present this session's binding: refused");
    if (!r.has_value()) return r.error().code() == Code::kProtocol ? refused : r.error();
    auto b = proto::DecodeBind(std::span<const std::byte>(hdr.data(), r->header_len));
    if (!b.has_value() || b->session != s.sid || b->stream != i ||
        !proto::MacEqual(b->mac, proto::BindMac(s.key, false, s.sid, b->stream, b->nonce))) {
      return refused;
    }
  }
  for (auto& ch : mine) s.channels.push_back(d_.wrap_channel(std::move(ch)));
  return Status::OK();
}

// ---- 5, 6. engine and end ----------------------------------------------------------------------------

Result<json> SessionRunner::RunEngine(Session& s) {
  const TransferAuth& a = s.auth;
  const Admission& adm = *s.adm;
  auto live = d_.fed->Register(s.peer.id, s.peer_pin, s.cancel);
  engine::DataPath dp;
  dp.ctl = s.ctl.get();
  dp.channels = &s.channels;
  dp.pool = d_.pool;
  dp.stats = s.stats.get();
  dp.cancel = s.cancel;
  dp.cancel_is_shutdown = !s.initiator;  // the responder's cancel is only ever the daemon stopping
  dp.cancel_reason = [live] { return live->CutStatus(); };
  dp.protection = a.protection;
  dp.seal_key = s.seal_key;
  dp.idle_timeout = std::chrono::seconds(d_.config->idle_timeout_s);
  dp.for_peer = [this](const Status& st) { return ForPeer(st); };
  std::atomic<bool>* cancel = s.cancel;
  if (adm.bucket) dp.pace = [b = adm.bucket, cancel](uint64_t n) { return b->Acquire(n, cancel); };
  if (a.sending) {
    // A pull's peer names no destination per file: its root is what it asked for.
    const std::string remote_root = a.remote_path.empty() ? "/" : a.remote_path;
    dp.admit_path = [this, &a, &adm, remote_root](const std::string& rel, const std::string& entry) {
      return d_.fed->AdmitPath(a, adm, remote_root, rel, entry);
    };
  } else {
    dp.admit_path = [this, &a, &adm](const std::string& rel, const std::string& entry) {
      return d_.fed->AdmitReceivedPath(a, adm, rel, entry);
    };
  }
  PORO_LOG(INFO) << "transfer " << a.transfer_id << ": " << (a.sending ? "sending " : "receiving ")
                 << d_.root->Display(s.engine_rel) << (a.sending ? " to " : " from ") << s.peer.id << " over "
                 << s.channels.size() << " " << s.transport << " streams"
                 << (s.transport_note.empty() ? "" : " (" + s.transport_note + ")") << ", protection "
                 << ProtectionName(a.protection)
                 << (adm.decision.rule_id.empty() ? "" : " (rule '" + adm.decision.rule_id + "')");
  Result<json> r = Status::Internal("not run");
  {
    BusyScope busy(d_.moving);
    r = a.sending ? engine::RunSender(*d_.root, s.engine_rel, s.eo, dp)
                  : engine::RunReceiver(*d_.root, s.engine_rel, s.eo, dp);
  }
  d_.fed->Unregister(live);
  if (Status cut = live->CutStatus(); !cut.ok() && s.transfer != nullptr) {
    MutexLock lock(&s.transfer->mu);
    s.transfer->cut_reason = std::string(cut.message());
  }
  d_.fed->Finish(a, adm, s.stats->Snapshot(), r.has_value() ? Status::OK() : r.error());
  return r;
}

// ---- the two ends --------------------------------------------------------------------------------------

Status SessionRunner::Prepare(Transfer& t, Session& s, const char** check) const {
  *check = "endpoint";
  auto manifest = d_.fed->manifest();
  const federation::Endpoint* peer = manifest->FindEndpoint(t.remote.endpoint);
  if (peer == nullptr) {
    return Status::NotFound("endpoint '" + t.remote.endpoint +
                            "' is not in the federation manifest (serial " +
                            std::to_string(manifest->serial()) + ")");
  }
  s.peer = *peer;
  *check = "export_root";
  PORO_ASSIGN_OR_RETURN(s.local_rel, d_.root->RelativeFromAbsolute(t.local_path));
  *check = "request";
  proto::Open& open = s.open;
  open.transfer_id = t.id;
  open.direction = t.push ? proto::Direction::kPush : proto::Direction::kPull;
  open.path = t.remote.path;
  open.trailing_slash = t.remote.trailing_slash;
  open.recursive = t.recursive;
  PORO_RETURN_IF_ERROR(ReadOptions(t.options, *d_.config, open));
  PORO_RETURN_IF_ERROR(Offer(t.options, s));
  open.local_path = "/" + s.local_rel;
  s.eo = EngineOptionsFrom(open.options);
  TransferAuth& a = s.auth;
  a.transfer_id = t.id;
  a.peer = s.peer;
  a.sending = t.push;
  a.initiator = true;
  a.local_path = open.local_path;
  a.remote_path = t.remote.path;
  a.overwrite = open.options.existing == proto::Existing::kOverwrite || open.options.sync;
  a.protection_requested = open.protection;
  a.user = t.user;
  if (t.push) {
    *check = "source";
    PORO_ASSIGN_OR_RETURN(engine::SourceInfo si, engine::StatSource(*d_.root, s.local_rel));
    if (si.is_dir && !t.recursive) return Status::InvalidArgument(t.local_path + " is a directory (use -r)");
    // A named link: where it leads is read, and is what the policy and the label see.
    s.local_rel = si.rel;
    open.local_path = a.local_path = "/" + s.local_rel;
    a.classification = d_.fed->LabelFor(a.local_path);
    open.src = proto::Source{si.name, si.is_dir};
    open.classification = a.classification;
  }
  // This side's policy decision comes once the peer has accepted the OPEN: it then knows the
  // peer's resolved path (push) or the data's label (pull), and still no data byte has moved.
  *check = "token";
  std::string bearer = t.token;
  if (bearer.empty()) {
    // A local user by uid; a caller of the HTTPS API (no uid) by its identity.
    const UserConfig* u = t.uid >= 0 ? d_.config->FindUser(t.uid) : d_.config->FindIdentity(t.user);
    PORO_ASSIGN_OR_RETURN(bearer, d_.fed->MintToken(a, u ? u->scopes : std::vector<std::string>{}));
  }
  if (!bearer.empty()) open.token = bearer;
  *check = "";
  return Status::OK();
}

SessionRunner::Verdict SessionRunner::DryRun(Transfer& t, const DryRunOverrides& o) const {
  Verdict v;
  Session s;
  s.initiator = true;
  s.transfer = &t;
  v.refusal = Prepare(t, s, &v.check);
  v.protection_requested = s.open.protection;
  if (!v.refusal.ok()) return v;
  TransferAuth& a = s.auth;
  // The homologation check each end makes of the other after the TLS handshake: both must be
  // listed and active in the manifest in force here.
  v.check = "endpoint";
  auto m = d_.fed->manifest();
  v.refusal = m->CheckPeer(s.peer.id, s.peer.pin).status();
  if (v.refusal.ok()) v.refusal = m->CheckSelf(d_.config->endpoint_name);
  if (!v.refusal.ok()) return v;
  // A token the user gave is checked as the peer will check it (the one this daemon mints passed
  // the user's scopes in Prepare).
  if (!t.token.empty()) {
    v.check = "token";
    v.refusal = d_.fed->CheckToken(a, t.token);
    if (!v.refusal.ok()) return v;
  }
  v.check = "policy";
  v.request = d_.fed->RequestFor(a);
  if (o.direction) v.request.direction = *o.direction;
  if (o.classification) v.request.classification = *o.classification;
  if (o.now_unix) v.request.now_unix = *o.now_unix;
  v.refusal = d_.fed->CheckPolicy(a, v.request, /*audit=*/false, &v.decision);
  return v;
}

Result<json> SessionRunner::Initiate(Transfer& t) {
  Session s;
  s.initiator = true;
  s.transfer = &t;
  s.cancel = &t.cancel;
  const char* check = "";
  PORO_RETURN_IF_ERROR(Prepare(t, s, &check));
  PORO_RETURN_IF_ERROR(Connect(s));
  Status setup = ExchangeHello(s);
  if (setup.ok()) setup = ReadOpenOk(s);
  if (setup.ok()) setup = OpenDataChannels(s);
  if (!setup.ok()) {
    // A peer that broke the protocol while setting up (a message out of place) may do better on
    // a fresh connection; a refusal or an incompatible version will not.
    if (setup.code() == Code::kProtocol) setup.WithRetryable(true);
    s.ctl->Close().IgnoreError();
    return setup;
  }
  s.stats->record_files = true;  // the initiator keeps per-file results (TransferManager stores them)
  {
    MutexLock lock(&t.mu);
    t.stats = s.stats;
    t.protection = std::string(ProtectionName(s.auth.protection));
    t.transport = s.transport;
    t.transport_note = s.transport_note;
  }
  Result<json> r = RunEngine(s);
  s.ctl->Close().IgnoreError();
  // A protocol error before any file was committed (for instance a responder of an older version
  // that mistook the first FILES for a set-up message) may not recur on a fresh session.
  if (!r.has_value() && r.error().code() == Code::kProtocol && s.stats->Snapshot().files_done == 0) {
    r.error().WithRetryable(true);
  }
  return r;
}

void SessionRunner::Respond(UniqueFd fd) {
  Session s;
  s.initiator = false;
  s.cancel = &s.own_cancel;
  s.address = transport::PeerAddress(fd.get());
  auto tls = transport::TlsStream::Accept(*d_.fed->tls_server(), std::move(fd), Timeout(15000));
  if (!tls.has_value()) {
    PORO_LOG(WARNING) << "refused connection from " << s.address << ": " << tls.error().ToString();
    d_.fed->AuditHandshakeFailure(s.address, "accept", tls.error());
    return;
  }
  s.tls = tls->get();
  s.peer_pin = s.tls->peer_cert_sha256();
  s.ctl = std::make_unique<engine::ControlChannel>(std::move(*tls));
  Status st;
  // Homologated-endpoint check first: nothing is read from a peer the federation does not admit.
  if (auto peer = d_.fed->AdmitPeer(*s.tls, "accept"); peer.has_value()) {
    s.peer = std::move(*peer);
    st = ExchangeHello(s);
    if (st.ok()) st = AnswerOpen(s);
    const bool transfer = !s.queried;  // a query ends with its answer
    if (st.ok() && transfer) st = ReadStart(s);
    if (st.ok() && transfer) st = AwaitDataChannels(s);
    s.bind.reset();
    if (st.ok() && transfer) {
      auto t0 = std::chrono::steady_clock::now();
      auto r = RunEngine(s);
      if (r.has_value()) {
        PORO_LOG(INFO) << "transfer " << s.auth.transfer_id << " done in "
                       << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()
                       << " s: " << r->dump();
      } else {
        st = r.error();
      }
    }
  } else {
    st = peer.error();
  }
  if (!st.ok()) {
    PORO_LOG(WARNING) << "session with " << s.tls->peer_common_name() << " (" << s.address
                      << ") ended: " << st.ToString();
    if (st.code() != Code::kUnavailable) {
      s.ctl->SendError(ForPeer(st));
      // Let the peer read the error: read (and drop) what it still sends for a moment instead of
      // closing on unread data, which would reset the connection and lose the error.
      ::shutdown(s.tls->fd(), SHUT_WR);
      for (int i = 0; i < 8 && s.ctl->Receive(Timeout(500)).has_value(); ++i) {
      }
    }
  }
  s.ctl->Close().IgnoreError();
}

}  // namespace pororoca::daemon
