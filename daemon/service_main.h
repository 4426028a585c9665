// The main() of a long-running pororoca service (pororocad, pororoca-fedd): command line
// (--config, --check-config, --log-level, --version, --help), logging, signals (SIGINT/SIGTERM end
// it; SIGPIPE ignored), create, start, wait, stop. Exit status: 0 after a clean stop or a valid
// --check-config; 2 for a usage error or an invalid configuration file; `create_failure_exit` when
// the service cannot be built from a valid file; 1 when it cannot start.
#pragma once

#include <functional>
#include <string>

#include "pororoca/status.h"

namespace pororoca::daemon {

// What the service's configuration says about logging, and how to build the service from it.
struct LoadedConfig {
  std::string source_file;
  std::string log_level;  // may be overridden by --log-level
  std::string log_file;
  // Called in this order on the main thread: create after logging and signals are set up (the
  // service keeps what it builds), start unless --check-config, stop after SIGINT/SIGTERM.
  std::function<Status()> create;
  // --check-config: validates without writing anything (no log file, no state) and returns what it
  // found; create() is not called then. Unset: --check-config runs create().
  std::function<Result<std::string>()> check;
  std::function<Status()> start;
  std::function<void()> stop;
  // SIGHUP, after [log] file was reopened: reopens the service's own files (the audit log). Unset:
  // nothing more to reopen.
  std::function<Status()> reopen;
};

struct ServiceMainOptions {
  std::string name;        // "pororocad"
  std::string check_help;  // what --check-config validates
  int create_failure_exit = 1;
  bool raise_fd_limit = false;
  // Reads and validates the configuration file (errors name the file and key).
  std::function<Result<LoadedConfig>(const std::string& path)> load;
};

int ServiceMain(int argc, char** argv, const ServiceMainOptions& options);

}  // namespace pororoca::daemon
