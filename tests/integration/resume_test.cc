// Crashes and interruptions in the middle of a transfer: kill -9 of either daemon, cancel and re-run,
// a peer that vanishes for good. The sender is slowed down ([fault_injection] send_delay_us) so a
// transfer of a few hundred MiB lasts long enough to be interrupted after the receiver has journaled
// part of it.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <thread>

#include "support/daemon_harness.h"

namespace pororoca::test {
namespace {

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint64_t kBigSize = 192 * kMiB + 12345;  // 193 chunks of 1 MiB

// ~3 s for kBigSize over 4 streams with 1 MiB chunks.
DaemonOptions SlowSender() {
  DaemonOptions o;
  o.extra_toml = "[fault_injection]\nsend_delay_us = 60000\n";
  return o;
}

std::vector<std::string> BigPush(const DaemonProcess& a, bool detach) {
  // Detached, the CLI prints just the id; attached with --json, the final record.
  std::vector<std::string> args{"cp", "--chunk", "1MiB", detach ? "-d" : "--json"};
  args.push_back(a.Path("big.bin"));
  args.push_back("b:/big.bin");
  return args;
}

void MakeBig(const DaemonProcess& a) {
  WriteRandomFile(a.Path("big.bin"), kBigSize, 77, 0640);
  SetMtime(a.Path("big.bin"), 1650000000, 246813579);
}

// Waits until the receiver has made at least `records` chunks durable (journal header 32 bytes,
// 32 bytes per record).
bool WaitForJournal(const DaemonProcess& receiver, uint64_t records,
                    std::chrono::milliseconds timeout = 60s) {
  return WaitUntil([&] { return JournalBytes(receiver.export_root()) >= 32 + 32 * records; }, timeout);
}

bool HasPart(const std::vector<std::string>& partials) {
  for (const auto& p : partials) {
    if (p.size() > 5 && p.compare(p.size() - 5, 5, ".part") == 0) return true;
  }
  return false;
}

std::string SubmitDetached(const DaemonProcess& a, const std::vector<std::string>& args) {
  CliResult r = Cli(a, args);
  INFO(r.Describe());
  REQUIRE(r.exit_code == 0);
  std::string id = Trim(r.out);
  CHECK(id.size() == 32);
  CHECK(id.find_first_not_of("0123456789abcdef") == std::string::npos);
  return id;
}

TEST_SUITE("integration.resume") {
  TEST_CASE("kill -9 of the receiving daemon mid-transfer is resumed by the sender's retry") {
    TestFederation fed;
    DaemonPair p(fed, SlowSender());
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    MakeBig(a);
    std::string id = SubmitDetached(a, BigPush(a, true));

    bool journaled = WaitForJournal(b, 8);
    const nlohmann::json before = a.Transfer(id);
    REQUIRE_MESSAGE(journaled, "receiver journaled nothing; transfer: " << before.dump(2));
    b.Kill9();
    auto partials = Partials(b.export_root());
    CHECK_MESSAGE(!Exists(b.Path("big.bin")), "final name exists while the transfer is incomplete");
    CHECK_MESSAGE(HasPart(partials), "no .poro-*.part after the kill; found: " << DescribeDiffs(partials));

    auto t = a.WaitForState(id, {"retrying", "failed", "succeeded", "cancelled"}, 60s);
    CHECK(t["state"] == "retrying");
    CHECK(!Exists(b.Path("big.bin")));
    // Stay down across at least one more (refused) attempt.
    std::this_thread::sleep_for(1500ms);
    CHECK(!Exists(b.Path("big.bin")));
    REQUIRE(b.Start());

    t = a.WaitForTerminal(id, 120s);
    INFO(t.dump(2));
    REQUIRE(t["state"] == "succeeded");
    CHECK(t["attempts"].get<unsigned>() >= 2);
    CHECK(t["progress"]["bytes_resumed"].get<uint64_t>() > 0);
    CHECK(t["progress"]["bytes_resumed"].get<uint64_t>() < kBigSize);
    auto diffs = CompareTrees(a.Path("big.bin"), b.Path("big.bin"));
    CHECK_MESSAGE(diffs.empty(), DescribeDiffs(diffs));
    CHECK(Partials(b.export_root()).empty());
  }

  TEST_CASE("kill -9 of the sending daemon mid-transfer resumes the persisted transfer at restart") {
    TestFederation fed;
    DaemonPair p(fed, SlowSender());
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    MakeBig(a);
    std::string id = SubmitDetached(a, BigPush(a, true));

    bool journaled = WaitForJournal(b, 8);
    const nlohmann::json before = a.Transfer(id);
    REQUIRE_MESSAGE(journaled, "receiver journaled nothing; transfer: " << before.dump(2));
    a.Kill9();
    CHECK(a.StoredRecord(id).value("state", std::string()) == "running");
    CHECK(!Exists(b.Path("big.bin")));
    CHECK(HasPart(Partials(b.export_root())));
    REQUIRE(a.Start());

    auto t = a.WaitForTerminal(id, 120s);
    INFO(t.dump(2));
    REQUIRE(t["state"] == "succeeded");
    CHECK(t["progress"]["bytes_resumed"].get<uint64_t>() > 0);
    CHECK(t["progress"]["bytes_resumed"].get<uint64_t>() < kBigSize);
    auto diffs = CompareTrees(a.Path("big.bin"), b.Path("big.bin"));
    CHECK_MESSAGE(diffs.empty(), DescribeDiffs(diffs));
    CHECK(Partials(b.export_root()).empty());
    CHECK(a.Log().find("queued again after the restart: transfer " + id) != std::string::npos);
  }

  TEST_CASE("kill -9 of the remote sender during a pull is resumed by the puller's retry") {
    TestFederation fed;
    DaemonPair p(fed, {}, SlowSender());
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    WriteRandomFile(b.Path("big.bin"), kBigSize, 78, 0600);
    SetMtime(b.Path("big.bin"), 1650000001, 13579);
    std::string id = SubmitDetached(a, {"cp", "--chunk", "1MiB", "-d", "b:/big.bin", a.Path("big.bin")});

    bool journaled = WaitForJournal(a, 8);
    const nlohmann::json before = a.Transfer(id);
    REQUIRE_MESSAGE(journaled, "puller journaled nothing; transfer: " << before.dump(2));
    b.Kill9();
    CHECK(!Exists(a.Path("big.bin")));
    CHECK(HasPart(Partials(a.export_root())));
    auto t = a.WaitForState(id, {"retrying", "failed", "succeeded", "cancelled"}, 60s);
    CHECK(t["state"] == "retrying");
    REQUIRE(b.Start());

    t = a.WaitForTerminal(id, 120s);
    INFO(t.dump(2));
    REQUIRE(t["state"] == "succeeded");
    CHECK(t["progress"]["bytes_resumed"].get<uint64_t>() > 0);
    CHECK(t["progress"]["bytes_resumed"].get<uint64_t>() < kBigSize);
    auto diffs = CompareTrees(b.Path("big.bin"), a.Path("big.bin"));
    CHECK_MESSAGE(diffs.empty(), DescribeDiffs(diffs));
    CHECK(Partials(a.export_root()).empty());
  }

  TEST_CASE("a daemon stopped with SIGTERM mid-transfer resumes the transfer when it starts again") {
    TestFederation fed;
    DaemonPair p(fed, SlowSender());
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    MakeBig(a);
    std::string id = SubmitDetached(a, BigPush(a, true));
    REQUIRE(WaitForJournal(b, 8));
    CHECK(a.Stop());
    auto persisted = a.StoredRecord(id);
    CHECK(persisted.value("state", std::string()) == "running");
    CHECK(!Exists(b.Path("big.bin")));
    REQUIRE(a.Start());

    auto t = a.WaitForTerminal(id, 120s);
    INFO(t.dump(2));
    REQUIRE(t["state"] == "succeeded");
    CHECK(t["progress"]["bytes_resumed"].get<uint64_t>() > 0);
    auto diffs = CompareTrees(a.Path("big.bin"), b.Path("big.bin"));
    CHECK_MESSAGE(diffs.empty(), DescribeDiffs(diffs));
    CHECK(Partials(b.export_root()).empty());
  }

  TEST_CASE("re-running the same cp after a cancel resumes from what the receiver kept") {
    TestFederation fed;
    DaemonPair p(fed, SlowSender());
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    MakeBig(a);
    const std::vector<std::string> cmd = BigPush(a, false);

    // The first run is followed by the CLI (no -d) and cancelled from a second CLI: exit code 6.
    CliResult first;
    std::thread runner([&] { first = Cli(a, cmd, 120s); });
    std::string id;
    bool journaled = WaitForJournal(b, 8);
    auto list = a.Get("/v1/transfers");
    if (list.is_object() && list["transfers"].size() == 1)
      id = list["transfers"][0].value("id", std::string());
    CliResult cancel = id.empty() ? CliResult() : Cli(a, {"cancel", id});
    runner.join();
    REQUIRE(journaled);
    REQUIRE(!id.empty());
    {
      INFO(cancel.Describe());
      CHECK(cancel.exit_code == 0);
      CHECK(cancel.out.find("cancel requested for " + id) != std::string::npos);
    }
    {
      INFO(first.Describe());
      CHECK(first.exit_code == 6);
      CHECK(first.Json()["state"] == "cancelled");
    }
    CHECK(a.Transfer(id)["state"] == "cancelled");
    CHECK(!Exists(b.Path("big.bin")));
    CHECK(HasPart(Partials(b.export_root())));

    CliResult again = Cli(a, cmd);
    INFO(again.Describe());
    REQUIRE(again.exit_code == 0);
    auto rec = again.Json();
    CHECK(rec["state"] == "succeeded");
    CHECK(rec["progress"]["bytes_resumed"].get<uint64_t>() > 0);
    CHECK(rec["progress"]["bytes_resumed"].get<uint64_t>() < kBigSize);
    auto diffs = CompareTrees(a.Path("big.bin"), b.Path("big.bin"));
    CHECK_MESSAGE(diffs.empty(), DescribeDiffs(diffs));
    CHECK(Partials(b.export_root()).empty());
  }

  TEST_CASE("a peer that vanishes for good leaves the transfer retrying until it is cancelled") {
    TestFederation fed;
    DaemonPair p(fed, SlowSender());
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    MakeBig(a);
    std::string id = SubmitDetached(a, BigPush(a, true));
    REQUIRE(WaitForJournal(b, 2));
    b.Kill9();

    auto t = a.WaitForState(id, {"retrying", "failed", "succeeded", "cancelled"}, 60s);
    {
      INFO(t.dump(2));
      REQUIRE(t["state"] == "retrying");
      const std::string err = t.value("error", std::string());
      // The first failed attempt lost its connections to b. Which thread notices first decides the
      // wording: "control connection lost: ... closed without close_notify", "data channel N: send to
      // ADDR: Connection reset by peer" or "... Broken pipe"; all name b's address.
      bool lost =
          (ContainsNoCase(err, "connection") &&
           (ContainsNoCase(err, "lost") || ContainsNoCase(err, "closed") || ContainsNoCase(err, "reset"))) ||
          ContainsNoCase(err, "broken pipe");
      CHECK_MESSAGE(lost, "error does not say the connection was lost: " << err);
      CHECK(err.find(b.address()) != std::string::npos);
      CHECK(t.value("error_code", std::string()) == "Unavailable");
    }
    // It keeps retrying (connection refused) while b stays away.
    bool retried = WaitUntil([&] { return a.Transfer(id).value("attempts", 0u) >= 3; }, 30s, 100ms);
    CHECK(retried);
    t = a.Transfer(id);
    CHECK((t["state"] == "retrying" || t["state"] == "running"));

    CliResult c = Cli(a, {"cancel", id});
    CHECK(c.exit_code == 0);
    t = a.WaitForTerminal(id, 30s);
    CHECK(t["state"] == "cancelled");
    CliResult s = Cli(a, {"status", id});
    INFO(s.Describe());
    CHECK(s.exit_code == 0);
    CHECK(s.out.find("cancelled") != std::string::npos);
  }
}

}  // namespace
}  // namespace pororoca::test
