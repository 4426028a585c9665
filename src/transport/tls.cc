#include "transport/tls.h"

#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

#include "base/log.h"
#include "crypto/keys.h"
#include "transport/tcp.h"

namespace pororoca::transport {
namespace {

using Clock = std::chrono::steady_clock;

std::string CommonName(X509* cert) {
  X509_NAME* name = X509_get_subject_name(cert);
  int idx = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
  if (idx < 0) return "";
  ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx));
  unsigned char* utf8 = nullptr;
  int len = ASN1_STRING_to_UTF8(&utf8, data);
  if (len < 0) return "";
  std::string cn(reinterpret_cast<char*>(utf8), size_t(len));
  OPENSSL_free(utf8);
  return cn;
}

// Client side: a TLS 1.3 server sends its session ticket only after it has verified the client's
// certificate, so its arrival is the server's acceptance. The session itself is not kept.
int OnNewSession(SSL* ssl, SSL_SESSION* /*session*/) {
  if (auto* seen = static_cast<bool*>(SSL_get_app_data(ssl))) *seen = true;
  return 0;
}

Status FileError(std::string_view what, const std::string& file) {
  return Status::InvalidArgument(std::string(what) + " " + file + ": " + crypto::OpenSslErrors());
}

// After a failed handshake: half-close and read until the peer closes too (briefly), so that our
// close() does not turn the alert we just sent into a RST that the peer might see instead.
void LingerAfterFailure(int fd) {
  ::shutdown(fd, SHUT_WR);
  const auto deadline = Clock::now() + std::chrono::milliseconds(200);
  char buf[4096];
  while (Clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    int left = int(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
    int rc = ::poll(&p, 1, std::max(left, 0));
    if (rc < 0 && errno == EINTR) continue;
    if (rc <= 0) return;
    ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) return;
  }
}

}  // namespace

