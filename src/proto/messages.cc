#include "proto/messages.h"

#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <utility>

namespace pororoca::proto {
namespace {

using json = nlohmann::json;

std::vector<std::byte> Dump(const json& j) {
  // Invalid UTF-8 in a string we send is replaced rather than thrown on (EncodeJsonFrame does the
  // same); keys are sorted by nlohmann::json, so equal objects give equal bytes.
  std::string s = j.dump(-1, ' ', false, json::error_handler_t::replace);
  std::vector<std::byte> out(s.size());
  if (!s.empty()) std::memcpy(out.data(), s.data(), s.size());
  return out;
}

// Parses a message body into a JSON object without throwing.
Result<json> ParseObject(std::string_view msg, std::span<const std::byte> body) {
  const char* p = reinterpret_cast<const char*>(body.data());
  json j = json::parse(p, p + body.size(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Status::Protocol(std::string(msg) + ": body is not valid JSON");
  if (!j.is_object()) return Status::Protocol(std::string(msg) + ": body is not a JSON object");
  return j;
}

bool IsHex(std::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) return false;
  }
  return true;
}

// Reads the fields of one JSON object by name, checking each one's JSON type and range, never
// throwing (no get<>() or value() on a value of the wrong type). Every error is kProtocol and names
// the field as "<where>.<key>", e.g. "OPEN.options.chunk_size".
class FieldReader {
 public:
  FieldReader(std::string where, const json& obj) : where_(std::move(where)), obj_(&obj) {}

  Status Error(std::string_view key, std::string_view what) const {
    return Status::Protocol(where_ + "." + std::string(key) + ": " + std::string(what));
  }

  bool Has(std::string_view key) const { return Find(key) != nullptr; }

  Status String(std::string_view key, std::string* out, size_t max_bytes = 0) const {
    PORO_ASSIGN_OR_RETURN(const json* v, Required(key));
    return StringValue(key, *v, out, max_bytes);
  }

  // Absent leaves `out` empty; present must be a string.
  Status OptString(std::string_view key, std::optional<std::string>* out, size_t max_bytes = 0) const {
    out->reset();
    const json* v = Find(key);
    if (v == nullptr) return Status::OK();
    std::string s;
    PORO_RETURN_IF_ERROR(StringValue(key, *v, &s, max_bytes));
    *out = std::move(s);
    return Status::OK();
  }

  Status Bool(std::string_view key, bool* out) const {
    PORO_ASSIGN_OR_RETURN(const json* v, Required(key));
    if (!v->is_boolean()) return Error(key, "expected a boolean");
    *out = v->get_ref<const json::boolean_t&>();
    return Status::OK();
  }

  // An unsigned JSON integer in [lo, hi] (hi defaults to what T holds).
  template <class T>
  Status Unsigned(std::string_view key, T* out, uint64_t lo = 0,
                  uint64_t hi = std::numeric_limits<T>::max()) const {
    PORO_ASSIGN_OR_RETURN(const json* v, Required(key));
    if (!v->is_number_unsigned()) return Error(key, "expected an unsigned integer");
    const uint64_t x = v->get_ref<const json::number_unsigned_t&>();
    if (x < lo || x > hi) {
      return Error(key,
                   std::to_string(x) + " is out of range " + std::to_string(lo) + ".." + std::to_string(hi));
    }
    *out = static_cast<T>(x);
    return Status::OK();
  }

  // Any JSON integer that fits an int64_t.
  Status Integer(std::string_view key, int64_t* out) const {
    PORO_ASSIGN_OR_RETURN(const json* v, Required(key));
    if (v->is_number_unsigned()) {
      const uint64_t x = v->get_ref<const json::number_unsigned_t&>();
      if (x > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return Error(key, "integer out of range");
      }
      *out = static_cast<int64_t>(x);
      return Status::OK();
    }
    if (!v->is_number_integer()) return Error(key, "expected an integer");
    *out = v->get_ref<const json::number_integer_t&>();
    return Status::OK();
  }

  // A nested object, read by a FieldReader whose errors name "<where>.<key>.<field>".
  Result<FieldReader> Object(std::string_view key) const {
    PORO_ASSIGN_OR_RETURN(const json* v, Required(key));
    if (!v->is_object()) return Error(key, "expected an object");
    return FieldReader(where_ + "." + std::string(key), *v);
  }

