#include "daemon/fedd/server.h"

#include <httplib.h>  // the one file of pororoca-fedd that includes it (a heavy header)
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/stat.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "audit/accounting.h"
#include "audit/audit_log.h"
#include "base/file_util.h"
#include "base/hex.h"
#include "base/log.h"
#include "crypto/openssl_ptr.h"
#include "pki/pki.h"
#include "pororoca/config.h"
#include "transport/tcp.h"

namespace pororoca::fedd {
namespace {

using Json = nlohmann::json;

constexpr size_t kMaxManifestBytes = 64u << 20;

// ---- configuration

// The keys each section may hold; anything else is a typo worth an error.
const std::map<std::string, std::set<std::string>>& KnownKeys() {
  static const std::map<std::string, std::set<std::string>> keys = {{"service", {"listen"}},
                                                                    {"tls", {"ca", "cert", "key"}},
                                                                    {"manifest", {"file"}},
                                                                    {"accounting", {"dir"}},
                                                                    {"log", {"level", "file"}}};
  return keys;
}

Status ConfigError(const std::string& file, const std::string& key, const std::string& msg) {
  return Status::InvalidArgument(file + ": " + key + ": " + msg);
}

// ---- the published manifest

struct Published {
  std::string body;
  std::string etag;       // "\"<sha256 hex>\""
  std::string loaded_at;  // UTC time it was read
  struct stat st {};      // identity of the file it was read from
};

bool SameFile(const struct stat& a, const struct stat& b) {
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino && a.st_size == b.st_size &&
         a.st_mtim.tv_sec == b.st_mtim.tv_sec && a.st_mtim.tv_nsec == b.st_mtim.tv_nsec &&
         a.st_ctim.tv_sec == b.st_ctim.tv_sec && a.st_ctim.tv_nsec == b.st_ctim.tv_nsec;
}

std::string Sha256Hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (EVP_Digest(data.data(), data.size(), md, &n, EVP_sha256(), nullptr) != 1) return "";
  std::string hex = HexLower(std::as_bytes(std::span(md, n)));
  return hex;
}

// The manifest file as last read. Get() re-reads it when the file changed (a new inode after an
// atomic replace, or a new size, mtime or ctime); if that fails, the last good copy stays published.
class ManifestCache {
 public:
  explicit ManifestCache(std::string path) : path_(std::move(path)) {}

  Result<std::shared_ptr<const Published>> Get() {
    std::lock_guard<std::mutex> lock(mu_);
    struct stat st {};
    if (::stat(path_.c_str(), &st) != 0) return Fallback(Status::IoError("manifest " + path_, errno));
    if (current_ && SameFile(st, current_->st)) return current_;
    // stat before read: if the file changes in between, the next request sees a new identity again.
    auto body = ReadSmallFile(path_, kMaxManifestBytes);
    if (!body.has_value()) return Fallback(std::move(body).error());
    auto p = std::make_shared<Published>();
    p->body = std::move(*body);
    p->etag = "\"" + Sha256Hex(p->body) + "\"";
    p->loaded_at = audit::UtcTimestamp(std::chrono::system_clock::now());
    p->st = st;
    PORO_LOG(INFO) << "manifest " << path_ << ": " << p->body.size() << " bytes, sha256 "
                   << p->etag.substr(1, 64) << (current_ ? " (changed)" : "");
    current_ = std::move(p);
    failing_ = false;
    return current_;
  }

 private:
  Result<std::shared_ptr<const Published>> Fallback(Status error) {
    if (!failing_) PORO_LOG(WARNING) << error.ToString() << (current_ ? "; serving the last good copy" : "");
    failing_ = true;
    if (current_) return current_;
    return error;
  }

