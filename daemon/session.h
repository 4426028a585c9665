// SessionRunner: one transfer session with a peer, from either end. The initiator (the daemon a
// local user asked) connects, the responder (the daemon the peer connected to) accepts; after
// that both run the same steps, which differ only in who speaks first:
//
//   1. TLS 1.3 with mutual authentication, then the homologated-endpoint check of the peer
//   2. HELLO both ways (protocol version, endpoint names; the responder's names the session)
//   3. OPEN -> OPEN_OK -> START: the responder resolves the path and authorises (token, policy);
//      the initiator then authorises with what the responder answered (its own policy decision)
//      and names the protection level in force: the stricter of both ends' policy minimums and
//      the user's request, which neither end lowers
//   4. the data connections: the initiator opens them, the responder's BindTable binds them
//   5. the engine: RunSender on the sending side, RunReceiver on the receiving side, paced by the
//      policy's rate cap and cut when the federation suspends the peer
//   6. the end: accounting and the transfer_end audit record at both ends; a responder that
//      fails sends ERROR and lets the initiator read it before closing
//
// A protocol error before the engine starts, or before any file is committed, is worth a retry
// (the initiator marks it retryable).
//
// Thread-safety: a SessionRunner is shared by every session of the daemon; each call runs one
// session on the calling thread.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "base/unique_fd.h"
#include "daemon/bind_table.h"
#include "daemon/config.h"
#include "daemon/federation.h"
#include "daemon/transfer.h"
#include "engine/export_root.h"
#include "engine/session.h"
#include "pororoca/storage.h"
#include "proto/messages.h"

namespace pororoca::transport {
class UcxContext;
class FabricContext;
class FabricEndpoint;
}  // namespace pororoca::transport

namespace pororoca::daemon {

// The data transports this daemon offers: configured in [network] transports and usable here, in
// order of preference; why a configured one is not usable; the UCX and libfabric contexts, when "ucx" and
// "fabric" are offered.
struct TransportSet {
  std::vector<std::string> offered;
  std::map<std::string, std::string> unavailable;
  transport::UcxContext* ucx = nullptr;
  transport::FabricContext* fabric = nullptr;
  bool Offers(const std::string& name) const;
};

struct SessionDeps {
  const Config* config = nullptr;
  engine::ExportRoot* root = nullptr;
  io::BufferPool* pool = nullptr;
  Federation* fed = nullptr;
  BindTable* binds = nullptr;
  BindTable::ChannelFactory make_channel;  // a connected data socket -> message channel
  // Any other transport's channel -> what the engine uses (the fault-injection decorator, if set)
  std::function<std::unique_ptr<transport::MessageChannel>(std::unique_ptr<transport::MessageChannel>)>
      wrap_channel;
  const TransportSet* transports = nullptr;
  std::atomic<int>* moving = nullptr;  // sessions inside the engine (the pool's mapping waits)
  const std::atomic<bool>* stopping = nullptr;
  DaemonMetrics* metrics = nullptr;  // sessions' traffic, errors and streams (null: not counted)
};

class SessionRunner {
 public:
  explicit SessionRunner(SessionDeps deps) : d_(std::move(deps)) {}

  // The initiator's side: one attempt of a local user's transfer. Returns the receiver's SUMMARY.
  Result<nlohmann::json> Initiate(Transfer& t);
  // The responder's side of a control connection a peer opened (its first bytes were not a bind).
  void Respond(UniqueFd fd);

  // A question about a path of a peer's export (`pororoca ls`, `pororoca checksum`): an OPEN with a
  // query, admitted by the peer as a pull of the path would be (bearer token with storage.read, its
  // policy and classification) and answered with QUERY_RESULT; no data connection is made. The
  // token is `token`, else one minted for `user` as for a transfer ([tokens]).
  struct QueryRequest {
    std::string endpoint;  // the peer
    std::string path;      // in its export root
    proto::Query query;
    std::string token;
    std::string user;  // federated identity
    int64_t uid = -1;  // the local user, if any ([[users]] scopes bound a minted token)
  };
  Result<nlohmann::json> Query(const QueryRequest& q);

