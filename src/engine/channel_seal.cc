#include "engine/channel_seal.h"

namespace pororoca::engine {

Result<std::vector<ChannelSeal>> ChannelSeal::ForChannels(Protection level, std::span<const std::byte> key,
                                                          size_t channels) {
  std::vector<ChannelSeal> out;
  out.reserve(channels);
  for (size_t i = 0; i < channels; ++i) {
    PORO_ASSIGN_OR_RETURN(crypto::ChunkSeal s, crypto::ChunkSeal::Create(level, key));
    out.push_back(ChannelSeal(std::move(s), static_cast<uint32_t>(i)));
  }
  return out;
}

Status ChannelSeal::Seal(std::span<std::byte, proto::kSealedChunkHeaderSize> hdr,
                         std::span<std::byte> payload) {
  return seal_.Seal(
      channel_, seq_++, hdr.first<proto::kChunkHeaderClear>(),
      hdr.subspan<proto::kChunkHeaderClear, proto::kChunkHeaderSize - proto::kChunkHeaderClear>(), payload,
      hdr.subspan<proto::kChunkHeaderSize, proto::kChunkTagSize>());
}

Status ChannelSeal::Open(std::span<std::byte, proto::kSealedChunkHeaderSize> hdr,
                         std::span<std::byte> payload, const crypto::ChunkSeal::PieceFn& plain) {
  return seal_.Open(
      channel_, seq_++, hdr.first<proto::kChunkHeaderClear>(),
      hdr.subspan<proto::kChunkHeaderClear, proto::kChunkHeaderSize - proto::kChunkHeaderClear>(), payload,
      hdr.subspan<proto::kChunkHeaderSize, proto::kChunkTagSize>(), plain);
}

}  // namespace pororoca::engine
