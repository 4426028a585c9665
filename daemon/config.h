// pororocad configuration: a TOML file (docs/operations.md documents every key). Everything but the
// identity (endpoint name, TLS files) and the paths has an embedded default.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "pororoca/status.h"

namespace pororoca::daemon {

// [[classification]]: a data classification label on a path prefix of the export (policy rules
// match labels). Paths are absolute inside the export root ("/datasets/clinical").
struct ClassificationConfig {
  std::string path;
  std::string label;
};

// [[users]]: a local user (unix uid, learned from the API socket's peer credentials) and the
// federated identity its transfers carry.
struct UserConfig {
  int64_t uid = -1;
  std::string identity;             // e.g. "alice@lncc"
  std::vector<std::string> scopes;  // what tokens minted for this user may grant (prefix limits)
  bool is_operator = false;         // sees and cancels every user's transfers on the API
};

struct Config {
  std::string source_file;  // the file it was read from (for messages)
  // [endpoint]
  std::string endpoint_name;
  // [network]
  std::string listen = "127.0.0.1:7701";
  // SO_SNDBUF / SO_RCVBUF in bytes; 0 = kernel autotuning; sndbuf -1 = auto (see ResolveSndbuf).
  int sndbuf = -1, rcvbuf = 0;
  std::string congestion;  // "" = system default
  // The data transports this endpoint offers, in order of preference: "tcp", "ucx", "fabric". A session uses
  // the first of the initiator's list that the responder offers too. One this build lacks, or
  // whose library finds no device at start-up, is logged and left out.
  std::vector<std::string> transports = {"tcp"};
  std::string ucx_tls;          // UCX_TLS for the daemon's UCX context ("" = environment / UCX's choice)
  std::string ucx_net_devices;  // UCX_NET_DEVICES ("" = environment / all)
  // The libfabric provider of "fabric": an ofi_rxm layering ("verbs;ofi_rxm" on InfiniBand/RoCE).
  std::string fabric_provider = "tcp;ofi_rxm";
  // A peer that sends nothing on a session's control connection for this long (KEEPALIVE goes
  // every quarter of it) has stopped answering: the session ends, the transfer retries. 0 = never.
  unsigned idle_timeout_s = 20;
  // [api]
  std::string api_socket = "/run/pororoca/pororocad.sock";
  unsigned api_socket_mode = 0666;
  // The HTTPS API on a TCP port ("host:port"; "" = off): TLS 1.3 with this endpoint's [tls]
  // certificate, callers authenticated by bearer tokens of the manifest's issuers (docs/api.md).
  std::string api_listen;
  // Federated identities (token subjects) that see and cancel every transfer over the HTTPS API
  // and may read the accounting and refresh the manifest there.
  std::vector<std::string> api_operators;
  // [storage]
  std::string export_root;
  std::string state_dir;
  bool direct_io = true;
  // Finished transfers (succeeded, failed, cancelled) are forgotten this long after they ended:
  // their records leave state_dir/transfers and `pororoca status`. 0 = kept forever.
  unsigned keep_finished_s = 30 * 86400;
  // [tls] cert/key: this endpoint's certificate issued by the federation CA. ca: the bootstrap
  // anchor for reaching the control-plane service; peers are checked against the manifest's anchors.
  std::string tls_ca, tls_cert, tls_key;
  // [federation]
  std::string manifest_file;  // signed manifest to load (the embedded default)
  std::string manifest_url;   // or fetch it from the control-plane service (https://host:port)
  std::string service_name;   // CN of the control-plane service's certificate
  std::string authority_key;  // the pinned authority public key (PEM)
  unsigned refresh_s = 10;    // how often the manifest source is checked for a newer serial
  bool require_token = true;  // refuse peers' transfers that carry no bearer token
  unsigned report_s = 60;     // accounting report interval to the service (0 = never)
  // [audit]
  std::string audit_log;  // default state_dir/audit.log
  // [tokens]: this daemon mints tokens for its local users (a test federation's issuer, or a site
  // whose issuer key lives on the DTN). Without it a user must pass a token with the transfer.
  std::string token_issuer;
  std::string token_key;
  unsigned token_lifetime_s = 3600;
  // [[classification]], [[users]]
  std::vector<ClassificationConfig> classifications;
  std::vector<UserConfig> users;
  // [transfer]
  unsigned streams = 8;
  uint32_t chunk_size = 4u << 20;
  uint64_t buffer_pool_bytes = 256ull << 20;
  unsigned read_ahead = 8;
  unsigned retry_attempts = 30;
  unsigned retry_max_backoff_s = 30;
  unsigned max_streams = 64;
  // [queue]: transfers running at once, in all and with one peer; the rest wait in the queue.
  unsigned max_running = 16;
  unsigned max_running_per_peer = 8;
  // [staging]: the cache that `pororoca stage` brings datasets into (docs/staging.md). Off when
  // dir is empty. dir is absolute and inside export_root (the daemon writes only there); quota is
  // what the cache may hold; above high_watermark x quota, datasets without a lease are evicted
  // least recently used first until it holds low_watermark x quota. A copy checked against its
  // source less than revalidate_s ago is served without asking the source again.
  std::string staging_dir;
  uint64_t staging_quota = 0;
  double staging_high_watermark = 0.90;
  double staging_low_watermark = 0.75;
  unsigned staging_revalidate_s = 600;
  unsigned staging_default_ttl_s = 86400;  // a lease's lifetime when the stage names none
  // [log]
  std::string log_level = "info";
  std::string log_file;
  // [fault_injection] (tests and drills only; off by default)
  unsigned fault_corrupt_every = 0;
  unsigned fault_send_delay_us = 0;
  // A corrupted chunk's header gets the XXH3-128 digest of the corrupted payload: a tampering relay.
  bool fault_forge_digest = false;
  // The sending end binds its data channels (other than tcp) with a key that is not the session's:
  // a stranger trying to inject chunks. The receiving end must refuse them.
  bool fault_forge_bind = false;

  const UserConfig* FindUser(int64_t uid) const;
  // The [[users]] entry with this federated identity (the first), or null.
  const UserConfig* FindIdentity(const std::string& identity) const;
  bool IsApiOperator(const std::string& identity) const;
  // Whether `rel` (a path relative to the export root, "a/b") is [staging] dir or inside it: only
  // the staging cache's own pulls write there.
  bool InStagingDir(const std::string& rel) const;
};

// Reads and validates the file. Errors name the file and the key: "pororocad.toml: [transfer]
// chunk_size: must be a multiple of 4096 between 64KiB and 64MiB".
Result<Config> LoadConfig(const std::string& path);

// "4MiB" / "512KiB" / "1GiB" / "123" -> bytes.
Result<uint64_t> ParseSize(const std::string& s);
Status ValidateChunkSize(uint64_t v);
// The limits of this daemon on one transfer, whoever asks (a local submission or a peer's OPEN):
// 1..max_streams streams, a valid chunk size that fits the buffer pool's buffers.
Status ValidateTransferLimits(const Config& c, size_t buffer_size, uint64_t streams, uint64_t chunk_size);

// "auto" send buffer: a fixed SO_SNDBUF of net.core.wmem_max when that (doubled by the kernel) is more
// than autotuning may reach (net.ipv4.tcp_wmem max), else 0 (autotuning). Long fat links need the
// larger of the two; values are read in the daemon's own network namespace.
int ResolveSndbuf(int configured);

}  // namespace pororoca::daemon