  // The dry run of Initiate(t) (pororoca policy check): every check this end makes before and
  // during set-up, in the same order and with the same refusals, without connecting, auditing or
  // taking a concurrency slot. The peer's own checks (its export root, its policy) are not known here.
  struct DryRunOverrides {
    std::optional<policy::Direction> direction;
    std::optional<std::string> classification;
    std::optional<int64_t> now_unix;
  };
  struct Verdict {
    // The check that decided: "endpoint" (known, homologated, active), "export_root", "request"
    // (options), "source" (exists; a directory needs -r), "token" (the user's scopes, or the
    // token given), "policy".
    const char* check = "";
    Status refusal;           // OK: allowed
    policy::Request request;  // set once the policy was reached
    policy::Decision decision;
    std::optional<Protection> protection_requested;  // the transfer's own request, if any
  };
  Verdict DryRun(Transfer& t, const DryRunOverrides& o) const;

  // Engine options from OPEN's options and this daemon's configuration.
  engine::EngineOptions EngineOptionsFrom(const proto::OpenOptions& o) const;

 private:
  struct Session;

  // Initiate's checks before it connects: the endpoint, the local path, the options, the source,
  // the token. *check names the step that refused.
  Status Prepare(Transfer& t, Session& s, const char** check) const;
  Status Connect(Session& s);
  Status ExchangeHello(Session& s);
  Status AnswerOpen(Session& s);   // responder: OPEN -> resolve, authorise -> OPEN_OK
  Status AnswerQuery(Session& s);  // responder: an admitted OPEN with a query -> QUERY_RESULT
  Status ReadOpenOk(Session& s);   // initiator: OPEN_OK -> resolve, authorise -> START
  Status ReadStart(Session& s);    // responder: START, the protection level in force
  Status ExportSealKey(Session& s);
  Status OpenDataChannels(Session& s);
  Status AwaitDataChannels(Session& s);
  // Step 4 on a transport other than tcp: the receiving end makes the channels and sends CHANNELS,
  // the sending end connects to them and sends each one's bind request first.
  Status SetUpChannels(Session& s);
  struct ListeningChannel {
    std::unique_ptr<transport::MessageChannel> channel;
    std::vector<std::byte> address;
  };
  Result<ListeningChannel> ListenChannel(Session& s, const std::string& host, uint16_t stream);
  Result<std::unique_ptr<transport::MessageChannel>> ConnectChannel(Session& s,
                                                                    std::span<const std::byte> address,
                                                                    uint16_t stream);
  Status ConnectChannels(Session& s, const proto::Channels& where);  // sending end
  Status AcceptChannels(Session& s);                                 // receiving end
  static std::string PeerLabel(const Session& s);
  // The transports the initiator offers: the one the transfer forces, or this daemon's list.
  Status Offer(const nlohmann::json& options, Session& s) const;
  // Responder: the first of the peer's transports this daemon offers too.
  Status ChooseTransport(Session& s, const proto::Hello& theirs) const;
  // Initiator: the responder's choice, which must be one it was offered.
  Status TakeTransport(Session& s, const proto::Hello& theirs) const;
  Result<nlohmann::json> RunEngine(Session& s);
  // Initiate's session; Initiate counts its error.
  Result<nlohmann::json> InitiateSession(Transfer& t);
  Status CheckPeerHello(const Session& s, const proto::Hello& h) const;
  // `s` as the peer is told it: this daemon's paths as ENDPOINT:/path inside the export (what the
  // peer's user typed), not where the export root lives on this host.
  Status ForPeer(const Status& s) const;
  // The receiving side's destination for the peer's source `src` below `rel`.
  Result<std::string> ReceiveTarget(const std::string& rel, bool trailing_slash,
                                    const proto::Source& src) const;

  SessionDeps d_;
};

}  // namespace pororoca::daemon
