#include "transport/tls.h"

#include <doctest/doctest.h>
#include <stdlib.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <thread>

#include "pki/pki.h"
#include "transport/tcp.h"

namespace pororoca::transport {
namespace {

using std::chrono::milliseconds;

// Two CAs in a temp dir; endpoints are issued on demand.
class Pki {
 public:
  Pki() {
    char tmpl[] = "/tmp/poro_tls_test_XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    dir_ = tmpl;
    REQUIRE(pki::CreateAuthority(dir_ + "/ca1", "Test CA 1", 30).ok());
    REQUIRE(pki::CreateAuthority(dir_ + "/ca2", "Test CA 2", 30).ok());
  }
  ~Pki() { std::filesystem::remove_all(dir_); }
  std::string Ca(int n) const { return dir_ + "/ca" + std::to_string(n); }

  // Issues `name` from CA `ca` and returns a config trusting CA `trust`.
  TlsConfig Endpoint(const std::string& name, int ca, int trust, bool server, pki::IssueOptions o = {}) {
    TlsConfig c;
    c.ca_file = Ca(trust) + "/ca.crt";
    c.cert_file = dir_ + "/" + name + ".crt";
    c.key_file = dir_ + "/" + name + ".key";
    c.server = server;
    REQUIRE(pki::IssueEndpoint(Ca(ca), name, c.key_file, c.cert_file, 30, o).ok());
    return c;
  }

 private:
  std::string dir_;
};

struct HandshakeResult {
  Result<std::unique_ptr<TlsStream>> server{Status::Internal("not run")};
  Result<std::unique_ptr<TlsStream>> client{Status::Internal("not run")};
};

HandshakeResult Handshake(const TlsConfig& server_cfg, const TlsConfig& client_cfg) {
  auto sctx = TlsContext::Create(server_cfg);
  REQUIRE(sctx.ok());
  auto cctx = TlsContext::Create(client_cfg);
  REQUIRE(cctx.ok());
  auto lfd = TcpListen("127.0.0.1", 0, 4);
  REQUIRE(lfd.ok());
  uint16_t port = *LocalPort(lfd->get());
  TransportOptions opts;
  opts.idle_timeout = milliseconds(5000);
  HandshakeResult out;
  std::thread server([&] {
    auto fd = TcpAccept(lfd->get(), milliseconds(5000));
    if (!fd.ok()) {
      out.server = fd.error();
      return;
    }
    out.server = TlsStream::Accept(**sctx, std::move(*fd), opts);
  });
  auto fd = TcpConnect("127.0.0.1", port, milliseconds(5000));
  if (fd.ok()) {
    out.client = TlsStream::Connect(**cctx, std::move(*fd), opts);
  } else {
    out.client = fd.error();
  }
  server.join();
  return out;
}

void CheckRejected(const HandshakeResult& r, const char* client_reason, const char* server_reason) {
  REQUIRE_FALSE(r.server.ok());
  REQUIRE_FALSE(r.client.ok());
  INFO("server: " << r.server.error().ToString());
  INFO("client: " << r.client.error().ToString());
  CHECK(r.server.error().code() == Code::kUnauthenticated);
  CHECK(r.client.error().code() == Code::kUnauthenticated);
  CHECK_FALSE(r.client.error().retryable());
  CHECK(std::string(r.client.error().message()).find(client_reason) != std::string::npos);
  CHECK(std::string(r.server.error().message()).find(server_reason) != std::string::npos);
  CHECK(std::string(r.client.error().message()).rfind("TLS handshake with 127.0.0.1:", 0) == 0);
}

TEST_SUITE("transport.tls") {
  TEST_CASE("mutual handshake with one CA: names, pins, exporter and data in both directions") {
    Pki pki;
    TlsConfig s = pki.Endpoint("dtn-a.example.org", 1, 1, true);
    TlsConfig c = pki.Endpoint("dtn-b.example.org", 1, 1, false);
    auto r = Handshake(s, c);
    REQUIRE_MESSAGE(r.server.ok(), r.server.status().ToString());
    REQUIRE_MESSAGE(r.client.ok(), r.client.status().ToString());
    TlsStream& server = **r.server;
    TlsStream& client = **r.client;
    CHECK(server.peer_common_name() == "dtn-b.example.org");
    CHECK(client.peer_common_name() == "dtn-a.example.org");
    CHECK(server.peer_cert_sha256() == *pki::PublicKeyPinFromCert(c.cert_file));
    CHECK(client.peer_cert_sha256() == *pki::PublicKeyPinFromCert(s.cert_file));
    CHECK(client.peer_cert_sha256().size() == 64);
    CHECK(client.peer_address().rfind("127.0.0.1:", 0) == 0);

    auto ks = server.ExportKey("EXPORTER-pororoca-bind", 32);
    auto kc = client.ExportKey("EXPORTER-pororoca-bind", 32);
    REQUIRE(ks.ok());
    REQUIRE(kc.ok());
    CHECK(ks->size() == 32);
    CHECK(*ks == *kc);
    CHECK(*client.ExportKey("EXPORTER-other", 32) != *kc);

    // A second session between the same endpoints exports different keying material.
    auto r2 = Handshake(s, c);
    REQUIRE(r2.client.ok());
    CHECK(*(*r2.client)->ExportKey("EXPORTER-pororoca-bind", 32) != *kc);

    std::vector<std::byte> big(3 << 20);
    for (size_t i = 0; i < big.size(); ++i) big[i] = std::byte(i * 13 % 251);
    TransportOptions o;
    o.idle_timeout = milliseconds(5000);
    std::thread writer([&] {
      CHECK(client.WriteAll(big, o).ok());
      CHECK(client.Close(o).ok());
    });
    std::vector<std::byte> got(big.size());
    CHECK(server.ReadFull(got, o).ok());
    CHECK(got == big);
    std::byte one[1];
    auto eof = server.ReadSome(one, o);
    REQUIRE(eof.ok());
    CHECK(*eof == 0);
    writer.join();

    const char hello[] = "hello";
    auto& r2s = **r2.server;
    auto& r2c = **r2.client;
    CHECK(r2s.WriteAll(std::as_bytes(std::span(hello)), o).ok());
    std::byte buf[sizeof(hello)];
    CHECK(r2c.ReadFull(buf, o).ok());
    CHECK(std::memcmp(buf, hello, sizeof(hello)) == 0);
  }

  TEST_CASE("a client certificate from another CA is rejected on both ends") {
    Pki pki;
    auto r = Handshake(pki.Endpoint("server", 1, 1, true), pki.Endpoint("client", 2, 1, false));
    CheckRejected(r, "alert unknown ca",
                  "certificate verify failed (unable to get local issuer certificate)");
  }

  TEST_CASE("a server certificate from another CA is rejected on both ends") {
    Pki pki;
    auto r = Handshake(pki.Endpoint("server", 2, 1, true), pki.Endpoint("client", 1, 1, false));
    CheckRejected(r, "certificate verify failed (unable to get local issuer certificate)",
                  "alert unknown ca");
  }

  TEST_CASE("a client without a certificate is rejected") {
    Pki pki;
    TlsConfig c = pki.Endpoint("client", 1, 1, false);
    c.cert_file.clear();
    c.key_file.clear();
    auto r = Handshake(pki.Endpoint("server", 1, 1, true), c);
    CheckRejected(r, "certificate required", "peer did not return a certificate");
  }

  TEST_CASE("an expired certificate is rejected") {
    Pki pki;
    pki::IssueOptions expired;
    expired.not_before_offset_s = -7200;
    expired.not_after_offset_s = -3600;
    SUBCASE("client") {
      auto r = Handshake(pki.Endpoint("server", 1, 1, true), pki.Endpoint("client", 1, 1, false, expired));
      CheckRejected(r, "alert certificate expired", "certificate has expired");
    }
    SUBCASE("server") {
      auto r = Handshake(pki.Endpoint("server", 1, 1, true, expired), pki.Endpoint("client", 1, 1, false));
      CheckRejected(r, "certificate has expired", "alert certificate expired");
    }
  }

  TEST_CASE("a silent peer makes the handshake time out") {
    Pki pki;
    auto ctx = TlsContext::Create(pki.Endpoint("client", 1, 1, false));
    REQUIRE(ctx.ok());
    auto lfd = TcpListen("127.0.0.1", 0, 4);
    REQUIRE(lfd.ok());
    auto fd = TcpConnect("127.0.0.1", *LocalPort(lfd->get()), milliseconds(1000));
    REQUIRE(fd.ok());
    TransportOptions o;
    o.idle_timeout = milliseconds(50);
    auto r = TlsStream::Connect(**ctx, std::move(*fd), o);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code() == Code::kDeadlineExceeded);
  }

