// pororoca-fedd: the federation's control-plane service. See docs/control-plane.md.
#include <signal.h>

#include <boost/program_options.hpp>
#include <iostream>

#include "base/log.h"
#include "daemon/fedd/server.h"
#include "pororoca/config.h"

namespace po = boost::program_options;
using namespace pororoca;

int main(int argc, char** argv) {
  try {
    po::options_description desc("Usage: pororoca-fedd --config FILE [--check-config]\nOptions");
    desc.add_options()("help,h", "show this help")("version", "print the version")(
        "config,c", po::value<std::string>(), "TOML configuration file")(
        "check-config", "validate the configuration (TLS files, manifest, accounting directory) and exit")(
        "log-level", po::value<std::string>(), "override [log] level: debug, info, warning, error");
    po::variables_map vm;
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
    if (vm.count("help")) {
      std::cout << desc << "\n";
      return 0;
    }
    if (vm.count("version")) {
      std::cout << "pororoca-fedd " << PORO_VERSION << "\n";
      return 0;
    }
    if (!vm.count("config")) {
      std::cerr << "pororoca-fedd: --config FILE is required\n" << desc << "\n";
      return 2;
    }
    auto cfg = fedd::LoadConfig(vm["config"].as<std::string>());
    if (!cfg.has_value()) {
      std::cerr << "pororoca-fedd: " << cfg.error().message() << "\n";
      return 2;
    }
    if (vm.count("log-level")) cfg->log_level = vm["log-level"].as<std::string>();
    log::Level lvl = log::Level::kInfo;
    if (!log::ParseLevel(cfg->log_level, &lvl)) {
      std::cerr << "pororoca-fedd: unknown log level " << cfg->log_level << "\n";
      return 2;
    }
    log::SetLevel(lvl);
    if (!cfg->log_file.empty() && !log::SetFile(cfg->log_file)) {
      std::cerr << "pororoca-fedd: cannot open log file " << cfg->log_file << "\n";
      return 2;
    }
    // Block the stop signals in every thread; the main thread waits for them below.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    ::signal(SIGPIPE, SIG_IGN);
    auto service = fedd::Service::Create(*cfg);
    if (!service.has_value()) {
      std::cerr << "pororoca-fedd: " << service.error().message() << "\n";
      return 2;
    }
    if (vm.count("check-config")) {
      std::cout << "configuration " << cfg->source_file << " is valid\n";
      return 0;
    }
    if (Status s = (*service)->Start(); !s.ok()) {
      std::cerr << "pororoca-fedd: " << s.ToString() << "\n";
      return 1;
    }
    int sig = 0;
    sigwait(&set, &sig);
    PORO_LOG(INFO) << "signal " << sig << ": shutting down";
    (*service)->Stop();
    return 0;
  } catch (const po::error& e) {
    std::cerr << "pororoca-fedd: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "pororoca-fedd: " << e.what() << "\n";
    return 1;
  }
}
