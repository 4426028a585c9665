#include "base/unique_fd.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

namespace pororoca {

Result<UniqueFd> UniqueFd::Open(const std::string& path, int flags, mode_t mode) {
  int fd;
  do {
    fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return Status::IoError("open " + path, errno);
  return UniqueFd(fd);
}

Result<UniqueFd> UniqueFd::OpenAt(int dirfd, const std::string& name, int flags, mode_t mode) {
  int fd;
  do {
    fd = ::openat(dirfd, name.c_str(), flags | O_CLOEXEC, mode);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return Status::IoError("open " + name, errno);
  return UniqueFd(fd);
}

Status UniqueFd::Close() {
  if (fd_ < 0) return Status::OK();
  int fd = std::exchange(fd_, -1);
  if (::close(fd) != 0 && errno != EINTR) return Status::IoError("close", errno);
  return Status::OK();
}

void UniqueFd::Reset(int fd) noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

}  // namespace pororoca
