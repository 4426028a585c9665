// pororoca-fedd: the federation's control-plane service. See docs/control-plane.md.
#include <memory>

#include "daemon/fedd/server.h"
#include "daemon/service_main.h"

using namespace pororoca;

int main(int argc, char** argv) {
  std::unique_ptr<fedd::Service> service;
  daemon::ServiceMainOptions o;
  o.name = "pororoca-fedd";
  o.check_help = "TLS files, manifest, accounting directory";
  o.create_failure_exit = 2;
  o.load = [&service](const std::string& path) -> Result<daemon::LoadedConfig> {
    PORO_ASSIGN_OR_RETURN(fedd::Config cfg, fedd::LoadConfig(path));
    daemon::LoadedConfig lc;
    lc.source_file = cfg.source_file;
    lc.log_level = cfg.log_level;
    lc.log_file = cfg.log_file;
    lc.create = [&service, cfg]() -> Status {
      PORO_ASSIGN_OR_RETURN(service, fedd::Service::Create(cfg));
      return Status::OK();
    };
    lc.start = [&service] { return service->Start(); };
    lc.stop = [&service] { service->Stop(); };
    return lc;
  };
  return daemon::ServiceMain(argc, argv, o);
}
