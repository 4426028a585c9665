#include "daemon/export_query.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

#include "pororoca/checksum.h"

namespace pororoca::daemon {

using nlohmann::json;

namespace {

const char* TypeName(mode_t m) {
  if (S_ISREG(m)) return "file";
  if (S_ISDIR(m)) return "dir";
  if (S_ISLNK(m)) return "link";
  return "other";
}

json Entry(const std::string& name, const struct stat& st) {
  return json{{"name", name},
              {"type", TypeName(st.st_mode)},
              {"size", static_cast<uint64_t>(S_ISREG(st.st_mode) || S_ISLNK(st.st_mode) ? st.st_size : 0)},
              {"mtime_ns", int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec},
              {"mode", static_cast<unsigned>(st.st_mode & 07777)}};
}

}  // namespace

Result<json> ListExport(const engine::ExportRoot& root, const std::string& rel, uint32_t limit) {
  if (limit == 0) limit = kDefaultListLimit;
  limit = std::min(limit, kMaxListLimit);
  PORO_ASSIGN_OR_RETURN(struct stat st, root.Lstat(rel));
  if (!S_ISDIR(st.st_mode)) {
    const std::string name = engine::ExportRoot::Split(rel).second;
    return json{
        {"type", TypeName(st.st_mode)}, {"entries", json::array({Entry(name, st)})}, {"truncated", false}};
  }
  PORO_ASSIGN_OR_RETURN(UniqueFd fd, root.Open(rel, O_RDONLY | O_DIRECTORY));
  DIR* d = ::fdopendir(fd.get());
  if (d == nullptr) return Status::IoError("list " + root.Display(rel), errno);
  fd.Release();  // the DIR owns it now
  // The `limit` first names in order, kept in a max-heap: a huge directory costs no more memory.
  std::vector<std::string> names;
  bool truncated = false;
  errno = 0;
  while (struct dirent* de = ::readdir(d)) {
    std::string n = de->d_name;
    if (n == "." || n == "..") continue;
    if (names.size() < limit) {
      names.push_back(std::move(n));
      std::push_heap(names.begin(), names.end());
    } else {
      truncated = true;
      if (n < names.front()) {
        std::pop_heap(names.begin(), names.end());
        names.back() = std::move(n);
        std::push_heap(names.begin(), names.end());
      }
    }
    errno = 0;
  }
  const int read_errno = errno;
  std::sort_heap(names.begin(), names.end());
  json entries = json::array();
  for (size_t i = 0; i < names.size(); ++i) {
    struct stat es {};
    if (::fstatat(::dirfd(d), names[i].c_str(), &es, AT_SYMLINK_NOFOLLOW) != 0) continue;  // gone meanwhile
    entries.push_back(Entry(names[i], es));
  }
  ::closedir(d);
  if (read_errno != 0) return Status::IoError("list " + root.Display(rel), read_errno);
  return json{{"type", "dir"}, {"entries", std::move(entries)}, {"truncated", truncated}};
}

Result<json> ChecksumExport(const engine::ExportRoot& root, const std::string& rel, uint32_t chunk_size,
                            const std::atomic<bool>* stop) {
  if (chunk_size == 0) return Status::InvalidArgument("checksum: chunk size 0");
  PORO_ASSIGN_OR_RETURN(struct stat st, root.Lstat(rel));
  if (!S_ISREG(st.st_mode)) {
    return Status::InvalidArgument(root.Display(rel) + " is a " +
                                   (S_ISDIR(st.st_mode) ? "directory" : "special file") +
                                   ": a checksum is of a regular file");
  }
  // Non-blocking, then checked again on the descriptor: a FIFO put in its place meanwhile must not
  // hold this thread in open() or read().
  PORO_ASSIGN_OR_RETURN(UniqueFd fd, root.Open(rel, O_RDONLY | O_NOFOLLOW | O_NONBLOCK));
  struct stat fst {};
  if (::fstat(fd.get(), &fst) != 0) return Status::IoError("stat " + root.Display(rel), errno);
  if (!S_ISREG(fst.st_mode))
    return Status::InvalidArgument(root.Display(rel) + " is no longer a regular file");
  ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  std::vector<std::byte> buf(chunk_size);
  FileDigester file;
  uint64_t off = 0, size = 0;
  for (;;) {
    if (stop != nullptr && stop->load())
      return Status::Cancelled("checksum of " + root.Display(rel) + ": stopping");
    // One chunk, read whole (a short read is not the end of it).
    size_t have = 0;
    while (have < buf.size()) {
      ssize_t n = ::pread(fd.get(), buf.data() + have, buf.size() - have, static_cast<off_t>(off + have));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Status::IoError("read " + root.Display(rel), errno);
      if (n == 0) break;
      have += static_cast<size_t>(n);
    }
    if (have == 0) break;
    file.AddChunk(Xxh3_128(std::span<const std::byte>(buf.data(), have)));
    off += have;
    size += have;
    if (have < buf.size()) break;
  }
  return json{{"size", size},
              {"mtime_ns", int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec},
              {"chunk_size", chunk_size},
              {"digest", file.Finish().ToHex()},
              {"algorithm", "xxh3-128 over the xxh3-128 digests of the chunks"}};
}

}  // namespace pororoca::daemon
