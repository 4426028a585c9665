// Minimal leveled logger: one line per event to stderr (or a file), with a timestamp and level.
// Thread-safe: each line is written with a single write(2).
//   PORO_LOG(INFO) << "transfer " << id << " done";
#pragma once

#include <sstream>
#include <string>

namespace pororoca::log {

enum class Level { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

void SetLevel(Level l);
Level GetLevel();
// Sends log lines to `path` (appending); empty path = stderr. Returns false if the file cannot be opened.
bool SetFile(const std::string& path);
// Opens the file of SetFile again (after logrotate moved it away) and puts it in place of the old
// one atomically (dup3 onto the same descriptor), so a line being written goes to one or the other, never to
// a closed or reused descriptor. True if there is no file (stderr) or it was reopened.
bool ReopenFile();
bool ParseLevel(const std::string& s, Level* out);

class Line {
 public:
  Line(Level l, const char* file, int line);
  ~Line();
  template <class T>
  Line& operator<<(const T& v) {
    os_ << v;
    return *this;
  }

 private:
  Level level_;
  std::ostringstream os_;
};

}  // namespace pororoca::log

#define PORO_LOG_LEVEL_DEBUG ::pororoca::log::Level::kDebug
#define PORO_LOG_LEVEL_INFO ::pororoca::log::Level::kInfo
#define PORO_LOG_LEVEL_WARNING ::pororoca::log::Level::kWarning
#define PORO_LOG_LEVEL_ERROR ::pororoca::log::Level::kError

#define PORO_LOG(sev)                                  \
  (PORO_LOG_LEVEL_##sev < ::pororoca::log::GetLevel()) \
      ? (void)0                                        \
      : ::pororoca::log::Voidify() & ::pororoca::log::Line(PORO_LOG_LEVEL_##sev, __FILE__, __LINE__)

#define PORO_CHECK(cond)                                                  \
  do {                                                                    \
    if (!(cond)) ::pororoca::log::CheckFailed(#cond, __FILE__, __LINE__); \
  } while (0)

namespace pororoca::log {
// Turns a streamed Line into void so PORO_LOG can be a single expression (no dangling else).
struct Voidify {
  void operator&(Line&) {}
};
[[noreturn]] void CheckFailed(const char* cond, const char* file, int line);
}  // namespace pororoca::log
