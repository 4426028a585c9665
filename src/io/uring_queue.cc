#include "io/uring_queue.h"

#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "base/log.h"

namespace pororoca::io {
namespace {

// One SQE moves at most this much; larger spans continue through the short-I/O path.
constexpr size_t kMaxSqeBytes = size_t{1} << 30;
// Registered buffers: kernel limits (IORING_MAX_REG_BUFFERS, 1 GiB per iovec).
constexpr size_t kMaxFixedBuffers = 16384;
constexpr size_t kMaxFixedBufferBytes = size_t{1} << 30;

}  // namespace

struct UringQueue::Op {
  uint64_t tag;
  OpKind kind;
  int fd;
  int fixed_index;  // registered buffer holding the span, or -1
  uint64_t offset;  // of the next byte to move
  std::byte* data;  // next byte to move (const_cast for writes: the kernel only reads it)
  size_t remaining;
  size_t done = 0;
};

Result<std::unique_ptr<UringQueue>> UringQueue::Create(const IoQueueOptions& opts) {
  if (opts.depth == 0) return Status::InvalidArgument("io_uring: depth must be > 0");
  std::unique_ptr<UringQueue> q(new UringQueue(opts.depth));
  io_uring_params params{};
  // COOP_TASKRUN (5.19+) avoids an IPI per completion; older kernels reject it with EINVAL.
  params.flags = IORING_SETUP_COOP_TASKRUN;
  int rc = io_uring_queue_init_params(opts.depth, &q->ring_, &params);
  if (rc == -EINVAL) {
    params = io_uring_params{};
    rc = io_uring_queue_init_params(opts.depth, &q->ring_, &params);
  }
  if (rc < 0) return Status::IoError("io_uring_queue_init", -rc);
  q->ring_ready_ = true;

  io_uring_probe* probe = io_uring_get_probe_ring(&q->ring_);
  if (probe == nullptr) return Status::NotSupported("io_uring: kernel has no opcode probe (< 5.6)");
  const bool basic = io_uring_opcode_supported(probe, IORING_OP_READ) &&
                     io_uring_opcode_supported(probe, IORING_OP_WRITE) &&
                     io_uring_opcode_supported(probe, IORING_OP_FSYNC);
  const bool fixed = io_uring_opcode_supported(probe, IORING_OP_READ_FIXED) &&
                     io_uring_opcode_supported(probe, IORING_OP_WRITE_FIXED);
  q->can_cancel_ = io_uring_opcode_supported(probe, IORING_OP_ASYNC_CANCEL);
  io_uring_free_probe(probe);
  if (!basic) return Status::NotSupported("io_uring: READ/WRITE/FSYNC opcodes not supported");

  const BufferPool* pool = opts.registered;
  if (pool != nullptr) {
    if (!fixed || pool->count() > kMaxFixedBuffers || pool->buffer_size() > kMaxFixedBufferBytes) {
      PORO_LOG(WARNING) << "io_uring: fixed buffers unavailable for this pool, using plain read/write";
    } else {
      std::vector<iovec> iov(pool->count());
      for (size_t i = 0; i < iov.size(); ++i) {
        iov[i].iov_base = pool->base() + i * pool->buffer_size();
        iov[i].iov_len = pool->buffer_size();
      }
      rc = io_uring_register_buffers(&q->ring_, iov.data(), static_cast<unsigned>(iov.size()));
      if (rc < 0) {
        // Typically RLIMIT_MEMLOCK on older kernels: slower but correct without registration.
        PORO_LOG(WARNING) << "io_uring_register_buffers: " << std::strerror(-rc)
                          << "; using plain read/write";
      } else {
        q->fixed_base_ = pool->base();
        q->fixed_size_ = pool->buffer_size();
        q->fixed_count_ = pool->count();
      }
    }
  }
  return q;
}

UringQueue::~UringQueue() {
  if (!ring_ready_) return;
  Drain();
  io_uring_queue_exit(&ring_);  // also unregisters the buffers
}

void UringQueue::Drain() {
  pending_.clear();
  if (kernel_in_flight_ == 0) return;
  Status s = Flush();
  if (s.ok() && can_cancel_) {
    // Regular-file I/O usually cannot be cancelled mid-flight; it just completes. Either way we
    // wait for every CQE, because the kernel may still write into memory its op points at.
    if (io_uring_sqe* sqe = io_uring_get_sqe(&ring_)) {
      io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
      io_uring_sqe_set_data(sqe, nullptr);
      s = Flush();
    }
  }
  while (s.ok() && kernel_in_flight_ > 0) {
    io_uring_cqe* cqe = nullptr;
    int rc = io_uring_wait_cqe(&ring_, &cqe);
    if (rc == -EINTR) continue;
    if (rc < 0) {
      s = Status::IoError("io_uring_wait_cqe", -rc);
      break;
    }
    if (void* data = io_uring_cqe_get_data(cqe)) {
      std::unique_ptr<Op> op(static_cast<Op*>(data));
      --kernel_in_flight_;
    }
    io_uring_cqe_seen(&ring_, cqe);
  }
  if (!s.ok()) {
    // Leaking the ops is the only safe choice: the kernel may still reference their buffers.
    PORO_LOG(ERROR) << "io_uring: could not drain " << kernel_in_flight_ << " ops: " << s.ToString();
  }
}

int UringQueue::FixedIndex(const std::byte* p, size_t len) const {
  if (fixed_count_ == 0) return -1;
  const auto addr = reinterpret_cast<uintptr_t>(p);
  const auto base = reinterpret_cast<uintptr_t>(fixed_base_);
  if (addr < base || addr - base >= fixed_size_ * fixed_count_) return -1;
  const size_t index = (addr - base) / fixed_size_;
  if (addr - base + len > (index + 1) * fixed_size_) return -1;  // spans two buffers
  return static_cast<int>(index);
}

Status UringQueue::SubmitRead(int fd, uint64_t offset, std::span<std::byte> buf, uint64_t tag) {
  return Submit(std::unique_ptr<Op>(
      new Op{tag, OpKind::kRead, fd, FixedIndex(buf.data(), buf.size()), offset, buf.data(), buf.size()}));
}

Status UringQueue::SubmitWrite(int fd, uint64_t offset, std::span<const std::byte> buf, uint64_t tag) {
  return Submit(std::unique_ptr<Op>(new Op{tag, OpKind::kWrite, fd, FixedIndex(buf.data(), buf.size()),
                                           offset, const_cast<std::byte*>(buf.data()), buf.size()}));
}

Status UringQueue::SubmitFsync(int fd, bool datasync, uint64_t tag) {
  return Submit(std::unique_ptr<Op>(
      new Op{tag, datasync ? OpKind::kFdatasync : OpKind::kFsync, fd, -1, 0, nullptr, 0}));
}

Status UringQueue::Submit(std::unique_ptr<Op> op) {
  if (op->remaining == 0 && (op->kind == OpKind::kRead || op->kind == OpKind::kWrite)) {
    Complete(*op, 0);
    return Status::OK();
  }
  // Keeping at most depth_ ops in the kernel bounds CQ use (2 * depth entries), so the CQ never
  // overflows; completions reaped here wait in pending_ for the caller.
  while (kernel_in_flight_ >= depth_) PORO_RETURN_IF_ERROR(WaitAndProcess());
  return Prep(std::move(op));
}

Status UringQueue::Prep(std::unique_ptr<Op> op) {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (sqe == nullptr) {  // SQ full of unsubmitted entries: hand them to the kernel and retry
    PORO_RETURN_IF_ERROR(Flush());
    sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) return Status::Internal("io_uring: no free SQE after submit");
  }
  const auto len = static_cast<unsigned>(std::min(op->remaining, kMaxSqeBytes));
  switch (op->kind) {
    case OpKind::kRead:
      if (op->fixed_index >= 0) {
        io_uring_prep_read_fixed(sqe, op->fd, op->data, len, op->offset, op->fixed_index);
        ++fixed_sqes_;
      } else {
        io_uring_prep_read(sqe, op->fd, op->data, len, op->offset);
      }
      break;
    case OpKind::kWrite:
      if (op->fixed_index >= 0) {
        io_uring_prep_write_fixed(sqe, op->fd, op->data, len, op->offset, op->fixed_index);
        ++fixed_sqes_;
      } else {
        io_uring_prep_write(sqe, op->fd, op->data, len, op->offset);
      }
      break;
    case OpKind::kFsync:
      io_uring_prep_fsync(sqe, op->fd, 0);
      break;
    case OpKind::kFdatasync:
      io_uring_prep_fsync(sqe, op->fd, IORING_FSYNC_DATASYNC);
      break;
  }
  io_uring_sqe_set_data(sqe, op.release());
  ++kernel_in_flight_;
  return Status::OK();
}

