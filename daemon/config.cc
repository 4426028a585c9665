#include "daemon/config.h"

#include <toml++/toml.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <map>
#include <optional>
#include <set>

#include "base/file_util.h"
#include "base/log.h"
#include "proto/messages.h"
#include "transport/tcp.h"

namespace pororoca::daemon {

const UserConfig* Config::FindUser(int64_t uid) const {
  for (const auto& u : users) {
    if (u.uid == uid) return &u;
  }
  return nullptr;
}

const UserConfig* Config::FindIdentity(const std::string& identity) const {
  for (const auto& u : users) {
    if (!identity.empty() && u.identity == identity) return &u;
  }
  return nullptr;
}

bool Config::IsApiOperator(const std::string& identity) const {
  return !identity.empty() &&
         std::find(api_operators.begin(), api_operators.end(), identity) != api_operators.end();
}

bool Config::InStagingDir(const std::string& rel) const {
  if (staging_dir.empty()) return false;
  size_t root_len = export_root.size();
  while (root_len > 1 && export_root[root_len - 1] == '/') --root_len;
  const std::string cache = staging_dir.substr(root_len + 1);  // validated: inside the root
  return rel.compare(0, cache.size(), cache) == 0 && (rel.size() == cache.size() || rel[cache.size()] == '/');
}

Result<uint64_t> ParseSize(const std::string& s) {
  size_t i = 0;
  uint64_t v = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) {
    if (v > (UINT64_MAX - 9) / 10) return Status::InvalidArgument("size too large: " + s);
    v = v * 10 + uint64_t(s[i] - '0');
    ++i;
  }
  if (i == 0) return Status::InvalidArgument("not a size: '" + s + "' (examples: 4MiB, 512KiB, 1GiB)");
  std::string unit = s.substr(i);
  uint64_t mult;
  if (unit.empty() || unit == "B")
    mult = 1;
  else if (unit == "K" || unit == "KiB" || unit == "k")
    mult = 1ull << 10;
  else if (unit == "M" || unit == "MiB")
    mult = 1ull << 20;
  else if (unit == "G" || unit == "GiB")
    mult = 1ull << 30;
  else
    return Status::InvalidArgument("unknown size unit in '" + s + "' (use KiB, MiB or GiB)");
  if (v > UINT64_MAX / mult) return Status::InvalidArgument("size too large: " + s);
  return v * mult;
}

Status ValidateChunkSize(uint64_t v) {
  if (v < (64u << 10) || v > (64u << 20) || v % 4096 != 0) {
    return Status::InvalidArgument("chunk size must be a multiple of 4KiB between 64KiB and 64MiB");
  }
  return Status::OK();
}

Status ValidateTransferLimits(const Config& c, size_t buffer_size, uint64_t streams, uint64_t chunk_size) {
  if (streams < 1 || streams > c.max_streams) {
    return Status::InvalidArgument("streams must be between 1 and " + std::to_string(c.max_streams));
  }
  PORO_RETURN_IF_ERROR(ValidateChunkSize(chunk_size));
  if (chunk_size > buffer_size) {
    return Status::InvalidArgument("chunk_size " + std::to_string(chunk_size) +
                                   " exceeds this daemon's buffer size (" +
                                   std::to_string(buffer_size >> 10) + " KiB)");
  }
  return Status::OK();
}

int ResolveSndbuf(int configured) {
  if (configured >= 0) return configured;
  long wmem_max = 0, lo = 0, def = 0, tcp_max = 0;
  if (FILE* f = std::fopen("/proc/sys/net/core/wmem_max", "r")) {
    if (std::fscanf(f, "%ld", &wmem_max) != 1) wmem_max = 0;
    std::fclose(f);
  }
  if (FILE* f = std::fopen("/proc/sys/net/ipv4/tcp_wmem", "r")) {
    if (std::fscanf(f, "%ld %ld %ld", &lo, &def, &tcp_max) != 3) tcp_max = 0;
    std::fclose(f);
  }
  if (wmem_max > 0 && tcp_max > 0 && 2 * wmem_max > tcp_max && wmem_max <= (1l << 30)) return int(wmem_max);
  return 0;
}

