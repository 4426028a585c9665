#include "support/daemon_harness.h"

#include <dirent.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "api/http.h"
#include "audit/audit_log.h"
#include "federation/authority.h"

#ifndef PORO_DAEMON_BIN
#error "PORO_DAEMON_BIN must be defined (path of the pororocad binary)"
#endif
#ifndef PORO_CLI_BIN
#error "PORO_CLI_BIN must be defined (path of the pororoca binary)"
#endif

extern char** environ;

namespace pororoca::test {
namespace {

bool g_test_failed = false;

struct FailureListener : public doctest::IReporter {
  explicit FailureListener(const doctest::ContextOptions&) {}
  void report_query(const doctest::QueryData&) override {}
  void test_run_start() override {}
  void test_run_end(const doctest::TestRunStats&) override {}
  void test_case_start(const doctest::TestCaseData&) override { g_test_failed = false; }
  void test_case_reenter(const doctest::TestCaseData&) override { g_test_failed = false; }
  void test_case_end(const doctest::CurrentTestCaseStats&) override {}
  void test_case_exception(const doctest::TestCaseException&) override { g_test_failed = true; }
  void subcase_start(const doctest::SubcaseSignature&) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData& ad) override {
    if (ad.m_failed) g_test_failed = true;
  }
  void log_message(const doctest::MessageData&) override {}
  void test_case_skipped(const doctest::TestCaseData&) override {}
};

}  // namespace
}  // namespace pororoca::test

REGISTER_LISTENER("poro_failure_tracker", 1, pororoca::test::FailureListener);

namespace pororoca::test {
namespace {

std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }

// Whether 127.0.0.1:port can be bound now.
bool CanBind(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE_MESSAGE(fd >= 0, Errno("socket"));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sa.sin_port = htons(port);
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
  ::close(fd);
  return ok;
}

}  // namespace

// A loopback port for a test daemon, kept for the daemon object's life (it may be restarted on it).
// Drawn from 10000-19999, below the kernel's ephemeral range: every outgoing connection and every
// data listener (port 0) of the daemons running in parallel tests takes its port from that range, so
// a port chosen there can be gone by the time the daemon binds it (seen in CI). Test processes
// running at once reserve a port with an flock on /tmp/poro-test-ports/PORT (released when the
// process dies, so a crashed test leaves nothing held). Returns the port; *lock_fd holds the lock.
uint16_t ReservePort(int* lock_fd) {
  static const std::string dir = "/tmp/poro-test-ports";
  ::mkdir(dir.c_str(), 01777);
  std::random_device rd;
  std::uniform_int_distribution<int> pick(10000, 19999);
  for (int attempt = 0; attempt < 500; ++attempt) {
    auto port = static_cast<uint16_t>(pick(rd));
    std::string path = dir + "/" + std::to_string(port);
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    REQUIRE_MESSAGE(fd >= 0, Errno("open " + path));
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      ::close(fd);
      continue;
    }
    if (!CanBind(port)) {
      ::close(fd);
      continue;
    }
    *lock_fd = fd;
    return port;
  }
  FAIL("no free loopback port in 10000-19999 after 500 tries");
  return 0;
}

namespace {

// Everything in `environ` except `drop`, plus `add` ("NAME=value").
std::vector<std::string> Environment(const std::string& drop, const std::string& add) {
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string s(*e);
    if (s.compare(0, drop.size() + 1, drop + "=") == 0) continue;
    env.push_back(std::move(s));
  }
  if (!add.empty()) env.push_back(add);
  return env;
}

std::vector<char*> CStrings(std::vector<std::string>& v) {
  std::vector<char*> out;
  for (auto& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// In the child after fork(): only async-signal-safe calls.
void CloseFrom(int lowfd) { ::syscall(SYS_close_range, static_cast<unsigned>(lowfd), ~0u, 0u); }

}  // namespace

std::string TestTransport() {
  const char* t = std::getenv("PORO_TEST_TRANSPORT");
  return t != nullptr ? t : "";
}

namespace {

std::string TomlString(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string TransportsToml(std::vector<std::string> list, const DaemonOptions& o) {
  if (list.empty() && !TestTransport().empty()) {
    list.push_back(TestTransport());
    if (TestTransport() != "tcp") list.push_back("tcp");
  }
  if (list.empty()) return "";
  std::string out = "transports = [";
  for (size_t i = 0; i < list.size(); ++i) out += (i ? ", \"" : "\"") + list[i] + "\"";
  return out + "]\nucx_tls = " + TomlString(o.ucx_tls) +
         "\nfabric_provider = " + TomlString(o.fabric_provider) + "\n";
}

bool WaitPidBounded(pid_t pid, std::chrono::milliseconds timeout, int* status) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    pid_t r = ::waitpid(pid, status, WNOHANG);
    if (r == pid) return true;
    if (r < 0 && errno != EINTR) return true;  // already reaped
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(20ms);
  }
}

}  // namespace

