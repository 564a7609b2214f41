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
  DirtyMap bigger;
  ASSERT_TRUE(bigger.Open(path, 2 * kSize).ok());
  EXPECT_FALSE(bigger.valid()) << "a map of another size";
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
