#include "engine/export_root.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>

namespace pororoca::engine {

Result<ExportRoot> ExportRoot::Create(const std::string& path) {
  char real[PATH_MAX];
  if (::realpath(path.c_str(), real) == nullptr) return Status::IoError("export root " + path, errno);
  PORO_ASSIGN_OR_RETURN(UniqueFd fd, UniqueFd::Open(real, O_PATH | O_DIRECTORY));
  return ExportRoot(real, std::move(fd));
}

Result<std::string> ExportRoot::Normalize(std::string_view user_path) const {
  std::string out;
  size_t i = 0;
  while (i <= user_path.size()) {
    size_t j = user_path.find('/', i);
    if (j == std::string_view::npos) j = user_path.size();
    std::string_view comp = user_path.substr(i, j - i);
    if (comp == "..") {
      return Status::PermissionDenied("path escapes the export root: " + std::string(user_path));
    }
    if (!comp.empty() && comp != ".") {
      if (comp.size() > NAME_MAX)
        return Status::InvalidArgument("path component too long: " + std::string(user_path));
      if (!out.empty()) out += '/';
      out.append(comp);
    }
    i = j + 1;
  }
  if (user_path.find('\0') != std::string_view::npos) return Status::InvalidArgument("path contains NUL");
  if (out.size() > 4096) return Status::InvalidArgument("path too long");
  return out;
}

Result<std::string> ExportRoot::RelativeFromAbsolute(std::string_view abs_path) const {
  if (abs_path.empty() || abs_path.front() != '/') {
    return Status::InvalidArgument("local path must be absolute: " + std::string(abs_path));
  }
  PORO_ASSIGN_OR_RETURN(std::string norm, Normalize(abs_path));
  std::string root_rel = path_ == "/" ? std::string() : path_.substr(1);
  if (root_rel.empty()) return norm;
  if (norm == root_rel) return std::string();
  if (norm.size() > root_rel.size() && norm.compare(0, root_rel.size(), root_rel) == 0 &&
      norm[root_rel.size()] == '/') {
    return norm.substr(root_rel.size() + 1);
  }
  return Status::PermissionDenied("path " + std::string(abs_path) + " is outside the export root " + path_ +
                                  " of this daemon");
}

Result<UniqueFd> ExportRoot::Open(const std::string& rel, int flags, mode_t mode) const {
  struct open_how how {};
  how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
  // O_TMPFILE includes the O_DIRECTORY bit: test for all of it, or every directory open would pass
  // a mode (which openat2 refuses without O_CREAT / O_TMPFILE).
  how.mode = ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE) ? mode : 0;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
  const char* p = rel.empty() ? "." : rel.c_str();
  long fd;
  do {
    fd = ::syscall(SYS_openat2, fd_.get(), p, &how, sizeof how);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    int err = errno;
    if (err == EXDEV) {
      return Status::PermissionDenied("path escapes the export root (through a symlink or ..): " +
                                      Display(rel));
    }
    return Status::IoError("open " + Display(rel), err);
  }
  return UniqueFd(static_cast<int>(fd));
}

Result<std::string> ExportRoot::ResolveLink(const std::string& rel) const {
  auto canonical = [](const std::string& p) -> Result<std::string> {
    char* r = ::realpath(p.c_str(), nullptr);
    if (r == nullptr) return Status::IoError("realpath", errno);
    std::string out(r);
    ::free(r);
    return out;
  };
  PORO_ASSIGN_OR_RETURN(std::string root, canonical(path_));
  auto target = canonical(path_ == "/" ? "/" + rel : path_ + "/" + rel);
  if (!target.has_value()) {
    const int err = target.error().sys_errno();
    if (err == ENOENT)
      return Status::NotFound("source is a symbolic link to a path that does not exist: " + Display(rel));
    if (err == ELOOP) return Status::InvalidArgument("source is a symbolic link in a loop: " + Display(rel));
    return Status::IoError("resolve " + Display(rel), err);
  }
  if (*target == root) return std::string();
  if (root == "/") return target->substr(1);
  if (target->size() > root.size() && target->compare(0, root.size(), root) == 0 &&
      (*target)[root.size()] == '/') {
    return target->substr(root.size() + 1);
  }
  return Status::PermissionDenied("source is a symbolic link that leads outside the export root: " +
                                  Display(rel));
}

