// The control-plane client against the real service (daemon/fedd), in process on 127.0.0.1 with an
// ephemeral port and a test federation made by pki. Raw requests go through transport::TlsStream,
// code that shares nothing with httplib.
#include <doctest/doctest.h>
#include <signal.h>
#include <strings.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <span>
#include <sstream>
#include <string>
#include <thread>

#include "audit/accounting.h"
#include "base/log.h"
#include "controlplane/client.h"
#include "daemon/fedd/server.h"
#include "pki/pki.h"
#include "support/temp_dir.h"
#include "transport/tcp.h"
#include "transport/tls.h"

namespace pororoca::fedd {
namespace {

using Json = nlohmann::json;
using controlplane::ClientConfig;

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc | std::ios::binary);
  out << text;
}

// Replaces the file the way an operator should: write a new file, rename it over the old one.
void Publish(const std::string& path, const std::string& text) {
  WriteText(path + ".new", text);
  std::filesystem::rename(path + ".new", path);
}

const std::string kManifest = R"({"manifest":{"serial":1,"institutions":["LNCC","CENAPAD"]},)"
                              R"("signature":"c2lnbmF0dXJl"}   )"  // trailing spaces: served byte-exact
                              "\n";

// A federation CA with certificates for the service ("fedd") and two endpoints, a manifest file,
// an accounting directory, and the service running on an ephemeral loopback port.
class Fixture {
 public:
  Fixture() {
    ::signal(SIGPIPE, SIG_IGN);
    REQUIRE(pki::CreateAuthority(dir_ / "ca", "federation", 10).ok());
    Issue("fedd");
    Issue("lncc-dtn1");
    Issue("cenapad-dtn1");
    WriteText(dir_ / "manifest.json", kManifest);
    std::filesystem::create_directory(dir_ / "accounting");
    config_.source_file = dir_ / "fedd.toml";
    config_.listen = "127.0.0.1:0";
    config_.tls_ca = ca();
    config_.tls_cert = dir_ / "fedd.crt";
    config_.tls_key = dir_ / "fedd.key";
    config_.manifest_file = dir_ / "manifest.json";
    config_.accounting_dir = dir_ / "accounting";
  }

  void Start() {
    auto s = Service::Create(config_);
    REQUIRE_MESSAGE(s.ok(), s.status().ToString());
    service_ = std::move(*s);
    Status st = service_->Start();
    REQUIRE_MESSAGE(st.ok(), st.ToString());
    REQUIRE(service_->port() != 0);
  }

  void Issue(const std::string& name) {
    REQUIRE(pki::IssueEndpoint(dir_ / "ca", name, dir_ / (name + ".key"), dir_ / (name + ".crt"), 10).ok());
  }

  ClientConfig Client(const std::string& endpoint) const {
    ClientConfig c;
    c.url = "https://127.0.0.1:" + std::to_string(service_->port());
    c.ca_file = ca();
    c.cert_file = dir_ / (endpoint + ".crt");
    c.key_file = dir_ / (endpoint + ".key");
    c.server_name = "fedd";
    c.timeout = std::chrono::milliseconds(5000);
    return c;
  }

  // One raw HTTP/1.1 request over TLS with `endpoint`'s certificate; the whole response.
  Result<std::string> Raw(const std::string& endpoint, const std::string& request) const {
    transport::TlsConfig tc;
    tc.ca_file = ca();
    tc.cert_file = endpoint.empty() ? "" : dir_ / (endpoint + ".crt");
    tc.key_file = endpoint.empty() ? "" : dir_ / (endpoint + ".key");
    PORO_ASSIGN_OR_RETURN(auto ctx, transport::TlsContext::Create(tc));
    PORO_ASSIGN_OR_RETURN(UniqueFd fd,
                          transport::TcpConnect("127.0.0.1", service_->port(), std::chrono::seconds(5)));
    transport::TransportOptions opts;
    opts.idle_timeout = std::chrono::milliseconds(5000);
    PORO_ASSIGN_OR_RETURN(auto tls, transport::TlsStream::Connect(*ctx, std::move(fd), opts));
    PORO_RETURN_IF_ERROR(tls->WriteAll(std::as_bytes(std::span(request)), opts));
    std::string out;
    char buf[16384];
    for (;;) {
      auto n = tls->ReadSome(std::as_writable_bytes(std::span(buf)), opts);
      if (!n.ok() || *n == 0) break;
      out.append(buf, *n);
    }
    return out;
  }

  std::string ca() const { return dir_ / "ca/ca.crt"; }
  const test::TempDir& dir() const { return dir_; }
  Config& config() { return config_; }

