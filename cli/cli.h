// Shared by the CLI's source files: exit codes (docs/cli.md) and the commands that need no daemon.
#pragma once

#include <string>
#include <vector>

namespace pororoca::cli {

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;    // the transfer ran and failed (or some files failed)
constexpr int kExitUsage = 2;     // bad command line or request refused as invalid
constexpr int kExitNoDaemon = 3;  // the local daemon is not reachable
constexpr int kExitNotFound = 4;  // unknown transfer, endpoint or path
constexpr int kExitDenied = 5;    // permission or authentication refused
constexpr int kExitCancelled = 6;
constexpr int kExitTimeout = 7;  // `wait --timeout` ran out; the transfer goes on

// `pororoca federation ...`: the authority's tools (authority.cc).
int CmdFederation(const std::vector<std::string>& args);
// `pororoca token issue ...`: bearer tokens for test federations (authority.cc).
int CmdToken(const std::vector<std::string>& args);

// Where `pororoca dashboard` forwards: the daemon's socket, or a DTN's HTTPS API (api_url set).
struct Upstream {
  std::string socket;
  std::string api_url, ca, api_token, api_endpoint;
};
// `pororoca dashboard`: the dashboard on a loopback port for a browser (dashboard.cc).
int CmdDashboard(const Upstream& upstream, const std::vector<std::string>& args);

}  // namespace pororoca::cli
