// UringQueue: the io_uring IoQueue. Owned by one thread; cannot be copied or moved.
//
// Each op is a heap UringOp whose pointer travels through the kernel as sqe user_data and is
// re-adopted at its CQE. Short reads/writes, -EAGAIN and -EINTR are resubmitted inside; the caller
// sees one completion per Submit*. At most `depth` ops are in the kernel at once; beyond that
// Submit* reaps internally into a pending list, so a caller that submits without reaping never
// deadlocks. The destructor cancels and drains every op still in the kernel.
#pragma once

#include <liburing.h>

#include <deque>
#include <memory>

#include "pororoca/storage.h"

namespace pororoca::io {

class UringQueue final : public IoQueue {
 public:
  // Sets up the ring and probes the opcodes we need (kNotSupported if missing). With
  // opts.registered, registers one fixed buffer per pool buffer; if that fails, logs and uses plain
  // read/write.
  static Result<std::unique_ptr<UringQueue>> Create(const IoQueueOptions& opts);
  ~UringQueue() override;
  UringQueue(const UringQueue&) = delete;
  UringQueue& operator=(const UringQueue&) = delete;

  Status SubmitRead(int fd, uint64_t offset, std::span<std::byte> buf, uint64_t tag) override;
  Status SubmitWrite(int fd, uint64_t offset, std::span<const std::byte> buf, uint64_t tag) override;
  Status SubmitFsync(int fd, bool datasync, uint64_t tag) override;
  Status Flush() override;
  Result<size_t> Reap(std::span<Completion> out, size_t min_complete) override;
  size_t in_flight() const override { return kernel_in_flight_ + pending_.size(); }
  const char* name() const override { return "io_uring"; }

  // True if the pool's buffers are registered with the ring.
  bool fixed_buffers() const { return fixed_count_ > 0; }
  // How many SQEs used read_fixed/write_fixed so far (for tests and stats).
  uint64_t fixed_sqes() const { return fixed_sqes_; }

 private:
  struct Op;
  explicit UringQueue(unsigned depth) : depth_(depth) {}
  Status Submit(std::unique_ptr<Op> op);
  Status Prep(std::unique_ptr<Op> op);
  void Complete(const Op& op, int64_t result);
  void HandleCqe(io_uring_cqe* cqe);
  void ProcessAvailable();
  Status WaitAndProcess();
  int FixedIndex(const std::byte* p, size_t len) const;
  void Drain();

  io_uring ring_{};
  bool ring_ready_ = false;
  bool can_cancel_ = false;
  unsigned depth_;
  size_t kernel_in_flight_ = 0;     // ops holding an SQE or awaiting their CQE
  std::deque<Completion> pending_;  // finished, not yet handed out by Reap()
  const std::byte* fixed_base_ = nullptr;
  size_t fixed_size_ = 0;  // bytes per registered buffer
  size_t fixed_count_ = 0;
  uint64_t fixed_sqes_ = 0;
};

}  // namespace pororoca::io