 private:
  test::TempDir dir_;
  Config config_;
  std::unique_ptr<Service> service_;
};

std::string Get(const std::string& path, const std::string& extra_headers = "") {
  return "GET " + path + " HTTP/1.1\r\nHost: fedd\r\nConnection: close\r\n" + extra_headers + "\r\n";
}

int StatusOf(const std::string& response) {
  REQUIRE(response.rfind("HTTP/1.1 ", 0) == 0);
  return std::stoi(response.substr(9, 3));
}

std::string BodyOf(const std::string& response) {
  size_t p = response.find("\r\n\r\n");
  REQUIRE(p != std::string::npos);
  return response.substr(p + 4);
}

std::string HeaderOf(const std::string& response, const std::string& name) {
  std::istringstream in(response.substr(0, response.find("\r\n\r\n")));
  for (std::string line; std::getline(in, line);) {
    if (line.size() > name.size() + 1 &&
        strncasecmp(line.c_str(), (name + ":").c_str(), name.size() + 1) == 0) {
      std::string v = line.substr(name.size() + 1);
      while (!v.empty() && (v.front() == ' ')) v.erase(0, 1);
      while (!v.empty() && (v.back() == '\r' || v.back() == ' ')) v.pop_back();
      return v;
    }
  }
  return "";
}

Json Report(const std::string& endpoint, uint64_t bytes, const std::string& generated) {
  audit::Accounting a;
  a.Add({"2026-11-23", "LNCC", "CENAPAD", "alice"}, bytes, 2, 1);
  a.Add({"2026-11-24", "LNCC", "CENAPAD", "bob"}, 10, 1, 1);
  Json r = a.Report(endpoint);
  r["generated"] = generated;
  return r;
}

