#include "daemon/transfer.h"

#include <openssl/rand.h>

#include <array>
#include <chrono>

#include "proto/messages.h"
#include "proto/wire.h"

namespace pororoca::daemon {

using nlohmann::json;

namespace {

constexpr std::array<std::pair<TransferState, std::string_view>, 7> kStateNames{{
    {TransferState::kQueued, "queued"},
    {TransferState::kRunning, "running"},
    {TransferState::kRetrying, "retrying"},
    {TransferState::kSucceeded, "succeeded"},
    {TransferState::kPartial, "partial"},
    {TransferState::kFailed, "failed"},
    {TransferState::kCancelled, "cancelled"},
}};

// One pass over a record's fields, for writing and for reading: the field list exists once
// (VisitRecord) and each direction is a visitor. A reader reports the first field of the wrong
// type; a missing field keeps the default.
class RecordVisitor {
 public:
  virtual ~RecordVisitor() = default;
  virtual void Field(const char* name, std::string& v) = 0;
  virtual void Field(const char* name, bool& v) = 0;
  virtual void Field(const char* name, int64_t& v) = 0;
  virtual void Field(const char* name, uint64_t& v) = 0;
  virtual void Field(const char* name, unsigned& v) = 0;
  virtual void Field(const char* name, json& v) = 0;
  virtual void Field(const char* name, TransferState& v) = 0;
  virtual void Field(const char* name, engine::StatsSnapshot& v) = 0;
  virtual void Field(const char* name, std::vector<std::pair<std::string, std::string>>& v) = 0;
  // "push" / "pull" on disk.
  virtual void Direction(const char* name, bool& push) = 0;
};

// The record: the request, then what happened. Caller holds t.mu (or owns t alone).
void VisitRecord(RecordVisitor& v, Transfer& t) PORO_NO_THREAD_SAFETY_ANALYSIS {
  v.Field("id", t.id);
  v.Direction("direction", t.push);
  v.Field("local_path", t.local_path);
  v.Field("endpoint", t.remote.endpoint);
  v.Field("remote_path", t.remote.path);
  v.Field("recursive", t.recursive);
  v.Field("options", t.options);
  v.Field("uid", t.uid);
  v.Field("user", t.user);
  v.Field("token_given", t.token_given);  // never the token itself
  v.Field("created_ms", t.created_ms);
  v.Field("priority", t.priority);
  v.Field("submission_id", t.submission_id);
  v.Field("job_id", t.job_id);
  v.Field("job_index", t.job_index);
  v.Field("state", t.state);
  v.Field("attempts", t.attempts);
  v.Field("error", t.error);
  v.Field("error_code", t.error_code);
  v.Field("bytes_sent_prev", t.bytes_sent_prev);
  v.Field("chunks_corrupt_prev", t.chunks_corrupt_prev);
  v.Field("first_resumed", t.first_resumed);
  v.Field("summary", t.summary);
  v.Field("started_ms", t.started_ms);
  v.Field("finished_ms", t.finished_ms);
  v.Field("next_attempt_ms", t.next_attempt_ms);
  v.Field("protection", t.protection);
  v.Field("transport", t.transport);
  v.Field("transport_note", t.transport_note);
  v.Field("progress", t.last);
  v.Field("failures", t.failures);
  v.Field("skipped_special", t.specials);
}

}  // namespace

json SpecialsJson(const std::vector<std::pair<std::string, std::string>>& specials) {
  json a = json::array();
  for (const auto& [p, k] : specials) a.push_back(json{{"path", p}, {"kind", k}});
  return a;
}

namespace {

json FailuresJson(const std::vector<std::pair<std::string, std::string>>& failures) {
  json a = json::array();
  for (const auto& [p, m] : failures) a.push_back(json{{"path", p}, {"error", m}});
  return a;
}

// Writes the record; for the API's view (`for_view`) it leaves out the fields private to this
// daemon and the ones the view replaces with live figures.
class RecordWriter final : public RecordVisitor {
 public:
  explicit RecordWriter(bool for_view = false) : for_view_(for_view) {}
  json out = json::object();
  void Field(const char* n, std::string& v) override { Put(n, v); }
  void Field(const char* n, bool& v) override { Put(n, v); }
  void Field(const char* n, int64_t& v) override { Put(n, v); }
  void Field(const char* n, uint64_t& v) override { Put(n, v); }
  void Field(const char* n, unsigned& v) override { Put(n, v); }
  void Field(const char* n, json& v) override { Put(n, v); }
  void Field(const char* n, TransferState& v) override { Put(n, TransferStateName(v)); }
  void Field(const char* n, engine::StatsSnapshot& v) override {
    if (!Skip(n)) out[n] = v.ToJson();
  }
  void Field(const char* n, std::vector<std::pair<std::string, std::string>>& v) override {
    if (!Skip(n)) out[n] = FailuresJson(v);
  }
  void Direction(const char* n, bool& push) override {
    Put(n, proto::DirectionName(push ? proto::Direction::kPush : proto::Direction::kPull));
  }

