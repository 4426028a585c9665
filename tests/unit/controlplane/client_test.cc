// The client alone: argument checks and connection failures. The cases with the real service are in
// fedd_test.cc.
#include "controlplane/client.h"

#include <doctest/doctest.h>
#include <signal.h>

#include <string>

#include "pki/pki.h"
#include "support/temp_dir.h"
#include "transport/tcp.h"

namespace pororoca::controlplane {
namespace {

// A CA and one endpoint certificate: enough for the client to get as far as connecting.
struct Files {
  test::TempDir dir;
  ClientConfig config;
  Files() {
    ::signal(SIGPIPE, SIG_IGN);
    REQUIRE(pki::CreateAuthority(dir / "ca", "federation", 10).ok());
    REQUIRE(pki::IssueEndpoint(dir / "ca", "lncc-dtn1", dir / "lncc.key", dir / "lncc.crt", 10).ok());
    config.ca_file = dir / "ca/ca.crt";
    config.cert_file = dir / "lncc.crt";
    config.key_file = dir / "lncc.key";
    config.server_name = "fedd";
    config.timeout = std::chrono::milliseconds(3000);
  }
};

// A loopback port nobody listens on: bound, then closed.
uint16_t ClosedPort() {
  auto fd = transport::TcpListen("127.0.0.1", 0, 1);
  REQUIRE(fd.ok());
  auto port = transport::LocalPort(fd->get());
  REQUIRE(port.ok());
  return *port;
}

TEST_SUITE("controlplane.client") {
  TEST_CASE("connection refused is a retryable Unavailable naming the URL and the cause") {
    Files f;
    f.config.url = "https://127.0.0.1:" + std::to_string(ClosedPort());
    auto m = FetchManifest(f.config);
    REQUIRE_FALSE(m.ok());
    CHECK(m.error().code() == Code::kUnavailable);
    CHECK(m.error().retryable());
    const std::string msg(m.error().message());
    CHECK_MESSAGE(msg.find("GET " + f.config.url + "/v1/manifest") != std::string::npos, msg);
    CHECK_MESSAGE(msg.find("Connection refused") != std::string::npos, msg);

    Status s = ReportAccounting(f.config, {{"rows", nlohmann::json::array()}});
    CHECK(s.code() == Code::kUnavailable);
    CHECK(std::string(s.message()).find("POST " + f.config.url + "/v1/accounting") != std::string::npos);
  }

  TEST_CASE("a malformed URL is InvalidArgument") {
    Files f;
    for (const char* url : {"http://127.0.0.1:47700", "127.0.0.1:47700", "https://", "https://h:0",
                            "https://h:47700/v1", "https://h:port"}) {
      f.config.url = url;
      auto m = FetchManifest(f.config);
      REQUIRE_FALSE(m.ok());
      CHECK_MESSAGE(m.error().code() == Code::kInvalidArgument, url);
      CHECK(std::string(m.error().message()).find(url) != std::string::npos);
    }
  }

  TEST_CASE("unreadable TLS files and a missing server name are refused before connecting") {
    Files f;
    f.config.url = "https://127.0.0.1:" + std::to_string(ClosedPort());
    SUBCASE("missing key") {
      f.config.key_file = f.dir / "nope.key";
      auto m = FetchManifest(f.config);
      REQUIRE_FALSE(m.ok());
      CHECK(m.error().code() == Code::kInvalidArgument);
      CHECK(std::string(m.error().message()).find(f.dir / "nope.key") != std::string::npos);
    }
    SUBCASE("key of another certificate") {
      REQUIRE(pki::IssueEndpoint(f.dir / "ca", "other", f.dir / "other.key", f.dir / "other.crt", 10).ok());
      f.config.key_file = f.dir / "other.key";
      auto m = FetchManifest(f.config);
      REQUIRE_FALSE(m.ok());
      CHECK(m.error().code() == Code::kInvalidArgument);
      CHECK(std::string(m.error().message()).find(f.config.cert_file) != std::string::npos);
    }
    SUBCASE("no server name") {
      f.config.server_name.clear();
      auto m = FetchManifest(f.config);
      REQUIRE_FALSE(m.ok());
      CHECK(m.error().code() == Code::kInvalidArgument);
    }
  }

  TEST_CASE("a report over the limit is refused without being sent") {
    Files f;
    f.config.url = "https://127.0.0.1:" + std::to_string(ClosedPort());
    nlohmann::json big = {{"rows", nlohmann::json::array()}, {"padding", std::string(kMaxReportBytes, 'x')}};
    Status s = ReportAccounting(f.config, big);
    CHECK(s.code() == Code::kResourceExhausted);
    CHECK_FALSE(s.retryable());
  }
}

}  // namespace
}  // namespace pororoca::controlplane
