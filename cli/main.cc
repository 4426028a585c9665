// pororoca: the command-line client. Moves data through the local pororocad (HTTP/JSON on its unix
// socket), or through any DTN's HTTPS API (--api, with a bearer token), and manages a test
// federation's certificates. Exit codes are listed in docs/cli.md.
#include <sys/stat.h>
#include <unistd.h>

#include <boost/program_options.hpp>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "api/http.h"
#include "base/file_util.h"
#include "cli/cli.h"
#include "pki/pki.h"
#include "pororoca/config.h"

namespace po = boost::program_options;
using nlohmann::json;
using namespace pororoca;
using namespace pororoca::cli;

namespace {

std::string DefaultSocket() {
  const char* s = std::getenv("PORO_SOCKET");
  return s != nullptr && *s ? s : "/run/pororoca/pororocad.sock";
}

std::string HumanBytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  int u = 0;
  while (b >= 1024 && u < 5) {
    b /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.2f %s", b, units[u]);
  return buf;
}

std::string HumanDuration(double s) {
  if (!std::isfinite(s) || s < 0) return "--:--";
  long t = static_cast<long>(s + 0.5);
  char buf[32];
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
  else
    std::snprintf(buf, sizeof buf, "%02ld:%02ld", t / 60, t % 60);
  return buf;
}

int ExitForHttp(int status, const json& body) {
  std::string code = body.contains("error") ? body["error"].value("code", std::string()) : std::string();
  if (status == 404) return kExitNotFound;
  if (status == 401 || status == 403) return kExitDenied;
  if (status == 503) return kExitNoDaemon;
  if (status >= 400 && status < 500) return kExitUsage;
  return kExitFailed;
}

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

// A token given as itself, @FILE, or - for stdin; false (said on stderr, naming `what`) if the file
// cannot be read.
bool ReadTokenArg(const std::string& what, std::string token, std::string* out) {
  if (token == "-") {
    std::getline(std::cin, token);
  } else if (!token.empty() && token[0] == '@') {
    auto text = ReadSmallFile(token.substr(1), 64 << 10);
    if (!text.has_value()) {
      std::cerr << "pororoca: " << what << ": " << text.error().message() << "\n";
      return false;
    }
    token = *text;
  }
  while (!token.empty() && (token.back() == '\n' || token.back() == ' ' || token.back() == '\r'))
    token.pop_back();
  *out = token;
  return true;
}

struct Client {
  std::string socket;
  // --api: a DTN's HTTPS API instead of the local socket; its server certificate is checked
  // against `ca` (the federation CA) and `api_token` authenticates the caller.
  std::string api_url;
  std::string ca;
  std::string api_token;
  std::string api_endpoint;  // the name its certificate must carry ("" the URL's host, if a name)
  std::chrono::milliseconds timeout{30000};  // per request
  std::unique_ptr<api::HttpClient> http;

  bool remote() const { return !api_url.empty(); }

