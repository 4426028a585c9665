// The transfer queue with real daemons: a queued transfer survives kill -9 and runs once; limits
// and priorities decide what starts; a user with a thousand queued transfers does not starve one
// who submits one after; a submission id makes a retried submission return the same transfer.
#include <doctest/doctest.h>
#include <sys/stat.h>

#include <string>
#include <thread>

#include "pororoca/checksum.h"
#include "support/daemon_harness.h"

namespace pororoca::test {
namespace {

using nlohmann::json;
constexpr uint64_t kMiB = 1ull << 20;
constexpr int kOtherUid = 65534;  // nobody: the second local user

// One transfer at a time; the sender slowed down so that a big file takes a few seconds.
DaemonOptions OneAtATime(unsigned send_delay_us = 60000) {
  DaemonOptions o;
  o.extra_toml =
      "[queue]\nmax_running = 1\n\n[fault_injection]\nsend_delay_us = " + std::to_string(send_delay_us) +
      "\n";
  return o;
}

std::string Push(const DaemonProcess& a, const std::string& rel, const std::string& extra = "") {
  json r = a.Post("/v1/transfers", R"({"source": ")" + a.Path(rel) + R"(", "destination": "b:/)" + rel +
                                       R"(", "chunk_size": "1MiB")" + extra + "}");
  INFO(r.dump());
  REQUIRE(r.value("http_status", 201) == 201);
  return r.value("id", std::string());
}

// The records of `d`'s audit log of `event` for transfer `id`.
std::vector<json> Audited(const DaemonProcess& d, const std::string& event, const std::string& id) {
  std::vector<json> out;
  for (const auto& r : d.AuditRecords(event)) {
    if (r.value("transfer_id", std::string()) == id) out.push_back(r);
  }
  return out;
}

// The message of an API error answer ({"error": {"code", "message"}}).
std::string ErrorMessage(const json& answer) {
  return answer.contains("error") ? answer["error"].value("message", std::string()) : std::string();
}

// Options for a daemon another local user (kOtherUid, "bob@inst-a") talks to: its socket open to
// every local user, as the daemon's default "0666".
DaemonOptions WithBob(DaemonOptions o) {
  o.socket_mode = "0666";
  o.extra_toml += "\n[[users]]\nuid = " + std::to_string(kOtherUid) + "\nidentity = \"bob@inst-a\"\n";
  return o;
}

// The test's directory is made 0700; the other local user needs to reach the daemon's socket in it.
void LetOtherUsersIn(const TestFederation& fed) { ::chmod(fed.dir().c_str(), 0755); }

int64_t StartedMs(const DaemonProcess& a, const std::string& id) {
  return a.Transfer(id).value("started_ms", int64_t{0});
}

