#include "controlplane/client.h"

#include <httplib.h>  // the one file of this library that includes it (a heavy header)
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "transport/tcp.h"
#include "transport/tls.h"

namespace pororoca::controlplane {
namespace {

using Json = nlohmann::json;

struct Target {
  std::string host;
  uint16_t port = 0;
  std::string base;  // "https://host:port", for messages
};

Result<Target> ParseUrl(const std::string& url) {
  const std::string scheme = "https://";
  auto bad = [&](const std::string& why) {
    return Status::InvalidArgument("control-plane URL '" + url + "': " + why +
                                   " (expected https://host:port)");
  };
  if (url.rfind(scheme, 0) != 0) return bad("not an https URL");
  std::string authority = url.substr(scheme.size());
  if (!authority.empty() && authority.back() == '/') authority.pop_back();
  if (authority.empty() || authority.find_first_of("/?#@") != std::string::npos) return bad("not host:port");
  bool has_port = authority.front() == '[' ? authority.find("]:") != std::string::npos
                                           : authority.find(':') != std::string::npos;
  if (!has_port) authority += ":443";
  auto hp = transport::ParseHostPort(authority);
  if (!hp.has_value()) return bad(std::string(hp.error().message()));
  if (hp->second == 0) return bad("port 0");
  return Target{hp->first, hp->second, scheme + transport::FormatHostPort(hp->first, hp->second)};
}

std::string OpenSslErrors() {
  std::string out;
  for (unsigned long e; (e = ERR_get_error()) != 0;) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    out += (out.empty() ? "" : "; ") + std::string(buf);
  }
  return out.empty() ? "no detail from OpenSSL" : out;
}

// What the TLS callbacks saw during one call; reached from the SSL_CTX through ex_data.
struct TlsDiagnostics {
  std::string expected_cn;
  std::string verify_error;  // why the service's certificate was refused
  std::string alert;         // a fatal alert the service sent (it refused our certificate)
};

int DiagnosticsIndex() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

TlsDiagnostics* DiagnosticsOf(const SSL* ssl) {
  return static_cast<TlsDiagnostics*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), DiagnosticsIndex()));
}

// The subject CN; "" if it is missing, too long or holds a NUL byte.
std::string SubjectCn(X509* cert) {
  char buf[256];
  int n = cert ? X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, buf, sizeof buf) : -1;
  return n > 0 && size_t(n) == ::strnlen(buf, sizeof buf) ? std::string(buf, size_t(n)) : std::string();
}

// Chain verification against the CA is OpenSSL's; this adds the CN check on the leaf and keeps the
// reason of a refusal for the error message.
int VerifyService(int preverify_ok, X509_STORE_CTX* store) {
  auto* ssl = static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
  TlsDiagnostics* d = ssl ? DiagnosticsOf(ssl) : nullptr;
  if (d == nullptr) return 0;
  std::string cn = SubjectCn(X509_STORE_CTX_get_current_cert(store));
  if (!preverify_ok) {
    if (d->verify_error.empty()) {
      d->verify_error = "the service's certificate (CN '" + cn + "') is not trusted: " +
                        X509_verify_cert_error_string(X509_STORE_CTX_get_error(store));
    }
    return 0;
  }
  if (X509_STORE_CTX_get_error_depth(store) == 0 && cn != d->expected_cn) {
    d->verify_error = "the service's certificate has CN '" + cn + "', expected '" + d->expected_cn + "'";
    return 0;
  }
  return 1;
}

void NoteAlert(const SSL* ssl, int where, int ret) {
  if ((where & SSL_CB_READ_ALERT) == 0 || SSL_alert_type_string(ret)[0] != 'F') return;
  if (TlsDiagnostics* d = DiagnosticsOf(ssl); d != nullptr && d->alert.empty())
    d->alert = SSL_alert_desc_string_long(ret);
}

// A fresh handshake with transport::TlsStream, which returns only once the service has accepted our
// certificate, or with the alert that refused it. Used when an httplib request broke without a reason.
Status ProbeTls(const ClientConfig& cfg, const Target& t) {
  transport::TlsConfig tc;
  tc.ca_file = cfg.ca_file;
  tc.cert_file = cfg.cert_file;
  tc.key_file = cfg.key_file;
  PORO_ASSIGN_OR_RETURN(auto ctx, transport::TlsContext::Create(tc));
  PORO_ASSIGN_OR_RETURN(UniqueFd fd, transport::TcpConnect(t.host, t.port, cfg.timeout));
  transport::TransportOptions opts;
  opts.idle_timeout = cfg.timeout;
  PORO_ASSIGN_OR_RETURN(auto tls, transport::TlsStream::Connect(*ctx, std::move(fd), opts));
  return tls->Close(opts);
}

Status TransportError(const std::string& what, httplib::Error err, const TlsDiagnostics& d, const Target& t,
                      const ClientConfig& cfg) {
  const std::chrono::milliseconds timeout = cfg.timeout;
  if (!d.verify_error.empty()) return Status::Unauthenticated(what + ": " + d.verify_error);
  if (!d.alert.empty()) {
    return Status::Unauthenticated(what + ": the service refused the TLS session with alert '" + d.alert +
                                   "' (is this endpoint's certificate issued by the federation CA?)");
  }
  const std::string after = " after " + std::to_string(timeout.count()) + " ms";
  switch (err) {
    case httplib::Error::Connection: {
      // httplib does not say why; a plain connect tells (refused, unreachable, unknown host).
      auto probe = transport::TcpConnect(t.host, t.port, timeout);
      if (!probe.has_value()) return std::move(probe).error().Annotate(what);
      return Status::Unavailable(what + ": could not connect");
    }
    case httplib::Error::ConnectionTimeout:
      return Status::DeadlineExceeded(what + ": connect timed out" + after);
    case httplib::Error::SSLConnection:
    case httplib::Error::SSLLoadingCerts:
    case httplib::Error::SSLServerVerification:
      return Status::Unauthenticated(what + ": TLS handshake failed: " + OpenSslErrors());
    case httplib::Error::Read:
    case httplib::Error::Write: {
      // In TLS 1.3 the service checks our certificate after our side of the handshake is done; if
      // it refuses, the request may meet a reset before the alert is read. A second handshake tells.
      if (Status probe = ProbeTls(cfg, t); probe.code() == Code::kUnauthenticated)
        return probe.Annotate(what);
      if (err == httplib::Error::Write) {
        return Status::Unavailable(what + ": could not send the request (connection closed or reset)");
      }
      return Status::Unavailable(what + ": no response (connection closed, reset or silent" + after + ")");
    }
    default:
      return Status::Unavailable(what + ": " + httplib::to_string(err));
  }
}

