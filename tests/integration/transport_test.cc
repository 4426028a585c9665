// Data transports other than tcp between two real daemons: UCX (UCX_TLS=tcp on loopback) and
// libfabric (tcp;ofi_rxm), the same library code paths as on InfiniBand or RoCE; the negotiation in
// HELLO, fallbacks that say why, and the binding of every data channel to its session.
#include <doctest/doctest.h>
#include <sys/stat.h>

#include <filesystem>
#include <string>
#include <thread>

#include "support/daemon_harness.h"

namespace pororoca::test {
namespace {

using namespace std::chrono_literals;

constexpr uint64_t kMiB = 1ull << 20;

DaemonOptions Offering(std::vector<std::string> transports) {
  DaemonOptions o;
  o.transports = std::move(transports);
  return o;
}

// A small tree with a multi-chunk file, an empty file, a sparse file, a link and an empty directory.
void MakeTree(const std::string& root) {
  MakeDir(root, 0755);
  WriteRandomFile(root + "/big.bin", 21 * kMiB + 333, 41, 0640);
  WriteFile(root + "/empty", "", 0600);
  MakeDir(root + "/sub", 0750);
  MakeDir(root + "/sub/deeper", 0750);
  WriteRandomFile(root + "/sub/deeper/leaf.bin", 300000, 42, 0600);
  WriteAt(root + "/sub/sparse.img", 12 * kMiB, RandomBytes(kMiB, 43));
  REQUIRE(::symlink("../big.bin", (root + "/sub/link").c_str()) == 0);
  MakeDir(root + "/emptydir", 0755);
  SetMtime(root + "/big.bin", 1600000000, 1);
  SetMtime(root + "/sub", 1600000100, 2);
}

// The names in a directory (the export root holds nothing else from the daemon).
std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) out.push_back(e.path().filename());
  return out;
}

// The transport of the daemon's last transfer_end audit record (the responder writes it once its
// session has ended, which may be just after the initiator's CLI returned: waited for, 10 s at most).
std::string TransportOfLastEnd(const DaemonProcess& d, std::string* note, size_t count = 1) {
  auto recs = d.AuditRecords("transfer_end");
  for (int i = 0; i < 200 && recs.size() < count; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    recs = d.AuditRecords("transfer_end");
  }
  if (recs.empty()) return "";
  if (note != nullptr) *note = recs.back().value("transport_note", "");
  return recs.back().value("transport", "");
}

// Push and pull of a file and a tree over `name`, exact, with the record, the CLI and the audit
// naming it.
void PushAndPull(const std::string& name) {
  TestFederation fed;
  DaemonPair p(fed, Offering({name, "tcp"}), Offering({name, "tcp"}));
  DaemonProcess& a = *p.a;
  DaemonProcess& b = *p.b;
  const uint64_t size = 9 * kMiB + 12345;
  WriteRandomFile(a.Path("data.bin"), size, 1, 0640);

  CliResult r = Cli(a, {"cp", "--json", a.Path("data.bin"), "b:/data.bin"});
  INFO(r.Describe());
  REQUIRE(r.exit_code == 0);
  auto rec = r.Json();
  CHECK(rec["state"] == "succeeded");
  CHECK(rec["transport"] == name);
  CHECK(rec["transport_note"] == "");
  CHECK(rec["progress"]["bytes_done"] == size);
  auto diffs = CompareTrees(a.Path("data.bin"), b.Path("data.bin"));
  CHECK_MESSAGE(diffs.empty(), DescribeDiffs(diffs));
  CHECK(TransportOfLastEnd(a, nullptr) == name);
  CHECK(TransportOfLastEnd(b, nullptr) == name);

  // A tree, pulled (b sends, a receives), with the text summary a user reads.
  MakeTree(b.Path("tree"));
  r = Cli(a, {"cp", "-r", "--transport", name, "b:/tree", a.Path("pulled")});
  INFO(r.Describe());
  REQUIRE(r.exit_code == 0);
  CHECK(r.output().find("transport: " + name + "\n") != std::string::npos);
  diffs = CompareTrees(b.Path("tree"), a.Path("pulled"));
  CHECK_MESSAGE(diffs.empty(), DescribeDiffs(diffs));

  // The tree pushed back over 6 streams, with integrity protection on the data messages.
  r = Cli(a, {"cp", "-r", "--json", "-n", "6", "--protection", "integrity", a.Path("pulled"), "b:/back"});
  INFO(r.Describe());
  REQUIRE(r.exit_code == 0);
  CHECK(r.Json()["transport"] == name);
  CHECK(r.Json()["protection"] == "integrity");
  diffs = CompareTrees(b.Path("tree"), b.Path("back"));
  CHECK_MESSAGE(diffs.empty(), DescribeDiffs(diffs));
  CHECK(a.Log().find("6 " + name + " streams") != std::string::npos);
}

