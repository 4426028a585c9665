#include "daemon/staging.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <span>

#include "base/file_util.h"
#include "base/log.h"
#include "pororoca/checksum.h"

namespace pororoca::daemon {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

// `inner` is `outer` or below it ("/a" contains "/a" and "/a/b", not "/ab").
bool Contains(const std::string& outer, const std::string& inner) {
  return inner.compare(0, outer.size(), outer) == 0 &&
         (inner.size() == outer.size() || inner[outer.size()] == '/');
}

// Whoever asks, as the cache remembers it: the federated identity, else the uid.
std::string Who(int64_t uid, const std::string& identity) {
  return identity.empty() ? "uid:" + std::to_string(uid) : identity;
}

bool SameOwner(const std::string& identity_a, int64_t uid_a, const std::string& identity_b, int64_t uid_b) {
  if (!identity_a.empty() || !identity_b.empty()) return identity_a == identity_b;
  return uid_a >= 0 && uid_a == uid_b;
}

// Regular files under `path` (or `path` itself) and their bytes; what a copy holds on disk.
std::pair<uint64_t, uint64_t> DiskUsage(const std::string& path) {
  uint64_t bytes = 0, files = 0;
  std::error_code ec;
  const fs::file_status top = fs::symlink_status(path, ec);
  if (ec) return {0, 0};
  if (fs::is_regular_file(top)) return {fs::file_size(path, ec), 1};
  for (fs::recursive_directory_iterator it(path, fs::directory_options::skip_permission_denied, ec), end;
       !ec && it != end; it.increment(ec)) {
    if (it->is_regular_file(ec) && !it->is_symlink(ec)) {
      bytes += it->file_size(ec);
      ++files;
    }
  }
  return {bytes, files};
}

}  // namespace

StagingCache::StagingCache(Options o, TransferManager* transfers) : o_(std::move(o)), transfers_(transfers) {}

StagingCache::~StagingCache() { Stop(); }

std::string StagingCache::DatasetId(const std::string& endpoint, const std::string& path) {
  const std::string key = endpoint + ":" + path;
  return Xxh3_128(std::as_bytes(std::span(key.data(), key.size()))).ToHex().substr(0, 16);
}

const char* StagingCache::StateName(State s) {
  switch (s) {
    case State::kStaging:
      return "staging";
    case State::kReady:
      return "ready";
    case State::kFailed:
      return "failed";
  }
  return "?";
}

std::string StagingCache::LocalPath(const Dataset& d) const { return o_.dir + "/" + d.endpoint + d.path; }

json StagingCache::Record(const Dataset& d) const {
  json leases = json::array();
  for (const auto& l : d.leases) {
    leases.push_back(
        {{"lease", l.name}, {"uid", l.uid}, {"identity", l.identity}, {"expires_ms", l.expires_ms}});
  }
  return json{{"id", d.id},
              {"endpoint", d.endpoint},
              {"path", d.path},
              {"state", StateName(d.state)},
              {"transfer_id", d.transfer_id},
              {"error", d.error},
              {"error_code", d.error_code},
              {"bytes", d.bytes},
              {"files", d.files},
              {"created_ms", d.created_ms},
              {"ready_ms", d.ready_ms},
              {"verified_ms", d.verified_ms},
              {"last_used_ms", d.last_used_ms},
              {"pulled_by", d.pulled_by},
              {"granted", d.granted},
              {"leases", std::move(leases)}};
}