 private:
  bool Skip(std::string_view n) const {
    if (!for_view_) return false;
    for (std::string_view p :
         {"local_path", "endpoint", "remote_path", "uid", "token_given", "bytes_sent_prev",
          "chunks_corrupt_prev", "first_resumed", "progress", "failures"}) {
      if (n == p) return true;
    }
    return false;
  }
  template <class V>
  void Put(const char* n, const V& v) {
    if (!Skip(n)) out[n] = v;
  }
  const bool for_view_;
};

class RecordReader final : public RecordVisitor {
 public:
  explicit RecordReader(const json& in) : in_(in) {}
  Status status;

  void Field(const char* n, std::string& v) override {
    if (const json* j = Get(n, json::value_t::string)) v = j->get_ref<const std::string&>();
  }
  void Field(const char* n, bool& v) override {
    if (const json* j = Get(n, json::value_t::boolean)) v = j->get<bool>();
  }
  void Field(const char* n, int64_t& v) override {
    if (const json* j = Number(n)) v = j->get<int64_t>();
  }
  void Field(const char* n, uint64_t& v) override {
    if (const json* j = Number(n, true)) v = j->get<uint64_t>();
  }
  void Field(const char* n, unsigned& v) override {
    if (const json* j = Number(n, true)) v = static_cast<unsigned>(j->get<uint64_t>());
  }
  void Field(const char* n, json& v) override {
    auto it = in_.find(n);
    if (it != in_.end()) v = *it;
  }
  void Field(const char* n, TransferState& v) override {
    std::string name;
    Field(n, name);
    if (name.empty()) return;
    auto s = ParseTransferState(name);
    if (!s) return Fail(n, "unknown state '" + name + "'");
    v = *s;
  }
  void Field(const char* n, engine::StatsSnapshot& v) override {
    if (const json* j = Get(n, json::value_t::object)) v = engine::StatsSnapshot::FromJson(*j);
  }
  void Field(const char* n, std::vector<std::pair<std::string, std::string>>& v) override {
    const json* j = Get(n, json::value_t::array);
    if (j == nullptr) return;
    for (const auto& f : *j) {
      if (!f.is_object()) return Fail(n, "expected objects");
      auto p = f.find("path"), e = f.find("error");
      if (p == f.end() || !p->is_string() || e == f.end() || !e->is_string()) {
        return Fail(n, "expected {path, error} strings");
      }
      v.emplace_back(p->get<std::string>(), e->get<std::string>());
    }
  }
  void Direction(const char* n, bool& push) override {
    std::string d;
    Field(n, d);
    if (d.empty()) return;
    auto dir = proto::ParseDirection(d);
    if (!dir.has_value()) return Fail(n, "must be push or pull");
    push = *dir == proto::Direction::kPush;
  }

