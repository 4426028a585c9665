// Helpers shared by the io tests: temporary files and a many-ops-in-flight round trip.
#pragma once

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "pororoca/storage.h"

namespace pororoca::io::test {

// A unique file under `dir`, removed on destruction. The fd is opened O_RDWR.
class TempFile {
 public:
  explicit TempFile(const std::string& dir = "/var/tmp") {
    std::string tmpl = dir + "/poro_io_test_XXXXXX";
    fd_ = ::mkstemp(tmpl.data());
    REQUIRE(fd_ >= 0);
    path_ = tmpl;
  }
  ~TempFile() {
    if (fd_ >= 0) ::close(fd_);
    ::unlink(path_.c_str());
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  int fd() const { return fd_; }
  const std::string& path() const { return path_; }

 private:
  int fd_ = -1;
  std::string path_;
};

inline bool IsTmpfs(const std::string& dir) {
  struct statfs fs {};
  return ::statfs(dir.c_str(), &fs) == 0 && static_cast<long>(fs.f_type) == 0x01021994;
}

inline void FillPattern(std::span<std::byte> s, uint64_t seed) {
  std::mt19937_64 rng(seed);
  for (size_t i = 0; i + 8 <= s.size(); i += 8) {
    uint64_t v = rng();
    std::memcpy(s.data() + i, &v, 8);
  }
}

// Drains `q` until `n` completions arrive; returns them indexed by tag (tags must be < n).
inline std::vector<Completion> ReapAll(IoQueue& q, size_t n) {
  std::vector<Completion> by_tag(n);
  std::vector<Completion> out(16);
  size_t got = 0;
  while (got < n) {
    auto r = q.Reap(out, 1);
    REQUIRE(r.has_value());
    for (size_t i = 0; i < *r; ++i) {
      REQUIRE(out[i].tag < n);
      by_tag[out[i].tag] = out[i];
    }
    got += *r;
  }
  CHECK(q.in_flight() == 0);
  return by_tag;
}

// Writes `ops` pool buffers (each a full buffer) at random non-overlapping offsets of `fd`, all in
// flight at once, reads them back into cleared buffers and compares. With `aligned`, offsets are
// multiples of kDirectAlign (O_DIRECT); otherwise they have a random byte jitter. Reads go through
// `read_fd` when given.
inline void RoundTrip(IoQueue& q, BufferPool& pool, int fd, size_t ops, bool aligned, uint64_t seed,
                      int read_fd = -1) {
  if (read_fd < 0) read_fd = fd;
  const size_t bs = pool.buffer_size();
  REQUIRE(pool.count() >= ops * 2);
  std::mt19937_64 rng(seed);
  std::vector<size_t> slots(ops * 2);
  std::iota(slots.begin(), slots.end(), 0);
  std::shuffle(slots.begin(), slots.end(), rng);
  const size_t stride = bs + kDirectAlign;
  std::vector<uint64_t> offsets(ops);
  std::vector<Buffer> src, dst;
  for (size_t i = 0; i < ops; ++i) {
    offsets[i] = slots[i] * stride + (aligned ? 0 : rng() % kDirectAlign);
    src.push_back(pool.TryAcquire());
    dst.push_back(pool.TryAcquire());
    REQUIRE(src.back().valid());
    REQUIRE(dst.back().valid());
    FillPattern(src[i].span(), seed + i);
    std::memset(dst[i].data(), 0xee, bs);
  }
  for (size_t i = 0; i < ops; ++i) REQUIRE(q.SubmitWrite(fd, offsets[i], src[i].span(), i).ok());
  for (const Completion& c : ReapAll(q, ops)) {
    CHECK(c.kind == OpKind::kWrite);
    CHECK(c.result == static_cast<int64_t>(bs));
  }
  for (size_t i = 0; i < ops; ++i) REQUIRE(q.SubmitRead(read_fd, offsets[i], dst[i].span(), i).ok());
  for (const Completion& c : ReapAll(q, ops)) {
    CHECK(c.kind == OpKind::kRead);
    CHECK(c.result == static_cast<int64_t>(bs));
  }
  size_t mismatches = 0;
  for (size_t i = 0; i < ops; ++i) mismatches += std::memcmp(src[i].data(), dst[i].data(), bs) != 0;
  CHECK(mismatches == 0);
}

// A file of `size` pattern bytes; reading `want` bytes at 0 yields `size` (EOF), past EOF yields 0.
inline void CheckEofShortRead(IoQueue& q, BufferPool& pool, const std::string& dir) {
  TempFile f(dir);
  const size_t size = 10000;
  std::vector<std::byte> data(size);
  FillPattern(data, 7);
  REQUIRE(PwriteFull(f.fd(), 0, data, f.path()).ok());
  Buffer b = pool.TryAcquire();
  REQUIRE(b.capacity() > size);
  REQUIRE(q.SubmitRead(f.fd(), 0, b.span(), 0).ok());
  REQUIRE(q.SubmitRead(f.fd(), size + 100, b.span().subspan(0, 4096), 1).ok());
  auto c = ReapAll(q, 2);
  CHECK(c[0].result == static_cast<int64_t>(size));
  CHECK(c[1].result == 0);
  CHECK(std::memcmp(b.data(), data.data(), size) == 0);
}

// Writing through a read-only fd completes with -EBADF (not a Submit error).
inline void CheckWriteToReadOnlyFd(IoQueue& q) {
  TempFile f;
  int ro = ::open(f.path().c_str(), O_RDONLY | O_CLOEXEC);
  REQUIRE(ro >= 0);
  std::vector<std::byte> data(4096, std::byte{1});
  REQUIRE(q.SubmitWrite(ro, 0, data, 42).ok());
  std::vector<Completion> out(1);
  auto n = q.Reap(out, 1);
  REQUIRE(n.has_value());
  REQUIRE(*n == 1);
  CHECK(out[0].tag == 42);
  CHECK(out[0].kind == OpKind::kWrite);
  CHECK(out[0].result == -EBADF);
  ::close(ro);
}

}  // namespace pororoca::io::test
