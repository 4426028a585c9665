#include "io/posix_queue.h"

#include <doctest/doctest.h>

#include "pororoca/storage.h"
#include "unit/io/io_test_util.h"

namespace pororoca::io {
namespace {

std::unique_ptr<IoQueue> MakePosix() {
  IoQueueOptions opts;
  opts.force_posix = true;
  auto q = CreateIoQueue(opts);
  REQUIRE(q.has_value());
  REQUIRE(std::string((*q)->name()) == "posix");
  return std::move(q).value();
}

TEST_SUITE("io.posix_queue") {
  TEST_CASE("64 writes and reads of 1 MiB queued at once round-trip") {
    auto pool = BufferPool::Create(1 << 20, 128);
    REQUIRE(pool.has_value());
    auto q = MakePosix();
    test::TempFile f("/var/tmp");
    test::RoundTrip(*q, **pool, f.fd(), 64, /*aligned=*/false, 11);
  }

  TEST_CASE("a read that reaches end of file completes with the bytes before it") {
    auto pool = BufferPool::Create(1 << 16, 2);
    REQUIRE(pool.has_value());
    auto q = MakePosix();
    test::CheckEofShortRead(*q, **pool, "/var/tmp");
  }

  TEST_CASE("a write through a read-only fd completes with -EBADF") {
    auto q = MakePosix();
    test::CheckWriteToReadOnlyFd(*q);
  }

  TEST_CASE("fdatasync completes with 0 and reports its kind") {
    auto q = MakePosix();
    test::TempFile f;
    REQUIRE(q->SubmitFsync(f.fd(), true, 0).ok());
    auto c = test::ReapAll(*q, 1);
    CHECK(c[0].kind == OpKind::kFdatasync);
    CHECK(c[0].result == 0);
  }

  TEST_CASE("Reap hands out at most out.size() completions and keeps the rest") {
    PosixQueue q;
    test::TempFile f;
    for (uint64_t i = 0; i < 3; ++i) REQUIRE(q.SubmitFsync(f.fd(), false, i).ok());
    std::vector<Completion> out(2);
    auto n = q.Reap(out, 3);
    REQUIRE(n.has_value());
    CHECK(*n == 2);
    CHECK(q.in_flight() == 1);
    n = q.Reap(out, 0);
    REQUIRE(n.has_value());
    CHECK(*n == 1);
    CHECK(out[0].tag == 2);
  }
}

}  // namespace
}  // namespace pororoca::io
