#include "audit/audit_log.h"

#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/temp_dir.h"

namespace pororoca::audit {
namespace {

using Json = nlohmann::json;

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

void AppendRaw(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::app | std::ios::binary);
  out << bytes;
}

TEST_SUITE("audit.audit_log") {
  TEST_CASE("records are appended one a line with time first and read back in order") {
    test::TempDir t;
    const std::string path = t / "audit.log";
    auto log = AuditLog::Open(path);
    REQUIRE(log.ok());
    REQUIRE(
        (*log)->Append({{"event", "handshake"}, {"peer", "cenapad-dtn1"}, {"decision", "accepted"}}).ok());
    REQUIRE(
        (*log)
            ->Append({{"event", "transfer"}, {"decision", "denied"}, {"rule", "default-deny"}, {"bytes", 0}})
            .ok());
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777 & ~0640) == 0);  // 0640 less the umask

    auto lines = Lines(Slurp(path));
    REQUIRE(lines.size() == 2);
    CHECK(lines[0].rfind("{\"time\":\"", 0) == 0);
    CHECK(lines[1].rfind("{\"time\":\"", 0) == 0);

    auto all = AuditLog::ReadAll(path);
    REQUIRE(all.ok());
    REQUIRE(all->size() == 2);
    CHECK((*all)[0]["event"] == "handshake");
    CHECK((*all)[0]["peer"] == "cenapad-dtn1");
    CHECK((*all)[1]["rule"] == "default-deny");
    const std::string time = (*all)[0]["time"];
    // 2026-11-23T10:00:00.123Z
    REQUIRE(time.size() == 24);
    CHECK(time[4] == '-');
    CHECK(time[10] == 'T');
    CHECK(time[19] == '.');
    CHECK(time[23] == 'Z');
  }

  TEST_CASE("a record's own time is kept and still written first") {
    test::TempDir t;
    auto log = AuditLog::Open(t / "a.log");
    REQUIRE(log.ok());
    REQUIRE((*log)->Append({{"event", "manifest"}, {"time", "2026-11-23T10:00:00.123Z"}}).ok());
    CHECK(Slurp(t / "a.log") == "{\"time\":\"2026-11-23T10:00:00.123Z\",\"event\":\"manifest\"}\n");
  }

  TEST_CASE("UtcTimestamp formats UTC with milliseconds") {
    using namespace std::chrono;
    system_clock::time_point tp{milliseconds(1795428000123)};  // 2026-11-23T10:00:00.123Z
    CHECK(UtcTimestamp(tp) == "2026-11-23T10:00:00.123Z");
  }

  TEST_CASE("a record that is not an object is refused") {
    test::TempDir t;
    auto log = AuditLog::Open(t / "a.log");
    REQUIRE(log.ok());
    Status s = (*log)->Append(Json::array({1, 2}));
    CHECK(s.code() == Code::kInvalidArgument);
    CHECK(Slurp(t / "a.log").empty());
  }

  TEST_CASE("Open names the file when its directory does not exist") {
    test::TempDir t;
    auto log = AuditLog::Open(t / "missing/audit.log");
    REQUIRE_FALSE(log.ok());
    CHECK(log.error().code() == Code::kNotFound);
    CHECK(std::string(log.error().message()).find(t / "missing/audit.log") != std::string::npos);
  }

  TEST_CASE("threads appending at once leave only whole, valid lines") {
    test::TempDir t;
    const std::string path = t / "audit.log";
    auto log = AuditLog::Open(path);
    REQUIRE(log.ok());
    constexpr int kThreads = 8, kEach = 50;
    std::vector<std::thread> threads;
    std::atomic<int> failures{0};
    for (int i = 0; i < kThreads; ++i) {
      threads.emplace_back([&, i] {
        for (int k = 0; k < kEach; ++k) {
          Json r = {
              {"event", "transfer"}, {"thread", i}, {"seq", k}, {"reason", std::string(200 + k * 37, 'x')}};
          if (!(*log)->Append(std::move(r)).ok()) ++failures;
        }
      });
    }
    for (auto& th : threads) th.join();
    CHECK(failures == 0);
    auto lines = Lines(Slurp(path));
    REQUIRE(lines.size() == kThreads * kEach);
    std::vector<int> next(kThreads, 0);
    for (const auto& l : lines) {
      Json j = Json::parse(l, nullptr, false);
      REQUIRE(j.is_object());
      int th = j["thread"];
      // Each thread's records are in its own order.
      CHECK(j["seq"] == next[th]);
      next[th] = int(j["seq"]) + 1;
    }
  }

  TEST_CASE("a torn last line is skipped by ReadAll and cut off by the next Open") {
    test::TempDir t;
    const std::string path = t / "audit.log";
    {
      auto log = AuditLog::Open(path);
      REQUIRE(log.ok());
      REQUIRE((*log)->Append({{"event", "handshake"}}).ok());
    }
    AppendRaw(path, "{\"time\":\"2026-11-23T10:00:00.123Z\",\"event\":\"tra");
    auto all = AuditLog::ReadAll(path);
    REQUIRE(all.ok());
    REQUIRE(all->size() == 1);

    auto log = AuditLog::Open(path);
    REQUIRE(log.ok());
    REQUIRE((*log)->Append({{"event", "transfer_end"}}).ok());
    all = AuditLog::ReadAll(path);
    REQUIRE(all.ok());
    REQUIRE(all->size() == 2);
    CHECK((*all)[0]["event"] == "handshake");
    CHECK((*all)[1]["event"] == "transfer_end");
  }

  TEST_CASE("a file that is one torn line is emptied by Open") {
    test::TempDir t;
    const std::string path = t / "audit.log";
    AppendRaw(path, "{\"time\":");
    auto log = AuditLog::Open(path);
    REQUIRE(log.ok());
    CHECK(Slurp(path).empty());
  }

  TEST_CASE("a corrupt line in the middle is an error naming file and line") {
    test::TempDir t;
    const std::string path = t / "audit.log";
    AppendRaw(path, "{\"event\":\"a\"}\nnot json\n{\"event\":\"b\"}\n");
    auto all = AuditLog::ReadAll(path);
    REQUIRE_FALSE(all.ok());
    const std::string msg(all.error().message());
    CHECK(msg.find(path) != std::string::npos);
    CHECK(msg.find("line 2") != std::string::npos);
  }

  TEST_CASE("a record over 64 KiB is written as one line with its long strings cut") {
    test::TempDir t;
    const std::string path = t / "audit.log";
    auto log = AuditLog::Open(path);
    REQUIRE(log.ok());
    std::string big(200 * 1024, 'y');
    big += "\xc3\xa9";  // a two-byte UTF-8 sequence at the end
    REQUIRE((*log)->Append({{"event", "transfer"}, {"reason", big}, {"source", "a:/x"}}).ok());

    SUBCASE("a huge array of short strings") {
      Json many = Json::array();
      for (int i = 0; i < 20000; ++i) many.push_back("file-" + std::to_string(i));
      REQUIRE((*log)->Append({{"event", "transfer"}, {"files_list", many}}).ok());
    }
    SUBCASE("a huge number of keys") {
      Json keys = Json::object();
      for (int i = 0; i < 20000; ++i) keys["k" + std::to_string(i)] = i;
      REQUIRE((*log)->Append(keys).ok());
    }

    const std::string text = Slurp(path);
    auto lines = Lines(text);
    REQUIRE(lines.size() == 2);
    for (const auto& l : lines) {
      CHECK(l.size() + 1 <= AuditLog::kMaxRecordBytes);
      Json j = Json::parse(l, nullptr, false);
      REQUIRE(j.is_object());
      CHECK(j["truncated"] == true);
    }
    Json first = Json::parse(lines[0]);
    CHECK(first["event"] == "transfer");
    CHECK(first["source"] == "a:/x");
    CHECK(first["reason"].get<std::string>().rfind("yyyy", 0) == 0);
  }
}

}  // namespace
}  // namespace pororoca::audit