TestFederation::TestFederation() {
  char tmpl[] = "/tmp/poro-int-XXXXXX";
  REQUIRE_MESSAGE(::mkdtemp(tmpl) != nullptr, Errno("mkdtemp"));
  dir_ = tmpl;
  ::chmod(dir_.c_str(), 0755);
  Status s = federation::InitAuthority(ca_dir(), "test-federation", 2);
  REQUIRE_MESSAGE(s.ok(), s.ToString());
  REQUIRE(::mkdir((dir_ + "/certs").c_str(), 0700) == 0);
  SetRules(nlohmann::json::array({{{"id", "test-allow-all"}, {"effect", "allow"}}}));
}

void TestFederation::Enroll(const std::string& name, const std::string& institution,
                            const std::string& address, const std::string& cert) {
  if (!institutions_.count(institution)) {
    Status s = federation::AddInstitution(ca_dir(), institution, "Institution " + institution);
    REQUIRE_MESSAGE(s.ok(), s.ToString());
    auto key = federation::AddIssuer(ca_dir(), IssuerId(institution), institution, std::nullopt);
    REQUIRE_MESSAGE(key.has_value(), key.error().ToString());
    institutions_.insert(institution);
  }
  federation::EndpointRequest req;
  req.name = name;
  req.institution = institution;
  req.address = address;
  req.existing_cert = cert;
  auto r = federation::AddEndpoint(ca_dir(), req);
  REQUIRE_MESSAGE(r.has_value(), r.error().ToString());
}

std::string TestFederation::IssuerKey(const std::string& institution) const {
  return federation::IssuerKeyFile(ca_dir(), IssuerId(institution));
}

void TestFederation::SetRules(const nlohmann::json& rules) {
  Status s = federation::SetRules(ca_dir(), rules);
  REQUIRE_MESSAGE(s.ok(), s.ToString());
}

void TestFederation::SetStatus(const std::string& name, const std::string& status) {
  auto st = federation::ParseEndpointStatus(status);
  REQUIRE(st.has_value());
  Status s = federation::SetEndpointStatus(ca_dir(), name, *st);
  REQUIRE_MESSAGE(s.ok(), s.ToString());
}

uint64_t TestFederation::Publish() {
  auto m = federation::Sign(ca_dir(), manifest_path());
  REQUIRE_MESSAGE(m.has_value(), m.error().ToString());
  return (*m)->serial();
}

TestFederation::~TestFederation() {
  const char* keep = std::getenv("PORO_KEEP_TEST_DIR");
  if (keep != nullptr && *keep != '\0' && std::string(keep) != "0") {
    MESSAGE("kept test directory " << dir_);
    return;
  }
  RemoveAll(dir_);
}

TlsFiles TestFederation::IssueEndpoint(const std::string& name, const pki::IssueOptions& opts,
                                       const std::string& file_tag) {
  std::string base = dir_ + "/certs/" + name + (file_tag.empty() ? "" : "." + file_tag);
  TlsFiles f{ca_cert(), base + ".crt", base + ".key"};
  Status s = pki::IssueEndpoint(ca_dir(), name, f.key, f.cert, 2, opts);
  REQUIRE_MESSAGE(s.ok(), s.ToString());
  return f;
}

TlsFiles TestFederation::IssueFromOtherAuthority(const std::string& authority, const std::string& name) {
  std::string adir = dir_ + "/other-" + authority;
  if (!authorities_.count(authority)) {
    Status s = pki::CreateAuthority(adir, authority, 2);
    REQUIRE_MESSAGE(s.ok(), s.ToString());
    authorities_.insert(authority);
  }
  std::string base = dir_ + "/certs/" + name + ".from-" + authority;
  TlsFiles f{ca_cert(), base + ".crt", base + ".key"};
  Status s = pki::IssueEndpoint(adir, name, f.key, f.cert, 2);
  REQUIRE_MESSAGE(s.ok(), s.ToString());
  return f;
}

TlsFiles TestFederation::IssueExpired(const std::string& name) {
  pki::IssueOptions o;
  o.not_before_offset_s = -7200;
  o.not_after_offset_s = -3600;
  return IssueEndpoint(name, o, "expired");
}

