// The daemon's HTTPS client for the federation's control-plane service (pororoca-fedd,
// docs/control-plane.md): it fetches the signed federation manifest and reports accounting.
//
// Trust: TLS 1.3 with mutual authentication. The client presents this endpoint's certificate and
// accepts the service only if its certificate chains to ClientConfig::ca_file (the federation CA;
// the system trust store is never used) and its subject CN equals ClientConfig::server_name. The
// host in the URL is not matched against the certificate: endpoint certificates name endpoints, not
// addresses. The service is trusted for availability only: the manifest it serves must still be
// verified against the federation authority's key by the caller.
//
// Every call opens its own connection, bounded by ClientConfig::timeout (connect, each read and
// each write), and closes it. Errors name the URL and the cause:
//   kUnavailable (retryable)  connection refused or reset, unreachable, HTTP 5xx
//   kDeadlineExceeded         connect or read timed out
//   kUnauthenticated          TLS failure: the service's certificate is not from the CA or has
//                             another CN, or the service refused this endpoint's certificate
//   kInvalidArgument          malformed URL, unreadable certificate or key files
//   kPermissionDenied, kNotFound, kResourceExhausted, kProtocol   HTTP 403, 404, 413, other
//
// Thread-safety: free functions without shared state; safe from any thread. The process must ignore
// SIGPIPE (pororocad and pororoca-fedd do): OpenSSL writes to sockets without MSG_NOSIGNAL.
#pragma once

#include <chrono>
#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>

#include "pororoca/status.h"

namespace pororoca::controlplane {

// The largest accounting report the service takes (and the client sends), in bytes of JSON.
inline constexpr size_t kMaxReportBytes = 4u << 20;

struct ClientConfig {
  std::string url;          // "https://host:port" (port defaults to 443); a trailing "/" is ignored
  std::string ca_file;      // PEM: the federation CA, the only trust anchor
  std::string cert_file;    // PEM: this endpoint's certificate (presented to the service)
  std::string key_file;     // PEM: its private key
  std::string server_name;  // the CN the service's certificate must carry
  std::chrono::milliseconds timeout{10000};
};

// GET /v1/manifest: the manifest file's bytes exactly as the service publishes them.
Result<std::string> FetchManifest(const ClientConfig& config);

// POST /v1/accounting with `report` (audit::Accounting::Report()). The service keeps the latest
// report per endpoint, so resending is harmless. A report over kMaxReportBytes is kResourceExhausted
// without being sent.
Status ReportAccounting(const ClientConfig& config, const nlohmann::json& report);

// GET /v1/accounting: the federation-wide totals (audit::Accounting::Query() over every endpoint's
// latest report). `query` is an optional query string without "?", e.g. "since=2026-11-01&user=alice".
Result<nlohmann::json> FetchAccounting(const ClientConfig& config, const std::string& query = "");

}  // namespace pororoca::controlplane
