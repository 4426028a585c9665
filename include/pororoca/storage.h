// Storage I/O for the data path: an aligned buffer pool allocated once, and per-thread I/O queues
// (io_uring, with a POSIX fallback) that read and write file ranges asynchronously.
//
// Memory: a BufferPool allocates all of its buffers at construction (huge-page advised, prefaulted)
// and never grows; every chunk in flight lives in one of its buffers, so memory does not grow with
// file or dataset size.
//
// Thread-safety: BufferPool is thread-safe. An IoQueue belongs to one thread (io_uring rings are
// not thread-safe); create one per thread with CreateIoQueue().
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "pororoca/status.h"

namespace pororoca::io {

class BufferPool;

// A leased buffer. Returned to its pool when destroyed. Move-only.
class Buffer {
 public:
  Buffer() = default;
  Buffer(Buffer&& o) noexcept;
  Buffer& operator=(Buffer&& o) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer();

  std::byte* data() const { return data_; }
  size_t capacity() const { return capacity_; }
  std::span<std::byte> span() const { return {data_, capacity_}; }
  // Index of this buffer inside its pool (= the io_uring registered-buffer index).
  int index() const { return index_; }
  bool valid() const { return data_ != nullptr; }
  void Release();  // returns the buffer early

 private:
  friend class BufferPool;
  Buffer(BufferPool* pool, std::byte* data, size_t capacity, int index)
      : pool_(pool), data_(data), capacity_(capacity), index_(index) {}
  BufferPool* pool_ = nullptr;
  std::byte* data_ = nullptr;
  size_t capacity_ = 0;
  int index_ = -1;
};

class BufferPool {
 public:
  // `count` buffers of `buffer_size` bytes each (rounded up to 4096), aligned to 4096, in one mapping.
  // The memory is reserved, not yet touched: see Populate().
  static Result<std::unique_ptr<BufferPool>> Create(size_t buffer_size, size_t count);
  // Maps every page of the pool (MADV_POPULATE_WRITE), 2 MiB at a time, so the data path takes
  // no page faults. Safe while buffers are in use (pages already mapped are left as they are). It
  // maps only after `*busy` has been zero for `quiet` (checked every 20 ms), and pauses as soon as
  // it is not: work that runs meanwhile maps the buffers it takes itself. Returns kCancelled at
  // once when StopPopulate() is called (also from inside that wait), kNotSupported on kernels
  // before 5.14.
  Status Populate(const std::atomic<int>* busy = nullptr,
                  std::chrono::milliseconds quiet = std::chrono::milliseconds(0));
  // Makes a running Populate() return, and any later one return at once (daemon shutdown).
  void StopPopulate();
  ~BufferPool();
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  // Blocks until a buffer is free or the timeout passes (then kResourceExhausted, retryable).
  // With keep_free > 0 it waits until more than that many are free, leaving them to others: the
  // senders of a daemon pass SenderReserve(), so they can never take the buffers its receivers need
  // to drain the peer's senders (two daemons sending to each other would otherwise wait on each
  // other until the timeout).
  Result<Buffer> Acquire(std::chrono::milliseconds timeout = std::chrono::milliseconds(60000),
                         size_t keep_free = 0);
  // The buffers a daemon's senders leave to its receivers: a quarter of the pool, at least one.
  size_t SenderReserve() const { return count_ / 4 > 0 ? count_ / 4 : 1; }
  // Returns an invalid Buffer at once if no more than keep_free are free (see Acquire).
  Buffer TryAcquire(size_t keep_free = 0);

  size_t buffer_size() const { return buffer_size_; }
  size_t count() const { return count_; }
  size_t free_count() const;
  // The whole mapping, for io_uring_register_buffers / fi_mr_reg / ucp_mem_map.
  std::byte* base() const { return base_; }
  size_t total_bytes() const { return buffer_size_ * count_; }

 private:
  friend class Buffer;
  BufferPool(std::byte* base, size_t buffer_size, size_t count);
  void Return(int index);
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::byte* base_;
  size_t buffer_size_;
  size_t count_;
};

// How a file was opened for the data path.
struct OpenedFile {
  int fd = -1;          // owned by the caller (close it)
  bool direct = false;  // O_DIRECT in effect: offsets, lengths and buffers must be 4096-aligned
  uint64_t size = 0;    // for reads: st_size at open
};

// Opens `path` for reading, with O_DIRECT when `try_direct` and the file system supports it
// (tmpfs does not: EINVAL -> buffered). Errors name the path.
Result<OpenedFile> OpenForRead(const std::string& path, bool try_direct);
// Opens (creating with `mode`, not truncating) `path` for writing, same O_DIRECT rule. `dirfd` may be
// AT_FDCWD. Errors name the path.
Result<OpenedFile> OpenForWrite(int dirfd, const std::string& path, mode_t mode, bool try_direct);

inline constexpr size_t kDirectAlign = 4096;

enum class OpKind : uint8_t { kRead, kWrite, kFsync, kFdatasync };

struct Completion {
  uint64_t tag = 0;  // the caller's tag from Submit*
  OpKind kind = OpKind::kRead;
  int64_t result = 0;  // bytes transferred (the full requested length unless EOF) or -errno
};

struct IoQueueOptions {
  unsigned depth = 64;                     // ring entries / max ops in flight
  const BufferPool* registered = nullptr;  // register this pool's buffers with the ring (fixed I/O)
  bool force_posix = false;                // use the synchronous POSIX fallback even if io_uring works
};

// An asynchronous queue of file operations, owned by one thread.
//
// Submit* queue an op; Reap() returns finished ops. Short reads and writes are resubmitted inside
// for the remaining bytes, so a completion's result is the full length, or less only when a read
// reached end of file, or -errno. Buffers must stay valid until the op's completion is reaped.
// With O_DIRECT fds the caller passes aligned offsets, lengths and buffers.
class IoQueue {
 public:
  virtual ~IoQueue() = default;
  virtual Status SubmitRead(int fd, uint64_t offset, std::span<std::byte> buf, uint64_t tag) = 0;
  virtual Status SubmitWrite(int fd, uint64_t offset, std::span<const std::byte> buf, uint64_t tag) = 0;
  virtual Status SubmitFsync(int fd, bool datasync, uint64_t tag) = 0;
  // Sends queued submissions to the kernel (no-op for POSIX). Submit* may call it when the ring is full.
  virtual Status Flush() = 0;
  // Flushes, then waits until at least `min_complete` ops are finished (0 = don't wait) and moves up to
  // out.size() completions into `out`. Returns how many were written.
  virtual Result<size_t> Reap(std::span<Completion> out, size_t min_complete) = 0;
  virtual size_t in_flight() const = 0;
  virtual const char* name() const = 0;  // "io_uring" or "posix"
};

// io_uring when available (probed once per process), else POSIX. Never fails for lack of io_uring.
Result<std::unique_ptr<IoQueue>> CreateIoQueue(const IoQueueOptions& opts);
// True if this process can use io_uring (io_uring_queue_init works and has the ops we need).
bool UringAvailable();

// Synchronous helpers for small files and metadata; they absorb EINTR and short I/O.
Status PreadFull(int fd, uint64_t offset, std::span<std::byte> buf, const std::string& path_for_errors);
Status PwriteFull(int fd, uint64_t offset, std::span<const std::byte> buf,
                  const std::string& path_for_errors);

}  // namespace pororoca::io
