#include "common/log.h"

#include <cinttypes>
#include <cstdio>

#include "common/counters.h"

namespace spd {
namespace {
std::atomic<LogLevel> g_level{LogLevel::kInfo};
std::atomic<LogFormat> g_format{LogFormat::kText};
Counter log_suppressed_total("spd_log_suppressed_total",
                             "Log lines not written because their call site was over its rate "
                             "limit (20 lines/s, burst 100).");

const char* LevelName(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarn:
      return "warn";
    case LogLevel::kError:
      return "error";
  }
  return "?";
}

// The length of the valid UTF-8 sequence at the start of `s` (1 to 4), or 0 when it is not one:
// a stray continuation byte, a truncated sequence, an overlong encoding, a surrogate or a code
// point above U+10FFFF (each of which a strict JSON parser refuses).
size_t Utf8SequenceLength(std::string_view s) {
  const auto b = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char c = b(0);
  size_t n;
  uint32_t cp;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
    cp = c & 0x1F;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    cp = c & 0x0F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    cp = c & 0x07;
  } else {
    return 0;  // 0x80..0xC1 (continuation or overlong lead), 0xF5..0xFF
  }
  if (s.size() < n) return 0;
  for (size_t i = 1; i < n; ++i) {
    if ((b(i) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b(i) & 0x3F);
  }
  if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000)) return 0;  // overlong
  if (cp >= 0xD800 && cp <= 0xDFFF) return 0;                        // surrogate
  if (cp > 0x10FFFF) return 0;
  return n;
}

void AppendHex(std::string* out, const uint8_t* p, size_t n) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (size_t i = 0; i < n; ++i) {
    *out += kHex[p[i] >> 4];
    *out += kHex[p[i] & 15];
  }
}

// Text: `s` as it is, except that control characters (a newline in a peer's string would forge
// a line) are shown as \xNN.
void AppendTextSafe(std::string* out, std::string_view s) {
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7F) {
      char esc[8];
      std::snprintf(esc, sizeof esc, "\\x%02x", c);
      *out += esc;
    } else {
      *out += ch;
    }
  }
}

uint64_t MonotonicClockNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

void Emit(LogSite* site, LogLevel level, const LogFields& fields, const char* fmt, va_list ap) {
  uint64_t suppressed = 0;
  if (site != nullptr && !site->limiter.Admit(MonotonicClockNs(), &suppressed)) {
    log_suppressed_total.Add();
    return;
  }
  char msg[1024];
  std::vsnprintf(msg, sizeof msg, fmt, ap);
  LogRecord r;
  clock_gettime(CLOCK_REALTIME, &r.time);
  r.level = level;
  r.component = !fields.component.empty() ? fields.component
                : site != nullptr         ? LogComponentOf(site->file)
                                          : std::string_view("spd2");
  r.fields = &fields;
  r.msg = msg;
  r.suppressed = suppressed;
  const std::string line = FormatLogLine(g_format.load(std::memory_order_relaxed), r);
  // One call per line on the unbuffered stderr, so that lines from different threads do not
  // interleave (stdio locks the stream for the call).
  std::fwrite(line.data(), 1, line.size(), stderr);
}
}  // namespace

void SetLogLevel(LogLevel level) { g_level.store(level, std::memory_order_relaxed); }
LogLevel GetLogLevel() { return g_level.load(std::memory_order_relaxed); }
void SetLogFormat(LogFormat format) { g_format.store(format, std::memory_order_relaxed); }
LogFormat GetLogFormat() { return g_format.load(std::memory_order_relaxed); }

