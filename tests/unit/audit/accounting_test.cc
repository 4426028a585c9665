#include "audit/accounting.h"

#include <doctest/doctest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "support/temp_dir.h"

namespace pororoca::audit {
namespace {

using Json = nlohmann::json;
using Key = Accounting::Key;

Accounting::Filter Days(const std::string& since, const std::string& until) {
  Accounting::Filter f;
  f.since = since;
  f.until = until;
  return f;
}
Accounting::Filter User(const std::string& user) {
  Accounting::Filter f;
  f.user = user;
  return f;
}
Accounting::Filter Institution(const std::string& institution) {
  Accounting::Filter f;
  f.institution = institution;
  return f;
}

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc | std::ios::binary);
  out << text;
}

// Three days, two pairs, two users.
void Fill(Accounting* a) {
  a->Add({"2026-11-22", "LNCC", "CENAPAD", "alice"}, 100, 1, 1);
  a->Add({"2026-11-23", "LNCC", "CENAPAD", "alice"}, 1000, 10, 1);
  a->Add({"2026-11-23", "LNCC", "CENAPAD", "alice"}, 24, 2, 1);
  a->Add({"2026-11-23", "CENAPAD", "LNCC", "bob"}, 5000, 3, 2);
  a->Add({"2026-11-24", "LNCC", "UFRJ", "bob"}, 7, 7, 7);
}

