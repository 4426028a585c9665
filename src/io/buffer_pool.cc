// BufferPool: every buffer lives in one anonymous mapping made, advised and prefaulted at Create().
// First touch of memory is expensive on our VMs, so it is paid once here and never on the data path.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <limits>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "base/log.h"
#include "pororoca/storage.h"

namespace pororoca::io {
namespace {

constexpr size_t kPageSize = 4096;
constexpr size_t kHugePageSize = 2u << 20;

size_t RoundUp(size_t v, size_t to) { return (v + to - 1) / to * to; }

}  // namespace

struct BufferPool::Impl {
  mutable std::mutex mu;
  std::condition_variable cv;
  std::vector<int> free;                // LIFO: the most recently used buffer is the warmest in cache
  std::condition_variable populate_cv;  // StopPopulate wakes Populate's busy wait
  bool populate_stop = false;
};

Buffer::Buffer(Buffer&& o) noexcept
    : pool_(std::exchange(o.pool_, nullptr)),
      data_(std::exchange(o.data_, nullptr)),
      capacity_(std::exchange(o.capacity_, 0)),
      index_(std::exchange(o.index_, -1)) {}

Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    Release();
    pool_ = std::exchange(o.pool_, nullptr);
    data_ = std::exchange(o.data_, nullptr);
    capacity_ = std::exchange(o.capacity_, 0);
    index_ = std::exchange(o.index_, -1);
  }
  return *this;
}

Buffer::~Buffer() { Release(); }

void Buffer::Release() {
  if (pool_ != nullptr) pool_->Return(index_);
  pool_ = nullptr;
  data_ = nullptr;
  capacity_ = 0;
  index_ = -1;
}

Result<std::unique_ptr<BufferPool>> BufferPool::Create(size_t buffer_size, size_t count) {
  if (buffer_size == 0 || count == 0)
    return Status::InvalidArgument("buffer pool: size and count must be > 0");
  if (count > static_cast<size_t>(std::numeric_limits<int>::max()) ||
      buffer_size > std::numeric_limits<size_t>::max() / 2 / count) {
    return Status::InvalidArgument("buffer pool: size * count overflows");
  }
  buffer_size = RoundUp(buffer_size, kPageSize);
  const size_t total = buffer_size * count;

  // Over-map by one huge page and trim, so the pool starts on a 2 MiB boundary and THP can back it.
  const size_t mapped = total + kHugePageSize;
  void* raw = ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED)
    return Status::IoError("buffer pool: mmap " + std::to_string(total) + " bytes", errno);
  const uintptr_t start = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = RoundUp(start, kHugePageSize);
  if (aligned > start) ::munmap(raw, aligned - start);
  const uintptr_t tail = aligned + total;
  if (start + mapped > tail) ::munmap(reinterpret_cast<void*>(tail), start + mapped - tail);
  auto* base = reinterpret_cast<std::byte*>(aligned);

  // Advisory only: without THP (or under "never") we still work, with 4 KiB pages.
  if (::madvise(base, total, MADV_HUGEPAGE) != 0) {
    PORO_LOG(DEBUG) << "buffer pool: madvise(MADV_HUGEPAGE) failed, errno " << errno;
  }
  return std::unique_ptr<BufferPool>(new BufferPool(base, buffer_size, count));
}

void BufferPool::StopPopulate() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->populate_stop = true;
  }
  impl_->populate_cv.notify_all();
}

Status BufferPool::Populate(const std::atomic<int>* busy, std::chrono::milliseconds quiet) {
#ifndef MADV_POPULATE_WRITE
  constexpr int MADV_POPULATE_WRITE = 23;  // Linux 5.14
#endif
  // 2 MiB at a time: each call holds the address space's lock while it maps.
  constexpr size_t kStep = 2u << 20;
  const size_t total = total_bytes();
  constexpr auto kPoll = std::chrono::milliseconds(20);
  auto idle = std::chrono::milliseconds(0);  // how long busy has been zero
  for (size_t off = 0; off < total;) {
    std::unique_lock<std::mutex> lock(impl_->mu);
    if (impl_->populate_stop) return Status::Cancelled("buffer pool: populate stopped");
    if (busy != nullptr) {
      const bool now_busy = busy->load() > 0;
      if (now_busy) idle = std::chrono::milliseconds(0);
      if (now_busy || idle < quiet) {
        impl_->populate_cv.wait_for(lock, kPoll, [&] { return impl_->populate_stop; });
        idle += kPoll;
        continue;
      }
    }
    lock.unlock();
    if (::madvise(base_ + off, std::min(kStep, total - off), MADV_POPULATE_WRITE) != 0) {
      if (errno == EINVAL) return Status::NotSupported("buffer pool: MADV_POPULATE_WRITE not supported");
      return Status::IoError("buffer pool: madvise(MADV_POPULATE_WRITE)", errno);
    }
    off += kStep;
  }
  return Status::OK();
}

BufferPool::BufferPool(std::byte* base, size_t buffer_size, size_t count)
    : impl_(std::make_unique<Impl>()), base_(base), buffer_size_(buffer_size), count_(count) {
  impl_->free.reserve(count);
  // Pushed in reverse so the first Acquire() hands out index 0.
  for (size_t i = count; i > 0; --i) impl_->free.push_back(static_cast<int>(i - 1));
}

BufferPool::~BufferPool() {
  // The pool must outlive every Buffer it leased (and every op using one).
  PORO_CHECK(impl_->free.size() == count_);
  ::munmap(base_, total_bytes());
}

Result<Buffer> BufferPool::Acquire(std::chrono::milliseconds timeout, size_t keep_free) {
  std::unique_lock<std::mutex> lock(impl_->mu);
  if (!impl_->cv.wait_for(lock, timeout, [&] { return impl_->free.size() > keep_free; })) {
    Status s = Status::ResourceExhausted("buffer pool: no free buffer within " +
                                         std::to_string(timeout.count()) + " ms");
    s.WithRetryable(true);
    return s;
  }
  const int index = impl_->free.back();
  impl_->free.pop_back();
  return Buffer(this, base_ + static_cast<size_t>(index) * buffer_size_, buffer_size_, index);
}

Buffer BufferPool::TryAcquire(size_t keep_free) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (impl_->free.size() <= keep_free) return Buffer();
  const int index = impl_->free.back();
  impl_->free.pop_back();
  return Buffer(this, base_ + static_cast<size_t>(index) * buffer_size_, buffer_size_, index);
}

size_t BufferPool::free_count() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->free.size();
}

void BufferPool::Return(int index) {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->free.push_back(index);
  }
  // All: a waiter that keeps buffers free for others (keep_free) may not take this one, another may.
  impl_->cv.notify_all();
}

}  // namespace pororoca::io
