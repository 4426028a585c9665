// pororoca ls and pororoca checksum: a peer's path asked through a query session (admitted at the
// peer as a pull of the path: its token check and its policy, audited), and this daemon's own.
#include <doctest/doctest.h>

#include <string>
#include <thread>

#include "pororoca/checksum.h"
#include "support/daemon_harness.h"

namespace pororoca::test {
namespace {

using nlohmann::json;
constexpr uint64_t kMiB = 1ull << 20;

// The digest pororoca verifies of `file`: XXH3-128 over the XXH3-128 digests of its chunks.
std::string Digest(const std::string& file, size_t chunk) {
  const std::string data = ReadFile(file);
  FileDigester dg;
  for (size_t off = 0; off < data.size(); off += chunk) {
    const std::string_view c = std::string_view(data).substr(off, chunk);
    dg.AddChunk(Xxh3_128(std::as_bytes(std::span(c.data(), c.size()))));
  }
  return dg.Finish().ToHex();
}

bool WaitSerial(const DaemonProcess& d, uint64_t serial) {
  return WaitUntil([&] { return d.Get("/v1/federation").value("serial", uint64_t{0}) == serial; }, 15s);
}

TEST_SUITE("integration.query") {
  TEST_CASE(
      "ls and checksum of a peer's path and of this daemon's, admitted at the peer as a pull would be") {
    TestFederation fed;
    DaemonPair p(fed);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    MakeDir(b.Path("data"));
    MakeDir(b.Path("data/sub"));
    WriteRandomFile(b.Path("data/x.bin"), 5 * kMiB + 123, 7);
    WriteFile(b.Path("data/y.txt"), "hello");
    REQUIRE(::symlink("x.bin", b.Path("data/link").c_str()) == 0);

    CliResult ls = Cli(a, {"ls", "b:/data"});
    INFO(ls.Describe());
    CHECK(ls.exit_code == 0);
    CHECK(ls.out == "link\nsub/\nx.bin\ny.txt\n");
    CliResult lj = Cli(a, {"ls", "--json", "b:/data"});
    REQUIRE(lj.exit_code == 0);
    json listing = lj.Json();
    CHECK(listing["endpoint"] == "b");
    CHECK(listing["type"] == "dir");
    REQUIRE(listing["entries"].size() == 4);
    CHECK(listing["entries"][0]["type"] == "link");
    CHECK(listing["entries"][2]["name"] == "x.bin");
    CHECK(listing["entries"][2]["size"] == 5 * kMiB + 123);
    CHECK(listing["truncated"] == false);
    CliResult ll = Cli(a, {"ls", "-l", "b:/data/y.txt"});
    CHECK(ll.exit_code == 0);
    CHECK(ll.out.find("file  0644            5  ") == 0);
    CHECK(Cli(a, {"ls", "--limit", "2", "--json", "b:/data"}).Json()["truncated"] == true);

    // The digest of a file at b equals the one computed here from its bytes, at any chunk size.
    for (const char* chunk : {"1MiB", "4MiB"}) {
      CliResult ck = Cli(a, {"checksum", "--json", "--chunk-size", chunk, "b:/data/x.bin"});
      INFO(ck.Describe());
      REQUIRE(ck.exit_code == 0);
      const size_t bytes = std::string(chunk) == "1MiB" ? kMiB : 4 * kMiB;
      CHECK(ck.Json()["digest"] == Digest(b.Path("data/x.bin"), bytes));
      CHECK(ck.Json()["size"] == 5 * kMiB + 123);
    }
    // And it is the digest a transfer verified: pull the file, compare with its per-file result and
    // with this daemon's own checksum of its copy.
    json pull = a.Post("/v1/transfers", R"({"source": "b:/data/x.bin", "destination": ")" + a.Path("x.bin") +
                                            R"(", "chunk_size": "1MiB"})");
    REQUIRE(pull.value("http_status", 201) == 201);
    REQUIRE(a.WaitForTerminal(pull["id"])["state"] == "succeeded");
    json files = a.Get("/v1/transfers/" + pull["id"].get<std::string>() + "/files");
    REQUIRE(files["files"].size() == 1);
    CliResult here = Cli(a, {"checksum", "--chunk-size", "1MiB", a.Path("x.bin")});
    INFO(here.Describe());
    CHECK(here.exit_code == 0);
    CHECK(here.out == files["files"][0]["digest"].get<std::string>() + "  a:/x.bin\n");
    CHECK(here.err.find("xxh3-128 over 1.00 MiB chunks") != std::string::npos);

    // Errors name the path and exit as cp would.
    CliResult none = Cli(a, {"ls", "b:/data/nope"});
    CHECK(none.exit_code == 4);
    CHECK(none.err.find("nope") != std::string::npos);
    CliResult dir = Cli(a, {"checksum", "b:/data"});
    CHECK(dir.exit_code == 2);
    CHECK(dir.err.find("is a directory") != std::string::npos);
    CliResult escape = Cli(a, {"ls", "b:/../etc"});
    CHECK(escape.exit_code != 0);
    CHECK(Cli(a, {"checksum", "--chunk-size", "1000", "b:/data/x.bin"}).exit_code == 2);

    // b's policy decides, as for a pull: with pulls of /data denied, ls is refused and audited at b.
    fed.SetRules(json::array({{{"id", "no-data"}, {"effect", "deny"}, {"source_paths", {"/data"}}},
                              {{"id", "rest"}, {"effect", "allow"}}}));
    const uint64_t serial = fed.Publish();
    REQUIRE(WaitSerial(a, serial));
    REQUIRE(WaitSerial(b, serial));
    CliResult denied = Cli(a, {"ls", "b:/data"});
    CHECK(denied.exit_code == 5);
    CHECK(denied.err.find("no-data") != std::string::npos);
    bool audited = false;
    for (const auto& r : b.AuditRecords()) {
      audited |= r.value("query", std::string()) == "list" && r.value("decision", std::string()) == "denied";
    }
    CHECK_MESSAGE(audited, json(b.AuditRecords()).dump());
    CHECK(Cli(a, {"ls", "b:/"}).exit_code == 0);  // the rest is allowed
  }
}

}  // namespace
}  // namespace pororoca::test
