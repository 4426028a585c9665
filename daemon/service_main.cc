#include "daemon/service_main.h"

#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>

#include <boost/program_options.hpp>
#include <cstdlib>
#include <iostream>

#include "base/file_util.h"
#include "base/log.h"
#include "pororoca/config.h"

namespace po = boost::program_options;

namespace pororoca::daemon {
namespace {

void RaiseFdLimit() {
  struct rlimit rl {};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
}

// glibc gives each thread that allocates an arena of its own, up to 8 per core, and keeps what
// each one frees. A daemon with a thread per connection, per attempt and per stream then grew by
// some 200 MiB under API load that it never used again (docs/performance.md, the queue under
// load); two arenas held it near 75 MiB. The data path allocates its buffers once (the pool), so it
// does not contend for them. $MALLOC_ARENA_MAX, when set, still decides.
void LimitMallocArenas() {
  if (std::getenv("MALLOC_ARENA_MAX") == nullptr) ::mallopt(M_ARENA_MAX, 2);
}

int Run(int argc, char** argv, const ServiceMainOptions& opt) {
  const std::string& name = opt.name;
  po::options_description desc("Usage: " + name + " --config FILE [--check-config]\nOptions");
  desc.add_options()("help,h", "show this help")("version", "print the version")(
      "config,c", po::value<std::string>(), "TOML configuration file")(
      "check-config", ("validate the configuration (" + opt.check_help + ") and exit").c_str())(
      "log-level", po::value<std::string>(), "override [log] level: debug, info, warning, error");
  po::variables_map vm;
  po::store(po::parse_command_line(argc, argv, desc), vm);
  po::notify(vm);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  if (vm.count("version")) {
    std::cout << name << " " << PORO_VERSION << "\n";
    return 0;
  }
  if (!vm.count("config")) {
    std::cerr << name << ": --config FILE is required\n" << desc << "\n";
    return 2;
  }
  auto cfg = opt.load(vm["config"].as<std::string>());
  if (!cfg.has_value()) {
    std::cerr << name << ": " << cfg.error().message() << "\n";
    return 2;
  }
  if (vm.count("log-level")) cfg->log_level = vm["log-level"].as<std::string>();
  log::Level lvl = log::Level::kInfo;
  if (!log::ParseLevel(cfg->log_level, &lvl)) {
    std::cerr << name << ": unknown log level " << cfg->log_level << "\n";
    return 2;
  }
  log::SetLevel(lvl);
  if (vm.count("check-config") && cfg->check) {
    Result<std::string> found = std::string();
    if (!cfg->log_file.empty()) {
      if (Status s = CheckCanWrite(cfg->log_file, "[log] file"); !s.ok()) found = s;
    }
    if (found.has_value()) found = cfg->check();
    if (!found.has_value()) {
      std::cerr << name << ": " << cfg->source_file << ": " << found.error().ToString() << "\n";
      return opt.create_failure_exit;
    }
    std::cout << "configuration " << cfg->source_file << " is valid: " << *found << "\n";
    return 0;
  }
  if (!cfg->log_file.empty() && !log::SetFile(cfg->log_file)) {
    std::cerr << name << ": cannot open log file " << cfg->log_file << "\n";
    return 2;
  }
  if (opt.raise_fd_limit) RaiseFdLimit();
  LimitMallocArenas();
  // Block the stop signals in every thread; the main thread waits for them below.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  if (Status s = cfg->create(); !s.ok()) {
    std::cerr << name << ": " << cfg->source_file << ": " << s.ToString() << "\n";
    return opt.create_failure_exit;
  }
  if (vm.count("check-config")) {
    std::cout << "configuration " << cfg->source_file << " is valid\n";
    return 0;
  }
  if (Status s = cfg->start(); !s.ok()) {
    std::cerr << name << ": " << s.ToString() << "\n";
    return 1;
  }
  int sig = 0;
  // SIGHUP: the log files were rotated (moved away); open them again under their names.
  while (sigwait(&set, &sig) == 0 && sig == SIGHUP) {
    bool ok = log::ReopenFile();
    Status s = cfg->reopen ? cfg->reopen() : Status::OK();
    if (ok && s.ok()) {
      PORO_LOG(INFO) << "SIGHUP: log files reopened";
    } else {
      PORO_LOG(ERROR) << "SIGHUP: " << (ok ? s.ToString() : "cannot reopen [log] file " + cfg->log_file);
    }
  }
  PORO_LOG(INFO) << "signal " << sig << ": shutting down";
  cfg->stop();
  return 0;
}

}  // namespace

int ServiceMain(int argc, char** argv, const ServiceMainOptions& options) {
  try {
    return Run(argc, argv, options);
  } catch (const po::error& e) {
    std::cerr << options.name << ": " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << options.name << ": " << e.what() << "\n";
    return 1;
  }
}

}  // namespace pororoca::daemon