Result<StagingCache::Dataset> StagingCache::FromRecord(const json& j) {
  Dataset d;
  try {
    d.id = j.at("id").get<std::string>();
    d.endpoint = j.at("endpoint").get<std::string>();
    d.path = j.at("path").get<std::string>();
    const std::string st = j.at("state").get<std::string>();
    d.state = st == "ready" ? State::kReady : st == "failed" ? State::kFailed : State::kStaging;
    d.transfer_id = j.value("transfer_id", std::string());
    d.error = j.value("error", std::string());
    d.error_code = j.value("error_code", std::string());
    d.pulled_by = j.value("pulled_by", std::string());
    d.bytes = j.value("bytes", uint64_t{0});
    d.files = j.value("files", uint64_t{0});
    d.created_ms = j.value("created_ms", int64_t{0});
    d.ready_ms = j.value("ready_ms", int64_t{0});
    d.verified_ms = j.value("verified_ms", int64_t{0});
    d.last_used_ms = j.value("last_used_ms", int64_t{0});
    if (j.contains("granted")) d.granted = j["granted"].get<std::map<std::string, int64_t>>();
    for (const auto& l : j.value("leases", json::array())) {
      d.leases.push_back({l.at("lease").get<std::string>(), l.value("uid", int64_t{-1}),
                          l.value("identity", std::string()), l.value("expires_ms", int64_t{0})});
    }
  } catch (const json::exception& e) {
    return Status::DataLoss(std::string("a dataset record: ") + e.what());
  }
  if (d.id != DatasetId(d.endpoint, d.path))
    return Status::DataLoss("dataset record " + d.id + " names another dataset");
  return d;
}

json StagingCache::View(const Dataset& d) const {
  json v = Record(d);
  v.erase("granted");
  v.erase("pulled_by");
  v.erase("endpoint");
  for (auto& l : v["leases"]) l.erase("uid");
  v["source"] = d.endpoint + ":" + d.path;
  v["path"] = LocalPath(d);
  // A pull in progress: how far it is.
  if (d.state == State::kStaging && !d.transfer_id.empty()) {
    auto t = transfers_->Find(d.transfer_id);
    if (t.has_value()) {
      const json tv = (*t)->View();
      v["transfer"] = {{"state", tv.value("state", std::string())},
                       {"progress", tv.value("progress", json())}};
    }
  }
  return v;
}

Status StagingCache::Persist() const {
  json all = json::array();
  for (const auto& [id, d] : datasets_) all.push_back(Record(d));
  const json state{
      {"version", 1}, {"evictions", evictions_}, {"evicted_bytes", evicted_bytes_}, {"datasets", all}};
  Status s = WriteFileAtomic(o_.state_file, state.dump(), 0600);
  if (!s.ok()) PORO_LOG(ERROR) << "staging: cannot save the cache's state: " << s.message();
  return s;
}

uint64_t StagingCache::UsedBytes() const {
  uint64_t used = 0;
  for (const auto& [id, d] : datasets_) used += d.bytes;
  return used;
}

Status StagingCache::Open() {
  std::error_code ec;
  fs::create_directories(o_.dir, ec);
  if (ec) return Status::IoError("[staging] dir " + o_.dir, ec.value());
  // Copies an eviction renamed away and a crash left behind.
  for (const auto& e : fs::directory_iterator(o_.dir, ec)) {
    if (e.path().filename().string().rfind(".evicted-", 0) == 0) fs::remove_all(e.path(), ec);
  }
  {
    MutexLock l(&mu_);
    auto text = ReadSmallFile(o_.state_file);
    if (text.has_value()) {
      const json j = json::parse(*text, nullptr, false);
      if (j.is_discarded() || !j.is_object()) {
        return Status::DataLoss(o_.state_file +
                                ": not the staging cache's state (JSON); move it away to start empty");
      }
      evictions_ = j.value("evictions", uint64_t{0});
      evicted_bytes_ = j.value("evicted_bytes", uint64_t{0});
      for (const auto& r : j.value("datasets", json::array())) {
        auto d = FromRecord(r);
        if (!d.has_value()) return d.error().Annotate(o_.state_file);
        // A copy removed behind the daemon's back is forgotten; a pull in progress goes on.
        if (d->state != State::kStaging && !fs::exists(LocalPath(*d), ec)) {
          PORO_LOG(WARNING) << "staging: the copy of " << d->endpoint << ":" << d->path << " is gone from "
                            << LocalPath(*d) << "; forgotten";
          continue;
        }
        datasets_.emplace(d->id, std::move(*d));
      }
    } else if (text.error().code() != Code::kNotFound) {
      return text.error().Annotate("staging state " + o_.state_file);
    }
    PORO_RETURN_IF_ERROR(Persist());
  }
  return Status::OK();
}

void StagingCache::Start() {
  if (!thread_.joinable()) thread_ = std::thread([this] { Loop(); });
}

