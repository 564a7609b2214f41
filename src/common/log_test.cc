#include "common/log.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "common/counters.h"

namespace spd {
namespace {

using nlohmann::json;

LogRecord Record(std::string_view msg, const LogFields* f = nullptr) {
  LogRecord r;
  r.time = {1714566896, 789012345};  // 2024-05-01T12:34:56.789012345Z
  r.level = LogLevel::kWarn;
  r.component = "nbd";
  r.fields = f;
  r.msg = msg;
  return r;
}

// The line without its newline, parsed; fails the test when it is not one JSON object.
json ParseLine(const std::string& line) {
  EXPECT_FALSE(line.empty());
  EXPECT_EQ(line.back(), '\n');
  EXPECT_EQ(line.find('\n'), line.size() - 1) << "one line, one newline: " << line;
  json j = json::parse(line.substr(0, line.size() - 1), nullptr, /*allow_exceptions=*/false);
  EXPECT_TRUE(j.is_object()) << line;
  return j;
}

TEST(LogFormat, JsonHasTheRequiredFields) {
  const json j = ParseLine(FormatLogLine(LogFormat::kJson, Record("hello")));
  EXPECT_EQ(j["time"], "2024-05-01T12:34:56.789012Z");
  EXPECT_EQ(j["level"], "warn");
  EXPECT_EQ(j["component"], "nbd");
  EXPECT_EQ(j["msg"], "hello");
  EXPECT_FALSE(j.contains("volume"));  // not known: absent, not empty
  EXPECT_FALSE(j.contains("correlation_id"));
  EXPECT_FALSE(j.contains("suppressed"));
}

TEST(LogFormat, JsonVolumeCorrelationAndExtras) {
  uint8_t corr[16];
  for (int i = 0; i < 16; ++i) corr[i] = static_cast<uint8_t>(i * 17);
  const LogKv kv[] = {{"op", 0, "read"}, {"offset", 4096}, {"total_us", 18446744073709551615ull}};
  LogFields f;
  f.volume = "db\"1";
  f.correlation = corr;
  f.extra = kv;
  LogRecord r = Record("slow", &f);
  r.suppressed = 7;
  const json j = ParseLine(FormatLogLine(LogFormat::kJson, r));
  EXPECT_EQ(j["volume"], "db\"1");
  EXPECT_EQ(j["correlation_id"], "00112233445566778899aabbccddeeff");
  EXPECT_EQ(j["op"], "read");
  EXPECT_EQ(j["offset"], 4096);
  EXPECT_EQ(j["total_us"].get<uint64_t>(), UINT64_MAX);
  EXPECT_EQ(j["suppressed"], 7);
}

TEST(LogFormat, JsonEscapesEverything) {
  // Quotes, backslash, every control character, DEL, and valid multi-byte UTF-8.
  std::string msg = "q\" b\\ ";
  for (int c = 0; c < 0x20; ++c) msg += static_cast<char>(c);
  msg += "\x7f caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x92\xbe";
  const std::string line = FormatLogLine(LogFormat::kJson, Record(msg));
  const json j = ParseLine(line);
  EXPECT_EQ(j["msg"].get<std::string>(), msg);  // round-trips exactly
}

TEST(LogFormat, JsonInvalidUtf8BecomesReplacementCharacters) {
  const std::string bad[] = {
      "\x80",              // stray continuation byte
      "\xc3",              // truncated two-byte sequence (a message cut by the 1 KiB buffer)
      "\xc0\xaf",          // overlong '/'
      "\xe0\x80\xaf",      // overlong, three bytes
      "\xed\xa0\x80",      // a UTF-16 surrogate
      "\xf4\x90\x80\x80",  // above U+10FFFF
      "\xff\xfe",          // never valid
  };
  for (const std::string& b : bad) {
    const std::string msg = "a" + b + "z";
    const json j = ParseLine(FormatLogLine(LogFormat::kJson, Record(msg)));
    const std::string got = j["msg"].get<std::string>();
    EXPECT_EQ(got.front(), 'a');
    EXPECT_EQ(got.back(), 'z');
    EXPECT_NE(got.find("\xef\xbf\xbd"), std::string::npos) << "U+FFFD for " << json(got).dump();
  }
  // In the volume name and string extras too.
  const LogKv kv[] = {{"peer", 0, "\xff"}};
  LogFields f;
  f.volume = "v\xc3";
  f.extra = kv;
  const json j = ParseLine(FormatLogLine(LogFormat::kJson, Record("m", &f)));
  EXPECT_EQ(j["volume"], "v\xef\xbf\xbd");
  EXPECT_EQ(j["peer"], "\xef\xbf\xbd");
}

TEST(LogFormat, TextIsAsBefore) {
  EXPECT_EQ(FormatLogLine(LogFormat::kText, Record("hello")),
            "2024-05-01T12:34:56.789Z spd2 warn: hello\n");
  uint8_t corr[16] = {0xab};
  const LogKv kv[] = {{"op", 0, "write"}, {"total_us", 12}};
  LogFields f;
  f.volume = "vol0";
  f.correlation = corr;
  f.extra = kv;
  LogRecord r = Record("slow", &f);
  r.suppressed = 3;
  EXPECT_EQ(FormatLogLine(LogFormat::kText, r),
            "2024-05-01T12:34:56.789Z spd2 warn: slow volume=vol0 "
            "correlation_id=ab000000000000000000000000000000 op=write total_us=12 (3 earlier "
            "lines from here suppressed)\n");
  // A newline from a peer cannot forge a second line.
  EXPECT_EQ(FormatLogLine(LogFormat::kText, Record("a\nb")),
            "2024-05-01T12:34:56.789Z spd2 warn: a\\x0ab\n");
}

TEST(LogComponent, DirectoryUnderSrc) {
  EXPECT_EQ(LogComponentOf("src/qos/engine.cc"), "qos");
  EXPECT_EQ(LogComponentOf("/work/x/src/daemon/daemon.cc"), "daemon");
  EXPECT_EQ(LogComponentOf("/work/x/src/frontend/nbd/nbd_server.cc"), "nbd");
  EXPECT_EQ(LogComponentOf("../src/frontend/nbd/proto/nbd_handshake.cc"), "nbd");
  EXPECT_EQ(LogComponentOf("/home/src/build/src/io/file_util.cc"), "io");  // the last src/
  EXPECT_EQ(LogComponentOf("/home/mysrc/io/file_util.cc"), "spd2");        // "src/" must be a dir
  EXPECT_EQ(LogComponentOf("main.cc"), "spd2");
  EXPECT_EQ(LogComponentOf(__FILE__), "common");
}

TEST(LogRateLimiter, BurstThenRateThenSuppressedCount) {
  LogRateLimiter lim(20, 100);  // 50 ms a line
  const uint64_t t0 = 1'000'000'000'000ull;
  uint64_t supp = 99;
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(lim.Admit(t0, &supp)) << i;
    EXPECT_EQ(supp, 0u);
  }
  for (int i = 0; i < 250; ++i) EXPECT_FALSE(lim.Admit(t0 + i * 1000, &supp)) << i;
  // One interval later, one line; it reports the 250 it replaced.
  EXPECT_TRUE(lim.Admit(t0 + 50'000'000, &supp));
  EXPECT_EQ(supp, 250u);
  EXPECT_FALSE(lim.Admit(t0 + 50'000'000, &supp));
  EXPECT_TRUE(lim.Admit(t0 + 100'000'000, &supp));
  EXPECT_EQ(supp, 1u);  // the count started again
  // A steady 20 lines a second go through, and no more: 100 s at 40 lines/s.
  int admitted = 0;
  for (int i = 0; i < 4000; ++i)
    if (lim.Admit(t0 + 100'000'000 + 25'000'000ull * (i + 1), &supp)) ++admitted;
  EXPECT_GE(admitted, 1999);
  EXPECT_LE(admitted, 2001);
  // Quiet for the burst's length: the whole burst again.
  const uint64_t later = t0 + 1000'000'000'000ull;
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(lim.Admit(later, &supp)) << i;
  EXPECT_FALSE(lim.Admit(later, &supp));
}

TEST(LogRateLimiter, MacroSiteCountsSuppressedLines) {
  const LogLevel level = GetLogLevel();
  SetLogLevel(LogLevel::kInfo);
  const uint64_t before = CounterValue("spd_log_suppressed_total");
  testing::internal::CaptureStderr();
  // One call site, far more lines than its burst in far less than the time to refill it (the
  // loop takes milliseconds; even 4 s of it would refill only 80).
  for (int i = 0; i < 1000; ++i) SPD_LOG_INFO("flood %d", i);
  const std::string out = testing::internal::GetCapturedStderr();
  SetLogLevel(level);
  size_t lines = 0;
  for (char c : out) lines += c == '\n';
  EXPECT_GE(lines, kLogBurst);
  EXPECT_LE(lines, kLogBurst + 80);
  EXPECT_EQ(CounterValue("spd_log_suppressed_total") - before, 1000 - lines);
  EXPECT_NE(out.find("spd2 info: flood 99\n"), std::string::npos);
}

TEST(LogRateLimiter, DisabledLevelSpendsNoTokens) {
  const LogLevel level = GetLogLevel();
  const auto site = [](int i) { SPD_LOG_WARN("site %d", i); };  // one call site
  SetLogLevel(LogLevel::kError);
  testing::internal::CaptureStderr();
  for (int i = 0; i < 500; ++i) site(i);
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
  // Its whole burst is still there.
  SetLogLevel(LogLevel::kInfo);
  testing::internal::CaptureStderr();
  for (int i = 0; i < static_cast<int>(kLogBurst); ++i) site(i);
  const std::string out = testing::internal::GetCapturedStderr();
  SetLogLevel(level);
  size_t lines = 0;
  for (char c : out) lines += c == '\n';
  EXPECT_EQ(lines, kLogBurst);
}

}  // namespace
}  // namespace spd