Status HttpError(const std::string& what, int status, const std::string& body) {
  std::string detail = "HTTP " + std::to_string(status);
  // The service's errors are {"error":{"code":...,"message":...}}; anything else is quoted as is.
  const Json j = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  const Json* message = nullptr;
  if (j.is_object() && j.contains("error") && j["error"].is_object() && j["error"].contains("message")) {
    message = &j["error"]["message"];
  }
  if (message != nullptr && message->is_string()) {
    detail += ": " + message->get<std::string>();
  } else if (!body.empty()) {
    detail += ": " + body.substr(0, 200);
  }
  const std::string msg = what + ": " + detail;
  if (status == 401 || status == 403) return Status::PermissionDenied(msg);
  if (status == 404) return Status::NotFound(msg);
  if (status == 413) return Status::ResourceExhausted(msg).WithRetryable(false);
  if (status >= 500) return Status::Unavailable(msg);
  return Status::Protocol(msg);
}

// One request on a fresh connection; the body of a 200 answer.
Result<std::string> Exchange(const ClientConfig& cfg, const std::string& method, const std::string& path,
                             const std::string& body) {
  PORO_ASSIGN_OR_RETURN(Target t, ParseUrl(cfg.url));
  const std::string what = method + " " + t.base + path;
  if (cfg.server_name.empty()) {
    return Status::InvalidArgument(what + ": no server name to expect in the service's certificate");
  }
  for (const auto& [file, role] :
       {std::pair{&cfg.ca_file, "CA certificate"}, std::pair{&cfg.cert_file, "certificate"},
        std::pair{&cfg.key_file, "key"}}) {
    if (file->empty() || ::access(file->c_str(), R_OK) != 0) {
      return Status::InvalidArgument(what + ": cannot read the " + role + " file '" + *file +
                                     "': " + std::strerror(file->empty() ? ENOENT : errno));
    }
  }
  ERR_clear_error();
  TlsDiagnostics diag{cfg.server_name, "", ""};  // outlives the client, whose SSL_CTX points at it
  httplib::SSLClient cli(t.host, t.port, cfg.cert_file, cfg.key_file);
  if (!cli.is_valid()) {
    return Status::InvalidArgument(what + ": cannot use certificate " + cfg.cert_file + " with key " +
                                   cfg.key_file + ": " + OpenSslErrors());
  }
  SSL_CTX* ctx = cli.ssl_context();
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
      SSL_CTX_load_verify_locations(ctx, cfg.ca_file.c_str(), nullptr) != 1) {
    return Status::InvalidArgument(what + ": cannot load CA certificate " + cfg.ca_file + ": " +
                                   OpenSslErrors());
  }
  SSL_CTX_set_ex_data(ctx, DiagnosticsIndex(), &diag);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, VerifyService);
  SSL_CTX_set_info_callback(ctx, NoteAlert);
  // httplib's own check would match the URL's host against the certificate; VerifyService checks the
  // chain and the CN instead. With it off, httplib leaves the SSL_CTX's verify settings alone.
  cli.enable_server_certificate_verification(false);
  cli.set_connection_timeout(cfg.timeout);
  cli.set_read_timeout(cfg.timeout);
  cli.set_write_timeout(cfg.timeout);
  cli.set_keep_alive(false);
  httplib::Result res = method == "POST" ? cli.Post(path, body, "application/json") : cli.Get(path);
  if (!res) return TransportError(what, res.error(), diag, t, cfg);
  if (res->status != 200) return HttpError(what, res->status, res->body);
  return std::move(res->body);
}

}  // namespace

Result<std::string> FetchManifest(const ClientConfig& config) {
  return Exchange(config, "GET", "/v1/manifest", "");
}

Status ReportAccounting(const ClientConfig& config, const Json& report) {
  std::string body = report.dump(-1, ' ', false, Json::error_handler_t::replace);
  if (body.size() > kMaxReportBytes) {
    // The service would refuse it, possibly before reading it all (a reset rather than a 413).
    return Status::ResourceExhausted("POST " + config.url + "/v1/accounting: the report is " +
                                     std::to_string(body.size()) + " bytes, over the service's limit of " +
                                     std::to_string(kMaxReportBytes))
        .WithRetryable(false);
  }
  return Exchange(config, "POST", "/v1/accounting", body).status();
}

Result<Json> FetchAccounting(const ClientConfig& config, const std::string& query) {
  const std::string path = "/v1/accounting" + (query.empty() ? "" : "?" + query);
  PORO_ASSIGN_OR_RETURN(std::string body, Exchange(config, "GET", path, ""));
  Json j = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object())
    return Status::Protocol("GET " + config.url + path + ": the answer is not a JSON object");
  return j;
}

}  // namespace pororoca::controlplane
