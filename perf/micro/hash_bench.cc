// XXH3-128 over chunk-sized buffers: the cost of "checksums on" per byte moved.
#include <benchmark/benchmark.h>
#include <xxhash.h>

#include <algorithm>
#include <span>
#include <vector>

#include "pororoca/checksum.h"

namespace {

void BM_Xxh3_128(benchmark::State& state) {
  std::vector<std::byte> buf(static_cast<size_t>(state.range(0)), std::byte{0x5a});
  for (size_t i = 0; i < buf.size(); i += 4096) buf[i] = std::byte(i & 0xff);
  for (auto _ : state) {
    benchmark::DoNotOptimize(pororoca::Xxh3_128(buf));
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * state.range(0));
}
BENCHMARK(BM_Xxh3_128)->Arg(64 << 10)->Arg(1 << 20)->Arg(4 << 20)->Arg(16 << 20);

// The library's XXH3_128bits called directly: the baseline (SSE2) kernel Xxh3_128 used before it
// called the run-time dispatched one. Same buffers, so the two rows compare in one run.
void BM_Xxh3_128_Baseline(benchmark::State& state) {
  std::vector<std::byte> buf(static_cast<size_t>(state.range(0)), std::byte{0x5a});
  for (size_t i = 0; i < buf.size(); i += 4096) buf[i] = std::byte(i & 0xff);
  for (auto _ : state) {
    benchmark::DoNotOptimize(XXH3_128bits(buf.data(), buf.size()));
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * state.range(0));
}
BENCHMARK(BM_Xxh3_128_Baseline)->Arg(64 << 10)->Arg(1 << 20)->Arg(4 << 20)->Arg(16 << 20);

// Streaming over 1 MiB pieces (the chunk path), dispatched.
void BM_Hasher128_1MiBPieces(benchmark::State& state) {
  std::vector<std::byte> buf(static_cast<size_t>(state.range(0)), std::byte{0x5a});
  for (size_t i = 0; i < buf.size(); i += 4096) buf[i] = std::byte(i & 0xff);
  for (auto _ : state) {
    pororoca::Hasher128 h;
    for (size_t off = 0; off < buf.size(); off += 1 << 20) {
      h.Update(std::span<const std::byte>(buf).subspan(off, std::min<size_t>(1 << 20, buf.size() - off)));
    }
    benchmark::DoNotOptimize(h.Finish());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * state.range(0));
}
BENCHMARK(BM_Hasher128_1MiBPieces)->Arg(16 << 20);

void BM_FileDigest_1024Chunks(benchmark::State& state) {
  for (auto _ : state) {
    pororoca::FileDigester d;
    for (uint64_t i = 0; i < 1024; ++i) d.AddChunk(pororoca::Digest128{i, ~i});
    benchmark::DoNotOptimize(d.Finish());
  }
}
BENCHMARK(BM_FileDigest_1024Chunks);

}  // namespace