TEST_SUITE("audit.accounting") {
  TEST_CASE("Add accumulates per key and Query totals per pair, user and day") {
    Accounting a;
    Fill(&a);
    Json q = a.Query({});
    CHECK(q["total"] == Json({{"bytes", 6131}, {"files", 23}, {"transfers", 12}}));
    REQUIRE(q["rows"].size() == 4);
    CHECK(q["rows"][1] == Json({{"day", "2026-11-23"},
                                {"source", "CENAPAD"},
                                {"destination", "LNCC"},
                                {"user", "bob"},
                                {"bytes", 5000},
                                {"files", 3},
                                {"transfers", 2}}));
    CHECK(q["rows"][2]["bytes"] == 1024);
    CHECK(q["rows"][2]["transfers"] == 2);

    REQUIRE(q["by_pair"].size() == 3);
    CHECK(q["by_pair"][0] == Json({{"source", "CENAPAD"},
                                   {"destination", "LNCC"},
                                   {"bytes", 5000},
                                   {"files", 3},
                                   {"transfers", 2}}));
    CHECK(q["by_pair"][1]["source"] == "LNCC");
    CHECK(q["by_pair"][1]["destination"] == "CENAPAD");
    CHECK(q["by_pair"][1]["bytes"] == 1124);

    REQUIRE(q["by_user"].size() == 2);
    CHECK(q["by_user"][0] == Json({{"user", "alice"}, {"bytes", 1124}, {"files", 13}, {"transfers", 3}}));
    CHECK(q["by_user"][1]["bytes"] == 5007);

    REQUIRE(q["by_day"].size() == 3);
    CHECK(q["by_day"][1] == Json({{"day", "2026-11-23"}, {"bytes", 6024}, {"files", 15}, {"transfers", 4}}));
  }

  TEST_CASE("Query filters by day range, user and institution") {
    Accounting a;
    Fill(&a);
    SUBCASE("since and until are inclusive") {
      Json q = a.Query(Days("2026-11-23", "2026-11-23"));
      CHECK(q["total"]["bytes"] == 6024);
      CHECK(q["by_day"].size() == 1);
    }
    SUBCASE("since only") { CHECK(a.Query(Days("2026-11-24", ""))["total"]["bytes"] == 7); }
    SUBCASE("user") {
      Json q = a.Query(User("bob"));
      CHECK(q["total"]["bytes"] == 5007);
      CHECK(q["by_user"].size() == 1);
      CHECK(q["by_pair"].size() == 2);
    }
    SUBCASE("institution on either side") {
      CHECK(a.Query(Institution("UFRJ"))["total"]["bytes"] == 7);
      CHECK(a.Query(Institution("CENAPAD"))["total"]["bytes"] == 6124);
    }
    SUBCASE("nothing matches") {
      Json q = a.Query(User("carol"));
      CHECK(q["rows"].empty());
      CHECK(q["by_pair"].empty());
      CHECK(q["total"]["bytes"] == 0);
    }
  }

  TEST_CASE("Flush writes the file only when dirty, and Open reloads it") {
    test::TempDir t;
    const std::string path = t / "accounting.json";
    auto a = Accounting::Open(path);
    REQUIRE(a.ok());
    CHECK_FALSE((*a)->dirty());
    REQUIRE((*a)->Flush().ok());
    CHECK_FALSE(std::filesystem::exists(path));  // clean: nothing written

    Fill(a->get());
    CHECK((*a)->dirty());
    REQUIRE((*a)->Flush().ok());
    CHECK_FALSE((*a)->dirty());
    CHECK_FALSE(std::filesystem::exists(path + ".tmp"));
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0640);
    auto mtime = std::filesystem::last_write_time(path);
    std::filesystem::last_write_time(path, mtime - std::chrono::hours(1));
    REQUIRE((*a)->Flush().ok());  // clean again: the file is not rewritten
    CHECK(std::filesystem::last_write_time(path) == mtime - std::chrono::hours(1));

    auto b = Accounting::Open(path);
    REQUIRE(b.ok());
    CHECK((*b)->Rows() == (*a)->Rows());
    CHECK((*b)->Query({}) == (*a)->Query({}));
    CHECK_FALSE((*b)->dirty());

    (*b)->Add({"2026-11-25", "A", "B", ""}, 1, 1, 1);
    REQUIRE((*b)->Flush().ok());
    auto c = Accounting::Open(path);
    REQUIRE(c.ok());
    CHECK((*c)->Query({})["total"]["bytes"] == 6132);
  }

  TEST_CASE("Flush replaces the file atomically: a leftover temporary file changes nothing") {
    test::TempDir t;
    const std::string path = t / "accounting.json";
    auto a = Accounting::Open(path);
    REQUIRE(a.ok());
    (*a)->Add({"2026-11-23", "A", "B", "u"}, 10, 1, 1);
    REQUIRE((*a)->Flush().ok());
    // A crash between writing the temporary file and the rename leaves the old file intact.
    WriteText(path + ".tmp", "{\"rows\":[{\"day\":");
    auto b = Accounting::Open(path);
    REQUIRE(b.ok());
    CHECK((*b)->Query({})["total"]["bytes"] == 10);
    (*b)->Add({"2026-11-23", "A", "B", "u"}, 5, 0, 0);
    REQUIRE((*b)->Flush().ok());
    auto c = Accounting::Open(path);
    REQUIRE(c.ok());
    CHECK((*c)->Query({})["total"]["bytes"] == 15);
  }

  TEST_CASE("a malformed file is DataLoss naming the file and the row") {
    test::TempDir t;
    const std::string path = t / "accounting.json";
    SUBCASE("not JSON") {
      WriteText(path, "{\"rows\": [");
      auto a = Accounting::Open(path);
      REQUIRE_FALSE(a.ok());
      CHECK(a.error().code() == Code::kDataLoss);
      CHECK(std::string(a.error().message()).find(path) != std::string::npos);
    }
    SUBCASE("a bad row") {
      WriteText(path, R"({"rows":[{"day":"2026-11-23","source":"A","destination":"B","user":"",
                          "bytes":1,"files":1,"transfers":1},
                         {"day":"2026-13-01","source":"A","destination":"B","user":"",
                          "bytes":1,"files":1,"transfers":1}]})");
      auto a = Accounting::Open(path);
      REQUIRE_FALSE(a.ok());
      CHECK(a.error().code() == Code::kDataLoss);
      const std::string msg(a.error().message());
      CHECK(msg.find(path) != std::string::npos);
      CHECK(msg.find("rows[1]") != std::string::npos);
      CHECK(msg.find("day") != std::string::npos);
    }
  }

  TEST_CASE(
      "Report holds every row and the endpoint, and merging it twice into a fresh table is "
      "idempotent per report") {
    Accounting a;
    Fill(&a);
    Json r = a.Report("lncc-dtn1");
    CHECK(r["endpoint"] == "lncc-dtn1");
    CHECK(r["generated"].is_string());
    CHECK(r["rows"].size() == 4);

    // The control plane keeps the latest report per endpoint and merges the latest ones.
    Accounting merged;
    REQUIRE(merged.Merge(r).ok());
    CHECK(merged.Query({}) == a.Query({}));
  }

  TEST_CASE("Merge checks the whole body first and changes nothing when a row is bad") {
    Accounting a;
    a.Add({"2026-11-23", "A", "B", "u"}, 1, 1, 1);
    Json body = {{"rows", Json::array({
                              {{"day", "2026-11-23"},
                               {"source", "A"},
                               {"destination", "B"},
                               {"user", "u"},
                               {"bytes", 5},
                               {"files", 1},
                               {"transfers", 1}},
                              {{"day", "2026-11-23"},
                               {"source", "A"},
                               {"destination", "B"},
                               {"user", "u"},
                               {"bytes", -5},
                               {"files", 1},
                               {"transfers", 1}},
                          })}};
    Status s = a.Merge(body);
    CHECK(s.code() == Code::kInvalidArgument);
    CHECK_MESSAGE(std::string(s.message()).find("rows[1]: bytes") != std::string::npos, s.ToString());
    CHECK(a.Query({})["total"]["bytes"] == 1);
    CHECK(a.Merge(Json::array()).code() == Code::kInvalidArgument);
    CHECK(a.Merge({{"rows", 3}}).code() == Code::kInvalidArgument);
  }

  TEST_CASE("counters saturate instead of wrapping") {
    Accounting a;
    a.Add({"2026-11-23", "A", "B", "u"}, UINT64_MAX - 1, 0, 0);
    a.Add({"2026-11-23", "A", "B", "u"}, 5, 0, 0);
    CHECK(a.Query({})["total"]["bytes"] == UINT64_MAX);
  }

  TEST_CASE("concurrent Add and Flush lose nothing") {
    test::TempDir t;
    const std::string path = t / "accounting.json";
    auto a = Accounting::Open(path);
    REQUIRE(a.ok());
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i) {
      threads.emplace_back([&, i] {
        for (int k = 0; k < 200; ++k) {
          (*a)->Add({"2026-11-23", "A", "B", "user" + std::to_string(i)}, 1, 1, 0);
          if (k % 50 == 0) CHECK((*a)->Flush().ok());
        }
      });
    }
    for (auto& th : threads) th.join();
    REQUIRE((*a)->Flush().ok());
    auto b = Accounting::Open(path);
    REQUIRE(b.ok());
    CHECK((*b)->Query({})["total"]["bytes"] == 800);
    CHECK((*b)->Query({})["by_user"].size() == 4);
  }

  TEST_CASE("ValidDay and UtcDay") {
    CHECK(Accounting::ValidDay("2026-11-23"));
    CHECK_FALSE(Accounting::ValidDay("2026-11-3"));
    CHECK_FALSE(Accounting::ValidDay("2026-00-10"));
    CHECK_FALSE(Accounting::ValidDay("2026-02-30"));  // a day the month does not have
    CHECK_FALSE(Accounting::ValidDay("2026-02-29"));
    CHECK(Accounting::ValidDay("2024-02-29"));  // a leap year
    CHECK_FALSE(Accounting::ValidDay("2026/11/23"));
    CHECK_FALSE(Accounting::ValidDay(""));
    using namespace std::chrono;
    CHECK(UtcDay(system_clock::time_point{seconds(1795428000)}) == "2026-11-23");
  }
}

}  // namespace
}  // namespace pororoca::audit
