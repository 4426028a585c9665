// XXH3-128 over chunk-sized buffers: the cost of "checksums on" per byte moved.
#include <benchmark/benchmark.h>
#include <xxhash.h>

#include <algorithm>
#include <span>
#include <vector>

#include "pororoca/checksum.h"

namespace {

// A buffer of state.range(0) bytes (not all equal), hashed whole by `hash` each iteration.
template <class Hash>
void HashWhole(benchmark::State& state, Hash hash) {
  std::vector<std::byte> buf(static_cast<size_t>(state.range(0)), std::byte{0x5a});
  for (size_t i = 0; i < buf.size(); i += 4096) buf[i] = std::byte(i & 0xff);
  for (auto _ : state) {
    benchmark::DoNotOptimize(hash(std::span<const std::byte>(buf)));
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * state.range(0));
}

void BM_Xxh3_128(benchmark::State& state) { HashWhole(state, pororoca::Xxh3_128); }
BENCHMARK(BM_Xxh3_128)->Arg(64 << 10)->Arg(1 << 20)->Arg(4 << 20)->Arg(16 << 20);

// The library's XXH3_128bits called directly: the baseline (SSE2) kernel Xxh3_128 used before it
// called the run-time dispatched one. Same buffers, so the two rows compare in one run.
void BM_Xxh3_128_Baseline(benchmark::State& state) {
  HashWhole(state, [](std::span<const std::byte> b) { return XXH3_128bits(b.data(), b.size()); });
}
BENCHMARK(BM_Xxh3_128_Baseline)->Arg(64 << 10)->Arg(1 << 20)->Arg(4 << 20)->Arg(16 << 20);

// Streaming over 1 MiB pieces (the chunk path), dispatched.
void BM_Hasher128_1MiBPieces(benchmark::State& state) {
  HashWhole(state, [](std::span<const std::byte> b) {
    pororoca::Hasher128 h;
    for (size_t off = 0; off < b.size(); off += 1 << 20) {
      h.Update(b.subspan(off, std::min<size_t>(1 << 20, b.size() - off)));
    }
    return h.Finish();
  });
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
