// Protection levels of the data connections (docs/protocol.md section 9, docs/policy.md): clear,
// integrity and private end to end through the CLI, the policy's minimum at either end, and a
// tampering relay (a corrupted chunk whose XXH3-128 digest is forged to match).
#include <doctest/doctest.h>

#include <string>
#include <thread>

#include "support/daemon_harness.h"

namespace pororoca::test {
namespace {

using nlohmann::json;

constexpr uint64_t kMiB = 1ull << 20;

bool WaitSerial(const DaemonProcess& d, uint64_t serial) {
  return WaitUntil([&] { return d.Get("/v1/federation").value("serial", uint64_t{0}) == serial; }, 15s,
                   100ms);
}

// The last transfer_end record of `d`'s audit log for the transfer `id`.
json LastEnd(const DaemonProcess& d, const std::string& id) {
  json last;
  for (const auto& r : d.AuditRecords("transfer_end")) {
    if (r.value("transfer_id", std::string()) == id) last = r;
  }
  return last;
}

void MakeTree(const DaemonProcess& d, const std::string& rel) {
  MakeDir(d.Path(rel));
  MakeDir(d.Path(rel + "/sub"));
  WriteRandomFile(d.Path(rel + "/big.bin"), 5 * kMiB + 3, 11);     // several 1 MiB chunks
  WriteRandomFile(d.Path(rel + "/sub/small.bin"), 70 * 1024, 12);  // one chunk, page-cache path
  WriteFile(d.Path(rel + "/sub/empty"), "");
}

TEST_SUITE("protection") {
  TEST_CASE(
      "each protection level moves a tree both ways, and the record, the summary and both audit logs name "
      "it") {
    TestFederation fed;
    DaemonPair p(fed);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    MakeTree(a, "src");
    for (std::string level : {"clear", "integrity", "private"}) {
      CAPTURE(level);
      CliResult push = Cli(a, {"cp", "-r", "--chunk", "1MiB", "--protection", level, "--json", a.Path("src"),
                               "b:/push-" + level});
      INFO(push.Describe());
      REQUIRE(push.exit_code == 0);
      json rec = push.Json();
      CHECK(rec["protection"] == level);
      CHECK(rec["progress"]["chunks_corrupt"] == 0);
      auto diffs = CompareTrees(a.Path("src"), b.Path("push-" + level));
      CHECK_MESSAGE(diffs.empty(), DescribeDiffs(diffs));
      const std::string id = rec["id"].get<std::string>();
      CHECK(LastEnd(a, id).value("protection", std::string()) == level);
      CHECK(LastEnd(b, id).value("protection", std::string()) == level);

      CliResult pull = Cli(a, {"cp", "-r", "--chunk", "1MiB", "--protection", level, "--json",
                               "b:/push-" + level, a.Path("pull-" + level)});
      INFO(pull.Describe());
      REQUIRE(pull.exit_code == 0);
      CHECK(pull.Json()["protection"] == level);
      diffs = CompareTrees(a.Path("src"), a.Path("pull-" + level));
      CHECK_MESSAGE(diffs.empty(), DescribeDiffs(diffs));
    }
    CHECK(b.Log().find("protection private") != std::string::npos);

    // The summary a person reads says it; without --protection and with a policy that requires
    // nothing, the level is clear.
    CliResult human = Cli(a, {"cp", "--protection", "private", a.Path("src/big.bin"), "b:/human.bin"});
    INFO(human.Describe());
    CHECK(human.exit_code == 0);
    CHECK(human.out.find("protection: private (data connections encrypted and authenticated") !=
          std::string::npos);
    CliResult plain = Cli(a, {"cp", "--json", a.Path("src/big.bin"), "b:/plain.bin"});
    INFO(plain.Describe());
    REQUIRE(plain.exit_code == 0);
    CHECK(plain.Json()["protection"] == "clear");

    // A level that does not exist is refused before anything starts.
    CliResult bad = Cli(a, {"cp", "--protection", "secret", a.Path("src/big.bin"), "b:/bad.bin"});
    CHECK(bad.exit_code != 0);
    CHECK(bad.output().find("protection must be clear, integrity or private, not 'secret'") !=
          std::string::npos);
    CHECK_FALSE(Exists(b.Path("bad.bin")));
  }

  TEST_CASE(
      "a policy's minimum raises the level and refuses a request below it, at the responder and at the "
      "initiator") {
    TestFederation fed;
    DaemonOptions ao;
    ao.extra_toml = "[[classification]]\npath = \"/tree/health\"\nlabel = \"sensitive\"\n";
    DaemonPair p(fed, ao, {});
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    fed.SetRules(json::array({
        {{"id", "b-to-a-private"},
         {"effect", "allow"},
         {"source", {"inst-b"}},
         {"destination", {"inst-a"}},
         {"protection", "private"}},
        {{"id", "sensitive-integrity"},
         {"effect", "allow"},
         {"classifications", {"sensitive"}},
         {"protection", "integrity"}},
        {{"id", "the-rest"}, {"effect", "allow"}},
    }));
    uint64_t s = fed.Publish();
    REQUIRE(WaitSerial(a, s));
    REQUIRE(WaitSerial(b, s));
    WriteRandomFile(b.Path("results.bin"), 2 * kMiB + 1, 21);
    MakeDir(a.Path("tree"));
    MakeDir(a.Path("tree/health"));
    WriteRandomFile(a.Path("tree/plain.bin"), 100 * 1024, 22);
    WriteRandomFile(a.Path("tree/health/scan.bin"), 1 * kMiB + 7, 23);

    // A pull from b: the responder (b, the source) requires private and says so in OPEN_OK.
    CliResult pull = Cli(a, {"cp", "--json", "b:/results.bin", a.Path("results.bin")});
    INFO(pull.Describe());
    REQUIRE(pull.exit_code == 0);
    CHECK(pull.Json()["protection"] == "private");
    CHECK(SameContent(b.Path("results.bin"), a.Path("results.bin")));
    // Asking for less is refused by b, named and audited there, and nothing is written.
    CliResult low = Cli(a, {"cp", "--protection", "integrity", "b:/results.bin", a.Path("low.bin")});
    INFO(low.Describe());
    CHECK(low.exit_code != 0);
    CHECK(low.output().find("rule 'b-to-a-private' requires protection 'private', the transfer asked for "
                            "'integrity'") != std::string::npos);
    CHECK_FALSE(Exists(a.Path("low.bin")));
    bool audited = false;
    for (const auto& r : b.AuditRecords("transfer")) {
      audited = audited || (r.value("decision", std::string()) == "denied" &&
                            r.value("protection_required", std::string()) == "private" &&
                            r.value("protection", std::string()) == "integrity");
    }
    CHECK(audited);

    // A push of a tree with a sensitive sub-tree: only the source (a, the initiator) knows the
    // sub-tree's label, so b allows clear and a raises the level to integrity in START.
    CliResult push = Cli(a, {"cp", "-r", "--json", a.Path("tree"), "b:/tree"});
    INFO(push.Describe());
    REQUIRE(push.exit_code == 0);
    json rec = push.Json();
    CHECK(rec["protection"] == "integrity");
    CHECK(LastEnd(b, rec["id"].get<std::string>()).value("protection", std::string()) == "integrity");
    auto diffs = CompareTrees(a.Path("tree"), b.Path("tree"));
    CHECK_MESSAGE(diffs.empty(), DescribeDiffs(diffs));
    // Asking for clear is then refused by a itself, after b accepted; a's audit log has it.
    CliResult clear = Cli(a, {"cp", "-r", "--protection", "clear", a.Path("tree"), "b:/tree-clear"});
    INFO(clear.Describe());
    CHECK(clear.exit_code != 0);
    CHECK(clear.output().find("at a: rule 'sensitive-integrity' requires protection 'integrity'") !=
          std::string::npos);
    CHECK_FALSE(Exists(b.Path("tree-clear")));
    bool denied_at_a = false;
    for (const auto& r : a.AuditRecords("transfer")) {
      denied_at_a = denied_at_a || (r.value("decision", std::string()) == "denied" &&
                                    r.value("rule", std::string()) == "sensitive-integrity");
    }
    CHECK(denied_at_a);

    // policy check: the dry run shows this end's minimum and refuses the same request.
    CliResult check = Cli(a, {"policy", "check", "-r", "--json", a.Path("tree"), "b:/tree2"});
    INFO(check.Describe());
    REQUIRE(check.exit_code == 0);
    CHECK(check.Json()["protection_required"] == "integrity");
    CHECK(check.Json()["protection"] == "integrity");
    CliResult check_clear =
        Cli(a, {"policy", "check", "-r", "--protection", "clear", "--json", a.Path("tree"), "b:/tree2"});
    INFO(check_clear.Describe());
    CHECK(check_clear.exit_code != 0);
    CHECK(check_clear.Json()["allowed"] == false);
    CHECK(check_clear.Json()["reason"].get<std::string>().find("requires protection 'integrity'") !=
          std::string::npos);
  }

  TEST_CASE(
      "a relay that rewrites a chunk and its digest is caught by integrity and private, and fails the file "
      "at clear") {
    // Every third message a sends on its data connections is corrupted and its header's digest
    // forged to match the corrupted bytes: XXH3-128 alone cannot tell.
    TestFederation fed;
    DaemonOptions tamper;
    tamper.extra_toml = "[fault_injection]\ncorrupt_every = 3\nforge_digest = true\n";
    DaemonPair p(fed, tamper, {});
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    WriteRandomFile(a.Path("data.bin"), 4 * kMiB + kMiB / 2, 31);  // 5 chunks of 1 MiB
    for (std::string level : {"integrity", "private"}) {
      CAPTURE(level);
      CliResult r = Cli(a, {"cp", "--chunk", "1MiB", "--protection", level, "--json", a.Path("data.bin"),
                            "b:/data-" + level + ".bin"});
      INFO(r.Describe());
      REQUIRE(r.exit_code == 0);
      json rec = r.Json();
      CHECK(rec["protection"] == level);
      CHECK(rec["progress"]["chunks_corrupt"].get<uint64_t>() >= 1);
      CHECK(SameContent(a.Path("data.bin"), b.Path("data-" + level + ".bin")));
    }
    CHECK(b.Log().find("failed authentication") != std::string::npos);

    // At clear the forged chunk passes its own check; the file digest, which travels on the TLS
    // control connection, still fails the file, so no tampered byte is committed.
    CliResult r = Cli(
        a,
        {"cp", "--chunk", "1MiB", "--protection", "clear", "--json", a.Path("data.bin"), "b:/data-clear.bin"},
        180s);
    INFO(r.Describe());
    CHECK(r.exit_code != 0);
    json rec = r.Json();
    CHECK(rec["state"] == "failed");
    CHECK(rec["progress"]["chunks_corrupt"] == 0);  // the forged chunk passed the digest check
    REQUIRE(rec["failures"].size() == 1);
    CHECK(rec["failures"][0]["error"].get<std::string>().find("file digest mismatch") != std::string::npos);
    CHECK_FALSE(Exists(b.Path("data-clear.bin")));
    CHECK(Partials(b.export_root()).empty());
  }
}

}  // namespace
}  // namespace pororoca::test