Result<std::unique_ptr<TlsContext>> TlsContext::Create(const TlsConfig& config) {
  ERR_clear_error();
  SslCtxPtr ctx(SSL_CTX_new(config.server ? TLS_server_method() : TLS_client_method()));
  if (!ctx) return Status::Internal("SSL_CTX_new: " + crypto::OpenSslErrors());
  if (SSL_CTX_set_min_proto_version(ctx.get(), TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(ctx.get(), TLS1_3_VERSION) != 1) {
    return Status::Internal("cannot restrict TLS to 1.3: " + crypto::OpenSslErrors());
  }
  auto readable = [](const std::string& f) { return ::access(f.c_str(), R_OK) == 0; };
  if (config.ca_file.empty()) return Status::InvalidArgument("TLS config: ca_file is required");
  if (!readable(config.ca_file)) return Status::IoError("TLS CA file " + config.ca_file, errno);
  // Only the configured CA is trusted: no SSL_CTX_set_default_verify_paths.
  if (SSL_CTX_load_verify_file(ctx.get(), config.ca_file.c_str()) != 1) {
    return FileError("TLS CA file", config.ca_file);
  }
  const bool has_cert = !config.cert_file.empty() || !config.key_file.empty();
  if (config.server && !has_cert) {
    return Status::InvalidArgument("TLS server config needs cert_file and key_file");
  }
  if (has_cert) {
    if (!readable(config.cert_file))
      return Status::IoError("TLS certificate file " + config.cert_file, errno);
    if (!readable(config.key_file)) return Status::IoError("TLS key file " + config.key_file, errno);
    if (SSL_CTX_use_certificate_chain_file(ctx.get(), config.cert_file.c_str()) != 1) {
      return FileError("TLS certificate file", config.cert_file);
    }
    if (SSL_CTX_use_PrivateKey_file(ctx.get(), config.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
      return FileError("TLS key file", config.key_file);
    }
    if (SSL_CTX_check_private_key(ctx.get()) != 1) {
      return Status::InvalidArgument("TLS key file " + config.key_file + " does not match certificate " +
                                     config.cert_file + ": " + crypto::OpenSslErrors());
    }
  }
  const bool peer_cert_required = !config.server || config.require_peer_cert;
  SSL_CTX_set_verify(ctx.get(),
                     peer_cert_required ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT : SSL_VERIFY_NONE,
                     nullptr);
  SSL_CTX_set_verify_depth(ctx.get(), 4);
  SSL_CTX_set_mode(ctx.get(), SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  if (config.server) {
    // Exactly one ticket: it doubles as the "client certificate accepted" signal (see OnNewSession).
    SSL_CTX_set_num_tickets(ctx.get(), 1);
  } else {
    SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx.get(), OnNewSession);
  }
  return std::unique_ptr<TlsContext>(new TlsContext(std::move(ctx), config.server, peer_cert_required));
}

TlsStream::TlsStream(UniqueFd fd, SslPtr ssl, std::string peer)
    : fd_(std::move(fd)), ssl_(std::move(ssl)), peer_(std::move(peer)) {}

TlsStream::~TlsStream() = default;

Result<std::unique_ptr<TlsStream>> TlsStream::Connect(TlsContext& ctx, UniqueFd fd,
                                                      const TransportOptions& opts) {
  return Handshake(ctx, std::move(fd), /*client=*/true, opts);
}

Result<std::unique_ptr<TlsStream>> TlsStream::Accept(TlsContext& ctx, UniqueFd fd,
                                                     const TransportOptions& opts) {
  return Handshake(ctx, std::move(fd), /*client=*/false, opts);
}

Result<std::unique_ptr<TlsStream>> TlsStream::Handshake(TlsContext& ctx, UniqueFd fd, bool client,
                                                        const TransportOptions& opts) {
  if (client == ctx.server()) {
    return Status::InvalidArgument(client ? "TLS Connect needs a client context"
                                          : "TLS Accept needs a server context");
  }
  if (!fd.valid()) return Status::InvalidArgument("TLS handshake on an invalid socket");
  int fl = ::fcntl(fd.get(), F_GETFL);
  if (fl < 0 || ::fcntl(fd.get(), F_SETFL, fl | O_NONBLOCK) < 0) return Status::IoError("fcntl", errno);
  std::string peer = PeerAddress(fd.get());
  ERR_clear_error();
  SslPtr ssl(SSL_new(ctx.get()));
  if (!ssl) return Status::Internal("SSL_new: " + crypto::OpenSslErrors());
  if (SSL_set_fd(ssl.get(), fd.get()) != 1) return Status::Internal("SSL_set_fd: " + crypto::OpenSslErrors());
  std::unique_ptr<TlsStream> s(new TlsStream(std::move(fd), std::move(ssl), std::move(peer)));
  Status st = s->RunHandshake(client, ctx.peer_cert_required(), opts);
  if (!st.ok()) {
    LingerAfterFailure(s->fd_.get());
    return st;
  }
  return s;
}

Status TlsStream::RunHandshake(bool client, bool require_cert, const TransportOptions& opts) {
  SSL* ssl = ssl_.get();
  SSL_set_app_data(ssl, &ticket_seen_);
  const auto budget = opts.idle_timeout.count() > 0 ? opts.idle_timeout : kDefaultHandshakeTimeout;
  const auto deadline = Clock::now() + budget;
  auto left = [&] {
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    return std::max(ms, std::chrono::milliseconds(1));
  };
  const std::string what = "TLS handshake with " + peer_;
  auto timed_out = [&] {
    fatal_ = true;
    Status s =
        Status::DeadlineExceeded(what + " failed: not done within " + std::to_string(budget.count()) + " ms");
    s.WithSide(Side::kNetwork);
    return s;
  };
  for (;;) {
    ERR_clear_error();
    int rc = client ? SSL_connect(ssl) : SSL_accept(ssl);
    if (rc == 1) break;
    int err = SSL_get_error(ssl, rc);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
      if (Clock::now() >= deadline) return timed_out();
      PORO_RETURN_IF_ERROR(Wait(err, left(), what));
      continue;
    }
    return IoFailure(what, err);
  }
  if (client) {
    // Wait for the server's verdict on our certificate: its session ticket, or an alert.
    while (!ticket_seen_) {
      ERR_clear_error();
      std::byte b;
      size_t n = 0;
      int rc = SSL_peek_ex(ssl, &b, 1, &n);
      if (rc == 1) break;  // application data can only follow acceptance
      int err = SSL_get_error(ssl, rc);
      if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
        if (ticket_seen_) break;
        if (Clock::now() >= deadline) return timed_out();
        PORO_RETURN_IF_ERROR(Wait(err, left(), what));
        continue;
      }
      return IoFailure(what, err);
    }
  }
  SSL_set_app_data(ssl, nullptr);
  X509* cert = SSL_get0_peer_certificate(ssl);
  if (cert == nullptr && !require_cert) {  // a server that asked for none (the HTTPS API)
    established_ = true;
    return Status::OK();
  }
  if (cert == nullptr || SSL_get_verify_result(ssl) != X509_V_OK) {
    fatal_ = true;
    return Status::Unauthenticated(what + " failed: peer certificate not verified");
  }
  peer_cn_ = CommonName(cert);
  peer_pin_ = crypto::PublicKeyPinOfCert(cert);
  established_ = true;
  return Status::OK();
}

