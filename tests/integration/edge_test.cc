// Edge cases around resuming and target resolution: a source that changed between attempts, a
// different chunk size on the re-run, interrupted trees, many small files, concurrent transfers.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "support/daemon_harness.h"

namespace pororoca::test {
namespace {

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint64_t kBigSize = 192 * kMiB + 12345;

DaemonOptions SlowSender() {
  DaemonOptions o;
  o.extra_toml = "[fault_injection]\nsend_delay_us = 60000\n";
  return o;
}

bool WaitForJournal(const DaemonProcess& receiver, uint64_t records,
                    std::chrono::milliseconds timeout = 60s) {
  return WaitUntil([&] { return JournalBytes(receiver.export_root()) >= 32 + 32 * records; }, timeout);
}

// Starts `cp -d ARGS`, waits until the receiver `rx` journaled some chunks, cancels; returns the id.
std::string InterruptedCopy(const DaemonProcess& a, const DaemonProcess& rx, std::vector<std::string> args) {
  args.insert(args.begin(), {"cp", "-d"});
  CliResult r = Cli(a, args);
  INFO(r.Describe());
  REQUIRE(r.exit_code == 0);
  std::string id = Trim(r.out);
  bool journaled = WaitForJournal(rx, 8);
  CliResult c = Cli(a, {"cancel", id});
  CHECK(c.exit_code == 0);
  REQUIRE(journaled);
  auto t = a.WaitForTerminal(id, 60s);
  REQUIRE(t["state"] == "cancelled");
  return id;
}

ino_t Inode(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 ? st.st_ino : 0;
}

TEST_SUITE("integration.edge") {
  TEST_CASE("--hard-links recreates links within the tree, on push and pull, without it they are copies") {
    TestFederation fed;
    DaemonPair p(fed);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    for (DaemonProcess* d : {&a, &b}) {
      MakeDir(d->Path("t"));
      MakeDir(d->Path("t/sub"));
      WriteRandomFile(d->Path("t/a"), 3 * 1024 * 1024 + 5, 61);  // three names in the tree
      REQUIRE(::link(d->Path("t/a").c_str(), d->Path("t/b").c_str()) == 0);
      REQUIRE(::link(d->Path("t/a").c_str(), d->Path("t/sub/c").c_str()) == 0);
      WriteFile(d->Path("t/x"), "x\n");  // its other name is outside the tree
      REQUIRE(::link(d->Path("t/x").c_str(), d->Path("outside-x").c_str()) == 0);
    }
    for (const bool pull : {false, true}) {
      CAPTURE(pull);
      DaemonProcess& dst = pull ? a : b;
      const std::string to = pull ? a.Path("got") : "b:/got";
      const std::string from = pull ? "b:/t" : a.Path("t");
      CliResult r = Cli(a, {"cp", "-r", "--hard-links", "--json", from, to});
      INFO(r.Describe());
      REQUIRE(r.exit_code == 0);
      CHECK(r.Json()["progress"]["files_failed"] == 0);
      CHECK(r.Json()["progress"]["bytes_sent"] == 3 * 1024 * 1024 + 5 + 2);  // a's bytes once, and x's
      const ino_t ino = Inode(dst.Path("got/a"));
      CHECK(ino != 0);
      CHECK(Inode(dst.Path("got/b")) == ino);
      CHECK(Inode(dst.Path("got/sub/c")) == ino);
      CHECK(Inode(dst.Path("got/x")) != ino);
      CHECK(ReadFile(dst.Path("got/sub/c")) == ReadFile(dst.Path("got/a")));
      CHECK(ReadFile(dst.Path("got/x")) == "x\n");
      auto diffs = CompareTrees(pull ? b.Path("t") : a.Path("t"), dst.Path("got"));
      CHECK_MESSAGE(diffs.empty(), DescribeDiffs(diffs));
      // The same command again (a retry, a resumed transfer) finds its links made.
      r = Cli(a, {"cp", "-r", "--hard-links", "--sync", "--json", from, to});
      CHECK_MESSAGE(r.exit_code == 0, r.Describe());
      CHECK(Inode(dst.Path("got/sub/c")) == ino);
      // Without the option every name is a file of its own.
      r = Cli(a, {"cp", "-r", "--json", from, pull ? a.Path("plain") : "b:/plain"});
      CHECK_MESSAGE(r.exit_code == 0, r.Describe());
      CHECK(Inode(dst.Path("plain/a")) != Inode(dst.Path("plain/b")));
      CHECK(SameContent(dst.Path("plain/a"), dst.Path("plain/sub/c")));
      CHECK(Partials(dst.export_root()).empty());
    }
  }

  TEST_CASE(
      "special files in a tree are not copied, and the record and the summary name them, on push and pull") {
    TestFederation fed;
    DaemonPair p(fed);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    for (DaemonProcess* d : {&a, &b}) {
      MakeDir(d->Path("tree"));
      MakeDir(d->Path("tree/sub"));
      WriteFile(d->Path("tree/sub/data.txt"), "data\n");
      REQUIRE(::mkfifo(d->Path("tree/sub/pipe").c_str(), 0644) == 0);
    }
    // Push: the sender is this daemon.
    CliResult r = Cli(a, {"cp", "-r", a.Path("tree"), "b:/pushed"});
    INFO(r.Describe());
    REQUIRE(r.exit_code == 0);
    CHECK(r.out.find("not copied: 1 special file(s)") != std::string::npos);
    CHECK(r.out.find("not copied: sub/pipe (FIFO)") != std::string::npos);
    CHECK(ReadFile(b.Path("pushed/sub/data.txt")) == "data\n");
    CHECK_FALSE(Exists(b.Path("pushed/sub/pipe")));
    // Pull: the remote sender's END carries the names to this daemon's record.
    CliResult pull = Cli(a, {"cp", "-r", "--json", "b:/tree", a.Path("pulled")});
    INFO(pull.Describe());
    REQUIRE(pull.exit_code == 0);
    nlohmann::json rec = pull.Json();
    CHECK(rec["progress"]["specials_skipped"] == 1);
    REQUIRE(rec["skipped_special"].size() == 1);
    CHECK(rec["skipped_special"][0]["path"] == "sub/pipe");
    CHECK(rec["skipped_special"][0]["kind"] == "FIFO");
    CHECK(ReadFile(a.Path("pulled/sub/data.txt")) == "data\n");
    CHECK_FALSE(Exists(a.Path("pulled/sub/pipe")));
  }

  TEST_CASE(
      "a per-file error from the peer names its paths as ENDPOINT:/path, never where its export lives") {
    TestFederation fed;
    DaemonPair p(fed);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    MakeDir(a.Path("tree"));
    WriteFile(a.Path("tree/new.txt"), "new\n");
    WriteFile(a.Path("tree/taken.txt"), "ours\n");
    MakeDir(b.Path("tree"));
    WriteFile(b.Path("tree/taken.txt"), "theirs, and different\n");
    // Push: b refuses the file that exists there (its PLAN).
    CliResult r = Cli(a, {"cp", "-r", "--json", a.Path("tree"), "b:/"});
    INFO(r.Describe());
    CHECK(r.exit_code != 0);
    nlohmann::json rec = r.Json();
    REQUIRE(rec["failures"].size() == 1);
    const std::string err = rec["failures"][0]["error"].get<std::string>();
    CHECK(err.find("destination exists: b:/tree/taken.txt") != std::string::npos);
    CHECK(err.find(b.export_root()) == std::string::npos);
    CHECK(ReadFile(b.Path("tree/taken.txt")) == "theirs, and different\n");
    // b's own log keeps its absolute path.
    CHECK(b.Log().find(b.Path("tree/taken.txt")) != std::string::npos);
    // Pull: the same refusal made here names this daemon's own path as the local user typed it.
    WriteFile(b.Path("pulled.txt"), "b's\n");
    WriteFile(a.Path("pulled.txt"), "a's, different\n");
    CliResult pull = Cli(a, {"cp", "--json", "b:/pulled.txt", a.Path("pulled.txt")});
    INFO(pull.Describe());
    CHECK(pull.exit_code != 0);
    CHECK(pull.output().find("destination exists: " + a.Path("pulled.txt")) != std::string::npos);
  }

  TEST_CASE("a source rewritten between attempts is copied anew, never stitched from stale chunks") {
    TestFederation fed;
    DaemonPair p(fed, SlowSender());
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    WriteRandomFile(a.Path("big.bin"), kBigSize, 101, 0644);
    SetMtime(a.Path("big.bin"), 1650000000, 5);
    InterruptedCopy(a, b, {"--chunk", "1MiB", a.Path("big.bin"), "b:/big.bin"});
    REQUIRE(!Exists(b.Path("big.bin")));

    // Same size, new content. Variant 1 keeps the mtime (the journal header still matches, so
    // only the per-chunk digests can tell), variant 2 changes it (the journal must be discarded).
    WriteRandomFile(a.Path("big.bin"), kBigSize, 102, 0644);
    SUBCASE("same size and mtime") { SetMtime(a.Path("big.bin"), 1650000000, 5); }
    SUBCASE("same size, new mtime") { SetMtime(a.Path("big.bin"), 1650000999, 5); }
    CliResult r = Cli(a, {"cp", "--chunk", "1MiB", "--json", a.Path("big.bin"), "b:/big.bin"});
    INFO(r.Describe());
    // Whatever happens, no file stitched from old and new chunks may appear under the final name.
    if (Exists(b.Path("big.bin"))) {
      auto diffs = CompareTrees(a.Path("big.bin"), b.Path("big.bin"));
      CHECK_MESSAGE(diffs.empty(), DescribeDiffs(diffs));
    }
    CHECK(r.exit_code == 0);
    CHECK(r.Json()["progress"]["bytes_resumed"] == 0);
    CHECK(Exists(b.Path("big.bin")));
    CHECK(Partials(b.export_root()).empty());
  }

  TEST_CASE("a re-run with another chunk size discards the old journal and copies exactly") {
    TestFederation fed;
    DaemonPair p(fed, SlowSender());
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    WriteRandomFile(a.Path("big.bin"), kBigSize, 103, 0644);
    InterruptedCopy(a, b, {"--chunk", "1MiB", a.Path("big.bin"), "b:/big.bin"});
    CliResult r = Cli(a, {"cp", "--chunk", "4MiB", "--json", a.Path("big.bin"), "b:/big.bin"});
    INFO(r.Describe());
    REQUIRE(r.exit_code == 0);
    auto diffs = CompareTrees(a.Path("big.bin"), b.Path("big.bin"));
    CHECK_MESSAGE(diffs.empty(), DescribeDiffs(diffs));
    CHECK(Partials(b.export_root()).empty());
  }

  TEST_CASE("kill -9 of the receiver during a tree push is resumed for every file") {
    TestFederation fed;
    DaemonPair p(fed, SlowSender());
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    MakeDir(a.Path("tree"), 0755);
    // Files long enough (~0.6 s each) to be journaled half-way, sent one after the other.
    for (int i = 0; i < 4; ++i) {
      WriteRandomFile(a.Path("tree/f" + std::to_string(i) + ".bin"), 40 * kMiB + 1000 * uint64_t(i), 200 + i,
                      0644);
    }
    CliResult r = Cli(a, {"cp", "-r", "-d", "--chunk", "1MiB", a.Path("tree"), "b:/"});
    REQUIRE(r.exit_code == 0);
    std::string id = Trim(r.out);
    // Kill once the first files are committed by this attempt and a later one is half-way.
    bool progressed =
        WaitUntil([&] { return Exists(b.Path("tree/f1.bin")) && JournalBytes(b.export_root()) >= 64; }, 60s);
    b.Kill9();
    REQUIRE(progressed);
    REQUIRE(b.Start());
    auto t = a.WaitForTerminal(id, 120s);
    INFO(t.dump(2));
    CHECK(t["state"] == "succeeded");
    CHECK(t["progress"]["files_failed"] == 0);
    CHECK(t["progress"]["files_done"] == 4);
    CHECK(t["progress"]["bytes_resumed"].get<uint64_t>() > 0);
    auto diffs = CompareTrees(a.Path("tree"), b.Path("tree"));
    CHECK_MESSAGE(diffs.empty(), DescribeDiffs(diffs));
    CHECK(Partials(b.export_root()).empty());
  }

  TEST_CASE("kill -9 of the sender during a tree push resumes every file after its restart") {
    TestFederation fed;
    DaemonPair p(fed, SlowSender());
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    MakeDir(a.Path("tree"), 0755);
    // Files long enough (~0.6 s each) to be journaled half-way, sent one after the other.
    for (int i = 0; i < 4; ++i) {
      WriteRandomFile(a.Path("tree/f" + std::to_string(i) + ".bin"), 40 * kMiB + 1000 * uint64_t(i), 300 + i,
                      0644);
    }
    CliResult r = Cli(a, {"cp", "-r", "-d", "--chunk", "1MiB", a.Path("tree"), "b:/"});
    REQUIRE(r.exit_code == 0);
    std::string id = Trim(r.out);
    bool progressed =
        WaitUntil([&] { return Exists(b.Path("tree/f1.bin")) && JournalBytes(b.export_root()) >= 64; }, 60s);
    a.Kill9();
    REQUIRE(progressed);
    REQUIRE(a.Start());
    auto t = a.WaitForTerminal(id, 120s);
    INFO(t.dump(2));
    CHECK(t["state"] == "succeeded");
    CHECK(t["progress"]["files_failed"] == 0);
    auto diffs = CompareTrees(a.Path("tree"), b.Path("tree"));
    CHECK_MESSAGE(diffs.empty(), DescribeDiffs(diffs));
    CHECK(Partials(b.export_root()).empty());
  }

  TEST_CASE("a tree of many small files crosses FILES batches intact") {
    TestFederation fed;
    DaemonPair p(fed);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    MakeDir(a.Path("many"), 0755);
    int n = 0;
    for (int d = 0; d < 3; ++d) {
      std::string dir = a.Path("many/d" + std::to_string(d));
      MakeDir(dir, 0755);
      for (int i = 0; i < 450; ++i, ++n) {
        std::string f = dir + "/file-" + std::to_string(i);
        WriteFile(f, RandomBytes(static_cast<size_t>(n % 3001), static_cast<uint64_t>(n)), 0644);
        SetMtime(f, 1600000000 + n, n);
      }
      SetMtime(dir, 1600000000, d);
    }
    SetMtime(a.Path("many"), 1600000000, 999);
    CliResult r = Cli(a, {"cp", "-r", "--json", a.Path("many"), "b:/"});
    INFO(r.Describe());
    REQUIRE(r.exit_code == 0);
    CHECK(r.Json()["progress"]["files_done"] == n);
    auto diffs = CompareTrees(a.Path("many"), b.Path("many"));
    CHECK_MESSAGE(diffs.empty(), DescribeDiffs(diffs));

    r = Cli(a, {"sync", "--json", a.Path("many"), "b:/"});
    CHECK(r.exit_code == 0);
    CHECK(r.Json()["progress"]["files_skipped"] == n);
  }

  TEST_CASE("concurrent transfers between the same daemons do not interfere") {
    TestFederation fed;
    DaemonPair p(fed);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    std::vector<std::string> ids;
    for (int i = 0; i < 3; ++i) {
      std::string n = "c" + std::to_string(i) + ".bin";
      WriteRandomFile(a.Path(n), 16 * kMiB + uint64_t(i), 400 + i, 0644);
      CliResult r = Cli(a, {"cp", "-d", "--chunk", "1MiB", a.Path(n), "b:/" + n});
      REQUIRE(r.exit_code == 0);
      ids.push_back(Trim(r.out));
    }
    WriteRandomFile(b.Path("back.bin"), 16 * kMiB, 410, 0600);
    CliResult r = Cli(a, {"cp", "-d", "b:/back.bin", a.Path("back.bin")});
    REQUIRE(r.exit_code == 0);
    ids.push_back(Trim(r.out));
    for (const auto& id : ids) {
      auto t = a.WaitForTerminal(id, 120s);
      INFO(t.dump(2));
      CHECK(t["state"] == "succeeded");
    }
    for (int i = 0; i < 3; ++i) {
      std::string n = "c" + std::to_string(i) + ".bin";
      CHECK(CompareTrees(a.Path(n), b.Path(n)).empty());
    }
    CHECK(CompareTrees(b.Path("back.bin"), a.Path("back.bin")).empty());
    CliResult s = Cli(a, {"status"});
    CHECK(s.exit_code == 0);
    for (const auto& id : ids) CHECK(s.out.find(id) != std::string::npos);
  }

  TEST_CASE("destination resolution follows cp") {
    TestFederation fed;
    DaemonPair p(fed);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    WriteFile(a.Path("f.txt"), "f\n", 0644);
    MakeDir(a.Path("t"), 0755);
    WriteFile(a.Path("t/x"), "x\n", 0644);
    MakeDir(b.Path("d"), 0755);
    WriteFile(b.Path("plain"), "plain\n", 0644);

    CliResult r = Cli(a, {"cp", a.Path("f.txt"), "b:/d"});
    CHECK(r.exit_code == 0);
    CHECK(ReadFile(b.Path("d/f.txt")) == "f\n");

    r = Cli(a, {"cp", a.Path("f.txt"), "b:/no/such/f.txt"});
    {
      INFO(r.Describe());
      CHECK(r.exit_code == 4);
      // Named as the user typed it (the peer's path inside its export), not where b keeps it.
      CHECK(r.output().find("destination directory does not exist: b:/no/such") != std::string::npos);
      CHECK(r.output().find(b.export_root()) == std::string::npos);
    }
    // A pull into a missing local directory names that directory, not the file.
    r = Cli(a, {"cp", "b:/plain", a.Path("missing/dir/plain")});
    {
      INFO(r.Describe());
      CHECK(r.exit_code == 4);
      CHECK(r.output().find("destination directory does not exist: " + a.Path("missing/dir") + "\n") !=
            std::string::npos);
    }
    r = Cli(a, {"cp", a.Path("f.txt"), "b:/nodir/"});
    CHECK(r.exit_code == 4);
    CHECK(!Exists(b.Path("nodir")));

    r = Cli(a, {"cp", "-r", a.Path("t"), "b:/plain"});
    {
      INFO(r.Describe());
      CHECK(r.exit_code != 0);
      CHECK(r.output().find("not a directory") != std::string::npos);
      CHECK(ReadFile(b.Path("plain")) == "plain\n");
    }
    MakeDir(b.Path("d/t2"), 0755);
    r = Cli(a, {"cp", a.Path("f.txt"), "b:/d/t2"});  // into the directory
    CHECK(r.exit_code == 0);
    CHECK(Exists(b.Path("d/t2/f.txt")));
    MakeDir(b.Path("d/t3"), 0755);
    MakeDir(b.Path("d/t3/f.txt"), 0755);  // a directory where the file would go
    r = Cli(a, {"cp", "--overwrite", a.Path("f.txt"), "b:/d/t3/"});
    {
      INFO(r.Describe());
      CHECK(r.exit_code == 1);
      CHECK(r.output().find("is a directory") != std::string::npos);
    }

    // Pull into an existing local directory, and of the whole remote export root.
    r = Cli(a, {"cp", "b:/plain", a.Path("t") + "/"});
    CHECK(r.exit_code == 0);
    CHECK(ReadFile(a.Path("t/plain")) == "plain\n");
    r = Cli(a, {"cp", "-r", "b:/", a.Path("whole")});
    {
      INFO(r.Describe());
      CHECK(r.exit_code == 0);
      auto diffs = CompareTrees(b.export_root(), a.Path("whole"));
      CHECK_MESSAGE(diffs.empty(), DescribeDiffs(diffs));
    }
    CHECK(Partials(a.export_root()).empty());
    CHECK(Partials(b.export_root()).empty());
  }
}

}  // namespace
}  // namespace pororoca::test
