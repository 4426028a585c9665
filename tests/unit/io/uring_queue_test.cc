#include "io/uring_queue.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include "pororoca/storage.h"
#include "unit/io/io_test_util.h"

namespace pororoca::io {
namespace {

std::unique_ptr<IoQueue> MakeUring(unsigned depth, const BufferPool* registered = nullptr) {
  IoQueueOptions opts;
  opts.depth = depth;
  opts.registered = registered;
  auto q = CreateIoQueue(opts);
  REQUIRE(q.has_value());
  REQUIRE(std::string((*q)->name()) == "io_uring");
  return std::move(q).value();
}

std::unique_ptr<BufferPool> MakePool(size_t size, size_t count) {
  auto p = BufferPool::Create(size, count);
  REQUIRE(p.has_value());
  return std::move(p).value();
}

TEST_SUITE("io.uring_queue") {
  TEST_CASE("64 writes and reads of 1 MiB in flight round-trip through a depth-16 ring" *
            doctest::skip(!UringAvailable())) {
    auto pool = MakePool(1 << 20, 128);
    auto q = MakeUring(16);  // shallower than the batch: Submit* must reap internally
    SUBCASE("real disk") {
      test::TempFile f("/var/tmp");
      test::RoundTrip(*q, *pool, f.fd(), 64, /*aligned=*/false, 1);
    }
    SUBCASE("tmpfs") {
      test::TempFile f("/dev/shm");
      test::RoundTrip(*q, *pool, f.fd(), 64, /*aligned=*/false, 2);
    }
  }

  TEST_CASE("registered pool buffers go through read_fixed and write_fixed" *
            doctest::skip(!UringAvailable())) {
    auto pool = MakePool(1 << 20, 32);
    auto q = MakeUring(8, pool.get());
    auto* uq = dynamic_cast<UringQueue*>(q.get());
    REQUIRE(uq != nullptr);
    REQUIRE(uq->fixed_buffers());
    test::TempFile f("/var/tmp");
    test::RoundTrip(*q, *pool, f.fd(), 16, /*aligned=*/false, 3);
    CHECK(uq->fixed_sqes() >= 32);

    // Memory outside the pool still works, through plain read/write.
    const uint64_t before = uq->fixed_sqes();
    std::vector<std::byte> heap(8192, std::byte{9});
    REQUIRE(q->SubmitWrite(f.fd(), 0, heap, 0).ok());
    CHECK(test::ReapAll(*q, 1)[0].result == 8192);
    CHECK(uq->fixed_sqes() == before);
  }

  TEST_CASE("O_DIRECT files on a real disk round-trip with aligned I/O" *
            doctest::skip(!UringAvailable() || test::IsTmpfs("/var/tmp"))) {
    auto pool = MakePool(1 << 20, 32);
    auto q = MakeUring(8, pool.get());
    test::TempFile f("/var/tmp");
    auto w = OpenForWrite(AT_FDCWD, f.path(), 0600, /*try_direct=*/true);
    REQUIRE(w.has_value());
    REQUIRE(w->direct);
    auto r = OpenForRead(f.path(), /*try_direct=*/true);
    REQUIRE(r.has_value());
    REQUIRE(r->direct);
    test::RoundTrip(*q, *pool, w->fd, 16, /*aligned=*/true, 4, r->fd);
    ::close(w->fd);
    ::close(r->fd);
  }

  TEST_CASE("a read that reaches end of file completes with the bytes before it" *
            doctest::skip(!UringAvailable())) {
    auto pool = MakePool(1 << 16, 2);
    auto q = MakeUring(4);
    test::CheckEofShortRead(*q, *pool, "/var/tmp");
  }

  TEST_CASE("an O_DIRECT read past the last partial block completes with the bytes before it" *
            doctest::skip(!UringAvailable() || test::IsTmpfs("/var/tmp"))) {
    auto pool = MakePool(1 << 16, 2);
    auto q = MakeUring(4);
    test::TempFile f("/var/tmp");
    std::vector<std::byte> data(10000, std::byte{5});
    REQUIRE(PwriteFull(f.fd(), 0, data, f.path()).ok());
    auto r = OpenForRead(f.path(), /*try_direct=*/true);
    REQUIRE(r.has_value());
    REQUIRE(r->direct);
    Buffer b = pool->TryAcquire();
    REQUIRE(q->SubmitRead(r->fd, 0, b.span(), 0).ok());
    CHECK(test::ReapAll(*q, 1)[0].result == 10000);
    ::close(r->fd);
  }

  TEST_CASE("a write through a read-only fd completes with -EBADF" * doctest::skip(!UringAvailable())) {
    auto q = MakeUring(4);
    test::CheckWriteToReadOnlyFd(*q);
  }

  TEST_CASE("fsync and fdatasync complete with 0" * doctest::skip(!UringAvailable())) {
    auto q = MakeUring(4);
    test::TempFile f;
    REQUIRE(q->SubmitFsync(f.fd(), false, 0).ok());
    REQUIRE(q->SubmitFsync(f.fd(), true, 1).ok());
    auto c = test::ReapAll(*q, 2);
    CHECK(c[0].kind == OpKind::kFsync);
    CHECK(c[0].result == 0);
    CHECK(c[1].kind == OpKind::kFdatasync);
    CHECK(c[1].result == 0);
  }

  TEST_CASE("an empty read completes at once with 0 and Reap never waits beyond in_flight" *
            doctest::skip(!UringAvailable())) {
    auto q = MakeUring(4);
    test::TempFile f;
    REQUIRE(q->SubmitRead(f.fd(), 0, std::span<std::byte>(), 5).ok());
    CHECK(q->in_flight() == 1);
    std::vector<Completion> out(4);
    auto n = q->Reap(out, 100);  // asks for more than can ever complete
    REQUIRE(n.has_value());
    CHECK(*n == 1);
    CHECK(out[0].tag == 5);
    CHECK(out[0].result == 0);
    n = q->Reap(out, 1);
    REQUIRE(n.has_value());
    CHECK(*n == 0);
  }

  TEST_CASE("destroying a queue with ops in flight drains them first" * doctest::skip(!UringAvailable())) {
    auto pool = MakePool(1 << 20, 32);
    test::TempFile f("/var/tmp");
    std::vector<std::byte> data(32 << 20, std::byte{3});
    REQUIRE(PwriteFull(f.fd(), 0, data, f.path()).ok());
    std::vector<Buffer> bufs;
    {
      auto q = MakeUring(8, pool.get());
      for (size_t i = 0; i < 32; ++i) {
        bufs.push_back(pool->TryAcquire());
        REQUIRE(q->SubmitRead(f.fd(), i << 20, bufs.back().span(), i).ok());
      }
      REQUIRE(q->Flush().ok());
    }  // no Reap: the destructor must wait for the kernel before the buffers go back
    bufs.clear();
    CHECK(pool->free_count() == 32);
  }
}

}  // namespace
}  // namespace pororoca::io
