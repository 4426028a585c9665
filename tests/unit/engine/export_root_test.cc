#include "engine/export_root.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <memory>
#include <string>
#include <utility>

#include "support/temp_dir.h"

namespace pororoca::engine {
namespace {

bool Contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

void MakeDir(const std::string& path, mode_t mode = 0755) {
  REQUIRE_MESSAGE(::mkdir(path.c_str(), mode) == 0, "mkdir ", path, ": ", std::strerror(errno));
}

void WriteFile(const std::string& path, const std::string& content) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  REQUIRE_MESSAGE(fd >= 0, "open ", path, ": ", std::strerror(errno));
  REQUIRE(::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size()));
  REQUIRE(::close(fd) == 0);
}

void MakeSymlink(const std::string& target, const std::string& link) {
  REQUIRE_MESSAGE(::symlink(target.c_str(), link.c_str()) == 0, "symlink ", link, ": ", std::strerror(errno));
}

std::string ReadAll(int fd) {
  std::string out;
  char buf[256];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    REQUIRE(n >= 0);
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

// A temporary directory holding "root" (the export root, with "f", "sub/g" and "sub/deep/") and
// "outside" (a sibling of the root, with "secret"): the place a symlink must never reach.
struct Tree {
  test::TempDir tmp;
  std::string root_path = tmp / "root";
  std::string outside = tmp / "outside";

  Tree() {
    MakeDir(root_path);
    MakeDir(outside);
    WriteFile(outside + "/secret", "secret");
    WriteFile(root_path + "/f", "hello");
    MakeDir(root_path + "/sub");
    WriteFile(root_path + "/sub/g", "inner");
    MakeDir(root_path + "/sub/deep");
  }
  ExportRoot Root() const {
    auto r = ExportRoot::Create(root_path);
    REQUIRE_MESSAGE(r.has_value(), r.status().ToString());
    return std::move(r).value();
  }
};

ExportRoot FileSystemRoot() {
  auto r = ExportRoot::Create("/");
  REQUIRE_MESSAGE(r.has_value(), r.status().ToString());
  return std::move(r).value();
}

void CheckEscapes(const Result<UniqueFd>& r) {
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().code() == Code::kPermissionDenied);
  CHECK_MESSAGE(Contains(r.error().message(), "escapes"), r.error().ToString());
}

