// Loopback federation for integration tests: a temporary directory with a federation authority
// workspace (authority key, CA, manifest draft; src/federation/authority.h), endpoint certificates,
// a signed manifest every daemon loads, pororocad processes on 127.0.0.1 (fork/exec of the real binary), the
// real CLI run as a child process, and helpers to build and compare file trees.
//
// Everything is bounded: daemon start-up, CLI runs, waits for transfer states. Nothing leaves
// 127.0.0.1 and nothing is written outside the federation's temporary directory (except what a
// test mounts or creates on purpose, and removes).
//
// Binary paths come from the compile definitions PORO_DAEMON_BIN and PORO_CLI_BIN (CMake sets
// them to $<TARGET_FILE:...>). Set PORO_KEEP_TEST_DIR=1 to keep the temporary directory.
//
// Thread-safety: TestFederation and DaemonProcess belong to the test thread. RunCli/Cli and the file
// helpers have no shared state and may run on several threads at once (doctest assertions are
// thread-safe; a REQUIRE failing off the test thread terminates the run).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "pki/pki.h"

namespace pororoca::test {

using namespace std::chrono_literals;

struct TlsFiles {
  std::string ca;    // trust anchor the daemon verifies peers with
  std::string cert;  // its own certificate
  std::string key;
};

class TestFederation {
 public:
  // mkdtemp under /tmp and an authority workspace in dir()/authority with one policy rule that
  // allows everything ("test-allow-all"; tests about policy replace it). REQUIREs success.
  TestFederation();
  // Removes the directory (unless PORO_KEEP_TEST_DIR is set).
  ~TestFederation();
  TestFederation(const TestFederation&) = delete;
  TestFederation& operator=(const TestFederation&) = delete;

  const std::string& dir() const { return dir_; }
  std::string ca_dir() const { return dir_ + "/authority"; }
  std::string ca_cert() const { return ca_dir() + "/ca.crt"; }
  std::string authority_pub() const { return ca_dir() + "/authority.pub"; }
  // The published manifest every daemon's [federation] manifest points at.
  std::string manifest_path() const { return dir_ + "/manifest.json"; }

  // Lists endpoint `name` of `institution` at `address` in the draft, presenting `cert` (its pin
  // goes into the manifest). Adds the institution and its token issuer on first use.
  void Enroll(const std::string& name, const std::string& institution, const std::string& address,
              const std::string& cert);
  // Token issuer of an institution: id and private key file.
  std::string IssuerId(const std::string& institution) const {
    return "https://tokens." + institution + ".test";
  }
  std::string IssuerKey(const std::string& institution) const;
  // Replaces the policy rules of the draft (REQUIREs they are valid).
  void SetRules(const nlohmann::json& rules);
  // Changes an endpoint's status in the draft.
  void SetStatus(const std::string& name, const std::string& status);
  // Signs the draft with the next serial and publishes it to manifest_path(). Returns the serial.
  uint64_t Publish();

  // Issues a certificate for `name` from the federation CA. `file_tag` distinguishes several
  // certificates for one name (e.g. "expired").
  TlsFiles IssueEndpoint(const std::string& name, const pki::IssueOptions& opts = {},
                         const std::string& file_tag = "");
  // Creates (once) a second, unrelated CA named `authority` and issues `name` from it. The
  // returned trust anchor is the federation's CA, so the daemon still trusts its real peers.
  TlsFiles IssueFromOtherAuthority(const std::string& authority, const std::string& name);
  // An expired certificate (valid from two hours ago to one hour ago) from the federation CA.
  TlsFiles IssueExpired(const std::string& name);

