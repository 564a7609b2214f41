#include "volume/replica_activity.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>

#include "common/counters.h"
#include "common/mapped_file.h"
#include "testing/dying_child.h"

namespace spd {
namespace {

constexpr uint64_t kU = ReplicaActivity::kUnitBytes;

TEST(ReplicaActivityTest, RecordsUnitsUntilTheWatermarkPassesThem) {
  ReplicaActivity a;
  EXPECT_FALSE(a.Take().complete) << "no term followed yet";
  a.Begin(7);
  a.Record(7, 1, 0, 4096);             // unit 0
  a.Record(7, 2, 3 * kU - 512, 1024);  // units 2 and 3
  a.Record(7, 3, 1 * kU, 4096);        // unit 1: merges with 0 and 2-3
  a.Record(7, 4, 10 * kU, 3 * kU);     // units 10-12
  ReplicaActivity::Snapshot s = a.Take();
  EXPECT_TRUE(s.complete);
  EXPECT_EQ(s.epoch, 7u);
  ASSERT_EQ(s.ranges.size(), 2u);
  EXPECT_EQ(s.ranges[0].first, 0u);
  EXPECT_EQ(s.ranges[0].units, 4u);
  EXPECT_EQ(s.ranges[1].first, 10u);
  EXPECT_EQ(s.ranges[1].units, 3u);
  a.Trim(6, 100);  // another term's watermark: nothing goes
  EXPECT_EQ(a.Take().ranges.size(), 2u);
  a.Trim(7, 3);  // 1 and 2 are everywhere
  s = a.Take();
  ASSERT_EQ(s.ranges.size(), 2u);
  EXPECT_EQ(s.ranges[0].first, 1u);
  EXPECT_EQ(s.ranges[0].units, 1u);
  a.Begin(7);  // a reconnection within the term keeps the record
  EXPECT_EQ(a.Take().ranges.size(), 2u);
  a.Begin(8);  // a new term starts afresh
  s = a.Take();
  EXPECT_TRUE(s.complete);
  EXPECT_EQ(s.epoch, 8u);
  EXPECT_TRUE(s.ranges.empty());
}

TEST(ReplicaActivityTest, WhatItCannotVouchForMakesItIncomplete) {
  ReplicaActivity a;
  a.Begin(1);
  a.Record(2, 1, 0, 4096);  // a write of a term it does not follow
  EXPECT_FALSE(a.Take().complete);
  a.Begin(3);
  for (uint64_t seq = 1; seq <= ReplicaActivity::kEntriesMax; ++seq) a.Record(3, seq, 0, 4096);
  EXPECT_TRUE(a.Take().complete) << "full, nothing dropped yet";
  a.Record(3, ReplicaActivity::kEntriesMax + 1, 0, 4096);
  EXPECT_FALSE(a.Take().complete) << "a record had to be dropped";
  a.Trim(3, UINT64_MAX);
  a.Record(3, UINT64_MAX - 1, 0, 4096);
  EXPECT_FALSE(a.Take().complete) << "incomplete for the rest of the term";
  a.Begin(4);
  a.Record(4, 1, (uint64_t{UINT32_MAX} + 1) * kU, 4096);  // beyond 256 TiB
  EXPECT_FALSE(a.Take().complete);
}

TEST(ReplicaActivityTest, MergeRangesJoinsOverlappingAndAdjacentOnes) {
  const std::vector<ReplicaActivity::Range> m =
      MergeRanges({{10, 2}, {0, 1}, {11, 5}, {1, 1}, {20, 0}, {30, 1}, {16, 1}});
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(m[0].first, 0u);
  EXPECT_EQ(m[0].units, 2u);
  EXPECT_EQ(m[1].first, 10u);
  EXPECT_EQ(m[1].units, 7u);
  EXPECT_EQ(m[2].first, 30u);
}

}  // namespace
}  // namespace spd

