#include "daemon/api_routes.h"

#include <doctest/doctest.h>

#include <cctype>
#include <fstream>
#include <set>

#include "support/temp_dir.h"

namespace pororoca::daemon {
namespace {

using nlohmann::json;

// The routes over a real export root and transfer manager; no federation (the requests here are
// refused before it is consulted, or do not consult it).
struct Fixture {
  test::TempDir dir;
  Config config;
  std::unique_ptr<engine::ExportRoot> root;
  WorkerSet workers;
  std::unique_ptr<TransferManager> manager;
  std::unique_ptr<ApiRoutes> routes;

  Fixture() {
    config.endpoint_name = "lncc-dtn1";
    config.max_streams = 16;
    auto r = engine::ExportRoot::Create(dir.path());
    REQUIRE(r.ok());
    root = std::make_unique<engine::ExportRoot>(std::move(*r));
    TransferManager::Options o;
    o.db_path = dir / "queue.db";
    manager = std::make_unique<TransferManager>(
        o, [](Transfer&) -> Result<json> { return json::object(); }, &workers);
    REQUIRE(manager->Open().ok());
    routes =
        std::make_unique<ApiRoutes>(ApiRoutes::Deps{&config, root.get(), 4u << 20, nullptr, manager.get()});
  }

  api::HttpResponse Submit(const std::string& body) {
    api::HttpRequest req;
    req.method = "POST";
    req.path = "/v1/transfers";
    req.body = body;
    return routes->Submit(req, routes->LocalCaller(req));
  }
};

json BodyOf(const api::HttpResponse& r) { return json::parse(r.body, nullptr, false); }

TEST_CASE_FIXTURE(Fixture, "a submitted body that is not a JSON object is a 400 that says so") {
  auto r = Submit("{not json");
  CHECK(r.status == 400);
  CHECK(r.body.find("not valid JSON") != std::string::npos);
  r = Submit("[1,2]");
  CHECK(r.status == 400);
  CHECK(r.body.find("JSON object") != std::string::npos);
}

TEST_CASE_FIXTURE(Fixture, "a submitted field of the wrong type is a 400 naming the field") {
  for (const auto& c : std::vector<std::pair<std::string, std::string>>{
           {R"({"source": 5, "destination": "peer:/x"})", "source"},
           {R"({"source": "/a", "destination": ["peer:/x"]})", "destination"},
           {R"({"source": "/a", "destination": "peer:/x", "recursive": "yes"})", "recursive"},
           {R"({"source": "/a", "destination": "peer:/x", "streams": -1})", "streams"},
           {R"({"source": "/a", "destination": "peer:/x", "streams": 17})", "streams"},
           {R"({"source": "/a", "destination": "peer:/x", "sync": 1})", "sync"},
           {R"({"source": "/a", "destination": "peer:/x", "existing": "replace"})", "existing"},
           {R"({"source": "/a", "destination": "peer:/x", "chunk_size": true})", "chunk_size"},
           {R"({"source": "/a", "destination": "peer:/x", "priority": 9})", "priority must be 1"},
           {R"({"source": "/a", "destination": "peer:/x", "priority": 0})", "priority must be 1"},
           {R"({"source": "/a", "destination": "peer:/x", "priority": "high"})", "priority"},
           {R"({"source": "/a", "destination": "peer:/x", "submission_id": "a b"})", "submission_id"},
           {R"({"source": "/a", "destination": "peer:/x", "submission_id": 7})", "submission_id"},
       }) {
    const std::string& body = c.first;
    CAPTURE(body);
    auto r = Submit(body);
    CHECK(r.status == 400);
    CHECK(r.body.find(c.second) != std::string::npos);
  }
}

TEST_CASE_FIXTURE(Fixture, "a submission needs exactly one remote end") {
  auto r = Submit(R"({"source": "/a", "destination": "/b"})");
  CHECK(r.status == 400);
  CHECK(r.body.find("exactly one") != std::string::npos);
  r = Submit(R"({"source": "a:/x", "destination": "b:/y"})");
  CHECK(r.status == 400);
}

TEST_CASE_FIXTURE(Fixture, "get, cancel and list answer for known transfers and 404 for others") {
  api::HttpRequest req;
  req.peer.uid = ::geteuid();  // the daemon's own user: sees every transfer
  req.params["id"] = "nope";
  CHECK(routes->Get(req, routes->LocalCaller(req)).status == 404);
  CHECK(routes->Cancel(req, routes->LocalCaller(req)).status == 404);
  auto t = std::make_shared<Transfer>();
  t->id = "0123456789abcdef0123456789abcdef";
  t->local_path = dir / "a";
  t->remote.endpoint = "peer";
  REQUIRE(manager->Submit(t).has_value());
  req.params["id"] = t->id;
  req.query["wait"] = "5";
  auto got = routes->Get(req, routes->LocalCaller(req));
  REQUIRE(got.status == 200);
  CHECK(BodyOf(got)["state"] == "succeeded");  // the long poll answered once it ended
  req.query["wait"] = "soon";
  CHECK(routes->Get(req, routes->LocalCaller(req)).status == 400);
  auto list = BodyOf(routes->List(req, routes->LocalCaller(req)));
  REQUIRE(list["transfers"].size() == 1);
  CHECK(list["transfers"][0]["id"] == t->id);
  workers.JoinAll();
}

TEST_CASE_FIXTURE(Fixture, "a user sees and cancels only their own transfers, an operator all") {
  config.users.push_back(UserConfig{1002, "ops@lncc", {}, true});
  config.users.push_back(UserConfig{1003, "carol@lncc", {}, false});
  auto t = std::make_shared<Transfer>();
  t->id = "aaaa0000000000000000000000000001";
  t->uid = 1000;
  t->local_path = dir / "a";
  t->remote.endpoint = "peer";
  REQUIRE(manager->Submit(t).has_value());
  auto as = [](uid_t uid) {
    api::HttpRequest r;
    r.peer.uid = uid;
    return r;
  };
  for (uid_t other : {1001u, 1003u}) {
    CAPTURE(other);
    api::HttpRequest req = as(other);
    CHECK(BodyOf(routes->List(req, routes->LocalCaller(req)))["transfers"].empty());
    req.params["id"] = t->id;
    CHECK(routes->Get(req, routes->LocalCaller(req)).status == 404);
    req.params["id"] = "aaaa";  // nor by a prefix
    CHECK(routes->Get(req, routes->LocalCaller(req)).status == 404);
    CHECK(routes->Cancel(req, routes->LocalCaller(req)).status == 404);
  }
  for (uid_t allowed : {1000u, 1002u, 0u}) {
    CAPTURE(allowed);
    api::HttpRequest req = as(allowed);
    CHECK(BodyOf(routes->List(req, routes->LocalCaller(req)))["transfers"].size() == 1);
    req.params["id"] = "aaaa";
    CHECK(routes->Get(req, routes->LocalCaller(req)).status == 200);
  }
  workers.JoinAll();
}

TEST_CASE_FIXTURE(Fixture,
                  "the event stream carries the caller's own transfers' changes, from a given number") {
  auto t = std::make_shared<Transfer>();
  t->id = "bbbb0000000000000000000000000001";
  t->uid = 1000;
  t->local_path = dir / "a";
  t->remote.endpoint = "peer";
  REQUIRE(manager->Submit(t).has_value());
  manager->WaitEnded(*t, std::chrono::seconds(10));
  // Reads the stream until the transfer's end is in it, or `empty_reads` reads brought nothing.
  auto collect = [&](uid_t uid, const std::string& since, int empty_reads) {
    api::HttpRequest req;
    req.peer.uid = uid;
    req.query["since"] = since;
    api::HttpResponse r = routes->Events(req, routes->LocalCaller(req));
    REQUIRE(r.stream);
    CHECK(r.content_type == "text/event-stream");
    std::string out;
    int empty = 0;
    r.stream([&](std::string_view s) {
      if (s.empty()) return ++empty < empty_reads;
      out += s;
      return out.find(R"("state":"succeeded")") == std::string::npos;
    });
    return out;
  };
  const std::string mine = collect(1000, "0", 3);
  CHECK(mine.find("id: 1\nevent: transfer\ndata: {") != std::string::npos);
  const size_t queued = mine.find(R"("state":"queued")"), running = mine.find(R"("state":"running")"),
               done = mine.find(R"("state":"succeeded")");
  CHECK(queued != std::string::npos);
  CHECK(running != std::string::npos);
  CHECK(done != std::string::npos);
  CHECK(queued < running);
  CHECK(running < done);
  CHECK(mine.find(t->id) != std::string::npos);
  // Another user sees none of it; an operator all of it.
  CHECK(collect(1001, "0", 2).find("event: transfer") == std::string::npos);
  CHECK(collect(0, "0", 3).find(R"("state":"succeeded")") != std::string::npos);
  // From a later number on: not the first event.
  CHECK(collect(1000, "1", 3).find("id: 1\n") == std::string::npos);
  api::HttpRequest bad;
  bad.query["since"] = "soon";
  CHECK(routes->Events(bad, routes->LocalCaller(bad)).status == 400);
  bad.query["since"] = "-1";
  CHECK(routes->Events(bad, routes->LocalCaller(bad)).status == 400);
  workers.JoinAll();
}

TEST_CASE_FIXTURE(Fixture, "healthz names the endpoint and the export root") {
  auto h = BodyOf(routes->Health());
  CHECK(h["status"] == "ok");
  CHECK(h["endpoint"] == "lncc-dtn1");
  CHECK(h["export_root"] == root->path());
}

TEST_CASE("HTTP statuses follow the error codes") {
  CHECK(HttpStatusFor(Code::kInvalidArgument) == 400);
  CHECK(HttpStatusFor(Code::kPermissionDenied) == 403);
  CHECK(HttpStatusFor(Code::kNotFound) == 404);
  CHECK(HttpStatusFor(Code::kUnavailable) == 503);
  CHECK(HttpStatusFor(Code::kInternal) == 500);
  auto r = ErrorResponse(Status::NotFound("no such thing"));
  CHECK(r.status == 404);
  CHECK(r.body.find("no such thing") != std::string::npos);
}

TEST_CASE_FIXTURE(Fixture, "an HTTPS request without a bearer token is a 401 that says what to send") {
  api::HttpRequest req;
  req.method = "GET";
  req.path = "/v1/transfers";
  req.tls = true;
  req.remote_address = "127.0.0.1:40000";
  for (const char* auth : {"", "Basic dXNlcjpwdw==", "Bearer "}) {
    CAPTURE(auth);
    req.headers.clear();
    if (*auth) req.headers["authorization"] = auth;
    api::HttpResponse refusal;
    CHECK_FALSE(routes->Identify(req, ApiRoutes::Need::kRead, &refusal).has_value());
    CHECK(refusal.status == 401);
    CHECK(BodyOf(refusal)["error"]["message"].get<std::string>().find("Authorization: Bearer") !=
          std::string::npos);
    bool challenge = false;
    for (const auto& [k, v] : refusal.headers)
      challenge |= k == "WWW-Authenticate" && v.rfind("Bearer", 0) == 0;
    CHECK(challenge);
  }
  // The unix socket's callers are who SO_PEERCRED says, without a token.
  req.tls = false;
  req.headers.clear();
  req.peer.uid = 1000;
  api::HttpResponse refusal;
  auto local = routes->Identify(req, ApiRoutes::Need::kSubmit, &refusal);
  REQUIRE(local.has_value());
  CHECK_FALSE(local->remote);
  CHECK(local->uid == 1000);
}

TEST_CASE_FIXTURE(Fixture, "an HTTPS caller names both ends as endpoints, and one of them is this daemon") {
  ApiRoutes::Caller c;
  c.remote = true;
  c.identity = "alice@lncc";
  c.claims.subject = "alice@lncc";
  c.claims.scopes = {"transfer.submit", "storage.read:/"};
  api::HttpRequest req;
  req.method = "POST";
  req.path = "/v1/transfers";
  req.tls = true;
  req.body = R"({"source": ")" + (dir / "a") + R"(", "destination": "peer:/x"})";
  auto r = routes->Submit(req, c);
  CHECK(r.status == 400);
  CHECK(r.body.find("both ends are ENDPOINT:/path") != std::string::npos);
  req.body = R"({"source": "cenapad-dtn1:/a", "destination": "ufrj-dtn1:/b"})";
  r = routes->Submit(req, c);
  CHECK(r.status == 400);
  CHECK(r.body.find("the API of cenapad-dtn1 or ufrj-dtn1") != std::string::npos);
  CHECK(manager->List().empty());
}

TEST_CASE("a remote caller sees transfers by identity, a local one by uid, an operator all") {
  ApiRoutes::Caller remote;
  remote.remote = true;
  remote.identity = "alice@lncc";
  CHECK(remote.Sees(-1, "alice@lncc"));
  CHECK(remote.Sees(1000, "alice@lncc"));
  CHECK_FALSE(remote.Sees(-1, "bob@lncc"));
  CHECK_FALSE(remote.Sees(1000, ""));
  ApiRoutes::Caller nobody;
  nobody.remote = true;  // an empty identity sees nothing, not the transfers without one
  CHECK_FALSE(nobody.Sees(-1, ""));
  ApiRoutes::Caller local;
  local.uid = 1000;
  local.identity = "alice@lncc";
  CHECK(local.Sees(1000, ""));
  CHECK_FALSE(local.Sees(-1, "alice@lncc"));
  CHECK_FALSE(local.Sees(1001, "alice@lncc"));
  ApiRoutes::Caller op;
  op.remote = true;
  op.sees_all = true;
  CHECK(op.Sees(-1, "bob@lncc"));
}

TEST_CASE_FIXTURE(Fixture,
                  "every route the server has is in docs/api/openapi.yaml, and every route there exists") {
  auto server = api::HttpServer::Listen(dir / "api.sock", 0600);
  REQUIRE(server.has_value());
  routes->RegisterOn(**server);
  std::set<std::string> served;
  for (const auto& [method, path] : (*server)->routes()) served.insert(method + " " + path);
  // The description's operations: "  /v1/...:" opens a path under "paths:", "    get:" (etc.)
  // names an operation of it; the file keeps that layout (yaml.safe_load reads it in the
  // integration test that sends every operation to a daemon).
  std::ifstream in(std::string(PORO_SOURCE_DIR) + "/docs/api/openapi.yaml");
  REQUIRE(in.good());
  std::set<std::string> described;
  std::string line, path;
  bool in_paths = false;
  while (std::getline(in, line)) {
    if (line == "paths:") {
      in_paths = true;
      continue;
    }
    if (!in_paths) continue;
    if (!line.empty() && line[0] != ' ') break;  // the next top-level key
    if (line.rfind("  /", 0) == 0 && line.back() == ':') {
      path = line.substr(2, line.size() - 3);
      continue;
    }
    for (const char* m : {"get", "post", "put", "delete", "patch"}) {
      if (line == std::string("    ") + m + ":") {
        std::string upper = m;
        for (char& ch : upper) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
        described.insert(upper + " " + path);
      }
    }
  }
  CHECK(described.size() >= 19);
  for (const auto& r : served) CHECK_MESSAGE(described.count(r) == 1, "not described: " << r);
  for (const auto& r : described) CHECK_MESSAGE(served.count(r) == 1, "described but not served: " << r);
}

}  // namespace
}  // namespace pororoca::daemon