  const std::string path_;
  std::mutex mu_;
  std::shared_ptr<const Published> current_;  // guarded by mu_
  bool failing_ = false;                      // guarded by mu_: logged once per failure spell
};

// ---- requests

// The verified client certificate's CN; "" if there is none or it is unusable.
std::string ClientCn(const httplib::Request& req) {
  crypto::X509Ptr cert(req.ssl ? SSL_get1_peer_certificate(req.ssl) : nullptr);
  if (cert == nullptr) return "";
  char buf[256];
  int n = X509_NAME_get_text_by_NID(X509_get_subject_name(cert.get()), NID_commonName, buf, sizeof buf);
  return n > 0 && size_t(n) == ::strnlen(buf, sizeof buf) ? std::string(buf, size_t(n)) : std::string();
}

// j[key] if j is an object holding a string there, else "" (stored files may have been edited).
std::string StringField(const Json& j, const char* key) {
  if (!j.is_object()) return "";
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

void Reply(httplib::Response& res, int status, const Json& body) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, Json::error_handler_t::replace), "application/json");
}

void ReplyError(httplib::Response& res, int status, const std::string& code, const std::string& message) {
  Reply(res, status, {{"error", {{"code", code}, {"message", message}}}});
}

}  // namespace

Result<Config> LoadConfig(const std::string& path) {
  auto contents = ReadSmallFile(path, 1u << 20);
  if (!contents.has_value()) return std::move(contents).error().Annotate("config file");
  toml::table t;
  try {
    t = toml::parse(*contents, path);
  } catch (const toml::parse_error& e) {
    return Status::InvalidArgument(path + " (line " + std::to_string(e.source().begin.line) +
                                   "): " + std::string(e.description()));
  }
  for (const auto& [section, node] : t) {
    const std::string name(section.str());
    auto known = KnownKeys().find(name);
    if (known == KnownKeys().end()) return ConfigError(path, "[" + name + "]", "unknown section");
    if (!node.is_table()) return ConfigError(path, "[" + name + "]", "must be a table");
    for (const auto& [key, value] : *node.as_table()) {
      if (!known->second.count(std::string(key.str()))) {
        return ConfigError(path, "[" + name + "] " + std::string(key.str()), "unknown key");
      }
    }
  }
  Config c;
  c.source_file = path;
  auto text = [&](const char* section, const char* key, std::string* out, bool required) -> Status {
    const std::string where = std::string("[") + section + "] " + key;
    auto node = t[section][key];
    if (!node) return required ? ConfigError(path, where, "missing (required)") : Status::OK();
    auto v = node.value<std::string>();
    // An optional key may be empty ([log] file = "": stderr); a required one may not.
    if (!v || (required && v->empty())) return ConfigError(path, where, "must be a non-empty string");
    *out = *v;
    return Status::OK();
  };
  PORO_RETURN_IF_ERROR(text("service", "listen", &c.listen, false));
  PORO_RETURN_IF_ERROR(text("tls", "ca", &c.tls_ca, true));
  PORO_RETURN_IF_ERROR(text("tls", "cert", &c.tls_cert, true));
  PORO_RETURN_IF_ERROR(text("tls", "key", &c.tls_key, true));
  PORO_RETURN_IF_ERROR(text("manifest", "file", &c.manifest_file, true));
  PORO_RETURN_IF_ERROR(text("accounting", "dir", &c.accounting_dir, true));
  PORO_RETURN_IF_ERROR(text("log", "level", &c.log_level, false));
  PORO_RETURN_IF_ERROR(text("log", "file", &c.log_file, false));
  if (auto hp = transport::ParseHostPort(c.listen); !hp.has_value()) {
    return ConfigError(path, "[service] listen", std::string(hp.error().message()));
  }
  log::Level level;
  if (!log::ParseLevel(c.log_level, &level)) {
    return ConfigError(path, "[log] level", "must be debug, info, warning or error");
  }
  return c;
}

struct Service::Impl {
  explicit Impl(const Config& c) : config(c), manifest(c.manifest_file) {}

