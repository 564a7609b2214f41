// ReplicaSet with real ReplicaServers in the same process (every pool on one reactor): writes,
// write-zeroes, FUA and flushes reach every in-sync replica before they complete; a replica
// that is down or goes away stops counting only once its out-of-sync mark is confirmed; a mark
// that cannot be made fails the held requests; a newer primary fences the old one.
#include "replica/replica_set.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "common/counters.h"
#include "replica/replica_set_fixture.h"
#include "replica/replica_tls.h"

namespace spd {
namespace {

using replica_test::kVolBytes;
using replica_test::Node;

// The outage tests' start: a set with r1 alone (marks confirmed at once, resyncs tried every
// 100 ms), 16 units of 64 KiB written ('i') and flushed there.
class ReplicaSetTest : public replica_test::ReplicaSetTest {
 protected:
  void StartR1WithData() {
    ReplicaSetOptions o = Options(1, {{"r1", Addr(r1_)}});
    o.mark_out_of_sync = [](const std::string&, std::function<void(bool)> done) { done(true); };
    o.resync_retry_ms = 100;
    StartSet(o);
    for (int i = 0; i < 16; ++i) ASSERT_EQ(Do(RequestOp::kWrite, i * 65536, 4096, 'i'), 0);
    ASSERT_EQ(Do(RequestOp::kFlush, 0, 0, 0), 0);
  }
};

TEST_F(ReplicaSetTest, ThreeWayWritesAndFlushesReachEveryReplica) {
  StartSet(Options(1, {{"r1", Addr(r1_)}, {"r2", Addr(r2_)}}));
  for (const auto& l : set_->Links())
    EXPECT_EQ(l.state, ReplicaSet::LinkState::kInSync) << l.name << ": " << l.detail;
  ASSERT_EQ(Do(RequestOp::kWrite, 0, 8192, 'a'), 0);
  ASSERT_EQ(Do(RequestOp::kWrite, 1 << 20, 4096, 'b', kReqFua), 0);
  // Many at once (more than one message in flight per link).
  std::vector<Op*> batch;
  for (int i = 0; i < 24; ++i)
    batch.push_back(Submit(RequestOp::kWrite, (2 << 20) + i * 4096, 4096, 'c' + i % 20));
  for (Op* o : batch) ASSERT_EQ(Wait(o), 0);
  ASSERT_EQ(Do(RequestOp::kWriteZeroes, 4096, 4096, 0), 0);
  ASSERT_EQ(Do(RequestOp::kFlush, 0, 0, 0), 0);
  for (Node* n : {&primary_, &r1_, &r2_}) {
    EXPECT_EQ(ByteAt(*n, 0), 'a');
    EXPECT_EQ(ByteAt(*n, 4096), 0);
    EXPECT_EQ(ByteAt(*n, 8191), 0);
    EXPECT_EQ(ByteAt(*n, 1 << 20), 'b');
    for (int i = 0; i < 24; ++i) EXPECT_EQ(ByteAt(*n, (2 << 20) + i * 4096), 'c' + i % 20);
  }
  // The barrier recorded the replicas' generation: epoch 1, the flush's number (the 28th).
  EXPECT_EQ(r1_.v->generation(), (ReplicaGeneration{1, 28}));
  EXPECT_EQ(r2_.v->generation(), (ReplicaGeneration{1, 28}));
  EXPECT_EQ(r1_.v->fence_epoch_durable(), 1u);
  for (const auto& l : set_->Links()) EXPECT_EQ(l.acked, 28u) << l.name;
}

// Idle means idle: a set with nothing in flight and every copy in sync ticks once a second,
// not ten times; a request (its ack's deadline) or a replica lost (its reconnect) brings the
// short tick back at once.
TEST_F(ReplicaSetTest, AnIdleSetTicksSlowlyUntilARequestOrAFailure) {
  ReplicaSetOptions o = Options(1, {{"r1", Addr(r1_)}, {"r2", Addr(r2_)}});
  o.mark_out_of_sync = [](const std::string&, std::function<void(bool)> done) { done(true); };
  StartSet(o);
  ASSERT_EQ(Do(RequestOp::kWrite, 0, 4096, 'i'), 0);
  for (int i = 0; i < 3000 && !set_->tick_idle(); ++i) reactor_->RunOnce(1'000'000);
  ASSERT_TRUE(set_->tick_idle()) << "a set with nothing to do kept its 100 ms tick";
  Op* w = Submit(RequestOp::kWrite, 4096, 4096, 'j');
  EXPECT_FALSE(set_->tick_idle()) << "a request did not bring the short tick back";
  ASSERT_EQ(Wait(w), 0);
  for (int i = 0; i < 3000 && !set_->tick_idle(); ++i) reactor_->RunOnce(1'000'000);
  ASSERT_TRUE(set_->tick_idle());
  // r2 goes away while the set is idle: the failure wakes the tick (its mark, its reconnect).
  EXPECT_TRUE(replica_test::ShutdownServer(reactor_.get(), r2_.server.get()));
  r2_.server.reset();
  for (int i = 0; i < 3000 && set_->Links()[1].state == ReplicaSet::LinkState::kInSync; ++i)
    reactor_->RunOnce(1'000'000);
  ASSERT_EQ(set_->Links()[1].state, ReplicaSet::LinkState::kOutOfSync);
  EXPECT_FALSE(set_->tick_idle()) << "a lost replica did not bring the short tick back";
  // Out of sync, it keeps the short tick (its reconnects), however long nothing is written.
  for (int i = 0; i < 1500; ++i) reactor_->RunOnce(1'000'000);
  EXPECT_FALSE(set_->tick_idle());
  EXPECT_EQ(Do(RequestOp::kWrite, 8192, 4096, 'k'), 0);
  EXPECT_EQ(ByteAt(r1_, 8192), 'k');
}

TEST_F(ReplicaSetTest, AReplicaThatIsDownIsMarkedOutOfSyncBeforeAnythingCompletes) {
  std::vector<std::string> marked;
  std::function<void(bool)> pending;
  ReplicaSetOptions o = Options(1, {{"r1", Addr(r1_)}, {"gone", "127.0.0.1:1"}});
  o.mark_out_of_sync = [&](const std::string& name, std::function<void(bool)> done) {
    marked.push_back(name);
    pending = std::move(done);  // confirmed later, by the test
  };
  auto s = ReplicaSet::Start(primary_.dispatcher.get(), primary_.v, o);
  ASSERT_TRUE(s.ok());
  set_ = std::move(s).value();
  for (int i = 0; i < 5000 && !set_->settled(); ++i) reactor_->RunOnce(1'000'000);
  set_->Attach();
  ASSERT_EQ(marked, std::vector<std::string>{"gone"});
  Op* w = Submit(RequestOp::kWrite, 0, 4096, 'm');
  for (int i = 0; i < 200; ++i) reactor_->RunOnce(1'000'000);
  EXPECT_EQ(w->result, 1) << "acknowledged before the failed replica was marked out of sync";
  EXPECT_EQ(ByteAt(r1_, 0), 'm') << "the in-sync replica has it meanwhile";
  pending(true);
  EXPECT_EQ(Wait(w), 0);
  EXPECT_EQ(Do(RequestOp::kWrite, 4096, 4096, 'n'), 0);  // on without it
  const auto links = set_->Links();
  EXPECT_EQ(links[1].state, ReplicaSet::LinkState::kOutOfSync);
  EXPECT_TRUE(links[1].marked);
}

TEST_F(ReplicaSetTest, AMarkThatCannotBeMadeFailsTheHeldRequests) {
  ReplicaSetOptions o = Options(1, {{"r1", Addr(r1_)}});
  o.mark_out_of_sync = [](const std::string&, std::function<void(bool)> done) { done(false); };
  StartSet(o);
  ASSERT_EQ(Do(RequestOp::kWrite, 0, 4096, 'x'), 0);
  // The replica goes away (its server closes every session).
  EXPECT_TRUE(replica_test::ShutdownServer(reactor_.get(), r1_.server.get()));
  r1_.server.reset();
  EXPECT_EQ(Do(RequestOp::kWrite, 4096, 4096, 'y'), -EIO);
}

// A set closed (its node steps down, or stops) acknowledges nothing more: what it holds fails.
TEST_F(ReplicaSetTest, ClosingFailsWhatItHolds) {
  ReplicaSetOptions o = Options(1, {{"r1", Addr(r1_)}, {"gone", "127.0.0.1:1"}});
  o.mark_out_of_sync = [](const std::string&, std::function<void(bool)>) {};  // never answers
  StartSet(o);
  Op* w = Submit(RequestOp::kWrite, 0, 4096, 'h');
  for (int i = 0; i < 100; ++i) reactor_->RunOnce(1'000'000);
  ASSERT_EQ(w->result, 1) << "not held";
  set_->Detach();
  set_->Close();
  EXPECT_EQ(Wait(w), -EIO);
  EXPECT_EQ(Do(RequestOp::kWrite, 4096, 4096, 'l'), 0) << "the volume alone again";
}

// An out-of-sync replica (it holds other data) is resynced: the whole volume copied over while
// writes go on, parked ones included, then it is in sync and equal to the primary.
TEST_F(ReplicaSetTest, AnOutOfSyncReplicaIsResyncedWhileWritesGoOn) {
  alignas(4096) static char junk[65536];
  std::memset(junk, 'j', sizeof junk);
  // r2's copy diverged: data where the primary has holes, and elsewhere.
  for (uint64_t off : {0ull, 1ull << 20, 3ull << 20})
    ASSERT_EQ(
        testing::RunVolumeIo(reactor_.get(), r2_.v, IoOp::kWrite, off, sizeof junk, junk).result,
        0);
  ASSERT_EQ(Do(RequestOp::kWrite, 2 << 20, 8192, 'p'), 0);  // before the set: local only
  std::vector<std::string> in_sync_marks;
  ReplicaSetOptions o = Options(1, {{"r1", Addr(r1_)}, {"r2", Addr(r2_)}});
  o.mark_out_of_sync = [](const std::string&, std::function<void(bool)> done) { done(true); };
  o.mark_in_sync = [&](const std::string& name, std::function<void(bool)> done) {
    in_sync_marks.push_back(name);
    done(true);
  };
  o.resync_retry_ms = 100;
  o.resync_region_bytes = 256 << 10;  // several regions per MiB
  o.base = primary_.v->generation();
  StartSet(o);
  EXPECT_EQ(set_->Links()[1].state, ReplicaSet::LinkState::kOutOfSync);
  // Writes while the resync runs (some into regions not yet copied, some into copied ones).
  std::vector<Op*> ops;
  for (int round = 0; round < 40 && set_->Links()[1].state != ReplicaSet::LinkState::kInSync;
       ++round) {
    ops.push_back(Submit(RequestOp::kWrite, ((round * 7) % 64) * 65536, 4096, 'a' + round % 26));
    for (int i = 0; i < 20; ++i) reactor_->RunOnce(1'000'000);
  }
  for (Op* op : ops) ASSERT_EQ(Wait(op), 0);
  // r1 is empty but not in sync either: the primary wrote before the set (it is not clean at
  // its base), so it is resynced too, one copy at a time.
  auto both = [&] {
    for (const auto& l : set_->Links())
      if (l.state != ReplicaSet::LinkState::kInSync) return false;
    return true;
  };
  for (int i = 0; i < 10000 && !both(); ++i) reactor_->RunOnce(1'000'000);
  ASSERT_EQ(set_->Links()[1].state, ReplicaSet::LinkState::kInSync) << set_->Links()[1].detail;
  ASSERT_EQ(set_->Links()[0].state, ReplicaSet::LinkState::kInSync) << set_->Links()[0].detail;
  EXPECT_EQ(set_->Links()[1].resyncs, 1u);
  std::sort(in_sync_marks.begin(), in_sync_marks.end());
  EXPECT_EQ(in_sync_marks, (std::vector<std::string>{"r1", "r2"}));
  EXPECT_EQ(ByteAt(r1_, 2 << 20), 'p') << "the primary's write from before the set";
  ASSERT_EQ(Do(RequestOp::kWrite, 4096, 4096, 'z'), 0);  // in sync: it gets this one too
  ASSERT_EQ(Do(RequestOp::kFlush, 0, 0, 0), 0);
  // Equal to the primary, byte for byte.
  EXPECT_EQ(BytesDifferingFromPrimary(r2_), 0u) << "the resynced copy differs from the primary";
  EXPECT_EQ(ByteAt(r2_, 2 << 20), 'p');
  EXPECT_EQ(ByteAt(r2_, (3 << 20) + 8192), 0)
      << "a region the primary never wrote kept the copy's old data";
}

// Several regions of the copy in flight at once (resync_regions_inflight) and 16 writes in
// flight at once beside them, some across two regions, some into regions being copied: the
// parked writes go in their order once their regions are on the replica, and the copy ends
// equal to the primary, byte for byte.
TEST_F(ReplicaSetTest, ManyRegionsAndManyWritesInFlightLeaveTheResyncedCopyEqual) {
  WriteJunk(r2_, 3 * 65536);  // r2 holds other data
  WritePrimary(65536);        // before the set: local only
  ReplicaSetOptions o = ResyncOptions("r2", r2_);
  o.resync_region_bytes = 64 << 10;
  o.resync_regions_inflight = 6;
  o.resync_yield_window_ms = 0;  // all six in flight while the writes go on
  o.base = primary_.v->generation();
  StartSet(o);
  uint64_t x = 88172645463325252ull;  // xorshift64: the same writes every run
  auto next = [&x] {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
  };
  for (int i = 0; i < 5000 && set_->Links()[0].state != ReplicaSet::LinkState::kResyncing; ++i)
    reactor_->RunOnce(1'000'000);
  ASSERT_EQ(set_->Links()[0].state, ReplicaSet::LinkState::kResyncing);
  int rounds = 0;
  for (; rounds < 400 && set_->Links()[0].state != ReplicaSet::LinkState::kInSync; ++rounds) {
    std::vector<Op*> batch;
    for (int i = 0; i < 16; ++i) {
      const uint64_t r = next();
      // Half of them end 4 KiB past a region's start: they straddle two regions.
      const uint64_t off = r % 2 ? (r >> 8) % (kVolBytes / 4096) * 4096
                                 : ((r >> 8) % (kVolBytes / 65536 - 1) + 1) * 65536 - 8192;
      const uint32_t len = r % 2 ? 4096 * (1 + (r >> 40) % 3) : 12288;
      batch.push_back(Submit(RequestOp::kWrite, std::min<uint64_t>(off, kVolBytes - len), len,
                             static_cast<char>('a' + (r >> 50) % 26)));
    }
    for (Op* op : batch) ASSERT_EQ(Wait(op), 0);
  }
  EXPECT_GT(rounds, 3) << "the copy ended before the writes could race it";
  for (int i = 0; i < 5000 && set_->Links()[0].state != ReplicaSet::LinkState::kInSync; ++i)
    reactor_->RunOnce(1'000'000);
  ASSERT_EQ(set_->Links()[0].state, ReplicaSet::LinkState::kInSync) << set_->Links()[0].detail;
  ASSERT_EQ(Do(RequestOp::kFlush, 0, 0, 0), 0);
  EXPECT_EQ(BytesDifferingFromPrimary(r2_), 0u) << "the resynced copy differs from the primary";
}

// A whole-volume resync cut short (the replica goes away half-way) resumes where it stopped:
// the second attempt copies the rest and what was written meanwhile, and the copy ends equal.
TEST_F(ReplicaSetTest, AnInterruptedResyncResumesFromWhereItStopped) {
  WriteJunk(r2_, 4 * 65536);  // r2 holds other data
  WritePrimary(2 * 65536);    // before the set: local only
  ReplicaSetOptions o = ResyncOptions("r2", r2_);
  o.resync_region_bytes = 64 << 10;
  o.base = primary_.v->generation();
  StartSet(o);
  auto copied = [] {
    return CounterValue("spd_replication_resync_bytes_total") +
           CounterValue("spd_replication_resync_discard_bytes_total");
  };
  const uint64_t before = copied();
  for (int i = 0; i < 5000 && set_->Links()[0].resynced_bytes < kVolBytes / 2; ++i)
    reactor_->RunOnce(1'000'000);
  ASSERT_GE(set_->Links()[0].resynced_bytes, kVolBytes / 2);
  ASSERT_EQ(set_->Links()[0].state, ReplicaSet::LinkState::kResyncing);
  const uint16_t port = r2_.server->port();
  EXPECT_TRUE(replica_test::ShutdownServer(reactor_.get(), r2_.server.get()));
  r2_.server.reset();
  const uint64_t first = copied() - before;
  ASSERT_EQ(Do(RequestOp::kWrite, 0, 4096, 'x'), 0);  // copied already; written meanwhile
  ASSERT_EQ(set_->Links()[0].state, ReplicaSet::LinkState::kOutOfSync);
  ReplicaServerOptions so;
  so.port = port;
  r2_.server =
      std::make_unique<ReplicaServer>(reactor_.get(), r2_.dispatcher.get(), r2_.volumes.get(), so);
  ASSERT_TRUE(r2_.server->Start().ok());
  for (int i = 0; i < 5000 && set_->Links()[0].state != ReplicaSet::LinkState::kInSync; ++i)
    reactor_->RunOnce(1'000'000);
  ASSERT_EQ(set_->Links()[0].state, ReplicaSet::LinkState::kInSync) << set_->Links()[0].detail;
  // The second attempt: the rest (at most the half not copied, and the regions that were in
  // flight: those acknowledged above the lowest one not acknowledged are copied again) and the
  // unit written meanwhile.
  const uint64_t second = copied() - before - first;
  EXPECT_LE(second, kVolBytes - first + (o.resync_regions_inflight + 1) * 65536);
  EXPECT_LT(second, kVolBytes) << "started over";
  EXPECT_EQ(CounterValue("spd_replication_resync_checkpoints_total") > 0, true);
  for (uint64_t off = 0; off < kVolBytes; off += 4096)
    ASSERT_EQ(ByteAt(r2_, off), ByteAt(primary_, off)) << "offset " << off;
  EXPECT_EQ(ByteAt(r2_, 0), 'x');
}

// The same, but the replica comes back with a new disk (another copy of the volume: the
// answer's copy_id): the regions copied before the cut are not on it, so the copy starts over.
// With the checkpoint trusted, the first half stayed zeros (a fault row lost acknowledged
// blocks so: io_errors_primary, seed 6015).
TEST_F(ReplicaSetTest, AnInterruptedResyncStartsOverOnANewDisk) {
  WritePrimary(4 * 65536);
  ReplicaSetOptions o = ResyncOptions("r2", r2_);
  o.resync_region_bytes = 64 << 10;
  o.base = primary_.v->generation();
  StartSet(o);
  const uint64_t lost = CounterValue("spd_replication_lost_copies_total");
  for (int i = 0; i < 5000 && set_->Links()[0].resynced_bytes < kVolBytes / 2; ++i)
    reactor_->RunOnce(1'000'000);
  ASSERT_GE(set_->Links()[0].resynced_bytes, kVolBytes / 2);
  const uint16_t port = StopServer(r2_);
  ASSERT_EQ(Do(RequestOp::kWrite, 0, 4096, 'x'), 0);
  ASSERT_EQ(set_->Links()[0].state, ReplicaSet::LinkState::kOutOfSync);
  r2_.dispatcher.reset();  // the new disk: a new pool, the volume created on it again
  r2_.volumes.reset();
  r2_.pool.reset();
  ASSERT_NO_FATAL_FAILURE(MakeNode(&r2_, 77, port));
  for (int i = 0; i < 5000 && set_->Links()[0].state != ReplicaSet::LinkState::kInSync; ++i)
    reactor_->RunOnce(1'000'000);
  ASSERT_EQ(set_->Links()[0].state, ReplicaSet::LinkState::kInSync) << set_->Links()[0].detail;
  EXPECT_EQ(CounterValue("spd_replication_lost_copies_total") - lost, 1u);
  for (uint64_t off = 0; off < kVolBytes; off += 4096)
    ASSERT_EQ(ByteAt(r2_, off), ByteAt(primary_, off)) << "offset " << off;
}

// A replica that was in sync and goes away for a while gets back only what it missed: the
// regions written meanwhile (64 KiB units), not the whole volume.
TEST_F(ReplicaSetTest, AReplicaBackFromAnOutageGetsOnlyWhatItMissed) {
  ASSERT_NO_FATAL_FAILURE(StartR1WithData());
  // r1 goes away (its server stops), then comes back on the same port.
  const uint16_t port = StopServer(r1_);
  ASSERT_EQ(Do(RequestOp::kWrite, 0, 4096, 'x'), 0);  // it fails here and is marked
  ASSERT_EQ(set_->Links()[0].state, ReplicaSet::LinkState::kOutOfSync);
  ASSERT_EQ(Do(RequestOp::kWrite, 5 * 65536 + 8192, 4096, 'y'), 0);
  ASSERT_EQ(Do(RequestOp::kWrite, 40 * 65536, 4096, 'w'), 0);
  const uint64_t copied_before = CounterValue("spd_replication_resync_bytes_total");
  RestartServer(r1_, port);
  for (int i = 0; i < 5000 && set_->Links()[0].state != ReplicaSet::LinkState::kInSync; ++i)
    reactor_->RunOnce(1'000'000);
  ASSERT_EQ(set_->Links()[0].state, ReplicaSet::LinkState::kInSync) << set_->Links()[0].detail;
  // Three 64 KiB units were written while it was away (the one of the write it failed on
  // included): that, and nothing else, was copied.
  EXPECT_EQ(CounterValue("spd_replication_resync_bytes_total") - copied_before, 3u * 65536);
  EXPECT_EQ(ByteAt(r1_, 0), 'x');
  EXPECT_EQ(ByteAt(r1_, 5 * 65536 + 8192), 'y');
  EXPECT_EQ(ByteAt(r1_, 40 * 65536), 'w');
  EXPECT_EQ(ByteAt(r1_, 65536), 'i');
}

// The same after more writes without a flush than the primary keeps per link for a power loss
// there (Link::kUnbarrieredMax): the set barriers the replicas itself before they fill it, so a
// failure still resyncs only what the replica missed, not the whole volume.
TEST_F(ReplicaSetTest, ManyWritesWithoutAFlushStillResyncOnlyWhatWasMissed) {
  ASSERT_NO_FATAL_FAILURE(StartR1WithData());
  const uint64_t barriers = CounterValue("spd_replication_ring_barriers_total");
  constexpr int kWrites = 3 * 4096;
  for (int i = 0; i < kWrites; ++i)  // 8 units of 64 KiB, written over and over
    ASSERT_EQ(Do(RequestOp::kWrite, (i % 128) * 4096, 4096, static_cast<char>('a' + i % 26)), 0);
  EXPECT_GE(CounterValue("spd_replication_ring_barriers_total") - barriers, 2u);
  const uint16_t port = StopServer(r1_);
  ASSERT_EQ(Do(RequestOp::kWrite, 40 * 65536, 4096, 'w'), 0);  // it fails here and is marked
  ASSERT_EQ(set_->Links()[0].state, ReplicaSet::LinkState::kOutOfSync);
  const uint64_t copied_before = CounterValue("spd_replication_resync_bytes_total");
  RestartServer(r1_, port);
  for (int i = 0; i < 5000 && set_->Links()[0].state != ReplicaSet::LinkState::kInSync; ++i)
    reactor_->RunOnce(1'000'000);
  ASSERT_EQ(set_->Links()[0].state, ReplicaSet::LinkState::kInSync) << set_->Links()[0].detail;
  // The unit it missed: it did not lose power (its count of losses stayed), so what it
  // acknowledged since the last barrier is still there.
  EXPECT_EQ(CounterValue("spd_replication_resync_bytes_total") - copied_before, 65536u);
  EXPECT_EQ(ByteAt(r1_, 40 * 65536), 'w');
  EXPECT_EQ(BytesDifferingFromPrimary(r1_), 0u);
}

// A replica that comes back with an empty copy (a new disk) under the same name: its dirty map
// (what it missed while away) is not all it lacks. It is below a barrier it acknowledged, so the
// whole volume is copied.
TEST_F(ReplicaSetTest, AReplicaBackWithAnEmptyCopyGetsTheWholeVolume) {
  ASSERT_NO_FATAL_FAILURE(StartR1WithData());
  const uint16_t port = StopServer(r1_);
  ASSERT_EQ(Do(RequestOp::kWrite, 40 * 65536, 4096, 'w'), 0);  // it fails here and is marked
  ASSERT_EQ(set_->Links()[0].state, ReplicaSet::LinkState::kOutOfSync);
  r1_.dispatcher.reset();
  r1_.volumes.reset();
  r1_.pool.reset();
  MakeNode(&r1_, 2, port);  // a new disk: generation (0, 0), nothing written
  const uint64_t lost_before = CounterValue("spd_replication_lost_copies_total");
  for (int i = 0; i < 5000 && set_->Links()[0].state != ReplicaSet::LinkState::kInSync; ++i)
    reactor_->RunOnce(1'000'000);
  ASSERT_EQ(set_->Links()[0].state, ReplicaSet::LinkState::kInSync) << set_->Links()[0].detail;
  EXPECT_EQ(CounterValue("spd_replication_lost_copies_total") - lost_before, 1u);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(ByteAt(r1_, i * 65536), 'i') << "unit " << i;
  EXPECT_EQ(ByteAt(r1_, 40 * 65536), 'w');
}

// While clients write, a resync keeps one region of a quarter size in flight (their writes to
// the resyncing replica would queue on the link behind the copy's); with no writes it does not.
TEST_F(ReplicaSetTest, AResyncYieldsToClientsWhileTheyWrite) {
  WriteJunk(r2_, 3 * 65536);  // r2 holds other data
  WritePrimary(65536);        // before the set: local only
  ReplicaSetOptions o = ResyncOptions("r2", r2_);
  o.resync_region_bytes = 64 << 10;
  o.resync_yield_window_ms = 1;
  // Every message 2 ms on its way: the copy (64 regions, 4 at a time) takes longer than one
  // turn of the reactor, even under a sanitizer, so that the writes below meet it.
  o.inject_rtt_us = 2'000;
  const uint64_t yields_before = CounterValue("spd_replication_resync_yielded_regions_total");
  StartSet(o);
  for (int i = 0; i < 5000 && set_->Links()[0].state != ReplicaSet::LinkState::kResyncing; ++i)
    reactor_->RunOnce(1'000'000);
  ASSERT_EQ(set_->Links()[0].state, ReplicaSet::LinkState::kResyncing);
  int rounds = 0;
  for (; rounds < 1000 && set_->Links()[0].state != ReplicaSet::LinkState::kInSync; ++rounds)
    ASSERT_EQ(Do(RequestOp::kWrite, (rounds % 64) * 65536 + 4096, 4096, 'w'), 0);
  for (int i = 0; i < 5000 && set_->Links()[0].state != ReplicaSet::LinkState::kInSync; ++i)
    reactor_->RunOnce(1'000'000);
  ASSERT_EQ(set_->Links()[0].state, ReplicaSet::LinkState::kInSync) << set_->Links()[0].detail;
  EXPECT_GT(rounds, 2) << "the copy ended before the writes could meet it";
  EXPECT_GT(CounterValue("spd_replication_resync_yielded_regions_total"), yields_before)
      << rounds << " writes met the copy";
  EXPECT_EQ(BytesDifferingFromPrimary(r2_), 0u);
  // A second resync with no client writing: no region yields.
  const uint64_t yields_mid = CounterValue("spd_replication_resync_yielded_regions_total");
  const uint64_t resyncs_mid = CounterValue("spd_replication_resyncs_total");
  const uint16_t port = StopServer(r2_);
  ASSERT_EQ(Do(RequestOp::kWrite, 0, 4096, 'x'), 0);  // it fails there: out of sync
  ASSERT_EQ(set_->Links()[0].state, ReplicaSet::LinkState::kOutOfSync);
  RestartServer(r2_, port);
  for (int i = 0; i < 5000 && set_->Links()[0].state != ReplicaSet::LinkState::kInSync; ++i)
    reactor_->RunOnce(1'000'000);
  ASSERT_EQ(set_->Links()[0].state, ReplicaSet::LinkState::kInSync) << set_->Links()[0].detail;
  EXPECT_EQ(CounterValue("spd_replication_resyncs_total"), resyncs_mid + 1);
  EXPECT_EQ(CounterValue("spd_replication_resync_yielded_regions_total"), yields_mid);
  EXPECT_EQ(BytesDifferingFromPrimary(r2_), 0u);
}

// A primary that holds data at generation (0, 0) it cannot vouch for (written before, or a
// restarted process) finds no copy in sync at its first hello, not even an empty one whose
// generation matches: each is resynced.
TEST_F(ReplicaSetTest, ADirtyPrimaryFindsNoCopyInSyncAtItsFirstHello) {
  alignas(4096) static char buf[4096];
  std::memset(buf, 'd', sizeof buf);
  for (int i = 0; i < 8; ++i)
    ASSERT_EQ(
        testing::RunVolumeIo(reactor_.get(), primary_.v, IoOp::kWrite, i * 65536, 4096, buf).result,
        0);
  ASSERT_FALSE(primary_.v->CleanAtGeneration());
  ASSERT_TRUE(r1_.v->CleanAtGeneration());
  ReplicaSetOptions o = Options(1, {{"r1", Addr(r1_)}});
  o.mark_out_of_sync = [](const std::string&, std::function<void(bool)> done) { done(true); };
  o.resync_retry_ms = 100;
  StartSet(o);
  for (int i = 0; i < 5000 && set_->Links()[0].state != ReplicaSet::LinkState::kInSync; ++i)
    reactor_->RunOnce(1'000'000);
  ASSERT_EQ(set_->Links()[0].state, ReplicaSet::LinkState::kInSync) << set_->Links()[0].detail;
  for (int i = 0; i < 8; ++i) EXPECT_EQ(ByteAt(r1_, i * 65536), 'd') << "unit " << i;
}

// A resync attempt that the copy answers "in sync" (it missed only a barrier: same generation,
// nothing applied) is still a resync: it ends with the copy marked in sync, not left marked out
// of sync while the link counts it.
TEST_F(ReplicaSetTest, AResyncAnsweredInSyncEndsMarkedInSync) {
  ReplicaSetOptions o = Options(1, {{"r1", Addr(r1_)}});
  o.mark_out_of_sync = [](const std::string&, std::function<void(bool)> done) { done(true); };
  std::vector<std::string> marked_in_sync;
  o.mark_in_sync = [&](const std::string& name, std::function<void(bool)> done) {
    marked_in_sync.push_back(name);
    done(true);
  };
  o.resync_retry_ms = 100;
  StartSet(o);
  const uint16_t port = StopServer(r1_);
  ASSERT_EQ(Do(RequestOp::kFlush, 0, 0, 0), 0);  // it fails here and is marked
  ASSERT_EQ(set_->Links()[0].state, ReplicaSet::LinkState::kOutOfSync);
  ASSERT_TRUE(primary_.v->CleanAtGeneration());
  RestartServer(r1_, port);
  for (int i = 0; i < 5000 && marked_in_sync.empty(); ++i) reactor_->RunOnce(1'000'000);
  EXPECT_EQ(marked_in_sync, std::vector<std::string>{"r1"});
  EXPECT_EQ(set_->Links()[0].state, ReplicaSet::LinkState::kInSync) << set_->Links()[0].detail;
}

// After a failover, a copy that was in sync with the old primary is resynced only where it or
// the new primary applied writes the old one may have had in flight (both activity records),
// and ends equal to the new primary.
TEST_F(ReplicaSetTest, AfterAFailoverOnlyTheWritesInFlightAreResynced) {
  StartSet(Options(1, {{"r1", Addr(r1_)}, {"r2", Addr(r2_)}}));
  for (int i = 0; i < 64; ++i) ASSERT_EQ(Do(RequestOp::kWrite, i * 65536, 8192, 'a' + i % 26), 0);
  ASSERT_EQ(Do(RequestOp::kFlush, 0, 0, 0), 0);
  // The old primary dies with writes in flight: one reached r1 only, another r2 only (as its
  // replica server would have applied and recorded them).
  set_->Detach();
  set_->Stop();
  set_.reset();
  alignas(4096) static char buf[4096];
  std::memset(buf, '1', sizeof buf);
  ASSERT_EQ(testing::RunVolumeIo(reactor_.get(), r1_.v, IoOp::kWrite, 7 * 65536, 4096, buf).result,
            0);
  r1_.v->replica_activity.Record(1, 66, 7 * 65536, 4096);
  r1_.v->MarkApplied();
  std::memset(buf, '2', sizeof buf);
  ASSERT_EQ(testing::RunVolumeIo(reactor_.get(), r2_.v, IoOp::kWrite, 30 * 65536, 4096, buf).result,
            0);
  r2_.v->replica_activity.Record(1, 67, 30 * 65536, 4096);
  r2_.v->MarkApplied();
  const ReplicaActivity::Snapshot mine = r1_.v->replica_activity.Take();
  ASSERT_TRUE(mine.complete);
  std::vector<ReplicaActivity::Range> all = mine.ranges;
  for (const auto& x : r2_.v->replica_activity.Take().ranges) all.push_back(x);
  uint64_t units = 0;
  for (const auto& x : MergeRanges(all)) units += x.units;
  ASSERT_LT(units, 10u) << "the records hold more than the last writes";
  // r1 takes over (epoch 2), r2 its replica; both were in sync in epoch 1.
  ReplicaSetOptions o = Options(2, {{"r2", Addr(r2_)}});
  o.mark_out_of_sync = [](const std::string&, std::function<void(bool)> done) { done(true); };
  o.mark_in_sync = [](const std::string&, std::function<void(bool)> done) { done(true); };
  o.resync_retry_ms = 100;
  o.base = r1_.v->generation();
  o.prior = mine;
  o.prior_in_sync = {"r2"};
  const uint64_t copied_before = CounterValue("spd_replication_resync_bytes_total") +
                                 CounterValue("spd_replication_resync_discard_bytes_total");
  auto s = ReplicaSet::Start(r1_.dispatcher.get(), r1_.v, o);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  set_ = std::move(s).value();
  set_->Attach();
  for (int i = 0; i < 5000 && set_->Links()[0].state != ReplicaSet::LinkState::kInSync; ++i)
    reactor_->RunOnce(1'000'000);
  ASSERT_EQ(set_->Links()[0].state, ReplicaSet::LinkState::kInSync) << set_->Links()[0].detail;
  EXPECT_EQ(CounterValue("spd_replication_resync_bytes_total") +
                CounterValue("spd_replication_resync_discard_bytes_total") - copied_before,
            units * 65536);
  for (uint64_t off = 0; off < kVolBytes; off += 4096)
    ASSERT_EQ(ByteAt(r2_, off), ByteAt(r1_, off)) << "offset " << off;
  EXPECT_EQ(ByteAt(r2_, 7 * 65536), '1');
  EXPECT_EQ(ByteAt(r2_, 30 * 65536), 'a' + 30 % 26) << "r2's own in-flight write stayed";
}

// A psktool-format key file in /tmp (removed by the caller): "node:" and 32 bytes of `fill`.
std::string KeyFile(char fill) {
  char path[] = "/tmp/spd-replica-tls-XXXXXX";
  const int fd = mkstemp(path);
  EXPECT_GE(fd, 0);
  const std::string line = "node:" + std::string(64, fill) + "\n";
  EXPECT_EQ(write(fd, line.data(), line.size()), static_cast<ssize_t>(line.size()));
  close(fd);
  return path;
}

// TLS on the link: with the same key on both ends writes flow as in plaintext; a replica with
// another key, and a primary without TLS, fail the handshake: out of sync, nothing applied.
TEST_F(ReplicaSetTest, OverTlsWritesFlowAndAPeerWithoutTheKeyIsRefused) {
  const std::string good = KeyFile('a'), bad = KeyFile('b');
  auto tls = ReplicaTls::Load(good);
  auto other = ReplicaTls::Load(bad);
  std::remove(good.c_str());
  std::remove(bad.c_str());
  ASSERT_TRUE(tls.ok()) << tls.status().ToString();
  ASSERT_TRUE(other.ok()) << other.status().ToString();
  EXPECT_EQ((*tls)->identity(), "node");
  auto restart = [&](Node* n, const ReplicaTls* t) {
    EXPECT_TRUE(replica_test::ShutdownServer(reactor_.get(), n->server.get()));
    ReplicaServerOptions so;
    so.tls = t;
    n->server =
        std::make_unique<ReplicaServer>(reactor_.get(), n->dispatcher.get(), n->volumes.get(), so);
    ASSERT_TRUE(n->server->Start().ok());
  };
  restart(&r1_, tls->get());
  restart(&r2_, other->get());
  const uint64_t failures0 = CounterValue("spd_replica_tls_handshake_failures_total");
  ReplicaSetOptions o = Options(1, {{"r1", Addr(r1_)}, {"r2", Addr(r2_)}});
  o.tls = tls->get();
  o.resync = false;
  o.mark_out_of_sync = [](const std::string&, std::function<void(bool)> done) { done(true); };
  StartSet(o);
  std::vector<ReplicaSet::LinkInfo> links = set_->Links();
  EXPECT_EQ(links[0].state, ReplicaSet::LinkState::kInSync) << links[0].detail;
  EXPECT_EQ(links[1].state, ReplicaSet::LinkState::kOutOfSync);
  EXPECT_NE(links[1].detail.find("TLS"), std::string::npos) << links[1].detail;
  std::vector<Op*> batch;  // more than one record per round, large writes among them
  for (int i = 0; i < 24; ++i)
    batch.push_back(Submit(RequestOp::kWrite, i * 65536, i % 3 == 0 ? 65536 : 4096, 'a' + i));
  for (Op* op : batch) ASSERT_EQ(Wait(op), 0);
  ASSERT_EQ(Do(RequestOp::kWrite, 3 << 20, 4096, 'F', kReqFua), 0);
  ASSERT_EQ(Do(RequestOp::kFlush, 0, 0, 0), 0);
  for (int i = 0; i < 24; ++i) EXPECT_EQ(ByteAt(r1_, i * 65536 + 4095), 'a' + i);
  EXPECT_EQ(ByteAt(r1_, 3 << 20), 'F');
  EXPECT_EQ(ByteAt(r2_, 0), 0) << "the replica with another key took a write";
  EXPECT_EQ(r1_.v->generation(), (ReplicaGeneration{1, 26}));  // the flush: message 26
  // A primary without TLS against the TLS replica.
  set_->Detach();
  set_->Stop();
  set_.reset();
  ReplicaSetOptions plain = Options(2, {{"r1", Addr(r1_)}});
  plain.resync = false;
  plain.mark_out_of_sync = [](const std::string&, std::function<void(bool)> done) { done(true); };
  StartSet(plain);
  EXPECT_EQ(set_->Links()[0].state, ReplicaSet::LinkState::kOutOfSync);
  EXPECT_EQ(r1_.v->fence_epoch(), 1u) << "a plaintext hello was taken";
  EXPECT_GE(CounterValue("spd_replica_tls_handshake_failures_total") - failures0, 2u);
}

// An out-of-sync mark answered after the set is gone (a step-down while etcd is slow) touches
// nothing of it (under ASan, the task that carries the answer would read the freed set).
TEST_F(ReplicaSetTest, AMarkAnsweredAfterTheSetIsGoneIsIgnored) {
  std::function<void(bool)> pending;
  ReplicaSetOptions o = Options(1, {{"gone", "127.0.0.1:1"}});
  o.mark_out_of_sync = [&](const std::string&, std::function<void(bool)> done) {
    pending = std::move(done);
  };
  StartSet(o);
  ASSERT_TRUE(pending) << "the failed replica's mark was not asked for";
  set_->Detach();
  set_->Stop();
  set_.reset();
  pending(true);  // from the marker thread, in production: posted to the owner
  for (int i = 0; i < 20; ++i) reactor_->RunOnce(1'000'000);
}

// Overlapping writes in flight together are serialized: every copy ends with the same bytes.
TEST_F(ReplicaSetTest, OverlappingWritesLeaveEveryCopyTheSame) {
  StartSet(Options(1, {{"r1", Addr(r1_)}, {"r2", Addr(r2_)}}));
  std::vector<Op*> ops;
  for (int i = 0; i < 10; ++i) {  // 30 in flight (the frontend's queue depth is 32)
    // Three writes at once into one 16 KiB range, shifted by 4 KiB, sizes differing.
    const uint64_t base = (i % 6) * 65536;
    ops.push_back(Submit(RequestOp::kWrite, base, 16384, 'a' + i % 26));
    ops.push_back(Submit(RequestOp::kWrite, base + 4096, 8192, 'A' + i % 26));
    ops.push_back(Submit(RequestOp::kWriteZeroes, base + 8192, 4096, 0));
  }
  for (Op* o : ops) ASSERT_EQ(Wait(o), 0);
  for (uint64_t off = 0; off < 6 * 65536; off += 4096)
    for (Node* n : {&r1_, &r2_})
      ASSERT_EQ(ByteAt(*n, off), ByteAt(primary_, off)) << "offset " << off;
}

TEST_F(ReplicaSetTest, ANewerPrimaryDeposesTheOldOne) {
  StartSet(Options(1, {{"r1", Addr(r1_)}}));
  ASSERT_EQ(Do(RequestOp::kWrite, 0, 4096, 'o'), 0);
  ASSERT_EQ(Do(RequestOp::kFlush, 0, 0, 0), 0);
  // Epoch 2 takes r1 (as a promoted node would, from the same base).
  {
    ReplicaSetOptions o2 = Options(2, {{"r1", Addr(r1_)}});
    o2.base = {1, 2};
    auto s2 = ReplicaSet::Start(r2_.dispatcher.get(), r2_.v, o2);
    ASSERT_TRUE(s2.ok());
    for (int i = 0; i < 5000 && !(*s2)->settled(); ++i) reactor_->RunOnce(1'000'000);
    EXPECT_EQ((*s2)->Links()[0].state, ReplicaSet::LinkState::kInSync) << (*s2)->Links()[0].detail;
    (*s2)->Stop();
  }
  EXPECT_EQ(r1_.v->fence_epoch_durable(), 2u);
  // The old primary's session was displaced: its next write cannot count on r1, and a new
  // hello from it is refused as stale.
  EXPECT_NE(Do(RequestOp::kWrite, 4096, 4096, 'p'), 1);
  EXPECT_EQ(ByteAt(r1_, 4096), 0) << "a deposed primary's write reached the replica";
  ReplicaSetOptions again = Options(1, {{"r1", Addr(r1_)}});
  auto s3 = ReplicaSet::Start(primary_.dispatcher.get(), primary_.v, again);
  ASSERT_TRUE(s3.ok());
  for (int i = 0; i < 5000 && !(*s3)->settled(); ++i) reactor_->RunOnce(1'000'000);
  EXPECT_EQ((*s3)->Links()[0].state, ReplicaSet::LinkState::kDeposedUs);
  EXPECT_TRUE((*s3)->deposed());
  (*s3)->Stop();
}

}  // namespace
}  // namespace spd

