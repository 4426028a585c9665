#include "base/log.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>

namespace pororoca::log {
namespace {
std::atomic<int> g_level{static_cast<int>(Level::kInfo)};
std::atomic<int> g_fd{2};

const char* LevelName(Level l) {
  switch (l) {
    case Level::kDebug:
      return "DEBUG";
    case Level::kInfo:
      return "INFO";
    case Level::kWarning:
      return "WARN";
    case Level::kError:
      return "ERROR";
  }
  return "?";
}
}  // namespace

void SetLevel(Level l) { g_level = static_cast<int>(l); }
Level GetLevel() { return static_cast<Level>(g_level.load(std::memory_order_relaxed)); }

std::string g_path;  // the SetFile path; written only at start-up, before other threads log

bool SetFile(const std::string& path) {
  g_path = path;
  if (path.empty()) {
    g_fd = 2;
    return true;
  }
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) return false;
  int old = g_fd.exchange(fd);
  if (old > 2) ::close(old);
  return true;
}

bool ReopenFile() {
  const int cur = g_fd.load();
  if (g_path.empty() || cur <= 2) return true;
  int fd = ::open(g_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) return false;
  const bool ok = ::dup3(fd, cur, O_CLOEXEC) == cur;
  ::close(fd);
  return ok;
}

bool ParseLevel(const std::string& s, Level* out) {
  if (s == "debug")
    *out = Level::kDebug;
  else if (s == "info")
    *out = Level::kInfo;
  else if (s == "warning" || s == "warn")
    *out = Level::kWarning;
  else if (s == "error")
    *out = Level::kError;
  else
    return false;
  return true;
}

Line::Line(Level l, const char* /*file*/, int /*line*/) : level_(l) {
  auto now = std::chrono::system_clock::now();
  std::time_t t = std::chrono::system_clock::to_time_t(now);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  os_ << buf << LevelName(l) << ' ';
}

Line::~Line() {
  os_ << '\n';
  std::string s = os_.str();
  ssize_t r = ::write(g_fd.load(), s.data(), s.size());
  (void)r;
  (void)level_;
}

void CheckFailed(const char* cond, const char* file, int line) {
  std::fprintf(stderr, "PORO_CHECK failed: %s at %s:%d\n", cond, file, line);
  std::abort();
}

}  // namespace pororoca::log
