#include "io/posix_queue.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace pororoca::io {

int64_t PreadLoop(int fd, uint64_t offset, std::span<std::byte> buf) {
  size_t done = 0;
  while (done < buf.size()) {
    ssize_t n = ::pread(fd, buf.data() + done, buf.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      // O_DIRECT: after a short read at EOF the next offset is unaligned and the kernel says EINVAL.
      if (errno == EINVAL && done > 0) break;
      return -errno;
    }
    if (n == 0) break;  // EOF
    done += static_cast<size_t>(n);
  }
  return static_cast<int64_t>(done);
}

int64_t PwriteLoop(int fd, uint64_t offset, std::span<const std::byte> buf) {
  size_t done = 0;
  while (done < buf.size()) {
    ssize_t n = ::pwrite(fd, buf.data() + done, buf.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return -errno;
    }
    if (n == 0) return -EIO;  // never legitimate for a non-empty buffer
    done += static_cast<size_t>(n);
  }
  return static_cast<int64_t>(done);
}

Status PosixQueue::SubmitRead(int fd, uint64_t offset, std::span<std::byte> buf, uint64_t tag) {
  done_.push_back({tag, OpKind::kRead, PreadLoop(fd, offset, buf)});
  return Status::OK();
}

Status PosixQueue::SubmitWrite(int fd, uint64_t offset, std::span<const std::byte> buf, uint64_t tag) {
  done_.push_back({tag, OpKind::kWrite, PwriteLoop(fd, offset, buf)});
  return Status::OK();
}

Status PosixQueue::SubmitFsync(int fd, bool datasync, uint64_t tag) {
  // No EINTR loop: fsync is not interrupted by signals, and retrying after a failure can hide
  // lost writeback (the error is reported once).
  int rc = datasync ? ::fdatasync(fd) : ::fsync(fd);
  done_.push_back({tag, datasync ? OpKind::kFdatasync : OpKind::kFsync, rc == 0 ? 0 : -int64_t{errno}});
  return Status::OK();
}

Result<size_t> PosixQueue::Reap(std::span<Completion> out, size_t /*min_complete*/) {
  // Everything queued is already finished, so there is never anything to wait for.
  size_t n = std::min(out.size(), done_.size());
  for (size_t i = 0; i < n; ++i) {
    out[i] = done_.front();
    done_.pop_front();
  }
  return n;
}

}  // namespace pororoca::io