void StagingCache::Stop() {
  {
    MutexLock l(&mu_);
    stop_ = true;
  }
  changed_.NotifyAll();
  if (thread_.joinable()) thread_.join();
}

void StagingCache::Loop() {
  for (;;) {
    Tick();
    MutexLock l(&mu_);
    if (stop_) return;
    changed_.WaitFor(&mu_, o_.tick, [&]() PORO_REQUIRES(mu_) { return stop_; });
    if (stop_) return;
  }
}

Result<std::string> StagingCache::PrepareDir(const std::string& endpoint, const std::string& path) const {
  const std::string local = o_.dir + "/" + endpoint + path;
  const std::string parent = local.substr(0, local.rfind('/'));
  std::error_code ec;
  fs::create_directories(parent, ec);
  if (ec) return Status::IoError("staging: cannot create " + parent, ec.value());
  return parent + "/";
}

Result<StagingCache::Staged> StagingCache::Stage(const Request& r, const std::shared_ptr<Transfer>& pull) {
  const int64_t now = NowMs();
  const std::string id = DatasetId(r.endpoint, r.path);
  const std::string who = Who(r.uid, r.identity);
  MutexLock l(&mu_);
  if (stop_) return Status::Unavailable("the daemon is stopping");
  for (const auto& [oid, o] : datasets_) {
    if (oid != id && o.endpoint == r.endpoint && (Contains(o.path, r.path) || Contains(r.path, o.path))) {
      return Status::AlreadyExists(r.endpoint + ":" + r.path + " overlaps " + o.endpoint + ":" + o.path +
                                   ", already in the staging cache (one contains the other): stage that one, "
                                   "or release and let it be evicted first");
    }
    for (const auto& ls : o.leases) {
      if (!r.lease.empty() && ls.name == r.lease && !SameOwner(ls.identity, ls.uid, r.identity, r.uid)) {
        return Status::PermissionDenied("lease '" + r.lease + "' is held by " + Who(ls.uid, ls.identity) +
                                        ": name the lease after your own job");
      }
    }
  }
  auto it = datasets_.find(id);
  const bool is_new = it == datasets_.end();
  Dataset& d = is_new ? datasets_[id] : it->second;
  if (is_new) {
    d.id = id;
    d.endpoint = r.endpoint;
    d.path = r.path;
    d.state = State::kFailed;  // until its pull is queued
    d.created_ms = now;
  }
  const int64_t window_ms = int64_t{o_.revalidate_s} * 1000;
  const bool stale = now - d.verified_ms > window_ms;
  const bool pull_now = d.state == State::kFailed || (d.state == State::kReady && stale && d.leases.empty());
  if (!pull_now) {
    // Served from the cache, or joining the pull under way: the source must have confirmed this
    // caller's access (its token, its policy) recently, as a pull of its own would have.
    auto g = d.granted.find(who);
    if (r.access_checked) {
      d.granted[who] = now;
    } else if (d.state == State::kStaging && d.pulled_by == who) {
      // Its own pull: the source admits that one.
    } else if (g == d.granted.end() || now - g->second > window_ms) {
      return Staged{View(d), false, true};
    }
  } else {
    if (!pull) return Status::Internal("staging: no pull for " + r.endpoint + ":" + r.path);
    auto sub = transfers_->Submit(pull);
    if (!sub.has_value()) {
      if (is_new) datasets_.erase(id);
      return sub.error();
    }
    d.state = State::kStaging;
    d.transfer_id = (*sub)->id;
    d.pulled_by = who;
    d.error.clear();
    d.error_code.clear();
    PORO_LOG(INFO) << "staging " << r.endpoint << ":" << r.path << " into " << LocalPath(d) << " (transfer "
                   << d.transfer_id << ", for " << who << ")";
  }
  if (!r.lease.empty()) {
    const int64_t expires = now + 1000 * (r.ttl_s > 0 ? r.ttl_s : int64_t{o_.default_ttl_s});
    auto ls =
        std::find_if(d.leases.begin(), d.leases.end(), [&](const Lease& x) { return x.name == r.lease; });
    if (ls == d.leases.end()) {
      d.leases.push_back({r.lease, r.uid, r.identity, expires});
    } else {
      ls->expires_ms = expires;
    }
  }
  d.last_used_ms = now;
  PORO_RETURN_IF_ERROR(Persist());
  return Staged{View(d), d.state == State::kReady, false};
}