  TEST_CASE("context creation errors name the file") {
    Pki pki;
    TlsConfig c = pki.Endpoint("server", 1, 1, true);
    SUBCASE("missing CA file") {
      c.ca_file = "/nonexistent/ca.crt";
      auto r = TlsContext::Create(c);
      REQUIRE_FALSE(r.ok());
      CHECK(r.error().code() == Code::kNotFound);
      CHECK(std::string(r.error().message()).find("/nonexistent/ca.crt") != std::string::npos);
    }
    SUBCASE("key that is not PEM") {
      c.key_file = c.ca_file;  // a certificate, not a key
      auto r = TlsContext::Create(c);
      REQUIRE_FALSE(r.ok());
      CHECK(r.error().code() == Code::kInvalidArgument);
      CHECK(std::string(r.error().message()).find(c.ca_file) != std::string::npos);
    }
    SUBCASE("key of another endpoint") {
      TlsConfig other = pki.Endpoint("other", 1, 1, true);
      c.key_file = other.key_file;
      auto r = TlsContext::Create(c);
      REQUIRE_FALSE(r.ok());
      INFO(r.error().ToString());
      CHECK(std::string(r.error().message()).find("mismatch") != std::string::npos);
      CHECK(std::string(r.error().message()).find(other.key_file) != std::string::npos);
    }
    SUBCASE("server without a certificate") {
      c.cert_file.clear();
      c.key_file.clear();
      CHECK(TlsContext::Create(c).error().code() == Code::kInvalidArgument);
    }
  }
}

}  // namespace
}  // namespace pororoca::transport