// Data channels over `name` bound with the wrong key: refused, nothing they carry written.
void WrongKeyRefused(const std::string& name) {
  TestFederation fed;
  DaemonOptions forger = Offering({name, "tcp"});
  forger.extra_toml = "[fault_injection]\nforge_bind = true\n";
  forger.retry_attempts = 2;
  DaemonPair p(fed, forger, Offering({name, "tcp"}));
  DaemonProcess& a = *p.a;
  DaemonProcess& b = *p.b;
  WriteRandomFile(a.Path("f.bin"), 5 * kMiB, 7);

  CliResult r = Cli(a, {"cp", "--json", a.Path("f.bin"), "b:/f.bin"});
  INFO(r.Describe());
  CHECK(r.exit_code != 0);
  auto rec = r.Json();
  CHECK(rec["state"] == "failed");
  CHECK(rec["error"].get<std::string>().find("did not present this session's binding: refused") !=
        std::string::npos);
  CHECK(b.Log().find("data channel 0 over " + name + " from a (127.0.0.1:") != std::string::npos);
  CHECK(b.Log().find(") did not present this session's binding: refused") != std::string::npos);
  // Nothing at the destination: no file, no part file, no journal.
  const auto left = ListDir(b.Path(""));
  CHECK_MESSAGE(left.empty(), "left in b's export: " << (left.empty() ? "" : left.front()));

  // The same daemons the other way: b sends with its true binding, a receives.
  WriteRandomFile(b.Path("g.bin"), 2 * kMiB, 8);
  r = Cli(a, {"cp", "--json", "b:/g.bin", a.Path("g.bin")});
  INFO(r.Describe());
  CHECK(r.exit_code == 0);
  CHECK(r.Json()["transport"] == name);
  CHECK(CompareTrees(b.Path("g.bin"), a.Path("g.bin")).empty());
}

// Daemon a's `name` cannot start (`broken`): a starts anyway, logs it, and a push to b, which
// offers `name`, runs on tcp with a note that starts with `note`.
void UnavailableFallsBack(const std::string& name, const DaemonOptions& broken, const std::string& note) {
  TestFederation fed;
  DaemonPair p(fed, broken, Offering({name, "tcp"}));
  DaemonProcess& a = *p.a;
  DaemonProcess& b = *p.b;
  CHECK(a.Log().find("[network] transports lists " + name + ", which is unavailable") != std::string::npos);
  WriteRandomFile(a.Path("f.bin"), kMiB, 6);
  CliResult r = Cli(a, {"cp", "--json", a.Path("f.bin"), "b:/f.bin"});
  INFO(r.Describe());
  REQUIRE(r.exit_code == 0);
  auto rec = r.Json();
  CHECK(rec["transport"] == "tcp");
  CHECK(rec["transport_note"].get<std::string>().find(note) == 0);
  CHECK(CompareTrees(a.Path("f.bin"), b.Path("f.bin")).empty());
}

