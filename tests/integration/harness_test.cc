// The harness checks itself: a tree comparison that missed differences would make every copy test
// pass vacuously.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "support/daemon_harness.h"

namespace pororoca::test {
namespace {

TEST_SUITE("integration.harness") {
  TEST_CASE("CompareTrees reports every kind of difference it is trusted with") {
    TestFederation fed;
    const std::string x = fed.dir() + "/x", y = fed.dir() + "/y";
    for (const std::string& root : {x, y}) {
      MakeDir(root, 0755);
      WriteRandomFile(root + "/content", 3000, 1, 0644);
      WriteRandomFile(root + "/mode", 10, 2, 0644);
      WriteRandomFile(root + "/mtime", 10, 3, 0644);
      WriteRandomFile(root + "/size", 10, 4, 0644);
      REQUIRE(::symlink("t1", (root + "/link").c_str()) == 0);
      MakeDir(root + "/d", 0755);
    }
    auto same_mtimes = [&] {
      for (const std::string& root : {x, y}) {
        for (const char* rel : {"/content", "/mode", "/size", "/link", "/d", ""}) SetMtime(root + rel, 5, 0);
      }
    };
    same_mtimes();
    SetMtime(x + "/mtime", 1000, 1);
    SetMtime(y + "/mtime", 1000, 1);
    REQUIRE_MESSAGE(CompareTrees(x, y).empty(), DescribeDiffs(CompareTrees(x, y)));

    WriteAt(y + "/content", 1500, "!");
    ::chmod((y + "/mode").c_str(), 0600);
    SetMtime(y + "/mtime", 1000, 2);
    WriteRandomFile(y + "/size", 11, 4, 0644);
    ::unlink((y + "/link").c_str());
    REQUIRE(::symlink("t2", (y + "/link").c_str()) == 0);
    WriteFile(y + "/d/extra", "", 0644);
    same_mtimes();
    auto diffs = CompareTrees(x, y);
    INFO(DescribeDiffs(diffs));
    const std::string all = DescribeDiffs(diffs);
    CHECK(all.find("'content': content differs") != std::string::npos);
    CHECK(all.find("'mode': mode 0644 vs 0600") != std::string::npos);
    CHECK(all.find("'mtime': mtime") != std::string::npos);
    CHECK(all.find("'size': size 10 vs 11") != std::string::npos);
    CHECK(all.find("'link': symlink target 't1' vs 't2'") != std::string::npos);
    CHECK(all.find("'d/extra': missing in") != std::string::npos);
    CHECK(diffs.size() == 6);
  }

  TEST_CASE("RunCli reports the exit code and both output streams") {
    TestFederation fed;
    CliResult r = RunCli({"--version"}, fed.dir() + "/none.sock");
    CHECK(r.exit_code == 0);
    CHECK(r.out.find("pororoca ") == 0);
    r = RunCli({"frobnicate"}, fed.dir() + "/none.sock");
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("unknown command 'frobnicate'") != std::string::npos);
  }
}

}  // namespace
}  // namespace pororoca::test
