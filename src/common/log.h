// Leveled logging to stderr, one line per event, safe from any thread.
// The daemon reports an error once, at the edge; middle layers return Status instead of logging.
//
// Two formats (SetLogFormat, spd2 --log-format): text, the default, for a person at a terminal
//   2024-05-01T12:34:56.789Z spd2 warn: nbd 127.0.0.1:5555: TLS handshake failed: ...
// and JSON lines, one object per line, for a log pipeline (docs/observability.md):
//   {"time":"2024-05-01T12:34:56.789012Z","level":"warn","component":"nbd","msg":"..."}
// with "volume" and "correlation_id" when the call site knows them (SPD_LOG_FIELDS).
//
// Every call site has its own rate limit (a token bucket in the macro's expansion, see
// LogRateLimiter): a flood of bad input can make one site print at most kLogBurst lines at once
// and kLogPerSecond a second after that. Lines it drops are counted in spd_log_suppressed_total,
// and the next line it prints says how many it dropped.
#pragma once

#include <atomic>
#include <cstdarg>
#include <cstdint>
#include <ctime>
#include <span>
#include <string>
#include <string_view>

namespace spd {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };
enum class LogFormat { kText = 0, kJson = 1 };

void SetLogLevel(LogLevel level);
LogLevel GetLogLevel();
void SetLogFormat(LogFormat format);
LogFormat GetLogFormat();

// A named number or string attached to a line: a JSON member of its own, " key=value" after
// the message in text. `str` set (non-null data): a string; else the number.
struct LogKv {
  const char* key;
  uint64_t num = 0;
  std::string_view str = {};
};

// What a call site knows beyond its message. Everything is optional; nothing is copied before
// the level and the rate limit have let the line through.
struct LogFields {
  std::string_view component = {};       // empty: derived from the call site's source file
  std::string_view volume = {};          // empty: not about one volume
  const uint8_t* correlation = nullptr;  // 16 bytes (IoRequest::correlation_id), or none
  std::span<const LogKv> extra = {};     // more members, in this order
};

// Per call site: 20 lines a second with a burst of 100. The burst is what a site may print at
// once after being quiet: enough for every line a start-up failure prints (each site prints a
// handful at most before the daemon exits, so no reason to exit is ever suppressed), and for a
// burst of distinct, genuine events. The rate bounds a flood: one site costs at most ~2 KB/s
// of log (20 lines of ~100 bytes), 170 MB a day, even when a client sends bad input forever.
inline constexpr uint32_t kLogPerSecond = 20;
inline constexpr uint32_t kLogBurst = 100;

// A token bucket as one atomic (GCRA): `tat_ns_` is the time at which the bucket would be full
// again. A line is admitted when, after charging it one interval, the bucket is not more than
// `burst` intervals behind `now`. Lock-free: one CAS per admitted line, a failed compare costs
// one load. constexpr: a static instance is constant-initialized, no guard on the first call.
class LogRateLimiter {
 public:
  constexpr LogRateLimiter(uint32_t per_second = kLogPerSecond, uint32_t burst = kLogBurst)
      : interval_ns_(1'000'000'000ull / (per_second ? per_second : 1)),
        window_ns_(interval_ns_ * burst) {}
  // Whether a line at `now_ns` (a monotonic clock) may go out. When it may, *suppressed is the
  // number of lines refused since the last one admitted (and that count starts again at 0).
  bool Admit(uint64_t now_ns, uint64_t* suppressed);

 private:
  uint64_t interval_ns_;
  uint64_t window_ns_;
  std::atomic<uint64_t> tat_ns_{0};
  std::atomic<uint64_t> suppressed_{0};
};

// One call site of the macros below (a static in each expansion).
struct LogSite {
  const char* file;
  LogRateLimiter limiter;
};

// The component of a source file: the directory under src/ ("src/qos/engine.cc" -> "qos"),
// the one below it for src/frontend/ ("src/frontend/nbd/nbd_server.cc" -> "nbd"); "spd2" for
// a file outside src/.
std::string_view LogComponentOf(std::string_view file);

// A line as the formatter sees it (FormatLogLine is separate from the writing to be tested).
struct LogRecord {
  timespec time;  // CLOCK_REALTIME
  LogLevel level;
  std::string_view component;
  const LogFields* fields = nullptr;
  std::string_view msg;
  uint64_t suppressed = 0;  // lines of this call site dropped before this one
};
// The line, newline included. JSON output is valid JSON whatever the bytes of msg, volume and
// string extras are: control characters are escaped, invalid UTF-8 becomes U+FFFD.
std::string FormatLogLine(LogFormat format, const LogRecord& r);
// `s` as a JSON string (quotes included) appended to *out, under the rules above.
void AppendJsonString(std::string* out, std::string_view s);

// Through the call site's rate limit (the macros). `site` may be null: no limit.
void LogAt(LogSite* site, LogLevel level, const LogFields& fields, const char* fmt, ...)
    __attribute__((format(printf, 4, 5)));
// No call site, no limit, no fields (kept for callers outside the macros).
void Log(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

}  // namespace spd

// The level is checked before anything else, so a disabled level costs a load and a compare and
// does not spend the site's tokens.
#define SPD_LOG_FIELDS(level, fields, ...)                                              \
  do {                                                                                  \
    if (::spd::GetLogLevel() <= (level)) {                                              \
      static constinit ::spd::LogSite spd_log_site_{__FILE__, ::spd::LogRateLimiter()}; \
      ::spd::LogAt(&spd_log_site_, (level), (fields), __VA_ARGS__);                     \
    }                                                                                   \
  } while (0)
#define SPD_LOG_DEBUG(...) SPD_LOG_FIELDS(::spd::LogLevel::kDebug, ::spd::LogFields{}, __VA_ARGS__)
#define SPD_LOG_INFO(...) SPD_LOG_FIELDS(::spd::LogLevel::kInfo, ::spd::LogFields{}, __VA_ARGS__)
#define SPD_LOG_WARN(...) SPD_LOG_FIELDS(::spd::LogLevel::kWarn, ::spd::LogFields{}, __VA_ARGS__)
#define SPD_LOG_ERROR(...) SPD_LOG_FIELDS(::spd::LogLevel::kError, ::spd::LogFields{}, __VA_ARGS__)