 private:
  void Fail(const char* n, const std::string& why) {
    if (status.ok()) status = Status::InvalidArgument(std::string(n) + ": " + why);
  }
  const json* Get(const char* n, json::value_t type) {
    auto it = in_.find(n);
    if (it == in_.end() || it->is_null()) return nullptr;
    if (it->type() != type) {
      Fail(n, std::string("expected ") + json(type).type_name() + ", got " + it->type_name());
      return nullptr;
    }
    return &*it;
  }
  const json* Number(const char* n, bool is_unsigned = false) {
    auto it = in_.find(n);
    if (it == in_.end() || it->is_null()) return nullptr;
    if (!it->is_number_integer() || (is_unsigned && !it->is_number_unsigned())) {
      Fail(n, is_unsigned ? "expected an unsigned integer" : "expected an integer");
      return nullptr;
    }
    return &*it;
  }
  const json& in_;
};

}  // namespace

std::string_view TransferStateName(TransferState s) {
  for (const auto& [state, name] : kStateNames) {
    if (state == s) return name;
  }
  return "unknown";
}

std::optional<TransferState> ParseTransferState(std::string_view name) {
  for (const auto& [state, n] : kStateNames) {
    if (n == name) return state;
  }
  return std::nullopt;
}

bool IsTerminal(TransferState s) {
  return s == TransferState::kSucceeded || s == TransferState::kPartial || s == TransferState::kFailed ||
         s == TransferState::kCancelled;
}

Result<Location> Location::Parse(const std::string& s) {
  Location l;
  if (s.empty()) return Status::InvalidArgument("empty path");
  if (s.front() == '/') {
    l.path = s;
  } else {
    size_t colon = s.find(':');
    if (colon == std::string::npos || colon == 0) {
      return Status::InvalidArgument("'" + s + "' is neither an absolute local path nor ENDPOINT:/path");
    }
    l.remote = true;
    l.endpoint = s.substr(0, colon);
    l.path = s.substr(colon + 1);
    if (l.path.empty()) l.path = "/";
    if (l.path.front() != '/') l.path = "/" + l.path;
  }
  l.trailing_slash = l.path.size() > 1 && l.path.back() == '/';
  return l;
}

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Result<std::string> NewId() {
  std::array<std::byte, 16> b;
  if (RAND_bytes(reinterpret_cast<unsigned char*>(b.data()), static_cast<int>(b.size())) != 1) {
    return Status::Internal("RAND_bytes failed: no random transfer id");
  }
  return proto::HexEncode(b);
}

json Transfer::Record() const {
  RecordWriter w;
  MutexLock lock(&mu);
  VisitRecord(w, const_cast<Transfer&>(*this));  // the writer only reads
  return std::move(w.out);
}

Result<std::shared_ptr<Transfer>> Transfer::FromRecord(const json& j) {
  if (!j.is_object()) return Status::InvalidArgument("not a JSON object");
  auto t = std::make_shared<Transfer>();
  RecordReader r(j);
  VisitRecord(r, *t);
  PORO_RETURN_IF_ERROR(r.status);
  if (t->id.empty()) return Status::InvalidArgument("id: missing");
  if (!j.contains("state")) {
    MutexLock lock(&t->mu);
    t->state = TransferState::kFailed;
  }
  t->local_trailing_slash = t->local_path.size() > 1 && t->local_path.back() == '/';
  t->remote.remote = true;
  if (t->remote.path.empty()) t->remote.path = "/";
  t->remote.trailing_slash = t->remote.path.size() > 1 && t->remote.path.back() == '/';
  if (!t->options.is_object()) t->options = json::object();
  if (t->priority < kMinPriority || t->priority > kMaxPriority) t->priority = kDefaultPriority;
  return t;
}

json Transfer::View() const {
  RecordWriter w(/*for_view=*/true);
  MutexLock lock(&mu);
  VisitRecord(w, const_cast<Transfer&>(*this));  // the writer only reads
  json& v = w.out;
  engine::StatsSnapshot s = stats ? stats->Snapshot() : last;
  uint64_t sent_total = bytes_sent_prev + (stats ? s.bytes_sent : 0);
  uint64_t needed = s.bytes_total - std::min(s.bytes_total, s.bytes_skipped);
  uint64_t resumed = first_resumed >= 0 ? static_cast<uint64_t>(first_resumed) : s.bytes_resumed;
  needed -= std::min(needed, resumed);
  uint64_t resent = sent_total > needed ? sent_total - needed : 0;
  json progress = s.ToJson();
  progress["bytes_sent_all_attempts"] = sent_total;
  progress["bytes_resent"] = std::max<uint64_t>(resent, s.bytes_resent);
  // How bad the path is: corrupt copies over every attempt, per GiB moved (an operator's number).
  const uint64_t corrupt = chunks_corrupt_prev + (stats ? s.chunks_corrupt : 0);
  progress["chunks_corrupt_all_attempts"] = corrupt;
  progress["corrupt_chunks_per_gib"] =
      sent_total > 0 ? double(corrupt) * double(1ull << 30) / double(sent_total) : 0.0;
  v["progress"] = std::move(progress);
  v["failures"] = FailuresJson(stats ? stats->Failures() : failures);
  if (stats) v["skipped_special"] = SpecialsJson(stats->Specials());
  v["source"] = SourceText();
  v["destination"] = DestText();
  int64_t end = finished_ms ? finished_ms : NowMs();
  v["elapsed_s"] = started_ms ? double(end - started_ms) / 1000.0 : 0.0;
  return std::move(w.out);
}

bool Transfer::ExpiredBefore(int64_t cutoff_ms) const {
  MutexLock lock(&mu);
  return cutoff_ms != 0 && IsTerminal(state) && finished_ms > 0 && finished_ms < cutoff_ms;
}

}  // namespace pororoca::daemon
