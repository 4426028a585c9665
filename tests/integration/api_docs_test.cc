// The API's documents as tests, against real daemons: docs/api/openapi.yaml (its examples
// validate, every operation is answered as described: tests/docs/openapi_check.py), and the
// workflow-engine examples of docs/api.md (Python and curl over HTTPS), run as they are written.
#include <doctest/doctest.h>
#include <stdlib.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "support/daemon_harness.h"

namespace pororoca::test {
namespace {

const std::string kSource = PORO_SOURCE_DIR;

// The fenced blocks of `lang` in the section `heading` of a Markdown file, in order.
std::vector<std::string> Blocks(const std::string& file, const std::string& heading,
                                const std::string& lang) {
  std::ifstream in(file);
  REQUIRE_MESSAGE(in.good(), "cannot read " << file);
  std::vector<std::string> out;
  std::string line, block;
  bool in_section = false, in_block = false, wanted = false;
  while (std::getline(in, line)) {
    if (line.rfind("## ", 0) == 0) {
      if (in_section) break;
      in_section = line == heading;
      continue;
    }
    if (!in_section) continue;
    if (line.rfind("```", 0) == 0) {
      if (in_block) {
        if (wanted) out.push_back(block);
        in_block = false;
      } else {
        in_block = true;
        wanted = line.substr(3) == lang;
        block.clear();
      }
      continue;
    }
    if (in_block) block += line + "\n";
  }
  return out;
}

TEST_SUITE("integration.api_docs") {
  TEST_CASE("docs/api/openapi.yaml: its examples validate, and every operation is answered as described") {
    TestFederation fed;
    DaemonOptions with_staging;  // the staging routes answer as documented, not "not configured"
    with_staging.extra_toml = "[staging]\ndir = \"" + fed.dir() + "/a/export/cache\"\nquota = \"1GiB\"\n";
    DaemonPair p(fed, with_staging);
    CliResult r = RunProgram("/usr/bin/python3",
                             {kSource + "/tests/docs/openapi_check.py", kSource + "/docs/api/openapi.yaml",
                              "--socket", p.a->socket(), "--map", "lncc-dtn1=a", "--map", "cenapad-dtn1=b",
                              "--export", "a=" + p.a->export_root(), "--export", "b=" + p.b->export_root()},
                             p.a->socket(), 300s);
    INFO(r.Describe());
    CHECK(r.exit_code == 0);
    CHECK(r.out.find(" 0 problem(s)") != std::string::npos);
    CHECK(r.out.find("ok  POST /v1/jobs -> 201") != std::string::npos);
    // ls and checksum of b's paths went through a query session to b.
    CHECK(r.out.find("ok  POST /v1/ls -> 200") != std::string::npos);
    CHECK(r.out.find("ok  POST /v1/checksum -> 200") != std::string::npos);
    // A dataset staged from b, followed until ready, then its lease released.
    CHECK(r.out.find("ok  POST /v1/stage -> 202") != std::string::npos);
    CHECK(r.out.find("ok  GET /v1/stage/{id} -> 200") != std::string::npos);
    CHECK(r.out.find("ok  POST /v1/stage/release -> 200") != std::string::npos);
  }

  TEST_CASE("the workflow-engine examples of docs/api.md run as written: Python and curl over HTTPS") {
    const std::string md = kSource + "/docs/api.md";
    const auto python = Blocks(md, "## Workflow engine example", "python");
    const auto sh = Blocks(md, "## Workflow engine example", "sh");
    REQUIRE(python.size() == 1);
    REQUIRE(sh.size() == 1);
    TestFederation fed;
    DaemonOptions https;
    https.https_api = true;
    DaemonPair p(fed, https);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    MakeDir(a.Path("dataset"));
    WriteRandomFile(a.Path("dataset/x1.bin"), 3 * (1u << 20) + 5, 41);
    WriteRandomFile(a.Path("dataset/x2.bin"), 70000, 42);
    MakeDir(b.Path("incoming"));
    const std::string api_token = IssueTestToken(
        fed, "inst-a", "alice@inst-a", "a", {"transfer.submit", "transfer.read", "storage.read:/dataset"});
    const std::string peer_token =
        IssueTestToken(fed, "inst-a", "alice@inst-a", "b", {"storage.create:/incoming"});
    const std::string addr = a.api_url().substr(std::string("https://").size());
    for (auto [k, v] :
         std::vector<std::pair<const char*, std::string>>{{"DTN", "a"},
                                                          {"DTN_ADDR", addr},
                                                          {"PEER", "b"},
                                                          {"PORO_CA", a.ca_file()},
                                                          {"PORO_TOKEN", api_token},
                                                          {"PEER_TOKEN", peer_token},
                                                          {"FILES", "/dataset/x1.bin /dataset/x2.bin"},
                                                          {"DEST_DIR", "/incoming"},
                                                          {"RUN_ID", "docs-1"}}) {
      ::setenv(k, v.c_str(), 1);
    }
    const std::string py_file = a.dir() + "/engine.py", sh_file = a.dir() + "/engine.sh";
    WriteFile(py_file, python[0]);
    WriteFile(sh_file, "set -euo pipefail\n" + sh[0]);

    CliResult py = RunProgram("/usr/bin/python3", {py_file}, "/nonexistent.sock", 300s);
    INFO(py.Describe());
    CHECK(py.exit_code == 0);
    CHECK(py.out.find("with 2 entries") != std::string::npos);
    CHECK(py.out.find(" succeeded\n") != std::string::npos);
    CHECK(SameContent(a.Path("dataset/x1.bin"), b.Path("incoming/x1.bin")));
    CHECK(SameContent(a.Path("dataset/x2.bin"), b.Path("incoming/x2.bin")));
    // Each file's line has its verified digest (32 hex digits).
    size_t digests = 0;
    std::istringstream lines(py.out);
    for (std::string l; std::getline(lines, l);) {
      if (l.rfind("succeeded ", 0) == 0 && l.size() > 60) ++digests;
    }
    CHECK(digests == 2);

    CliResult curl = RunProgram("/bin/bash", {sh_file}, "/nonexistent.sock", 300s);
    INFO(curl.Describe());
    CHECK(curl.exit_code == 0);
    CHECK(curl.out.find("ended") != std::string::npos);
    CHECK(SameContent(a.Path("dataset/x1.bin"), b.Path("incoming/curl-copy")));
    for (const char* k :
         {"DTN", "DTN_ADDR", "PEER", "PORO_CA", "PORO_TOKEN", "PEER_TOKEN", "FILES", "DEST_DIR", "RUN_ID"}) {
      ::unsetenv(k);
    }
  }
}

}  // namespace
}  // namespace pororoca::test
