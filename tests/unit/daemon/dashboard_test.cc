#include "daemon/dashboard.h"

#include <doctest/doctest.h>

#include <regex>
#include <set>
#include <string>

namespace pororoca::daemon {
namespace {

std::string Header(const api::HttpResponse& r, const std::string& name) {
  for (const auto& [k, v] : r.headers) {
    if (k == name) return v;
  }
  return "";
}

TEST_CASE("every dashboard file is served with its type and the security and cache headers") {
  REQUIRE(DashboardFiles().size() >= 4);
  for (const DashboardFile& f : DashboardFiles()) {
    CAPTURE(f.name);
    auto r = DashboardResponse(api::HttpRequest{}, f.name);
    CHECK(r.status == 200);
    CHECK(r.body == f.body);
    CHECK(!r.body.empty());
    CHECK(r.content_type == f.content_type);
    CHECK(Header(r, "Content-Security-Policy").rfind("default-src 'self'", 0) == 0);
    CHECK(Header(r, "X-Content-Type-Options") == "nosniff");
    CHECK(Header(r, "Referrer-Policy") == "no-referrer");
    CHECK(Header(r, "Cache-Control") == "no-cache");
    CHECK(Header(r, "ETag").size() == 18);
  }
  auto index = DashboardResponse(api::HttpRequest{}, "");
  CHECK(index.content_type == "text/html; charset=utf-8");
  CHECK(index.body.find("<title>pororoca dashboard</title>") != std::string::npos);
}

TEST_CASE("the page names only files the daemon has, and has no inline script or other origin") {
  const std::string page(DashboardResponse(api::HttpRequest{}, "").body);
  std::set<std::string> have;
  for (const DashboardFile& f : DashboardFiles()) have.insert(std::string(f.name));
  const std::regex ref(R"((src|href)="([^"]*)\")");
  int refs = 0;
  for (auto it = std::sregex_iterator(page.begin(), page.end(), ref); it != std::sregex_iterator(); ++it) {
    const std::string target = (*it)[2];
    CAPTURE(target);
    REQUIRE(target.rfind("/dashboard/", 0) == 0);
    CHECK(have.count(target.substr(11)) == 1);
    ++refs;
  }
  CHECK(refs == 3);  // the icon, the style sheet, the script
  CHECK(page.find("<script>") == std::string::npos);
  CHECK(page.find(" style=") == std::string::npos);
  CHECK(page.find("http") == std::string::npos);
}

TEST_CASE("If-None-Match with the current ETag is a 304 without a body, an unknown file is a 404") {
  auto first = DashboardResponse(api::HttpRequest{}, "app.js");
  api::HttpRequest again;
  again.headers["if-none-match"] = Header(first, "ETag");
  auto r = DashboardResponse(again, "app.js");
  CHECK(r.status == 304);
  CHECK(r.body.empty());
  CHECK(Header(r, "ETag") == Header(first, "ETag"));
  again.headers["if-none-match"] = "\"0000000000000000\"";
  CHECK(DashboardResponse(again, "app.js").status == 200);
  auto missing = DashboardResponse(api::HttpRequest{}, "../CMakeLists.txt");
  CHECK(missing.status == 404);
  CHECK(Header(missing, "X-Content-Type-Options") == "nosniff");
}

}  // namespace
}  // namespace pororoca::daemon