  // Returns the parsed body, or prints the error and sets *exit_code.
  // `not_found` (if given): a 404 sets it and returns false without a word, for a caller that
  // tries another kind of id next (a transfer, then a job).
  bool Call(const std::string& method, const std::string& target, const std::string& body, json* out,
            int* exit_code, bool* not_found = nullptr) {
    if (!http && remote() && api_token.empty()) {
      std::cerr
          << "pororoca: --api " << api_url
          << " needs a bearer token for that endpoint (--api-token TOKEN|@FILE|-, or $PORO_API_TOKEN)\n";
      *exit_code = kExitUsage;
      return false;
    }
    if (!http) {
      auto c = remote() ? api::HttpClient::ConnectTls(api_url, ca, api_endpoint)
                        : api::HttpClient::Connect(socket);
      if (!c.has_value()) {
        std::cerr << "pororoca: " << c.error().message() << "\n";
        const Code code = c.error().code();
        *exit_code = code == Code::kInvalidArgument   ? kExitUsage
                     : code == Code::kUnauthenticated ? kExitDenied
                                                      : kExitNoDaemon;
        return false;
      }
      http = std::move(*c);
      if (remote()) http->set_bearer(api_token);
    }
    auto r = http->Request(method, target, body, timeout);
    if (!r.has_value()) {
      std::cerr << "pororoca: " << r.error().message() << "\n";
      *exit_code = kExitNoDaemon;
      return false;
    }
    *out = json::parse(r->body, nullptr, false);
    if (out->is_discarded()) *out = json::object();
    if (r->status == 404 && not_found != nullptr) {
      *not_found = true;
      *exit_code = kExitNotFound;
      return false;
    }
    if (r->status >= 300) {
      std::string msg = out->contains("error") ? (*out)["error"].value("message", r->body) : r->body;
      std::cerr << "pororoca: " << msg << "\n";
      *exit_code = ExitForHttp(r->status, *out);
      return false;
    }
    return true;
  }
};

// GET/POST `target` for a job, after the same for a transfer said 404: a 404 here too says that
// neither exists (exit 4).
bool CallJob(Client& c, const std::string& method, const std::string& target, const std::string& id,
             json* out, int* exit_code) {
  bool not_found = false;
  if (c.Call(method, target, "", out, exit_code, &not_found)) return true;
  if (not_found) std::cerr << "pororoca: no transfer " << id << " (and no job)\n";
  return false;
}

bool Terminal(const std::string& state) {
  return state == "succeeded" || state == "partial" || state == "failed" || state == "cancelled";
}

// The exit code for a refusal or failure with this error code (a Status code name).
int ExitForCode(const std::string& code) {
  if (code == "NotFound") return kExitNotFound;
  if (code == "InvalidArgument") return kExitUsage;
  if (code == "PermissionDenied" || code == "Unauthenticated") return kExitDenied;
  return kExitFailed;
}

int ExitForState(const json& t) {
  std::string st = t.value("state", std::string());
  if (st == "succeeded") return kExitOk;
  if (st == "cancelled") return kExitCancelled;
  return ExitForCode(t.value("error_code", std::string()));
}

// Whole seconds until a retrying transfer's next attempt (0 if it is due).
double SecondsToNextAttempt(const json& t) {
  const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  const int64_t wait_ms = std::max<int64_t>(0, t.value("next_attempt_ms", int64_t(0)) - now_ms);
  return std::ceil(double(wait_ms) / 1000.0);
}

// While a transfer waits in the queue or to try again, the progress line says so: for a retry,
// which attempt failed, why, and when the next one starts (a peer that is down would otherwise show
// a still 0 %).
bool PrintRetryLine(const json& t) {
  if (t.value("state", std::string()) == "queued") {
    std::fprintf(stderr, "\r\x1b[Kqueued: waiting for a free slot on the daemon ([queue] max_running)");
    std::fflush(stderr);
    return true;
  }
  if (t.value("state", std::string()) != "retrying") return false;
  std::string why = t.value("error", std::string());
  if (why.size() > 90) why = why.substr(0, 87) + "...";
  std::fprintf(stderr, "\r\x1b[Kattempt %u failed: %s; next attempt in %.0f s", t.value("attempts", 0u),
               why.c_str(), SecondsToNextAttempt(t));
  std::fflush(stderr);
  return true;
}

// The bytes that have arrived: committed files, or more as soon as chunks are verified at the
// receiver (with what was skipped or already there), never more than the total.
double ArrivedBytes(const json& p) {
  const double total = p.value("bytes_total", 0.0);
  const double verified =
      p.value("bytes_skipped", 0.0) + p.value("bytes_resumed", 0.0) + p.value("bytes_verified", 0.0);
  return std::max(p.value("bytes_done", 0.0), std::min(total, verified));
}

void PrintProgressLine(const json& t, double rate, bool final_line) {
  if (!final_line && PrintRetryLine(t)) return;
  const json& p = t["progress"];
  double total = p.value("bytes_total", 0.0), done = ArrivedBytes(p);
  if (final_line) {
    // The average over the whole transfer, of what had to move (not what was skipped or resumed).
    const double elapsed = t.value("elapsed_s", 0.0);
    const double moved = std::max(
        0.0, p.value("bytes_done", 0.0) - p.value("bytes_skipped", 0.0) - p.value("bytes_resumed", 0.0));
    rate = elapsed > 0 ? moved / elapsed : 0;
  }
  uint64_t ftot = p.value("files_total", uint64_t(0)), fdone = p.value("files_done", uint64_t(0));
  bool walk_done = p.value("walk_done", false);
  double frac = total > 0 ? done / total : (final_line ? 1.0 : 0.0);
  int width = 24;
  int fill = static_cast<int>(frac * width);
  std::string bar(static_cast<size_t>(std::clamp(fill, 0, width)), '#');
  bar.resize(static_cast<size_t>(width), '.');
  double eta = rate > 0 && total > done ? (total - done) / rate : (done >= total ? 0 : NAN);
  char line[256];
  std::snprintf(line, sizeof line, "\r\x1b[K[%s] %5.1f%%  %s / %s%s  files %llu/%llu  %s/s  ETA %s  ",
                bar.c_str(), frac * 100, HumanBytes(done).c_str(), HumanBytes(total).c_str(),
                walk_done ? "" : "+", static_cast<unsigned long long>(fdone),
                static_cast<unsigned long long>(ftot), HumanBytes(rate).c_str(), HumanDuration(eta).c_str());
  std::fputs(line, stderr);
  if (final_line) std::fputs("\n", stderr);
  std::fflush(stderr);
}

void PrintResult(const json& t) {
  const json& p = t["progress"];
  double secs = t.value("elapsed_s", 0.0);
  double bytes = p.value("bytes_done", 0.0) - p.value("bytes_skipped", 0.0);
  std::string st = t.value("state", std::string());
  std::string label = st == "succeeded" ? "OK" : st == "failed" ? "FAILED" : st == "partial" ? "PARTIAL" : st;
  std::printf("%s %s: %s -> %s\n", label.c_str(), t.value("id", std::string()).c_str(),
              t.value("source", std::string()).c_str(), t.value("destination", std::string()).c_str());
  std::printf("  files %llu committed, %llu skipped, %llu failed; %s in %.2f s (%s/s)\n",
              static_cast<unsigned long long>(p.value("files_done", uint64_t(0)) -
                                              p.value("files_skipped", uint64_t(0))),
              static_cast<unsigned long long>(p.value("files_skipped", uint64_t(0))),
              static_cast<unsigned long long>(p.value("files_failed", uint64_t(0))),
              HumanBytes(bytes).c_str(), secs, HumanBytes(secs > 0 ? bytes / secs : 0).c_str());
  const std::string protection = t.value("protection", std::string());
  if (st == "succeeded") {
    std::printf("  verified: every chunk XXH3-128 checked, file digests compared before commit\n");
  }
  if (protection == "private") {
    std::printf("  protection: private (data connections encrypted and authenticated, AES-256-GCM)\n");
  } else if (protection == "integrity") {
    std::printf("  protection: integrity (every data message authenticated, AES-GCM tag; not encrypted)\n");
  } else if (protection == "clear") {
    std::printf("  protection: clear (data connections neither encrypted nor authenticated)\n");
  }
  if (const std::string transport = t.value("transport", std::string()); !transport.empty()) {
    const std::string note = t.value("transport_note", std::string());
    std::printf("  transport: %s%s\n", transport.c_str(), note.empty() ? "" : (" (" + note + ")").c_str());
  }
  std::printf("  attempts %u; resumed %s already at the destination; re-sent %s\n", t.value("attempts", 0u),
              HumanBytes(p.value("bytes_resumed", 0.0)).c_str(),
              HumanBytes(p.value("bytes_resent", 0.0)).c_str());
  // Corrupt copies over every attempt and how often they came: a number for the operator of the path.
  const uint64_t corrupt = p.value("chunks_corrupt_all_attempts", p.value("chunks_corrupt", uint64_t(0)));
  if (corrupt == 0) {
    std::printf("  corrupt chunks: none\n");
  } else {
    std::printf("  corrupt chunks: %llu failed verification and were sent again (%.1f per GiB moved)\n",
                static_cast<unsigned long long>(corrupt), p.value("corrupt_chunks_per_gib", 0.0));
  }
  if (const uint64_t specials = p.value("specials_skipped", uint64_t(0)); specials > 0) {
    // FIFOs, sockets and devices are not copied; say so by name rather than count them as nothing.
    std::printf("  not copied: %llu special file(s) (FIFOs, sockets, devices are not transferred)\n",
                static_cast<unsigned long long>(specials));
    if (t.contains("skipped_special") && t["skipped_special"].is_array()) {
      size_t shown = 0;
      for (const auto& sp : t["skipped_special"]) {
        if (++shown > 10) break;
        std::printf("  not copied: %s (%s)\n", sp.value("path", std::string()).c_str(),
                    sp.value("kind", std::string()).c_str());
      }
    }
  }
  if (!t.value("error", std::string()).empty())
    std::printf("  error: %s\n", t["error"].get<std::string>().c_str());
  if (st == "retrying") std::printf("  next attempt in %.0f s\n", SecondsToNextAttempt(t));
  for (const auto& f : t["failures"]) {
    std::printf("  failed: %s: %s\n", f.value("path", std::string()).c_str(),
                f.value("error", std::string()).c_str());
  }
}

// Follows a transfer until it ends; progress on stderr when it is a terminal.
enum class Display { kNone, kTerminal, kAlways };  // the live progress line on stderr

// Follows a transfer until it ends (or `timeout`, if not zero, passes: kExitTimeout).
int Follow(Client& c, const std::string& id, bool as_json, Display display,
           std::chrono::milliseconds timeout = std::chrono::milliseconds(0)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  json t;
  int ec = 0;
  double last_done = 0;
  auto last_t = std::chrono::steady_clock::now();
  double rate = 0;
  const bool tty = display == Display::kAlways || (display == Display::kTerminal && ::isatty(2));
  // Long polls (?wait=): the daemon answers as soon as the transfer ends, or after the interval
  // with its progress (a terminal's display refreshes 4 times a second).
  const double poll_s = tty ? 0.25 : 20;
  for (;;) {
    auto asked = std::chrono::steady_clock::now();
    double wait_s = poll_s;
    if (timeout.count() > 0) {  // not past the caller's --timeout
      wait_s = std::clamp(std::chrono::duration<double>(deadline - asked).count(), 0.0, poll_s);
    }
    char wait_text[32];
    std::snprintf(wait_text, sizeof wait_text, "%.3f", wait_s);
    if (!c.Call("GET", "/v1/transfers/" + id + "?wait=" + wait_text, "", &t, &ec)) return ec;
    if (tty) {
      auto now = std::chrono::steady_clock::now();
      double dt = std::chrono::duration<double>(now - last_t).count();
      double done = ArrivedBytes(t["progress"]);
      if (dt > 0.5) {
        double inst = std::max(0.0, done - last_done) / dt;  // a new attempt starts its counts again
        rate = rate == 0 ? inst : 0.7 * rate + 0.3 * inst;
        last_done = done;
        last_t = now;
      }
      PrintProgressLine(t, rate, Terminal(t.value("state", std::string())));
    }
    if (Terminal(t.value("state", std::string()))) break;
    if (timeout.count() > 0 && std::chrono::steady_clock::now() >= deadline) {
      if (tty) std::fputs("\n", stderr);
      std::cerr << "pororoca: transfer " << id << " is still " << t.value("state", std::string())
                << " after the --timeout; it goes on (pororoca wait " << id << " again)\n";
      return kExitTimeout;
    }
    // A daemon that does not know ?wait= (or is stopping) answers at once: not more than 4 a second.
    std::this_thread::sleep_until(asked + std::chrono::milliseconds(250));
  }
  if (as_json)
    std::cout << t.dump(2) << "\n";
  else
    PrintResult(t);
  return ExitForState(t);
}

std::string AbsoluteLocal(const std::string& p) {
  if (p.empty() || p.front() == '/') return p;
  // ENDPOINT:/path stays as it is (an endpoint name never contains '/').
  size_t colon = p.find(':');
  size_t slash = p.find('/');
  if (colon != std::string::npos && (slash == std::string::npos || colon < slash)) return p;
  char cwd[PATH_MAX];
  if (::getcwd(cwd, sizeof cwd) == nullptr) return p;
  std::string out = std::string(cwd) + "/" + p;
  return out;
}

// Parses a command's `args` against its options `desc` into `vm`; returns the positional words.
std::vector<std::string> ParseArgs(const po::options_description& desc, const std::vector<std::string>& args,
                                   po::variables_map* vm) {
  po::options_description hidden;
  hidden.add_options()("words", po::value<std::vector<std::string>>(), "");
  po::options_description all;
  all.add(desc).add(hidden);
  po::positional_options_description pos;
  pos.add("words", -1);
  po::store(po::command_line_parser(args).options(all).positional(pos).run(), *vm);
  po::notify(*vm);
  return vm->count("words") ? (*vm)["words"].as<std::vector<std::string>>() : std::vector<std::string>();
}

constexpr const char* kTokenHelp =
    "bearer token for the remote endpoint: the token, @FILE, or - for stdin (default $PORO_TOKEN; else the "
    "daemon mints one for you if it is configured to)";

// --token (or $PORO_TOKEN): the token itself, @FILE or - for stdin. False (said on stderr) if the
// file cannot be read.
bool ResolveToken(const po::variables_map& vm, std::string* out) {
  std::string token = vm.count("token") ? vm["token"].as<std::string>() : std::string();
  if (token.empty()) token = Env("PORO_TOKEN");
  return ReadTokenArg("--token", token, out);
}

// A job's summary: its state and counts, then each entry that did not succeed.
void PrintJob(const json& j) {
  const json& p = j["progress"];
  std::string counts;
  for (const auto& [k, v] : j["by_state"].items()) {
    counts += (counts.empty() ? "" : ", ") + std::to_string(v.get<uint64_t>()) + " " + k;
  }
  const std::string st = j.value("state", std::string());
  const std::string label = st == "succeeded" ? "OK"
                            : st == "failed"  ? "FAILED"
                            : st == "partial" ? "PARTIAL"
                                              : st;
  std::printf("%s job %s: %llu entries (%s)\n", label.c_str(), j.value("id", std::string()).c_str(),
              static_cast<unsigned long long>(j.value("entries", uint64_t{0})), counts.c_str());
  std::printf("  files %llu done, %llu failed; %s of %s\n",
              static_cast<unsigned long long>(p.value("files_done", uint64_t{0})),
              static_cast<unsigned long long>(p.value("files_failed", uint64_t{0})),
              HumanBytes(p.value("bytes_done", 0.0)).c_str(),
              HumanBytes(p.value("bytes_total", 0.0)).c_str());
  size_t shown = 0;
  for (const auto& e : j.value("transfers", json::array())) {
    if (e.value("state", std::string()) == "succeeded") continue;
    if (++shown > 20) {
      std::printf("  ... (pororoca status %s --json lists every entry)\n",
                  j.value("id", std::string()).c_str());
      break;
    }
    const std::string err = e.value("error", std::string());
    std::printf("  [%u] %s %s: %s -> %s%s\n", e.value("index", 0u), e.value("state", std::string()).c_str(),
                e.value("transfer", std::string()).c_str(), e.value("source", std::string()).c_str(),
                e.value("destination", std::string()).c_str(), err.empty() ? "" : (": " + err).c_str());
  }
}

int ExitForJob(const json& j) {
  const std::string st = j.value("state", std::string());
  if (st == "succeeded") return kExitOk;
  if (st == "cancelled") return kExitCancelled;
  return kExitFailed;
}

// Follows a job until every entry has ended (or `timeout`, if not zero, passes: kExitTimeout).
int FollowJob(Client& c, const std::string& id, bool as_json, bool progress,
              std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  json j;
  int ec = 0;
  for (;;) {
    const bool final_wait = timeout.count() > 0 && std::chrono::steady_clock::now() >= deadline;
    if (!c.Call("GET", "/v1/jobs/" + id + (progress ? "?wait=1" : "?wait=20"), "", &j, &ec)) return ec;
    const std::string st = j.value("state", std::string());
    const bool ended = st == "succeeded" || st == "partial" || st == "failed" || st == "cancelled";
    if (progress) {
      const json& p = j["progress"];
      uint64_t done = 0;
      for (const char* s : {"succeeded", "partial", "failed", "cancelled"})
        done += j["by_state"].value(s, uint64_t{0});
      std::fprintf(stderr, "\r\x1b[Kjob %.8s: %llu/%llu entries ended  files %llu/%llu  %s / %s", id.c_str(),
                   static_cast<unsigned long long>(done),
                   static_cast<unsigned long long>(j.value("entries", uint64_t{0})),
                   static_cast<unsigned long long>(p.value("files_done", uint64_t{0})),
                   static_cast<unsigned long long>(p.value("files_total", uint64_t{0})),
                   HumanBytes(p.value("bytes_done", 0.0)).c_str(),
                   HumanBytes(p.value("bytes_total", 0.0)).c_str());
      if (ended) std::fputs("\n", stderr);
      std::fflush(stderr);
    }
    if (ended) break;
    if (final_wait) {
      std::cerr << "pororoca: job " << id << " is still " << st << " after " << timeout.count() / 1000.0
                << " s; it goes on (pororoca wait " << id << ")\n";
      return kExitTimeout;
    }
  }
  if (as_json) {
    std::cout << j.dump(2) << "\n";
  } else {
    PrintJob(j);
  }
  return ExitForJob(j);
}

// `pororoca submit FILE.json`: a bulk job. The file is the body of POST /v1/jobs (an object with
// "entries"), or just the array of entries.
int CmdSubmit(Client& c, const std::vector<std::string>& args) {
  po::options_description desc(
      "Usage: pororoca submit [options] FILE.json\n  Submits a bulk job: FILE.json is {\"entries\": "
      "[{\"source\": ..., \"destination\": ...}, ...], options for every entry} or the array of entries "
      "(- reads stdin). Prints the job id, or with --wait follows it and exits by its outcome\nOptions");
  desc.add_options()("wait,w",
                     "wait until every entry has ended; exit 0 succeeded, 1 partial or failed, 6 cancelled")(
      "timeout", po::value<double>(),
      "with --wait: give up after this many seconds (exit 7; the job goes on)")(
      "json", "print the job as JSON")("no-progress", "no live progress line")(
      "priority", po::value<unsigned>(), "1 (lowest) to 5 (highest), for entries that set none")(
      "submission-id", po::value<std::string>(),
      "your id for this job: submitting it again returns the job it made")("token", po::value<std::string>(),
                                                                           kTokenHelp)("help,h", "this help");
  po::variables_map vm;
  const std::vector<std::string> files = ParseArgs(desc, args, &vm);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return kExitOk;
  }
  if (files.size() != 1) {
    std::cerr << "pororoca: expected one FILE.json\n" << desc << "\n";
    return kExitUsage;
  }
  std::string text;
  if (files[0] == "-") {
    text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  } else {
    auto r = ReadSmallFile(files[0], 16 << 20);
    if (!r.has_value()) {
      std::cerr << "pororoca: " << r.error().message() << "\n";
      return kExitUsage;
    }
    text = std::move(*r);
  }
  json body;
  try {
    body = json::parse(text);
  } catch (const json::parse_error& e) {
    std::cerr << "pororoca: " << files[0] << ": not valid JSON: " << e.what() << "\n";
    return kExitUsage;
  }
  if (body.is_array()) body = json{{"entries", body}};
  if (!body.is_object() || !body.contains("entries")) {
    std::cerr << "pororoca: " << files[0] << ": expected {\"entries\": [...]} or an array of entries\n";
    return kExitUsage;
  }
  // Local paths are made absolute, as cp does (not through --api: both ends are endpoints there).
  if (!c.remote() && body["entries"].is_array()) {
    for (auto& e : body["entries"]) {
      if (!e.is_object()) continue;
      for (const char* k : {"source", "destination"}) {
        if (e.contains(k) && e[k].is_string()) e[k] = AbsoluteLocal(e[k].get<std::string>());
      }
    }
  }
  if (vm.count("priority") && !body.contains("priority")) body["priority"] = vm["priority"].as<unsigned>();
  if (vm.count("submission-id")) body["submission_id"] = vm["submission-id"].as<std::string>();
  std::string token;
  if (!ResolveToken(vm, &token)) return kExitUsage;
  if (!token.empty() && !body.contains("token")) body["token"] = token;
  json j;
  int ec = 0;
  if (!c.Call("POST", "/v1/jobs", body.dump(), &j, &ec)) return ec;
  const std::string id = j.value("id", std::string());
  if (!vm.count("wait")) {
    if (vm.count("json"))
      std::cout << j.dump(2) << "\n";
    else
      std::cout << id << "\n";
    return kExitOk;
  }
  const double timeout_s = vm.count("timeout") ? vm["timeout"].as<double>() : 0;
  const bool progress = !vm.count("no-progress") && ::isatty(STDERR_FILENO);
  return FollowJob(c, id, vm.count("json") > 0, progress,
                   std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000)));
}

