// Loopback copies between two daemons: files and trees, push and pull, byte-identical with modes and
// mtimes; what happens when the destination exists; sync.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "support/daemon_harness.h"

namespace pororoca::test {
namespace {

constexpr uint64_t kMiB = 1ull << 20;

// Builds the tree every tree test copies; returns the number of regular files in it.
uint64_t MakeAwkwardTree(const std::string& root) {
  MakeDir(root, 0755);
  WriteFile(root + "/top.txt", "top level text\n", 0644);
  WriteFile(root + "/empty.dat", "", 0600);
  WriteFile(root + "/run.sh", "#!/bin/sh\necho hi\n", 0755);
  WriteRandomFile(root + "/with space.txt", 1000, 11, 0640);
  WriteRandomFile(root + "/\xc3\xbcn\xc3\xaf\x63\xc3\xb8\x64\xc3\xa9-\xe5\x90\x8d\xe5\x89\x8d.bin", 70000, 12,
                  0644);
  WriteFile(root + "/new\nline", "a name with a newline\n", 0600);
  WriteRandomFile(root + "/multi.bin", 9 * kMiB + 4097, 13, 0644);  // several chunks, odd tail
  // Sparse: 64 MiB with two data islands, the second one ending at EOF.
  WriteAt(root + "/sparse.img", 8 * kMiB, RandomBytes(kMiB, 14));
  WriteAt(root + "/sparse.img", 64 * kMiB - 100000, RandomBytes(100000, 15));
  ::chmod((root + "/sparse.img").c_str(), 0640);
  // One chunk that is all hole: no data chunk gives it its size, the commit must.
  WriteFile(root + "/hole.bin", "", 0644);
  REQUIRE(::truncate((root + "/hole.bin").c_str(), 200000) == 0);
  MakeDir(root + "/sub", 0750);
  MakeDir(root + "/sub/deeper", 0700);
  WriteRandomFile(root + "/sub/deeper/leaf.bin", 300000, 16, 0600);
  WriteFile(root + "/sub/deeper/empty", "", 0644);
  REQUIRE(::symlink("../top.txt", (root + "/sub/link-rel").c_str()) == 0);
  REQUIRE(::symlink("does/not/exist", (root + "/sub/dangling").c_str()) == 0);
  REQUIRE(::symlink("/etc/hostname", (root + "/sub/abs-link").c_str()) == 0);
  MakeDir(root + "/emptydir", 0755);
  MakeDir(root + "/dir with space", 0755);
  WriteFile(root + "/dir with space/inner file", "inner\n", 0644);
  // mtimes last, deepest first, so creating children does not move a directory's mtime again.
  int64_t t = 1500000000;
  long ns = 123456789;
  for (const char* rel :
       {"top.txt", "empty.dat", "run.sh", "with space.txt",
        "\xc3\xbcn\xc3\xaf\x63\xc3\xb8\x64\xc3\xa9-\xe5\x90\x8d\xe5\x89\x8d.bin", "new\nline", "multi.bin",
        "sparse.img", "hole.bin", "sub/deeper/leaf.bin", "sub/deeper/empty", "sub/link-rel", "sub/dangling",
        "sub/abs-link", "dir with space/inner file", "sub/deeper", "sub", "emptydir", "dir with space"}) {
    SetMtime(root + "/" + rel, t += 3600, ns += 1111);
  }
  SetMtime(root, t + 77, 5);
  return 12;
}

TEST_SUITE("integration.copy") {
  TEST_CASE("push and pull of a file are byte-identical and keep mode and mtime") {
    TestFederation fed;
    DaemonPair p(fed);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;

    const uint64_t size = 9 * kMiB + 12345;
    WriteRandomFile(a.Path("data.bin"), size, 1, 0640);
    SetMtime(a.Path("data.bin"), 1600000000, 123456789);
    CliResult r = Cli(a, {"cp", "--json", a.Path("data.bin"), "b:/data.bin"});
    INFO(r.Describe());
    REQUIRE(r.exit_code == 0);
    auto rec = r.Json();
    REQUIRE(rec.is_object());
    CHECK(rec["state"] == "succeeded");
    CHECK(rec["progress"]["files_done"] == 1);
    CHECK(rec["progress"]["bytes_done"] == size);
    CHECK(rec["progress"]["files_failed"] == 0);
    CHECK(rec["progress"]["chunks_corrupt"] == 0);
    auto diffs = CompareTrees(a.Path("data.bin"), b.Path("data.bin"));
    CHECK_MESSAGE(diffs.empty(), DescribeDiffs(diffs));

    // Pull, into a new name and into an existing directory (cp semantics).
    WriteRandomFile(b.Path("remote.bin"), 5 * kMiB + 7, 2, 0600);
    SetMtime(b.Path("remote.bin"), 1400000000, 999999999);
    r = Cli(a, {"cp", "b:/remote.bin", a.Path("pulled.bin")});
    INFO(r.Describe());
    CHECK(r.exit_code == 0);
    CHECK(r.out.find("OK ") != std::string::npos);
    diffs = CompareTrees(b.Path("remote.bin"), a.Path("pulled.bin"));
    CHECK_MESSAGE(diffs.empty(), DescribeDiffs(diffs));

    MakeDir(a.Path("incoming"), 0755);
    r = Cli(a, {"cp", "b:/remote.bin", a.Path("incoming") + "/"});
    CHECK(r.exit_code == 0);
    diffs = CompareTrees(b.Path("remote.bin"), a.Path("incoming/remote.bin"));
    CHECK_MESSAGE(diffs.empty(), DescribeDiffs(diffs));

    // A small file (one short chunk) and an empty one.
    WriteFile(a.Path("small.txt"), "hello\n", 0644);
    WriteFile(a.Path("empty.txt"), "", 0600);
    CHECK(Cli(a, {"cp", a.Path("small.txt"), "b:/"}).exit_code == 0);
    CHECK(Cli(a, {"cp", a.Path("empty.txt"), "b:/empty.txt"}).exit_code == 0);
    CHECK(CompareTrees(a.Path("small.txt"), b.Path("small.txt")).empty());
    CHECK(CompareTrees(a.Path("empty.txt"), b.Path("empty.txt")).empty());

    CHECK(Partials(a.export_root()).empty());
    CHECK(Partials(b.export_root()).empty());
  }

  TEST_CASE("a tree larger than the sender's announce window arrives whole") {
    // 20,000 entries: more than announce_ahead (16,384), so the walk has to wait for FILE_DONEs
    // and go on; both ends forget finished files meanwhile.
    TestFederation fed;
    DaemonPair p(fed);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    constexpr int kDirs = 20, kPerDir = 1000;
    MakeDir(a.Path("many"), 0755);
    for (int d = 0; d < kDirs; ++d) {
      std::string dir = a.Path("many/d" + std::to_string(d));
      MakeDir(dir, 0755);
      for (int i = 0; i < kPerDir; ++i)
        WriteFile(dir + "/f" + std::to_string(i), std::to_string(d * kPerDir + i));
    }
    CliResult r = Cli(a, {"cp", "-r", "--json", a.Path("many"), "b:/"}, 300s);
    INFO(r.Describe());
    REQUIRE(r.exit_code == 0);
    auto rec = r.Json();
    CHECK(rec["state"] == "succeeded");
    CHECK(rec["progress"]["files_done"] == kDirs * kPerDir);
    CHECK(rec["progress"]["files_failed"] == 0);
    for (int d : {0, kDirs / 2, kDirs - 1}) {
      for (int i : {0, kPerDir - 1}) {
        std::string rel = "many/d" + std::to_string(d) + "/f" + std::to_string(i);
        CHECK(ReadFile(b.Path(rel)) == std::to_string(d * kPerDir + i));
      }
    }
    auto diffs = CompareTrees(a.Path("many"), b.Path("many"));
    CHECK_MESSAGE(diffs.empty(), DescribeDiffs(diffs));

    // The sender held about one announce window of entries, not the whole tree (20,021 entries):
    // announce_ahead announced and unfinished, the next FILES batch being gathered, and a few
    // finished ones the reader still pointed at (its current file, reads in flight).
    const std::string log = a.Log();
    const std::string key = "sender: 20021 entries announced, at most ";
    const size_t at = log.find(key);
    REQUIRE_MESSAGE(at != std::string::npos, a.LogTail());
    const unsigned long held = std::stoul(log.substr(at + key.size()));
    MESSAGE("the sending daemon held at most " << held << " entries at once");
    CHECK(held <= 16384 + 1024 + 64);
  }

  TEST_CASE("recursive push and pull copy an awkward tree exactly") {
    TestFederation fed;
    DaemonPair p(fed);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    const uint64_t files = MakeAwkwardTree(a.Path("tree"));
    const bool source_sparse = AllocatedBytes(a.Path("tree/sparse.img")) < 16 * kMiB;

    CliResult r = Cli(a, {"cp", "-r", "--json", a.Path("tree"), "b:/"});
    INFO(r.Describe());
    REQUIRE(r.exit_code == 0);
    auto rec = r.Json();
    CHECK(rec["state"] == "succeeded");
    CHECK(rec["progress"]["files_total"] == files);
    CHECK(rec["progress"]["files_done"] == files);
    auto diffs = CompareTrees(a.Path("tree"), b.Path("tree"));
    CHECK_MESSAGE(diffs.empty(), "push differs:\n" << DescribeDiffs(diffs));
    CHECK(FileSize(b.Path("tree/sparse.img")) == 64 * kMiB);
    CHECK(FileSize(b.Path("tree/hole.bin")) == 200000);
    if (source_sparse) {
      const uint64_t allocated = AllocatedBytes(b.Path("tree/sparse.img"));
      CHECK_MESSAGE(allocated < 16 * kMiB, "pushed sparse file allocates " << allocated << " bytes");
    } else {
      MESSAGE("the file system under " << a.export_root() << " does not keep holes; sparse check skipped");
    }

    r = Cli(a, {"cp", "-r", "--json", "b:/tree", a.Path("pulled")});
    INFO(r.Describe());
    REQUIRE(r.exit_code == 0);
    diffs = CompareTrees(a.Path("tree"), a.Path("pulled"));
    CHECK_MESSAGE(diffs.empty(), "pull differs:\n" << DescribeDiffs(diffs));
    if (source_sparse) {
      const uint64_t allocated = AllocatedBytes(a.Path("pulled/sparse.img"));
      CHECK_MESSAGE(allocated < 16 * kMiB, "pulled sparse file allocates " << allocated << " bytes");
    }
    CHECK(Partials(a.export_root()).empty());
    CHECK(Partials(b.export_root()).empty());
  }

  TEST_CASE("an existing destination fails by default and --overwrite or --skip-existing decide") {
    TestFederation fed;
    DaemonPair p(fed);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    WriteRandomFile(a.Path("f.bin"), 3 * kMiB + 5, 21, 0644);
    SetMtime(a.Path("f.bin"), 1600000100, 42);
    const std::string old_content = "the old content, which must survive\n";
    WriteFile(b.Path("f.bin"), old_content, 0600);

    CliResult r = Cli(a, {"cp", a.Path("f.bin"), "b:/f.bin"});
    {
      INFO(r.Describe());
      CHECK(r.exit_code == 1);
      // The peer's file is named as the user named it (issue 14: never where b's export lives).
      CHECK(r.output().find("destination exists: b:/f.bin") != std::string::npos);
      CHECK(r.output().find(b.export_root()) == std::string::npos);
      CHECK(r.output().find("--overwrite") != std::string::npos);
      CHECK(ReadFile(b.Path("f.bin")) == old_content);
      CHECK(Partials(b.export_root()).empty());
    }

    r = Cli(a, {"cp", "--skip-existing", "--json", a.Path("f.bin"), "b:/f.bin"});
    {
      INFO(r.Describe());
      CHECK(r.exit_code == 0);
      CHECK(r.Json()["progress"]["files_skipped"] == 1);
      CHECK(ReadFile(b.Path("f.bin")) == old_content);
    }

    r = Cli(a, {"cp", "--overwrite", a.Path("f.bin"), "b:/f.bin"});
    {
      INFO(r.Describe());
      CHECK(r.exit_code == 0);
      auto diffs = CompareTrees(a.Path("f.bin"), b.Path("f.bin"));
      CHECK_MESSAGE(diffs.empty(), DescribeDiffs(diffs));
    }

    r = Cli(a, {"cp", "--overwrite", "--skip-existing", a.Path("f.bin"), "b:/f.bin"});
    CHECK(r.exit_code == 2);
    CHECK(Partials(b.export_root()).empty());
  }

  TEST_CASE("sync skips identical files and copies changed and new ones") {
    TestFederation fed;
    DaemonPair p(fed);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    MakeDir(a.Path("src"), 0755);
    WriteRandomFile(a.Path("src/one.bin"), 2 * kMiB, 31, 0644);
    WriteRandomFile(a.Path("src/two.bin"), 100000, 32, 0640);
    MakeDir(a.Path("src/d"), 0755);
    WriteRandomFile(a.Path("src/d/three.bin"), 5 * kMiB + 1, 33, 0600);
    SetMtime(a.Path("src/one.bin"), 1500000000, 1);
    SetMtime(a.Path("src/two.bin"), 1500000000, 2);
    SetMtime(a.Path("src/d/three.bin"), 1500000000, 3);
    MakeDir(b.Path("mirror"), 0755);

    CliResult r = Cli(a, {"sync", "--json", a.Path("src"), "b:/mirror/"});
    {
      INFO(r.Describe());
      REQUIRE(r.exit_code == 0);
      CHECK(r.Json()["progress"]["files_skipped"] == 0);
      CHECK(r.Json()["progress"]["files_done"] == 3);
      auto diffs = CompareTrees(a.Path("src"), b.Path("mirror/src"));
      CHECK_MESSAGE(diffs.empty(), DescribeDiffs(diffs));
    }

    r = Cli(a, {"sync", "--json", a.Path("src"), "b:/mirror/"});
    {
      INFO(r.Describe());
      CHECK(r.exit_code == 0);
      CHECK(r.Json()["progress"]["files_skipped"] == 3);
    }

    // Change one file (same size, new content and mtime) and add one.
    WriteRandomFile(a.Path("src/two.bin"), 100000, 34, 0640);
    SetMtime(a.Path("src/two.bin"), 1500000500, 0);
    WriteRandomFile(a.Path("src/d/four.bin"), 1 * kMiB + 3, 35, 0644);
    r = Cli(a, {"sync", "--json", a.Path("src"), "b:/mirror/"});
    {
      INFO(r.Describe());
      CHECK(r.exit_code == 0);
      auto rec = r.Json();
      CHECK(rec["progress"]["files_skipped"] == 2);
      CHECK(rec["progress"]["files_done"] == 4);
      CHECK(rec["progress"]["files_failed"] == 0);
      auto diffs = CompareTrees(a.Path("src"), b.Path("mirror/src"));
      CHECK_MESSAGE(diffs.empty(), DescribeDiffs(diffs));
    }
    CHECK(Partials(b.export_root()).empty());
  }
}

}  // namespace
}  // namespace pororoca::test
