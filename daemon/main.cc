// pororocad: the pororoca daemon. See docs/operations.md.
#include <memory>

#include "daemon/config.h"
#include "daemon/server.h"
#include "daemon/service_main.h"

using namespace pororoca;

int main(int argc, char** argv) {
  std::unique_ptr<daemon::Daemon> d;
  daemon::ServiceMainOptions o;
  o.name = "pororocad";
  o.check_help = "and its TLS files, manifest and state directory";
  o.create_failure_exit = 1;
  o.raise_fd_limit = true;
  o.load = [&d](const std::string& path) -> Result<daemon::LoadedConfig> {
    PORO_ASSIGN_OR_RETURN(daemon::Config cfg, daemon::LoadConfig(path));
    daemon::LoadedConfig lc;
    lc.source_file = cfg.source_file;
    lc.log_level = cfg.log_level;
    lc.log_file = cfg.log_file;
    lc.create = [&d, cfg]() -> Status {
      PORO_ASSIGN_OR_RETURN(d, daemon::Daemon::Create(cfg));
      return Status::OK();
    };
    lc.check = [cfg]() { return daemon::Daemon::Check(cfg); };
    lc.start = [&d] { return d->Start(); };
    lc.stop = [&d] { d->Stop(); };
    lc.reopen = [&d] { return d->ReopenLogs(); };
    return lc;
  };
  return daemon::ServiceMain(argc, argv, o);
}
