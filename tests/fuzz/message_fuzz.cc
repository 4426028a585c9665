// libFuzzer target: the decoders of the typed JSON control messages (src/proto/messages.h) on
// arbitrary bytes. The first byte picks the message (and, for OPEN_OK, the direction the initiator
// asked for), the rest is its body. A decoder must never crash or throw, and must hold the ranges the
// protocol fixes; whatever it accepts must re-encode to a body that decodes to an equal struct and
// encodes to the same bytes again, so what a daemon acts on is what a peer could have sent.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <nlohmann/json.hpp>
#include <span>
#include <vector>

#include "fuzz/fuzz_check.h"
#include "proto/messages.h"

namespace {

namespace proto = pororoca::proto;

// Decode; for an accepted body, Decode(Encode(m)) == m and Encode is stable.
template <class Decode, class Encode>
auto RoundTrip(std::span<const std::byte> in, Decode decode, Encode encode) -> decltype(decode(in)) {
  auto first = decode(in);
  if (!first.ok()) {
    REQUIRE_INVARIANT(first.error().code() == pororoca::Code::kProtocol);
    return first;
  }
  const std::vector<std::byte> bytes = encode(*first);
  auto second = decode(std::span<const std::byte>(bytes.data(), bytes.size()));
  REQUIRE_INVARIANT(second.ok());
  REQUIRE_INVARIANT(*second == *first);
  const std::vector<std::byte> again = encode(*second);
  REQUIRE_INVARIANT(again == bytes);
  return first;
}

bool CleanName(const std::string& name) {
  return name.empty() || (proto::ValidateRelativePath(name).ok() && name.find('/') == std::string::npos);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t which = data[0];
  const std::span<const std::byte> in(reinterpret_cast<const std::byte*>(data + 1), size - 1);

  switch (which % 9) {
    case 0:
      RoundTrip(in, proto::DecodeHello, proto::EncodeHello)
          .status()
          .IgnoreError();  // only the invariants count
      break;
    case 1:
      if (auto m = RoundTrip(in, proto::DecodeOpen, proto::EncodeOpen); m.ok()) {
        REQUIRE_INVARIANT(m->streams >= 1 && m->streams <= proto::kMaxStreams);
        REQUIRE_INVARIANT(m->options.chunk_size >= 1 && m->options.chunk_size <= proto::kMaxChunkSize);
        REQUIRE_INVARIANT(m->path.size() <= proto::kMaxPathBytes);
        REQUIRE_INVARIANT(m->local_path.size() <= proto::kMaxPathBytes);
        REQUIRE_INVARIANT(m->transfer_id.size() == proto::kTransferIdHexDigits);
        const bool push = m->direction == proto::Direction::kPush;
        REQUIRE_INVARIANT(m->src.has_value() == push && m->classification.has_value() == push);
        if (m->src) REQUIRE_INVARIANT(CleanName(m->src->name));
      }
      break;
    case 2:
    case 3: {
      const proto::Direction dir = which % 9 == 2 ? proto::Direction::kPush : proto::Direction::kPull;
      auto decode = [dir](std::span<const std::byte> b) { return proto::DecodeOpenOk(b, dir); };
      if (auto m = RoundTrip(in, decode, proto::EncodeOpenOk); m.ok()) {
        const bool push = dir == proto::Direction::kPush;
        REQUIRE_INVARIANT(m->target.has_value() == push);
        REQUIRE_INVARIANT(m->src.has_value() == !push && m->classification.has_value() == !push);
        if (m->src) REQUIRE_INVARIANT(CleanName(m->src->name));
        REQUIRE_INVARIANT(m->transfer_id.size() == proto::kTransferIdHexDigits);
      }
      break;
    }
    case 4: {
      auto m = RoundTrip(in, proto::DecodeErrorMsg, proto::EncodeErrorMsg);
      if (m.ok()) REQUIRE_INVARIANT(m->code != pororoca::Code::kOk);
      // An ERROR body, well-formed or not, never reads as success.
      REQUIRE_INVARIANT(!proto::StatusFromErrorBody(in).ok());
      break;
    }
    case 5:
      RoundTrip(in, proto::DecodeEnd, proto::EncodeEnd).status().IgnoreError();  // only the invariants count
      break;
    case 6:
      if (auto m = RoundTrip(in, proto::DecodeSummary, proto::EncodeSummary); m.ok()) {
        const auto j = proto::SummaryToJson(*m);
        // The seven counters, and link_failures only when there are some (never more than failed).
        REQUIRE_INVARIANT(j.is_object() && j.size() == (m->link_failures.empty() ? 7u : 8u));
        REQUIRE_INVARIANT(m->link_failures.size() <= m->files_failed && m->link_failures.size() <= 100);
      }
      break;
    case 7:
      RoundTrip(in, proto::DecodeCancel, proto::EncodeCancel)
          .status()
          .IgnoreError();  // only the invariants count
      REQUIRE_INVARIANT(!proto::StatusFromCancelBody(in).ok());
      break;
    default:
      RoundTrip(in, proto::DecodeKeepalive, proto::EncodeKeepalive)
          .status()
          .IgnoreError();  // only the invariants count
      break;
  }
  return 0;
}