void UringQueue::Complete(const Op& op, int64_t result) { pending_.push_back({op.tag, op.kind, result}); }

void UringQueue::HandleCqe(io_uring_cqe* cqe) {
  const int res = cqe->res;
  std::unique_ptr<Op> op(static_cast<Op*>(io_uring_cqe_get_data(cqe)));
  io_uring_cqe_seen(&ring_, cqe);
  if (op == nullptr) return;  // a cancel request's own CQE
  --kernel_in_flight_;

  bool again = false;
  if (res == -EAGAIN || res == -EINTR) {
    again = true;
  } else if (op->kind == OpKind::kFsync || op->kind == OpKind::kFdatasync) {
    Complete(*op, res);
  } else if (res < 0) {
    // O_DIRECT: after a short read at EOF the next offset is unaligned and the kernel says EINVAL.
    if (res == -EINVAL && op->kind == OpKind::kRead && op->done > 0) {
      Complete(*op, static_cast<int64_t>(op->done));
    } else {
      Complete(*op, res);
    }
  } else if (res == 0) {
    // A read of 0 bytes is EOF; a write of 0 bytes is never legitimate and would loop forever.
    Complete(*op, op->kind == OpKind::kRead ? static_cast<int64_t>(op->done) : -EIO);
  } else {
    const auto n = static_cast<size_t>(res);
    op->done += n;
    op->remaining -= n;
    op->offset += n;
    op->data += n;
    if (op->remaining == 0) {
      Complete(*op, static_cast<int64_t>(op->done));
    } else {
      again = true;  // short read/write: requeue the rest
    }
  }
  if (again) {
    const uint64_t tag = op->tag;
    const OpKind kind = op->kind;
    Status s = Prep(std::move(op));
    if (!s.ok()) {
      PORO_LOG(ERROR) << "io_uring: resubmit failed: " << s.ToString();
      pending_.push_back({tag, kind, s.sys_errno() != 0 ? -int64_t{s.sys_errno()} : -int64_t{EIO}});
    }
  }
}

