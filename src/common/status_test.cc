#include "common/status.h"

#include <gtest/gtest.h>

#include <vector>

#include "common/counters.h"
#include "common/crc32c.h"

namespace spd {
namespace {

TEST(Status, OkIsCheapAndEmpty) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kOk);
  EXPECT_EQ(s.sys_errno(), 0);
  EXPECT_EQ(s.ToString(), "OK");
}

TEST(Status, ErrnoKeepsOriginalAndMapsCode) {
  Status s = Status::FromErrno(ENOSPC, "write");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(s.sys_errno(), ENOSPC);
  Status c = s.WithContext("volume vol0");
  EXPECT_EQ(c.sys_errno(), ENOSPC);
  EXPECT_NE(c.ToString().find("volume vol0: write"), std::string::npos);
  EXPECT_EQ(Status::FromErrno(EIO, "x").sys_errno(), EIO);
  EXPECT_EQ(InvalidArgument("bad").sys_errno(), EINVAL);
  EXPECT_EQ(OutOfRange("far").sys_errno(), EOVERFLOW);
}

Result<int> Half(int v) {
  if (v % 2) return InvalidArgument("odd");
  return v / 2;
}

Status UseHalf(int v, int* out) {
  SPD_ASSIGN_OR_RETURN(*out, Half(v));
  return Status::Ok();
}

TEST(Result, PropagatesErrors) {
  int out = 0;
  EXPECT_TRUE(UseHalf(8, &out).ok());
  EXPECT_EQ(out, 4);
  Status s = UseHalf(3, &out);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
}

TEST(Crc32c, KnownVectors) {
  // RFC 3720 B.4 test vectors.
  uint8_t zeros[32] = {};
  EXPECT_EQ(Crc32c(0, zeros, 32), 0x8A9136AAu);
  uint8_t ones[32];
  for (auto& b : ones) b = 0xFF;
  EXPECT_EQ(Crc32c(0, ones, 32), 0x62A8AB43u);
  EXPECT_EQ(Crc32c(0, "123456789", 9), 0xE3069283u);
  // Incremental equals one-shot.
  uint32_t c = Crc32c(0, "1234", 4);
  EXPECT_EQ(Crc32c(c, "56789", 5), 0xE3069283u);
}

TEST(Crc32c, EveryLengthAndStartAgreesWithTheTable) {
  // The instruction's three-stripe path (from 768 bytes) and its tails, at every alignment.
  std::vector<uint8_t> buf(5000);
  uint32_t x = 12345;
  for (auto& b : buf) b = static_cast<uint8_t>((x = x * 1103515245u + 12345u) >> 16);
  for (size_t len : {0, 1, 7, 8, 255, 767, 768, 769, 1535, 1536, 2304, 4096, 4097, 4990})
    for (size_t off : {0, 1, 3, 8})
      for (uint32_t seed : {0u, 0xE3069283u}) {
        SCOPED_TRACE(::testing::Message() << "len " << len << " off " << off << " seed " << seed);
        EXPECT_EQ(Crc32c(seed, buf.data() + off, len), Crc32cPortable(seed, buf.data() + off, len));
      }
}

Counter test_counter("spd_test_events_total", "Events counted by the unit test.");

TEST(Counters, RegisterAndRender) {
  uint64_t before = CounterValue("spd_test_events_total");
  test_counter.Add(3);
  EXPECT_EQ(CounterValue("spd_test_events_total"), before + 3);
  std::string text = RenderCountersPrometheus();
  EXPECT_NE(text.find("# TYPE spd_test_events_total counter"), std::string::npos);
}

}  // namespace
}  // namespace spd