DaemonProcess::DaemonProcess(TestFederation& fed, std::string name, DaemonOptions opts)
    : fed_(fed), name_(std::move(name)), opts_(std::move(opts)) {
  dir_ = fed_.dir() + "/" + name_;
  export_ = dir_ + "/export";
  state_ = dir_ + "/state";
  socket_ = dir_ + "/api.sock";
  log_ = dir_ + "/daemon.log";
  config_ = dir_ + "/pororocad.toml";
  REQUIRE_MESSAGE(::mkdir(dir_.c_str(), 0755) == 0, Errno("mkdir " + dir_));
  REQUIRE_MESSAGE(::mkdir(export_.c_str(), 0755) == 0, Errno("mkdir " + export_));
  tls_ = opts_.tls ? *opts_.tls : fed_.IssueEndpoint(name_);
  port_ = ReservePort(&port_lock_fd_);
  if (opts_.https_api) api_port_ = ReservePort(&api_port_lock_fd_);
  if (opts_.institution.empty()) opts_.institution = "inst-" + name_;
  if (opts_.enroll) {
    fed_.Enroll(name_, opts_.institution, opts_.manifest_address.empty() ? address() : opts_.manifest_address,
                tls_.cert);
  }
}

nlohmann::json DaemonProcess::StoredRecord(const std::string& id) const {
  // Read with SQLite itself, not through the daemon's code: what a restarted daemon will find.
  sqlite3* db = nullptr;
  nlohmann::json out;
  const std::string path = state_ + "/queue.db";
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt* q = nullptr;
    if (sqlite3_prepare_v2(db, "SELECT record FROM transfers WHERE id = ?1", -1, &q, nullptr) == SQLITE_OK) {
      sqlite3_bind_text(q, 1, id.c_str(), -1, SQLITE_TRANSIENT);
      if (sqlite3_step(q) == SQLITE_ROW) {
        out = nlohmann::json::parse(reinterpret_cast<const char*>(sqlite3_column_text(q, 0)), nullptr, false);
      }
    }
    sqlite3_finalize(q);
  }
  sqlite3_close_v2(db);
  return out;
}

std::vector<nlohmann::json> DaemonProcess::AuditRecords(const std::string& event) const {
  auto all = audit::AuditLog::ReadAll(state_ + "/audit.log");
  std::vector<nlohmann::json> out;
  if (!all.has_value()) return out;
  for (auto& r : *all) {
    if (event.empty() || r.value("event", std::string()) == event) out.push_back(std::move(r));
  }
  return out;
}

DaemonProcess::~DaemonProcess() {
  if (pid_ > 0) Kill9();
  if (!TestTransport().empty() && opts_.transports.empty()) {
    // The suite runs over $PORO_TEST_TRANSPORT: every session this daemon ran must have used it
    // (the engine's log line names the transport), not fallen back.
    std::istringstream log(Log());
    for (std::string line; std::getline(log, line);) {
      if (line.find(" streams") == std::string::npos || line.find(", protection ") == std::string::npos)
        continue;
      CHECK_MESSAGE(line.find(" " + TestTransport() + " streams") != std::string::npos,
                    "daemon " << name_ << " ran a session on another transport: " << line);
    }
  }
  if (port_lock_fd_ >= 0) ::close(port_lock_fd_);
  if (api_port_lock_fd_ >= 0) ::close(api_port_lock_fd_);
  if (g_test_failed) {
    MESSAGE("---- log of daemon " << name_ << " (" << log_ << "), last lines ----\n" << LogTail());
  }
}

std::string DaemonProcess::Path(const std::string& rel) const {
  if (rel.empty()) return export_;
  return export_ + (rel.front() == '/' ? "" : "/") + rel;
}

