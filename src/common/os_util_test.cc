#include "common/os_util.h"

#include <gtest/gtest.h>

#include <set>

namespace spd {
namespace {

TEST(OsUtil, RandomHexIsTwoLowerCaseHexDigitsPerByteAndNeverRepeats) {
  std::set<std::string> seen;
  for (int i = 0; i < 64; i++) {
    const std::string h = RandomHex(16);
    ASSERT_EQ(h.size(), 32u);
    EXPECT_EQ(h.find_first_not_of("0123456789abcdef"), std::string::npos) << h;
    EXPECT_TRUE(seen.insert(h).second) << "repeated " << h;
  }
  EXPECT_EQ(RandomHex(0), "");
}

TEST(OsUtil, ClockNsFollowsTheKernelsClocks) {
  const uint64_t a = ClockNs(CLOCK_MONOTONIC);
  const uint64_t b = ClockNs(CLOCK_MONOTONIC);
  EXPECT_LE(a, b);
  // CLOCK_REALTIME in nanoseconds since 1970: after 2020-01-01 (1.577e18 ns).
  EXPECT_GT(ClockNs(CLOCK_REALTIME), 1'577'836'800'000'000'000ull);
}

}  // namespace
}  // namespace spd
