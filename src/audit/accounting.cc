#include "audit/accounting.h"

#include <cstdio>
#include <ctime>
#include <limits>
#include <utility>
#include <vector>

#include "audit/audit_log.h"
#include "base/file_util.h"

namespace pororoca::audit {
namespace {

using Json = nlohmann::json;

constexpr size_t kMaxFileBytes = 256u << 20;
constexpr size_t kMaxNameBytes = 256;

uint64_t SatAdd(uint64_t a, uint64_t b) {
  return a > std::numeric_limits<uint64_t>::max() - b ? std::numeric_limits<uint64_t>::max() : a + b;
}

void AddTo(Accounting::Counters* c, const Accounting::Counters& d) {
  c->bytes = SatAdd(c->bytes, d.bytes);
  c->files = SatAdd(c->files, d.files);
  c->transfers = SatAdd(c->transfers, d.transfers);
}

void PutCounters(Json* j, const Accounting::Counters& c) {
  (*j)["bytes"] = c.bytes;
  (*j)["files"] = c.files;
  (*j)["transfers"] = c.transfers;
}

Json RowJson(const Accounting::Key& k, const Accounting::Counters& c) {
  Json j = {{"day", k.day}, {"source", k.source}, {"destination", k.destination}, {"user", k.user}};
  PutCounters(&j, c);
  return j;
}

// One row of a file or report body; the error names the row and the field.
Status ParseRow(const Json& r, size_t i, Accounting::Key* k, Accounting::Counters* c) {
  auto bad = [i](const std::string& what) {
    return Status::InvalidArgument("rows[" + std::to_string(i) + "]: " + what);
  };
  if (!r.is_object()) return bad("not an object");
  auto text = [&](const char* name, std::string* out) -> Status {
    auto it = r.find(name);
    if (it == r.end() || !it->is_string()) return bad(std::string(name) + " must be a string");
    *out = it->get<std::string>();
    if (out->size() > kMaxNameBytes) return bad(std::string(name) + " is longer than 256 bytes");
    return Status::OK();
  };
  auto count = [&](const char* name, uint64_t* out) -> Status {
    auto it = r.find(name);
    // Parsed text stores 5 as unsigned, code that builds JSON may store it as signed: accept both.
    bool ok =
        it != r.end() && (it->is_number_unsigned() || (it->is_number_integer() && it->get<int64_t>() >= 0));
    if (!ok) return bad(std::string(name) + " must be an unsigned integer");
    *out = it->get<uint64_t>();
    return Status::OK();
  };
  PORO_RETURN_IF_ERROR(text("day", &k->day));
  if (!Accounting::ValidDay(k->day)) return bad("day must be YYYY-MM-DD, not '" + k->day + "'");
  PORO_RETURN_IF_ERROR(text("source", &k->source));
  PORO_RETURN_IF_ERROR(text("destination", &k->destination));
  PORO_RETURN_IF_ERROR(text("user", &k->user));
  PORO_RETURN_IF_ERROR(count("bytes", &c->bytes));
  PORO_RETURN_IF_ERROR(count("files", &c->files));
  PORO_RETURN_IF_ERROR(count("transfers", &c->transfers));
  return Status::OK();
}

Result<std::vector<std::pair<Accounting::Key, Accounting::Counters>>> ParseRows(const Json& body) {
  if (!body.is_object()) return Status::InvalidArgument("not a JSON object");
  auto it = body.find("rows");
  if (it == body.end() || !it->is_array()) return Status::InvalidArgument("rows must be an array");
  std::vector<std::pair<Accounting::Key, Accounting::Counters>> out;
  out.reserve(it->size());
  for (size_t i = 0; i < it->size(); ++i) {
    Accounting::Key k;
    Accounting::Counters c;
    PORO_RETURN_IF_ERROR(ParseRow((*it)[i], i, &k, &c));
    out.emplace_back(std::move(k), c);
  }
  return out;
}

bool Matches(const Accounting::Key& k, const Accounting::Filter& f) {
  if (!f.since.empty() && k.day < f.since) return false;
  if (!f.until.empty() && k.day > f.until) return false;
  if (!f.user.empty() && k.user != f.user) return false;
  if (!f.institution.empty() && k.source != f.institution && k.destination != f.institution) return false;
  return true;
}

}  // namespace

std::string UtcDay(std::chrono::system_clock::time_point t) { return UtcTimestamp(t).substr(0, 10); }

bool Accounting::ValidDay(const std::string& day) {
  if (day.size() != 10 || day[4] != '-' || day[7] != '-') return false;
  for (size_t i : {0, 1, 2, 3, 5, 6, 8, 9}) {
    if (day[i] < '0' || day[i] > '9') return false;
  }
  const int year = std::stoi(day.substr(0, 4));
  const int month = (day[5] - '0') * 10 + (day[6] - '0');
  const int mday = (day[8] - '0') * 10 + (day[9] - '0');
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (month < 1 || month > 12 || mday < 1) return false;
  const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  return mday <= kDays[month - 1] + (month == 2 && leap ? 1 : 0);
}

Result<std::unique_ptr<Accounting>> Accounting::Open(const std::string& path) {
  std::unique_ptr<Accounting> a(new Accounting(path));
  auto text = ReadSmallFile(path, kMaxFileBytes);
  if (!text.has_value()) {
    if (text.error().code() == Code::kNotFound) return a;
    return std::move(text).error().Annotate("accounting file");
  }
  Json body = Json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return Status::DataLoss("accounting file " + path + ": not valid JSON");
  auto rows = ParseRows(body);
  if (!rows.has_value()) {
    return Status::DataLoss("accounting file " + path + ": " + std::string(rows.error().message()));
  }
  for (auto& [k, c] : *rows) AddTo(&a->rows_[k], c);
  return a;
}

void Accounting::Add(const Key& key, uint64_t bytes, uint64_t files, uint64_t transfers) {
  std::lock_guard<std::mutex> lock(mu_);
  AddTo(&rows_[key], Counters{bytes, files, transfers});
  ++generation_;
}

Status Accounting::Merge(const Json& body) {
  PORO_ASSIGN_OR_RETURN(auto rows, ParseRows(body));
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [k, c] : rows) AddTo(&rows_[k], c);
  ++generation_;
  return Status::OK();
}

