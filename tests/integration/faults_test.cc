// Faults on the data path: corrupted chunks on the wire and a destination that runs out of space.
#include <doctest/doctest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>
#include <string>
#include <thread>

#include "support/daemon_harness.h"
#include "support/relay.h"

namespace pororoca::test {
namespace {

using nlohmann::json;

constexpr uint64_t kMiB = 1ull << 20;

bool IsRoot() { return ::geteuid() == 0; }

// A small tmpfs mounted by the test; unmounted (lazily, in case a daemon still holds a file) when
// the guard goes away, so a failing test does not leave mounts behind.
class TmpfsMount {
 public:
  TmpfsMount(const std::string& dir, const std::string& size) : dir_(dir) {
    std::string opts = "size=" + size + ",mode=0755";
    if (::mount("tmpfs", dir.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, opts.c_str()) == 0) {
      mounted_ = true;
    } else {
      error_ = std::strerror(errno);
    }
  }
  ~TmpfsMount() {
    if (mounted_ && ::umount2(dir_.c_str(), MNT_DETACH) != 0) {
      FAIL_CHECK("umount " << dir_ << ": " << std::strerror(errno));
    }
  }
  TmpfsMount(const TmpfsMount&) = delete;
  TmpfsMount& operator=(const TmpfsMount&) = delete;
  bool mounted() const { return mounted_; }
  const std::string& error() const { return error_; }
  uint64_t UsedBytes() const {
    struct statvfs v {};
    if (::statvfs(dir_.c_str(), &v) != 0) return UINT64_MAX;
    return (v.f_blocks - v.f_bfree) * v.f_frsize;
  }

