#include "dispatch/slow_request.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "common/log.h"
#include "dispatch/io_request.h"

namespace spd {
namespace {

constexpr uint64_t kUs = 1000;

SlowRequest Request(const uint64_t* stages) {
  SlowRequest r;
  r.volume = "vol0";
  r.op = "write";
  r.offset_bytes = 8192;
  r.length_bytes = 4096;
  r.stage_ns = stages;
  r.arrival_ns = stages[0];
  r.reply_ns = stages[5];
  return r;
}

TEST(SlowRequest, BreakdownBetweenConsecutiveStamps) {
  const uint64_t t = 1'000'000'000;
  const uint64_t st[6] = {
      t, t + 5 * kUs, t + 105 * kUs, t + 110 * kUs, t + 2110 * kUs, t + 2113 * kUs};
  const SlowRequestStages b = SlowRequestBreakdown(Request(st));
  EXPECT_EQ(b.us[0], 5);     // queued
  EXPECT_EQ(b.us[1], 100);   // dispatched (the scheduler)
  EXPECT_EQ(b.us[2], 5);     // submit
  EXPECT_EQ(b.us[3], 2000);  // backend
  EXPECT_EQ(b.us[4], 3);     // reply
}

TEST(SlowRequest, MissingAndStaleStampsFoldIntoTheNextStage) {
  const uint64_t t = 1'000'000'000;
  // Not stamped (0) and a stale stamp of an earlier request of the slot (before arrival).
  const uint64_t st[6] = {t, 0, t - 50 * kUs, t + 10 * kUs, t + 30 * kUs, t + 31 * kUs};
  const SlowRequestStages b = SlowRequestBreakdown(Request(st));
  EXPECT_EQ(b.us[0], -1);
  EXPECT_EQ(b.us[1], -1);
  EXPECT_EQ(b.us[2], 10);  // from arrival
  EXPECT_EQ(b.us[3], 20);
  EXPECT_EQ(b.us[4], 1);
  // No stamps at all: the whole time is the reply's.
  SlowRequest r = Request(st);
  r.stage_ns = nullptr;
  const SlowRequestStages none = SlowRequestBreakdown(r);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(none.us[i], -1);
  EXPECT_EQ(none.us[4], 31);
}

TEST(SlowRequest, OneJsonLineWithEveryField) {
  const uint64_t t = 1'000'000'000;
  const uint64_t st[6] = {t, t + 1 * kUs, t + 2 * kUs, t + 3 * kUs, t + 1503 * kUs, t + 1504 * kUs};
  uint8_t corr[16] = {0x12, 0x34};
  SlowRequest r = Request(st);
  r.correlation = corr;
  const uint64_t before = CounterValue("spd_slow_requests_total");
  const LogFormat format = GetLogFormat();
  SetLogFormat(LogFormat::kJson);
  testing::internal::CaptureStderr();
  LogSlowRequest(r);
  const std::string out = testing::internal::GetCapturedStderr();
  SetLogFormat(format);
  EXPECT_EQ(CounterValue("spd_slow_requests_total") - before, 1u);
  ASSERT_EQ(out.find('\n'), out.size() - 1) << out;
  const nlohmann::json j = nlohmann::json::parse(out);
  EXPECT_EQ(j["level"], "warn");
  EXPECT_EQ(j["component"], "dispatch");
  EXPECT_EQ(j["volume"], "vol0");
  EXPECT_EQ(j["correlation_id"], "12340000000000000000000000000000");
  EXPECT_EQ(j["op"], "write");
  EXPECT_EQ(j["offset"], 8192);
  EXPECT_EQ(j["length"], 4096);
  EXPECT_EQ(j["total_us"], 1504);
  EXPECT_EQ(j["queued_us"], 1);
  EXPECT_EQ(j["dispatched_us"], 1);
  EXPECT_EQ(j["submit_us"], 1);
  EXPECT_EQ(j["backend_us"], 1500);
  EXPECT_EQ(j["reply_us"], 1);
  EXPECT_EQ(j["msg"], "slow request: write of 4096 bytes at 8192 took 1504 us");
}

}  // namespace
}  // namespace spd