 private:
  std::string dir_;
  std::set<std::string> authorities_;
  std::set<std::string> institutions_;
};

struct DaemonOptions {
  unsigned streams = 4;
  std::string chunk_size = "4MiB";
  std::string buffer_pool = "64MiB";
  unsigned retry_attempts = 30;
  unsigned retry_max_backoff_s = 1;  // fast retries in tests
  std::string log_level = "info";
  // [log] file (empty: the daemon logs to stderr, which the harness collects in log_path()).
  std::string log_file;
  // [federation] manifest: this file instead of the federation's (e.g. a copy of an older serial).
  std::string manifest_file;
  // [storage] keep_finished_s (unset: the daemon's default).
  std::optional<unsigned> keep_finished_s;
  // [network] idle_timeout_s (unset: the daemon's default).
  std::optional<unsigned> idle_timeout_s;
  // [api] socket_mode: "0666" lets another local user in (tests of what users see of each other).
  std::string socket_mode = "0600";
  // [api] listen on a reserved loopback port (the HTTPS API, see DaemonProcess::api_url) and
  // [api] operators.
  bool https_api = false;
  std::vector<std::string> api_operators;
  // Appended verbatim at the end, e.g. "[fault_injection]\nsend_delay_us = 50000\n".
  std::string extra_toml;
  // Its institution in the manifest (default "inst-<name>").
  std::string institution;
  // Listed in the manifest (false: a certificate from the federation CA but not homologated).
  bool enroll = true;
  // The daemon mints tokens for the test user from its institution's issuer ([tokens], [[users]]).
  bool mint_tokens = true;
  bool require_token = true;
  // [federation] refresh_s (fast in tests).
  unsigned refresh_s = 1;
  // Follow the control-plane service at this URL (https://127.0.0.1:port) instead of reading the
  // manifest file; service_name is the CN of its certificate; report_s the accounting interval.
  std::string manifest_url;
  std::string service_name = "fedd";
  unsigned report_s = 60;
  // Certificates to present; default: IssueEndpoint(name) from the federation CA.
  std::optional<TlsFiles> tls;
  // The address the manifest lists for it (default: its own address()), e.g. a relay in front of it.
  std::string manifest_address;
  // Run it in this network namespace (a name under /run/netns, as `ip netns add` makes), listening
  // on `ip` there instead of 127.0.0.1. The harness still reaches it through its unix socket.
  std::string netns;
  std::string ip = "127.0.0.1";
  // [network] transports. Empty: $PORO_TEST_TRANSPORT first, then tcp, when that variable is set
  // (CI runs suites once per transport), else the daemon's default. ucx runs with UCX_TLS=tcp.
  std::vector<std::string> transports;
  std::string ucx_tls = "tcp";                  // [network] ucx_tls, written with the transports
  std::string fabric_provider = "tcp;ofi_rxm";  // [network] fabric_provider, likewise
};

// The transport $PORO_TEST_TRANSPORT names ("" if unset): the one the suites run over this time.
std::string TestTransport();

class DaemonProcess {
 public:
  // Lays out dir()/<name>/{export,state}, picks a free 127.0.0.1 port; does not start anything.
  DaemonProcess(TestFederation& fed, std::string name, DaemonOptions opts = {});
  // Kills the daemon (SIGKILL) if it is still running. If the current test case has failed, the
  // tail of the daemon's log is reported with MESSAGE.
  ~DaemonProcess();
  DaemonProcess(const DaemonProcess&) = delete;
  DaemonProcess& operator=(const DaemonProcess&) = delete;

  const std::string& name() const { return name_; }
  const std::string& dir() const { return dir_; }
  const std::string& export_root() const { return export_; }
  const std::string& state_dir() const { return state_; }
  const std::string& socket() const { return socket_; }
  const std::string& log_path() const { return log_; }
  // Its configuration file (written by Start()).
  const std::string& config_path() const { return config_; }
  uint16_t port() const { return port_; }
  std::string address() const { return opts_.ip + ":" + std::to_string(port_); }
  // https://127.0.0.1:PORT of its HTTPS API (DaemonOptions::https_api), and the CA that issued its
  // certificate.
  std::string api_url() const { return "https://" + opts_.ip + ":" + std::to_string(api_port_); }
  const std::string& ca_file() const { return tls_.ca; }
  // Absolute path of `rel` inside the export root ("" -> the root).
  std::string Path(const std::string& rel) const;
  DaemonOptions& options() { return opts_; }

  const std::string& institution() const { return opts_.institution; }
  // The transfer's record in the daemon's queue (state_dir/queue.db), read with SQLite; null if
  // there is none.
  nlohmann::json StoredRecord(const std::string& id) const;
  // The daemon's audit log records (event filter optional).
  std::vector<nlohmann::json> AuditRecords(const std::string& event = "") const;

  // Writes the config and fork/execs pororocad; returns true once GET /v1/healthz answers (bounded
  // by `timeout`). On failure reports the log and returns false (callers REQUIRE it).
  [[nodiscard]] bool Start(std::chrono::milliseconds timeout = 20s);
  // SIGKILL and reap.
  void Kill9();
  // SIGTERM and wait up to `timeout`; SIGKILL after that. Returns true on a clean exit 0.
  bool Stop(std::chrono::milliseconds timeout = 15s);
  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }

  // The daemon's log (stdout and stderr of every run, appended); LogTail: the last `lines` lines.
  // No assertions (usable in failure messages).
  std::string Log() const;
  std::string LogTail(size_t lines = 80) const;

  // Local API calls over the unix socket. Fail the test (CHECK) and return a null json on transport
  // errors; HTTP errors are returned as the parsed body with "http_status" added.
  nlohmann::json Get(const std::string& target) const;
  nlohmann::json Post(const std::string& target, const std::string& body) const;
  nlohmann::json Transfer(const std::string& id) const { return Get("/v1/transfers/" + id); }
  // Polls the transfer (every 50 ms) until its state is one of `states`; returns the last record.
  // On timeout returns the last record seen (the caller's CHECK on "state" then fails with it).
  nlohmann::json WaitForState(const std::string& id, const std::set<std::string>& states,
                              std::chrono::milliseconds timeout = 120s) const;
  nlohmann::json WaitForTerminal(const std::string& id, std::chrono::milliseconds timeout = 120s) const {
    return WaitForState(id, {"succeeded", "partial", "failed", "cancelled"}, timeout);
  }

 private:
  std::string WriteConfig() const;

