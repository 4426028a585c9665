// ExportRoot: the directory a daemon exports; every path a peer or a local user names is confined
// to it. Paths are checked lexically (no "..", no "." or empty components) and resolved with
// openat2(RESOLVE_BENEATH), so neither ".." nor a symlink (absolute or relative) can leave the
// root, even if the tree changes while we look at it.
//
// Thread-safety: immutable after Create(); all methods may be called from any thread.
#pragma once

#include <sys/stat.h>

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "base/mutex.h"
#include "base/unique_fd.h"
#include "pororoca/status.h"

namespace pororoca::engine {

class ExportRoot {
 public:
  static Result<ExportRoot> Create(const std::string& path);

  const std::string& path() const { return path_; }
  int fd() const { return fd_.get(); }

  // Turns a path as a user writes it ("/a/b", "a/b/", "/") into a root-relative path ("a/b", "").
  // ".." anywhere is refused: "path escapes the export root".
  Result<std::string> Normalize(std::string_view user_path) const;
  // For local paths given as absolute file-system paths: "/export/a/b" -> "a/b" when the root is
  // /export; anything outside the root is refused.
  Result<std::string> RelativeFromAbsolute(std::string_view abs_path) const;

  // openat2(root, rel, flags, RESOLVE_BENEATH|RESOLVE_NO_MAGICLINKS). "" opens the root itself.
  Result<UniqueFd> Open(const std::string& rel, int flags, mode_t mode = 0) const;
  // Opens the parent directory of `rel` (beneath the root) and returns it with the last component.
  Result<std::pair<UniqueFd, std::string>> OpenParent(const std::string& rel) const;
  // lstat of `rel` (the last component is not followed). kNotFound if missing.
  Result<struct stat> Lstat(const std::string& rel) const;
  // The root-relative path a symbolic link `rel` leads to, every link on the way followed (relative
  // or absolute targets), if that is beneath the root; else kPermissionDenied (outside the root),
  // kNotFound (it dangles) or kInvalidArgument (a loop). It only names the path: opening it goes
  // through Open(), which stays beneath the root whatever changes meanwhile.
  Result<std::string> ResolveLink(const std::string& rel) const;
  // Splits a root-relative path into its directory and last component: "a/b/c" -> {"a/b", "c"},
  // "c" -> {"", "c"}.
  static std::pair<std::string, std::string> Split(std::string_view rel);
  // Joins root-relative paths: Join("a", "b") = "a/b", Join("", "b") = "b", Join("a", "") = "a".
  static std::string Join(std::string_view a, std::string_view b);
  // The file-system path for messages: root + "/" + rel.
  std::string Display(std::string_view rel) const;

 private:
  ExportRoot(std::string path, UniqueFd fd) : path_(std::move(path)), fd_(std::move(fd)) {}
  std::string path_;
  UniqueFd fd_;
};

// The directories one session works in, each opened beneath the root once (ExportRoot::Open) and
// then used with *at() calls on single names: a tree of many small files costs one path resolution
// per directory instead of several per file. A directory is the one that was beneath the root when
// it was first opened here; renaming it elsewhere during the session does not redirect the session.
//
// Thread-safety: all methods may be called from any thread.
class DirCache {
 public:
  struct Dir {
    UniqueFd fd;            // O_RDONLY | O_DIRECTORY, or O_PATH where the directory is not readable
    bool readable = false;  // fd can be fsync'ed and listed
    dev_t dev = 0;          // the file system it is on
  };
  explicit DirCache(const ExportRoot& root, size_t max_entries = 4096)
      : root_(root), max_entries_(max_entries) {}

  // The directory `rel` (root-relative, "" is the root). Errors as ExportRoot::Open. A failure is
  // not remembered: a directory created later is found.
  Result<std::shared_ptr<const Dir>> Get(const std::string& rel) PORO_EXCLUDES(mu_);
  // Splits `rel` into its directory (from the cache) and its last component.
  Result<std::pair<std::shared_ptr<const Dir>, std::string>> Parent(const std::string& rel);
  size_t size() const PORO_EXCLUDES(mu_);

 private:
  const ExportRoot& root_;
  const size_t max_entries_;
  mutable Mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<const Dir>> dirs_ PORO_GUARDED_BY(mu_);
};

}  // namespace pororoca::engine