 private:
  const json* Find(std::string_view key) const {
    auto it = obj_->find(key);
    return it == obj_->end() ? nullptr : &*it;
  }

  Result<const json*> Required(std::string_view key) const {
    const json* v = Find(key);
    if (v == nullptr) return Error(key, "missing");
    return v;
  }

  Status StringValue(std::string_view key, const json& v, std::string* out, size_t max_bytes) const {
    if (!v.is_string()) return Error(key, "expected a string");
    const std::string& s = v.get_ref<const json::string_t&>();
    if (max_bytes != 0 && s.size() > max_bytes) {
      return Error(key, "longer than " + std::to_string(max_bytes) + " bytes");
    }
    *out = s;
    return Status::OK();
  }

  std::string where_;
  const json* obj_;
};

Status ReadTransferId(const FieldReader& r, std::string* out) {
  PORO_RETURN_IF_ERROR(r.String("transfer_id", out));
  if (out->size() != kTransferIdHexDigits || !IsHex(*out)) {
    return r.Error("transfer_id", "expected " + std::to_string(kTransferIdHexDigits) + " hex digits");
  }
  return Status::OK();
}

// {"name": "" or one clean path component, "is_dir": bool}
Result<Source> ReadSource(const FieldReader& parent) {
  PORO_ASSIGN_OR_RETURN(FieldReader r, parent.Object("src"));
  Source src;
  PORO_RETURN_IF_ERROR(r.String("name", &src.name));
  if (!src.name.empty()) {
    Status s = ValidateRelativePath(src.name);
    if (!s.ok()) return r.Error("name", s.message());
    if (src.name.find('/') != std::string::npos) return r.Error("name", "must be one path component");
  }
  PORO_RETURN_IF_ERROR(r.Bool("is_dir", &src.is_dir));
  return src;
}

json SourceJson(const Source& s) { return json{{"name", s.name}, {"is_dir", s.is_dir}}; }

// Codes from newer peers that we do not know, and 0 (no error is not an ERROR), become kInternal.
Code CodeFromInt(int64_t c) {
  if (c <= 0 || c > static_cast<int64_t>(Code::kUnauthenticated)) return Code::kInternal;
  return static_cast<Code>(c);
}

}  // namespace

std::string_view DirectionName(Direction d) { return d == Direction::kPull ? "pull" : "push"; }

Result<Direction> ParseDirection(std::string_view s) {
  if (s == "push") return Direction::kPush;
  if (s == "pull") return Direction::kPull;
  return Status::InvalidArgument("direction must be push or pull");
}

std::string_view ExistingName(Existing e) {
  switch (e) {
    case Existing::kOverwrite:
      return "overwrite";
    case Existing::kSkip:
      return "skip";
    case Existing::kFail:
      break;
  }
  return "fail";
}

Result<Existing> ParseExisting(std::string_view s) {
  if (s == "fail") return Existing::kFail;
  if (s == "overwrite") return Existing::kOverwrite;
  if (s == "skip") return Existing::kSkip;
  return Status::InvalidArgument("existing must be fail, overwrite or skip");
}

std::string MsgTypeName(MsgType t) {
  switch (t) {
    case MsgType::kHello:
      return "HELLO";
    case MsgType::kOpen:
      return "OPEN";
    case MsgType::kOpenOk:
      return "OPEN_OK";
    case MsgType::kError:
      return "ERROR";
    case MsgType::kFiles:
      return "FILES";
    case MsgType::kPlan:
      return "PLAN";
    case MsgType::kFileEnd:
      return "FILE_END";
    case MsgType::kFileDone:
      return "FILE_DONE";
    case MsgType::kBadChunk:
      return "BAD_CHUNK";
    case MsgType::kEnd:
      return "END";
    case MsgType::kSummary:
      return "SUMMARY";
    case MsgType::kCancel:
      return "CANCEL";
    case MsgType::kKeepalive:
      return "KEEPALIVE";
    case MsgType::kStart:
      return "START";
    case MsgType::kChannels:
      return "CHANNELS";
    case MsgType::kQueryResult:
      return "QUERY_RESULT";
    case MsgType::kUnknown:
      break;
  }
  return "unknown (" + std::to_string(static_cast<int>(t)) + ")";
}

// ---- HELLO ----------------------------------------------------------------------------------------

bool IsTransportName(std::string_view name) { return name == "tcp" || name == "ucx" || name == "fabric"; }

std::vector<std::byte> EncodeHello(const Hello& m) {
  json j{{"proto", m.proto}, {"endpoint", m.endpoint}, {"software", m.software}};
  if (m.session) j["session"] = HexEncode(*m.session);
  if (!m.transports.empty()) j["transports"] = m.transports;
  if (m.transport) j["transport"] = *m.transport;
  return Dump(j);
}

Result<Hello> DecodeHello(std::span<const std::byte> body) {
  PORO_ASSIGN_OR_RETURN(json j, ParseObject("HELLO", body));
  FieldReader r("HELLO", j);
  Hello m;
  PORO_RETURN_IF_ERROR(r.Integer("proto", &m.proto));
  PORO_RETURN_IF_ERROR(r.String("endpoint", &m.endpoint));
  PORO_RETURN_IF_ERROR(r.String("software", &m.software));
  std::optional<std::string> hex;
  PORO_RETURN_IF_ERROR(r.OptString("session", &hex));
  if (hex) {
    SessionId sid{};
    if (hex->size() != 2 * sid.size() || !IsHex(*hex)) return r.Error("session", "expected 32 hex digits");
    auto bytes = HexDecode(*hex);
    if (!bytes.ok()) return r.Error("session", "expected 32 hex digits");
    std::memcpy(sid.data(), bytes->data(), sid.size());
    m.session = sid;
  }
  if (auto it = j.find("transports"); it != j.end()) {
    if (!it->is_array() || it->size() > kMaxTransports) {
      return r.Error("transports",
                     "expected an array of at most " + std::to_string(kMaxTransports) + " names");
    }
    for (const json& e : *it) {
      if (!e.is_string() || e.get_ref<const std::string&>().empty() ||
          e.get_ref<const std::string&>().size() > 16) {
        return r.Error("transports", "expected names of 1 to 16 bytes");
      }
      m.transports.push_back(e.get<std::string>());
    }
  }
  PORO_RETURN_IF_ERROR(r.OptString("transport", &m.transport, 16));
  return m;
}

// ---- OPEN -----------------------------------------------------------------------------------------

namespace {

Status ReadProtection(const FieldReader& r, std::string_view key, std::optional<Protection>* out,
                      bool required) {
  std::optional<std::string> name;
  PORO_RETURN_IF_ERROR(r.OptString(key, &name));
  out->reset();
  if (!name) return required ? r.Error(key, "missing") : Status::OK();
  *out = ParseProtection(*name);
  if (!*out) return r.Error(key, "must be clear, integrity or private");
  return Status::OK();
}

}  // namespace

std::vector<std::byte> EncodeOpen(const Open& m) {
  json j{{"transfer_id", m.transfer_id},
         {"direction", DirectionName(m.direction)},
         {"path", m.path},
         {"trailing_slash", m.trailing_slash},
         {"recursive", m.recursive},
         {"streams", m.streams},
         // options.streams repeats OPEN.streams, as the initiator has always written it.
         {"options", json{{"streams", m.streams},
                          {"chunk_size", m.options.chunk_size},
                          {"sync", m.options.sync},
                          {"existing", ExistingName(m.options.existing)}}},
         {"local_path", m.local_path}};
  if (m.token) j["token"] = *m.token;
  if (m.protection) j["protection"] = ProtectionName(*m.protection);
  if (m.src) j["src"] = SourceJson(*m.src);
  if (m.classification) j["classification"] = *m.classification;
  if (m.options.hard_links) j["options"]["hard_links"] = true;  // absent means false (older peers)
  if (m.query) {
    j["query"] = json{{"op", m.query->op}, {"chunk_size", m.query->chunk_size}, {"limit", m.query->limit}};
  }
  return Dump(j);
}

Result<Open> DecodeOpen(std::span<const std::byte> body) {
  PORO_ASSIGN_OR_RETURN(json j, ParseObject("OPEN", body));
  FieldReader r("OPEN", j);
  Open m;
  PORO_RETURN_IF_ERROR(ReadTransferId(r, &m.transfer_id));
  std::string direction;
  PORO_RETURN_IF_ERROR(r.String("direction", &direction));
  auto d = ParseDirection(direction);
  if (!d.ok()) return r.Error("direction", "must be push or pull");
  m.direction = *d;
  PORO_RETURN_IF_ERROR(r.String("path", &m.path, kMaxPathBytes));
  PORO_RETURN_IF_ERROR(r.Bool("trailing_slash", &m.trailing_slash));
  PORO_RETURN_IF_ERROR(r.Bool("recursive", &m.recursive));
  PORO_RETURN_IF_ERROR(r.Unsigned("streams", &m.streams, 1, kMaxStreams));
  {
    PORO_ASSIGN_OR_RETURN(FieldReader o, r.Object("options"));
    PORO_RETURN_IF_ERROR(o.Unsigned("chunk_size", &m.options.chunk_size, 1, kMaxChunkSize));
    PORO_RETURN_IF_ERROR(o.Bool("sync", &m.options.sync));
    std::string existing;
    PORO_RETURN_IF_ERROR(o.String("existing", &existing));
    auto e = ParseExisting(existing);
    if (!e.ok()) return o.Error("existing", "must be fail, overwrite or skip");
    m.options.existing = *e;
    if (o.Has("hard_links")) PORO_RETURN_IF_ERROR(o.Bool("hard_links", &m.options.hard_links));
  }
  PORO_RETURN_IF_ERROR(r.String("local_path", &m.local_path, kMaxPathBytes));
  PORO_RETURN_IF_ERROR(r.OptString("token", &m.token));
  PORO_RETURN_IF_ERROR(ReadProtection(r, "protection", &m.protection, false));
  if (m.direction == Direction::kPush) {
    PORO_ASSIGN_OR_RETURN(m.src, ReadSource(r));
    m.classification.emplace();
    PORO_RETURN_IF_ERROR(r.String("classification", &*m.classification));
  }
  if (r.Has("query")) {
    if (m.direction != Direction::kPull) return r.Error("query", "only with direction pull");
    PORO_ASSIGN_OR_RETURN(FieldReader q, r.Object("query"));
    Query query;
    PORO_RETURN_IF_ERROR(q.String("op", &query.op, 16));
    if (query.op != "list" && query.op != "checksum") return q.Error("op", "must be list or checksum");
    PORO_RETURN_IF_ERROR(q.Unsigned("chunk_size", &query.chunk_size, 0, kMaxChunkSize));
    PORO_RETURN_IF_ERROR(q.Unsigned("limit", &query.limit));
    m.query = std::move(query);
  }
  return m;
}

// ---- OPEN_OK --------------------------------------------------------------------------------------

std::vector<std::byte> EncodeOpenOk(const OpenOk& m) {
  json j{{"transfer_id", m.transfer_id}, {"rule", m.rule}};
  if (m.protection != Protection::kClear) j["protection"] = ProtectionName(m.protection);
  if (m.target) j["target"] = *m.target;
  if (m.src) j["src"] = SourceJson(*m.src);
  if (m.classification) j["classification"] = *m.classification;
  return Dump(j);
}

Result<OpenOk> DecodeOpenOk(std::span<const std::byte> body, Direction direction) {
  PORO_ASSIGN_OR_RETURN(json j, ParseObject("OPEN_OK", body));
  FieldReader r("OPEN_OK", j);
  OpenOk m;
  PORO_RETURN_IF_ERROR(ReadTransferId(r, &m.transfer_id));
  PORO_RETURN_IF_ERROR(r.String("rule", &m.rule));
  std::optional<Protection> level;
  PORO_RETURN_IF_ERROR(ReadProtection(r, "protection", &level, false));
  m.protection = level.value_or(Protection::kClear);
  if (direction == Direction::kPush) {
    m.target.emplace();
    PORO_RETURN_IF_ERROR(r.String("target", &*m.target));
  } else {
    PORO_ASSIGN_OR_RETURN(m.src, ReadSource(r));
    m.classification.emplace();
    PORO_RETURN_IF_ERROR(r.String("classification", &*m.classification));
  }
  return m;
}

// ---- CHANNELS -------------------------------------------------------------------------------------

std::vector<std::byte> EncodeChannels(const Channels& m) {
  json addrs = json::array();
  for (const auto& a : m.addresses) addrs.push_back(HexEncode(a));
  return Dump(json{{"transport", m.transport}, {"addresses", addrs}});
}

Result<Channels> DecodeChannels(std::span<const std::byte> body, uint32_t streams) {
  PORO_ASSIGN_OR_RETURN(json j, ParseObject("CHANNELS", body));
  FieldReader r("CHANNELS", j);
  Channels m;
  PORO_RETURN_IF_ERROR(r.String("transport", &m.transport, 16));
  auto it = j.find("addresses");
  if (it == j.end() || !it->is_array()) return r.Error("addresses", "expected an array");
  if (it->size() != streams) {
    return r.Error("addresses",
                   std::to_string(it->size()) + " addresses for " + std::to_string(streams) + " streams");
  }
  for (const json& e : *it) {
    if (!e.is_string()) return r.Error("addresses", "expected hex strings");
    const std::string& hex = e.get_ref<const std::string&>();
    if (hex.empty() || hex.size() > 2 * kMaxChannelAddress || !IsHex(hex)) {
      return r.Error("addresses",
                     "expected hex strings of 1 to " + std::to_string(kMaxChannelAddress) + " bytes");
    }
    auto bytes = HexDecode(hex);
    if (!bytes.ok()) return r.Error("addresses", "expected hex strings");
    m.addresses.push_back(std::move(*bytes));
  }
  return m;
}

// ---- START ----------------------------------------------------------------------------------------

std::vector<std::byte> EncodeStart(const Start& m) {
  return Dump(json{{"protection", ProtectionName(m.protection)}});
}

Result<Start> DecodeStart(std::span<const std::byte> body) {
  PORO_ASSIGN_OR_RETURN(json j, ParseObject("START", body));
  FieldReader r("START", j);
  std::optional<Protection> level;
  PORO_RETURN_IF_ERROR(ReadProtection(r, "protection", &level, true));
  return Start{*level};
}

// ---- ERROR ----------------------------------------------------------------------------------------

ErrorMsg ErrorMsgFromStatus(const Status& s) {
  ErrorMsg m;
  m.code = s.ok() ? Code::kInternal : s.code();
  m.message = s.ok() ? std::string("error without a cause") : std::string(s.message());
  m.retryable = s.retryable();
  return m;
}

Status StatusFromErrorMsg(const ErrorMsg& e) {
  Status s(e.code == Code::kOk ? Code::kInternal : e.code, "peer: " + e.message);
  s.WithRetryable(e.retryable);
  return s;
}

Status StatusFromErrorBody(std::span<const std::byte> body) {
  auto m = DecodeErrorMsg(body);
  if (!m.ok()) return m.error();
  return StatusFromErrorMsg(*m);
}

std::vector<std::byte> EncodeErrorMsg(const ErrorMsg& m) {
  return Dump(json{{"code", static_cast<int>(m.code)},
                   {"name", std::string(CodeName(m.code))},
                   {"message", m.message},
                   {"retryable", m.retryable}});
}

Result<ErrorMsg> DecodeErrorMsg(std::span<const std::byte> body) {
  PORO_ASSIGN_OR_RETURN(json j, ParseObject("ERROR", body));
  FieldReader r("ERROR", j);
  ErrorMsg m;
  int64_t code = 0;
  PORO_RETURN_IF_ERROR(r.Integer("code", &code));
  m.code = CodeFromInt(code);
  PORO_RETURN_IF_ERROR(r.String("message", &m.message));
  PORO_RETURN_IF_ERROR(r.Bool("retryable", &m.retryable));
  return m;
}

// ---- END, SUMMARY, CANCEL, KEEPALIVE --------------------------------------------------------------

std::vector<std::byte> EncodeEnd(const End& m) {
  json j{{"files", m.files}};
  if (m.specials > 0) {
    j["specials"] = m.specials;
    json names = json::array();
    for (const auto& sf : m.special_names) names.push_back(json{{"path", sf.path}, {"kind", sf.kind}});
    j["special_names"] = std::move(names);
  }
  return Dump(j);
}

Result<End> DecodeEnd(std::span<const std::byte> body) {
  PORO_ASSIGN_OR_RETURN(json j, ParseObject("END", body));
  FieldReader r("END", j);
  End m;
  PORO_RETURN_IF_ERROR(r.Unsigned("files", &m.files));
  if (!r.Has("specials")) return m;
  PORO_RETURN_IF_ERROR(r.Unsigned("specials", &m.specials));
  auto names = j.find("special_names");
  if (names == j.end() || !names->is_array()) return r.Error("special_names", "expected an array");
  if (names->size() > kMaxSpecialNames || names->size() > m.specials) {
    return r.Error("special_names", "more names than specials, or more than 100");
  }
  for (const json& n : *names) {
    if (!n.is_object()) return r.Error("special_names", "expected objects");
    FieldReader e("END.special_names[]", n);
    SpecialFile sf;
    PORO_RETURN_IF_ERROR(e.String("path", &sf.path, kMaxPathBytes));
    PORO_RETURN_IF_ERROR(e.String("kind", &sf.kind, 64));
    m.special_names.push_back(std::move(sf));
  }
  return m;
}

nlohmann::json SummaryToJson(const Summary& s) {
  json j{{"files_committed", s.files_committed}, {"bytes_committed", s.bytes_committed},
         {"files_skipped", s.files_skipped},     {"bytes_skipped", s.bytes_skipped},
         {"files_failed", s.files_failed},       {"chunks_corrupt", s.chunks_corrupt},
         {"bytes_resumed", s.bytes_resumed}};
  if (!s.link_failures.empty()) {
    json a = json::array();
    for (const auto& [path, error] : s.link_failures) a.push_back(json{{"path", path}, {"error", error}});
    j["link_failures"] = std::move(a);
  }
  return j;
}

std::vector<std::byte> EncodeSummary(const Summary& m) { return Dump(SummaryToJson(m)); }

Result<Summary> DecodeSummary(std::span<const std::byte> body) {
  PORO_ASSIGN_OR_RETURN(json j, ParseObject("SUMMARY", body));
  FieldReader r("SUMMARY", j);
  Summary m;
  PORO_RETURN_IF_ERROR(r.Unsigned("files_committed", &m.files_committed));
  PORO_RETURN_IF_ERROR(r.Unsigned("bytes_committed", &m.bytes_committed));
  PORO_RETURN_IF_ERROR(r.Unsigned("files_skipped", &m.files_skipped));
  PORO_RETURN_IF_ERROR(r.Unsigned("bytes_skipped", &m.bytes_skipped));
  PORO_RETURN_IF_ERROR(r.Unsigned("files_failed", &m.files_failed));
  PORO_RETURN_IF_ERROR(r.Unsigned("chunks_corrupt", &m.chunks_corrupt));
  PORO_RETURN_IF_ERROR(r.Unsigned("bytes_resumed", &m.bytes_resumed));
  if (!r.Has("link_failures")) return m;
  const json& a = j["link_failures"];
  if (!a.is_array() || a.size() > 100 || a.size() > m.files_failed) {
    return r.Error("link_failures", "expected an array of at most 100, and no more than files_failed");
  }
  for (const json& x : a) {
    if (!x.is_object()) return r.Error("link_failures", "expected objects");
    FieldReader e("SUMMARY.link_failures[]", x);
    std::string path, error;
    PORO_RETURN_IF_ERROR(e.String("path", &path, kMaxPathBytes));
    PORO_RETURN_IF_ERROR(e.String("error", &error, 8192));
    m.link_failures.emplace_back(std::move(path), std::move(error));
  }
  return m;
}

std::vector<std::byte> EncodeCancel(const Cancel& m) { return Dump(json{{"reason", m.reason}}); }

Result<Cancel> DecodeCancel(std::span<const std::byte> body) {
  PORO_ASSIGN_OR_RETURN(json j, ParseObject("CANCEL", body));
  FieldReader r("CANCEL", j);
  Cancel m;
  PORO_RETURN_IF_ERROR(r.String("reason", &m.reason));
  return m;
}

Status StatusFromCancelBody(std::span<const std::byte> body) {
  auto m = DecodeCancel(body);
  if (!m.ok()) return m.error();
  std::string what = "transfer cancelled by the peer";
  if (!m->reason.empty()) what += ": " + m->reason;
  return Status::Cancelled(what);
}

std::vector<std::byte> EncodeKeepalive(const Keepalive& m) {
  if (!m.verified) return {};
  return Dump(json{{"verified", *m.verified}});
}

Result<Keepalive> DecodeKeepalive(std::span<const std::byte> body) {
  Keepalive m;
  if (body.empty()) return m;
  PORO_ASSIGN_OR_RETURN(json j, ParseObject("KEEPALIVE", body));
  FieldReader r("KEEPALIVE", j);
  if (r.Has("verified")) {
    uint64_t v = 0;
    PORO_RETURN_IF_ERROR(r.Unsigned("verified", &v));
    m.verified = v;
  }
  return m;
}

}  // namespace pororoca::proto