 private:
  std::string dir_;
  bool mounted_ = false;
  std::string error_;
};

TEST_SUITE("integration.faults") {
  // The injector corrupts the payload messages numbered N, 2N, ... of a daemon (holes carry no
  // payload). A file's chunks go out first, then each copy asked for again, in order; a chunk whose
  // second copy is corrupt too comes a third time in pieces (four of 256 KiB for a 1 MiB chunk), and
  // a corrupt piece comes again alone. The counts below follow from that order.
  TEST_CASE("corrupted chunks are detected and re-sent and the copies are identical") {
    TestFederation fed;
    DaemonOptions corrupting;
    corrupting.extra_toml = "[fault_injection]\ncorrupt_every = 3\n";
    DaemonPair p(fed, corrupting, corrupting);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    CHECK(a.Log().find("FAULT INJECTION ACTIVE") != std::string::npos);

    // 5 chunks of 1 MiB: message 3 (chunk 2) is corrupted. If its re-send goes out after the other
    // chunks it is message 6, corrupted too, so chunk 2 comes in pieces (messages 7 to 10), of which
    // 9 is corrupted and sent again: 3 corrupt copies. If the re-send overtakes chunk 4, message 6
    // is chunk 4's first copy and each is corrupted once: 2. Either way every copy is caught.
    const uint64_t size = 4 * kMiB + kMiB / 2;
    WriteRandomFile(a.Path("pushed.bin"), size, 5, 0644);
    CliResult r = Cli(a, {"cp", "--chunk", "1MiB", "--json", a.Path("pushed.bin"), "b:/pushed.bin"});
    {
      INFO(r.Describe());
      REQUIRE(r.exit_code == 0);
      auto rec = r.Json();
      CHECK(rec["state"] == "succeeded");
      const uint64_t corrupt = rec["progress"]["chunks_corrupt"].get<uint64_t>();
      CHECK((corrupt == 2 || corrupt == 3));
      CHECK(rec["progress"]["bytes_resent"].get<uint64_t>() >= kMiB / 2);
      auto diffs = CompareTrees(a.Path("pushed.bin"), b.Path("pushed.bin"));
      CHECK_MESSAGE(diffs.empty(), DescribeDiffs(diffs));
    }

    // Pull: b sends and corrupts, a's receiver catches it.
    WriteRandomFile(b.Path("pulled.bin"), size, 6, 0600);
    r = Cli(a, {"cp", "--chunk", "1MiB", "--json", "b:/pulled.bin", a.Path("pulled.bin")});
    {
      INFO(r.Describe());
      REQUIRE(r.exit_code == 0);
      const uint64_t corrupt = r.Json()["progress"]["chunks_corrupt"].get<uint64_t>();
      CHECK((corrupt == 2 || corrupt == 3));
      auto diffs = CompareTrees(b.Path("pulled.bin"), a.Path("pulled.bin"));
      CHECK_MESSAGE(diffs.empty(), DescribeDiffs(diffs));
    }
    CHECK(Partials(a.export_root()).empty());
    CHECK(Partials(b.export_root()).empty());
  }

  TEST_CASE("transfers through a relay that flips a bit every 4-12 MiB on data connections succeed") {
    // The relay stands between a and b (b is listed in the manifest at the relay's address) and
    // damages the data connections as a bad path would; control connections pass untouched.
    TestFederation fed;
    FlippingRelay relay(4 * kMiB, 12 * kMiB, 2026);
    DaemonOptions bo;
    bo.manifest_address = relay.address();
    bo.transports = {"tcp"};  // the relay damages TCP data connections (other transports bypass it)
    DaemonProcess b(fed, "b", bo);
    relay.SetTarget(b.port());
    DaemonOptions ao;
    ao.transports = {"tcp"};
    DaemonProcess a(fed, "a", ao);
    REQUIRE(a.Start());
    REQUIRE(b.Start());

    // Push: 300 MiB, one 200 MiB file and ten of 10 MiB, 4 MiB chunks on 4 streams.
    MakeDir(a.Path("tree"));
    WriteRandomFile(a.Path("tree/big.bin"), 200 * kMiB, 41);
    for (int i = 0; i < 10; ++i) WriteRandomFile(a.Path("tree/f" + std::to_string(i)), 10 * kMiB, 42 + i);
    CliResult r = Cli(a, {"cp", "-r", "-n", "4", "--json", a.Path("tree"), "b:/tree"}, 300s);
    {
      INFO(r.Describe());
      REQUIRE(r.exit_code == 0);
      json rec = r.Json();
      CHECK(rec["state"] == "succeeded");
      CHECK(relay.data_connections() >= 4);
      CHECK(relay.flips() >= 10);
      const uint64_t corrupt = rec["progress"]["chunks_corrupt_all_attempts"].get<uint64_t>();
      MESSAGE("push: " << relay.flips() << " bits flipped, " << corrupt << " corrupt copies, attempts "
                       << rec["attempts"]);
      CHECK(corrupt >= 1);
      CHECK(rec["progress"]["corrupt_chunks_per_gib"].get<double>() > 0);
      auto diffs = CompareTrees(a.Path("tree"), b.Path("tree"));
      CHECK_MESSAGE(diffs.empty(), DescribeDiffs(diffs));
    }
    // The human summary shows the corruption, and the receiving end audited it.
    r = Cli(a, {"cp", "-r", "-n", "4", a.Path("tree"), "b:/tree2"}, 300s);
    {
      INFO(r.Describe());
      REQUIRE(r.exit_code == 0);
      CHECK(r.out.find("corrupt chunks: ") != std::string::npos);
      CHECK(r.out.find("failed verification and were sent again") != std::string::npos);
      auto diffs = CompareTrees(a.Path("tree"), b.Path("tree2"));
      CHECK_MESSAGE(diffs.empty(), DescribeDiffs(diffs));
    }
    uint64_t audited = 0;
    for (const auto& rec : b.AuditRecords("transfer_end"))
      audited += rec.value("chunks_corrupt", uint64_t(0));
    CHECK(audited >= 1);

    // Pull: b sends through the relay, a's receiver catches the damage.
    MakeDir(b.Path("out"));
    WriteRandomFile(b.Path("out/pulled.bin"), 100 * kMiB, 77);
    r = Cli(a, {"cp", "-r", "-n", "4", "--json", "b:/out", a.Path("in")}, 300s);
    {
      INFO(r.Describe());
      REQUIRE(r.exit_code == 0);
      CHECK(r.Json()["state"] == "succeeded");
      CHECK(r.Json()["progress"]["chunks_corrupt_all_attempts"].get<uint64_t>() >= 1);
      auto diffs = CompareTrees(b.Path("out"), a.Path("in"));
      CHECK_MESSAGE(diffs.empty(), DescribeDiffs(diffs));
    }
    CHECK(Partials(a.export_root()).empty());
    CHECK(Partials(b.export_root()).empty());
  }

  TEST_CASE("a many-chunk transfer over 4 streams survives a corrupt chunk every seventh message") {
    TestFederation fed;
    DaemonOptions corrupting;
    corrupting.extra_toml = "[fault_injection]\ncorrupt_every = 7\n";
    DaemonPair p(fed, corrupting, corrupting);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    const uint64_t size = 24 * kMiB - 999;  // 24 chunks: messages 7, 14 and 21 are corrupted, and re-sends
    WriteRandomFile(a.Path("pushed.bin"), size, 7, 0644);
    CliResult r =
        Cli(a, {"cp", "-n", "4", "--chunk", "1MiB", "--json", a.Path("pushed.bin"), "b:/pushed.bin"});
    INFO(r.Describe());
    REQUIRE(r.exit_code == 0);
    // 3 when every re-send lands between the multiples of 7; a re-send that lands on one is
    // corrupted again and its chunk comes in pieces, which adds one or two corrupt copies.
    const uint64_t corrupt = r.Json()["progress"]["chunks_corrupt"].get<uint64_t>();
    CHECK((corrupt >= 3 && corrupt <= 5));
    auto diffs = CompareTrees(a.Path("pushed.bin"), b.Path("pushed.bin"));
    CHECK_MESSAGE(diffs.empty(), DescribeDiffs(diffs));
    CHECK(Partials(b.export_root()).empty());
  }

  TEST_CASE("a source file that shrinks while it is sent fails alone and the rest of the tree arrives") {
    // b-shrinks.bin is under 1 MiB, so it is read through the page cache and its chunks are sent
    // with sendfile; 512 KiB chunks go through the channel queues. Each chunk waits 1 s before it is
    // sent, so the reader has hashed the whole file (and queued its FILE_END) long before: the
    // truncation below hits the sendfile of chunks already announced (the stream is padded with
    // zeros, the receiver rejects the chunks and asks for them again) and then the re-reads, which
    // find the file changed after its FILE_END.
    TestFederation fed;
    DaemonOptions slow;
    slow.extra_toml = "[fault_injection]\nsend_delay_us = 1000000\n";
    DaemonPair p(fed, slow);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    MakeDir(a.Path("src"), 0755);
    WriteRandomFile(a.Path("src/a-stable.bin"), 3 * kMiB + 5, 31, 0644);
    WriteRandomFile(a.Path("src/b-shrinks.bin"), kMiB - 4096, 32, 0644);
    CliResult r = Cli(a, {"cp", "-d", "-r", "--chunk", "512KiB", a.Path("src"), "b:/"});
    INFO(r.Describe());
    REQUIRE(r.exit_code == 0);
    const std::string id = Trim(r.out);
    REQUIRE(a.WaitForState(id, {"running", "succeeded", "failed"}, 30s)["state"] == "running");
    // The walk must have seen both files whole: a session whose set-up takes longer (other
    // transports open endpoints first) would otherwise walk the file already truncated and copy
    // it consistently. The first chunk leaves a second after the session starts.
    const uint64_t whole = (3 * kMiB + 5) + (kMiB - 4096);
    for (int i = 0; i < 1000; ++i) {
      auto progress = a.Transfer(id)["progress"];
      if (progress.value("walk_done", false) && progress.value("bytes_total", uint64_t(0)) == whole) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    REQUIRE(a.Transfer(id)["progress"].value("bytes_total", uint64_t(0)) == whole);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    REQUIRE(::truncate(a.Path("src/b-shrinks.bin").c_str(), 100000) == 0);

    auto t = a.WaitForTerminal(id, 60s);
    INFO(t.dump(2));
    CHECK(t["state"] == "partial");  // the stable file arrived
    CHECK(t["progress"]["files_done"] == 1);
    CHECK(t["error_code"] == "FilesFailed");
    CHECK(t["progress"]["files_failed"] == 1);
    REQUIRE(t["failures"].size() == 1);
    CHECK(t["failures"][0]["path"].get<std::string>().find("b-shrinks.bin") != std::string::npos);
    CHECK_FALSE(t["failures"][0]["error"].get<std::string>().empty());
    CHECK(CompareTrees(a.Path("src/a-stable.bin"), b.Path("src/a-stable.bin")).empty());
    CHECK_FALSE(Exists(b.Path("src/b-shrinks.bin")));  // nothing under the final name
    CHECK(Partials(b.export_root()).empty());
  }

  TEST_CASE("a full destination fails the file cleanly and frees the space" * doctest::skip(!IsRoot())) {
    TestFederation fed;
    DaemonPair p(fed);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    MakeDir(b.Path("full"), 0755);
    TmpfsMount mnt(b.Path("full"), "16m");
    if (!mnt.mounted()) {
      MESSAGE("cannot mount a tmpfs (" << mnt.error() << "); disk-full test skipped");
      return;
    }
    WriteRandomFile(a.Path("big.bin"), 64 * kMiB, 9, 0644);

    CliResult r = Cli(a, {"cp", a.Path("big.bin"), "b:/full/big.bin"});
    {
      INFO(r.Describe());
      CHECK(r.exit_code == 1);
      // One "failed: PATH: MESSAGE" line names the file and the cause.
      bool named = false;
      std::istringstream lines(r.output());
      for (std::string line; std::getline(lines, line);) {
        if (line.find("failed: ") != std::string::npos && line.find("big.bin") != std::string::npos &&
            line.find("No space left on device") != std::string::npos) {
          named = true;
        }
      }
      CHECK(named);
    }
    CHECK(!Exists(b.Path("full/big.bin")));
    auto partials = Partials(b.Path("full"));
    CHECK_MESSAGE(partials.empty(), "left behind: " << DescribeDiffs(partials));
    const uint64_t used = mnt.UsedBytes();
    CHECK_MESSAGE(used < 1 * kMiB, "tmpfs still holds " << used << " bytes");

    // The space really is free again: a file that fits goes through.
    WriteRandomFile(a.Path("fits.bin"), 8 * kMiB, 10, 0644);
    r = Cli(a, {"cp", a.Path("fits.bin"), "b:/full/fits.bin"});
    INFO(r.Describe());
    CHECK(r.exit_code == 0);
    CHECK(CompareTrees(a.Path("fits.bin"), b.Path("full/fits.bin")).empty());
  }
}

}  // namespace
}  // namespace pororoca::test