namespace {

Status KeyError(const std::string& file, const std::string& key, const std::string& msg) {
  return Status::InvalidArgument(file + ": " + key + ": " + msg);
}

// Every section and key the daemon reads: anything else is a typo the operator wants to hear about.
const std::map<std::string, std::set<std::string>>& KnownKeys() {
  static const std::map<std::string, std::set<std::string>> k{
      {"endpoint", {"name"}},
      {"network",
       {"listen", "sndbuf", "rcvbuf", "congestion", "idle_timeout_s", "transports", "ucx_tls",
        "ucx_net_devices", "fabric_provider"}},
      {"api", {"socket", "socket_mode", "listen", "operators"}},
      {"storage", {"export_root", "state_dir", "direct_io", "keep_finished_s"}},
      {"tls", {"ca", "cert", "key"}},
      {"federation",
       {"manifest", "url", "service_name", "authority_key", "refresh_s", "require_token", "report_s"}},
      {"audit", {"log"}},
      {"tokens", {"issuer", "key", "lifetime_s"}},
      {"transfer",
       {"streams", "max_streams", "chunk_size", "buffer_pool", "read_ahead", "retry_attempts",
        "retry_max_backoff_s"}},
      {"queue", {"max_running", "max_running_per_peer"}},
      {"staging", {"dir", "quota", "high_watermark", "low_watermark", "revalidate_s", "default_ttl_s"}},
      {"log", {"level", "file"}},
      {"fault_injection", {"corrupt_every", "send_delay_us", "forge_digest", "forge_bind"}},
      {"classification", {"path", "label"}},
      {"users", {"uid", "identity", "scopes", "operator"}},
  };
  return k;
}

Status CheckKnownKeys(const toml::table& t, const std::string& path) {
  for (const auto& [sect, node] : t) {
    std::string name(sect.str());
    if (name == "peers") {
      return KeyError(path, "[[peers]]",
                      "peers now come from the federation manifest ([federation] manifest); remove it");
    }
    auto it = KnownKeys().find(name);
    if (it == KnownKeys().end()) return KeyError(path, "[" + name + "]", "unknown section");
    auto check_table = [&](const toml::table& keys) -> Status {
      for (const auto& [key, v] : keys) {
        if (!it->second.count(std::string(key.str()))) {
          return KeyError(path, "[" + name + "] " + std::string(key.str()), "unknown key");
        }
      }
      return Status::OK();
    };
    if (const auto* tab = node.as_table()) {
      PORO_RETURN_IF_ERROR(check_table(*tab));
    } else if (const auto* arr = node.as_array()) {
      for (const auto& el : *arr) {
        if (const auto* row = el.as_table()) PORO_RETURN_IF_ERROR(check_table(*row));
      }
    } else {
      return KeyError(path, name, "must be a section");
    }
  }
  return Status::OK();
}

// Absolute, no "." or ".." components, no trailing slash (except "/").
bool CleanAbsolutePath(const std::string& p) {
  if (p.empty() || p[0] != '/') return false;
  if (p == "/") return true;
  if (p.back() == '/') return false;
  size_t i = 1;
  while (i <= p.size()) {
    size_t j = p.find('/', i);
    if (j == std::string::npos) j = p.size();
    std::string_view comp(p.data() + i, j - i);
    if (comp.empty() || comp == "." || comp == "..") return false;
    i = j + 1;
  }
  return true;
}

}  // namespace