namespace spd {
namespace {

// Many messages leave in one sendmsg and big ones fill the socket: every byte still arrives in
// order (partial sends resume mid-message), on every replica.
TEST_F(ReplicaSetTest, BatchesOfBigWritesArriveWholeEverywhere) {
  ReplicaSetOptions o = Options(1, {{"r1", Addr(r1_)}, {"r2", Addr(r2_)}});
  o.sndbuf_bytes = 16 << 10;  // sends end mid-message
  o.resync = false;           // a broken stream must show, not be repaired
  StartSet(o);
  std::vector<Op*> batch;
  for (int i = 0; i < 32; ++i)
    batch.push_back(Submit(RequestOp::kWrite, uint64_t(i) * (64 << 10), 64 << 10, 'A' + i));
  for (Op* o : batch) ASSERT_EQ(Wait(o), 0);
  ASSERT_EQ(Do(RequestOp::kFlush, 0, 0, 0), 0);
  for (Node* n : {&r1_, &r2_})
    for (int i = 0; i < 32; ++i) {
      EXPECT_EQ(ByteAt(*n, uint64_t(i) * (64 << 10)), 'A' + i) << i;
      EXPECT_EQ(ByteAt(*n, uint64_t(i) * (64 << 10) + (64 << 10) - 1), 'A' + i) << i;
    }
  EXPECT_EQ(r1_.v->generation(), (ReplicaGeneration{1, 33}));
  for (const auto& l : set_->Links()) {
    EXPECT_EQ(l.acked, 33u) << l.name;
    EXPECT_EQ(l.state, ReplicaSet::LinkState::kInSync) << l.name << ": " << l.detail;
  }
}

// Injected round trip and loss (ReplicaSetOptions::inject_*): a write is not acknowledged
// before the injected round trip has passed, lost messages leave late and in order, and every
// replica ends with every write.
TEST_F(ReplicaSetTest, InjectedRoundTripAndLossDelayButLoseNothing) {
  ReplicaSetOptions o = Options(1, {{"r1", Addr(r1_)}, {"r2", Addr(r2_)}});
  o.inject_rtt_us = 20'000;
  o.inject_loss_ppm = 300'000;
  o.inject_rto_ms = 30;
  o.inject_seed = 7;
  StartSet(o);
  const uint64_t lost_before = CounterValue("spd_replication_injected_losses_total");
  const uint64_t t0 = MonotonicNs();
  ASSERT_EQ(Do(RequestOp::kWrite, 0, 4096, 'q'), 0);
  EXPECT_GE(MonotonicNs() - t0, 20'000'000u) << "acknowledged before the injected round trip";
  std::vector<Op*> batch;
  for (int i = 1; i <= 30; ++i)
    batch.push_back(Submit(RequestOp::kWrite, uint64_t(i) * 4096, 4096, 'a' + i % 26));
  for (Op* w : batch) ASSERT_EQ(Wait(w), 0);
  ASSERT_EQ(Do(RequestOp::kFlush, 0, 0, 0), 0);
  EXPECT_GT(CounterValue("spd_replication_injected_losses_total") - lost_before, 0u);
  for (Node* n : {&r1_, &r2_}) {
    EXPECT_EQ(ByteAt(*n, 0), 'q');
    for (int i = 1; i <= 30; ++i) EXPECT_EQ(ByteAt(*n, uint64_t(i) * 4096), 'a' + i % 26) << i;
  }
  EXPECT_EQ(r1_.v->generation(), (ReplicaGeneration{1, 32}));
}

// A hand-over's quiesce: what is in flight completes, then one barrier reaches every in-sync
// replica (each records that generation with nothing after it: clean), and every request from
// then on fails with EROFS.
TEST_F(ReplicaSetTest, QuiesceEndsWithOneBarrierEverywhereAndRefusesWhatFollows) {
  StartSet(Options(3, {{"r1", Addr(r1_)}, {"r2", Addr(r2_)}}));
  std::vector<Op*> batch;
  for (int i = 0; i < 10; ++i)
    batch.push_back(Submit(RequestOp::kWrite, uint64_t(i) * 4096, 4096, 'k' + i));
  uint64_t seq = ~0ull;
  set_->Quiesce([&](uint64_t s) { seq = s; });
  EXPECT_EQ(Do(RequestOp::kWrite, 1 << 20, 4096, 'z'), -EROFS);
  EXPECT_EQ(Do(RequestOp::kFlush, 0, 0, 0), -EROFS);
  for (Op* o : batch) ASSERT_EQ(Wait(o), 0) << "admitted before the quiesce: completes";
  for (int i = 0; i < 3000 && seq == ~0ull; ++i) reactor_->RunOnce(1'000'000);
  ASSERT_EQ(seq, 11u) << "the barrier follows the ten writes";
  for (Node* n : {&r1_, &r2_}) {
    EXPECT_EQ(n->v->generation(), (ReplicaGeneration{3, 11}));
    EXPECT_EQ(n->v->applied_after_generation.load(), Volume::Applied::kClean);
    for (int i = 0; i < 10; ++i) EXPECT_EQ(ByteAt(*n, uint64_t(i) * 4096), 'k' + i);
    EXPECT_EQ(ByteAt(*n, 1 << 20), 0) << "a refused write reached a replica";
  }
  EXPECT_EQ(primary_.v->applied_after_generation.load(), Volume::Applied::kDirty);
  uint64_t again = ~0ull;
  set_->Quiesce([&](uint64_t s) { again = s; });
  EXPECT_EQ(again, 0u) << "a second quiesce";
}

}  // namespace
}  // namespace spd
