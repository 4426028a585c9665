// Opening files for the data path, choosing the IoQueue backend, and small synchronous helpers.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>

#include "base/log.h"
#include "base/unique_fd.h"
#include "io/posix_queue.h"
#include "pororoca/config.h"
#include "pororoca/storage.h"
#if PORO_WITH_URING
#include "io/uring_queue.h"
#endif

namespace pororoca::io {
namespace {

constexpr long kTmpfsMagic = 0x01021994;

// O_DIRECT is kept only where it helps and where our 4096-byte alignment contract is enough.
// tmpfs (6.6+) accepts O_DIRECT but is page cache anyway, so it would only add alignment rules.
bool DirectIsUseful(int fd) {
  struct statfs fs {};
  if (::fstatfs(fd, &fs) == 0 && static_cast<long>(fs.f_type) == kTmpfsMagic) return false;
#ifdef STATX_DIOALIGN
  struct statx sx {};
  if (::statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 && (sx.stx_mask & STATX_DIOALIGN)) {
    if (sx.stx_dio_mem_align == 0) return false;  // file system has no direct I/O for this file
    if (sx.stx_dio_mem_align > kDirectAlign || sx.stx_dio_offset_align > kDirectAlign) return false;
  }
#endif
  return true;
}

Result<OpenedFile> OpenImpl(int dirfd, const std::string& path, int flags, mode_t mode, bool try_direct) {
  UniqueFd fd;
  bool direct = false;
  if (try_direct) {
    auto r = UniqueFd::OpenAt(dirfd, path, flags | O_DIRECT, mode);
    if (r.has_value()) {
      fd = std::move(r).value();
      direct = true;
    } else if (r.error().sys_errno() != EINVAL) {  // EINVAL: no O_DIRECT here, open buffered below
      return Status::IoError("open " + path, r.error().sys_errno());
    }
  }
  if (direct && !DirectIsUseful(fd.get())) {
    // Clearing O_DIRECT in place avoids a second open (and a second O_CREAT race).
    int fl = ::fcntl(fd.get(), F_GETFL);
    if (fl < 0 || ::fcntl(fd.get(), F_SETFL, fl & ~O_DIRECT) != 0) fd.Reset();
    direct = false;
  }
  if (!fd.valid()) {
    auto r = UniqueFd::OpenAt(dirfd, path, flags, mode);
    if (!r.has_value()) return Status::IoError("open " + path, r.error().sys_errno());
    fd = std::move(r).value();
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return Status::IoError("fstat " + path, errno);
  if (S_ISDIR(st.st_mode)) return Status::IoError("open " + path, EISDIR);
  OpenedFile out;
  out.size = static_cast<uint64_t>(st.st_size);
  out.direct = direct;
  out.fd = fd.Release();
  return out;
}

}  // namespace

Result<OpenedFile> OpenForRead(const std::string& path, bool try_direct) {
  return OpenImpl(AT_FDCWD, path, O_RDONLY, 0, try_direct);
}

Result<OpenedFile> OpenForWrite(int dirfd, const std::string& path, mode_t mode, bool try_direct) {
  return OpenImpl(dirfd, path, O_WRONLY | O_CREAT, mode, try_direct);
}

bool UringAvailable() {
#if PORO_WITH_URING
  // Probed once per process: creating a ring costs a few syscalls and the answer cannot change.
  static const bool available = [] {
    IoQueueOptions opts;
    opts.depth = 4;
    auto q = UringQueue::Create(opts);
    if (!q.has_value()) {
      PORO_LOG(INFO) << "io_uring unavailable, using POSIX I/O: " << q.error().ToString();
    }
    return q.has_value();
  }();
  return available;
#else
  return false;
#endif
}

Result<std::unique_ptr<IoQueue>> CreateIoQueue(const IoQueueOptions& opts) {
  if (opts.depth == 0) return Status::InvalidArgument("io queue: depth must be > 0");
#if PORO_WITH_URING
  if (!opts.force_posix && UringAvailable()) {
    auto q = UringQueue::Create(opts);
    if (q.has_value()) return std::unique_ptr<IoQueue>(std::move(q).value());
    PORO_LOG(WARNING) << "io_uring queue setup failed, using POSIX I/O: " << q.error().ToString();
  }
#endif
  return std::unique_ptr<IoQueue>(std::make_unique<PosixQueue>());
}

Status PreadFull(int fd, uint64_t offset, std::span<std::byte> buf, const std::string& path_for_errors) {
  int64_t n = PreadLoop(fd, offset, buf);
  if (n < 0) return Status::IoError("pread " + path_for_errors, static_cast<int>(-n));
  if (static_cast<size_t>(n) < buf.size()) {
    return Status::DataLoss("pread " + path_for_errors + ": end of file at offset " +
                            std::to_string(offset + static_cast<uint64_t>(n)) + ", wanted " +
                            std::to_string(buf.size()) + " bytes from " + std::to_string(offset));
  }
  return Status::OK();
}

Status PwriteFull(int fd, uint64_t offset, std::span<const std::byte> buf,
                  const std::string& path_for_errors) {
  int64_t n = PwriteLoop(fd, offset, buf);
  if (n < 0) return Status::IoError("pwrite " + path_for_errors, static_cast<int>(-n));
  return Status::OK();
}

}  // namespace pororoca::io
