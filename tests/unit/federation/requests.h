// Shared by the federation unit tests.
#pragma once

#include <string>

#include "federation/authority.h"

namespace pororoca::federation {

inline EndpointRequest Req(const std::string& name, const std::string& inst, const std::string& addr) {
  EndpointRequest r;
  r.name = name;
  r.institution = inst;
  r.address = addr;
  return r;
}

}  // namespace pororoca::federation
