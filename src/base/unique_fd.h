// UniqueFd: sole owner of a file descriptor. Move-only; the destructor closes and ignores errors,
// so write paths call Close() to see EIO. Never retries close() on EINTR (Linux frees the fd).
#pragma once

#include <sys/types.h>

#include <string>
#include <utility>

#include "pororoca/status.h"

namespace pororoca {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    Reset(std::exchange(o.fd_, -1));
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { Reset(); }

  // open(2) with O_CLOEXEC added; the error names the path.
  static Result<UniqueFd> Open(const std::string& path, int flags, mode_t mode = 0);
  // openat(2) relative to dirfd, O_CLOEXEC added.
  static Result<UniqueFd> OpenAt(int dirfd, const std::string& name, int flags, mode_t mode = 0);

  [[nodiscard]] Status Close();
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int Release() { return std::exchange(fd_, -1); }
  void Reset(int fd = -1) noexcept;

 private:
  int fd_ = -1;
};

}  // namespace pororoca
