// Slurm stage-in for real (docs/staging-slurm.md): a single-node Slurm from Debian's packages
// (tests/slurm/cluster.sh: munged, slurmctld, slurmd on 127.0.0.1) with pororoca's prolog, epilog
// and task prolog (cli/slurm/), two daemons of two institutions (a exports the datasets, b has a
// staging cache), and batch jobs submitted by an unprivileged user (nobody) that name their dataset
// in an `#SBATCH --comment=pororoca:...` line. The jobs check the staged files' SHA-256 digests
// (sha256sum) against a list the test computed from the source tree.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "support/daemon_harness.h"

namespace pororoca::test {
namespace {

using json = nlohmann::json;
constexpr int kJobUid = 65534;  // nobody: the user jobs run as, "job@inst-b" in b's [[users]]
const std::string kSlurmDir = PORO_SOURCE_DIR "/tests/slurm";
const std::string kScriptsDir = PORO_SOURCE_DIR "/cli/slurm";

// The file's content, "" if it cannot be read (asserts nothing: usable in INFO messages).
std::string ReadIfAny(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// `cmd` run by /bin/sh (as `as_uid` if >= 0), bounded by `timeout`.
CliResult Shell(const std::string& cmd, std::chrono::milliseconds timeout = 60s, int as_uid = -1) {
  return RunProgram("/bin/sh", {"-c", cmd}, "", timeout, as_uid);
}

// `s` quoted for /bin/sh.
std::string Quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// The value of `key` in a one-line `scontrol show job -o` record ("" if absent). Values of the keys
// read here (JobState, Reason, ExitCode, Priority) have no spaces.
std::string JobField(const std::string& record, const std::string& key) {
  std::smatch m;
  if (!std::regex_search(record, m, std::regex("(^| )" + key + "=([^ \n]*)"))) return "";
  return m[2];
}

// The job's AdminComment (it may hold spaces: it runs to the next " Key=" of the record).
std::string AdminComment(const std::string& record) {
  std::smatch m;
  if (!std::regex_search(record, m, std::regex(" AdminComment=(.*?)( [A-Za-z]+=|\n|$)"))) return "";
  return Trim(m[1]);
}

// True once the job in `record` (scontrol -o show job) has ended, or is pending held after a
// requeue (it is COMPLETING in between, while the epilog of the aborted allocation runs).
bool Settled(const std::string& record) {
  const std::string s = JobField(record, "JobState");
  return s == "COMPLETED" || s == "FAILED" || s == "CANCELLED" || s == "TIMEOUT" || s == "NODE_FAIL" ||
         s == "OUT_OF_MEMORY" ||
         (s == "PENDING" && JobField(record, "Reason") == "job_requeued_in_held_state");
}

// A single-node Slurm in `dir` whose prolog, epilog and task prolog are copies of cli/slurm/ (so
// that the job's user can run the task prolog wherever the checkout is), configured by
// dir/pororoca-slurm.conf to stage through the daemon on `socket` with a copy of the CLI
// (dir/bin/pororoca, which the jobs use too). Stopped (every process it started) by the destructor.
class SlurmCluster {
 public:
  SlurmCluster(const std::string& dir, const std::string& socket) : dir_(dir) {
    MakeDir(dir_, 0755);
    MakeDir(dir_ + "/bin", 0755);
    MakeDir(dir_ + "/scripts", 0755);
    MakeDir(dir_ + "/hooks", 0755);
    MakeDir(dir_ + "/jobs", 0777);
    ::chmod((dir_ + "/jobs").c_str(), 0777);  // the job user writes its results there
    WriteFile(cli(), ReadFile(PORO_CLI_BIN), 0755);
    for (const char* s : {"common.sh", "prolog", "epilog", "task-prolog"}) {
      WriteFile(dir_ + "/scripts/" + s, ReadFile(kScriptsDir + "/" + s), 0755);
    }
    WriteFile(conf(),
              "# written by tests/integration/slurm_test.cc\n"
              "PORORO_CLI=" +
                  cli() + "\nPORORO_SOCKET=\"" + socket + "\"\nPORORO_RUN_DIR=" + dir_ +
                  "/run\nPORORO_STAGE_TIMEOUT=120\nPORORO_SLURM_LOG=" + log() + "\n",
              0644);
    // Slurm runs its hooks without arguments or our environment: each hook names the config.
    for (const char* s : {"prolog", "epilog", "task-prolog"}) {
      WriteFile(dir_ + "/hooks/" + s,
                "#!/bin/sh\nPORORO_SLURM_CONF=" + Quote(conf()) + "\nexport PORORO_SLURM_CONF\nexec " +
                    Quote(dir_ + "/scripts/" + s) + " \"$@\"\n",
                0755);
    }
  }
  ~SlurmCluster() {
    if (started_) {
      CliResult r =
          Shell("bash " + Quote(kSlurmDir + "/cluster.sh") + " stop " + Quote(dir_ + "/cluster"), 120s);
      if (r.exit_code != 0) MESSAGE("cluster.sh stop: " << r.Describe());
    }
  }
  SlurmCluster(const SlurmCluster&) = delete;
  SlurmCluster& operator=(const SlurmCluster&) = delete;

  void Start() {
    started_ = true;
    // The watcher stops the cluster should this process be killed (a test's timeout).
    CliResult r = Shell("SLURM_TEST_OWNER_PID=" + std::to_string(::getpid()) + " bash " +
                            Quote(kSlurmDir + "/cluster.sh") + " start " + Quote(dir_ + "/cluster") + " " +
                            Quote(dir_ + "/hooks/prolog") + " " + Quote(dir_ + "/hooks/epilog") + " " +
                            Quote(dir_ + "/hooks/task-prolog"),
                        120s);
    REQUIRE_MESSAGE(r.exit_code == 0,
                    "the test's Slurm did not start (it needs root and Debian's packages slurmctld, "
                    "slurmd, slurm-client and munge: ./setup.sh deps):\n"
                        << r.Describe());
  }

  std::string cli() const { return dir_ + "/bin/pororoca"; }
  std::string conf() const { return dir_ + "/pororoca-slurm.conf"; }
  std::string log() const { return dir_ + "/pororoca-slurm.log"; }
  std::string jobs() const { return dir_ + "/jobs"; }

  // A batch script in jobs() whose first lines are `#SBATCH --comment=COMMENT` (and its output
  // file, a time limit), then `body` (bash, J is jobs()).
  std::string WriteJob(const std::string& name, const std::string& comment, const std::string& body) const {
    const std::string path = jobs() + "/" + name;
    WriteFile(path,
              "#!/bin/bash\n#SBATCH --comment=" + comment + "\n#SBATCH --output=" + jobs() +
                  "/slurm-%j.out\n#SBATCH --time=10\nset -u\nJ=" + Quote(jobs()) + "\n" + body,
              0755);
    return path;
  }

  // A Slurm client command (sbatch, squeue, scontrol, sinfo...) with this cluster's slurm.conf.
  CliResult Run(const std::string& cmd, int as_uid = -1) const {
    return Shell("SLURM_CONF=" + Quote(dir_ + "/cluster/etc/slurm.conf") + " exec " + cmd, 60s, as_uid);
  }

  // Submits `script` as the job user; returns the job id (REQUIREd).
  std::string Submit(const std::string& script) const {
    CliResult r = Run("sbatch --parsable " + Quote(script), kJobUid);
    INFO(r.Describe());
    REQUIRE(r.exit_code == 0);
    std::string id = Trim(r.out);
    REQUIRE(std::regex_match(id, std::regex("[0-9]+")));
    return id;
  }

  std::string ShowJob(const std::string& id) const { return Run("scontrol -o show job " + id).out; }
  std::string NodeState() const { return Trim(Run("sinfo -h -n pororoca-node1 -o %T").out); }

  // Waits (bounded) until the job has settled (see Settled); returns its last record.
  std::string WaitSettled(const std::string& id, std::chrono::milliseconds timeout) const {
    std::string record;
    WaitUntil(
        [&] {
          record = ShowJob(id);
          return Settled(record);
        },
        timeout, 250ms);
    return record;
  }

  // The Slurm logs and the scripts' log, for failure messages.
  std::string Logs() const {
    return Shell("tail -n 40 " + Quote(dir_) + "/cluster/log/slurmctld.log " + Quote(dir_) +
                 "/cluster/log/slurmd.log " + Quote(log()) + " 2>&1")
        .out;
  }

 private:
  std::string dir_;
  bool started_ = false;
};

// a (inst-a) exports the datasets; b (inst-b) stages into its cache for local users, among them
// the job user, "job@inst-b"; b's socket is open to every local user (as the daemon's default).
struct StagingSetup {
  explicit StagingSetup(TestFederation& fed, DaemonOptions ao = {}, DaemonOptions bo = {}) {
    ::chmod(fed.dir().c_str(), 0755);
    bo.socket_mode = "0666";
    bo.extra_toml = "[[users]]\nuid = " + std::to_string(kJobUid) +
                    "\nidentity = \"job@inst-b\"\n\n"
                    "[staging]\ndir = \"" +
                    fed.dir() + "/b/export/staging-cache\"\nquota = \"1GiB\"\n";
    pair = std::make_unique<DaemonPair>(fed, std::move(ao), bo);
  }
  DaemonProcess& a() { return *pair->a; }
  DaemonProcess& b() { return *pair->b; }
  std::unique_ptr<DaemonPair> pair;
};

// Dataset `source` in b's cache as `pororoca staging --json` shows it (an empty object if absent).
json CachedDataset(const DaemonProcess& b, const std::string& source) {
  CliResult r = Cli(b, {"staging", "--json"});
  CHECK_MESSAGE(r.exit_code == 0, r.Describe());
  json s = r.Json();
  if (s.is_discarded()) return json::object();
  for (const auto& d : s.value("datasets", json::array())) {
    if (d.value("source", std::string()) == source) return d;
  }
  return json::object();
}

std::set<std::string> LeaseNames(const json& dataset) {
  std::set<std::string> out;
  for (const auto& l : dataset.value("leases", json::array())) out.insert(l.value("lease", std::string()));
  return out;
}

// The digests a job checks: `sha256sum` of every file of `dir`, paths relative to it, sorted,
// written to `list` (REQUIREd to work and to name `some_file`).
void WriteDigests(const std::string& dir, const std::string& list, const std::string& some_file) {
  CliResult sums = Shell("cd " + Quote(dir) +
                         " && find . -type f | LC_ALL=C sort | xargs -d '\\n' sha256sum > " + Quote(list));
  REQUIRE_MESSAGE(sums.exit_code == 0, "sha256sum over the source: " << sums.Describe());
  REQUIRE(ReadFile(list).find(some_file) != std::string::npos);
}

TEST_SUITE("integration.slurm") {
  TEST_CASE(
      "two Slurm jobs naming one dataset in #SBATCH --comment: the prologs stage it with one transfer, "
      "each job checks the digests, the epilog releases each lease") {
    TestFederation fed;
    // a sends slowly (half a second per 1 MiB chunk): the pull lasts some seconds, and the
    // second job's prolog asks while it runs.
    DaemonOptions ao, bo;
    ao.chunk_size = bo.chunk_size = "1MiB";
    ao.extra_toml = "[fault_injection]\nsend_delay_us = 500000\n";
    StagingSetup st(fed, ao, bo);
    DaemonProcess& a = st.a();
    DaemonProcess& b = st.b();

    // The dataset: files at several depths, most of several chunks.
    MakeDir(a.Path("datasets"));
    MakeDir(a.Path("datasets/small"));
    MakeDir(a.Path("datasets/small/train"));
    MakeDir(a.Path("datasets/small/train/class-1"));
    MakeDir(a.Path("datasets/small/train/class-2"));
    for (int i = 0; i < 4; ++i) {
      WriteRandomFile(a.Path("datasets/small/train/class-1/img-00" + std::to_string(i) + ".bin"),
                      3 * 1024 * 1024 + 17 * i, 10 + i);
      WriteRandomFile(a.Path("datasets/small/train/class-2/img-00" + std::to_string(i) + ".bin"),
                      2 * 1024 * 1024 + 5 * i, 20 + i);
    }
    WriteRandomFile(a.Path("datasets/small/labels.csv"), 1234, 3);
    WriteFile(a.Path("datasets/small/README"), "a small dataset\n");

    SlurmCluster slurm(fed.dir() + "/slurm", b.socket());
    WriteDigests(a.Path("datasets/small"), slurm.jobs() + "/expected.sha256", "img-003.bin");

    // The job: records its environment and what b's cache says while it runs, then checks the
    // file list and every digest; exits non-zero on any difference.
    const std::string source = "a:/datasets/small";
    const std::string script =
        slurm.WriteJob("check.sh", "pororoca:" + source,
                       "out=$J/result-$SLURM_JOB_ID\n"
                       "{ echo \"dataset=${PORORO_DATASET:-}\"; echo \"dataset_1=${PORORO_DATASET_1:-}\";\n"
                       "  echo \"count=${PORORO_DATASET_COUNT:-}\"; echo \"user=$(id -un)\"; } > \"$out\"\n" +
                           Quote(slurm.cli()) + " --socket " + Quote(b.socket()) +
                           " staging --json > \"$J/staging-$SLURM_JOB_ID.json\"\n"
                           "cd \"${PORORO_DATASET:?no PORORO_DATASET}\" || exit 3\n"
                           "find . -type f | LC_ALL=C sort > \"$J/files-$SLURM_JOB_ID\"\n"
                           "sed 's/^[0-9a-f]*  //' \"$J/expected.sha256\" | diff - "
                           "\"$J/files-$SLURM_JOB_ID\" >> \"$out\" ||\n"
                           "  { echo files=differ >> \"$out\"; exit 4; }\n"
                           "echo files=same >> \"$out\"\n"
                           "sha256sum -c --strict \"$J/expected.sha256\" >> \"$out\" 2>&1 || { echo "
                           "digests=bad >> \"$out\"; "
                           "exit 5; }\n"
                           "echo digests=ok >> \"$out\"\n");

    slurm.Start();
    const std::string id1 = slurm.Submit(script);
    const std::string id2 = slurm.Submit(script);
    const std::set<std::string> both{"slurm-" + id1, "slurm-" + id2};

    // Both prologs asked while the one pull ran: the dataset, still staging, holds both leases.
    json during;
    const bool joined = WaitUntil(
        [&] {
          during = CachedDataset(b, source);
          const std::string state = during.value("state", std::string());
          return state == "ready" || state == "failed" || (state == "staging" && LeaseNames(during) == both);
        },
        60s, 100ms);
    CHECK_MESSAGE((joined && during.value("state", std::string()) == "staging" && LeaseNames(during) == both),
                  "b's cache while staging: " << during.dump() << "\nlogs:\n"
                                              << slurm.Logs());

    for (const std::string& id : {id1, id2}) {
      CAPTURE(id);
      const std::string record = slurm.WaitSettled(id, 150s);
      const std::string result = ReadIfAny(slurm.jobs() + "/result-" + id);
      INFO("job record: " << record);
      INFO("job output: " << ReadIfAny(slurm.jobs() + "/slurm-" + id + ".out"));
      INFO("job result: " << result);
      INFO("logs:\n" << slurm.Logs());
      REQUIRE(Settled(record));
      CHECK(JobField(record, "JobState") == "COMPLETED");
      CHECK(JobField(record, "ExitCode") == "0:0");

      // The job ran as its user, with the staged copy in its environment, and found every file
      // with its digest.
      CHECK(result.find("user=nobody\n") != std::string::npos);
      CHECK(result.find("count=1\n") != std::string::npos);
      CHECK(result.find("files=same\n") != std::string::npos);
      CHECK(result.find("digests=ok\n") != std::string::npos);
      std::smatch m;
      REQUIRE(std::regex_search(result, m, std::regex("dataset=([^\n]*)\n")));
      const std::string staged = m[1];
      CHECK(staged == b.Path("staging-cache/a/datasets/small"));
      CHECK(result.find("dataset_1=" + staged + "\n") != std::string::npos);

      // While the job ran, its lease was on the dataset, ready.
      json seen = json::parse(ReadIfAny(slurm.jobs() + "/staging-" + id + ".json"), nullptr, false);
      bool leased = false;
      for (const auto& d : seen.value("datasets", json::array())) {
        if (d.value("source", std::string()) != source) continue;
        CHECK(d.value("state", std::string()) == "ready");
        leased = LeaseNames(d).count("slurm-" + id) == 1;
      }
      CHECK_MESSAGE(leased, "b's cache seen by job " << id << ": " << seen.dump());
    }

    // One transfer for both jobs, and the copy is the source's.
    json transfers = b.Get("/v1/transfers");
    INFO("b's transfers: " << transfers.dump());
    REQUIRE(transfers.value("transfers", json::array()).size() == 1);
    CHECK(transfers["transfers"][0].value("state", std::string()) == "succeeded");
    const std::string staged = b.Path("staging-cache/a/datasets/small");
    const auto diffs = CompareTrees(a.Path("datasets/small"), staged);
    CHECK_MESSAGE(diffs.empty(), DescribeDiffs(diffs));

    // After the jobs, the epilog released both leases; the copy stays in the cache, ready.
    json after;
    CHECK_MESSAGE(WaitUntil(
                      [&] {
                        after = CachedDataset(b, source);
                        return LeaseNames(after).empty();
                      },
                      30s, 200ms),
                  "b's cache after the jobs: " << after.dump());
    CHECK(after.value("state", std::string()) == "ready");
    CHECK(Exists(staged));
    CHECK(slurm.NodeState() == "idle");
    const std::string log = ReadIfAny(slurm.log());
    INFO("scripts' log:\n" << log);
    for (const std::string& id : {id1, id2}) {
      CHECK(log.find("job " + id + ": released lease slurm-" + id + ": released 1 lease(s)") !=
            std::string::npos);
    }
  }

  TEST_CASE(
      "Slurm jobs whose dataset is missing or denied are held with the reason and never run, the node "
      "stays up, and once the dataset exists the released job runs") {
    TestFederation fed;
    // a's policy keeps /datasets/secret to itself.
    fed.SetRules(
        json::array({{{"id", "no-secret"}, {"effect", "deny"}, {"source_paths", {"/datasets/secret"}}},
                     {{"id", "rest"}, {"effect", "allow"}}}));
    StagingSetup st(fed);
    DaemonProcess& a = st.a();
    DaemonProcess& b = st.b();
    MakeDir(a.Path("datasets"));
    MakeDir(a.Path("datasets/secret"));
    WriteFile(a.Path("datasets/secret/data.bin"), "not for b\n");

    SlurmCluster slurm(fed.dir() + "/slurm", b.socket());
    // The job leaves a mark when it runs, with the dataset's path and the digest of its file.
    const std::string body =
        "{ echo \"dataset=${PORORO_DATASET:-}\"; sha256sum \"${PORORO_DATASET:-/nonexistent}/data.bin\"; } "
        "> \"$J/ran-$SLURM_JOB_ID\"\n";
    const std::string missing = "a:/datasets/later";
    const std::string denied = "a:/datasets/secret";
    const std::string later_job = slurm.WriteJob("later.sh", "pororoca:" + missing, body);
    const std::string secret_job = slurm.WriteJob("secret.sh", "pororoca:" + denied, body);
    slurm.Start();

    const std::string id1 = slurm.Submit(later_job);
    const std::string id2 = slurm.Submit(secret_job);
    for (const auto& job : {std::tuple{id1, missing, std::string("staging failed (")},
                            std::tuple{id2, denied, std::string("denied (")}}) {
      const std::string id = std::get<0>(job), source = std::get<1>(job), why = std::get<2>(job);
      CAPTURE(id);
      const std::string record = slurm.WaitSettled(id, 120s);
      INFO("job record: " << record);
      INFO("logs:\n" << slurm.Logs());
      REQUIRE(Settled(record));
      CHECK(JobField(record, "JobState") == "PENDING");
      CHECK(JobField(record, "Reason") == "job_requeued_in_held_state");
      CHECK(JobField(record, "Priority") == "0");
      // The reason, for the user and the operator, in the job's record.
      const std::string admin = AdminComment(record);
      CHECK(admin.rfind("pororoca: staging on pororoca-node1 failed: " + source + ": " + why, 0) == 0);
      // The job's script never ran; the node was not drained.
      CHECK(!Exists(slurm.jobs() + "/ran-" + id));
      // The epilog of the aborted allocation released the job's lease.
      CHECK(WaitUntil(
          [&] { return ReadIfAny(slurm.log()).find("job " + id + ": released lease") != std::string::npos; },
          30s, 200ms));
      CHECK(LeaseNames(CachedDataset(b, source)).empty());
    }
    CHECK(slurm.NodeState() == "idle");
    // The reasons end with the source's answer: no such dataset; its policy's rule.
    CHECK(AdminComment(slurm.ShowJob(id1)).find("No such file") != std::string::npos);
    CHECK(AdminComment(slurm.ShowJob(id2)).find("denied by rule 'no-secret'") != std::string::npos);

    // They stay held: a while later neither has run.
    std::this_thread::sleep_for(3s);
    for (const std::string& id : {id1, id2}) {
      CHECK(JobField(slurm.ShowJob(id), "Reason") == "job_requeued_in_held_state");
      CHECK(!Exists(slurm.jobs() + "/ran-" + id));
    }

    // The cause fixed (the dataset now exists), its user releases the job: it is staged and runs.
    MakeDir(a.Path("datasets/later"));
    WriteFile(a.Path("datasets/later/data.bin"), "arrived later\n");
    CliResult release = slurm.Run("scontrol release " + id1, kJobUid);
    CHECK_MESSAGE(release.exit_code == 0, release.Describe());
    std::string record;
    const bool ran = WaitUntil(
        [&] {
          record = slurm.ShowJob(id1);
          return JobField(record, "JobState") == "COMPLETED";
        },
        90s, 500ms);
    INFO("job record: " << record);
    INFO("logs:\n" << slurm.Logs());
    CHECK(ran);
    const std::string mark = ReadIfAny(slurm.jobs() + "/ran-" + id1);
    const std::string staged = b.Path("staging-cache/a/datasets/later");
    CHECK(mark.find("dataset=" + staged + "\n") != std::string::npos);
    CHECK(mark.find(
              Trim(Shell("sha256sum < " + Quote(a.Path("datasets/later/data.bin")) + " | cut -c1-64").out) +
              "  " + staged + "/data.bin") != std::string::npos);
    CHECK(AdminComment(record) == "pororoca: staged " + missing);
    // The denied one is still held; cancelled here.
    CHECK(JobField(slurm.ShowJob(id2), "Reason") == "job_requeued_in_held_state");
    CHECK(!Exists(slurm.jobs() + "/ran-" + id2));
    CHECK(slurm.Run("scancel " + id2).exit_code == 0);
    CHECK(slurm.NodeState() == "idle");
  }
}

}  // namespace
}  // namespace pororoca::test