bool TlsStream::HasBuffered() {
  std::lock_guard<std::mutex> lock(ssl_mu_);
  return SSL_pending(ssl_.get()) > 0;
}

Status TlsStream::Wait(int ssl_error, std::chrono::milliseconds timeout, std::string_view what) {
  short events = ssl_error == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN;
  const bool forever = timeout.count() <= 0;
  for (;;) {
    pollfd p{fd_.get(), events, 0};
    int rc = ::poll(&p, 1, forever ? -1 : int(std::min<int64_t>(timeout.count(), INT_MAX)));
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0) return Status::IoError("poll", errno);
    if (rc == 0) {
      Status s = Status::DeadlineExceeded(std::string(what) + ": no progress for " +
                                          std::to_string(timeout.count()) + " ms");
      s.WithSide(Side::kNetwork);
      return s;
    }
    if (shutdown_.load()) return Status::Cancelled(std::string(what) + ": stream shut down");
    return Status::OK();
  }
}

Status TlsStream::IoFailure(std::string_view what, int ssl_error) {
  fatal_ = true;
  const bool handshake = !established_;
  if (shutdown_.load()) {
    ERR_clear_error();
    return Status::Cancelled(std::string(what) + ": stream shut down");
  }
  Status s;
  if (ssl_error == SSL_ERROR_SYSCALL) {
    int err = errno;
    ERR_clear_error();
    s = err != 0 ? Status::IoError(std::string(what) + " failed", err)
                 : Status::Unavailable(std::string(what) + " failed: connection closed by peer");
  } else if (ssl_error == SSL_ERROR_SSL) {
    unsigned long e = ERR_peek_last_error();
    std::string reason = crypto::OpenSslErrors();
    long vr = SSL_get_verify_result(ssl_.get());
    if (vr != X509_V_OK) {
      std::string detail = std::string("(") + X509_verify_cert_error_string(vr) + ")";
      size_t at = reason.find("certificate verify failed");
      if (at != std::string::npos) {
        reason.insert(at + std::strlen("certificate verify failed"), " " + detail);
      } else {
        reason += " " + detail;
      }
    }
    if (ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
      s = Status::Unavailable(std::string(what) + " failed: connection closed without close_notify");
    } else if (handshake) {
      s = Status::Unauthenticated(std::string(what) + " failed: " + reason);
    } else {
      s = Status::Protocol(std::string(what) + " failed: " + reason);
    }
  } else {
    s = Status::Internal(std::string(what) + " failed: SSL error " + std::to_string(ssl_error) + ": " +
                         crypto::OpenSslErrors());
  }
  s.WithSide(Side::kNetwork);
  return s;
}