// `pororoca ls` and `pororoca checksum`: a path's entries, a file's digest, here or at a peer.
int CmdPathQuery(Client& c, const std::vector<std::string>& args, bool list) {
  po::options_description desc(
      list ? "Usage: pororoca ls [options] ENDPOINT:/path | PATH\n  The entries of a directory (or the file "
             "itself) at an endpoint, asked of it as a pull would be (your token, its policy)\nOptions"
           : "Usage: pororoca checksum [options] ENDPOINT:/path | PATH\n  The file digest pororoca verifies: "
             "XXH3-128 over the XXH3-128 digests of the file's chunks\nOptions");
  if (list) {
    desc.add_options()("long,l", "type, mode, size and time of each entry")(
        "limit", po::value<unsigned>(), "at most this many entries (default 10000)");
  } else {
    desc.add_options()("chunk-size", po::value<std::string>(),
                       "the chunk size the digest is over, e.g. 4MiB (default: the daemon's [transfer] "
                       "chunk_size, what its transfers use)");
  }
  desc.add_options()("json", "print the answer as JSON")("token", po::value<std::string>(), kTokenHelp)(
      "help,h", "this help");
  po::variables_map vm;
  const std::vector<std::string> paths = ParseArgs(desc, args, &vm);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return kExitOk;
  }
  if (paths.size() != 1) {
    std::cerr << "pororoca: expected one ENDPOINT:/path or PATH\n" << desc << "\n";
    return kExitUsage;
  }
  json req{{"path", c.remote() ? paths[0] : AbsoluteLocal(paths[0])}};
  if (vm.count("limit")) req["limit"] = vm["limit"].as<unsigned>();
  if (vm.count("chunk-size")) req["chunk_size"] = vm["chunk-size"].as<std::string>();
  std::string token;
  if (!ResolveToken(vm, &token)) return kExitUsage;
  if (!token.empty()) req["token"] = token;
  json r;
  int ec = 0;
  if (!list) c.timeout = std::chrono::hours(1);  // the endpoint reads the whole file first
  if (!c.Call("POST", list ? "/v1/ls" : "/v1/checksum", req.dump(), &r, &ec)) return ec;
  if (vm.count("json")) {
    std::cout << r.dump(2) << "\n";
    return kExitOk;
  }
  const std::string where = r.value("endpoint", std::string()) + ":" + r.value("path", std::string());
  if (!list) {
    // As sha256sum prints: digest, two spaces, name; the chunk size on its own line of stderr.
    std::cout << r.value("digest", std::string()) << "  " << where << "\n";
    std::cerr << "xxh3-128 over " << HumanBytes(r.value("chunk_size", 0.0)) << " chunks, "
              << HumanBytes(r.value("size", 0.0)) << "\n";
    return kExitOk;
  }
  for (const auto& e : r["entries"]) {
    const std::string type = e.value("type", std::string());
    const std::string name = e.value("name", std::string()) + (type == "dir" ? "/" : "");
    if (!vm.count("long")) {
      std::cout << name << "\n";
      continue;
    }
    const time_t secs = static_cast<time_t>(e.value("mtime_ns", int64_t{0}) / 1000000000);
    char when[32];
    std::strftime(when, sizeof when, "%Y-%m-%d %H:%M", std::gmtime(&secs));
    std::printf("%-5s %04o %12llu  %s  %s\n", type.c_str(), e.value("mode", 0u),
                static_cast<unsigned long long>(e.value("size", uint64_t{0})), when, name.c_str());
  }
  if (r.value("truncated", false)) {
    std::cerr << "pororoca: more entries than shown (--limit)\n";
  }
  return kExitOk;
}

