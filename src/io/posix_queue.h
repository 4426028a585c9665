// PosixQueue: the synchronous IoQueue used when io_uring is unavailable or not wanted.
// Each Submit* does the whole operation (pread/pwrite/fsync, absorbing EINTR and short I/O) before
// returning and queues its completion for Reap(). Owned by one thread.
#pragma once

#include <deque>

#include "pororoca/storage.h"

namespace pororoca::io {

// pread until `buf` is full or EOF, absorbing EINTR/EAGAIN. Returns the bytes read (short only at
// EOF) or -errno.
int64_t PreadLoop(int fd, uint64_t offset, std::span<std::byte> buf);
// pwrite all of `buf`, absorbing EINTR/EAGAIN and short writes. Returns buf.size() or -errno.
int64_t PwriteLoop(int fd, uint64_t offset, std::span<const std::byte> buf);

class PosixQueue final : public IoQueue {
 public:
  PosixQueue() = default;
  Status SubmitRead(int fd, uint64_t offset, std::span<std::byte> buf, uint64_t tag) override;
  Status SubmitWrite(int fd, uint64_t offset, std::span<const std::byte> buf, uint64_t tag) override;
  Status SubmitFsync(int fd, bool datasync, uint64_t tag) override;
  Status Flush() override { return Status::OK(); }
  Result<size_t> Reap(std::span<Completion> out, size_t min_complete) override;
  size_t in_flight() const override { return done_.size(); }
  const char* name() const override { return "posix"; }

 private:
  std::deque<Completion> done_;
};

}  // namespace pororoca::io