Result<json> StagingCache::Get(const std::string& id, std::chrono::steady_clock::duration wait) const {
  MutexLock l(&mu_);
  auto staging = [&]() PORO_REQUIRES(mu_) {
    auto it = datasets_.find(id);
    return !stop_ && it != datasets_.end() && it->second.state == State::kStaging;
  };
  if (wait.count() > 0 && staging())
    changed_.WaitFor(&mu_, wait, [&]() PORO_REQUIRES(mu_) { return !staging(); });
  auto it = datasets_.find(id);
  if (it == datasets_.end()) return Status::NotFound("no dataset " + id + " in the staging cache");
  return View(it->second);
}

Result<size_t> StagingCache::Release(const std::string& lease, int64_t uid, const std::string& identity,
                                     bool any_owner) {
  const int64_t now = NowMs();
  MutexLock l(&mu_);
  for (const auto& [id, d] : datasets_) {
    for (const auto& ls : d.leases) {
      if (ls.name == lease && !any_owner && !SameOwner(ls.identity, ls.uid, identity, uid)) {
        return Status::PermissionDenied("lease '" + lease + "' is held by " + Who(ls.uid, ls.identity) +
                                        ", not by " + Who(uid, identity));
      }
    }
  }
  size_t n = 0;
  for (auto& [id, d] : datasets_) {
    const size_t before = d.leases.size();
    std::erase_if(d.leases, [&](const Lease& x) { return x.name == lease; });
    if (d.leases.size() != before) {
      n += before - d.leases.size();
      d.last_used_ms = now;
    }
  }
  if (n > 0) {
    PORO_RETURN_IF_ERROR(Persist());
    PORO_LOG(INFO) << "staging: lease '" << lease << "' released (" << n << " dataset(s))";
  }
  return n;
}

json StagingCache::List() const {
  MutexLock l(&mu_);
  json ds = json::array();
  std::vector<const Dataset*> order;
  for (const auto& [id, d] : datasets_) order.push_back(&d);
  std::sort(order.begin(), order.end(),
            [](const Dataset* a, const Dataset* b) { return a->last_used_ms > b->last_used_ms; });
  for (const Dataset* d : order) ds.push_back(View(*d));
  return json{{"dir", o_.dir},
              {"quota_bytes", o_.quota},
              {"used_bytes", UsedBytes()},
              {"high_watermark", o_.high_watermark},
              {"low_watermark", o_.low_watermark},
              {"revalidate_s", o_.revalidate_s},
              {"evictions", evictions_},
              {"evicted_bytes", evicted_bytes_},
              {"datasets", std::move(ds)}};
}

StagingCache::Totals StagingCache::GetTotals() const {
  MutexLock l(&mu_);
  Totals t;
  t.quota = o_.quota;
  t.used = UsedBytes();
  t.evictions = evictions_;
  t.evicted_bytes = evicted_bytes_;
  for (const auto& [id, d] : datasets_) {
    ++t.datasets[d.state == State::kReady ? 0 : d.state == State::kStaging ? 1 : 2];
    t.leases += d.leases.size();
  }
  return t;
}

