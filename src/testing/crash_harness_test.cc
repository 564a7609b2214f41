#include "testing/crash_harness.h"

#include <gtest/gtest.h>

#include "common/counters.h"

namespace spd::testing {
namespace {

// A short sweep under the unit-test build (ASan+UBSan); CI's long sweep runs the release build
// of spd_crash with --states-min 100000 (scripts/test.sh).
TEST(CrashHarness, ShortSweepFindsNoViolation) {
  const uint64_t overlaps_before = CounterValue("spd_pool_overlap_flushes_total");
  CrashSweepOptions o;
  o.first_seed = 1;
  o.seeds = 8;
  o.ops_per_seed = 60;
  CrashSweepResult r = RunCrashSweep(o);
  EXPECT_EQ(r.failures, 0u) << r.first_failure;
  EXPECT_GT(r.crash_states, 500u);
  // The sweep reaches the pool's overlapping flush (a FLUSH that arrives during a commit).
  EXPECT_GT(CounterValue("spd_pool_overlap_flushes_total"), overlaps_before);
}

// A seed replays exactly: the sim runs on simulated time, so the same seeds give the same
// interleavings, the same crash states and the same pool activity.
TEST(CrashHarness, SameSeedsSameRun) {
  CrashSweepOptions o;
  o.first_seed = 5;
  o.seeds = 2;
  o.ops_per_seed = 60;
  CrashSweepResult a = RunCrashSweep(o);
  CrashSweepResult b = RunCrashSweep(o);
  EXPECT_EQ(a.crash_states, b.crash_states);
  EXPECT_GT(a.commits, 0u);
  EXPECT_EQ(a.commits, b.commits);
  EXPECT_EQ(a.checkpoints, b.checkpoints);
  EXPECT_EQ(a.failures, 0u);
}

// The harness can fail: a pool whose commit acknowledges FLUSH without a device flush must be
// caught (crash states are also taken right after each acknowledgement, not only at flushes).
TEST(CrashHarness, CatchesCommitWithoutDeviceFlush) {
  CrashSweepOptions o;
  o.first_seed = 1;
  o.seeds = 8;
  o.ops_per_seed = 60;
  o.fault_skip_commit_flush = true;
  CrashSweepResult r = RunCrashSweep(o);
  EXPECT_GT(r.failures, 0u);
  EXPECT_NE(r.first_failure.find("seed "), std::string::npos) << r.first_failure;
}

}  // namespace
}  // namespace spd::testing
