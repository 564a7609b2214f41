#include "replica/dirty_map.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <memory>

#include "common/counters.h"
#include "common/mapped_file.h"
#include "testing/dying_child.h"

namespace spd {
namespace {

constexpr uint64_t kU = DirtyMap::kUnitBytes;
constexpr uint64_t kSize = 1000 * kU + 4096;  // not a whole number of units

std::string TempPath() {
  char path[] = "/tmp/spd-dirty-XXXXXX";
  const int fd = mkstemp(path);
  EXPECT_GE(fd, 0);
  close(fd);
  unlink(path);
  return path;
}

// Node names come from etcd: none may name a file outside the state directory (the delete of a
// replicated volume unlinks these paths).
TEST(DirtyMapTest, APathOnlyForANodeNameThatStaysInTheDirectory) {
  EXPECT_EQ(DirtyMapPath("/d", "v", "b"), "/d/v.dirty.b");
  for (const char* bad : {"", ".", "..", "../x", "a/b", "/etc"})
    EXPECT_EQ(DirtyMapPath("/d", "v", bad), "") << "'" << bad << "'";
}

TEST(DirtyMapTest, BitsRunsAndCounts) {
  DirtyMap m(kSize);
  EXPECT_FALSE(m.valid());
  EXPECT_EQ(m.units(), 1001u);
  m.Reset(4, {{10, 3}}, false);
  EXPECT_TRUE(m.valid());
  EXPECT_EQ(m.epoch(), 4u);
  m.Mark(100 * kU - 1, 2);  // straddles units 99 and 100
  m.Mark(1000 * kU, 1);     // the last, partial unit
  EXPECT_EQ(m.Count(), 6u);
  EXPECT_EQ(m.NextDirty(0), 10u);
  EXPECT_EQ(m.NextDirty(13), 99u);
  EXPECT_EQ(m.NextDirty(101), 1000u);
  m.Clear(1000);
  EXPECT_EQ(m.NextDirty(101), m.units()) << "none left after 100";
  m.Invalidate();
  EXPECT_FALSE(m.valid());
  EXPECT_EQ(m.Count(), 0u);
}

// A persisted map is there for the next process as it stood; one still waiting for a replica's
// record (pending), of another size, or not a map at all, is not: the whole volume is copied.
TEST(DirtyMapTest, APersistedMapIsThereForTheNextProcessUnlessItCannotBeTrusted) {
  const std::string path = TempPath();
  {
    DirtyMap m(kSize);
    ASSERT_TRUE(m.Open(path, kSize).ok());
    EXPECT_FALSE(m.valid()) << "a new file";
    m.Reset(7, {}, false);
    m.Mark(5 * kU, 4096);
    m.Carry(8, {{700, 2}});
  }
  {
    DirtyMap m;
    ASSERT_TRUE(m.Open(path, kSize).ok());
    ASSERT_TRUE(m.valid());
    EXPECT_EQ(m.epoch(), 8u);
    EXPECT_EQ(m.Count(), 3u);
    EXPECT_TRUE(m.IsDirty(5));
    EXPECT_TRUE(m.IsDirty(701));
    m.Reset(9, {{1, 1}}, /*pending=*/true);
  }
  {
    DirtyMap m;
    ASSERT_TRUE(m.Open(path, kSize).ok());
    EXPECT_FALSE(m.valid()) << "it was waiting for the replica's own record";
    m.Reset(9, {{1, 1}}, true);
    m.Resolve({{2, 1}});
  }
  {
    DirtyMap m;
    ASSERT_TRUE(m.Open(path, kSize).ok());
    ASSERT_TRUE(m.valid());
    EXPECT_EQ(m.Count(), 2u);
  }
  {
    DirtyMap bigger;  // the volume grew while no process kept the map
    ASSERT_TRUE(bigger.Open(path, 2 * kSize).ok());
    ASSERT_TRUE(bigger.valid()) << "a map of a volume that grew since";
    EXPECT_EQ(bigger.units(), 2001u);
    EXPECT_EQ(bigger.Count(), 2u) << "the new units start clean";
    EXPECT_TRUE(bigger.IsDirty(1));
    bigger.MarkUnits(2000, 1);
  }
  {
    DirtyMap again;
    ASSERT_TRUE(again.Open(path, 2 * kSize).ok());
    ASSERT_TRUE(again.valid());
    EXPECT_EQ(again.Count(), 3u);
    EXPECT_TRUE(again.IsDirty(2000)) << "a bit past the old end, kept";
  }
  DirtyMap smaller;
  ASSERT_TRUE(smaller.Open(path, kSize).ok());
  EXPECT_FALSE(smaller.valid()) << "a map of a bigger volume (volumes never shrink under one)";
  unlink(path.c_str());
}

// A volume that grows under a running primary: its maps grow with it, in memory and in their
// files, keeping every bit; the units past the old end start clean; the next process finds the
// grown map (and a map left open by a boot that ended is still not used).
TEST(DirtyMapTest, AMapGrowsWithItsVolumeKeepingItsBits) {
  DirtyMap mem(kSize);
  mem.Reset(2, {{3, 1}, {1000, 1}}, false);
  ASSERT_TRUE(mem.Grow(3 * kSize).ok());
  EXPECT_TRUE(mem.valid());
  EXPECT_EQ(mem.units(), 3001u);
  EXPECT_EQ(mem.Count(), 2u);
  EXPECT_TRUE(mem.IsDirty(1000));
  EXPECT_EQ(mem.NextDirty(1001), 3001u) << "the new units are clean";
  mem.MarkUnits(3000, 1);
  EXPECT_EQ(mem.NextDirty(1001), 3000u);
  ASSERT_TRUE(mem.Grow(kSize).ok()) << "smaller: nothing to do";
  EXPECT_EQ(mem.units(), 3001u);

  const std::string path = TempPath();
  {
    DirtyMap m;
    ASSERT_TRUE(m.Open(path, kSize).ok());
    m.Reset(5, {{7, 2}}, false);
    ASSERT_TRUE(m.Grow(4 * kSize).ok());
    EXPECT_EQ(m.Count(), 2u);
    m.MarkUnits(4000, 1);
    EXPECT_EQ(m.Count(), 3u);
  }
  {
    DirtyMap m;
    ASSERT_TRUE(m.Open(path, 4 * kSize).ok());
    ASSERT_TRUE(m.valid()) << "the grown map, closed in order";
    EXPECT_EQ(m.epoch(), 5u);
    EXPECT_EQ(m.Count(), 3u);
    EXPECT_TRUE(m.IsDirty(4000));
  }
  // Grown by a process of a boot that then ended with the file open: the claim survived the
  // growth, so the map is not trusted.
  ASSERT_TRUE(testing::RunInDyingChild([&] {
    auto m = std::make_unique<DirtyMap>();
    if (!m->Open(path, 4 * kSize).ok() || !m->Grow(5 * kSize).ok()) return false;
    m->MarkUnits(4500, 1);
    m.release();  // NOLINT: the child ends with it open
    return true;
  }));
  SetBootTagForTesting(uint64_t{0x5ef0} << 40);
  {
    DirtyMap m;
    ASSERT_TRUE(m.Open(path, 5 * kSize).ok());
    EXPECT_FALSE(m.valid()) << "left open by the boot before";
  }
  SetBootTagForTesting(0);
  unlink(path.c_str());
}

// A map left open by a boot that ended (a power loss or a kernel crash) is not used: the kernel
// wrote its pages back in no order, so bits set since it was opened may be missing. One left by a
// killed process of this boot, or closed in order before a reboot, is used as it stands.
TEST(DirtyMapTest, AMapLeftOpenByABootThatEndedIsNotUsed) {
  const std::string path = TempPath();
  // Keeps a map; `open`: left open (the object outlives the function: in a dying child, the
  // process ends with it open), else closed in order.
  auto keep = [&](bool open) {
    auto m = std::make_unique<DirtyMap>();
    if (!m->Open(path, kSize).ok()) return false;
    m->Reset(3, {{40, 2}}, false);
    const bool ok = m->valid();
    if (open) m.release();  // NOLINT: the child ends here without freeing it
    return ok;
  };
  auto dirty_units = [&] {
    DirtyMap m;
    EXPECT_TRUE(m.Open(path, kSize).ok());
    return m.valid() ? static_cast<int64_t>(m.Count()) : -1;
  };
  const uint64_t unclosed = CounterValue("spd_state_files_unclosed_total");
  ASSERT_TRUE(testing::RunInDyingChild([&] { return keep(true); }))
      << "a process of this boot, killed";
  EXPECT_EQ(dirty_units(), 2);
  ASSERT_TRUE(keep(false));                      // closed in order
  SetBootTagForTesting(uint64_t{0x5eed} << 40);  // a reboot
  EXPECT_EQ(dirty_units(), 2) << "closed in order before the reboot";
  ASSERT_TRUE(testing::RunInDyingChild([&] { return keep(true); }));
  SetBootTagForTesting(uint64_t{0x5eee} << 40);  // a power loss, then the next boot
  EXPECT_EQ(dirty_units(), -1) << "left open by the boot before: the whole volume";
  EXPECT_EQ(CounterValue("spd_state_files_unclosed_total") - unclosed, 1u);
  EXPECT_EQ(dirty_units(), -1) << "and invalid it stays, closed in order";
  SetBootTagForTesting(0);
  unlink(path.c_str());
}

}  // namespace
}  // namespace spd