  // Everything a request may need, checked once before serving. Errors name the config key.
  Status Prepare() {
    const std::string& file = config.source_file;
    auto readable = [&](const std::string& key, const std::string& path) -> Status {
      if (::access(path.c_str(), R_OK) != 0)
        return ConfigError(file, key, path + ": " + std::strerror(errno));
      return Status::OK();
    };
    PORO_RETURN_IF_ERROR(readable("[tls] ca", config.tls_ca));
    PORO_RETURN_IF_ERROR(readable("[tls] cert", config.tls_cert));
    PORO_RETURN_IF_ERROR(readable("[tls] key", config.tls_key));
    PORO_RETURN_IF_ERROR(readable("[manifest] file", config.manifest_file));
    struct stat st {};
    if (::stat(config.accounting_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      return ConfigError(file, "[accounting] dir", config.accounting_dir + ": not a directory");
    }
    if (::access(config.accounting_dir.c_str(), W_OK | X_OK) != 0) {
      return ConfigError(file, "[accounting] dir", config.accounting_dir + ": " + std::strerror(errno));
    }
    auto hp = transport::ParseHostPort(config.listen);
    if (!hp.has_value()) return ConfigError(file, "[service] listen", std::string(hp.error().message()));
    host = hp->first;
    wanted_port = hp->second;
    if (auto m = manifest.Get(); !m.has_value()) {
      return ConfigError(file, "[manifest] file", std::string(m.error().message()));
    }

    Status tls_status;
    server = std::make_unique<httplib::SSLServer>([&](SSL_CTX& ctx) {
      tls_status = SetUpTls(&ctx);
      return tls_status.ok();
    });
    if (!tls_status.ok()) return tls_status;
    if (!server->is_valid()) return Status::Internal("cannot create the TLS server context");
    Route();
    return Status::OK();
  }

  Status SetUpTls(SSL_CTX* ctx) {
    const std::string& file = config.source_file;
    auto fail = [&](const std::string& key, const std::string& what) {
      char buf[256];
      ERR_error_string_n(ERR_get_error(), buf, sizeof buf);
      ERR_clear_error();
      return ConfigError(file, key, what + ": " + buf);
    };
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    if (SSL_CTX_use_certificate_chain_file(ctx, config.tls_cert.c_str()) != 1) {
      return fail("[tls] cert", "cannot load " + config.tls_cert);
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, config.tls_key.c_str(), SSL_FILETYPE_PEM) != 1) {
      return fail("[tls] key", "cannot load " + config.tls_key);
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
      return fail("[tls] key", config.tls_key + " does not match " + config.tls_cert);
    }
    if (SSL_CTX_load_verify_locations(ctx, config.tls_ca.c_str(), nullptr) != 1) {
      return fail("[tls] ca", "cannot load " + config.tls_ca);
    }
    if (STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(config.tls_ca.c_str())) {
      SSL_CTX_set_client_CA_list(ctx, names);
    }
    // Every client must present a certificate from the federation CA, for every route.
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    static const unsigned char kSessionContext[] = "pororoca-fedd";
    SSL_CTX_set_session_id_context(ctx, kSessionContext, sizeof kSessionContext - 1);
    return Status::OK();
  }

  void Route() {
    server->set_payload_max_length(kMaxReportBytes);
    server->set_keep_alive_timeout(2);  // bounds how long Stop() waits for idle keep-alive clients
    server->Get("/v1/healthz", [this](const httplib::Request&, httplib::Response& res) { Health(res); });
    server->Get("/v1/manifest",
                [this](const httplib::Request& req, httplib::Response& res) { Manifest(req, res); });
    server->Post("/v1/accounting",
                 [this](const httplib::Request& req, httplib::Response& res) { StoreReport(req, res); });
    server->Get("/v1/accounting",
                [this](const httplib::Request& req, httplib::Response& res) { Totals(req, res); });
    // Statuses set by httplib itself (404, 413, 400) get a JSON body like ours.
    server->set_error_handler(
        httplib::Server::HandlerWithResponse([](const httplib::Request&, httplib::Response& res) {
          if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
          ReplyError(res, res.status,
                     res.status == 413   ? "too_large"
                     : res.status == 404 ? "not_found"
                                         : "bad_request",
                     res.status == 413 ? "request body over " + std::to_string(kMaxReportBytes) + " bytes"
                                       : "HTTP " + std::to_string(res.status));
          return httplib::Server::HandlerResponse::Handled;
        }));
    server->set_logger([](const httplib::Request& req, const httplib::Response& res) {
      // Every daemon fetches the manifest each refresh_s and reports each report_s: those answers
      // are routine (DEBUG). Refusals and errors are logged; a new manifest is logged where it is
      // loaded (ManifestFile::Get).
      const bool routine = res.status < 400;
      if (routine && log::GetLevel() > log::Level::kDebug) return;
      PORO_LOG(INFO) << req.remote_addr << " " << ClientCn(req) << " " << req.method << " " << req.path
                     << " -> " << res.status;
    });
  }

