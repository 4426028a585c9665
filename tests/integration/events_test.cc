// Following transfers without a polling loop: GET /v1/events (server-sent events) and
// `pororoca wait`.
#include <doctest/doctest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <thread>

#include "support/daemon_harness.h"

namespace pororoca::test {
namespace {

using nlohmann::json;
constexpr uint64_t kMiB = 1ull << 20;

// Reads GET `target` from the daemon's socket as a stream until `done(text so far)` or `timeout`;
// returns what arrived (headers and body). No assertions: it runs on a thread of its own.
std::string ReadStream(const std::string& socket, const std::string& target,
                       const std::function<bool(const std::string&)>& done,
                       std::chrono::milliseconds timeout) {
  std::string out;
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return out;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socket.c_str(), sizeof(addr.sun_path) - 1);
  const std::string req = "GET " + target + " HTTP/1.1\r\nHost: pororocad\r\n\r\n";
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < until && !done(out)) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      char buf[8192];
      ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
  }
  ::close(fd);
  return out;
}

struct SseEvent {
  uint64_t id = 0;
  std::string type;
  json data;
};

// The events of a text/event-stream body (after the headers).
std::vector<SseEvent> ParseEvents(const std::string& text) {
  std::vector<SseEvent> out;
  size_t at = text.find("\r\n\r\n");
  if (at == std::string::npos) return out;
  at += 4;
  while (at < text.size()) {
    size_t end = text.find("\n\n", at);
    if (end == std::string::npos) break;
    SseEvent e;
    bool any = false;
    size_t line = at;
    while (line < end) {
      size_t nl = text.find('\n', line);
      if (nl == std::string::npos || nl > end) nl = end;
      std::string l = text.substr(line, nl - line);
      if (l.rfind("id: ", 0) == 0) e.id = std::stoull(l.substr(4));
      if (l.rfind("event: ", 0) == 0) e.type = l.substr(7), any = true;
      if (l.rfind("data: ", 0) == 0) e.data = json::parse(l.substr(6), nullptr, false);
      line = nl + 1;
    }
    if (any) out.push_back(std::move(e));
    at = end + 2;
  }
  return out;
}

DaemonOptions SlowSender() {
  DaemonOptions o;
  o.extra_toml = "[fault_injection]\nsend_delay_us = 60000\n";  // ~3 s for 192 chunks of 1 MiB
  return o;
}

TEST_SUITE("integration.events") {
  TEST_CASE(
      "GET /v1/events streams a transfer's states and progress as they happen, and resumes from a number") {
    TestFederation fed;
    DaemonPair p(fed, SlowSender());
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    constexpr uint64_t kSize = 192 * kMiB;
    WriteRandomFile(a.Path("big.bin"), kSize, 9);
    // The stream is open before the transfer is submitted: it carries what happens from then on.
    std::string text;
    std::thread reader([&] {
      text = ReadStream(
          a.socket(), "/v1/events",
          [](const std::string& t) {
            return t.find(R"("state":"succeeded")") != std::string::npos ||
                   t.find(R"("state":"failed")") != std::string::npos;
          },
          90s);
    });
    std::this_thread::sleep_for(300ms);  // connected and waiting
    json sub = a.Post("/v1/transfers", R"({"source": ")" + a.Path("big.bin") +
                                           R"(", "destination": "b:/big.bin", "chunk_size": "1MiB"})");
    const std::string id = sub.value("id", std::string());
    reader.join();
    INFO(text.substr(0, 3000));
    REQUIRE(text.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
    CHECK(text.find("Content-Type: text/event-stream") != std::string::npos);
    auto events = ParseEvents(text);
    std::vector<std::string> states;
    bool moving = false;
    uint64_t last_id = 0;
    bool increasing = true;
    for (const auto& e : events) {
      if (e.id <= last_id) increasing = false;
      last_id = e.id;
      CHECK(e.data["id"] == id);
      CHECK(e.data["seq"] == e.id);
      if (e.type == "transfer") states.push_back(e.data.value("state", std::string()));
      if (e.type == "progress") {
        const uint64_t v = e.data["progress"].value("bytes_verified", uint64_t{0});
        if (v > 0 && v < kSize && e.data["progress"].value("files_done", uint64_t{1}) == 0) moving = true;
      }
    }
    CHECK(increasing);
    CHECK(states == std::vector<std::string>{"queued", "running", "succeeded"});
    CHECK(moving);  // progress events while the one file was on its way
    CHECK(SameContent(a.Path("big.bin"), b.Path("big.bin")));

    // From a number on: the events after it that are still kept, then the stream waits.
    const uint64_t first = events.front().id;
    std::string again = ReadStream(
        a.socket(), "/v1/events?since=" + std::to_string(first) + "&transfer=" + id.substr(0, 8),
        [](const std::string& t) { return t.find(R"("state":"succeeded")") != std::string::npos; }, 10s);
    auto replay = ParseEvents(again);
    REQUIRE(!replay.empty());
    CHECK(replay.front().id == first + 1);
    CHECK(replay.back().data["state"] == "succeeded");
    json bad = a.Get("/v1/events?since=yesterday");
    CHECK(bad["http_status"] == 400);
    json unknown = a.Get("/v1/events?transfer=ffff");
    CHECK(unknown["http_status"] == 404);
  }

  TEST_CASE(
      "pororoca wait follows a transfer to its end and exits as cp would, --timeout leaves it running") {
    TestFederation fed;
    DaemonPair p(fed, SlowSender());
    DaemonProcess& a = *p.a;
    DaemonProcess& b = *p.b;
    WriteRandomFile(a.Path("big.bin"), 128 * kMiB, 10);
    CliResult cp = Cli(a, {"cp", "-d", "--chunk", "1MiB", a.Path("big.bin"), "b:/big.bin"});
    REQUIRE(cp.exit_code == 0);
    const std::string id = Trim(cp.out);
    CliResult early = Cli(a, {"wait", "--timeout", "0.5", id});
    INFO(early.Describe());
    CHECK(early.exit_code == 7);
    CHECK(early.err.find("still running") != std::string::npos);
    CliResult waited = Cli(a, {"wait", "--json", id.substr(0, 10)});
    INFO(waited.Describe());
    CHECK(waited.exit_code == 0);
    CHECK(waited.Json()["state"] == "succeeded");
    CHECK(SameContent(a.Path("big.bin"), b.Path("big.bin")));
    // A transfer that fails: wait exits with its code (the source is missing at the peer: 4).
    CliResult pull = Cli(a, {"cp", "-d", "b:/no-such-file", a.Path("x.bin")});
    REQUIRE(pull.exit_code == 0);
    CliResult failed = Cli(a, {"wait", Trim(pull.out)});
    INFO(failed.Describe());
    CHECK(failed.exit_code == 4);
    CHECK(Cli(a, {"wait", "0123456789abcdef"}).exit_code == 4);  // unknown transfer
    CHECK(Cli(a, {"wait"}).exit_code == 2);
  }
}

}  // namespace
}  // namespace pororoca::test
