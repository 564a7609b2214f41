#include "replica/activity_log.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <vector>

#include "reactor/reactor.h"

namespace spd {
namespace {

using Need = ActivityLog::Need;

class ActivityLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/spd-alog-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    path_ = dir_ + "/vol.alog";
    auto r = Reactor::Create(ReactorOptions{});
    ASSERT_TRUE(r.ok());
    reactor_ = std::move(r).value();
  }
  void TearDown() override {
    log_.reset();
    reactor_.reset();
    std::filesystem::remove_all(dir_);
  }
  void Open(uint64_t epoch, uint32_t window) {
    auto l = ActivityLog::Open(path_, reactor_.get(), epoch, window);
    ASSERT_TRUE(l.ok()) << l.status().ToString();
    log_ = std::move(l).value();
  }
  // Writes a snapshot and waits for it: whether it was durable.
  bool Write() {
    int result = -1;
    log_->Write([](void* ctx, bool ok) { *static_cast<int*>(ctx) = ok ? 1 : 0; }, &result);
    for (int i = 0; i < 5000 && result < 0; ++i) reactor_->RunOnce(1'000'000);
    EXPECT_GE(result, 0) << "no completion";
    return result == 1;
  }
  void WriteSlot(int slot, uint64_t snap, uint64_t epoch, const std::vector<uint32_t>& units,
                 bool torn = false) {
    std::vector<uint8_t> b(ActivityLog::kSlotBytes);
    ActivityLog::Encode(snap, epoch, units, b.data());
    if (torn) b[64] ^= 0xff;  // the first unit
    const int fd = open(path_.c_str(), O_RDWR | O_CREAT, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(pwrite(fd, b.data(), b.size(), slot * b.size()), static_cast<ssize_t>(b.size()));
    close(fd);
  }
  std::string dir_, path_;
  std::unique_ptr<Reactor> reactor_;
  std::unique_ptr<ActivityLog> log_;
};

TEST_F(ActivityLogTest, NoFileIsNoLog) { EXPECT_FALSE(ActivityLog::Read(path_).valid); }

TEST_F(ActivityLogTest, TheHighestValidSnapshotIsTheLog) {
  WriteSlot(0, 6, 3, {9, 4});
  WriteSlot(1, 7, 3, {4, 5, 9});
  ActivityLog::Contents c = ActivityLog::Read(path_);
  ASSERT_TRUE(c.valid);
  EXPECT_EQ(c.snap, 7u);
  EXPECT_EQ(c.epoch, 3u);
  EXPECT_EQ(c.units, (std::vector<uint32_t>{4, 5, 9}));
  EXPECT_FALSE(c.whole);
  // A torn newer slot leaves the one before it.
  WriteSlot(1, 7, 3, {4, 5, 9}, /*torn=*/true);
  c = ActivityLog::Read(path_);
  ASSERT_TRUE(c.valid);
  EXPECT_EQ(c.snap, 6u);
  EXPECT_EQ(c.units, (std::vector<uint32_t>{4, 9}));
  WriteSlot(0, 6, 3, {9, 4}, /*torn=*/true);
  EXPECT_FALSE(ActivityLog::Read(path_).valid);
}

TEST_F(ActivityLogTest, AUnitIsCoveredOnlyOnceASnapshotHoldingItIsWritten) {
  Open(5, 64);
  EXPECT_EQ(log_->Admit(3, 4, 0), Need::kWait);
  EXPECT_TRUE(log_->pending());
  EXPECT_EQ(log_->Admit(4, 4, 0), Need::kWait) << "on its way, not durable";
  ASSERT_TRUE(Write());
  EXPECT_FALSE(log_->pending());
  EXPECT_EQ(log_->Admit(3, 4, 0), Need::kCovered);
  log_->Touch(3, 4, 10);
  ActivityLog::Contents c = ActivityLog::Read(path_);
  ASSERT_TRUE(c.valid);
  EXPECT_EQ(c.epoch, 5u);
  EXPECT_EQ(c.units, (std::vector<uint32_t>{3, 4}));
  // A second snapshot goes to the other slot; the file's highest is it.
  EXPECT_EQ(log_->Admit(7, 7, 0), Need::kWait);
  ASSERT_TRUE(Write());
  c = ActivityLog::Read(path_);
  EXPECT_EQ(c.units, (std::vector<uint32_t>{3, 4, 7}));
  EXPECT_EQ(log_->snapshots_written(), 2u);
}

TEST_F(ActivityLogTest, AFullLogTakesNoUnitUntilItsWritesAreDurableEverywhere) {
  Open(1, 16);
  for (uint32_t u = 0; u < 16; ++u) ASSERT_EQ(log_->Admit(u, u, 0), Need::kWait);
  ASSERT_TRUE(Write());
  for (uint32_t u = 0; u < 16; ++u) log_->Touch(u, u, 100 + u);
  EXPECT_EQ(log_->Admit(20, 20, 0), Need::kFull);
  EXPECT_EQ(log_->Admit(20, 20, 100), Need::kFull) << "nothing numbered below 100";
  // Writes 100..103 durable and complete: units 0..3 may go.
  EXPECT_EQ(log_->Admit(20, 23, 104), Need::kWait);
  EXPECT_EQ(log_->units(), 16u);
  EXPECT_EQ(log_->Admit(24, 24, 104), Need::kFull) << "all or none: nothing reserved";
  ASSERT_TRUE(Write());
  ActivityLog::Contents c = ActivityLog::Read(path_);
  ASSERT_EQ(c.units.size(), 16u);
  EXPECT_EQ(c.units.front(), 4u) << "units 0..3 left the log";
  // A unit reserved but not numbered yet never leaves, whatever the watermark.
  EXPECT_EQ(log_->Admit(30, 30, UINT64_MAX), Need::kWait);
  ASSERT_TRUE(Write());
  EXPECT_EQ(log_->Admit(31, 31, UINT64_MAX), Need::kWait);
  ASSERT_TRUE(Write());
  c = ActivityLog::Read(path_);
  EXPECT_TRUE(std::find(c.units.begin(), c.units.end(), 30u) != c.units.end());
}

TEST_F(ActivityLogTest, ARequestWiderThanAQuarterOfTheWindowIsTheWholeVolume) {
  Open(1, 64);
  EXPECT_EQ(log_->Admit(0, 16, 0), Need::kWait);  // 17 units > 64 / 4
  ASSERT_TRUE(Write());
  EXPECT_EQ(log_->units(), 1u);
  EXPECT_EQ(log_->Admit(100, 200, 0), Need::kCovered);
  EXPECT_TRUE(ActivityLog::Read(path_).whole);
}

TEST_F(ActivityLogTest, NumbersGoOnFromTheFileAndAWindowOutOfRangeIsRefused) {
  WriteSlot(1, 41, 2, {1});
  Open(3, 16);
  EXPECT_EQ(log_->Admit(2, 2, 0), Need::kWait);
  ASSERT_TRUE(Write());
  ActivityLog::Contents c = ActivityLog::Read(path_);
  EXPECT_EQ(c.snap, 42u);
  EXPECT_EQ(c.epoch, 3u);
  EXPECT_EQ(c.units, (std::vector<uint32_t>{2}));
  EXPECT_FALSE(ActivityLog::Open(path_, reactor_.get(), 3, 15).ok());
  EXPECT_FALSE(ActivityLog::Open(path_, reactor_.get(), 3, ActivityLog::kUnitsMax + 1).ok());
}

}  // namespace
}  // namespace spd