std::string DaemonProcess::WriteConfig() const {
  std::ostringstream t;
  t << "# written by tests/support/daemon_harness.cc\n"
    << "[endpoint]\nname = " << TomlString(name_) << "\n\n"
    << "[network]\nlisten = " << TomlString(address()) << "\n"
    << TransportsToml(opts_.transports, opts_)
    << (opts_.idle_timeout_s ? "idle_timeout_s = " + std::to_string(*opts_.idle_timeout_s) + "\n" : "")
    << "\n"
    << "[api]\nsocket = " << TomlString(socket_) << "\nsocket_mode = \"" << opts_.socket_mode << "\"\n"
    << (opts_.https_api ? "listen = " + TomlString(opts_.ip + ":" + std::to_string(api_port_)) + "\n" : "")
    << (opts_.api_operators.empty() ? "" : "operators = " + nlohmann::json(opts_.api_operators).dump() + "\n")
    << "\n"
    << "[storage]\nexport_root = " << TomlString(export_) << "\nstate_dir = " << TomlString(state_) << "\n"
    << (opts_.keep_finished_s ? "keep_finished_s = " + std::to_string(*opts_.keep_finished_s) + "\n" : "")
    << "\n"
    << "[tls]\nca = " << TomlString(tls_.ca) << "\ncert = " << TomlString(tls_.cert)
    << "\nkey = " << TomlString(tls_.key) << "\n\n"
    << "[transfer]\nstreams = " << opts_.streams << "\nchunk_size = " << TomlString(opts_.chunk_size)
    << "\nbuffer_pool = " << TomlString(opts_.buffer_pool) << "\nretry_attempts = " << opts_.retry_attempts
    << "\nretry_max_backoff_s = " << opts_.retry_max_backoff_s << "\n\n"
    << "[log]\nlevel = " << TomlString(opts_.log_level) << "\nfile = " << TomlString(opts_.log_file) << "\n\n"
    << "[federation]\n"
    << (opts_.manifest_url.empty()
            ? "manifest = " +
                  TomlString(opts_.manifest_file.empty() ? fed_.manifest_path() : opts_.manifest_file)
            : "url = " + TomlString(opts_.manifest_url) +
                  "\nservice_name = " + TomlString(opts_.service_name))
    << "\nreport_s = " << opts_.report_s << "\nauthority_key = " << TomlString(fed_.authority_pub())
    << "\nrefresh_s = " << opts_.refresh_s << "\nrequire_token = " << (opts_.require_token ? "true" : "false")
    << "\n\n";
  if (opts_.mint_tokens && opts_.enroll) {
    t << "[tokens]\nissuer = " << TomlString(fed_.IssuerId(opts_.institution))
      << "\nkey = " << TomlString(fed_.IssuerKey(opts_.institution)) << "\n\n"
      << "[[users]]\nuid = " << ::getuid() << "\nidentity = " << TomlString("tester@" + opts_.institution)
      << "\n\n";
  }
  t << opts_.extra_toml << "\n";
  return t.str();
}

bool DaemonProcess::Start(std::chrono::milliseconds timeout) {
  REQUIRE_MESSAGE(pid_ <= 0, "daemon " << name_ << " is already running");
  fed_.Publish();
  WriteFile(config_, WriteConfig(), 0600);
  std::vector<std::string> argv_s{PORO_DAEMON_BIN, "--config", config_};
  std::vector<char*> argv = CStrings(argv_s);
  std::vector<std::string> env_s = Environment("PORO_SOCKET", "");
  std::vector<char*> envp = CStrings(env_s);
  int logfd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  REQUIRE_MESSAGE(logfd >= 0, Errno("open " + log_));
  std::string banner = "==== test harness: starting pororocad " + name_ + " on " + address() + " ====\n";
  (void)!::write(logfd, banner.data(), banner.size());
  int nullfd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  int nsfd = -1;
  if (!opts_.netns.empty()) {
    nsfd = ::open(("/run/netns/" + opts_.netns).c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE_MESSAGE(nsfd >= 0, Errno("open network namespace /run/netns/" + opts_.netns));
  }
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  REQUIRE_MESSAGE(pid >= 0, Errno("fork"));
  if (pid == 0) {
    // The daemon dies with the test process, even if the test binary is killed by a timeout.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    if (nsfd >= 0 && ::setns(nsfd, CLONE_NEWNET) != 0) ::_exit(126);
    ::setpgid(0, 0);
    ::dup2(nullfd, 0);
    ::dup2(logfd, 1);
    ::dup2(logfd, 2);
    CloseFrom(3);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execve(argv[0], argv.data(), envp.data());
    ::_exit(127);
  }
  ::close(logfd);
  ::close(nullfd);
  if (nsfd >= 0) ::close(nsfd);
  pid_ = pid;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string last_error;
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      pid_ = -1;
      std::string how = WIFEXITED(status) ? "exited with status " + std::to_string(WEXITSTATUS(status))
                                          : "died of signal " + std::to_string(WTERMSIG(status));
      FAIL_CHECK("pororocad " << name_ << " " << how << " during start-up; log:\n" << LogTail());
      return false;
    }
    auto c = api::HttpClient::Connect(socket_);
    if (c.has_value()) {
      auto resp = (*c)->Request("GET", "/v1/healthz", "", 2s);
      if (resp.has_value() && resp->status == 200) {
        auto j = nlohmann::json::parse(resp->body, nullptr, false);
        if (!j.is_discarded() && j.value("endpoint", std::string()) == name_) return true;
        last_error = "unexpected healthz answer: " + resp->body;
      } else {
        last_error =
            resp.has_value() ? "healthz status " + std::to_string(resp->status) : resp.error().ToString();
      }
    } else {
      last_error = c.error().ToString();
    }
    std::this_thread::sleep_for(25ms);
  }
  FAIL_CHECK("pororocad " << name_ << " did not answer /v1/healthz within " << timeout.count() << " ms ("
                          << last_error << "); log:\n"
                          << LogTail());
  Kill9();
  return false;
}

