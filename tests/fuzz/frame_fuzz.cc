// libFuzzer target: every decoder of the wire protocol (src/proto/wire.h, codec.h) on arbitrary
// bytes. The first byte picks the decoder, the rest is its input. A decoder must never crash,
// over-read or throw; whatever it accepts must survive a re-encode unchanged
// (Encode(Decode(Encode(Decode(x)))) == Encode(Decode(x))), so what the receiver acts on is what
// a sender could have meant.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <nlohmann/json.hpp>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "fuzz/fuzz_check.h"
#include "proto/codec.h"
#include "proto/wire.h"

namespace {

using pororoca::proto::Decoder;
namespace proto = pororoca::proto;

// Decode, and for an accepted input check that re-encoding is stable.
template <class Decode, class Encode>
void RoundTrip(std::span<const std::byte> in, Decode decode, Encode encode) {
  auto first = decode(in);
  if (!first.ok()) return;
  const auto bytes = encode(*first);
  auto second = decode(std::span<const std::byte>(bytes.data(), bytes.size()));
  REQUIRE_INVARIANT(second.ok());
  const auto again = encode(*second);
  REQUIRE_INVARIANT(again.size() == bytes.size() &&
                    std::memcmp(again.data(), bytes.data(), bytes.size()) == 0);
}

// A program of primitive reads: each input byte picks the next read until the input is used up.
void DecoderProgram(std::span<const std::byte> in) {
  if (in.empty()) return;
  const size_t ops = std::min<size_t>(std::to_integer<size_t>(in[0]) % 16 + 1, in.size());
  Decoder d(in.subspan(ops));
  for (size_t i = 0; i < ops; ++i) {
    switch (std::to_integer<int>(in[i]) % 8) {
      case 0:
        d.U8();
        break;
      case 1:
        d.U16();
        break;
      case 2:
        d.U32();
        break;
      case 3:
        d.U64();
        break;
      case 4:
        d.Var();
        break;
      case 5:
        REQUIRE_INVARIANT(d.Bytes(64).size() <= 64);
        break;
      case 6:
        d.Digest();
        break;
      default:
        d.I64();
        break;
    }
  }
  REQUIRE_INVARIANT(d.ok() || !d.Finish("fuzz").ok());
  REQUIRE_INVARIANT(d.remaining() <= in.size());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t which = data[0];
  const std::span<const std::byte> in(reinterpret_cast<const std::byte*>(data + 1), size - 1);
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);

  switch (which % 12) {
    case 0: {
      proto::ControlFrame f;
      f.type = static_cast<proto::MsgType>(which);
      f.body.assign(in.begin(), in.end());
      auto j = proto::DecodeJsonBody(f);
      if (j.ok()) REQUIRE_INVARIANT(j->is_object());
      break;
    }
    case 1:
      RoundTrip(in, proto::DecodeFiles, proto::EncodeFiles);
      if (auto files = proto::DecodeFiles(in); files.ok()) {
        for (const proto::FileEntry& e : *files) REQUIRE_INVARIANT(proto::ValidateRelativePath(e.path).ok());
      }
      break;
    case 2:
      RoundTrip(in, proto::DecodePlan, proto::EncodePlan);
      break;
    case 3:
      RoundTrip(in, proto::DecodeFileEnds, proto::EncodeFileEnds);
      break;
    case 4:
      RoundTrip(in, proto::DecodeFileDones, proto::EncodeFileDones);
      break;
    case 5:
      RoundTrip(in, proto::DecodeBadChunk, proto::EncodeBadChunk);
      break;
    case 6:
      RoundTrip(in, proto::DecodeChunkHeader, [](const proto::ChunkHeader& h) {
        std::array<std::byte, proto::kChunkHeaderSize> out{};
        proto::EncodeChunkHeader(h, out);
        return out;
      });
      break;
    case 7:
      RoundTrip(in, proto::DecodeBind, proto::EncodeBind);
      break;
    case 8:
      RoundTrip(in, proto::DecodeBindReply, [](const std::pair<uint8_t, proto::Mac>& r) {
        return proto::EncodeBindReply(r.first, r.second);
      });
      break;
    case 9:
      if (auto bytes = proto::HexDecode(text); bytes.ok()) {
        REQUIRE_INVARIANT(bytes->size() * 2 == text.size());
        auto back = proto::HexDecode(proto::HexEncode(*bytes));
        REQUIRE_INVARIANT(back.ok() && *back == *bytes);
      }
      break;
    case 10:
      if (proto::ValidateRelativePath(text).ok()) {
        REQUIRE_INVARIANT(text.size() <= proto::kMaxPathBytes);
        REQUIRE_INVARIANT(text.empty() || text.front() != '/');
      }
      break;
    default:
      DecoderProgram(in);
      break;
  }
  return 0;
}