int CmdCopy(Client& c, const std::vector<std::string>& args, bool sync_cmd) {
  po::options_description desc(
      std::string("Usage: pororoca ") + (sync_cmd ? "sync" : "cp") +
      " [options] SRC DST\n  SRC and DST are local paths or ENDPOINT:/path (exactly one remote)\nOptions");
  desc.add_options()("recursive,r", "copy directories recursively")(
      "streams,n", po::value<unsigned>(), "parallel TCP streams (default: the daemon's)")(
      "chunk", po::value<std::string>(), "chunk size, e.g. 4MiB (64KiB..64MiB)")(
      "sync", "skip files whose size and mtime already match")("overwrite", "replace existing files")(
      "skip-existing", "leave existing files alone")(
      "hard-links", "recreate hard links within the tree as links (as rsync -H), not separate copies")(
      "json", "print the final record as JSON")("no-progress", "no live progress display")(
      "progress", "the live progress display even when stderr is not a terminal")(
      "detach,d", "submit and print the id; do not wait")("token", po::value<std::string>(), kTokenHelp)(
      "protection", po::value<std::string>(),
      "clear, integrity or private: the data connections' protection (default: what the policies of "
      "both ends require)")(
      "transport", po::value<std::string>(),
      "tcp, ucx or fabric: the data transport to use, or fail (default: the first both ends "
      "offer)")("priority", po::value<unsigned>(),
                "1 (lowest) to 5 (highest): which of the daemon's queued transfers starts first (default 3)")(
      "submission-id", po::value<std::string>(),
      "your id for this request: submitting it again returns the transfer it made instead of a new "
      "one")("help,h", "this help");
  po::variables_map vm;
  const std::vector<std::string> paths = ParseArgs(desc, args, &vm);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return kExitOk;
  }
  if (paths.size() != 2) {
    std::cerr << "pororoca: expected SRC and DST\n" << desc << "\n";
    return kExitUsage;
  }
  if (vm.count("overwrite") && vm.count("skip-existing")) {
    std::cerr << "pororoca: --overwrite and --skip-existing exclude each other\n";
    return kExitUsage;
  }
  if (c.remote()) {
    // Through a DTN's HTTPS API both ends are endpoints (a third-party transfer when this host runs
    // no daemon); the DTN at --api is one of them and runs the transfer.
    for (const auto& p : paths) {
      if (!p.empty() && p.front() != '/' && p.find(':') != std::string::npos && p.find(':') < p.find('/'))
        continue;
      std::cerr << "pororoca: with --api both SRC and DST are ENDPOINT:/path, not '" << p
                << "' (the daemon at " << c.api_url << " runs the transfer: it is one of the two ends)\n";
      return kExitUsage;
    }
  }
  json req{{"source", c.remote() ? paths[0] : AbsoluteLocal(paths[0])},
           {"destination", c.remote() ? paths[1] : AbsoluteLocal(paths[1])},
           {"recursive", vm.count("recursive") > 0 || sync_cmd},
           {"sync", vm.count("sync") > 0 || sync_cmd}};
  if (vm.count("streams")) req["streams"] = vm["streams"].as<unsigned>();
  if (vm.count("chunk")) req["chunk_size"] = vm["chunk"].as<std::string>();
  if (vm.count("overwrite")) req["existing"] = "overwrite";
  if (vm.count("skip-existing")) req["existing"] = "skip";
  if (vm.count("hard-links")) req["hard_links"] = true;
  if (vm.count("protection")) req["protection"] = vm["protection"].as<std::string>();
  if (vm.count("transport")) req["transport"] = vm["transport"].as<std::string>();
  if (vm.count("priority")) req["priority"] = vm["priority"].as<unsigned>();
  if (vm.count("submission-id")) req["submission_id"] = vm["submission-id"].as<std::string>();
  std::string token;
  if (!ResolveToken(vm, &token)) return kExitUsage;
  if (!token.empty()) req["token"] = token;
  json t;
  int ec = 0;
  if (!c.Call("POST", "/v1/transfers", req.dump(), &t, &ec)) return ec;
  std::string id = t.value("id", std::string());
  if (vm.count("detach")) {
    if (vm.count("json"))
      std::cout << t.dump(2) << "\n";
    else
      std::cout << id << "\n";
    return kExitOk;
  }
  const Display display = vm.count("no-progress") ? Display::kNone
                          : vm.count("progress")  ? Display::kAlways
                                                  : Display::kTerminal;
  return Follow(c, id, vm.count("json") > 0, display);
}