  void Health(httplib::Response& res) {
    Json body = {{"status", "ok"}, {"service", "pororoca-fedd"}, {"version", PORO_VERSION}};
    if (auto m = manifest.Get(); m.has_value()) {
      body["manifest"] = {{"etag", (*m)->etag}, {"bytes", (*m)->body.size()}, {"loaded", (*m)->loaded_at}};
    } else {
      body["manifest"] = {{"error", m.error().ToString()}};
    }
    Reply(res, 200, body);
  }

  void Manifest(const httplib::Request& req, httplib::Response& res) {
    auto m = manifest.Get();
    if (!m.has_value())
      return ReplyError(res, 503, "unavailable", "no manifest to publish: " + m.error().ToString());
    res.set_header("ETag", (*m)->etag);
    res.set_header("Cache-Control", "no-cache");
    if (req.get_header_value("If-None-Match") == (*m)->etag) {
      res.status = 304;
      return;
    }
    res.status = 200;
    res.set_content((*m)->body, "application/json");
  }

  void StoreReport(const httplib::Request& req, httplib::Response& res) {
    const std::string cn = ClientCn(req);
    if (!pki::ValidEndpointName(cn)) {
      return ReplyError(res, 403, "forbidden",
                        "the client certificate's CN '" + cn + "' is not an endpoint name");
    }
    if (req.body.size() > kMaxReportBytes) {
      return ReplyError(res, 413, "too_large", "report over " + std::to_string(kMaxReportBytes) + " bytes");
    }
    Json report = Json::parse(req.body, nullptr, /*allow_exceptions=*/false);
    if (!report.is_object()) return ReplyError(res, 400, "bad_request", "the report is not a JSON object");
    if (auto it = report.find("endpoint"); it != report.end() && *it != cn) {
      return ReplyError(res, 403, "forbidden",
                        "a report for endpoint " + it->dump() + " sent with the certificate of '" + cn + "'");
    }
    audit::Accounting check;
    if (Status s = check.Merge(report); !s.ok())
      return ReplyError(res, 400, "bad_request", std::string(s.message()));
    // Reports without a "generated" time count as the oldest.
    const std::string generated = StringField(report, "generated");

    Json stored = check.Report(cn);  // rows normalised: one per key
    stored["generated"] = generated;
    stored["received"] = audit::UtcTimestamp(std::chrono::system_clock::now());
    const std::string path = config.accounting_dir + "/" + cn + ".json";
    std::lock_guard<std::mutex> lock(store_mu_);
    // A delayed older report must not replace a newer one (each holds full totals).
    if (auto old = ReadSmallFile(path, 2 * kMaxReportBytes); old.has_value()) {
      Json prev = Json::parse(*old, nullptr, /*allow_exceptions=*/false);
      if (StringField(prev, "generated") > generated) {
        return Reply(res, 200, {{"endpoint", cn}, {"stored", false}, {"reason", "a newer report is stored"}});
      }
    }
    if (Status s =
            WriteFileAtomic(path, stored.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n", 0640);
        !s.ok()) {
      PORO_LOG(ERROR) << "accounting report of " << cn << ": " << s.ToString();
      return ReplyError(res, 500, "internal", "cannot store the report");
    }
    Reply(res, 200, {{"endpoint", cn}, {"stored", true}, {"rows", stored["rows"].size()}});
  }

  void Totals(const httplib::Request& req, httplib::Response& res) {
    audit::Accounting::Filter filter;
    filter.since = req.get_param_value("since");
    filter.until = req.get_param_value("until");
    filter.user = req.get_param_value("user");
    filter.institution = req.get_param_value("institution");
    for (const std::string* day : {&filter.since, &filter.until}) {
      if (!day->empty() && !audit::Accounting::ValidDay(*day)) {
        return ReplyError(res, 400, "bad_request", "since and until must be days like 2026-11-23");
      }
    }
    std::error_code ec;
    std::set<std::string> names;  // sorted: the answer lists endpoints in name order
    for (const auto& entry : std::filesystem::directory_iterator(config.accounting_dir, ec)) {
      std::string name = entry.path().filename().string();
      if (name.size() > 5 && name.compare(name.size() - 5, 5, ".json") == 0) names.insert(std::move(name));
    }
    if (ec)
      return ReplyError(res, 500, "internal", "cannot list " + config.accounting_dir + ": " + ec.message());
    audit::Accounting merged;
    Json endpoints = Json::array();
    for (const std::string& name : names) {
      const std::string endpoint = name.substr(0, name.size() - 5);
      const std::string path = config.accounting_dir + "/" + name;
      auto text = ReadSmallFile(path, 2 * kMaxReportBytes);
      Json report = text.has_value() ? Json::parse(*text, nullptr, /*allow_exceptions=*/false) : Json();
      Status s = text.has_value() ? merged.Merge(report) : text.status();
      if (!s.ok()) {
        PORO_LOG(WARNING) << "accounting: skipping " << path << ": " << s.ToString();
        endpoints.push_back({{"endpoint", endpoint}, {"error", s.ToString()}});
        continue;
      }
      endpoints.push_back({{"endpoint", endpoint},
                           {"generated", StringField(report, "generated")},
                           {"received", StringField(report, "received")}});
    }
    Json out = merged.Query(filter);
    out["endpoints"] = std::move(endpoints);
    Reply(res, 200, out);
  }

  const Config config;
  ManifestCache manifest;
  std::string host;
  uint16_t wanted_port = 0;
  uint16_t bound_port = 0;
  std::unique_ptr<httplib::SSLServer> server;
  std::thread thread;
  std::atomic<bool> listen_returned{false};
  std::mutex store_mu_;  // one report written at a time (WriteFileAtomic shares the temporary name)
};

Service::Service(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Service::~Service() { Stop(); }

Result<std::unique_ptr<Service>> Service::Create(const Config& config) {
  auto impl = std::make_unique<Impl>(config);
  PORO_RETURN_IF_ERROR(impl->Prepare());
  return std::unique_ptr<Service>(new Service(std::move(impl)));
}

Status Service::Start() {
  Impl& s = *impl_;
  if (s.thread.joinable()) return Status::InvalidArgument("service already started");
  int port = s.wanted_port == 0 ? s.server->bind_to_any_port(s.host)
                                : (s.server->bind_to_port(s.host, s.wanted_port) ? s.wanted_port : -1);
  if (port <= 0) {
    // httplib does not say why; binding the address ourselves does.
    auto probe = transport::TcpListen(s.host, s.wanted_port, 1);
    std::string why = probe.has_value() ? "cannot listen" : std::string(probe.error().message());
    return Status::Unavailable(s.config.source_file + ": [service] listen " + s.config.listen + ": " + why);
  }
  s.bound_port = static_cast<uint16_t>(port);
  s.thread = std::thread([&s] {
    s.server->listen_after_bind();
    s.listen_returned = true;
  });
  // Stop() is only effective once the server runs; wait for that (or for an early failure).
  while (!s.server->is_running() && !s.listen_returned)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  if (s.listen_returned) {
    s.thread.join();
    return Status::Internal("the HTTPS server stopped at once");
  }
  PORO_LOG(INFO) << "pororoca-fedd " << PORO_VERSION << " listening on "
                 << transport::FormatHostPort(s.host, s.bound_port) << ", manifest " << s.config.manifest_file
                 << ", accounting " << s.config.accounting_dir;
  return Status::OK();
}

uint16_t Service::port() const { return impl_->bound_port; }

void Service::Stop() {
  if (!impl_ || !impl_->thread.joinable()) return;
  impl_->server->stop();
  impl_->thread.join();
}

}  // namespace pororoca::fedd