bool LogRateLimiter::Admit(uint64_t now_ns, uint64_t* suppressed) {
  uint64_t tat = tat_ns_.load(std::memory_order_relaxed);
  for (;;) {
    const uint64_t next = (tat > now_ns ? tat : now_ns) + interval_ns_;
    if (next - now_ns > window_ns_) {
      suppressed_.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    // Fails only when another thread admitted a line of this site in between: try again with
    // its time (lock-free: some thread always makes progress).
    if (tat_ns_.compare_exchange_weak(tat, next, std::memory_order_relaxed)) break;
  }
  *suppressed = suppressed_.exchange(0, std::memory_order_relaxed);
  return true;
}

std::string_view LogComponentOf(std::string_view file) {
  // The last "src/" of the path: __FILE__ may be absolute, relative, or under a build prefix.
  size_t at = std::string_view::npos;
  for (size_t p = file.find("src/"); p != std::string_view::npos; p = file.find("src/", p + 1))
    if (p == 0 || file[p - 1] == '/') at = p;
  if (at == std::string_view::npos) return "spd2";
  std::string_view rest = file.substr(at + 4);
  size_t slash = rest.find('/');
  if (slash == std::string_view::npos) return "spd2";  // src/x.cc: no component directory
  std::string_view dir = rest.substr(0, slash);
  if (dir == "frontend") {
    std::string_view below = rest.substr(slash + 1);
    const size_t s2 = below.find('/');
    if (s2 != std::string_view::npos) return below.substr(0, s2);
  }
  return dir;
}

void AppendJsonString(std::string* out, std::string_view s) {
  *out += '"';
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') {
      *out += '\\';
      *out += static_cast<char>(c);
      ++i;
    } else if (c < 0x20 || c == 0x7F) {
      char esc[8];
      std::snprintf(esc, sizeof esc, "\\u%04x", c);
      *out += esc;
      ++i;
    } else if (c < 0x80) {
      *out += static_cast<char>(c);
      ++i;
    } else if (const size_t n = Utf8SequenceLength(s.substr(i)); n > 0) {
      out->append(s.data() + i, n);
      i += n;
    } else {
      *out += "\\ufffd";  // one replacement per invalid byte, as decoders usually do
      ++i;
    }
  }
  *out += '"';
}

std::string FormatLogLine(LogFormat format, const LogRecord& r) {
  tm tmv;
  gmtime_r(&r.time.tv_sec, &tmv);
  char when[48];
  const size_t n = std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tmv);
  static const LogFields kNone;
  const LogFields& f = r.fields != nullptr ? *r.fields : kNone;
  std::string out;
  out.reserve(160 + r.msg.size());
  if (format == LogFormat::kText) {
    // As before the JSON format existed: milliseconds, "spd2 LEVEL: message".
    std::snprintf(when + n, sizeof when - n, ".%03ldZ", r.time.tv_nsec / 1000000);
    out += when;
    out += " spd2 ";
    out += LevelName(r.level);
    out += ": ";
    AppendTextSafe(&out, r.msg);
    if (!f.volume.empty()) {
      out += " volume=";
      AppendTextSafe(&out, f.volume);
    }
    if (f.correlation != nullptr) {
      out += " correlation_id=";
      AppendHex(&out, f.correlation, 16);
    }
    for (const LogKv& kv : f.extra) {
      out += ' ';
      out += kv.key;
      out += '=';
      if (kv.str.data() != nullptr) {
        AppendTextSafe(&out, kv.str);
      } else {
        out += std::to_string(kv.num);
      }
    }
    if (r.suppressed > 0) {
      out += " (";
      out += std::to_string(r.suppressed);
      out += " earlier lines from here suppressed)";
    }
    out += '\n';
    return out;
  }
  // RFC 3339, UTC, microseconds: sorts as text, and nothing else is needed to read it.
  std::snprintf(when + n, sizeof when - n, ".%06ldZ", r.time.tv_nsec / 1000);
  out += "{\"time\":\"";
  out += when;
  out += "\",\"level\":\"";
  out += LevelName(r.level);
  out += "\",\"component\":";
  AppendJsonString(&out, r.component);
  if (!f.volume.empty()) {
    out += ",\"volume\":";
    AppendJsonString(&out, f.volume);
  }
  if (f.correlation != nullptr) {
    out += ",\"correlation_id\":\"";
    AppendHex(&out, f.correlation, 16);
    out += '"';
  }
  out += ",\"msg\":";
  AppendJsonString(&out, r.msg);
  for (const LogKv& kv : f.extra) {
    out += ',';
    AppendJsonString(&out, kv.key);
    out += ':';
    if (kv.str.data() != nullptr) {
      AppendJsonString(&out, kv.str);
    } else {
      out += std::to_string(kv.num);
    }
  }
  if (r.suppressed > 0) {
    out += ",\"suppressed\":";
    out += std::to_string(r.suppressed);
  }
  out += "}\n";
  return out;
}

void LogAt(LogSite* site, LogLevel level, const LogFields& fields, const char* fmt, ...) {
  if (level < GetLogLevel()) return;
  va_list ap;
  va_start(ap, fmt);
  Emit(site, level, fields, fmt, ap);
  va_end(ap);
}

void Log(LogLevel level, const char* fmt, ...) {
  if (level < GetLogLevel()) return;
  va_list ap;
  va_start(ap, fmt);
  Emit(nullptr, level, LogFields{}, fmt, ap);
  va_end(ap);
}

}  // namespace spd