// `status ID --files`: every per-file result of the transfer, a page of the API at a time.
int PrintFiles(Client& c, const std::string& id, const std::string& state, bool as_json) {
  std::string kind = "transfers";
  json all = json::array();
  json first;
  uint64_t offset = 0;
  int ec = 0;
  for (;;) {
    json page;
    std::string target = "/v1/" + kind + "/" + id + "/files?limit=1000&offset=" + std::to_string(offset);
    if (!state.empty()) target += "&state=" + state;
    bool not_found = false;
    if (first.is_null() && !c.Call("GET", target, "", &page, &ec, &not_found)) {
      if (!not_found) return ec;
      kind = "jobs";  // not a transfer: a job's id
      target.replace(0, std::strlen("/v1/transfers/"), "/v1/jobs/");
      if (!CallJob(c, "GET", target, id, &page, &ec)) return ec;
    } else if (!first.is_null() && !c.Call("GET", target, "", &page, &ec)) {
      return ec;
    }
    if (first.is_null()) first = page;
    for (auto& f : page["files"]) {
      if (as_json) {
        all.push_back(f);
        continue;
      }
      const std::string st = f.value("state", std::string());
      const std::string path = f.value("path", std::string());
      const std::string err = f.value("error", std::string());
      std::printf("%-9s %3u  %10s  %-32s  %s%s\n", st.c_str(), f.value("attempts", 0u),
                  HumanBytes(double(f.value("size", uint64_t{0}))).c_str(),
                  f.value("digest", std::string()).empty() ? "-" : f.value("digest", std::string()).c_str(),
                  path.empty() ? "(the transferred file)" : path.c_str(),
                  err.empty() ? "" : ("  " + err).c_str());
    }
    if (!page.contains("next_offset")) break;
    offset = page["next_offset"].get<uint64_t>();
  }
  const std::string real_id = first.value("id", id);
  if (as_json) {
    std::cout << json{{"id", real_id}, {"by_state", first["by_state"]}, {"files", all}}.dump(2) << "\n";
    return kExitOk;
  }
  uint64_t total = 0;
  std::string parts;
  for (const auto& [k, v] : first["by_state"].items()) {
    total += v.get<uint64_t>();
    parts += (parts.empty() ? "" : ", ") + std::to_string(v.get<uint64_t>()) + " " + k;
  }
  std::printf("%llu file(s) recorded for %s%s%s\n", static_cast<unsigned long long>(total), real_id.c_str(),
              parts.empty() ? "" : ": ", parts.c_str());
  return kExitOk;
}

int CmdStatus(Client& c, const std::vector<std::string>& args) {
  bool as_json = false, files = false;
  std::string id, state;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--json") {
      as_json = true;
    } else if (a == "--files") {
      files = true;
    } else if (a == "--state" && i + 1 < args.size()) {
      state = args[++i];
    } else if (a.rfind("--state=", 0) == 0) {
      state = a.substr(8);
    } else if (a == "--help" || a == "-h") {
      std::cout
          << "Usage: pororoca status [ID [--files [--state succeeded|skipped|failed]]] [--json]\n"
             "  ID may be any unique prefix of a transfer id; --files lists the transfer's files\n"
             "  (state, attempts, size, the XXH3-128 file digest verified at the receiver, path, error)\n";
      return kExitOk;
    } else if (id.empty() && a.rfind("--", 0) != 0) {
      id = a;
    } else {
      std::cerr << "pororoca: unexpected argument " << a << "\n";
      return kExitUsage;
    }
  }
  if ((files || !state.empty()) && id.empty()) {
    std::cerr << "pororoca: --files and --state need a transfer ID\n";
    return kExitUsage;
  }
  if (!state.empty() && !files) files = true;
  if (files) return PrintFiles(c, id, state, as_json);
  json r;
  int ec = 0;
  if (!id.empty()) {
    bool not_found = false;
    if (!c.Call("GET", "/v1/transfers/" + id, "", &r, &ec, &not_found)) {
      if (!not_found) return ec;
      if (!CallJob(c, "GET", "/v1/jobs/" + id, id, &r, &ec)) return ec;  // a job's id, then
      if (as_json)
        std::cout << r.dump(2) << "\n";
      else
        PrintJob(r);
      return kExitOk;
    }
    if (as_json)
      std::cout << r.dump(2) << "\n";
    else
      PrintResult(r);
    return kExitOk;
  }
  if (!c.Call("GET", "/v1/transfers", "", &r, &ec)) return ec;
  if (as_json) {
    std::cout << r.dump(2) << "\n";
    return kExitOk;
  }
  std::printf("%-32s %-10s %7s %12s  %s\n", "ID", "STATE", "FILES", "BYTES", "SOURCE -> DESTINATION");
  for (const auto& t : r["transfers"]) {
    const json& p = t["progress"];
    std::printf("%-32s %-10s %7llu %12s  %s -> %s\n", t.value("id", std::string()).c_str(),
                t.value("state", std::string()).c_str(),
                static_cast<unsigned long long>(p.value("files_done", uint64_t(0))),
                HumanBytes(p.value("bytes_done", 0.0)).c_str(), t.value("source", std::string()).c_str(),
                t.value("destination", std::string()).c_str());
  }
  return kExitOk;
}

// `pororoca wait ID`: follows a transfer (submitted with cp -d, or by a workflow) until it ends;
// the exit code is the outcome's, as cp's.
int CmdWait(Client& c, const std::vector<std::string>& args) {
  po::options_description desc(
      "Usage: pororoca wait ID [options]\n  Waits until the transfer ends and exits as cp would (0 "
      "succeeded, 1 "
      "failed, 6 cancelled, ...); ID may be any unique prefix of a transfer id\nOptions");
  desc.add_options()("json", "print the final record as JSON")(
      "progress", "the live progress line even when stderr is not a terminal")("no-progress",
                                                                               "no live progress line")(
      "timeout", po::value<double>(),
      "give up waiting after this many seconds (exit 7; the transfer goes on)")("help,h", "this help");
  po::variables_map vm;
  const std::vector<std::string> ids = ParseArgs(desc, args, &vm);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return kExitOk;
  }
  if (ids.size() != 1) {
    std::cerr << "pororoca: expected one transfer ID\n" << desc << "\n";
    return kExitUsage;
  }
  double timeout_s = vm.count("timeout") ? vm["timeout"].as<double>() : 0;
  if (!(timeout_s >= 0)) {
    std::cerr << "pororoca: --timeout must be a number of seconds\n";
    return kExitUsage;
  }
  // The full id, so that the long polls name one transfer (and an unknown one fails at once).
  json t;
  int ec = 0;
  bool not_found = false;
  if (!c.Call("GET", "/v1/transfers/" + ids[0], "", &t, &ec, &not_found)) {
    if (!not_found) return ec;
    if (!CallJob(c, "GET", "/v1/jobs/" + ids[0], ids[0], &t, &ec)) return ec;  // a job's id, then
    const bool progress = vm.count("progress") || (!vm.count("no-progress") && ::isatty(STDERR_FILENO));
    return FollowJob(c, t.value("id", ids[0]), vm.count("json") > 0, progress,
                     std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000)));
  }
  const Display display = vm.count("no-progress") ? Display::kNone
                          : vm.count("progress")  ? Display::kAlways
                                                  : Display::kTerminal;
  return Follow(c, t.value("id", ids[0]), vm.count("json") > 0, display,
                std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000)));
}