TEST_SUITE("controlplane.fedd") {
  TEST_CASE("FetchManifest returns the file byte for byte and sees a replaced file") {
    Fixture f;
    f.Start();
    auto m = controlplane::FetchManifest(f.Client("lncc-dtn1"));
    REQUIRE_MESSAGE(m.ok(), m.status().ToString());
    CHECK(*m == kManifest);

    SUBCASE("atomic replace (new inode)") {
      const std::string v2 = R"({"manifest":{"serial":2},"signature":"eA=="})";
      Publish(f.dir() / "manifest.json", v2);
      m = controlplane::FetchManifest(f.Client("cenapad-dtn1"));
      REQUIRE(m.ok());
      CHECK(*m == v2);
    }
    SUBCASE("rewritten in place with the same size") {
      std::string v2 = kManifest;
      v2[v2.find("\"serial\":1") + 9] = '7';
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // a later mtime, even on coarse clocks
      WriteText(f.dir() / "manifest.json", v2);
      m = controlplane::FetchManifest(f.Client("lncc-dtn1"));
      REQUIRE(m.ok());
      CHECK(*m == v2);
    }
    SUBCASE("a vanished file leaves the last good copy published") {
      std::filesystem::remove(f.dir() / "manifest.json");
      m = controlplane::FetchManifest(f.Client("lncc-dtn1"));
      REQUIRE(m.ok());
      CHECK(*m == kManifest);
    }
  }

  TEST_CASE("the manifest carries a sha256 ETag and If-None-Match is answered 304") {
    Fixture f;
    f.Start();
    auto r = f.Raw("lncc-dtn1", Get("/v1/manifest"));
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    CHECK(StatusOf(*r) == 200);
    CHECK(BodyOf(*r) == kManifest);
    const std::string etag = HeaderOf(*r, "ETag");
    CHECK(etag.size() == 66);  // quoted 64 hex digits
    CHECK(etag.front() == '"');

    r = f.Raw("lncc-dtn1", Get("/v1/manifest", "If-None-Match: " + etag + "\r\n"));
    REQUIRE(r.ok());
    CHECK(StatusOf(*r) == 304);
    CHECK(BodyOf(*r).empty());

    Publish(f.dir() / "manifest.json", "{\"manifest\":{\"serial\":3}}");
    r = f.Raw("lncc-dtn1", Get("/v1/manifest", "If-None-Match: " + etag + "\r\n"));
    REQUIRE(r.ok());
    CHECK(StatusOf(*r) == 200);
    CHECK(HeaderOf(*r, "ETag") != etag);
  }

  TEST_CASE("reports are stored per endpoint and GET /v1/accounting merges them") {
    Fixture f;
    f.Start();
    REQUIRE(controlplane::ReportAccounting(f.Client("lncc-dtn1"),
                                           Report("lncc-dtn1", 1000, "2026-11-24T10:00:00.000Z"))
                .ok());
    REQUIRE(controlplane::ReportAccounting(f.Client("cenapad-dtn1"),
                                           Report("cenapad-dtn1", 5, "2026-11-24T10:00:00.000Z"))
                .ok());
    // Resending (the same or newer full totals) replaces, never adds.
    REQUIRE(controlplane::ReportAccounting(f.Client("lncc-dtn1"),
                                           Report("lncc-dtn1", 2000, "2026-11-24T11:00:00.000Z"))
                .ok());
    REQUIRE(controlplane::ReportAccounting(f.Client("lncc-dtn1"),
                                           Report("lncc-dtn1", 2000, "2026-11-24T11:00:00.000Z"))
                .ok());
    // A delayed older report does not replace a newer one.
    REQUIRE(controlplane::ReportAccounting(f.Client("lncc-dtn1"),
                                           Report("lncc-dtn1", 1, "2026-11-24T09:00:00.000Z"))
                .ok());

    CHECK(std::filesystem::exists(f.dir() / "accounting/lncc-dtn1.json"));
    CHECK(std::filesystem::exists(f.dir() / "accounting/cenapad-dtn1.json"));
    struct stat st {};
    REQUIRE(::stat((f.dir() / "accounting/lncc-dtn1.json").c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0640);

    auto totals = controlplane::FetchAccounting(f.Client("lncc-dtn1"));
    REQUIRE_MESSAGE(totals.ok(), totals.status().ToString());
    CHECK((*totals)["total"]["bytes"] == 2000 + 10 + 5 + 10);
    CHECK((*totals)["total"]["transfers"] == 4);
    REQUIRE((*totals)["by_pair"].size() == 1);
    CHECK((*totals)["by_pair"][0]["source"] == "LNCC");
    REQUIRE((*totals)["by_user"].size() == 2);
    CHECK((*totals)["by_user"][0] ==
          Json({{"user", "alice"}, {"bytes", 2005}, {"files", 4}, {"transfers", 2}}));
    REQUIRE((*totals)["endpoints"].size() == 2);
    CHECK((*totals)["endpoints"][0]["endpoint"] == "cenapad-dtn1");
    CHECK((*totals)["endpoints"][1]["generated"] == "2026-11-24T11:00:00.000Z");

    auto filtered = controlplane::FetchAccounting(f.Client("lncc-dtn1"), "since=2026-11-24&user=bob");
    REQUIRE(filtered.ok());
    CHECK((*filtered)["total"]["bytes"] == 20);

    auto bad = controlplane::FetchAccounting(f.Client("lncc-dtn1"), "since=yesterday");
    REQUIRE_FALSE(bad.ok());
    CHECK(bad.error().code() == Code::kProtocol);
    CHECK(std::string(bad.error().message()).find("HTTP 400") != std::string::npos);
  }

  TEST_CASE("a report is refused when it names another endpoint or is malformed") {
    Fixture f;
    f.Start();
    Status s = controlplane::ReportAccounting(f.Client("lncc-dtn1"),
                                              Report("cenapad-dtn1", 1, "2026-11-24T10:00:00.000Z"));
    CHECK(s.code() == Code::kPermissionDenied);
    CHECK_MESSAGE(std::string(s.message()).find("HTTP 403") != std::string::npos, s.ToString());

    Json bad = Report("lncc-dtn1", 1, "2026-11-24T10:00:00.000Z");
    bad["rows"][0]["day"] = "23/11/2026";
    s = controlplane::ReportAccounting(f.Client("lncc-dtn1"), bad);
    CHECK(s.code() == Code::kProtocol);
    CHECK_MESSAGE(std::string(s.message()).find("rows[0]: day") != std::string::npos, s.ToString());
    CHECK(std::filesystem::is_empty(f.dir() / "accounting"));

    // A body over 4 MiB is answered 413 (httplib reads and drops it first).
    const std::string body(kMaxReportBytes + 1, ' ');
    auto r = f.Raw("lncc-dtn1",
                   "POST /v1/accounting HTTP/1.1\r\nHost: fedd\r\nContent-Type: application/json\r\n"
                   "Content-Length: " +
                       std::to_string(body.size()) + "\r\n\r\n" + body);
    REQUIRE(r.ok());
    CHECK(StatusOf(*r) == 413);
    CHECK(Json::parse(BodyOf(*r))["error"]["code"] == "too_large");
  }

  TEST_CASE("at info the log holds refusals, not the routine fetches and reports every daemon makes") {
    Fixture f;
    f.Start();
    const std::string log_path = f.dir() / "fedd.log";
    log::SetLevel(log::Level::kInfo);
    REQUIRE(log::SetFile(log_path));
    for (int i = 0; i < 3; ++i) REQUIRE(controlplane::FetchManifest(f.Client("lncc-dtn1")).ok());
    REQUIRE(controlplane::ReportAccounting(f.Client("lncc-dtn1"),
                                           Report("lncc-dtn1", 1, "2026-11-24T10:00:00.000Z"))
                .ok());
    Status refused = controlplane::ReportAccounting(f.Client("lncc-dtn1"),
                                                    Report("cenapad-dtn1", 1, "2026-11-24T10:00:00.000Z"));
    REQUIRE(refused.code() == Code::kPermissionDenied);
    // The server logs after it has answered: wait (bounded) for the refusal's line.
    auto read_log = [&] {
      std::ifstream in(log_path);
      std::stringstream text;
      text << in.rdbuf();
      return text.str();
    };
    std::string text = read_log();
    for (int i = 0; i < 100 && text.find("-> 403") == std::string::npos; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      text = read_log();
    }
    REQUIRE(log::SetFile(""));  // back to stderr
    INFO(text);
    CHECK(text.find("GET /v1/manifest") == std::string::npos);
    CHECK(text.find("POST /v1/accounting -> 200") == std::string::npos);
    CHECK(text.find("POST /v1/accounting -> 403") != std::string::npos);
  }

  TEST_CASE("a client certificate from another CA, or none, is refused") {
    Fixture f;
    f.Start();
    REQUIRE(pki::CreateAuthority(f.dir() / "rogue", "rogue", 10).ok());
    REQUIRE(
        pki::IssueEndpoint(f.dir() / "rogue", "mallory", f.dir() / "mallory.key", f.dir() / "mallory.crt", 10)
            .ok());
    auto m = controlplane::FetchManifest(f.Client("mallory"));
    REQUIRE_FALSE(m.ok());
    CHECK(m.error().code() == Code::kUnauthenticated);
    CHECK_MESSAGE(std::string(m.error().message()).find("alert") != std::string::npos, m.status().ToString());

    auto r = f.Raw("", Get("/v1/healthz"));
    CHECK_FALSE(r.ok());
    r = f.Raw("mallory", Get("/v1/healthz"));
    CHECK_FALSE(r.ok());
    r = f.Raw("lncc-dtn1", Get("/v1/healthz"));
    REQUIRE(r.ok());
    CHECK(StatusOf(*r) == 200);
    CHECK(Json::parse(BodyOf(*r))["status"] == "ok");
  }

  TEST_CASE("the client refuses a service with another CN or from another CA") {
    Fixture f;
    f.Start();
    SUBCASE("server name mismatch") {
      ClientConfig c = f.Client("lncc-dtn1");
      c.server_name = "fedd.example";
      auto m = controlplane::FetchManifest(c);
      REQUIRE_FALSE(m.ok());
      CHECK(m.error().code() == Code::kUnauthenticated);
      CHECK_MESSAGE(
          std::string(m.error().message()).find("CN 'fedd', expected 'fedd.example'") != std::string::npos,
          m.status().ToString());
    }
    SUBCASE("the client trusts another CA") {
      REQUIRE(pki::CreateAuthority(f.dir() / "other", "other", 10).ok());
      ClientConfig c = f.Client("lncc-dtn1");
      c.ca_file = f.dir() / "other/ca.crt";
      auto m = controlplane::FetchManifest(c);
      REQUIRE_FALSE(m.ok());
      CHECK(m.error().code() == Code::kUnauthenticated);
      CHECK_MESSAGE(std::string(m.error().message()).find("not trusted") != std::string::npos,
                    m.status().ToString());
    }
  }

  TEST_CASE("unknown routes get a JSON 404") {
    Fixture f;
    f.Start();
    auto r = f.Raw("lncc-dtn1", Get("/v1/nothing"));
    REQUIRE(r.ok());
    CHECK(StatusOf(*r) == 404);
    CHECK(Json::parse(BodyOf(*r))["error"]["code"] == "not_found");
  }

  TEST_CASE("Stop ends the service: later connections are refused") {
    Fixture f;
    f.Start();
    ClientConfig c = f.Client("lncc-dtn1");
    REQUIRE(controlplane::FetchManifest(c).ok());
    auto s = Service::Create(f.config());  // a second instance on its own port, stopped at once
    REQUIRE(s.ok());
    REQUIRE((*s)->Start().ok());
    c.url = "https://127.0.0.1:" + std::to_string((*s)->port());
    REQUIRE(controlplane::FetchManifest(c).ok());
    (*s)->Stop();
    (*s)->Stop();  // idempotent
    auto m = controlplane::FetchManifest(c);
    REQUIRE_FALSE(m.ok());
    CHECK(m.error().code() == Code::kUnavailable);
  }
}

TEST_SUITE("controlplane.fedd_config") {
  TEST_CASE("LoadConfig reads every key and names the file and key in errors") {
    test::TempDir t;
    const std::string path = t / "fedd.toml";
    WriteText(path, R"(
[service]
listen = "127.0.0.1:47700"
[tls]
ca = "/etc/pororoca/ca.crt"
cert = "/etc/pororoca/fedd.crt"
key = "/etc/pororoca/fedd.key"
[manifest]
file = "/srv/fed/manifest.json"
[accounting]
dir = "/var/lib/pororoca-fedd/accounting"
[log]
level = "debug"
file = ""
)");
    auto c = LoadConfig(path);
    REQUIRE_MESSAGE(c.ok(), c.status().ToString());
    CHECK(c->listen == "127.0.0.1:47700");
    CHECK(c->tls_key == "/etc/pororoca/fedd.key");
    CHECK(c->manifest_file == "/srv/fed/manifest.json");
    CHECK(c->accounting_dir == "/var/lib/pororoca-fedd/accounting");
    CHECK(c->log_level == "debug");
    CHECK(c->log_file.empty());  // the documented sample: empty = stderr

    auto fails = [&](const std::string& text, const std::string& expect) {
      WriteText(path, text);
      auto r = LoadConfig(path);
      REQUIRE_FALSE(r.ok());
      const std::string msg(r.error().message());
      CHECK_MESSAGE(msg.find(path) != std::string::npos, msg);
      CHECK_MESSAGE(msg.find(expect) != std::string::npos, msg);
    };
    const std::string base = "[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n[accounting]\ndir = \"d\"\n";
    fails(base, "[manifest] file: missing");
    fails(base + "[manifest]\nfile = 3\n", "[manifest] file: must be a non-empty string");
    fails(base + "[manifest]\nfile = \"m\"\nfiel = \"x\"\n", "[manifest] fiel: unknown key");
    fails(base + "[manifest]\nfile = \"m\"\n[sevice]\n", "[sevice]: unknown section");
    fails(base + "[manifest]\nfile = \"m\"\n[service]\nlisten = \"nowhere\"\n", "[service] listen");
    fails("[tls\n", "line 1");
    auto missing = LoadConfig(t / "none.toml");
    REQUIRE_FALSE(missing.ok());
    CHECK(missing.error().code() == Code::kNotFound);
    CHECK(std::string(missing.error().message()).find(t / "none.toml") != std::string::npos);
  }

  TEST_CASE("Create checks the files behind the configuration and names the key") {
    Fixture f;
    SUBCASE("accounting dir") {
      f.config().accounting_dir = f.dir() / "missing";
      auto s = Service::Create(f.config());
      REQUIRE_FALSE(s.ok());
      CHECK(std::string(s.error().message()).find("[accounting] dir") != std::string::npos);
    }
    SUBCASE("manifest file") {
      f.config().manifest_file = f.dir() / "missing.json";
      auto s = Service::Create(f.config());
      REQUIRE_FALSE(s.ok());
      CHECK(std::string(s.error().message()).find("[manifest] file") != std::string::npos);
    }
    SUBCASE("key of another certificate") {
      f.config().tls_key = f.dir() / "lncc-dtn1.key";
      auto s = Service::Create(f.config());
      REQUIRE_FALSE(s.ok());
      CHECK_MESSAGE(std::string(s.error().message()).find("[tls] key") != std::string::npos,
                    s.status().ToString());
    }
    SUBCASE("port in use") {
      auto busy = transport::TcpListen("127.0.0.1", 0, 1);
      REQUIRE(busy.ok());
      f.config().listen = "127.0.0.1:" + std::to_string(*transport::LocalPort(busy->get()));
      auto s = Service::Create(f.config());
      REQUIRE(s.ok());
      Status st = (*s)->Start();
      REQUIRE_FALSE(st.ok());
      CHECK_MESSAGE(std::string(st.message()).find("[service] listen") != std::string::npos, st.ToString());
      CHECK_MESSAGE(std::string(st.message()).find("in use") != std::string::npos, st.ToString());
    }
  }
}

}  // namespace
}  // namespace pororoca::fedd