TEST_SUITE("integration.transport") {
  TEST_CASE("ucx: push and pull of a file and a tree are exact, and the record, CLI and audit say ucx") {
    PushAndPull("ucx");
  }

  TEST_CASE("ucx: a peer without it gets tcp, and the record, CLI and audit say why, forcing it fails") {
    TestFederation fed;
    DaemonPair p(fed, Offering({"ucx", "tcp"}), Offering({"tcp"}));
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    WriteRandomFile(a.Path("f.bin"), 3 * kMiB, 5);

    CliResult r = Cli(a, {"cp", a.Path("f.bin"), "b:/f.bin"});
    INFO(r.Describe());
    REQUIRE(r.exit_code == 0);
    CHECK(r.output().find("transport: tcp (endpoint b does not offer ucx)") != std::string::npos);
    std::string note;
    CHECK(TransportOfLastEnd(a, &note) == "tcp");
    CHECK(note == "endpoint b does not offer ucx");
    CHECK(TransportOfLastEnd(b, &note) == "tcp");
    CHECK(note == "endpoint b does not offer ucx");

    r = Cli(a, {"cp", "--json", "--transport", "ucx", a.Path("f.bin"), "b:/forced.bin"});
    INFO(r.Describe());
    CHECK(r.exit_code != 0);
    auto rec = r.Json();
    CHECK(rec["state"] == "failed");
    CHECK(rec["attempts"] == 1);  // not worth a retry
    CHECK(rec["error"].get<std::string>().find("no data transport in common: endpoint a offers [ucx], "
                                               "endpoint b offers [tcp]") != std::string::npos);
    CHECK(!std::filesystem::exists(b.Path("forced.bin")));

    // b itself cannot force what it does not offer.
    r = Cli(b, {"cp", "--transport", "ucx", "a:/f.bin", b.Path("g.bin")});
    CHECK(r.exit_code != 0);
    CHECK(r.output().find(
              "transport ucx is not available on this endpoint: not in its [network] transports [tcp]") !=
          std::string::npos);
    // And a bad name is refused by the API, naming the field.
    r = Cli(b, {"cp", "--transport", "carrier-pigeon", "a:/f.bin", b.Path("g.bin")});
    CHECK(r.exit_code != 0);
    CHECK(r.output().find("transport must be tcp, ucx or fabric, not 'carrier-pigeon'") != std::string::npos);
  }

  TEST_CASE("ucx: an endpoint whose UCX finds no transport starts, says so, and runs on tcp") {
    DaemonOptions broken = Offering({"ucx", "tcp"});
    broken.ucx_tls = "no_such_transport";
    UnavailableFallsBack("ucx", broken, "ucx unavailable here: ucx:");
  }

  TEST_CASE(
      "[network] transports: an unknown or repeated name, or a provider fabric cannot use, stops the daemon "
      "at "
      "start-up, naming the key") {
    TestFederation fed;
    for (const auto& [list, what] : std::vector<std::pair<std::string, std::string>>{
             {R"(["tcp", "carrier-pigeon"])",
              "[network] transports: unknown transport 'carrier-pigeon' (tcp, ucx or fabric)"},
             {R"(["ucx", "ucx"])", "[network] transports: 'ucx' is listed twice"},
             {R"([])", "[network] transports: must be a non-empty array"},
             {"[\"fabric\"]\nfabric_provider = \"verbs\"",
              "[network] fabric_provider: 'verbs': an ofi_rxm provider such as \"tcp;ofi_rxm\""}}) {
      CAPTURE(list);
      const std::string file = fed.dir() + "/transports.toml";
      WriteFile(file, "[endpoint]\nname = \"a\"\n[network]\ntransports = " + list + "\n");
      CliResult r = RunDaemon({"--check-config", "--config", file});
      INFO(r.Describe());
      CHECK(r.exit_code == 2);
      CHECK(r.output().find(what) != std::string::npos);
      CHECK(r.output().find(file) != std::string::npos);
    }
  }

  TEST_CASE("ucx: data channels bound with the wrong key are refused and nothing they carry is written") {
    WrongKeyRefused("ucx");
  }

  TEST_CASE("fabric: data channels bound with the wrong key are refused and nothing they carry is written") {
    WrongKeyRefused("fabric");
  }

  TEST_CASE(
      "fabric: push and pull of a file and a tree are exact, and the record, CLI and audit say fabric") {
    PushAndPull("fabric");
  }

  TEST_CASE("the initiator's order of preference chooses among the transports both ends offer") {
    TestFederation fed;
    DaemonPair p(fed, Offering({"fabric", "ucx", "tcp"}), Offering({"ucx", "fabric", "tcp"}));
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    WriteRandomFile(a.Path("f.bin"), 3 * kMiB, 11);
    CliResult r = Cli(a, {"cp", "--json", a.Path("f.bin"), "b:/f.bin"});
    INFO(r.Describe());
    REQUIRE(r.exit_code == 0);
    CHECK(r.Json()["transport"] == "fabric");
    // b initiates: its own order.
    r = Cli(b, {"cp", "--json", "b:/f.bin", "a:/back.bin"});
    INFO(r.Describe());
    REQUIRE(r.exit_code == 0);
    CHECK(r.Json()["transport"] == "ucx");
    CHECK(CompareTrees(a.Path("f.bin"), a.Path("back.bin")).empty());
  }

  TEST_CASE("fabric: an endpoint whose libfabric has no such provider starts, says so, and runs on tcp") {
    DaemonOptions broken = Offering({"fabric", "tcp"});
    broken.fabric_provider = "no_such_provider;ofi_rxm";
    UnavailableFallsBack("fabric", broken,
                         "fabric unavailable here: fabric: no usable provider no_such_provider;ofi_rxm");
  }
}

}  // namespace
}  // namespace pororoca::test