TEST_SUITE("engine.export_root") {
  // ---------------------------------------------------------------- Create

  TEST_CASE("Create canonicalises the root path and keeps an open directory fd") {
    Tree t;
    MakeSymlink(t.root_path, t.tmp / "alias");
    auto r = ExportRoot::Create(t.tmp / "alias/./");
    REQUIRE(r.has_value());
    char real[PATH_MAX];
    REQUIRE(::realpath(t.root_path.c_str(), real) != nullptr);
    CHECK(r->path() == std::string(real));
    struct stat a {
    }, b{};
    REQUIRE(::fstat(r->fd(), &a) == 0);
    REQUIRE(::stat(t.root_path.c_str(), &b) == 0);
    CHECK(S_ISDIR(a.st_mode));
    CHECK(a.st_ino == b.st_ino);
    CHECK(a.st_dev == b.st_dev);
  }

  TEST_CASE("Create of a missing path or of a regular file fails") {
    Tree t;
    auto missing = ExportRoot::Create(t.tmp / "nope");
    REQUIRE_FALSE(missing.has_value());
    CHECK(missing.error().code() == Code::kNotFound);
    auto file = ExportRoot::Create(t.root_path + "/f");
    REQUIRE_FALSE(file.has_value());
    CHECK(file.error().sys_errno() == ENOTDIR);
  }

  // ---------------------------------------------------------------- Normalize

  TEST_CASE("Normalize turns user paths into root-relative paths") {
    Tree t;
    ExportRoot root = t.Root();
    struct {
      const char* in;
      const char* want;
    } cases[] = {
        {"/a/b", "a/b"},
        {"a//b/./c/", "a/b/c"},
        {"/", ""},
        {"", ""},
        {".", ""},
        {"./", ""},
        {"/./a/.", "a"},
        {"a", "a"},
        {"///a///", "a"},
        {"...", "..."},
        {"a/..b", "a/..b"},
        {"b../.c", "b../.c"},
        {"x/.hidden/", "x/.hidden"},
    };
    for (const auto& c : cases) {
      CAPTURE(c.in);
      auto r = root.Normalize(c.in);
      REQUIRE_MESSAGE(r.has_value(), r.status().ToString());
      CHECK(*r == c.want);
    }
  }

  TEST_CASE("Normalize refuses any .. component") {
    Tree t;
    ExportRoot root = t.Root();
    for (const char* in :
         {"..", "/..", "../", "../a", "a/..", "a/../b", "/a/b/..", "a/b/../../..", "./..", "a//../"}) {
      CAPTURE(in);
      auto r = root.Normalize(in);
      REQUIRE_FALSE(r.has_value());
      CHECK(r.error().code() == Code::kPermissionDenied);
      CHECK_MESSAGE(Contains(r.error().message(), "escapes the export root"), r.error().ToString());
    }
  }

  TEST_CASE("Normalize accepts a NAME_MAX component and refuses a longer one") {
    Tree t;
    ExportRoot root = t.Root();
    const std::string longest(NAME_MAX, 'x');
    auto ok = root.Normalize("a/" + longest + "/b");
    REQUIRE(ok.has_value());
    CHECK(*ok == "a/" + longest + "/b");

    const std::string too_long(NAME_MAX + 1, 'x');
    for (const std::string& in : {too_long, "/" + too_long, "a/" + too_long + "/b", "a/" + too_long}) {
      auto r = root.Normalize(in);
      REQUIRE_FALSE(r.has_value());
      CHECK(r.error().code() == Code::kInvalidArgument);
      CHECK(Contains(r.error().message(), "too long"));
    }
  }

  TEST_CASE("Normalize refuses a path that is too long in total") {
    Tree t;
    ExportRoot root = t.Root();
    std::string in;
    for (int i = 0; i < 20; ++i) in += "/" + std::string(NAME_MAX, static_cast<char>('a' + i));
    auto r = root.Normalize(in);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code() == Code::kInvalidArgument);
  }

  TEST_CASE("Normalize refuses NUL anywhere in the path") {
    Tree t;
    ExportRoot root = t.Root();
    for (const std::string& in :
         {std::string("a\0b", 3), std::string("\0", 1), std::string("a/\0", 3), std::string("/x/y\0/z", 7)}) {
      auto r = root.Normalize(in);
      REQUIRE_FALSE(r.has_value());
      CHECK(r.error().code() == Code::kInvalidArgument);
      CHECK(Contains(r.error().message(), "NUL"));
    }
  }

  // ---------------------------------------------------------------- RelativeFromAbsolute

  TEST_CASE("RelativeFromAbsolute maps paths inside the root") {
    Tree t;
    ExportRoot root = t.Root();
    const std::string& p = root.path();
    struct {
      std::string in;
      const char* want;
    } cases[] = {
        {p + "/a/b", "a/b"}, {p, ""}, {p + "/", ""}, {p + "/.", ""}, {p + "//a/./b/", "a/b"}, {p + "/f", "f"},
    };
    for (const auto& c : cases) {
      CAPTURE(c.in);
      auto r = root.RelativeFromAbsolute(c.in);
      REQUIRE_MESSAGE(r.has_value(), r.status().ToString());
      CHECK(*r == c.want);
    }
  }

  TEST_CASE("RelativeFromAbsolute refuses paths outside the root") {
    Tree t;
    ExportRoot root = t.Root();
    const std::string& p = root.path();
    const std::string parent = p.substr(0, p.rfind('/'));
    for (const std::string& in :
         {std::string("/"), std::string("/etc/passwd"), parent, parent + "/outside/secret", p + "X",
          p + "X/f", p + ".d/f", p.substr(0, p.size() - 1)}) {
      CAPTURE(in);
      auto r = root.RelativeFromAbsolute(in);
      REQUIRE_FALSE(r.has_value());
      CHECK(r.error().code() == Code::kPermissionDenied);
    }
  }

  TEST_CASE("RelativeFromAbsolute refuses .. even when it would land inside the root") {
    Tree t;
    ExportRoot root = t.Root();
    for (const std::string& in : {root.path() + "/../outside", root.path() + "/sub/../f"}) {
      auto r = root.RelativeFromAbsolute(in);
      REQUIRE_FALSE(r.has_value());
      CHECK(r.error().code() == Code::kPermissionDenied);
      CHECK(Contains(r.error().message(), "escapes the export root"));
    }
  }

  TEST_CASE("RelativeFromAbsolute refuses relative paths") {
    Tree t;
    ExportRoot root = t.Root();
    for (const char* in : {"", "a/b", "./a", "f", "root/f"}) {
      CAPTURE(in);
      auto r = root.RelativeFromAbsolute(in);
      REQUIRE_FALSE(r.has_value());
      CHECK(r.error().code() == Code::kInvalidArgument);
      CHECK(Contains(r.error().message(), "absolute"));
    }
  }

  TEST_CASE("RelativeFromAbsolute with the root at / accepts every absolute path") {
    ExportRoot root = FileSystemRoot();
    CHECK(root.path() == "/");
    auto a = root.RelativeFromAbsolute("/etc/x");
    REQUIRE(a.has_value());
    CHECK(*a == "etc/x");
    auto b = root.RelativeFromAbsolute("/");
    REQUIRE(b.has_value());
    CHECK(*b == "");
    auto c = root.RelativeFromAbsolute("//usr/./lib/");
    REQUIRE(c.has_value());
    CHECK(*c == "usr/lib");
    auto d = root.RelativeFromAbsolute("usr");
    CHECK_FALSE(d.has_value());
  }

  // ---------------------------------------------------------------- Open

  TEST_CASE("Open reads a file inside the root and opens the root itself for \"\"") {
    Tree t;
    ExportRoot root = t.Root();
    auto f = root.Open("f", O_RDONLY);
    REQUIRE_MESSAGE(f.has_value(), f.status().ToString());
    CHECK(ReadAll(f->get()) == "hello");
    auto g = root.Open("sub/g", O_RDONLY);
    REQUIRE(g.has_value());
    CHECK(ReadAll(g->get()) == "inner");
    CHECK((::fcntl(g->get(), F_GETFD) & FD_CLOEXEC) != 0);

    auto self = root.Open("", O_RDONLY | O_DIRECTORY);
    REQUIRE(self.has_value());
    struct stat a {
    }, b{};
    REQUIRE(::fstat(self->get(), &a) == 0);
    REQUIRE(::stat(t.root_path.c_str(), &b) == 0);
    CHECK(a.st_ino == b.st_ino);
  }

  TEST_CASE("Open with O_CREAT creates the file beneath the root with the given mode") {
    Tree t;
    ExportRoot root = t.Root();
    mode_t old = ::umask(022);
    auto r = root.Open("sub/new", O_WRONLY | O_CREAT | O_EXCL, 0640);
    ::umask(old);
    REQUIRE_MESSAGE(r.has_value(), r.status().ToString());
    CHECK(test::ModeOf(t.root_path + "/sub/new") == 0640);
    auto again = root.Open("sub/new", O_WRONLY | O_CREAT | O_EXCL, 0640);
    REQUIRE_FALSE(again.has_value());
    CHECK(again.error().code() == Code::kAlreadyExists);
  }

  TEST_CASE("Open of a missing file is NotFound and names the full path") {
    Tree t;
    ExportRoot root = t.Root();
    auto r = root.Open("sub/missing", O_RDONLY);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code() == Code::kNotFound);
    CHECK(Contains(r.error().message(), root.path() + "/sub/missing"));
  }

  TEST_CASE("Open refuses .. and absolute paths that leave the root") {
    Tree t;
    ExportRoot root = t.Root();
    CheckEscapes(root.Open("..", O_RDONLY | O_DIRECTORY));
    CheckEscapes(root.Open("../outside/secret", O_RDONLY));
    CheckEscapes(root.Open("sub/../../outside/secret", O_RDONLY));
    CheckEscapes(root.Open(t.outside + "/secret", O_RDONLY));
    // ".." that stays beneath the root is resolved by the kernel and allowed.
    auto ok = root.Open("sub/../f", O_RDONLY);
    REQUIRE(ok.has_value());
    CHECK(ReadAll(ok->get()) == "hello");
  }

  TEST_CASE("Open does not follow a symlink out of the root") {
    Tree t;
    ExportRoot root = t.Root();
    MakeSymlink(t.outside + "/secret", t.root_path + "/abs_link");
    MakeSymlink("../../outside/secret", t.root_path + "/sub/rel_link");
    MakeSymlink("../outside", t.root_path + "/dir_link");
    MakeSymlink(t.outside, t.root_path + "/sub/abs_dir_link");
    CheckEscapes(root.Open("abs_link", O_RDONLY));
    CheckEscapes(root.Open("sub/rel_link", O_RDONLY));
    CheckEscapes(root.Open("dir_link/secret", O_RDONLY));
    CheckEscapes(root.Open("dir_link", O_RDONLY | O_DIRECTORY));
    CheckEscapes(root.Open("sub/abs_dir_link/secret", O_RDONLY));
    // Nothing outside was created or changed.
    CheckEscapes(root.Open("dir_link/created", O_WRONLY | O_CREAT, 0644));
    CHECK(::access((t.outside + "/created").c_str(), F_OK) != 0);
  }

  TEST_CASE("Open follows a relative symlink that stays inside the root") {
    Tree t;
    ExportRoot root = t.Root();
    MakeSymlink("../f", t.root_path + "/sub/to_f");
    MakeSymlink("sub", t.root_path + "/to_sub");
    auto a = root.Open("sub/to_f", O_RDONLY);
    REQUIRE_MESSAGE(a.has_value(), a.status().ToString());
    CHECK(ReadAll(a->get()) == "hello");
    auto b = root.Open("to_sub/g", O_RDONLY);
    REQUIRE(b.has_value());
    CHECK(ReadAll(b->get()) == "inner");
  }

  // ---------------------------------------------------------------- OpenParent / Lstat

  TEST_CASE("Open of a directory with a mode passes no mode (O_TMPFILE shares the O_DIRECTORY bit)") {
    Tree t;
    ExportRoot root = t.Root();
    auto fd = root.Open("sub", O_RDONLY | O_DIRECTORY, 0755);
    CHECK_MESSAGE(fd.has_value(), (fd.has_value() ? std::string() : fd.error().ToString()));
  }

  TEST_CASE("OpenParent returns the parent directory and the last component") {
    Tree t;
    ExportRoot root = t.Root();
    auto r = root.OpenParent("sub/deep/leaf");
    REQUIRE_MESSAGE(r.has_value(), r.status().ToString());
    CHECK(r->second == "leaf");
    struct stat a {
    }, b{};
    REQUIRE(::fstat(r->first.get(), &a) == 0);
    REQUIRE(::stat((t.root_path + "/sub/deep").c_str(), &b) == 0);
    CHECK(a.st_ino == b.st_ino);

    auto top = root.OpenParent("f");
    REQUIRE(top.has_value());
    CHECK(top->second == "f");
    struct stat st {};
    CHECK(::fstatat(top->first.get(), "f", &st, AT_SYMLINK_NOFOLLOW) == 0);
    CHECK(st.st_size == 5);

    auto none = root.OpenParent("");
    REQUIRE_FALSE(none.has_value());
    CHECK(none.error().code() == Code::kInvalidArgument);
  }

  TEST_CASE("OpenParent refuses a parent reached through a symlink out of the root") {
    Tree t;
    ExportRoot root = t.Root();
    MakeSymlink(t.outside, t.root_path + "/esc");
    auto r = root.OpenParent("esc/secret");
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code() == Code::kPermissionDenied);
    auto missing = root.OpenParent("nodir/x");
    REQUIRE_FALSE(missing.has_value());
    CHECK(missing.error().code() == Code::kNotFound);
  }

  TEST_CASE("Lstat reports files, does not follow the last symlink and is NotFound when missing") {
    Tree t;
    ExportRoot root = t.Root();
    MakeSymlink(t.outside + "/secret", t.root_path + "/abs_link");
    MakeSymlink(t.outside, t.root_path + "/esc");

    auto f = root.Lstat("f");
    REQUIRE(f.has_value());
    CHECK(S_ISREG(f->st_mode));
    CHECK(f->st_size == 5);

    auto self = root.Lstat("");
    REQUIRE(self.has_value());
    CHECK(S_ISDIR(self->st_mode));

    auto link = root.Lstat("abs_link");
    REQUIRE(link.has_value());
    CHECK(S_ISLNK(link->st_mode));

    auto missing = root.Lstat("sub/missing");
    REQUIRE_FALSE(missing.has_value());
    CHECK(missing.error().code() == Code::kNotFound);
    CHECK(missing.error().sys_errno() == ENOENT);

    auto missing_dir = root.Lstat("nodir/missing");
    REQUIRE_FALSE(missing_dir.has_value());
    CHECK(missing_dir.error().code() == Code::kNotFound);

    auto through = root.Lstat("esc/secret");
    REQUIRE_FALSE(through.has_value());
    CHECK(through.error().code() == Code::kPermissionDenied);
  }

  // ---------------------------------------------------------------- Join / Display

  TEST_CASE("Join joins root-relative paths") {
    CHECK(ExportRoot::Join("a", "b") == "a/b");
    CHECK(ExportRoot::Join("", "b") == "b");
    CHECK(ExportRoot::Join("a", "") == "a");
    CHECK(ExportRoot::Join("", "") == "");
    CHECK(ExportRoot::Join("a/b", "c/d") == "a/b/c/d");
  }

  TEST_CASE("Display prefixes the root path") {
    Tree t;
    ExportRoot root = t.Root();
    CHECK(root.Display("") == root.path());
    CHECK(root.Display("a/b") == root.path() + "/a/b");
    CHECK(root.Display("f") == root.path() + "/f");
  }

  TEST_CASE("Display with the root at / has a single leading slash") {
    ExportRoot root = FileSystemRoot();
    CHECK(root.Display("") == "/");
    CHECK(root.Display("etc") == "/etc");
    CHECK(root.Display("etc/hosts") == "/etc/hosts");
  }
}

