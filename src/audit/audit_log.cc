#include "audit/audit_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <ctime>
#include <string_view>

#include "base/file_util.h"
#include "base/log.h"

namespace pororoca::audit {
namespace {

using Json = nlohmann::json;

// ReadAll is for tests and the CLI: it holds the whole file in memory.
constexpr size_t kMaxReadBytes = size_t(1) << 30;

std::string Dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

// {"time":...,<the other fields>}\n: nlohmann::json keeps keys sorted, so "time" is put first by hand.
std::string Line(const Json& time, const Json& rest) {
  std::string body = Dump(rest);  // "{}" or "{...}"
  std::string line = "{\"time\":" + Dump(time);
  if (body.size() > 2)
    line += "," + body.substr(1);
  else
    line += "}";
  line += '\n';
  return line;
}

// Cuts s to at most max bytes without splitting a UTF-8 sequence.
void CutUtf8(std::string* s, size_t max) {
  if (s->size() <= max) return;
  size_t n = max;
  while (n > 0 && (static_cast<unsigned char>((*s)[n]) & 0xC0) == 0x80) --n;
  s->resize(n);
}

// Cuts every string longer than max (and every key longer than max) in j, recursively.
void TruncateStrings(Json* j, size_t max) {
  if (j->is_string()) {
    auto& s = j->get_ref<std::string&>();
    if (s.size() > max) {
      size_t was = s.size();
      CutUtf8(&s, max);
      s += "...[" + std::to_string(was - s.size()) + " bytes truncated]";
    }
  } else if (j->is_array()) {
    for (auto& v : *j) TruncateStrings(&v, max);
  } else if (j->is_object()) {
    Json out = Json::object();
    for (auto& [k, v] : j->items()) {
      std::string key = k;
      CutUtf8(&key, max);
      TruncateStrings(&v, max);
      out[key] = std::move(v);
    }
    *j = std::move(out);
  }
}

// A line of at most AuditLog::kMaxRecordBytes for a record whose plain line is longer: strings are
// cut shorter and shorter; if that is not enough (a huge array of short strings), nested values are
// replaced by a marker, and as a last resort only the event survives.
std::string BoundedLine(const Json& time, const Json& rest) {
  const size_t limit = AuditLog::kMaxRecordBytes;
  const size_t original = Line(time, rest).size();
  for (size_t max = 8192; max >= 32; max /= 2) {
    Json r = rest;
    TruncateStrings(&r, max);
    r["truncated"] = true;
    std::string line = Line(time, r);
    if (line.size() <= limit) return line;
  }
  Json r = rest;
  TruncateStrings(&r, 32);
  for (auto& [k, v] : r.items()) {
    if (v.is_structured()) v = "[" + std::to_string(Dump(v).size()) + " bytes truncated]";
  }
  r["truncated"] = true;
  std::string line = Line(time, r);
  if (line.size() <= limit) return line;
  Json minimal = {{"truncated", true}, {"original_bytes", original}};
  if (auto it = rest.find("event"); it != rest.end() && it->is_string()) {
    std::string ev = it->get<std::string>();
    CutUtf8(&ev, 64);
    minimal["event"] = ev;
  }
  return Line(time, minimal);
}

// Cuts an unterminated last line off the file (a write torn by a crash), so that the next record
// does not get glued to it.
Status RepairTornTail(int fd, const std::string& path) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return Status::IoError("stat " + path, errno);
  off_t end = st.st_size;
  if (end == 0) return Status::OK();
  char buf[4096];
  off_t pos = end;
  while (pos > 0) {
    size_t want = static_cast<size_t>(std::min<off_t>(pos, sizeof buf));
    ssize_t n = ::pread(fd, buf, want, pos - off_t(want));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::IoError("read " + path, errno);
    if (size_t(n) != want) return Status::DataLoss(path + ": shrank while being read");
    for (size_t i = want; i-- > 0;) {
      if (buf[i] != '\n') continue;
      off_t keep = pos - off_t(want) + off_t(i) + 1;
      if (keep == end) return Status::OK();
      PORO_LOG(WARNING) << "audit log " << path << ": dropping a torn last record of " << (end - keep)
                        << " bytes (interrupted write)";
      if (::ftruncate(fd, keep) != 0) return Status::IoError("truncate " + path, errno);
      return Status::OK();
    }
    pos -= off_t(want);
  }
  PORO_LOG(WARNING) << "audit log " << path << ": dropping a torn record of " << end << " bytes";
  if (::ftruncate(fd, 0) != 0) return Status::IoError("truncate " + path, errno);
  return Status::OK();
}

}  // namespace