namespace spd {
namespace {

std::string TempPath() {
  char path[] = "/tmp/spd-activity-XXXXXX";
  const int fd = mkstemp(path);
  EXPECT_GE(fd, 0);
  close(fd);
  unlink(path);
  return path;
}

// The record outlives its process: the next one that persists to the same file has it, with
// its term, whether it was the primary and whether it is complete.
TEST(ReplicaActivityTest, APersistedRecordIsThereForTheNextProcess) {
  const std::string path = TempPath();
  {
    ReplicaActivity a;
    ASSERT_TRUE(a.Persist(path).ok());
    a.Begin(9, /*primary=*/true);
    a.Record(9, 1, 0, 4096);
    a.Record(9, 2, 5 * kU, 4096);
    a.Record(9, 3, 7 * kU, 2 * kU);
    a.Trim(9, 2);
  }  // the process ends here (nothing is written at the end: every store was in the file)
  ReplicaActivity b;
  EXPECT_FALSE(b.Take().complete);
  ASSERT_TRUE(b.Persist(path).ok());
  ReplicaActivity::Snapshot s = b.Take();
  EXPECT_TRUE(s.complete);
  EXPECT_TRUE(s.primary);
  EXPECT_EQ(s.epoch, 9u);
  ASSERT_EQ(s.ranges.size(), 2u);
  EXPECT_EQ(s.ranges[0].first, 5u);
  EXPECT_EQ(s.ranges[0].units, 1u);
  EXPECT_EQ(s.ranges[1].first, 7u);
  EXPECT_EQ(s.ranges[1].units, 2u);
  b.Begin(10);  // a replica's record of the next term
  ReplicaActivity c;
  ASSERT_TRUE(c.Persist(path).ok());
  s = c.Take();
  EXPECT_EQ(s.epoch, 10u);
  EXPECT_FALSE(s.primary);
  EXPECT_TRUE(s.ranges.empty());
  // An incomplete record stays so.
  for (uint64_t seq = 1; seq <= ReplicaActivity::kEntriesMax + 1; ++seq) c.Record(10, seq, 0, 1);
  ReplicaActivity d;
  ASSERT_TRUE(d.Persist(path).ok());
  EXPECT_FALSE(d.Take().complete);
  unlink(path.c_str());
}

// A file that is not a record (another format, damaged) vouches for nothing; a process that
// has a record already gives it to a new file.
TEST(ReplicaActivityTest, AForeignFileVouchesForNothingAndAnEarlierRecordMovesIn) {
  const std::string path = TempPath();
  {
    FILE* f = fopen(path.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::string junk(70000, 'j');
    fwrite(junk.data(), 1, junk.size(), f);
    fclose(f);
  }
  ReplicaActivity a;
  ASSERT_TRUE(a.Persist(path).ok());
  EXPECT_FALSE(a.Take().complete);
  EXPECT_EQ(a.Take().epoch, 0u);
  unlink(path.c_str());
  ReplicaActivity b;
  b.Begin(3);
  b.Record(3, 1, 2 * kU, 4096);
  ASSERT_TRUE(b.Persist(path).ok());
  ReplicaActivity c;
  ASSERT_TRUE(c.Persist(path).ok());
  ReplicaActivity::Snapshot s = c.Take();
  EXPECT_TRUE(s.complete);
  EXPECT_EQ(s.epoch, 3u);
  ASSERT_EQ(s.ranges.size(), 1u);
  EXPECT_EQ(s.ranges[0].first, 2u);
  unlink(path.c_str());
}

// A record left open by a boot that ended (a power loss or a kernel crash: its pages were
// written back in no order) vouches for nothing; one left by a killed process of this boot, or
// closed in order before a reboot, is taken as it stands.
TEST(ReplicaActivityTest, ARecordLeftOpenByABootThatEndedVouchesForNothing) {
  const std::string path = TempPath();
  // Keeps a record; `open`: left open (in a dying child, the process ends with it open), else
  // closed in order.
  auto keep = [&](bool open) {
    auto a = std::make_unique<ReplicaActivity>();
    if (!a->Persist(path).ok()) return false;
    a->Begin(9, /*primary=*/true);
    a->Record(9, 1, 5 * kU, 4096);
    const bool ok = a->Take().complete;
    if (open) a.release();  // NOLINT: the child ends here without freeing it
    return ok;
  };
  auto epoch_kept = [&] {
    ReplicaActivity b;
    EXPECT_TRUE(b.Persist(path).ok());
    const ReplicaActivity::Snapshot s = b.Take();
    return s.complete && s.ranges.size() == 1 ? s.epoch : 0;
  };
  const uint64_t unclosed = CounterValue("spd_state_files_unclosed_total");
  ASSERT_TRUE(testing::RunInDyingChild([&] { return keep(true); }))
      << "a process of this boot, killed";
  EXPECT_EQ(epoch_kept(), 9u);
  ASSERT_TRUE(keep(false));                      // closed in order
  SetBootTagForTesting(uint64_t{0xb007} << 40);  // a reboot
  EXPECT_EQ(epoch_kept(), 9u) << "closed in order before the reboot";
  ASSERT_TRUE(testing::RunInDyingChild([&] { return keep(true); }));
  SetBootTagForTesting(uint64_t{0xb008} << 40);  // a power loss, then the next boot
  ReplicaActivity c;
  ASSERT_TRUE(c.Persist(path).ok());
  EXPECT_EQ(c.Take().epoch, 0u) << "no record: only the durable generation speaks";
  EXPECT_FALSE(c.Take().complete);
  EXPECT_EQ(CounterValue("spd_state_files_unclosed_total") - unclosed, 1u);
  SetBootTagForTesting(0);
  unlink(path.c_str());
}

// A power loss is counted in the file, and the copy says it may lack what it had not made
// durable (left_open) until a resync ends on it or it becomes a new term's primary: a restart
// of the daemon in between (killed, or stopped in order) does not forget it.
TEST(ReplicaActivityTest, APowerLossIsRememberedUntilAResyncEnds) {
  const std::string path = TempPath();
  auto take = [&] {
    ReplicaActivity a;
    EXPECT_TRUE(a.Persist(path).ok());
    return a.Take();
  };
  auto left_open_by_a_dying_child = [&](uint64_t epoch) {
    return testing::RunInDyingChild([&] {
      auto a = std::make_unique<ReplicaActivity>();
      if (!a->Persist(path).ok()) return false;
      a->Begin(epoch);
      a->Record(epoch, 1, 5 * kU, 4096);
      (void)a.release();  // NOLINT: the child ends here without freeing it
      return true;
    });
  };
  ASSERT_TRUE(left_open_by_a_dying_child(4));
  EXPECT_EQ(take().losses, 0u) << "a killed process of this boot is no power loss";
  EXPECT_FALSE(take().left_open);
  // Two boots in a row end with the file open (power lost under each).
  SetBootTagForTesting(uint64_t{0xb009} << 40);
  ASSERT_TRUE(left_open_by_a_dying_child(4));
  SetBootTagForTesting(uint64_t{0xb00a} << 40);
  ASSERT_TRUE(left_open_by_a_dying_child(4));
  SetBootTagForTesting(uint64_t{0xb00b} << 40);
  {
    ReplicaActivity a;
    ASSERT_TRUE(a.Persist(path).ok());
    EXPECT_EQ(a.Take().losses, 2u);
    EXPECT_TRUE(a.Take().left_open);
  }  // stopped in order
  EXPECT_EQ(take().losses, 2u);
  EXPECT_TRUE(take().left_open) << "a restart does not forget the loss";
  {
    ReplicaActivity a;
    ASSERT_TRUE(a.Persist(path).ok());
    a.Begin(5, /*primary=*/false, /*resyncing=*/true);
    EXPECT_TRUE(a.Take().left_open);
    a.ResyncEnded(5);
    EXPECT_FALSE(a.Take().left_open);
    EXPECT_EQ(a.Take().losses, 2u) << "the count stays";
  }
  EXPECT_FALSE(take().left_open);
  SetBootTagForTesting(uint64_t{0xb00c} << 40);
  ASSERT_TRUE(left_open_by_a_dying_child(6));
  SetBootTagForTesting(uint64_t{0xb00d} << 40);
  {
    ReplicaActivity a;
    ASSERT_TRUE(a.Persist(path).ok());
    EXPECT_EQ(a.Take().losses, 3u);
    EXPECT_TRUE(a.Take().left_open);
    a.Begin(7, /*primary=*/true);
    EXPECT_FALSE(a.Take().left_open) << "its copy is the new term's";
  }
  SetBootTagForTesting(0);
  unlink(path.c_str());
}

}  // namespace
}  // namespace spd
