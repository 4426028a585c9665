// pororocad configuration: a TOML file (docs/operations.md documents every key). Everything but the
// identity (endpoint name, TLS files) and the paths has an embedded default.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "pororoca/status.h"

namespace pororoca::daemon {

struct PeerConfig {
  std::string name;
  std::string address;  // host:port of its peer listener
};

struct Config {
  std::string source_file;  // the file it was read from (for messages)
  // [endpoint]
  std::string endpoint_name;
  // [network]
  std::string listen = "127.0.0.1:7701";
  // SO_SNDBUF / SO_RCVBUF in bytes; 0 = kernel autotuning; sndbuf -1 = auto (see ResolveSndbuf).
  int sndbuf = -1, rcvbuf = 0;
  std::string congestion;       // "" = system default
  // [api]
  std::string api_socket = "/run/pororoca/pororocad.sock";
  unsigned api_socket_mode = 0666;
  // [storage]
  std::string export_root;
  std::string state_dir;
  bool direct_io = true;
  // [tls]
  std::string tls_ca, tls_cert, tls_key;
  // [transfer]
  unsigned streams = 8;
  uint32_t chunk_size = 4u << 20;
  uint64_t buffer_pool_bytes = 256ull << 20;
  unsigned read_ahead = 8;
  unsigned retry_attempts = 30;
  unsigned retry_max_backoff_s = 30;
  unsigned max_streams = 64;
  // [log]
  std::string log_level = "info";
  std::string log_file;
  // [fault_injection] (tests and drills only; off by default)
  unsigned fault_corrupt_every = 0;
  unsigned fault_send_delay_us = 0;
  // [[peers]]
  std::vector<PeerConfig> peers;

  const PeerConfig* FindPeer(const std::string& name) const;
};

// Reads and validates the file. Errors name the file and the key: "pororocad.toml: [transfer]
// chunk_size: must be a multiple of 4096 between 64KiB and 64MiB".
Result<Config> LoadConfig(const std::string& path);

// "4MiB" / "512KiB" / "1GiB" / "123" -> bytes.
Result<uint64_t> ParseSize(const std::string& s);
Status ValidateChunkSize(uint64_t v);

// "auto" send buffer: a fixed SO_SNDBUF of net.core.wmem_max when that (doubled by the kernel) is more
// than autotuning may reach (net.ipv4.tcp_wmem max), else 0 (autotuning). Long fat links need the
// larger of the two; values are read in the daemon's own network namespace.
int ResolveSndbuf(int configured);

}  // namespace pororoca::daemon
