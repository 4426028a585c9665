// Non-virtual helpers of the Stream interface (include/pororoca/transport.h).
#include "pororoca/transport.h"

namespace pororoca::transport {

Status Stream::ReadFull(std::span<std::byte> buf, const TransportOptions& opts) {
  size_t got = 0;
  while (got < buf.size()) {
    PORO_ASSIGN_OR_RETURN(size_t n, ReadSome(buf.subspan(got), opts));
    if (n == 0) {
      Status s = Status::Unavailable("connection closed by peer " + peer_address());
      s.WithSide(Side::kNetwork);
      return s;
    }
    got += n;
  }
  return Status::OK();
}

}  // namespace pororoca::transport