void DaemonProcess::Kill9() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  if (!WaitPidBounded(pid_, 10s, &status)) FAIL_CHECK("pororocad " << name_ << " did not die after SIGKILL");
  pid_ = -1;
}

bool DaemonProcess::Stop(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return true;
  ::kill(pid_, SIGTERM);
  int status = 0;
  if (!WaitPidBounded(pid_, timeout, &status)) {
    MESSAGE("pororocad " << name_ << " did not stop within " << timeout.count()
                         << " ms of SIGTERM; killing it");
    Kill9();
    return false;
  }
  pid_ = -1;
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

std::string DaemonProcess::Log() const {
  std::ifstream in(log_, std::ios::binary);  // no assertions: called from failure messages
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string DaemonProcess::LogTail(size_t lines) const {
  std::string log = Log();
  if (log.empty()) return log;
  size_t pos = log.size() - 1;  // the final newline does not start a line
  for (size_t n = 0; pos > 0;) {
    pos = log.rfind('\n', pos - 1);
    if (pos == std::string::npos) return log;
    if (++n == lines) return log.substr(pos + 1);
  }
  return log;
}

namespace {

nlohmann::json Call(const std::string& socket, const std::string& method, const std::string& target,
                    const std::string& body) {
  auto c = api::HttpClient::Connect(socket);
  if (!c.has_value()) {
    FAIL_CHECK("API " << method << " " << target << ": " << c.error().ToString());
    return nlohmann::json();
  }
  auto r = (*c)->Request(method, target, body, 10s);
  if (!r.has_value()) {
    FAIL_CHECK("API " << method << " " << target << ": " << r.error().ToString());
    return nlohmann::json();
  }
  auto j = nlohmann::json::parse(r->body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) j = nlohmann::json{{"body", r->body}};
  if (r->status >= 300) j["http_status"] = r->status;
  return j;
}

}  // namespace

nlohmann::json DaemonProcess::Get(const std::string& target) const {
  return Call(socket_, "GET", target, "");
}

nlohmann::json DaemonProcess::Post(const std::string& target, const std::string& body) const {
  return Call(socket_, "POST", target, body);
}

nlohmann::json DaemonProcess::WaitForState(const std::string& id, const std::set<std::string>& states,
                                           std::chrono::milliseconds timeout) const {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  nlohmann::json t;
  while (true) {
    t = Transfer(id);
    if (t.is_object() && states.count(t.value("state", std::string()))) return t;
    if (std::chrono::steady_clock::now() >= deadline) {
      std::string want;
      for (const auto& s : states) want += (want.empty() ? "" : "|") + s;
      MESSAGE("timed out after " << timeout.count() << " ms waiting for transfer " << id << " to be " << want
                                 << "; last record:\n"
                                 << t.dump(2));
      return t;
    }
    std::this_thread::sleep_for(50ms);
  }
}

DaemonPair::DaemonPair(TestFederation& fed, DaemonOptions a_opts, DaemonOptions b_opts) {
  a = std::make_unique<DaemonProcess>(fed, "a", std::move(a_opts));
  b = std::make_unique<DaemonProcess>(fed, "b", std::move(b_opts));
  REQUIRE(a->Start());
  REQUIRE(b->Start());
}

std::string CliResult::Describe() const {
  return "exit code " + std::to_string(exit_code) + "\n--- stdout ---\n" + out + "--- stderr ---\n" + err;
}

nlohmann::json CliResult::Json() const { return nlohmann::json::parse(out, nullptr, false); }

CliResult RunCli(const std::vector<std::string>& args, const std::string& socket,
                 std::chrono::milliseconds timeout) {
  return RunProgram(PORO_CLI_BIN, args, socket, timeout);
}

std::string IssueTestToken(TestFederation& fed, const std::string& institution, const std::string& subject,
                           const std::string& audience, const std::vector<std::string>& scopes) {
  std::vector<std::string> args{"token",      "issue",
                                "--key",      fed.IssuerKey(institution),
                                "--issuer",   fed.IssuerId(institution),
                                "--subject",  subject,
                                "--audience", audience};
  for (const auto& sc : scopes) {
    args.push_back("--scope");
    args.push_back(sc);
  }
  CliResult r = RunCli(args, "/nonexistent.sock", 30s);
  REQUIRE_MESSAGE(r.exit_code == 0, r.Describe());
  return Trim(r.out);
}

CliResult RunDaemon(const std::vector<std::string>& args, std::chrono::milliseconds timeout) {
  return RunProgram(PORO_DAEMON_BIN, args, "/nonexistent.sock", timeout);
}

CliResult CheckConfig(const DaemonProcess& d, std::chrono::milliseconds timeout) {
  return RunProgram(PORO_DAEMON_BIN, {"--config", d.config_path(), "--check-config"}, d.socket(), timeout);
}

CliResult RunProgram(const std::string& binary, const std::vector<std::string>& args,
                     const std::string& socket, std::chrono::milliseconds timeout, int as_uid) {
  CliResult res;
  std::vector<std::string> argv_s{binary};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv = CStrings(argv_s);
  std::vector<std::string> env_s = Environment("PORO_SOCKET", "PORO_SOCKET=" + socket);
  std::vector<char*> envp = CStrings(env_s);
  int out_p[2], err_p[2];
  REQUIRE(::pipe2(out_p, O_CLOEXEC) == 0);
  REQUIRE(::pipe2(err_p, O_CLOEXEC) == 0);
  int nullfd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  pid_t pid = ::fork();
  REQUIRE_MESSAGE(pid >= 0, Errno("fork"));
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    ::dup2(nullfd, 0);
    ::dup2(out_p[1], 1);
    ::dup2(err_p[1], 2);
    CloseFrom(3);
    if (as_uid >= 0) {
      const auto id = static_cast<uid_t>(as_uid);
      if (::setgroups(0, nullptr) != 0 || ::setgid(id) != 0 || ::setuid(id) != 0) ::_exit(126);
    }
    ::execve(argv[0], argv.data(), envp.data());
    ::_exit(127);
  }
  ::close(out_p[1]);
  ::close(err_p[1]);
  ::close(nullfd);
  auto deadline = std::chrono::steady_clock::now() + timeout;
  struct pollfd fds[2] = {{out_p[0], POLLIN, 0}, {err_p[0], POLLIN, 0}};
  std::string* bufs[2] = {&res.out, &res.err};
  int open_fds = 2;
  bool timed_out = false;
  char buf[65536];
  while (open_fds > 0) {
    auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    int rc = ::poll(fds, 2, static_cast<int>(std::min<int64_t>(left.count(), 1000)));
    if (rc < 0 && errno != EINTR) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        bufs[i]->append(buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  for (auto& f : fds) {
    if (f.fd >= 0) ::close(f.fd);
  }
  int status = 0;
  // Both pipes closed: the CLI has exited (or closed them); give it a moment to be reaped.
  auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  if (timed_out || !WaitPidBounded(pid, std::max<std::chrono::milliseconds>(left, 1000ms), &status)) {
    ::kill(pid, SIGKILL);
    WaitPidBounded(pid, 10s, &status);
    std::string cmd;
    for (const auto& a : args) cmd += " " + a;
    FAIL_CHECK("pororoca" << cmd << " did not finish within " << timeout.count()
                          << " ms; killed. Output so far:\n"
                          << res.out << res.err);
    res.exit_code = -1;
    return res;
  }
  res.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return res;
}

CliResult Cli(const DaemonProcess& d, const std::vector<std::string>& args,
              std::chrono::milliseconds timeout) {
  return RunCli(args, d.socket(), timeout);
}

namespace {

uint64_t SplitMix(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

void FillRandom(char* p, size_t n, uint64_t seed) {
  uint64_t s = seed;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v = SplitMix(s);
    std::memcpy(p + i, &v, 8);
  }
  if (i < n) {
    uint64_t v = SplitMix(s);
    std::memcpy(p + i, &v, n - i);
  }
}

void WriteAll(int fd, const char* p, size_t n, uint64_t offset, const std::string& path) {
  while (n > 0) {
    ssize_t w = ::pwrite(fd, p, n, static_cast<off_t>(offset));
    if (w < 0 && errno == EINTR) continue;
    REQUIRE_MESSAGE(w > 0, Errno("write " + path));
    p += w;
    n -= static_cast<size_t>(w);
    offset += static_cast<uint64_t>(w);
  }
}

}  // namespace

std::string RandomBytes(size_t n, uint64_t seed) {
  std::string s(n, '\0');
  FillRandom(s.data(), n, seed);
  return s;
}

void WriteRandomFile(const std::string& path, uint64_t size, uint64_t seed, mode_t mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  REQUIRE_MESSAGE(fd >= 0, Errno("create " + path));
  constexpr size_t kBlock = 1 << 20;
  std::string block(kBlock, '\0');
  for (uint64_t off = 0, n = 0; off < size; off += kBlock, ++n) {
    size_t len = static_cast<size_t>(std::min<uint64_t>(kBlock, size - off));
    FillRandom(block.data(), len, seed * 0x100000001b3ull + n);
    WriteAll(fd, block.data(), len, off, path);
  }
  ::close(fd);
  REQUIRE_MESSAGE(::chmod(path.c_str(), mode) == 0, Errno("chmod " + path));
}

void WriteFile(const std::string& path, const std::string& data, mode_t mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  REQUIRE_MESSAGE(fd >= 0, Errno("create " + path));
  WriteAll(fd, data.data(), data.size(), 0, path);
  ::close(fd);
  REQUIRE_MESSAGE(::chmod(path.c_str(), mode) == 0, Errno("chmod " + path));
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), "cannot read " << path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void MakeDir(const std::string& path, mode_t mode) {
  REQUIRE_MESSAGE(::mkdir(path.c_str(), 0700) == 0, Errno("mkdir " + path));
  REQUIRE_MESSAGE(::chmod(path.c_str(), mode) == 0, Errno("chmod " + path));
}

void SetMtime(const std::string& path, int64_t sec, long nsec) {
  struct timespec ts[2] = {{0, UTIME_OMIT}, {static_cast<time_t>(sec), nsec}};
  REQUIRE_MESSAGE(::utimensat(AT_FDCWD, path.c_str(), ts, AT_SYMLINK_NOFOLLOW) == 0,
                  Errno("utimensat " + path));
}

void WriteAt(const std::string& path, uint64_t offset, const std::string& data) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  REQUIRE_MESSAGE(fd >= 0, Errno("open " + path));
  WriteAll(fd, data.data(), data.size(), offset, path);
  ::close(fd);
}

bool Exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

uint64_t FileSize(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return UINT64_MAX;
  return static_cast<uint64_t>(st.st_size);
}

uint64_t AllocatedBytes(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return UINT64_MAX;
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

bool SameContent(const std::string& a, const std::string& b) {
  int fa = ::open(a.c_str(), O_RDONLY | O_CLOEXEC);
  int fb = ::open(b.c_str(), O_RDONLY | O_CLOEXEC);
  bool same = fa >= 0 && fb >= 0;
  constexpr size_t kBlock = 1 << 20;
  // Reused: a fresh 2 MiB per call (zeroed, then unmapped) cost seconds on trees of many files.
  static thread_local std::vector<char> ba(kBlock), bb(kBlock);
  while (same) {
    ssize_t na = ::read(fa, ba.data(), kBlock);
    size_t got_b = 0;
    while (na > 0 && got_b < static_cast<size_t>(na)) {
      ssize_t nb = ::read(fb, bb.data() + got_b, static_cast<size_t>(na) - got_b);
      if (nb <= 0) break;
      got_b += static_cast<size_t>(nb);
    }
    if (na < 0) {
      same = false;
    } else if (na == 0) {
      char c;
      same = ::read(fb, &c, 1) == 0;
      break;
    } else {
      same = got_b == static_cast<size_t>(na) && std::memcmp(ba.data(), bb.data(), got_b) == 0;
    }
  }
  if (fa >= 0) ::close(fa);
  if (fb >= 0) ::close(fb);
  return same;
}

namespace {

std::vector<std::string> SortedNames(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return names;
  while (struct dirent* de = ::readdir(d)) {
    std::string n = de->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

void CollectPartials(const std::string& dir, const std::string& rel, std::vector<std::string>* out) {
  for (const auto& n : SortedNames(dir)) {
    std::string p = dir + "/" + n;
    std::string r = rel.empty() ? n : rel + "/" + n;
    if (n.rfind(".poro-", 0) == 0) out->push_back(r);
    struct stat st {};
    if (::lstat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) CollectPartials(p, r, out);
  }
}

std::string Quoted(const std::string& s) {
  std::string o = "'";
  for (char c : s) {
    if (c == '\n')
      o += "\\n";
    else
      o += c;
  }
  return o + "'";
}

std::string TypeName(mode_t m) {
  if (S_ISREG(m)) return "file";
  if (S_ISDIR(m)) return "directory";
  if (S_ISLNK(m)) return "symlink";
  return "special";
}

int64_t MtimeNs(const struct stat& st) {
  return int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
}

void CompareEntry(const std::string& a, const std::string& b, const std::string& rel,
                  std::vector<std::string>* d) {
  struct stat sa {
  }, sb{};
  std::string what = rel.empty() ? std::string("(root)") : Quoted(rel);
  bool ha = ::lstat(a.c_str(), &sa) == 0, hb = ::lstat(b.c_str(), &sb) == 0;
  if (!ha || !hb) {
    d->push_back(what + ": " + (!ha ? "missing in " + a : "missing in " + b));
    return;
  }
  if ((sa.st_mode & S_IFMT) != (sb.st_mode & S_IFMT)) {
    d->push_back(what + ": type " + TypeName(sa.st_mode) + " vs " + TypeName(sb.st_mode));
    return;
  }
  if (!S_ISLNK(sa.st_mode) && (sa.st_mode & 07777) != (sb.st_mode & 07777)) {
    char buf[64];
    std::snprintf(buf, sizeof buf, ": mode %04o vs %04o", sa.st_mode & 07777, sb.st_mode & 07777);
    d->push_back(what + buf);
  }
  if (MtimeNs(sa) != MtimeNs(sb)) {
    d->push_back(what + ": mtime " + std::to_string(MtimeNs(sa)) + " vs " + std::to_string(MtimeNs(sb)) +
                 " ns");
  }
  if (S_ISREG(sa.st_mode)) {
    if (sa.st_size != sb.st_size) {
      d->push_back(what + ": size " + std::to_string(sa.st_size) + " vs " + std::to_string(sb.st_size));
    } else if (!SameContent(a, b)) {
      d->push_back(what + ": content differs");
    }
  } else if (S_ISLNK(sa.st_mode)) {
    char ta[4096], tb[4096];
    ssize_t na = ::readlink(a.c_str(), ta, sizeof ta), nb = ::readlink(b.c_str(), tb, sizeof tb);
    std::string la = na >= 0 ? std::string(ta, static_cast<size_t>(na)) : "?";
    std::string lb = nb >= 0 ? std::string(tb, static_cast<size_t>(nb)) : "?";
    if (la != lb) d->push_back(what + ": symlink target " + Quoted(la) + " vs " + Quoted(lb));
  } else if (S_ISDIR(sa.st_mode)) {
    auto na = SortedNames(a), nb = SortedNames(b);
    std::vector<std::string> all;
    std::set_union(na.begin(), na.end(), nb.begin(), nb.end(), std::back_inserter(all));
    for (const auto& n : all) {
      CompareEntry(a + "/" + n, b + "/" + n, rel.empty() ? n : rel + "/" + n, d);
    }
  }
}

}  // namespace

std::vector<std::string> Partials(const std::string& dir) {
  std::vector<std::string> out;
  CollectPartials(dir, "", &out);
  return out;
}

std::vector<std::string> CompareTrees(const std::string& a, const std::string& b) {
  std::vector<std::string> d;
  CompareEntry(a, b, "", &d);
  return d;
}

std::string DescribeDiffs(const std::vector<std::string>& diffs) {
  std::string s;
  for (const auto& x : diffs) s += "  " + x + "\n";
  return s.empty() ? "(identical)" : s;
}

uint64_t JournalBytes(const std::string& dir) {
  uint64_t total = 0;
  for (const auto& rel : Partials(dir)) {
    if (rel.size() < 4 || rel.compare(rel.size() - 4, 4, ".jnl") != 0) continue;
    struct stat st {};
    if (::lstat((dir + "/" + rel).c_str(), &st) == 0) total += static_cast<uint64_t>(st.st_size);
  }
  return total;
}

void RemoveAll(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
}

bool WaitUntil(const std::function<bool()>& pred, std::chrono::milliseconds timeout,
               std::chrono::milliseconds poll) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (pred()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(poll);
  }
}

std::string Trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return std::string();
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

bool ContainsNoCase(const std::string& haystack, const std::string& needle) {
  auto lower = [](std::string x) {
    for (auto& c : x) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return x;
  };
  return lower(haystack).find(lower(needle)) != std::string::npos;
}

}  // namespace pororoca::test
