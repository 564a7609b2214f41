#include "testing/crash_oracle.h"

#include <gtest/gtest.h>

namespace spd::testing {
namespace {

TEST(CrashOracle, PatternsIdentifyVolumeSectorAndWrite) {
  uint8_t buf[kSectorBytes];
  FillSector(buf, 7, 123, 42);
  EXPECT_EQ(DecodeSector(buf, 7, 123), 42u);
  EXPECT_EQ(DecodeSector(buf, 8, 123), UINT64_MAX);  // another volume's data
  EXPECT_EQ(DecodeSector(buf, 7, 124), UINT64_MAX);  // misplaced sector
  buf[300] ^= 1;
  EXPECT_EQ(DecodeSector(buf, 7, 123), UINT64_MAX);  // torn inside a sector
  FillSector(buf, 7, 123, 0);
  EXPECT_EQ(DecodeSector(buf, 7, 123), 0u);
}

TEST(CrashOracle, DurableVersionOrLaterIsAllowed) {
  VolumeOracle o(1, 4);
  o.Completed(0, 2, 10, false);
  auto before_flush = o.DurableSnapshot();
  EXPECT_EQ(o.Check(before_flush, 0, 0), "");   // not durable yet: zeros are fine
  EXPECT_EQ(o.Check(before_flush, 0, 10), "");  // so is the write
  uint64_t mark = o.CompletionMark();
  o.Completed(1, 1, 11, false);  // completes after the flush started
  o.FlushCompleted(mark);
  auto after = o.DurableSnapshot();
  EXPECT_NE(o.Check(after, 0, 0), "");  // write 10 was flushed: zeros are a lost write
  EXPECT_EQ(o.Check(after, 0, 10), "");
  EXPECT_EQ(o.Check(after, 1, 10), "");  // 11 not covered by the flush
  EXPECT_EQ(o.Check(after, 1, 11), "");
  EXPECT_NE(o.Check(after, 1, 0), "");
  EXPECT_NE(o.Check(after, 2, 10), "");  // never written there
  EXPECT_NE(o.Check(after, 2, UINT64_MAX), "");
}

TEST(CrashOracle, FuaIsDurableAtCompletion) {
  VolumeOracle o(1, 2);
  o.Completed(0, 1, 5, true);
  auto snap = o.DurableSnapshot();
  EXPECT_NE(o.Check(snap, 0, 0), "");
  EXPECT_EQ(o.Check(snap, 0, 5), "");
  o.Completed(0, 1, 0, false);  // a discard after it: zeros or 5
  snap = o.DurableSnapshot();
  EXPECT_EQ(o.Check(snap, 0, 0), "");
  EXPECT_EQ(o.Check(snap, 0, 5), "");
}

}  // namespace
}  // namespace spd::testing
