// pororocad: the pororoca daemon. See docs/operations.md.
#include <signal.h>
#include <sys/resource.h>

#include <boost/program_options.hpp>
#include <cstdio>
#include <iostream>

#include "base/log.h"
#include "daemon/config.h"
#include "daemon/server.h"
#include "pororoca/config.h"

namespace po = boost::program_options;
using namespace pororoca;

namespace {

void RaiseFdLimit() {
  struct rlimit rl {};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    po::options_description desc("Usage: pororocad --config FILE [--check-config]\nOptions");
    desc.add_options()("help,h", "show this help")("version", "print the version")(
        "config,c", po::value<std::string>(), "TOML configuration file")(
        "check-config", "validate the configuration (and TLS files) and exit")(
        "log-level", po::value<std::string>(), "override [log] level: debug, info, warning, error");
    po::variables_map vm;
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
    if (vm.count("help")) {
      std::cout << desc << "\n";
      return 0;
    }
    if (vm.count("version")) {
      std::cout << "pororocad " << PORO_VERSION << "\n";
      return 0;
    }
    if (!vm.count("config")) {
      std::cerr << "pororocad: --config FILE is required\n" << desc << "\n";
      return 2;
    }
    auto cfg = daemon::LoadConfig(vm["config"].as<std::string>());
    if (!cfg.has_value()) {
      std::cerr << "pororocad: " << cfg.error().message() << "\n";
      return 2;
    }
    if (vm.count("log-level")) cfg->log_level = vm["log-level"].as<std::string>();
    log::Level lvl = log::Level::kInfo;
    if (!log::ParseLevel(cfg->log_level, &lvl)) {
      std::cerr << "pororocad: unknown log level " << cfg->log_level << "\n";
      return 2;
    }
    log::SetLevel(lvl);
    if (!cfg->log_file.empty() && !log::SetFile(cfg->log_file)) {
      std::cerr << "pororocad: cannot open log file " << cfg->log_file << "\n";
      return 2;
    }
    RaiseFdLimit();
    // Block the stop signals in every thread; the main thread waits for them below.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    ::signal(SIGPIPE, SIG_IGN);
    auto d = daemon::Daemon::Create(*cfg);
    if (!d.has_value()) {
      std::cerr << "pororocad: " << cfg->source_file << ": " << d.error().ToString() << "\n";
      return 1;
    }
    if (vm.count("check-config")) {
      std::cout << "configuration " << cfg->source_file << " is valid\n";
      return 0;
    }
    if (Status s = (*d)->Start(); !s.ok()) {
      std::cerr << "pororocad: " << s.ToString() << "\n";
      return 1;
    }
    int sig = 0;
    sigwait(&set, &sig);
    PORO_LOG(INFO) << "signal " << sig << ": shutting down";
    (*d)->Stop();
    return 0;
  } catch (const po::error& e) {
    std::cerr << "pororocad: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "pororocad: " << e.what() << "\n";
    return 1;
  }
}
