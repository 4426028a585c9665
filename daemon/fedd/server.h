// pororoca-fedd: the federation's control-plane service (docs/control-plane.md). It publishes the
// signed federation manifest to the daemons and collects their accounting reports, over HTTPS with
// mutual TLS against the federation CA.
//
// Routes (every client must present a certificate that chains to [tls] ca):
//   GET  /v1/manifest    the [manifest] file, byte for byte, re-read when its mtime, size or inode
//                        changes; ETag = "<sha256 hex>", If-None-Match answered 304
//   POST /v1/accounting  an audit::Accounting::Report() body of at most 4 MiB from the endpoint
//                        named by the client certificate's CN; stored as [accounting] dir/<CN>.json
//                        (atomically replaced: the latest report per endpoint counts)
//   GET  /v1/accounting  the merged totals of the latest reports (audit::Accounting::Query), with
//                        optional ?since=&until=&user=&institution=
//   GET  /v1/healthz     {"status":"ok", ...}
//
// The service does not parse the manifest: daemons verify its signature themselves. It is trusted
// for availability, not for integrity.
//
// Thread-safety: Create, Start and Stop belong to one thread. Requests are served on the service's
// own threads. The process must ignore SIGPIPE (main.cc does): OpenSSL writes without MSG_NOSIGNAL.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "controlplane/client.h"  // kMaxReportBytes: one limit for both ends
#include "pororoca/status.h"

namespace pororoca::fedd {

using controlplane::kMaxReportBytes;

struct Config {
  std::string source_file;  // the file it was read from (for messages)
  // [service]
  std::string listen = "127.0.0.1:47700";  // port 0: an ephemeral port (tests)
  // [tls]
  std::string tls_ca, tls_cert, tls_key;
  // [manifest]
  std::string manifest_file;
  // [accounting]
  std::string accounting_dir;
  // [log]
  std::string log_level = "info";
  std::string log_file;
};

// Reads and checks the TOML file. Errors name the file and the key:
// "fedd.toml: [manifest] file: missing (required)".
Result<Config> LoadConfig(const std::string& path);

class Service {
 public:
  // Checks everything that can be checked before serving, with errors naming the config key: the
  // TLS files load and the key matches the certificate, the manifest file is readable, the
  // accounting directory is a writable directory, and `listen` parses.
  static Result<std::unique_ptr<Service>> Create(const Config& config);
  ~Service();  // Stop()
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  // Binds `listen` and serves on background threads; connections are accepted once it returns.
  Status Start();
  // The bound port (after Start).
  uint16_t port() const;
  // Stops accepting, finishes the requests in progress and joins the threads. Idempotent.
  void Stop();

 private:
  struct Impl;
  explicit Service(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace pororoca::fedd