  TestFederation& fed_;
  std::string name_;
  DaemonOptions opts_;
  TlsFiles tls_;
  std::string dir_, export_, state_, socket_, log_, config_;
  uint16_t port_ = 0;
  int port_lock_fd_ = -1;  // flock reserving port_ among test processes
  uint16_t api_port_ = 0;  // https_api
  int api_port_lock_fd_ = -1;
  pid_t pid_ = -1;
};

// Two daemons "a" and "b" of institutions inst-a and inst-b, both started (REQUIREd).
struct DaemonPair {
  explicit DaemonPair(TestFederation& fed, DaemonOptions a_opts = {}, DaemonOptions b_opts = {});
  std::unique_ptr<DaemonProcess> a, b;
};

struct CliResult {
  int exit_code = -1;  // -1: killed (timeout) or not run
  std::string out, err;
  std::string output() const { return out + err; }
  // For INFO(): the command's exit code and both streams.
  std::string Describe() const;
  // stdout parsed as JSON (for --json); a discarded value if it is not JSON.
  nlohmann::json Json() const;
};

// Runs PORO_CLI_BIN with `args`, PORO_SOCKET=socket, stdin /dev/null; kills it and fails the test
// after `timeout`.
CliResult RunCli(const std::vector<std::string>& args, const std::string& socket,
                 std::chrono::milliseconds timeout = 120s);
// Runs `binary` with `args` as RunCli does; as user `as_uid` (and that group, no others) if >= 0.
CliResult RunProgram(const std::string& binary, const std::vector<std::string>& args,
                     const std::string& socket, std::chrono::milliseconds timeout, int as_uid = -1);
// pororocad with `args` (it must exit by itself within `timeout`).
CliResult RunDaemon(const std::vector<std::string>& args, std::chrono::milliseconds timeout = 60s);
// A bearer token from `institution`'s issuer (pororoca token issue) for `subject`, audience
// `audience`, with `scopes`.
std::string IssueTestToken(TestFederation& fed, const std::string& institution, const std::string& subject,
                           const std::string& audience, const std::vector<std::string>& scopes);
// pororocad --config <d's configuration> --check-config.
CliResult CheckConfig(const DaemonProcess& d, std::chrono::milliseconds timeout = 60s);
// RunCli with the daemon's socket.
CliResult Cli(const DaemonProcess& d, const std::vector<std::string>& args,
              std::chrono::milliseconds timeout = 120s);

// A free 127.0.0.1 port in 10000-19999, reserved among test processes (an flock) while *lock_fd
// stays open: for a daemon, or another server a test starts (close *lock_fd when done).
uint16_t ReservePort(int* lock_fd);

// Deterministic pseudo-random bytes (splitmix64 from `seed`).
std::string RandomBytes(size_t n, uint64_t seed);
// Creates (truncating) a file of `size` pseudo-random bytes, then chmods it to `mode`.
void WriteRandomFile(const std::string& path, uint64_t size, uint64_t seed, mode_t mode = 0644);
void WriteFile(const std::string& path, const std::string& data, mode_t mode = 0644);
std::string ReadFile(const std::string& path);
void MakeDir(const std::string& path, mode_t mode = 0755);
// Sets the mtime (not following a symlink) to sec.nsec.
void SetMtime(const std::string& path, int64_t sec, long nsec);
// Writes `data` at `offset` without touching anything else (for sparse files).
void WriteAt(const std::string& path, uint64_t offset, const std::string& data);

// The helpers below assert nothing, so they may be used in INFO()/CHECK_MESSAGE() messages (which
// doctest evaluates while holding its reporter lock: an assertion in there deadlocks).
bool Exists(const std::string& path);              // lstat succeeds
uint64_t FileSize(const std::string& path);        // UINT64_MAX if missing
uint64_t AllocatedBytes(const std::string& path);  // st_blocks * 512; UINT64_MAX if missing
bool SameContent(const std::string& a, const std::string& b);
// Names in `dir` (recursively, relative paths) starting with ".poro-".
std::vector<std::string> Partials(const std::string& dir);

// Compares two trees (or two files): entry set, types, sizes, content, modes, mtimes (ns; also of
// directories and symlinks) and symlink targets. Returns one line per difference; empty if equal.
std::vector<std::string> CompareTrees(const std::string& a, const std::string& b);
// CompareTrees joined into one string, for CHECK messages.
std::string DescribeDiffs(const std::vector<std::string>& diffs);

// Total size of the hidden journals (.poro-*.jnl) under `dir`, recursively.
uint64_t JournalBytes(const std::string& dir);

// Removes a path recursively, ignoring errors.
void RemoveAll(const std::string& path);

// Polls `pred` every `poll` until it is true (returns true) or `timeout` passes (returns false).
bool WaitUntil(const std::function<bool()>& pred, std::chrono::milliseconds timeout,
               std::chrono::milliseconds poll = 20ms);
// `s` without leading and trailing white space.
std::string Trim(const std::string& s);
// True if `haystack` contains `needle`, ignoring ASCII case.
bool ContainsNoCase(const std::string& haystack, const std::string& needle);

}  // namespace pororoca::test