Status Accounting::Flush() {
  if (path_.empty()) return Status::OK();
  std::lock_guard<std::mutex> flush_lock(flush_mu_);
  std::string data;
  uint64_t gen;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (generation_ == flushed_generation_) return Status::OK();
    gen = generation_;
    Json body = {{"format", "pororoca-accounting"}, {"version", 1}, {"rows", RowsJson()}};
    data = body.dump(1, ' ', false, Json::error_handler_t::replace) + "\n";
  }
  PORO_RETURN_IF_ERROR(WriteFileAtomic(path_, data, 0640));
  std::lock_guard<std::mutex> lock(mu_);
  flushed_generation_ = gen;
  return Status::OK();
}

Json Accounting::RowsJson() const {
  Json rows = Json::array();
  for (const auto& [k, c] : rows_) rows.push_back(RowJson(k, c));
  return rows;
}

Json Accounting::Query(const Filter& filter) const {
  std::map<std::pair<std::string, std::string>, Counters> by_pair;
  std::map<std::string, Counters> by_user, by_day;
  Counters total;
  Json rows = Json::array();
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [k, c] : rows_) {
      if (!Matches(k, filter)) continue;
      AddTo(&by_pair[{k.source, k.destination}], c);
      AddTo(&by_user[k.user], c);
      AddTo(&by_day[k.day], c);
      AddTo(&total, c);
      rows.push_back(RowJson(k, c));
    }
  }
  Json out = {{"rows", std::move(rows)}};
  PutCounters(&out["total"], total);
  Json& pairs = out["by_pair"] = Json::array();
  for (const auto& [p, c] : by_pair) {
    Json j = {{"source", p.first}, {"destination", p.second}};
    PutCounters(&j, c);
    pairs.push_back(std::move(j));
  }
  auto grouped = [](const char* name, const std::map<std::string, Counters>& m) {
    Json arr = Json::array();
    for (const auto& [v, c] : m) {
      Json j = {{name, v}};
      PutCounters(&j, c);
      arr.push_back(std::move(j));
    }
    return arr;
  };
  out["by_user"] = grouped("user", by_user);
  out["by_day"] = grouped("day", by_day);
  return out;
}

Json Accounting::Report(const std::string& endpoint) const {
  Json out = {{"endpoint", endpoint}, {"generated", UtcTimestamp(std::chrono::system_clock::now())}};
  std::lock_guard<std::mutex> lock(mu_);
  out["rows"] = RowsJson();
  return out;
}

std::map<Accounting::Key, Accounting::Counters> Accounting::Rows() const {
  std::lock_guard<std::mutex> lock(mu_);
  return rows_;
}

bool Accounting::dirty() const {
  std::lock_guard<std::mutex> lock(mu_);
  return generation_ != flushed_generation_;
}

}  // namespace pororoca::audit
