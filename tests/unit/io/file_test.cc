#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include "pororoca/storage.h"
#include "unit/io/io_test_util.h"

namespace pororoca::io {
namespace {

TEST_SUITE("io.file") {
  TEST_CASE("OpenForRead of a missing file is NotFound and names the path") {
    auto r = OpenForRead("/var/tmp/poro-no-such-dir/missing.bin", false);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code() == Code::kNotFound);
    CHECK(r.error().sys_errno() == ENOENT);
    CHECK(r.error().ToString().find("/var/tmp/poro-no-such-dir/missing.bin") != std::string::npos);
  }

  TEST_CASE("OpenForRead of a directory is refused") {
    auto r = OpenForRead("/var/tmp", false);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().sys_errno() == EISDIR);
  }

  TEST_CASE("O_DIRECT on tmpfs falls back to buffered I/O") {
    test::TempFile f("/dev/shm");
    std::vector<std::byte> data(100, std::byte{1});
    REQUIRE(PwriteFull(f.fd(), 0, data, f.path()).ok());
    auto r = OpenForRead(f.path(), /*try_direct=*/true);
    REQUIRE(r.has_value());
    CHECK_FALSE(r->direct);
    CHECK(r->size == 100);
    CHECK((::fcntl(r->fd, F_GETFL) & O_DIRECT) == 0);
    // Unaligned I/O works, as it must on a buffered fd.
    std::vector<std::byte> back(99);
    CHECK(PreadFull(r->fd, 1, back, f.path()).ok());
    ::close(r->fd);
    auto w = OpenForWrite(AT_FDCWD, f.path(), 0600, true);
    REQUIRE(w.has_value());
    CHECK_FALSE(w->direct);
    ::close(w->fd);
  }

  TEST_CASE("O_DIRECT on a real disk is kept and aligned I/O round-trips" *
            doctest::skip(test::IsTmpfs("/var/tmp"))) {
    auto pool = BufferPool::Create(16384, 2);
    REQUIRE(pool.has_value());
    test::TempFile f("/var/tmp");
    auto w = OpenForWrite(AT_FDCWD, f.path(), 0600, true);
    REQUIRE(w.has_value());
    CHECK(w->direct);
    CHECK((::fcntl(w->fd, F_GETFL) & O_DIRECT) != 0);
    Buffer src = (*pool)->TryAcquire();
    Buffer dst = (*pool)->TryAcquire();
    test::FillPattern(src.span(), 21);
    REQUIRE(PwriteFull(w->fd, 4096, src.span(), f.path()).ok());
    ::close(w->fd);
    auto r = OpenForRead(f.path(), true);
    REQUIRE(r.has_value());
    CHECK(r->direct);
    CHECK(r->size == 4096 + 16384);
    REQUIRE(PreadFull(r->fd, 4096, dst.span(), f.path()).ok());
    CHECK(std::memcmp(src.data(), dst.data(), 16384) == 0);
    ::close(r->fd);
  }

  TEST_CASE("OpenForWrite creates relative to dirfd without truncating") {
    test::TempFile f("/var/tmp");
    std::vector<std::byte> data(5000, std::byte{7});
    REQUIRE(PwriteFull(f.fd(), 0, data, f.path()).ok());
    int dir = ::open("/var/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    REQUIRE(dir >= 0);
    const std::string name = f.path().substr(std::string("/var/tmp/").size());
    auto w = OpenForWrite(dir, name, 0600, false);
    REQUIRE(w.has_value());
    CHECK(w->size == 5000);
    ::close(w->fd);
    ::close(dir);
  }

  TEST_CASE("PreadFull past end of file is DataLoss naming the path") {
    test::TempFile f;
    std::vector<std::byte> data(10, std::byte{1});
    REQUIRE(PwriteFull(f.fd(), 0, data, f.path()).ok());
    std::vector<std::byte> back(20);
    Status s = PreadFull(f.fd(), 0, back, f.path());
    CHECK(s.code() == Code::kDataLoss);
    CHECK(s.ToString().find(f.path()) != std::string::npos);
  }

  TEST_CASE("CreateIoQueue picks io_uring when available and POSIX when forced") {
    IoQueueOptions opts;
    auto q = CreateIoQueue(opts);
    REQUIRE(q.has_value());
    CHECK(std::string((*q)->name()) == (UringAvailable() ? "io_uring" : "posix"));
    opts.force_posix = true;
    auto p = CreateIoQueue(opts);
    REQUIRE(p.has_value());
    CHECK(std::string((*p)->name()) == "posix");
    opts.depth = 0;
    CHECK(CreateIoQueue(opts).error().code() == Code::kInvalidArgument);
  }
}

}  // namespace
}  // namespace pororoca::io
