// A copy that moves to another node while the primary serves (ReplicaSet::SetReplicas;
// docs/replication.md, "Moving a copy"): the old link stops counting at once, with no mark and
// no failure counted, and its map file goes; the new copy is copied whole and then gets every
// write; a slot of a removed link is used again once nothing refers to it.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <filesystem>

#include "common/counters.h"
#include "replica/dirty_map.h"
#include "replica/replica_set.h"
#include "replica/replica_set_fixture.h"

namespace spd {
namespace {

using LinkState = ReplicaSet::LinkState;

class ReplicaSetMoveTest : public replica_test::ReplicaSetStateTest {
 protected:
  // One replica, node n as `name`; marks confirmed at once; maps kept in dir_.
  ReplicaSetOptions Opts(const std::string& name, const replica_test::Node& n) {
    ReplicaSetOptions o = ResyncOptions(name, n);
    o.state_dir = dir_;
    return o;
  }
  // Drives the reactor until the only listed link is `name`'s and in sync (10 s at most).
  bool InSync(const std::string& name) {
    for (int i = 0; i < 10000; ++i) {
      const auto links = set_->Links();
      if (links.size() == 1 && links[0].name == name && links[0].state == LinkState::kInSync)
        return true;
      reactor_->RunOnce(1'000'000);
    }
    return false;
  }
  bool Exists(const std::string& path) {
    struct stat st;
    return stat(path.c_str(), &st) == 0;
  }
};

TEST_F(ReplicaSetMoveTest, TheNewCopyIsCopiedWholeAndTheOldOneStopsCounting) {
  StartSet(Opts("r1", r1_));
  WritePrimary(256 << 10);
  ASSERT_EQ(Do(RequestOp::kFlush, 0, 0, 0), 0);
  // r1 misses a write: out of sync, with a map kept on disk.
  const uint16_t port = StopServer(r1_);
  ASSERT_EQ(Do(RequestOp::kWrite, 8192, 4096, 'm'), 0);
  ASSERT_EQ(set_->Links()[0].state, LinkState::kOutOfSync);
  const std::string r1_map = DirtyMapPath(dir_, "vol", "r1");
  ASSERT_TRUE(Exists(r1_map));
  const uint64_t failures = CounterValue("spd_replication_link_failures_total");
  const uint64_t resynced = CounterValue("spd_replication_resync_bytes_total");

  ASSERT_EQ(set_->SetReplicas({{"r2", Addr(r2_)}}), 0);
  EXPECT_FALSE(Exists(r1_map)) << "the old copy's map goes with its link";
  ASSERT_EQ(set_->Links().size(), 1u) << "the removed link is not listed";
  EXPECT_EQ(set_->Links()[0].name, "r2");
  EXPECT_EQ(set_->Links()[0].state, LinkState::kOutOfSync) << "a new copy never counted";
  ASSERT_EQ(Do(RequestOp::kWrite, 12288, 4096, 'n'), 0) << "writes go on meanwhile";
  ASSERT_TRUE(InSync("r2")) << set_->Links()[0].detail;
  EXPECT_EQ(BytesDifferingFromPrimary(r2_), 0u) << "the new copy holds the volume";
  EXPECT_GE(CounterValue("spd_replication_resync_bytes_total") - resynced, 16u * 4096)
      << "copied whole (every allocated region)";
  EXPECT_EQ(CounterValue("spd_replication_link_failures_total"), failures)
      << "a removal is no failure";

  // From now on writes reach r2, and r1 (back) is never connected again.
  RestartServer(r1_, port);
  const char before = ByteAt(r1_, 0);
  ASSERT_EQ(Do(RequestOp::kWrite, 0, 4096, 'z', kReqFua), 0);
  for (int i = 0; i < 500; ++i) reactor_->RunOnce(1'000'000);  // several retry periods
  EXPECT_EQ(ByteAt(r2_, 0), 'z');
  EXPECT_EQ(ByteAt(r1_, 0), before) << "the removed copy gets nothing";
  EXPECT_EQ(set_->Links().size(), 1u);
  EXPECT_EQ(set_->SetReplicas({{"r2", Addr(r2_)}}), 0) << "the same placement: nothing to do";
  EXPECT_EQ(set_->Links()[0].state, LinkState::kInSync);
}

TEST_F(ReplicaSetMoveTest, AnInSyncCopyRemovedUnderWritesHoldsNoRequest) {
  // r1 in sync with writes in flight when it goes: they complete without its ack.
  StartSet(Opts("r1", r1_));
  const uint64_t failures = CounterValue("spd_replication_link_failures_total");
  std::vector<Op*> ops;
  for (int i = 0; i < 16; ++i) ops.push_back(Submit(RequestOp::kWrite, i * 65536, 4096, 'w'));
  ASSERT_EQ(set_->SetReplicas({}), 0);
  EXPECT_TRUE(set_->Links().empty());
  for (Op* o : ops) EXPECT_EQ(Wait(o), 0);
  ASSERT_EQ(Do(RequestOp::kWrite, 0, 4096, 'q', kReqFua), 0);
  for (int i = 0; i < 50; ++i) reactor_->RunOnce(1'000'000);
  EXPECT_NE(ByteAt(r1_, 0), 'q') << "r1, still up, gets nothing new";
  StopServer(r1_);  // gone: nothing waits for it
  EXPECT_EQ(Do(RequestOp::kWrite, 0, 4096, 'q'), 0);
  EXPECT_EQ(Do(RequestOp::kFlush, 0, 0, 0), 0);
  EXPECT_EQ(CounterValue("spd_replication_link_failures_total"), failures)
      << "the removed link was never waited for again";
}

TEST_F(ReplicaSetMoveTest, MovedToAndFroMoreOftenThanTheSetHasSlots) {
  // A slow copy (64 KiB regions, one at a time, 2 ms each way): each move below cuts the
  // previous new copy's resync short.
  ReplicaSetOptions o = Opts("r1", r1_);
  o.resync_region_bytes = 64 << 10;
  o.resync_regions_inflight = 1;
  o.inject_rtt_us = 2000;
  StartSet(o);
  WritePrimary(64 << 10);  // every unit allocated: a whole copy takes 64 round trips
  const uint64_t aborted = CounterValue("spd_replication_resyncs_aborted_total");
  // Ten moves: past kReplicasMax links the removed ones' slots are used again.
  for (int i = 0; i < 10; ++i) {
    if (i > 0) {  // the copy moved last time is being resynced: cut it short
      for (int k = 0; k < 5000 && set_->Links()[0].state != LinkState::kResyncing; ++k)
        reactor_->RunOnce(1'000'000);
      ASSERT_EQ(set_->Links()[0].state, LinkState::kResyncing) << "move " << i;
    }
    const bool to_r2 = i % 2 == 0;
    const std::vector<ReplicaTarget> t = {{to_r2 ? "r2" : "r1", Addr(to_r2 ? r2_ : r1_)}};
    int rc = -EBUSY;
    for (int k = 0; k < 5000 && rc == -EBUSY; ++k) {
      rc = set_->SetReplicas(t);
      if (rc == -EBUSY) reactor_->RunOnce(1'000'000);
    }
    ASSERT_EQ(rc, 0) << "move " << i;
    ASSERT_EQ(Do(RequestOp::kWrite, i * 4096, 4096, 'a' + i), 0);
  }
  EXPECT_GE(CounterValue("spd_replication_resyncs_aborted_total") - aborted, 9u)
      << "each move cut a resync short";
  ASSERT_TRUE(InSync("r1")) << set_->Links()[0].detail;
  EXPECT_EQ(BytesDifferingFromPrimary(r1_), 0u);
}

}  // namespace
}  // namespace spd