void UringQueue::ProcessAvailable() {
  io_uring_cqe* cqe = nullptr;
  while (io_uring_peek_cqe(&ring_, &cqe) == 0) HandleCqe(cqe);
}

Status UringQueue::WaitAndProcess() {
  PORO_RETURN_IF_ERROR(Flush());  // resubmitted remainders must reach the kernel before we sleep
  io_uring_cqe* cqe = nullptr;
  int rc;
  do {
    rc = io_uring_wait_cqe(&ring_, &cqe);
  } while (rc == -EINTR);
  if (rc < 0) return Status::IoError("io_uring_wait_cqe", -rc);
  ProcessAvailable();
  return Status::OK();
}

Status UringQueue::Flush() {
  for (;;) {
    int rc = io_uring_submit(&ring_);
    if (rc >= 0) return Status::OK();
    if (rc != -EINTR) return Status::IoError("io_uring_submit", -rc);
  }
}

Result<size_t> UringQueue::Reap(std::span<Completion> out, size_t min_complete) {
  PORO_RETURN_IF_ERROR(Flush());
  ProcessAvailable();
  // Waiting for more than can ever complete would block forever.
  const size_t want = std::min(min_complete, in_flight());
  while (pending_.size() < want && kernel_in_flight_ > 0) PORO_RETURN_IF_ERROR(WaitAndProcess());
  PORO_RETURN_IF_ERROR(Flush());  // remainders requeued above keep running while the caller works
  const size_t n = std::min(out.size(), pending_.size());
  for (size_t i = 0; i < n; ++i) {
    out[i] = pending_.front();
    pending_.pop_front();
  }
  return n;
}

}  // namespace pororoca::io