Result<std::pair<UniqueFd, std::string>> ExportRoot::OpenParent(const std::string& rel) const {
  if (rel.empty()) return Status::InvalidArgument("the export root has no parent inside the root");
  auto [dir, name] = Split(rel);
  PORO_ASSIGN_OR_RETURN(UniqueFd fd, Open(dir, O_PATH | O_DIRECTORY));
  return std::make_pair(std::move(fd), std::move(name));
}

Result<struct stat> ExportRoot::Lstat(const std::string& rel) const {
  struct stat st {};
  if (rel.empty()) {
    if (::fstat(fd_.get(), &st) != 0) return Status::IoError("stat " + path_, errno);
    return st;
  }
  PORO_ASSIGN_OR_RETURN(auto parent, OpenParent(rel));
  if (::fstatat(parent.first.get(), parent.second.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return Status::IoError("stat " + Display(rel), errno);
  }
  return st;
}

Result<std::shared_ptr<const DirCache::Dir>> DirCache::Get(const std::string& rel) {
  {
    MutexLock lock(&mu_);
    auto it = dirs_.find(rel);
    if (it != dirs_.end()) return it->second;
  }
  auto d = std::make_shared<Dir>();
  auto fd = root_.Open(rel, O_RDONLY | O_DIRECTORY);
  if (fd.has_value()) {
    d->readable = true;
  } else if (fd.error().sys_errno() == EACCES) {  // searchable but not readable: still usable for *at()
    fd = root_.Open(rel, O_PATH | O_DIRECTORY);
  }
  if (!fd.has_value()) return fd.error();
  d->fd = std::move(*fd);
  struct stat st {};
  if (::fstat(d->fd.get(), &st) != 0) return Status::IoError("stat " + root_.Display(rel), errno);
  d->dev = st.st_dev;
  MutexLock lock(&mu_);
  // Bounded: past the limit the table starts over (entries in use stay open through their holders).
  if (dirs_.size() >= max_entries_) dirs_.clear();
  auto [it, inserted] = dirs_.emplace(rel, std::move(d));
  return it->second;  // another thread may have opened it meanwhile: both are the same directory
}

Result<std::pair<std::shared_ptr<const DirCache::Dir>, std::string>> DirCache::Parent(
    const std::string& rel) {
  if (rel.empty()) return Status::InvalidArgument("the export root has no parent inside the root");
  auto [dir, name] = ExportRoot::Split(rel);
  PORO_ASSIGN_OR_RETURN(auto d, Get(dir));
  return std::make_pair(std::move(d), std::move(name));
}

size_t DirCache::size() const {
  MutexLock lock(&mu_);
  return dirs_.size();
}

std::pair<std::string, std::string> ExportRoot::Split(std::string_view rel) {
  size_t slash = rel.rfind('/');
  if (slash == std::string_view::npos) return {std::string(), std::string(rel)};
  return {std::string(rel.substr(0, slash)), std::string(rel.substr(slash + 1))};
}

std::string ExportRoot::Join(std::string_view a, std::string_view b) {
  if (a.empty()) return std::string(b);
  if (b.empty()) return std::string(a);
  std::string out(a);
  out += '/';
  out.append(b);
  return out;
}

std::string ExportRoot::Display(std::string_view rel) const {
  if (rel.empty()) return path_;
  std::string out;
  out.reserve(path_.size() + 1 + rel.size());
  if (path_ != "/") out = path_;
  out += '/';
  out.append(rel);
  return out;
}

}  // namespace pororoca::engine
