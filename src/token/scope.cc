#include <algorithm>

#include "base/path.h"
#include "token/printable.h"
#include "token/token.h"

namespace pororoca::token {
namespace {

// The canonical form of an absolute path (one trailing '/' dropped), or why it is not an acceptable
// one.
Result<std::string_view> Canonical(std::string_view path) {
  if (path.empty()) return Status::InvalidArgument("empty path");
  if (path.front() != '/') return Status::InvalidArgument("path '" + Printable(path) + "' is not absolute");
  if (path.find('\0') != std::string_view::npos) {
    return Status::InvalidArgument("path '" + Printable(path) + "' contains a NUL byte");
  }
  if (path.find("//") != std::string_view::npos) {
    return Status::InvalidArgument("path '" + Printable(path) + "' has an empty component");
  }
  if (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  size_t pos = 1;
  while (path.size() > 1 && pos <= path.size()) {
    const size_t slash = std::min(path.find('/', pos), path.size());
    std::string_view c = path.substr(pos, slash - pos);
    if (c == "." || c == "..") {
      return Status::InvalidArgument("path '" + Printable(path) + "' has a '.' or '..' component");
    }
    pos = slash + 1;
  }
  return path;
}

bool Grants(std::string_view scope_name, Action action) {
  if (scope_name == ActionScope(action)) return true;
  // WLCG profile: storage.modify includes storage.create.
  return action == Action::kCreate && scope_name == ActionScope(Action::kModify);
}

}  // namespace

std::string_view ActionScope(Action action) {
  switch (action) {
    case Action::kRead:
      return "storage.read";
    case Action::kCreate:
      return "storage.create";
    case Action::kModify:
      return "storage.modify";
  }
  return "storage.unknown";
}

Status CheckScope(const Claims& claims, Action action, std::string_view path) {
  PORO_ASSIGN_OR_RETURN(std::string_view want, Canonical(path));
  std::string listed;
  for (const std::string& scope : claims.scopes) {
    listed += (listed.empty() ? "" : " ") + scope;
    const size_t colon = scope.find(':');
    if (colon == std::string::npos || !Grants(std::string_view(scope).substr(0, colon), action)) continue;
    auto have = Canonical(std::string_view(scope).substr(colon + 1));
    if (have.ok() && PathIsUnder(want, *have)) return Status::OK();
  }
  return Status::PermissionDenied("token grants no " + std::string(ActionScope(action)) + " for " +
                                  Printable(path) +
                                  " (scopes: " + (listed.empty() ? "none" : Printable(listed, 200)) + ")");
}

}  // namespace pororoca::token
