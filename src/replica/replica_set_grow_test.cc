// A replicated volume that grows under its primary (ReplicaSet::Grow; docs/replication.md,
// "Resizing a replicated volume"): the replicas in sync grow first, on a kGrow numbered among
// the writes, then the primary's copy; a replica that was away grows at its next hello and gets
// what it missed past the old end from its dirty map, not the whole volume.
#include <gtest/gtest.h>

#include "common/counters.h"
#include "replica/replica_set.h"
#include "replica/replica_set_fixture.h"

namespace spd {
namespace {

using replica_test::kVolBytes;
using ReplicaSetGrowTest = replica_test::ReplicaSetTest;
constexpr uint64_t kBig = 2 * kVolBytes;

// Grows the set's replicas, then the primary's copy (as ReplicationManager does); the grow's
// result.
int32_t GrowAll(Reactor* r, ReplicaSet* set, replica_test::Node* primary, uint64_t size) {
  int32_t got = 1;
  set->Grow(size, [&](int32_t x) { got = x; });
  for (int i = 0; i < 5000 && got == 1; ++i) r->RunOnce(1'000'000);
  if (got != 0) return got;
  bool resized = false;
  Status st;
  primary->volumes->Resize("vol", size, [&](Status s) {
    st = std::move(s);
    resized = true;
  });
  for (int i = 0; i < 5000 && !resized; ++i) r->RunOnce(1'000'000);
  return resized && st.ok() ? 0 : -EIO;
}

TEST_F(ReplicaSetGrowTest, TheReplicasGrowFirstThenWritesPastTheOldEndReachEveryCopy) {
  StartSet(Options(1, {{"r1", Addr(r1_)}, {"r2", Addr(r2_)}}));
  ASSERT_EQ(Do(RequestOp::kWrite, 0, 4096, 'o'), 0);
  EXPECT_EQ(Do(RequestOp::kWrite, kVolBytes, 4096, 'x'), -ENOSPC) << "past the end, before";
  int32_t got = 1;
  set_->Grow(kBig, [&](int32_t x) { got = x; });
  for (int i = 0; i < 5000 && got == 1; ++i) reactor_->RunOnce(1'000'000);
  ASSERT_EQ(got, 0);
  EXPECT_EQ(r1_.v->size_bytes(), kBig) << "the replicas grew";
  EXPECT_EQ(r2_.v->size_bytes(), kBig);
  EXPECT_EQ(primary_.v->size_bytes(), kVolBytes) << "the primary's copy grows after them";
  got = 1;
  set_->Grow(kVolBytes, [&](int32_t x) { got = x; });
  EXPECT_EQ(got, 0) << "not bigger: nothing to do";
  ASSERT_EQ(GrowAll(reactor_.get(), set_.get(), &primary_, kBig), 0);
  EXPECT_EQ(primary_.v->size_bytes(), kBig);
  ASSERT_EQ(Do(RequestOp::kWrite, kBig - 8192, 4096, 'n'), 0);
  ASSERT_EQ(Do(RequestOp::kFlush, 0, 0, 0), 0);
  for (replica_test::Node* n : {&primary_, &r1_, &r2_}) {
    EXPECT_EQ(ByteAt(*n, kBig - 8192), 'n');
    EXPECT_EQ(ByteAt(*n, 0), 'o');
  }
  for (const auto& l : set_->Links())
    EXPECT_EQ(l.state, ReplicaSet::LinkState::kInSync) << l.name << ": " << l.detail;
}

TEST_F(ReplicaSetGrowTest, AReplicaAwayDuringTheGrowGrowsAtItsHelloAndGetsOnlyWhatItMissed) {
  StartSet(ResyncOptions("r1", r1_));
  ASSERT_EQ(Do(RequestOp::kWrite, 0, 4096, 'a'), 0);
  const uint16_t port = StopServer(r1_);
  ASSERT_EQ(Do(RequestOp::kWrite, 65536, 4096, 'b'), 0);  // fails the link: out of sync
  ASSERT_EQ(set_->Links()[0].state, ReplicaSet::LinkState::kOutOfSync);
  ASSERT_EQ(GrowAll(reactor_.get(), set_.get(), &primary_, kBig), 0)
      << "no replica in sync: the primary grows at once";
  EXPECT_EQ(r1_.v->size_bytes(), kVolBytes);
  ASSERT_EQ(Do(RequestOp::kWrite, kBig - 65536, 4096, 'c'), 0);
  auto copied = [] {
    return CounterValue("spd_replication_resync_bytes_total") +
           CounterValue("spd_replication_resync_discard_bytes_total");
  };
  const uint64_t before = copied();
  RestartServer(r1_, port);
  for (int i = 0; i < 10000 && set_->Links()[0].state != ReplicaSet::LinkState::kInSync; ++i)
    reactor_->RunOnce(1'000'000);
  ASSERT_EQ(set_->Links()[0].state, ReplicaSet::LinkState::kInSync) << set_->Links()[0].detail;
  EXPECT_EQ(r1_.v->size_bytes(), kBig) << "grown at its hello";
  EXPECT_EQ(ByteAt(r1_, 65536), 'b');
  EXPECT_EQ(ByteAt(r1_, kBig - 65536), 'c') << "what it missed past the old end";
  EXPECT_EQ(ByteAt(r1_, 0), 'a');
  EXPECT_EQ(copied() - before, 2u * 65536) << "the two units it missed, not the whole volume";
  EXPECT_EQ(BytesDifferingFromPrimary(r1_), 0u);
}

// A grow while the replica is not there at all, and one whose replica refuses it (its copy is
// bigger: not a copy of this volume): the replica stops counting; the primary grows anyway.
TEST_F(ReplicaSetGrowTest, AReplicaThatCannotGrowStopsCounting) {
  StartSet(ResyncOptions("r1", r1_));
  ASSERT_TRUE(r1_.pool->ResizeVolume("vol", 3 * kVolBytes).ok());  // bigger than the grow
  int32_t got = 1;
  set_->Grow(kBig, [&](int32_t x) { got = x; });
  for (int i = 0; i < 5000 && got == 1; ++i) reactor_->RunOnce(1'000'000);
  EXPECT_EQ(got, 0) << "done once its failure was marked";
  EXPECT_EQ(set_->Links()[0].state, ReplicaSet::LinkState::kOutOfSync);
  EXPECT_NE(set_->Links()[0].detail.find("failed message"), std::string::npos)
      << set_->Links()[0].detail;
}

// An asynchronous volume: the kGrow is numbered behind the writes its replicas still lag on
// and, unlike a write, is not acknowledged ahead of them (the caller grows the primary's copy
// only once every replica has grown); then writes past the old end reach every copy.
TEST_F(ReplicaSetGrowTest, AnAsynchronousVolumeGrowsBehindItsLag) {
  ReplicaSetOptions o = Options(1, {{"r1", Addr(r1_)}, {"r2", Addr(r2_)}});
  o.async = true;
  o.inject_rtt_us = 1'000'000;  // every message leaves a second after it was numbered
  o.ack_timeout_ms = 10'000;
  StartSet(o);
  ASSERT_EQ(Do(RequestOp::kWrite, 0, 4096, 'a'), 0) << "acknowledged locally";
  EXPECT_GT(set_->lag_bytes(), 0u) << "the replicas lag behind it";
  int32_t got = 1;
  set_->Grow(kBig, [&](int32_t x) { got = x; });
  for (int i = 0; i < 100 && got == 1; ++i) reactor_->RunOnce(1'000'000);
  EXPECT_EQ(got, 1) << "not done before the replicas have it";
  EXPECT_EQ(r1_.v->size_bytes(), kVolBytes);
  for (int i = 0; i < 10000 && got == 1; ++i) reactor_->RunOnce(1'000'000);
  ASSERT_EQ(got, 0);
  for (replica_test::Node* n : {&r1_, &r2_}) {
    EXPECT_EQ(n->v->size_bytes(), kBig) << "every replica grew";
    EXPECT_EQ(ByteAt(*n, 0), 'a') << "and had the write numbered before the grow";
  }
  bool resized = false;
  primary_.volumes->Resize("vol", kBig, [&](Status s) {
    EXPECT_TRUE(s.ok()) << s.ToString();
    resized = true;
  });
  for (int i = 0; i < 5000 && !resized; ++i) reactor_->RunOnce(1'000'000);
  ASSERT_TRUE(resized);
  ASSERT_EQ(Do(RequestOp::kWrite, kBig - 8192, 4096, 'n'), 0);
  for (int i = 0; i < 10000 && set_->lag_bytes() > 0; ++i) reactor_->RunOnce(1'000'000);
  ASSERT_EQ(set_->lag_bytes(), 0u);
  for (replica_test::Node* n : {&r1_, &r2_}) EXPECT_EQ(ByteAt(*n, kBig - 8192), 'n');
  for (const auto& l : set_->Links())
    EXPECT_EQ(l.state, ReplicaSet::LinkState::kInSync) << l.name << ": " << l.detail;
}

}  // namespace
}  // namespace spd