void StagingCache::Tick() {
  const int64_t now = NowMs();
  // Pulls that ended: what they left on disk is measured outside the lock (a walk of the copy).
  struct Ended {
    std::string id, transfer_id;
    TransferState state;
    std::string error, error_code;
    std::string path;
    uint64_t bytes = 0, files = 0;
  };
  std::vector<Ended> ended;
  bool changed = false;
  {
    MutexLock l(&mu_);
    for (auto& [id, d] : datasets_) {
      if (d.state != State::kStaging) continue;
      auto t = transfers_->Find(d.transfer_id);
      if (!t.has_value()) {
        d.state = State::kFailed;
        d.error = "its pull (transfer " + d.transfer_id + ") is no longer on record; stage it again";
        changed = true;
        continue;
      }
      MutexLock tl(&(*t)->mu);
      if (!IsTerminal((*t)->state)) continue;
      ended.push_back({id, d.transfer_id, (*t)->state, (*t)->error, (*t)->error_code, LocalPath(d)});
    }
  }
  for (Ended& e : ended) std::tie(e.bytes, e.files) = DiskUsage(e.path);
  std::vector<std::string> trash;
  {
    MutexLock l(&mu_);
    for (const Ended& e : ended) {
      auto it = datasets_.find(e.id);
      if (it == datasets_.end() || it->second.transfer_id != e.transfer_id ||
          it->second.state != State::kStaging) {
        continue;
      }
      Dataset& d = it->second;
      d.bytes = e.bytes;
      d.files = e.files;
      if (e.state == TransferState::kSucceeded) {
        d.state = State::kReady;
        d.ready_ms = d.verified_ms = now;
        d.granted[d.pulled_by] = now;
        d.error.clear();
        d.error_code.clear();
        PORO_LOG(INFO) << "staging: " << d.endpoint << ":" << d.path << " is ready at " << LocalPath(d)
                       << " (" << d.files << " files, " << d.bytes << " bytes)";
      } else {
        d.state = State::kFailed;
        d.error = e.error.empty() ? "its pull ended " + std::string(TransferStateName(e.state)) : e.error;
        d.error_code = e.error_code;
        PORO_LOG(WARNING) << "staging: " << d.endpoint << ":" << d.path << " failed: " << d.error;
      }
      changed = true;
    }
    for (auto& [id, d] : datasets_) {
      const size_t before = d.leases.size();
      std::erase_if(d.leases, [&](const Lease& x) { return x.expires_ms <= now; });
      if (d.leases.size() != before) {
        PORO_LOG(INFO) << "staging: " << (before - d.leases.size()) << " lease(s) on " << d.endpoint << ":"
                       << d.path << " expired";
        d.last_used_ms = std::max(d.last_used_ms, now);
        changed = true;
      }
    }
    // Above the high watermark: the least recently used datasets without a lease go, down to the
    // low one. A leased or staging dataset stays, whatever the cache holds.
    uint64_t used = UsedBytes();
    const auto high = static_cast<uint64_t>(o_.high_watermark * static_cast<double>(o_.quota));
    const auto low = static_cast<uint64_t>(o_.low_watermark * static_cast<double>(o_.quota));
    if (used > high) {
      std::vector<Dataset*> idle;
      for (auto& [id, d] : datasets_) {
        if (d.state != State::kStaging && d.leases.empty()) idle.push_back(&d);
      }
      std::sort(idle.begin(), idle.end(),
                [](const Dataset* a, const Dataset* b) { return a->last_used_ms < b->last_used_ms; });
      for (Dataset* d : idle) {
        if (used <= low) break;
        // Renamed away at once, so a new stage of it starts from an empty directory; removed below.
        const std::string gone = o_.dir + "/.evicted-" + d->id + "-" + std::to_string(now);
        if (::rename(LocalPath(*d).c_str(), gone.c_str()) != 0 && errno != ENOENT) {
          PORO_LOG(ERROR) << "staging: cannot evict " << LocalPath(*d) << ": " << std::strerror(errno);
          continue;
        }
        trash.push_back(gone);
        PORO_LOG(INFO) << "staging: evicted " << d->endpoint << ":" << d->path << " (" << d->bytes
                       << " bytes, last used " << (now - d->last_used_ms) / 1000 << " s ago)";
        used -= std::min(used, d->bytes);
        ++evictions_;
        evicted_bytes_ += d->bytes;
        datasets_.erase(d->id);
        changed = true;
      }
      if (used > high) {
        PORO_LOG(WARNING) << "staging: the cache holds " << used << " bytes, above its high watermark ("
                          << high << "), in datasets that are leased or staging";
      }
    }
    if (changed) {
      (void)Persist();
      changed_.NotifyAll();
    }
  }
  for (const std::string& g : trash) {
    std::error_code ec;
    fs::remove_all(g, ec);
    if (ec) PORO_LOG(ERROR) << "staging: removing " << g << ": " << ec.message();
  }
}

}  // namespace pororoca::daemon
