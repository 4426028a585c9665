// TLS 1.3 with mandatory mutual authentication over a connected TCP socket: the control channel's
// Stream.
//
// Trust model: a peer is accepted only if its certificate chains to the one CA in TlsConfig::ca_file
// (the system trust store is never used). There is no host-name check: callers identify the peer by
// peer_common_name() and/or pin its key with peer_cert_sha256(), after Connect/Accept returns.
//
// Thread-safety: TlsContext is immutable after Create() and may be shared by any number of threads
// and streams (each SSL holds a reference, so a stream may outlive its context). On a TlsStream one
// thread may read while another writes (SSL calls are serialised inside); Shutdown() may be called
// from any thread; Close() must not race with reads or writes.
#pragma once

#include <openssl/ssl.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "base/unique_fd.h"
#include "crypto/openssl_ptr.h"
#include "pororoca/status.h"
#include "pororoca/transport.h"

namespace pororoca::transport {

using SslCtxPtr = crypto::OpenSslPtr<SSL_CTX, SSL_CTX_free>;
using SslPtr = crypto::OpenSslPtr<SSL, SSL_free>;

struct TlsConfig {
  std::string ca_file;    // PEM CA certificate(s); the only trust anchors
  std::string cert_file;  // PEM certificate (chain) presented to the peer
  std::string key_file;   // PEM private key for cert_file
  bool server = false;
  // A server that does not ask for a client certificate (the HTTPS API, whose callers present
  // bearer tokens instead). The client side always verifies the server.
  bool require_peer_cert = true;
  // A client config may leave cert_file and key_file empty; it then presents no certificate and every
  // server rejects it. That exists for tests; servers always need both.
};

class TlsContext {
 public:
  // Loads the files and fixes the policy: TLS 1.3 only, peer certificate required in both directions,
  // verified against ca_file only. Errors name the file and carry OpenSSL's reason
  // (kNotFound/kInvalidArgument for unreadable/bad files).
  static Result<std::unique_ptr<TlsContext>> Create(const TlsConfig& config);

  SSL_CTX* get() const { return ctx_.get(); }
  bool server() const { return server_; }
  bool peer_cert_required() const { return peer_cert_required_; }

 private:
  TlsContext(SslCtxPtr ctx, bool server, bool peer_cert_required)
      : ctx_(std::move(ctx)), server_(server), peer_cert_required_(peer_cert_required) {}
  SslCtxPtr ctx_;
  bool server_;
  bool peer_cert_required_;
};

class TlsStream : public Stream {
 public:
  // Default handshake deadline when TransportOptions::idle_timeout is 0: an unauthenticated peer must
  // not hold a connection forever.
  static constexpr std::chrono::milliseconds kDefaultHandshakeTimeout{30000};

  // Run the handshake on a connected socket (taken over; it is switched to non-blocking mode and stays
  // so). opts.idle_timeout bounds the whole handshake (0 = kDefaultHandshakeTimeout).
  // Failures: a rejected or missing certificate, or any other TLS-level failure, is kUnauthenticated
  // ("TLS handshake with 127.0.0.1:7002 failed: certificate verify failed (unable to get local issuer
  // certificate)"), not retryable; the connection dropping is kUnavailable; a timeout is
  // kDeadlineExceeded. Connect returns only after the server has accepted the client's certificate
  // (it waits for the server's post-handshake session ticket), so both ends fail together.
  static Result<std::unique_ptr<TlsStream>> Connect(TlsContext& ctx, UniqueFd fd,
                                                    const TransportOptions& opts);
  static Result<std::unique_ptr<TlsStream>> Accept(TlsContext& ctx, UniqueFd fd,
                                                   const TransportOptions& opts);

  ~TlsStream() override;
  TlsStream(const TlsStream&) = delete;
  TlsStream& operator=(const TlsStream&) = delete;

  Status WriteAll(std::span<const std::byte> data, const TransportOptions& opts) override;
  // 0 = the peer sent close_notify. A connection dropped without close_notify is kUnavailable.
  Result<size_t> ReadSome(std::span<std::byte> buf, const TransportOptions& opts) override;
  // Sends close_notify (does not wait for the peer's) and closes the socket.
  Status Close(const TransportOptions& opts) override;
  // ::shutdown(SHUT_RDWR) on the socket; pending and later calls fail with kCancelled.
  void Shutdown() override;
  std::string peer_address() const override { return peer_; }

  // Subject CN of the verified peer certificate ("" when a server context does not ask for one).
  const std::string& peer_common_name() const { return peer_cn_; }
  // Lowercase hex SHA-256 of the peer certificate's DER SubjectPublicKeyInfo (a public-key pin; equal
  // to pki::PublicKeyPinFromCert of the same certificate).
  const std::string& peer_cert_sha256() const { return peer_pin_; }
  // RFC 8446 / RFC 5705 exporter with an empty context; equal on both ends of one session and
  // different across sessions. Used to bind application-level auth to this TLS session.
  Result<std::vector<std::byte>> ExportKey(std::string_view label, size_t len) const;
  int fd() const { return fd_.get(); }
  // Decrypted bytes already read from the socket and not yet returned (poll() on fd() cannot see
  // them): a caller that polls before reading checks this too.
  bool HasBuffered();

 private:
  TlsStream(UniqueFd fd, SslPtr ssl, std::string peer);
  static Result<std::unique_ptr<TlsStream>> Handshake(TlsContext& ctx, UniqueFd fd, bool client,
                                                      const TransportOptions& opts);
  Status RunHandshake(bool client, bool require_cert, const TransportOptions& opts);
  // Waits for readability/writability as OpenSSL asked; kDeadlineExceeded after `timeout` (0 = forever).
  Status Wait(int ssl_error, std::chrono::milliseconds timeout, std::string_view what);
  Status IoFailure(std::string_view what, int ssl_error);

  UniqueFd fd_;  // declared before ssl_ so the SSL (which does not own the fd) is freed first
  SslPtr ssl_;
  std::string peer_;
  std::string peer_cn_;
  std::string peer_pin_;
  bool ticket_seen_ = false;        // set by the client's new-session callback
  std::atomic<bool> fatal_{false};  // no close_notify after a fatal error
  bool established_ = false;        // handshake (incl. the client's wait for acceptance) completed
  std::atomic<bool> shutdown_{false};
  // Serialises SSL_* calls so that one thread may read while another writes (the control channel
  // does); waiting for the socket happens outside the lock.
  std::mutex ssl_mu_;
};

}  // namespace pororoca::transport
