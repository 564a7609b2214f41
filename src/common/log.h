// Minimal leveled logging to stderr, one line per event, safe from any thread.
// The daemon reports an error once, at the edge; middle layers return Status instead of logging.
#pragma once

#include <cstdarg>

namespace spd {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

void SetLogLevel(LogLevel level);
LogLevel GetLogLevel();
void Log(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

}  // namespace spd

#define SPD_LOG_DEBUG(...)                               \
  do {                                                   \
    if (::spd::GetLogLevel() <= ::spd::LogLevel::kDebug) \
      ::spd::Log(::spd::LogLevel::kDebug, __VA_ARGS__);  \
  } while (0)
#define SPD_LOG_INFO(...) ::spd::Log(::spd::LogLevel::kInfo, __VA_ARGS__)
#define SPD_LOG_WARN(...) ::spd::Log(::spd::LogLevel::kWarn, __VA_ARGS__)
#define SPD_LOG_ERROR(...) ::spd::Log(::spd::LogLevel::kError, __VA_ARGS__)