int CmdCancel(Client& c, const std::vector<std::string>& args) {
  if (args.size() != 1) {
    std::cerr << "Usage: pororoca cancel ID   (ID may be any unique prefix of a transfer id)\n";
    return kExitUsage;
  }
  json r;
  int ec = 0;
  bool not_found = false;
  if (!c.Call("POST", "/v1/transfers/" + args[0] + "/cancel", "", &r, &ec, &not_found)) {
    if (!not_found) return ec;
    if (!CallJob(c, "POST", "/v1/jobs/" + args[0] + "/cancel", args[0], &r, &ec)) return ec;  // a job's id
    std::cout << "cancel requested for job " << r.value("id", args[0]) << " (" << r.value("entries", 0)
              << " entries)\n";
    return kExitOk;
  }
  std::cout << "cancel requested for " << r.value("id", args[0]) << " (state "
            << r.value("state", std::string()) << ")\n";
  return kExitOk;
}

int CmdPolicy(Client& c, const std::vector<std::string>& args) {
  po::options_description desc(
      "Usage: pororoca policy check SRC DST\n  Would `pororoca cp SRC DST` be admitted, and by which check "
      "(endpoint, export root, source, token, policy)? The checks this daemon makes, in a transfer's "
      "order; no data moves, nothing is audited. Exits as cp would.\nOptions");
  desc.add_options()("recursive,r", "a directory, as cp -r")("overwrite", "as cp --overwrite")(
      "token", po::value<std::string>(), kTokenHelp)("direction", po::value<std::string>(),
                                                     "push or pull (default: whoever is local initiates)")(
      "classification", po::value<std::string>(),
      "the data's label (default: the local daemon's for a local source)")(
      "at", po::value<int64_t>(), "evaluate at this Unix time (time windows)")(
      "protection", po::value<std::string>(), "as cp --protection")("json", "print the decision as JSON")(
      "help,h", "this help");
  po::variables_map vm;
  const std::vector<std::string> words = ParseArgs(desc, args, &vm);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return kExitOk;
  }
  if (words.size() != 3 || words[0] != "check") {
    std::cerr << desc << "\n";
    return kExitUsage;
  }
  json req{{"source", AbsoluteLocal(words[1])},
           {"destination", AbsoluteLocal(words[2])},
           {"recursive", vm.count("recursive") > 0}};
  if (vm.count("overwrite")) req["existing"] = "overwrite";
  if (vm.count("protection")) req["protection"] = vm["protection"].as<std::string>();
  std::string token;
  if (!ResolveToken(vm, &token)) return kExitUsage;
  if (!token.empty()) req["token"] = token;
  if (vm.count("direction")) req["direction"] = vm["direction"].as<std::string>();
  if (vm.count("classification")) req["classification"] = vm["classification"].as<std::string>();
  if (vm.count("at")) req["time"] = vm["at"].as<int64_t>();
  json r;
  int ec = 0;
  if (!c.Call("POST", "/v1/policy/check", req.dump(), &r, &ec)) return ec;
  const bool allowed = r.value("allowed", false);
  if (vm.count("json")) {
    std::cout << r.dump(2) << "\n";
  } else {
    const std::string check = r.value("check", std::string());
    std::cout << (allowed ? "allowed" : "denied") << (check == "policy" ? "" : " (" + check + " check)")
              << ": " << r.value("reason", std::string()) << "\n";
    if (r.contains("request")) {
      const json& q = r["request"];
      std::cout << "  " << q.value("source_institution", std::string()) << " -> "
                << q.value("destination_institution", std::string()) << ", "
                << q.value("direction", std::string()) << ", " << q.value("source_path", std::string())
                << " -> " << q.value("destination_path", std::string()) << ", classification "
                << q.value("classification", std::string()) << " (manifest serial " << r.value("serial", 0)
                << ")\n";
    }
    if (r.contains("policy_reason") &&
        r.value("policy_reason", std::string()) != r.value("reason", std::string()))
      std::cout << "  the transfer's root: " << r["policy_reason"].get<std::string>() << "\n";
    if (r.contains("rate_limit_bytes_per_s")) {
      std::cout << "  rate cap " << HumanBytes(r["rate_limit_bytes_per_s"].get<double>())
                << "/s per institution pair\n";
    }
    if (r.contains("max_concurrent"))
      std::cout << "  at most " << r["max_concurrent"] << " transfers at once\n";
    if (r.contains("protection_required")) {
      std::cout << "  protection: this end requires " << r["protection_required"].get<std::string>();
      if (r.contains("protection"))
        std::cout << ", the transfer would run at " << r["protection"].get<std::string>();
      std::cout << " (the peer's policy may require more)\n";
    }
    if (r.contains("explain")) {
      for (const auto& e : r["explain"]) std::cout << "  " << e.get<std::string>() << "\n";
    }
  }
  // The exit code cp would end with for the same refusal.
  return allowed ? kExitOk : ExitForCode(r.value("code", std::string("PermissionDenied")));
}

int CmdAccounting(Client& c, const std::vector<std::string>& args) {
  po::options_description desc(
      "Usage: pororoca accounting [options]\n  bytes and files moved, per institution "
      "pair, user and day (this daemon's view)\nOptions");
  desc.add_options()("since", po::value<std::string>(), "first day, YYYY-MM-DD")(
      "until", po::value<std::string>(), "last day, YYYY-MM-DD")(
      "user", po::value<std::string>(), "one user")("institution", po::value<std::string>(),
                                                    "one institution (either end)")("json", "print JSON")(
      "help,h", "this help");
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(desc).run(), vm);
  po::notify(vm);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return kExitOk;
  }
  std::string q;
  for (const char* k : {"since", "until", "user", "institution"}) {
    if (vm.count(k)) q += std::string(q.empty() ? "?" : "&") + k + "=" + vm[k].as<std::string>();
  }
  json r;
  int ec = 0;
  if (!c.Call("GET", "/v1/accounting" + q, "", &r, &ec)) return ec;
  if (vm.count("json")) {
    std::cout << r.dump(2) << "\n";
    return kExitOk;
  }
  auto row = [](const json& e, const std::string& label) {
    std::printf("  %-40s %12s %10llu files %6llu transfers\n", label.c_str(),
                HumanBytes(e.value("bytes", 0.0)).c_str(),
                static_cast<unsigned long long>(e.value("files", 0ull)),
                static_cast<unsigned long long>(e.value("transfers", 0ull)));
  };
  std::cout << "by institution pair:\n";
  for (const auto& e : r.value("by_pair", json::array())) {
    row(e, e.value("source", std::string()) + " -> " + e.value("destination", std::string()));
  }
  std::cout << "by user:\n";
  for (const auto& e : r.value("by_user", json::array())) row(e, e.value("user", std::string()));
  std::cout << "by day:\n";
  for (const auto& e : r.value("by_day", json::array())) row(e, e.value("day", std::string()));
  return kExitOk;
}