TEST_SUITE("integration.queue") {
  TEST_CASE("a queued transfer survives kill -9 of its daemon and runs exactly once after the restart") {
    TestFederation fed;
    DaemonPair p(fed, OneAtATime());
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    WriteRandomFile(a.Path("big.bin"), 192 * kMiB + 17, 1);
    WriteRandomFile(a.Path("small.bin"), 3 * kMiB + 5, 2);
    const std::string big = Push(a, "big.bin");
    const std::string small = Push(a, "small.bin");
    CHECK(a.Transfer(small)["state"] == "queued");
    REQUIRE(WaitUntil([&] { return JournalBytes(b.export_root()) >= 32 + 32 * 8; }, 60s));
    CHECK(a.Transfer(small)["state"] == "queued");  // the big one holds the only slot
    CHECK(a.StoredRecord(small).value("state", std::string()) == "queued");
    a.Kill9();
    // On disk as accepted; nothing of it moved.
    CHECK(a.StoredRecord(small).value("state", std::string()) == "queued");
    CHECK(a.StoredRecord(big).value("state", std::string()) == "running");
    CHECK(!Exists(b.Path("small.bin")));
    CHECK(Audited(b, "transfer", small).empty());
    REQUIRE(a.Start());

    for (const auto& id : {big, small}) {
      auto t = a.WaitForTerminal(id, 120s);
      INFO(t.dump(2));
      CHECK(t["state"] == "succeeded");
    }
    for (const char* f : {"big.bin", "small.bin"}) {
      auto diffs = CompareTrees(a.Path(f), b.Path(f));
      CHECK_MESSAGE(diffs.empty(), DescribeDiffs(diffs));
    }
    // The queued transfer ran once: one attempt, one session at the receiver, which completed.
    CHECK(a.Transfer(small)["attempts"] == 1);
    auto ends = Audited(b, "transfer_end", small);
    REQUIRE(ends.size() == 1);
    CHECK(ends[0].value("decision", std::string()) == "completed");
    CHECK(Audited(b, "transfer", small).size() == 1);
    CHECK(a.Log().find("queued again after the restart: transfer " + small) != std::string::npos);
  }

  TEST_CASE("with one slot, queued transfers start by priority, and each waits while another runs") {
    TestFederation fed;
    DaemonPair p(fed, OneAtATime(20000));
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    WriteRandomFile(a.Path("first.bin"), 24 * kMiB, 3);
    for (const char* f : {"low.bin", "high.bin", "mid.bin"}) WriteRandomFile(a.Path(f), 2 * kMiB + 1, 4);
    const std::string first = Push(a, "first.bin");
    REQUIRE(a.WaitForState(first, {"running"}, 30s)["state"] == "running");
    const std::string low = Push(a, "low.bin", R"(, "priority": 1)");
    const std::string high = Push(a, "high.bin", R"(, "priority": 5)");
    const std::string mid = Push(a, "mid.bin", R"(, "priority": 3)");
    for (const auto& id : {low, high, mid}) {
      auto t = a.Transfer(id);
      CHECK(t["state"] == "queued");
      CHECK(t["attempts"] == 0);
    }
    CHECK(a.Transfer(high)["priority"] == 5);
    for (const auto& id : {first, low, high, mid}) CHECK(a.WaitForTerminal(id, 120s)["state"] == "succeeded");
    CHECK(StartedMs(a, first) < StartedMs(a, high));
    CHECK(StartedMs(a, high) < StartedMs(a, mid));
    CHECK(StartedMs(a, mid) < StartedMs(a, low));
    // One at a time: each started after the one before had finished.
    CHECK(a.Transfer(first)["finished_ms"].get<int64_t>() <= StartedMs(a, high));
    CHECK(a.Transfer(high)["finished_ms"].get<int64_t>() <= StartedMs(a, mid));
    for (const char* f : {"first.bin", "low.bin", "high.bin", "mid.bin"})
      CHECK(SameContent(a.Path(f), b.Path(f)));
    // A priority out of range is refused, naming the field.
    json bad = a.Post("/v1/transfers",
                      R"({"source": ")" + a.Path("low.bin") + R"(", "destination": "b:/x", "priority": 7})");
    CHECK(bad["http_status"] == 400);
    CHECK(ErrorMessage(bad).find("priority") != std::string::npos);
  }

  TEST_CASE("a user with a thousand queued transfers does not starve another who submits one after") {
    TestFederation fed;
    DaemonPair p(fed, WithBob(OneAtATime()));  // 60 ms a chunk: each of alice's takes that long or more
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    LetOtherUsersIn(fed);
    WriteFile(a.Path("alice.txt"), "alice's\n");
    WriteFile(a.Path("bob.txt"), "bob's\n");
    MakeDir(b.Path("alice"));
    std::vector<std::string> alice;
    for (int i = 0; i < 1000; ++i) {
      json r =
          a.Post("/v1/transfers", R"({"source": ")" + a.Path("alice.txt") +
                                      R"(", "destination": "b:/alice/)" + std::to_string(i) + R"(.txt"})");
      REQUIRE(r.value("http_status", 201) == 201);
      alice.push_back(r.value("id", std::string()));
    }
    // Bob (another local uid, another identity) submits one through the CLI.
    CliResult r =
        RunProgram(PORO_CLI_BIN, {"cp", "-d", a.Path("bob.txt"), "b:/bob.txt"}, a.socket(), 60s, kOtherUid);
    INFO(r.Describe());
    REQUIRE(r.exit_code == 0);
    const std::string bob = Trim(r.out);
    auto t = a.WaitForTerminal(bob, 60s);
    INFO(t.dump(2));
    REQUIRE(t["state"] == "succeeded");
    CHECK(SameContent(a.Path("bob.txt"), b.Path("bob.txt")));
    // None of alice's started between bob's submission and his start, and most of hers were still
    // waiting when his had ended.
    const int64_t bob_submitted = t["created_ms"].get<int64_t>();
    const int64_t bob_started = t["started_ms"].get<int64_t>();
    int cut_in = 0, waiting = 0;
    const json all = a.Get("/v1/transfers");
    for (const auto& x : all["transfers"]) {
      if (x["id"] == bob) continue;
      const int64_t s = x.value("started_ms", int64_t{0});
      if (s > bob_submitted && s < bob_started) cut_in++;
      if (x["state"] == "queued") waiting++;
    }
    INFO("alice's started after bob submitted and before he started: " << cut_in
                                                                       << "; still queued: " << waiting);
    CHECK(cut_in == 0);
    CHECK(waiting >= 500);
    CHECK(a.Get("/v1/transfers")["transfers"].size() == 1001);
  }

  TEST_CASE("a local user sees and cancels only their own transfers, root sees all") {
    TestFederation fed;
    DaemonPair p(fed, WithBob(OneAtATime()));
    DaemonProcess& a = *p.a;
    LetOtherUsersIn(fed);
    WriteRandomFile(a.Path("root.bin"), 192 * kMiB, 6);  // ~3 s: bob's waits behind it
    WriteFile(a.Path("bob.txt"), "bob's\n");
    const std::string roots = Push(a, "root.bin");
    auto as_bob = [&](const std::vector<std::string>& args) {
      return RunProgram(PORO_CLI_BIN, args, a.socket(), 60s, kOtherUid);
    };
    CliResult cp = as_bob({"cp", "-d", a.Path("bob.txt"), "b:/bob.txt"});
    INFO(cp.Describe());
    REQUIRE(cp.exit_code == 0);
    const std::string bobs = Trim(cp.out);
    // Bob's list holds his transfer only; root's transfer is unknown to him, by id or prefix.
    CliResult list = as_bob({"status", "--json"});
    INFO(list.Describe());
    REQUIRE(list.exit_code == 0);
    json mine = list.Json();
    REQUIRE(mine["transfers"].size() == 1);
    CHECK(mine["transfers"][0]["id"] == bobs);
    CHECK(as_bob({"status", roots}).exit_code == 4);
    CHECK(as_bob({"status", roots.substr(0, 6)}).exit_code == 4);
    CliResult cancel = as_bob({"cancel", roots});
    CHECK(cancel.exit_code == 4);
    CHECK(cancel.output().find("no transfer " + roots) != std::string::npos);
    CHECK(a.Transfer(roots)["state"] != "cancelled");
    // Root (an operator) sees both and may cancel bob's, which is still queued behind root's.
    CHECK(a.Get("/v1/transfers")["transfers"].size() == 2);
    CHECK(a.Post("/v1/transfers/" + bobs + "/cancel", "")["state"] == "cancelled");
    CHECK(a.WaitForTerminal(roots)["state"] == "succeeded");
    CHECK(as_bob({"status", bobs}).exit_code == 0);
  }

  TEST_CASE("a submission id returns the transfer it made, reused for another request it is a 409") {
    TestFederation fed;
    DaemonPair p(fed);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    WriteRandomFile(a.Path("data.bin"), 5 * kMiB + 3, 5);
    const std::string body = R"({"source": ")" + a.Path("data.bin") +
                             R"(", "destination": "b:/data.bin", "submission_id": "engine-run-17:step-3"})";
    json first = a.Post("/v1/transfers", body);
    REQUIRE(first.value("http_status", 201) == 201);
    const std::string id = first.value("id", std::string());
    CHECK(first["submission_id"] == "engine-run-17:step-3");
    // The engine did not see the answer and sends the request again: the same transfer, 200.
    json again = a.Post("/v1/transfers", body);
    CHECK(again.value("http_status", 200) == 200);
    CHECK(again["id"] == id);
    CHECK(a.WaitForTerminal(id)["state"] == "succeeded");
    json after = a.Post("/v1/transfers", body);  // also once it has ended: no second copy
    CHECK(after["id"] == id);
    CHECK(after["state"] == "succeeded");
    // The same id for another request is refused, naming the id and the transfer that has it.
    json other =
        a.Post("/v1/transfers",
               R"({"source": ")" + a.Path("data.bin") +
                   R"(", "destination": "b:/elsewhere.bin", "submission_id": "engine-run-17:step-3"})");
    CHECK(other["http_status"] == 409);
    CHECK(ErrorMessage(other).find("engine-run-17:step-3") != std::string::npos);
    CHECK(ErrorMessage(other).find(id) != std::string::npos);
    CHECK(!Exists(b.Path("elsewhere.bin")));
    // It holds across a restart (the id is in the queue on disk).
    REQUIRE(a.Stop());
    REQUIRE(a.Start());
    REQUIRE(WaitUntil([&] { return a.Transfer(id).value("id", std::string()) == id; }, 15s));
    json restarted = a.Post("/v1/transfers", body);
    CHECK(restarted.value("http_status", 200) == 200);
    CHECK(restarted["id"] == id);
    CHECK(a.Get("/v1/transfers")["transfers"].size() == 1);
    CHECK(Audited(b, "transfer_end", id).size() == 1);
    CHECK(SameContent(a.Path("data.bin"), b.Path("data.bin")));
    // The CLI's --submission-id and --priority.
    auto cp = [&] {
      CliResult r = Cli(
          a, {"cp", "-d", "--priority", "4", "--submission-id", "cli-7", a.Path("data.bin"), "b:/cli.bin"});
      INFO(r.Describe());
      CHECK(r.exit_code == 0);
      return Trim(r.out);
    };
    const std::string cli_id = cp();
    CHECK(cp() == cli_id);
    CHECK(a.Transfer(cli_id)["priority"] == 4);
    CHECK(a.WaitForTerminal(cli_id)["state"] == "succeeded");
    CHECK(Audited(b, "transfer_end", cli_id).size() == 1);
    CliResult bad = Cli(a, {"cp", "-d", "--priority", "9", a.Path("data.bin"), "b:/x.bin"});
    CHECK(bad.exit_code != 0);
    CHECK(bad.output().find("priority must be 1") != std::string::npos);
  }

  TEST_CASE("per-file results: which files arrived with which digest, which failed and why, in pages") {
    TestFederation fed;
    DaemonPair p(fed);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    MakeDir(a.Path("d"));
    for (int i = 1; i <= 5; ++i) {
      WriteRandomFile(a.Path("d/" + std::to_string(i) + ".bin"), 2 * kMiB + 512 * i, 100 + i);
    }
    MakeDir(b.Path("d"));
    WriteFile(b.Path("d/3.bin"), "already here");  // existing = fail: this one is refused
    json r =
        a.Post("/v1/transfers", R"({"source": ")" + a.Path("d") +
                                    R"(", "destination": "b:/", "recursive": true, "chunk_size": "1MiB"})");
    REQUIRE(r.value("http_status", 201) == 201);
    const std::string id = r["id"];
    json end = a.WaitForTerminal(id);
    CHECK(end["state"] == "partial");

    json files = a.Get("/v1/transfers/" + id + "/files");
    INFO(files.dump());
    CHECK(files["total"] == 5);
    CHECK(files["by_state"] == json{{"failed", 1}, {"succeeded", 4}});
    REQUIRE(files["files"].size() == 5);
    for (const auto& f : files["files"]) {
      const std::string path = f["path"];
      CHECK(f["attempts"] == 1);
      if (path.ends_with("3.bin")) {
        CHECK(f["state"] == "failed");
        CHECK(f["error"].get<std::string>().find("exists") != std::string::npos);
        CHECK(f["digest"] == "");
        continue;
      }
      CHECK(f["state"] == "succeeded");
      // The file digest pororoca verified: XXH3-128 over the XXH3-128 digests of its 1 MiB chunks.
      const std::string data = ReadFile(b.Path("d/" + path.substr(path.rfind('/') + 1)));
      FileDigester dg;
      for (size_t off = 0; off < data.size(); off += kMiB) {
        const std::string_view chunk = std::string_view(data).substr(off, kMiB);
        dg.AddChunk(Xxh3_128(std::as_bytes(std::span(chunk.data(), chunk.size()))));
      }
      CHECK(f["digest"] == dg.Finish().ToHex());
      CHECK(f["size"] == data.size());
    }
    // Pages, and only the failed ones.
    json page = a.Get("/v1/transfers/" + id + "/files?limit=2&offset=2");
    CHECK(page["files"].size() == 2);
    CHECK(page["next_offset"] == 4);
    CHECK(page["files"][0]["path"] == files["files"][2]["path"]);
    json last = a.Get("/v1/transfers/" + id + "/files?limit=2&offset=4");
    CHECK(last["files"].size() == 1);
    CHECK_FALSE(last.contains("next_offset"));
    json failed = a.Get("/v1/transfers/" + id + "/files?state=failed");
    REQUIRE(failed["files"].size() == 1);
    CHECK(failed["total"] == 1);
    CHECK(a.Get("/v1/transfers/" + id + "/files?state=lost")["http_status"] == 400);
    CHECK(a.Get("/v1/transfers/" + id + "/files?limit=0")["http_status"] == 400);
    // The CLI: one line per file, then the count by state.
    CliResult cli = Cli(a, {"status", id.substr(0, 8), "--files"});
    INFO(cli.Describe());
    CHECK(cli.exit_code == 0);
    CHECK(cli.out.find("failed") != std::string::npos);
    CHECK(cli.out.find("5 file(s) recorded for " + id + ": 1 failed, 4 succeeded") != std::string::npos);
    CliResult only_failed = Cli(a, {"status", id, "--state", "failed", "--json"});
    CHECK(only_failed.exit_code == 0);
    CHECK(only_failed.Json()["files"].size() == 1);

    // A pull records its files at the receiving end, this daemon: all five arrive.
    json pull = a.Post("/v1/transfers", R"({"source": "b:/d", "destination": ")" + a.Path("back") +
                                            R"(", "recursive": true, "chunk_size": "1MiB"})");
    REQUIRE(pull.value("http_status", 201) == 201);
    CHECK(a.WaitForTerminal(pull["id"])["state"] == "succeeded");
    json pulled = a.Get("/v1/transfers/" + pull["id"].get<std::string>() + "/files");
    CHECK(pulled["by_state"] == json{{"succeeded", 5}});
    for (const auto& f : pulled["files"]) CHECK(f["digest"].get<std::string>().size() == 32);
  }

  TEST_CASE(
      "a bulk job: entries queued in one request, its state from theirs, its files in pages, once per id") {
    TestFederation fed;
    DaemonPair p(fed);
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    MakeDir(a.Path("j"));
    json entries = json::array();
    for (int i = 1; i <= 6; ++i) {
      const std::string name = "j/" + std::to_string(i) + ".bin";
      WriteRandomFile(a.Path(name), 256 * 1024 + i, 200 + i);
      entries.push_back({{"source", a.Path(name)}, {"destination", "b:/" + std::to_string(i) + ".bin"}});
    }
    MakeDir(a.Path("tree"));
    for (int i = 1; i <= 3; ++i) WriteRandomFile(a.Path("tree/t" + std::to_string(i)), 4096 * i, 300 + i);
    entries.push_back({{"source", a.Path("tree")}, {"destination", "b:/tree"}, {"recursive", true}});
    // One entry that cannot succeed: its destination directory does not exist at b.
    entries.push_back({{"source", a.Path("j/1.bin")}, {"destination", "b:/no/such/dir/x.bin"}});
    const std::string job_file = a.dir() + "/job.json";
    WriteFile(job_file, json{{"entries", entries}, {"chunk_size", "1MiB"}, {"priority", 4}}.dump());

    CliResult r = Cli(a, {"submit", "--wait", "--json", "--submission-id", "run-1", job_file}, 180s);
    INFO(r.Describe());
    CHECK(r.exit_code == 1);  // partial
    json job = r.Json();
    const std::string id = job.value("id", std::string());
    REQUIRE(id.size() == 32);
    CHECK(job["state"] == "partial");
    CHECK(job["entries"] == 8);
    CHECK(job["priority"] == 4);
    CHECK(job["submission_id"] == "run-1");
    CHECK(job["by_state"] == json{{"failed", 1}, {"succeeded", 7}});
    REQUIRE(job["transfers"].size() == 8);
    CHECK(job["transfers"][7]["state"] == "failed");
    CHECK(job["transfers"][7]["index"] == 7);
    CHECK(job["transfers"][7]["error"].get<std::string>().find("no/such/dir") != std::string::npos);
    for (int i = 1; i <= 6; ++i) {
      const std::string name = std::to_string(i) + ".bin";
      CHECK(SameContent(a.Path("j/" + name), b.Path(name)));
    }
    CHECK(SameContent(a.Path("tree/t3"), b.Path("tree/t3")));
    // Each entry is a transfer of its own, tagged with the job.
    json entry = a.Transfer(job["transfers"][6]["transfer"]);
    CHECK(entry["job_id"] == id);
    CHECK(entry["job_index"] == 6);

    // The job's files: nine arrived (six files and the tree's three), a page at a time.
    json files = a.Get("/v1/jobs/" + id + "/files?limit=4");
    INFO(files.dump());
    CHECK(files["total"] == 9);
    CHECK(files["by_state"] == json{{"succeeded", 9}});
    CHECK(files["files"].size() == 4);
    CHECK(files["next_offset"] == 4);
    CHECK(files["files"][0]["transfer"] == job["transfers"][0]["transfer"]);  // entry order, then path
    CHECK(files["files"][0]["digest"].get<std::string>().size() == 32);
    CHECK(a.Get("/v1/jobs/" + id + "/files?offset=8")["files"].size() == 1);

    // The same submission id returns the same job, and queues nothing new.
    CliResult again = Cli(a, {"submit", "--submission-id", "run-1", job_file});
    CHECK(again.exit_code == 0);
    CHECK(Trim(again.out) == id);
    CHECK(a.Get("/v1/jobs")["jobs"].size() == 1);
    CHECK(a.Get("/v1/transfers")["transfers"].size() == 8);
    // status and wait know a job's id (a prefix too).
    CliResult st = Cli(a, {"status", id.substr(0, 10)});
    CHECK(st.exit_code == 0);
    CHECK(st.out.find("PARTIAL job " + id + ": 8 entries (1 failed, 7 succeeded)") != std::string::npos);
    CHECK(Cli(a, {"wait", id}).exit_code == 1);

    // A bad entry refuses the whole job, naming the entry; nothing is queued.
    json bad = entries;
    bad[2]["streams"] = "many";
    json refused = a.Post("/v1/jobs", json{{"entries", bad}}.dump());
    CHECK(refused["http_status"] == 400);
    CHECK(ErrorMessage(refused).find("entries[2]: streams") != std::string::npos);
    json missing = a.Post(
        "/v1/jobs",
        json{{"entries", json::array({{{"source", a.Path("nope")}, {"destination", "b:/x"}}})}}.dump());
    CHECK(missing["http_status"] == 404);
    CHECK(ErrorMessage(missing).find("entries[0]: ") == 0);
    CHECK(a.Post("/v1/jobs", R"({"entries": []})")["http_status"] == 400);
    CHECK(a.Get("/v1/transfers")["transfers"].size() == 8);
  }
}

}  // namespace
}  // namespace pororoca::test
