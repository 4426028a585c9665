// Encoding and decoding of the control messages that carry per-file metadata (FILES, PLAN): the
// per-file protocol cost of many-small-file transfers.
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "proto/wire.h"

namespace {

std::vector<pororoca::proto::FileEntry> Batch(size_t n) {
  std::vector<pororoca::proto::FileEntry> v;
  for (size_t i = 0; i < n; ++i) {
    v.push_back({i + 1, pororoca::proto::EntryType::kFile,
                 "d" + std::to_string(i / 100) + "/f" + std::to_string(i), 65536, 0644,
                 1700000000000000000 + int64_t(i), ""});
  }
  return v;
}

void BM_FilesEncode_1024(benchmark::State& state) {
  auto b = Batch(1024);
  for (auto _ : state) benchmark::DoNotOptimize(pororoca::proto::EncodeFiles(b));
  state.SetItemsProcessed(int64_t(state.iterations()) * 1024);
}
BENCHMARK(BM_FilesEncode_1024);

void BM_FilesDecode_1024(benchmark::State& state) {
  auto enc = pororoca::proto::EncodeFiles(Batch(1024));
  for (auto _ : state) benchmark::DoNotOptimize(pororoca::proto::DecodeFiles(enc));
  state.SetItemsProcessed(int64_t(state.iterations()) * 1024);
}
BENCHMARK(BM_FilesDecode_1024);

}  // namespace