std::string UtcTimestamp(std::chrono::system_clock::time_point t) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(ms / 1000 - (ms % 1000 < 0 ? 1 : 0));
  int milli = static_cast<int>(((ms % 1000) + 1000) % 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[48];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, milli);
  return buf;
}

Result<std::unique_ptr<AuditLog>> AuditLog::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) {
      size_t slash = path.rfind('/');
      std::string dir = slash == std::string::npos ? "." : path.substr(0, slash == 0 ? 1 : slash);
      return Status::IoError("audit log " + path + " (its directory " + dir + " must exist)", err);
    }
    return Status::IoError("audit log " + path, err);
  }
  UniqueFd owned(fd);
  PORO_RETURN_IF_ERROR(RepairTornTail(owned.get(), path));
  return std::unique_ptr<AuditLog>(new AuditLog(path, std::move(owned)));
}

Status AuditLog::Reopen() {
  int fd = ::open(path_.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) return Status::IoError("reopen audit log " + path_, errno);
  UniqueFd fresh(fd);
  PORO_RETURN_IF_ERROR(RepairTornTail(fresh.get(), path_));
  std::lock_guard<std::mutex> lock(mu_);
  if (::dup3(fresh.get(), fd_.get(), O_CLOEXEC) != fd_.get())
    return Status::IoError("reopen audit log " + path_, errno);
  return Status::OK();
}

Status AuditLog::Append(Json record) {
  if (!record.is_object()) return Status::InvalidArgument("an audit record must be a JSON object");
  Json time;
  if (auto it = record.find("time"); it != record.end()) {
    time = std::move(*it);
    record.erase(it);
  } else {
    time = UtcTimestamp(std::chrono::system_clock::now());
  }
  std::string line = Line(time, record);
  if (line.size() > kMaxRecordBytes) line = BoundedLine(time, record);
  {
    std::lock_guard<std::mutex> lock(mu_);
    size_t done = 0;
    while (done < line.size()) {
      // One write(2) in practice: a regular file takes all of it unless the disk is full or a
      // signal lands mid-copy; the loop finishes such a short write.
      ssize_t n = ::write(fd_.get(), line.data() + done, line.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        int err = errno;
        if (done > 0) {
          // Take the partial line back, or every later record would be glued to it.
          struct stat st;
          if (::fstat(fd_.get(), &st) == 0) (void)!::ftruncate(fd_.get(), st.st_size - off_t(done));
        }
        return Status::IoError("write audit log " + path_, err);
      }
      done += size_t(n);
    }
  }
  // Outside the lock: concurrent appenders' fdatasync calls overlap (the kernel commits them together).
  if (::fdatasync(fd_.get()) != 0) return Status::IoError("fdatasync audit log " + path_, errno);
  return Status::OK();
}

Result<std::vector<Json>> AuditLog::ReadAll(const std::string& path) {
  PORO_ASSIGN_OR_RETURN(std::string text, ReadSmallFile(path, kMaxReadBytes));
  std::vector<Json> out;
  size_t line_no = 0, start = 0;
  for (size_t nl; (nl = text.find('\n', start)) != std::string::npos; start = nl + 1) {
    ++line_no;
    Json j =
        Json::parse(std::string_view(text).substr(start, nl - start), nullptr, /*allow_exceptions=*/false);
    if (!j.is_object()) {
      return Status::DataLoss("audit log " + path + " line " + std::to_string(line_no) +
                              ": not a JSON object");
    }
    out.push_back(std::move(j));
  }
  if (start < text.size()) {
    PORO_LOG(DEBUG) << "audit log " << path << ": skipping a torn last line of " << (text.size() - start)
                    << " bytes";
  }
  return out;
}

}  // namespace pororoca::audit