TEST_SUITE("engine.dir_cache") {
  TEST_CASE("Get returns usable directory fds for the root and a subdirectory") {
    Tree t;
    ExportRoot root = t.Root();
    DirCache cache(root);
    CHECK(cache.size() == 0);

    auto top = cache.Get("");
    REQUIRE_MESSAGE(top.has_value(), top.status().ToString());
    auto sub = cache.Get("sub");
    REQUIRE_MESSAGE(sub.has_value(), sub.status().ToString());
    CHECK(cache.size() == 2);

    struct stat st {};
    CHECK(::fstatat((*top)->fd.get(), "f", &st, AT_SYMLINK_NOFOLLOW) == 0);
    CHECK(st.st_size == 5);
    CHECK(::fstatat((*sub)->fd.get(), "g", &st, AT_SYMLINK_NOFOLLOW) == 0);
    CHECK(st.st_size == 5);
    CHECK(::fstatat((*sub)->fd.get(), "f", &st, AT_SYMLINK_NOFOLLOW) != 0);

    CHECK((*top)->readable);
    CHECK((*sub)->readable);
    struct stat want {};
    REQUIRE(::stat((t.root_path + "/sub").c_str(), &want) == 0);
    CHECK((*sub)->dev == want.st_dev);
    REQUIRE(::fstat((*sub)->fd.get(), &st) == 0);
    CHECK(st.st_ino == want.st_ino);
    // Readable: the fd is not O_PATH, so it can be fsync'ed.
    CHECK(::fsync((*sub)->fd.get()) == 0);
  }

  TEST_CASE("Get of the same path returns the same entry") {
    Tree t;
    ExportRoot root = t.Root();
    DirCache cache(root);
    auto a = cache.Get("sub");
    auto b = cache.Get("sub");
    REQUIRE(a.has_value());
    REQUIRE(b.has_value());
    CHECK(a->get() == b->get());
    CHECK(cache.size() == 1);
    auto c = cache.Get("sub/deep");
    REQUIRE(c.has_value());
    CHECK(c->get() != a->get());
    CHECK(cache.size() == 2);
  }

  TEST_CASE("A cached directory stays the one first opened, even after it is renamed") {
    Tree t;
    ExportRoot root = t.Root();
    DirCache cache(root);
    auto first = cache.Get("sub");
    REQUIRE(first.has_value());
    REQUIRE(::rename((t.root_path + "/sub").c_str(), (t.root_path + "/moved").c_str()) == 0);

    // No directory "sub" exists now, yet the cache still answers with the one it opened.
    auto again = cache.Get("sub");
    REQUIRE_MESSAGE(again.has_value(), again.status().ToString());
    CHECK(again->get() == first->get());
    struct stat st {};
    CHECK(::fstatat((*again)->fd.get(), "g", &st, 0) == 0);
    auto p = cache.Parent("sub/g");
    REQUIRE(p.has_value());
    CHECK(p->first.get() == first->get());

    // A new "sub" is not seen through the cache either.
    MakeDir(t.root_path + "/sub");
    auto third = cache.Get("sub");
    REQUIRE(third.has_value());
    CHECK(third->get() == first->get());
    CHECK(::fstatat((*third)->fd.get(), "g", &st, 0) == 0);
  }

  TEST_CASE("Parent splits a path into the cached directory and the last component") {
    Tree t;
    ExportRoot root = t.Root();
    DirCache cache(root);
    auto sub = cache.Get("sub");
    REQUIRE(sub.has_value());

    auto p = cache.Parent("sub/f");
    REQUIRE_MESSAGE(p.has_value(), p.status().ToString());
    CHECK(p->first.get() == sub->get());
    CHECK(p->second == "f");

    auto top = cache.Parent("f");
    REQUIRE(top.has_value());
    CHECK(top->second == "f");
    auto root_entry = cache.Get("");
    REQUIRE(root_entry.has_value());
    CHECK(top->first.get() == root_entry->get());

    auto deep = cache.Parent("sub/deep/x");
    REQUIRE(deep.has_value());
    CHECK(deep->second == "x");
    struct stat a {
    }, b{};
    REQUIRE(::fstat(deep->first->fd.get(), &a) == 0);
    REQUIRE(::stat((t.root_path + "/sub/deep").c_str(), &b) == 0);
    CHECK(a.st_ino == b.st_ino);

    auto none = cache.Parent("");
    REQUIRE_FALSE(none.has_value());
    CHECK(none.error().code() == Code::kInvalidArgument);

    auto missing = cache.Parent("nodir/x");
    REQUIRE_FALSE(missing.has_value());
    CHECK(missing.error().code() == Code::kNotFound);
  }

  TEST_CASE("A failed Get is not remembered") {
    Tree t;
    ExportRoot root = t.Root();
    DirCache cache(root);
    auto r = cache.Get("later");
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code() == Code::kNotFound);
    CHECK(cache.size() == 0);

    MakeDir(t.root_path + "/later");
    WriteFile(t.root_path + "/later/x", "x");
    auto again = cache.Get("later");
    REQUIRE_MESSAGE(again.has_value(), again.status().ToString());
    struct stat st {};
    CHECK(::fstatat((*again)->fd.get(), "x", &st, 0) == 0);
    CHECK(cache.size() == 1);
  }

  TEST_CASE("Get of a regular file fails") {
    Tree t;
    ExportRoot root = t.Root();
    DirCache cache(root);
    auto r = cache.Get("f");
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().sys_errno() == ENOTDIR);
    CHECK(cache.size() == 0);
  }

  TEST_CASE("Get refuses directories reached through a symlink out of the root") {
    Tree t;
    ExportRoot root = t.Root();
    MakeSymlink(t.outside, t.root_path + "/esc");
    MakeSymlink("../../outside", t.root_path + "/sub/up");
    DirCache cache(root);
    for (const char* rel : {"esc", "sub/up", "..", "sub/../.."}) {
      CAPTURE(rel);
      auto r = cache.Get(rel);
      REQUIRE_FALSE(r.has_value());
      CHECK(r.error().code() == Code::kPermissionDenied);
      CHECK(Contains(r.error().message(), "escapes"));
    }
    auto p = cache.Parent("esc/secret");
    REQUIRE_FALSE(p.has_value());
    CHECK(p.error().code() == Code::kPermissionDenied);
    CHECK(cache.size() == 0);
  }

  TEST_CASE("The table is bounded and entries in use stay valid after it starts over") {
    Tree t;
    for (const char* d : {"d1", "d2", "d3"}) {
      MakeDir(t.root_path + "/" + d);
      WriteFile(t.root_path + "/" + d + "/in_" + d, d);
    }
    ExportRoot root = t.Root();
    DirCache cache(root, 2);
    auto d1 = cache.Get("d1");
    REQUIRE(d1.has_value());
    std::shared_ptr<const DirCache::Dir> held = *d1;
    auto d2 = cache.Get("d2");
    REQUIRE(d2.has_value());
    CHECK(cache.size() == 2);
    auto d3 = cache.Get("d3");
    REQUIRE(d3.has_value());
    CHECK(cache.size() <= 2);

    // d1 was dropped from the table: a new Get opens it again...
    auto d1_again = cache.Get("d1");
    REQUIRE(d1_again.has_value());
    CHECK(d1_again->get() != held.get());
    CHECK(cache.size() <= 2);
    // ...but the entry obtained before still works.
    struct stat st {};
    CHECK(::fstatat(held->fd.get(), "in_d1", &st, 0) == 0);
    CHECK(::fstatat(held->fd.get(), "in_d2", &st, 0) != 0);
    CHECK(::fstatat((*d3)->fd.get(), "in_d3", &st, 0) == 0);

    for (int i = 0; i < 10; ++i) {
      auto r = cache.Get(i % 2 ? "d2" : "d3");
      REQUIRE(r.has_value());
      CHECK(cache.size() <= 2);
    }
    CHECK(::fstatat(held->fd.get(), "in_d1", &st, 0) == 0);
  }

  TEST_CASE("A searchable but unreadable directory is opened O_PATH and still usable") {
    // Run in a child without privileges (root would read the directory anyway). The child reports
    // through its exit code; 0 is success.
    Tree t;
    REQUIRE(::chmod(t.tmp.path().c_str(), 0711) == 0);
    REQUIRE(::chmod(t.root_path.c_str(), 0755) == 0);
    MakeDir(t.root_path + "/locked", 0711);
    REQUIRE(::chmod((t.root_path + "/locked").c_str(), 0711) == 0);
    WriteFile(t.root_path + "/locked/x", "x");
    struct stat want {};
    REQUIRE(::stat((t.root_path + "/locked").c_str(), &want) == 0);

    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      if (::geteuid() == 0) {
        if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(2);
      }
      auto r = ExportRoot::Create(t.root_path);
      if (!r.has_value()) ::_exit(3);
      DirCache cache(*r);
      auto d = cache.Get("locked");
      if (!d.has_value()) ::_exit(4);
      if ((*d)->readable) ::_exit(5);
      struct stat st {};
      if (::fstatat((*d)->fd.get(), "x", &st, 0) != 0) ::_exit(6);
      if ((*d)->dev != want.st_dev) ::_exit(7);
      if (::fstat((*d)->fd.get(), &st) != 0 || st.st_ino != want.st_ino) ::_exit(8);
      ::_exit(0);
    }
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }
}

}  // namespace
}  // namespace pororoca::engine
