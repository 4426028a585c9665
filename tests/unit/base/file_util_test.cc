#include "base/file_util.h"

#include <doctest/doctest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>

namespace pororoca {
namespace {

struct TempDir {
  TempDir() {
    char tmpl[] = "/tmp/poro_file_util_XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string path;
};

TEST_CASE("WriteFileAtomic replaces contents, sets the mode and leaves no temporary") {
  TempDir d;
  std::string f = d.path + "/record.json";
  REQUIRE(WriteFileAtomic(f, "first", 0640).ok());
  REQUIRE(WriteFileAtomic(f, "second version", 0640).ok());
  auto r = ReadSmallFile(f);
  REQUIRE(r.has_value());
  CHECK(*r == "second version");
  struct stat st;
  REQUIRE(::stat(f.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0640);
  CHECK_FALSE(std::filesystem::exists(f + ".tmp"));
}

TEST_CASE("WriteFileAtomic into a missing directory names the file") {
  TempDir d;
  Status s = WriteFileAtomic(d.path + "/nope/x.json", "x");
  REQUIRE_FALSE(s.ok());
  CHECK(s.message().find("nope/x.json") != std::string::npos);
}

TEST_CASE("ReadSmallFile refuses missing files, directories and files over the limit") {
  TempDir d;
  auto missing = ReadSmallFile(d.path + "/missing");
  REQUIRE_FALSE(missing.has_value());
  CHECK(missing.error().message().find("missing") != std::string::npos);
  auto dir = ReadSmallFile(d.path);
  REQUIRE_FALSE(dir.has_value());
  CHECK(dir.error().message().find("not a regular file") != std::string::npos);
  REQUIRE(WriteFileAtomic(d.path + "/big", std::string(100, 'x')).ok());
  auto big = ReadSmallFile(d.path + "/big", 99);
  REQUIRE_FALSE(big.has_value());
  CHECK(big.error().code() == Code::kResourceExhausted);
  auto ok = ReadSmallFile(d.path + "/big", 100);
  REQUIRE(ok.has_value());
  CHECK(ok->size() == 100);
}

}  // namespace
}  // namespace pororoca
