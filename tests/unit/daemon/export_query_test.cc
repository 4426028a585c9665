#include "daemon/export_query.h"

#include <doctest/doctest.h>
#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <random>
#include <vector>

#include "pororoca/checksum.h"
#include "support/temp_dir.h"

namespace pororoca::daemon {
namespace {

TEST_CASE("ls keeps the first names in order, at most the limit, whatever the directory holds") {
  test::TempDir dir;
  ::mkdir((dir / "d").c_str(), 0755);
  std::vector<std::string> names;
  for (int i = 0; i < 300; ++i) names.push_back("f" + std::to_string(i * 7919 % 1000));
  std::shuffle(names.begin(), names.end(), std::mt19937(7));
  for (const auto& n : names) std::ofstream(dir / ("d/" + n)) << n;
  auto root = engine::ExportRoot::Create(dir.path());
  REQUIRE(root.ok());
  std::vector<std::string> sorted = names;
  std::sort(sorted.begin(), sorted.end());
  auto some = ListExport(*root, "d", 10);
  REQUIRE(some.ok());
  CHECK((*some)["truncated"] == true);
  REQUIRE((*some)["entries"].size() == 10);
  for (size_t i = 0; i < 10; ++i) CHECK((*some)["entries"][i]["name"] == sorted[i]);
  auto all = ListExport(*root, "d", 1000);
  REQUIRE(all.ok());
  CHECK((*all)["truncated"] == false);
  CHECK((*all)["entries"].size() == 300);
  CHECK((*all)["entries"][299]["name"] == sorted.back());
  auto one = ListExport(*root, "d/" + sorted[0], 0);
  REQUIRE(one.ok());
  CHECK((*one)["type"] == "file");
  CHECK((*one)["entries"][0]["name"] == sorted[0]);
  CHECK((*one)["entries"][0]["size"] == sorted[0].size());
}

TEST_CASE("checksum: the digest over the chunks' digests, special files refused, a stop ends it") {
  test::TempDir dir;
  std::string data(300000, 'x');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 31 % 251);
  std::ofstream(dir / "f.bin") << data;
  auto root = engine::ExportRoot::Create(dir.path());
  REQUIRE(root.ok());
  auto r = ChecksumExport(*root, "f.bin", 64 * 1024);
  REQUIRE(r.ok());
  FileDigester dg;
  for (size_t off = 0; off < data.size(); off += 64 * 1024) {
    const std::string_view c = std::string_view(data).substr(off, 64 * 1024);
    dg.AddChunk(Xxh3_128(std::as_bytes(std::span(c.data(), c.size()))));
  }
  CHECK((*r)["digest"] == dg.Finish().ToHex());
  CHECK((*r)["size"] == data.size());
  std::ofstream(dir / "empty");
  auto e = ChecksumExport(*root, "empty", 64 * 1024);
  REQUIRE(e.ok());
  CHECK((*e)["digest"] == FileDigester().Finish().ToHex());
  REQUIRE(::mkfifo((dir / "fifo").c_str(), 0644) == 0);
  auto fifo = ChecksumExport(*root, "fifo", 64 * 1024);
  REQUIRE_FALSE(fifo.ok());
  CHECK(fifo.error().code() == Code::kInvalidArgument);
  CHECK(ChecksumExport(*root, "", 64 * 1024).error().message().find("directory") != std::string::npos);
  std::atomic<bool> stop{true};
  auto stopped = ChecksumExport(*root, "f.bin", 64 * 1024, &stop);
  REQUIRE_FALSE(stopped.ok());
  CHECK(stopped.error().code() == Code::kCancelled);
}

}  // namespace
}  // namespace pororoca::daemon
