// The journal's pieces on their own: log block encoding/verification and group commit ordering.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "io/sim_backend.h"
#include "journal/group_commit.h"
#include "journal/log_codec.h"

namespace spd::journal {
namespace {

constexpr uint8_t kUuid[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
constexpr uint8_t kOtherUuid[16] = {9};

std::vector<LogRecord> Records(size_t n) {
  std::vector<LogRecord> v(n);
  for (size_t i = 0; i < n; ++i)
    v[i] = {static_cast<uint32_t>(i % 2 ? LogRecordType::kFree : LogRecordType::kAlloc),
            static_cast<uint32_t>(i % 7), i * 3, i * 5 + 1, 0};
  return v;
}

TEST(LogCodec, RecordsRoundTripThroughConsecutiveBlocks) {
  auto recs = Records(300);
  std::vector<uint8_t> buf(4 * kBlockBytes);
  ASSERT_EQ(BlocksFor(recs.size()), 3u);
  ASSERT_EQ(EncodeBlocks(recs, 41, kUuid, buf.data(), 4), 3u);
  std::vector<LogRecord> back;
  for (size_t b = 0; b < 3; ++b) {
    const uint8_t* blk = buf.data() + b * kBlockBytes;
    ASSERT_EQ(CheckBlock(blk, 41 + b, kUuid), BlockCheck::kValid) << b;
    auto r = BlockRecords(blk);
    EXPECT_EQ(r.size(), b < 2 ? 126u : 48u);
    back.insert(back.end(), r.begin(), r.end());
  }
  ASSERT_EQ(back.size(), recs.size());
  EXPECT_EQ(std::memcmp(back.data(), recs.data(), recs.size() * sizeof(LogRecord)), 0);
}

TEST(LogCodec, StopsAtBlocksMax) {
  auto recs = Records(300);
  std::vector<uint8_t> buf(2 * kBlockBytes);
  EXPECT_EQ(EncodeBlocks(recs, 1, kUuid, buf.data(), 2), 2u);
  EXPECT_EQ(BlockRecords(buf.data() + kBlockBytes).size(), 126u);
}

TEST(LogCodec, EveryWayABlockIsNotTheNextOne) {
  auto recs = Records(10);
  std::vector<uint8_t> blk(kBlockBytes);
  ASSERT_EQ(EncodeBlocks(recs, 7, kUuid, blk.data(), 1), 1u);
  EXPECT_EQ(CheckBlock(blk.data(), 7, kUuid), BlockCheck::kValid);
  EXPECT_EQ(CheckBlock(blk.data(), 8, kUuid), BlockCheck::kWrongLsn);
  EXPECT_EQ(CheckBlock(blk.data(), 7, kOtherUuid), BlockCheck::kForeignUuid);
  std::vector<uint8_t> zero(kBlockBytes, 0);
  EXPECT_EQ(CheckBlock(zero.data(), 7, kUuid), BlockCheck::kBadMagic);
  // A torn block: any byte of it changed, header or records, fails the checksum.
  for (size_t off : {size_t{36}, sizeof(LogBlockHeader) + 5, size_t{kBlockBytes - 1}}) {
    auto torn = blk;
    torn[off] ^= 0x40;
    EXPECT_EQ(CheckBlock(torn.data(), 7, kUuid), BlockCheck::kBadCrc) << off;
  }
  auto bad_count = blk;
  LogBlockHeader h;
  std::memcpy(&h, bad_count.data(), sizeof h);
  h.count = kRecordsPerBlock + 1;
  std::memcpy(bad_count.data(), &h, sizeof h);
  EXPECT_EQ(CheckBlock(bad_count.data(), 7, kUuid), BlockCheck::kBadCount);
  EXPECT_STREQ(BlockCheckName(BlockCheck::kBadCrc), "bad checksum");
}

// A pool stand-in: RunCommit() only records that a commit started; the test ends it.
class FakeOwner : public GroupCommit::Owner {
 public:
  void RunCommit() override { ++runs; }
  bool CommitHasWork() const override { return has_work; }
  int runs = 0;
  bool has_work = false;
};

struct Recorder : CommitWaiter {
  std::vector<std::pair<int, int32_t>>* log;
  int id;
  Recorder(std::vector<std::pair<int, int32_t>>* l, int i) : log(l), id(i) {
    fn = [](CommitWaiter* w, int32_t result) {
      auto* self = static_cast<Recorder*>(w);
      self->log->push_back({self->id, result});
    };
  }
};

class GroupCommitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = Reactor::Create(ReactorOptions{});
    ASSERT_TRUE(r.ok());
    reactor_ = std::move(r).value();
    sim_ = std::make_unique<SimBackend>(reactor_.get(), 1 << 20, SimOptions{});
  }
  void RunUntilIdle() {
    for (int i = 0; i < 100 && sim_->stats().inflight > 0; ++i) reactor_->RunOnce(1'000'000);
  }
  std::unique_ptr<Reactor> reactor_;
  std::unique_ptr<SimBackend> sim_;
  FakeOwner owner_;
  std::vector<std::pair<int, int32_t>> log_;
};

TEST_F(GroupCommitTest, ArrivalsDuringACommitShareTheNextOne) {
  GroupCommit gc(&owner_, sim_.get(), /*overlap=*/false);
  Recorder a(&log_, 1), b(&log_, 2), c(&log_, 3), d(&log_, 4);
  gc.Wait(&a);
  EXPECT_EQ(owner_.runs, 1);
  gc.Wait(&b);
  gc.Wait(&c);
  gc.Wait(&d);
  EXPECT_EQ(owner_.runs, 1);  // one commit at a time
  gc.CommitDone(0);
  ASSERT_EQ(log_.size(), 1u);
  EXPECT_EQ(log_[0].first, 1);
  EXPECT_EQ(owner_.runs, 2);  // the next starts at once, for all three
  gc.CommitDone(0);
  ASSERT_EQ(log_.size(), 4u);
  EXPECT_EQ(owner_.runs, 2);
  EXPECT_FALSE(gc.running());
}

TEST_F(GroupCommitTest, OverlappingFlushCompletesAfterTheRunningCommit) {
  GroupCommit gc(&owner_, sim_.get(), /*overlap=*/true);
  Recorder a(&log_, 1), b(&log_, 2);
  const uint64_t flushes = sim_->flushes();
  gc.Wait(&a);
  gc.Wait(&b);  // nothing to record: gets its own device flush now
  EXPECT_EQ(gc.overlap_flushes(), 1u);
  RunUntilIdle();
  EXPECT_EQ(sim_->flushes(), flushes + 1);
  EXPECT_TRUE(log_.empty());  // flushed, but the running commit may hold its records
  gc.CommitDone(0);
  ASSERT_EQ(log_.size(), 2u);
  EXPECT_EQ(log_[0], std::make_pair(1, 0));
  EXPECT_EQ(log_[1], std::make_pair(2, 0));
  EXPECT_EQ(owner_.runs, 1);  // no further commit was needed
  EXPECT_FALSE(gc.busy());
}

TEST_F(GroupCommitTest, AFailedCommitFailsTheOverlappingWaitersToo) {
  GroupCommit gc(&owner_, sim_.get(), /*overlap=*/true);
  Recorder a(&log_, 1), b(&log_, 2);
  gc.Wait(&a);
  gc.Wait(&b);
  RunUntilIdle();
  gc.CommitDone(-EIO);
  ASSERT_EQ(log_.size(), 2u);
  EXPECT_EQ(log_[0], std::make_pair(1, -EIO));
  EXPECT_EQ(log_[1], std::make_pair(2, -EIO));
}

TEST_F(GroupCommitTest, PendingRecordsMeanNoOverlap) {
  GroupCommit gc(&owner_, sim_.get(), /*overlap=*/true);
  Recorder a(&log_, 1), b(&log_, 2);
  gc.Wait(&a);
  owner_.has_work = true;  // b's write allocated: its record must be written first
  gc.Wait(&b);
  EXPECT_EQ(gc.overlap_flushes(), 0u);
  gc.CommitDone(0);
  EXPECT_EQ(owner_.runs, 2);
  ASSERT_EQ(log_.size(), 1u);
  gc.CommitDone(0);
  ASSERT_EQ(log_.size(), 2u);
  EXPECT_EQ(log_[1].first, 2);
}

}  // namespace
}  // namespace spd::journal