// "90s", "30m", "12h", "7d", or a number of seconds; -1 if it is none of those.
int64_t ParseDurationS(const std::string& s) {
  size_t used = 0;
  long long v = -1;
  try {
    v = std::stoll(s, &used);
  } catch (const std::exception&) {
    return -1;
  }
  if (v < 0 || s.empty() || !std::isdigit(static_cast<unsigned char>(s[0]))) return -1;
  const std::string unit = s.substr(used);
  const int64_t mult = unit.empty() || unit == "s" ? 1
                       : unit == "m"               ? 60
                       : unit == "h"               ? 3600
                       : unit == "d"               ? 86400
                                                   : 0;
  if (mult == 0 || v > INT64_MAX / mult) return -1;
  return v * mult;
}

// `pororoca stage`: a dataset brought into this node's staging cache (docs/staging.md).
int CmdStage(Client& c, const std::vector<std::string>& args) {
  po::options_description desc(
      "Usage: pororoca stage ENDPOINT:/path [options]\n  Brings a dataset into this node's staging cache "
      "(unless a current copy is there) and prints its local path once it is ready\nOptions");
  desc.add_options()("lease", po::value<std::string>(),
                     "hold the copy for this job (never evicted until released)")(
      "ttl", po::value<std::string>(),
      "the lease's lifetime, e.g. 12h, 7d (default: the daemon's [staging] default_ttl_s)")(
      "wait", "wait until the copy is ready (exit 0), or staging failed (exit 1)")(
      "timeout", po::value<std::string>(), "with --wait: give up after this long (exit 7; staging goes on)")(
      "env-file", po::value<std::string>(), "once ready, append  export NAME='PATH'  to this file")(
      "env-name", po::value<std::string>()->default_value("PORORO_DATASET"), "the variable --env-file sets")(
      "json", "print the dataset as JSON")("token", po::value<std::string>(), kTokenHelp)("help,h",
                                                                                          "this help");
  po::variables_map vm;
  const std::vector<std::string> paths = ParseArgs(desc, args, &vm);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return kExitOk;
  }
  if (paths.size() != 1) {
    std::cerr << "pororoca: expected one ENDPOINT:/path\n" << desc << "\n";
    return kExitUsage;
  }
  json req{{"source", paths[0]}};
  if (vm.count("lease")) req["lease"] = vm["lease"].as<std::string>();
  if (vm.count("ttl")) {
    const int64_t ttl = ParseDurationS(vm["ttl"].as<std::string>());
    if (ttl < 0) {
      std::cerr << "pororoca: --ttl must be a duration like 90s, 30m, 12h or 7d\n";
      return kExitUsage;
    }
    req["ttl_s"] = ttl;
  }
  int64_t timeout_s = 0;
  if (vm.count("timeout") && (timeout_s = ParseDurationS(vm["timeout"].as<std::string>())) < 0) {
    std::cerr << "pororoca: --timeout must be a duration like 90s, 30m or 12h\n";
    return kExitUsage;
  }
  const std::string env_name = vm["env-name"].as<std::string>();
  if (env_name.empty() || std::isdigit(static_cast<unsigned char>(env_name[0])) ||
      env_name.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") !=
          std::string::npos) {
    std::cerr << "pororoca: --env-name must be a shell variable name, not '" << env_name << "'\n";
    return kExitUsage;
  }
  std::string token;
  if (!ResolveToken(vm, &token)) return kExitUsage;
  if (!token.empty()) req["token"] = token;
  json d;
  int ec = 0;
  // The first stage of a dataset asks its source (a query) before answering.
  c.timeout = std::chrono::minutes(2);
  if (!c.Call("POST", "/v1/stage", req.dump(), &d, &ec)) return ec;
  const std::string id = d.value("id", std::string());
  if (vm.count("wait")) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
    const bool progress = ::isatty(STDERR_FILENO);
    while (d.value("state", std::string()) == "staging") {
      auto left =
          std::chrono::duration_cast<std::chrono::seconds>(deadline - std::chrono::steady_clock::now());
      if (timeout_s > 0 && left.count() <= 0) {
        std::cerr << "pororoca: " << d.value("source", paths[0])
                  << " is still staging after --timeout; dataset " << id << " (pororoca staging)\n";
        return kExitTimeout;
      }
      const int64_t slice = timeout_s > 0 ? std::clamp<int64_t>(left.count(), 1, 30) : 30;
      if (!c.Call("GET", "/v1/stage/" + id + "?wait=" + std::to_string(slice), "", &d, &ec)) return ec;
      if (progress && d.contains("transfer")) {
        const json& p = d["transfer"]["progress"];
        std::fprintf(stderr, "\rstaging %s: %s of %s   ", d.value("source", std::string()).c_str(),
                     HumanBytes(p.value("bytes_done", 0.0)).c_str(),
                     HumanBytes(p.value("bytes_total", 0.0)).c_str());
      }
    }
    if (progress) std::fputs("\r\033[K", stderr);
  }
  const std::string state = d.value("state", std::string());
  if (vm.count("json")) std::cout << d.dump(2) << "\n";
  if (state == "failed") {
    std::cerr << "pororoca: staging " << d.value("source", paths[0])
              << " failed: " << d.value("error", std::string()) << "\n";
    // Refused by the source (its policy, the token): 5, as for any refusal; anything else 1.
    const int code = ExitForCode(d.value("error_code", std::string()));
    return code == kExitDenied ? kExitDenied : kExitFailed;
  }
  if (state != "ready") {
    if (!vm.count("json")) std::cout << id << " " << state << "\n";
    return kExitOk;
  }
  const std::string path = d.value("path", std::string());
  if (!vm.count("json")) std::cout << path << "\n";
  if (vm.count("env-file")) {
    const std::string file = vm["env-file"].as<std::string>();
    std::string quoted;
    for (char ch : path) quoted += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
    FILE* f = std::fopen(file.c_str(), "a");
    if (f == nullptr || std::fprintf(f, "export %s='%s'\n", env_name.c_str(), quoted.c_str()) < 0 ||
        std::fclose(f) != 0) {
      std::cerr << "pororoca: --env-file " << file << ": " << std::strerror(errno) << "\n";
      return kExitFailed;
    }
  }
  return kExitOk;
}

// `pororoca release JOB`: drops the job's leases; the copies stay until evicted.
int CmdRelease(Client& c, const std::vector<std::string>& args) {
  if (args.size() != 1 || args[0].rfind("-", 0) == 0) {
    std::cerr << "Usage: pororoca release JOB   (drops every lease of JOB in this node's staging cache)\n";
    return args.size() == 1 && (args[0] == "--help" || args[0] == "-h") ? kExitOk : kExitUsage;
  }
  json r;
  int ec = 0;
  if (!c.Call("POST", "/v1/stage/release", json{{"lease", args[0]}}.dump(), &r, &ec)) return ec;
  std::cout << "released " << r.value("released", 0) << " lease(s) of " << args[0] << "\n";
  return kExitOk;
}

// `pororoca staging`: what the cache holds.
int CmdStaging(Client& c, const std::vector<std::string>& args) {
  const bool as_json = args.size() == 1 && args[0] == "--json";
  if (!args.empty() && !as_json) {
    std::cerr << "Usage: pororoca staging [--json]   (the datasets of this node's staging cache)\n";
    return args[0] == "--help" || args[0] == "-h" ? kExitOk : kExitUsage;
  }
  json r;
  int ec = 0;
  if (!c.Call("GET", "/v1/staging", "", &r, &ec)) return ec;
  if (as_json) {
    std::cout << r.dump(2) << "\n";
    return kExitOk;
  }
  const double quota = r.value("quota_bytes", 0.0);
  std::printf("%s: %s of %s used (evicts above %.0f%%, down to %.0f%%), %llu eviction(s)\n",
              r.value("dir", std::string()).c_str(), HumanBytes(r.value("used_bytes", 0.0)).c_str(),
              HumanBytes(quota).c_str(), 100 * r.value("high_watermark", 0.0),
              100 * r.value("low_watermark", 0.0),
              static_cast<unsigned long long>(r.value("evictions", uint64_t{0})));
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  for (const auto& d : r["datasets"]) {
    std::string leases;
    for (const auto& l : d["leases"]) leases += (leases.empty() ? "" : ",") + l.value("lease", std::string());
    std::printf("%s  %-7s %10s %7llu files  used %s ago  %s  leases: %s\n",
                d.value("id", std::string()).c_str(), d.value("state", std::string()).c_str(),
                HumanBytes(d.value("bytes", 0.0)).c_str(),
                static_cast<unsigned long long>(d.value("files", uint64_t{0})),
                HumanDuration((now - d.value("last_used_ms", now)) / 1000.0).c_str(),
                d.value("source", std::string()).c_str(), leases.empty() ? "none" : leases.c_str());
    if (d.value("state", std::string()) == "failed")
      std::printf("    error: %s\n", d.value("error", std::string()).c_str());
  }
  return kExitOk;
}

