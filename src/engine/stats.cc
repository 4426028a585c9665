#include "engine/stats.h"

namespace pororoca::engine {

nlohmann::json StatsSnapshot::ToJson() const {
  return nlohmann::json{{"files_total", files_total},
                        {"bytes_total", bytes_total},
                        {"files_done", files_done},
                        {"bytes_done", bytes_done},
                        {"files_skipped", files_skipped},
                        {"bytes_skipped", bytes_skipped},
                        {"files_failed", files_failed},
                        {"files_failed_retryable", files_failed_retryable},
                        {"bytes_sent", bytes_sent},
                        {"bytes_verified", bytes_verified},
                        {"bytes_resumed", bytes_resumed},
                        {"chunks_corrupt", chunks_corrupt},
                        {"bytes_resent", bytes_resent},
                        {"walk_done", walk_done},
                        {"specials_skipped", specials_skipped}};
}

StatsSnapshot StatsSnapshot::FromJson(const nlohmann::json& j) {
  StatsSnapshot s;
  auto u = [&](const char* k) -> uint64_t {
    auto it = j.find(k);
    return it != j.end() && it->is_number_unsigned() ? it->get<uint64_t>() : 0;
  };
  s.files_total = u("files_total");
  s.bytes_total = u("bytes_total");
  s.files_done = u("files_done");
  s.bytes_done = u("bytes_done");
  s.files_skipped = u("files_skipped");
  s.bytes_skipped = u("bytes_skipped");
  s.files_failed = u("files_failed");
  s.files_failed_retryable = u("files_failed_retryable");
  s.bytes_sent = u("bytes_sent");
  s.bytes_verified = u("bytes_verified");
  s.bytes_resumed = u("bytes_resumed");
  s.chunks_corrupt = u("chunks_corrupt");
  s.bytes_resent = u("bytes_resent");
  s.specials_skipped = u("specials_skipped");
  auto w = j.find("walk_done");
  s.walk_done = w != j.end() && w->is_boolean() && w->get<bool>();
  return s;
}

StatsSnapshot TransferStats::Snapshot() const {
  StatsSnapshot s;
  s.files_total = files_total.load();
  s.bytes_total = bytes_total.load();
  s.files_done = files_done.load();
  s.bytes_done = bytes_done.load();
  s.files_skipped = files_skipped.load();
  s.bytes_skipped = bytes_skipped.load();
  s.files_failed = files_failed.load();
  s.files_failed_retryable = files_failed_retryable.load();
  s.bytes_sent = bytes_sent.load();
  s.bytes_verified = bytes_verified.load();
  s.bytes_resumed = bytes_resumed.load();
  s.chunks_corrupt = chunks_corrupt.load();
  s.bytes_resent = bytes_resent.load();
  s.specials_skipped = specials_skipped.load();
  s.walk_done = walk_done.load();
  return s;
}

void TransferStats::AddFailure(const std::string& path, const std::string& message) {
  MutexLock lock(&mu_);
  if (failures_.size() < 100) failures_.emplace_back(path, message);
}

std::vector<std::pair<std::string, std::string>> TransferStats::Failures() const {
  MutexLock lock(&mu_);
  return failures_;
}

void TransferStats::AddSpecial(const std::string& path, const std::string& kind) {
  specials_skipped++;
  MutexLock lock(&mu_);
  if (specials_.size() < 100) specials_.emplace_back(path, kind);
}

std::vector<std::pair<std::string, std::string>> TransferStats::Specials() const {
  MutexLock lock(&mu_);
  return specials_;
}

void TransferStats::AddFileResult(FileResult r) {
  if (!record_files.load(std::memory_order_relaxed)) return;
  MutexLock lock(&mu_);
  results_.push_back(std::move(r));
}

std::vector<FileResult> TransferStats::TakeFileResults() {
  MutexLock lock(&mu_);
  std::vector<FileResult> out;
  out.swap(results_);
  return out;
}

}  // namespace pororoca::engine