Status TlsStream::WriteAll(std::span<const std::byte> data, const TransportOptions& opts) {
  if (fatal_) return Status::Unavailable("TLS write to " + peer_ + ": stream failed earlier");
  size_t off = 0;
  while (off < data.size()) {
    size_t n = 0;
    int rc, err = SSL_ERROR_NONE;
    {
      std::lock_guard<std::mutex> lock(ssl_mu_);
      ERR_clear_error();
      rc = SSL_write_ex(ssl_.get(), data.data() + off, data.size() - off, &n);
      if (rc != 1) err = SSL_get_error(ssl_.get(), rc);
    }
    if (rc == 1) {
      off += n;
      continue;
    }
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
      PORO_RETURN_IF_ERROR(Wait(err, opts.idle_timeout, "TLS write to " + peer_));
      continue;
    }
    return IoFailure("TLS write to " + peer_, err);
  }
  return Status::OK();
}

Result<size_t> TlsStream::ReadSome(std::span<std::byte> buf, const TransportOptions& opts) {
  if (buf.empty()) return size_t{0};
  if (fatal_) return Status::Unavailable("TLS read from " + peer_ + ": stream failed earlier");
  for (;;) {
    size_t n = 0;
    int rc, err = SSL_ERROR_NONE;
    {
      std::lock_guard<std::mutex> lock(ssl_mu_);
      ERR_clear_error();
      rc = SSL_read_ex(ssl_.get(), buf.data(), buf.size(), &n);
      if (rc != 1) err = SSL_get_error(ssl_.get(), rc);
    }
    if (rc == 1) return n;
    if (err == SSL_ERROR_ZERO_RETURN) return size_t{0};
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
      PORO_RETURN_IF_ERROR(Wait(err, opts.idle_timeout, "TLS read from " + peer_));
      continue;
    }
    return IoFailure("TLS read from " + peer_, err);
  }
}

Status TlsStream::Close(const TransportOptions& opts) {
  if (!fd_.valid()) return Status::OK();
  Status result;
  if (!fatal_ && !shutdown_.load()) {
    for (;;) {
      int rc, err = SSL_ERROR_NONE;
      {
        std::lock_guard<std::mutex> lock(ssl_mu_);
        ERR_clear_error();
        rc = SSL_shutdown(ssl_.get());  // 0: our close_notify is sent; we do not wait for theirs
        if (rc < 0) err = SSL_get_error(ssl_.get(), rc);
      }
      if (rc >= 0) break;
      if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ) {
        Status w = Wait(err, opts.idle_timeout, "TLS close " + peer_);
        if (!w.ok()) {
          result = std::move(w);
          break;
        }
        continue;
      }
      result = IoFailure("TLS close_notify to " + peer_, err);
      break;
    }
  }
  ::shutdown(fd_.get(), SHUT_WR);
  Status c = fd_.Close();
  return result.ok() ? c : result;
}

void TlsStream::Shutdown() {
  shutdown_.store(true);
  if (fd_.valid()) ::shutdown(fd_.get(), SHUT_RDWR);
}

Result<std::vector<std::byte>> TlsStream::ExportKey(std::string_view label, size_t len) const {
  std::vector<std::byte> out(len);
  ERR_clear_error();
  if (SSL_export_keying_material(ssl_.get(), reinterpret_cast<unsigned char*>(out.data()), len, label.data(),
                                 label.size(), nullptr, 0, /*use_context=*/0) != 1) {
    return Status::Internal("TLS exporter '" + std::string(label) + "': " + crypto::OpenSslErrors());
  }
  return out;
}

}  // namespace pororoca::transport
