#include "testing/crash_harness.h"

#include <gtest/gtest.h>

namespace spd::testing {
namespace {

// A short sweep under the unit-test build (ASan+UBSan); CI's long sweep runs the release build
// of spd_crash with --states-min 100000 (scripts/test.sh).
TEST(CrashHarness, ShortSweepFindsNoViolation) {
  CrashSweepOptions o;
  o.first_seed = 1;
  o.seeds = 8;
  o.ops_per_seed = 60;
  CrashSweepResult r = RunCrashSweep(o);
  EXPECT_EQ(r.failures, 0u) << r.first_failure;
  EXPECT_GT(r.crash_states, 500u);
}

}  // namespace
}  // namespace spd::testing