void Usage() {
  std::cout
      << "pororoca " << PORO_VERSION
      << ": move datasets between Data Transfer Nodes\n\n"
         "Usage: pororoca [--socket PATH | --api https://HOST:PORT --ca FILE --api-token TOKEN] "
         "COMMAND [ARGS]\n\n"
         "Commands:\n"
         "  cp [-r] SRC DST          copy a file or tree (one side is ENDPOINT:/path)\n"
         "  sync SRC DST             recursive copy that skips files already identical\n"
         "  status [ID] [--files]    list transfers, or show one (--files: its files' results)\n"
         "  submit FILE.json         submit a bulk job (many entries); --wait follows it\n"
         "  wait ID                  wait until a transfer (or job) ends; exits as cp would\n"
         "  cancel ID                cancel a transfer\n"
         "  ls ENDPOINT:/path        list a directory at an endpoint (or here)\n"
         "  checksum ENDPOINT:/path  the XXH3-128 file digest pororoca verifies, of a file there\n"
         "  stage ENDPOINT:/path     bring a dataset into this node's staging cache (--lease JOB --wait)\n"
         "  release JOB              drop a job's leases on staged datasets\n"
         "  staging                  list the staging cache: datasets, sizes, leases\n"
         "  endpoints                list the federation's endpoints (from the daemon's manifest)\n"
         "  policy check SRC DST     would this transfer be allowed, and by which rule?\n"
         "  accounting               bytes and files moved per institution pair, user and day\n"
         "  dashboard [--listen A]   the daemon's dashboard for a browser on this host (loopback)\n"
         "  federation ...           the authority's tools: manifest, endpoints, policy, signing\n"
         "  token issue ...          mint a bearer token (test federations)\n\n"
         "The daemon's socket: --socket, else $PORO_SOCKET, else /run/pororoca/pororocad.sock.\n"
         "Or a DTN's HTTPS API (from any host): --api (or $PORO_API), its CA --ca (or $PORO_CA), a\n"
         "token with transfer.* scopes --api-token TOKEN|@FILE|- (or $PORO_API_TOKEN), and the\n"
         "endpoint it must be --api-endpoint NAME (or $PORO_API_ENDPOINT; default the URL's host name).\n"
         "Run 'pororoca COMMAND --help' for a command's options. Exit codes: docs/cli.md.\n";
}

}  // namespace

int main(int argc, char** argv) {
  // A server that closes a TLS connection must not kill the CLI: OpenSSL writes without MSG_NOSIGNAL.
  ::signal(SIGPIPE, SIG_IGN);
  try {
    std::vector<std::string> args(argv + 1, argv + argc);
    Client c;
    c.socket = DefaultSocket();
    c.api_url = Env("PORO_API");
    c.ca = Env("PORO_CA");
    c.api_endpoint = Env("PORO_API_ENDPOINT");
    std::string api_token = Env("PORO_API_TOKEN");
    // --NAME VALUE or --NAME=VALUE, for pororoca's own options.
    auto take = [&args](const char* name, std::string* out) {
      const std::string flag = std::string("--") + name;
      if (args[0] == flag && args.size() > 1) {
        *out = args[1];
        args.erase(args.begin(), args.begin() + 2);
        return true;
      }
      if (args[0].rfind(flag + "=", 0) == 0) {
        *out = args[0].substr(flag.size() + 1);
        args.erase(args.begin());
        return true;
      }
      return false;
    };
    while (!args.empty() && args[0].rfind("--", 0) == 0) {
      if (take("socket", &c.socket) || take("api", &c.api_url) || take("ca", &c.ca) ||
          take("api-token", &api_token) || take("api-endpoint", &c.api_endpoint)) {
        continue;
      } else if (args[0] == "--version") {
        std::cout << "pororoca " << PORO_VERSION << "\n";
        return kExitOk;
      } else if (args[0] == "--help") {
        Usage();
        return kExitOk;
      } else {
        std::cerr << "pororoca: unknown option " << args[0] << "\n";
        return kExitUsage;
      }
    }
    if (args.empty()) {
      Usage();
      return kExitUsage;
    }
    if (c.remote() && !ReadTokenArg("--api-token", api_token, &c.api_token)) return kExitUsage;
    std::string cmd = args[0];
    std::vector<std::string> rest(args.begin() + 1, args.end());
    for (const auto& a : rest) {
      for (auto [own, value] : {std::pair<std::string, const char*>{"--socket", "PATH"},
                                {"--api", "URL"},
                                {"--ca", "FILE"},
                                {"--api-token", "TOKEN"},
                                {"--api-endpoint", "NAME"}}) {
        if (a == own || a.rfind(own + "=", 0) == 0) {
          std::cerr << "pororoca: " << own << " is an option of pororoca itself and goes before the command: "
                    << "pororoca " << own << " " << value << " " << cmd << " ...\n";
          return kExitUsage;
        }
      }
    }
    if (cmd == "cp" || cmd == "copy") return CmdCopy(c, rest, false);
    if (cmd == "sync") return CmdCopy(c, rest, true);
    if (cmd == "status") return CmdStatus(c, rest);
    if (cmd == "cancel") return CmdCancel(c, rest);
    if (cmd == "wait") return CmdWait(c, rest);
    if (cmd == "submit") return CmdSubmit(c, rest);
    if (cmd == "ls") return CmdPathQuery(c, rest, true);
    if (cmd == "checksum") return CmdPathQuery(c, rest, false);
    if (cmd == "stage") return CmdStage(c, rest);
    if (cmd == "release") return CmdRelease(c, rest);
    if (cmd == "staging") return CmdStaging(c, rest);
    if (cmd == "federation") return CmdFederation(rest);
    if (cmd == "token") return CmdToken(rest);
    if (cmd == "policy") return CmdPolicy(c, rest);
    if (cmd == "accounting") return CmdAccounting(c, rest);
    if (cmd == "dashboard")
      return CmdDashboard({c.socket, c.api_url, c.ca, c.api_token, c.api_endpoint}, rest);
    if (cmd == "endpoints") {
      json r;
      int ec = 0;
      if (!c.Call("GET", "/v1/endpoints", "", &r, &ec)) return ec;
      std::cout << "self: " << r.value("self", std::string()) << " (" << r.value("institution", std::string())
                << "), federation " << r.value("federation", std::string()) << " manifest serial "
                << r.value("serial", 0) << "\n";
      // By name, whatever the manifest's order (the list an operator scans for one name).
      std::vector<json> eps(r["endpoints"].begin(), r["endpoints"].end());
      std::sort(eps.begin(), eps.end(), [](const json& x, const json& y) {
        return x.value("name", std::string()) < y.value("name", std::string());
      });
      for (const auto& e : eps) {
        std::printf("  %-24s %-16s %-22s %s\n", e.value("name", std::string()).c_str(),
                    e.value("institution", std::string()).c_str(), e.value("address", std::string()).c_str(),
                    e.value("status", std::string()).c_str());
      }
      return kExitOk;
    }
    std::cerr << "pororoca: unknown command '" << cmd << "'\n";
    Usage();
    return kExitUsage;
  } catch (const po::error& e) {
    std::cerr << "pororoca: " << e.what() << "\n";
    return kExitUsage;
  } catch (const std::exception& e) {
    std::cerr << "pororoca: " << e.what() << "\n";
    return kExitFailed;
  }
}