Result<Config> LoadConfig(const std::string& path) {
  // Read here rather than by toml++, whose error for an unreadable file gives no reason.
  auto text = ReadSmallFile(path, 1u << 20);
  if (!text.has_value()) {
    Status e = text.error();
    return e.Annotate("cannot read config file");
  }
  toml::table t;
  try {
    t = toml::parse(*text, path);
  } catch (const toml::parse_error& e) {
    const auto& src = e.source();
    std::string where = src.begin ? " (line " + std::to_string(src.begin.line) + ")" : "";
    return Status::InvalidArgument(path + where + ": " + std::string(e.description()));
  }
  PORO_RETURN_IF_ERROR(CheckKnownKeys(t, path));
  Config c;
  c.source_file = path;
  auto str = [&](const char* sect, const char* key, std::string* out, bool required) -> Status {
    auto node = t[sect][key];
    if (!node) {
      if (required) return KeyError(path, std::string("[") + sect + "] " + key, "missing (required)");
      return Status::OK();
    }
    auto v = node.value<std::string>();
    if (!v) return KeyError(path, std::string("[") + sect + "] " + key, "must be a string");
    *out = *v;
    return Status::OK();
  };
  auto uint = [&](const char* sect, const char* key, uint64_t lo, uint64_t hi, auto* out) -> Status {
    auto node = t[sect][key];
    if (!node) return Status::OK();
    auto v = node.value<int64_t>();
    if (!v || *v < int64_t(lo) || uint64_t(*v) > hi) {
      return KeyError(path, std::string("[") + sect + "] " + key,
                      "must be an integer from " + std::to_string(lo) + " to " + std::to_string(hi));
    }
    *out = static_cast<std::remove_pointer_t<decltype(out)>>(*v);
    return Status::OK();
  };
  auto size = [&](const char* sect, const char* key, auto* out) -> Status {
    auto node = t[sect][key];
    if (!node) return Status::OK();
    uint64_t v;
    if (auto i = node.value<int64_t>(); i && node.is_integer()) {
      v = uint64_t(*i);
    } else if (auto s = node.value<std::string>()) {
      auto r = ParseSize(*s);
      if (!r.has_value())
        return KeyError(path, std::string("[") + sect + "] " + key, std::string(r.error().message()));
      v = *r;
    } else {
      return KeyError(path, std::string("[") + sect + "] " + key, "must be a size like \"4MiB\"");
    }
    *out = static_cast<std::remove_pointer_t<decltype(out)>>(v);
    return Status::OK();
  };

  PORO_RETURN_IF_ERROR(str("endpoint", "name", &c.endpoint_name, true));
  PORO_RETURN_IF_ERROR(str("network", "listen", &c.listen, false));
  if (auto n = t["network"]["sndbuf"]; n && n.value<std::string>() == std::optional<std::string>("auto")) {
    c.sndbuf = -1;
  } else {
    PORO_RETURN_IF_ERROR(uint("network", "sndbuf", 0, 1u << 30, &c.sndbuf));
  }
  PORO_RETURN_IF_ERROR(uint("network", "rcvbuf", 0, 1u << 30, &c.rcvbuf));
  PORO_RETURN_IF_ERROR(str("network", "congestion", &c.congestion, false));
  PORO_RETURN_IF_ERROR(uint("network", "idle_timeout_s", 0, 3600, &c.idle_timeout_s));
  if (auto n = t["network"]["transports"]; n) {
    const auto* arr = n.as_array();
    const std::string key = "[network] transports";
    if (arr == nullptr || arr->empty())
      return KeyError(path, key, "must be a non-empty array like [\"ucx\", \"tcp\"]");
    c.transports.clear();
    for (const auto& e : *arr) {
      auto v = e.value<std::string>();
      if (!v) return KeyError(path, key, "must be an array of strings");
      if (!proto::IsTransportName(*v))
        return KeyError(path, key, "unknown transport '" + *v + "' (" + proto::kTransportNames + ")");
      if (std::find(c.transports.begin(), c.transports.end(), *v) != c.transports.end()) {
        return KeyError(path, key, "'" + *v + "' is listed twice");
      }
      c.transports.push_back(*v);
    }
  }
  PORO_RETURN_IF_ERROR(str("network", "ucx_tls", &c.ucx_tls, false));
  PORO_RETURN_IF_ERROR(str("network", "ucx_net_devices", &c.ucx_net_devices, false));
  PORO_RETURN_IF_ERROR(str("network", "fabric_provider", &c.fabric_provider, false));
  if (c.fabric_provider.size() <= 8 || !c.fabric_provider.ends_with(";ofi_rxm")) {
    return KeyError(
        path, "[network] fabric_provider",
        "'" + c.fabric_provider + "': an ofi_rxm provider such as \"tcp;ofi_rxm\" or \"verbs;ofi_rxm\"");
  }
  PORO_RETURN_IF_ERROR(str("api", "socket", &c.api_socket, false));
  std::string mode;
  PORO_RETURN_IF_ERROR(str("api", "socket_mode", &mode, false));
  if (!mode.empty()) {
    char* end = nullptr;
    unsigned long m = std::strtoul(mode.c_str(), &end, 8);
    if (*end != '\0' || m > 0777) return KeyError(path, "[api] socket_mode", "must be octal like \"0660\"");
    c.api_socket_mode = static_cast<unsigned>(m);
  }
  PORO_RETURN_IF_ERROR(str("api", "listen", &c.api_listen, false));
  if (!c.api_listen.empty()) {
    auto hp = transport::ParseHostPort(c.api_listen);
    if (!hp.has_value())
      return KeyError(path, "[api] listen", "must be HOST:PORT, not '" + c.api_listen + "'");
  }
  if (auto n = t["api"]["operators"]) {
    const toml::array* arr = n.as_array();
    if (arr == nullptr) return KeyError(path, "[api] operators", "must be an array of identities");
    for (const auto& e : *arr) {
      auto v = e.value<std::string>();
      if (!v || v->empty()) return KeyError(path, "[api] operators", "must be an array of identities");
      c.api_operators.push_back(*v);
    }
  }
  PORO_RETURN_IF_ERROR(str("storage", "export_root", &c.export_root, true));
  PORO_RETURN_IF_ERROR(str("storage", "state_dir", &c.state_dir, true));
  PORO_RETURN_IF_ERROR(uint("storage", "keep_finished_s", 0, 3650u * 86400, &c.keep_finished_s));
  if (auto n = t["storage"]["direct_io"]) {
    auto b = n.value<bool>();
    if (!b) return KeyError(path, "[storage] direct_io", "must be true or false");
    c.direct_io = *b;
  }
  PORO_RETURN_IF_ERROR(str("tls", "ca", &c.tls_ca, true));
  PORO_RETURN_IF_ERROR(str("tls", "cert", &c.tls_cert, true));
  PORO_RETURN_IF_ERROR(str("tls", "key", &c.tls_key, true));
  PORO_RETURN_IF_ERROR(uint("transfer", "streams", 1, 64, &c.streams));
  PORO_RETURN_IF_ERROR(uint("transfer", "max_streams", 1, 256, &c.max_streams));
  if (c.streams > c.max_streams) {
    return KeyError(path, "[transfer] streams",
                    "must not exceed [transfer] max_streams (" + std::to_string(c.max_streams) + ")");
  }
  PORO_RETURN_IF_ERROR(size("transfer", "chunk_size", &c.chunk_size));
  if (Status s = ValidateChunkSize(c.chunk_size); !s.ok()) {
    return KeyError(path, "[transfer] chunk_size", std::string(s.message()));
  }
  PORO_RETURN_IF_ERROR(size("transfer", "buffer_pool", &c.buffer_pool_bytes));
  if (c.buffer_pool_bytes < 8ull * c.chunk_size) {
    return KeyError(path, "[transfer] buffer_pool", "must hold at least 8 chunks");
  }
  PORO_RETURN_IF_ERROR(uint("transfer", "read_ahead", 1, 256, &c.read_ahead));
  PORO_RETURN_IF_ERROR(uint("transfer", "retry_attempts", 0, 100000, &c.retry_attempts));
  PORO_RETURN_IF_ERROR(uint("transfer", "retry_max_backoff_s", 1, 3600, &c.retry_max_backoff_s));
  PORO_RETURN_IF_ERROR(uint("queue", "max_running", 1, 4096, &c.max_running));
  PORO_RETURN_IF_ERROR(uint("queue", "max_running_per_peer", 1, 4096, &c.max_running_per_peer));
  PORO_RETURN_IF_ERROR(str("staging", "dir", &c.staging_dir, false));
  PORO_RETURN_IF_ERROR(size("staging", "quota", &c.staging_quota));
  PORO_RETURN_IF_ERROR(uint("staging", "revalidate_s", 0, 365u * 86400, &c.staging_revalidate_s));
  PORO_RETURN_IF_ERROR(uint("staging", "default_ttl_s", 60, 365u * 86400, &c.staging_default_ttl_s));
  for (auto [key, out] : {std::pair<const char*, double*>{"high_watermark", &c.staging_high_watermark},
                          {"low_watermark", &c.staging_low_watermark}}) {
    if (auto n = t["staging"][key]) {
      auto v = n.value<double>();
      if (!v || !(*v > 0.0 && *v <= 1.0))
        return KeyError(path, std::string("[staging] ") + key,
                        "must be a fraction of the quota above 0, up to 1");
      *out = *v;
    }
  }
  if (!c.staging_dir.empty()) {
    const std::string root = c.export_root.size() > 1 && c.export_root.back() == '/'
                                 ? c.export_root.substr(0, c.export_root.size() - 1)
                                 : c.export_root;
    if (!CleanAbsolutePath(c.staging_dir) || c.staging_dir.size() <= root.size() + 1 ||
        c.staging_dir.compare(0, root.size(), root) != 0 || c.staging_dir[root.size()] != '/') {
      return KeyError(path, "[staging] dir",
                      "must be an absolute path inside [storage] export_root (" + c.export_root + "), not '" +
                          c.staging_dir + "'");
    }
    if (c.staging_quota == 0)
      return KeyError(path, "[staging] quota", "required with dir (a size like \"500GiB\")");
    if (c.staging_low_watermark >= c.staging_high_watermark) {
      return KeyError(path, "[staging] low_watermark", "must be below high_watermark");
    }
  } else if (t["staging"]) {
    return KeyError(path, "[staging] dir", "missing (required to turn staging on)");
  }
  PORO_RETURN_IF_ERROR(str("log", "level", &c.log_level, false));
  log::Level lvl;
  if (!log::ParseLevel(c.log_level, &lvl))
    return KeyError(path, "[log] level", "must be debug, info, warning or error");
  PORO_RETURN_IF_ERROR(str("log", "file", &c.log_file, false));
  PORO_RETURN_IF_ERROR(uint("fault_injection", "corrupt_every", 0, 1u << 30, &c.fault_corrupt_every));
  PORO_RETURN_IF_ERROR(uint("fault_injection", "send_delay_us", 0, 10000000, &c.fault_send_delay_us));
  if (auto n = t["fault_injection"]["forge_digest"]) {
    auto b = n.value<bool>();
    if (!b) return KeyError(path, "[fault_injection] forge_digest", "must be true or false");
    c.fault_forge_digest = *b;
  }
  if (auto n = t["fault_injection"]["forge_bind"]) {
    auto b = n.value<bool>();
    if (!b) return KeyError(path, "[fault_injection] forge_bind", "must be true or false");
    c.fault_forge_bind = *b;
  }
  if (c.fault_corrupt_every == 1) {
    return KeyError(path, "[fault_injection] corrupt_every",
                    "1 would corrupt every chunk forever; use 0 or >= 2");
  }
  PORO_RETURN_IF_ERROR(str("federation", "manifest", &c.manifest_file, false));
  PORO_RETURN_IF_ERROR(str("federation", "url", &c.manifest_url, false));
  PORO_RETURN_IF_ERROR(str("federation", "service_name", &c.service_name, false));
  PORO_RETURN_IF_ERROR(str("federation", "authority_key", &c.authority_key, true));
  if (c.manifest_file.empty() == c.manifest_url.empty()) {
    return KeyError(path, "[federation]",
                    "set exactly one of manifest (a file) and url (the control-plane service)");
  }
  if (!c.manifest_url.empty() && c.service_name.empty()) {
    return KeyError(path, "[federation] service_name",
                    "required with url (the CN of the service's certificate)");
  }
  PORO_RETURN_IF_ERROR(uint("federation", "refresh_s", 1, 3600, &c.refresh_s));
  PORO_RETURN_IF_ERROR(uint("federation", "report_s", 0, 86400, &c.report_s));
  if (auto n = t["federation"]["require_token"]) {
    auto b = n.value<bool>();
    if (!b) return KeyError(path, "[federation] require_token", "must be true or false");
    c.require_token = *b;
  }
  PORO_RETURN_IF_ERROR(str("audit", "log", &c.audit_log, false));
  if (c.audit_log.empty()) c.audit_log = c.state_dir + "/audit.log";
  PORO_RETURN_IF_ERROR(str("tokens", "issuer", &c.token_issuer, false));
  PORO_RETURN_IF_ERROR(str("tokens", "key", &c.token_key, false));
  PORO_RETURN_IF_ERROR(uint("tokens", "lifetime_s", 60, 7 * 86400, &c.token_lifetime_s));
  if (c.token_issuer.empty() != c.token_key.empty()) {
    return KeyError(path, "[tokens]", "issuer and key go together");
  }
  if (auto* arr = t["classification"].as_array()) {
    for (size_t i = 0; i < arr->size(); ++i) {
      auto* ct = (*arr)[i].as_table();
      std::string key = "[[classification]] #" + std::to_string(i + 1);
      if (!ct) return KeyError(path, key, "must be a table");
      auto p = (*ct)["path"].value<std::string>();
      auto l = (*ct)["label"].value<std::string>();
      if (!p || !CleanAbsolutePath(*p))
        return KeyError(path, key + " path", "must be an absolute path like \"/datasets/clinical\"");
      if (!l || l->empty()) return KeyError(path, key + " label", "missing");
      c.classifications.push_back({*p, *l});
    }
  } else if (t["classification"]) {
    return KeyError(path, "classification", "must be an array of tables ([[classification]])");
  }
  if (auto* arr = t["users"].as_array()) {
    for (size_t i = 0; i < arr->size(); ++i) {
      auto* ut = (*arr)[i].as_table();
      std::string key = "[[users]] #" + std::to_string(i + 1);
      if (!ut) return KeyError(path, key, "must be a table");
      UserConfig u;
      auto uid = (*ut)["uid"].value<int64_t>();
      auto id = (*ut)["identity"].value<std::string>();
      if (!uid || *uid < 0) return KeyError(path, key + " uid", "must be a non-negative integer");
      if (!id || id->empty()) return KeyError(path, key + " identity", "missing");
      u.uid = *uid;
      u.identity = *id;
      if (auto op = (*ut)["operator"]) {
        auto b = op.value<bool>();
        if (!b) return KeyError(path, key + " operator", "must be true or false");
        u.is_operator = *b;
      }
      if (auto* sc = (*ut)["scopes"].as_array()) {
        for (const auto& e : *sc) {
          auto v = e.value<std::string>();
          if (!v) return KeyError(path, key + " scopes", "must be an array of strings");
          u.scopes.push_back(*v);
        }
      } else {
        u.scopes = {"storage.read:/", "storage.create:/", "storage.modify:/"};
      }
      if (c.FindUser(u.uid)) return KeyError(path, key, "duplicate uid " + std::to_string(u.uid));
      c.users.push_back(std::move(u));
    }
  } else if (t["users"]) {
    return KeyError(path, "users", "must be an array of tables ([[users]])");
  }
  return c;
}

}  // namespace pororoca::daemon
