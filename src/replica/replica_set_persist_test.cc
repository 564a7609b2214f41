// What a primary keeps on disk for the next process of its node (docs/replication.md,
// "Persisted state"): each replica's dirty map and its own activity record.
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>

#include "io/sim_backend.h"
#include "replica/activity_log.h"
#include "replica/dirty_map.h"
#include "replica/replica_set_fixture.h"

namespace spd {
namespace {

using replica_test::kVolBytes;

class ReplicaSetPersistTest : public replica_test::ReplicaSetStateTest {
 protected:
  ReplicaSetOptions Marked(uint64_t epoch, std::vector<ReplicaTarget> targets) {
    ReplicaSetOptions o = Options(epoch, std::move(targets));
    o.mark_out_of_sync = [](const std::string&, std::function<void(bool)> done) { done(true); };
    o.mark_in_sync = [](const std::string&, std::function<void(bool)> done) { done(true); };
    o.resync_retry_ms = 100;
    o.state_dir = dir_;
    return o;
  }
  // A set of epoch 1 with r1 and r2; 32 units written and flushed; r2 stopped (its port in
  // *port), and a write to unit 3 that marks it out of sync.
  void WriteWhileR2IsAway(uint16_t* port) {
    StartSet(Marked(1, {{"r1", Addr(r1_)}, {"r2", Addr(r2_)}}));
    for (int i = 0; i < 32; ++i) ASSERT_EQ(Do(RequestOp::kWrite, i * 65536, 8192, 'a' + i % 26), 0);
    ASSERT_EQ(Do(RequestOp::kFlush, 0, 0, 0), 0);
    *port = StopServer(r2_);
    ASSERT_EQ(Do(RequestOp::kWrite, 3 * 65536, 4096, 'x'), 0);  // r2 fails here and is marked
    ASSERT_EQ(set_->Links()[1].state, ReplicaSet::LinkState::kOutOfSync);
  }
  // The set is gone as if its process died: nothing of it runs any more (the files stay).
  void DropSet() {
    set_->Detach();
    set_->Stop();
    set_.reset();
  }
  bool AllInSync() {
    for (const auto& l : set_->Links())
      if (l.state != ReplicaSet::LinkState::kInSync) return false;
    return true;
  }
  static uint64_t Copied() {
    return CounterValue("spd_replication_resync_bytes_total") +
           CounterValue("spd_replication_resync_discard_bytes_total");
  }
  // Node n boots again after a power cut: its pool opened from the device image the cut left
  // (no replica server yet: the caller starts it).
  void BootFromImage(replica_test::Node& n, const SimBackend::Image& img) {
    n.dispatcher.reset();
    n.volumes.reset();
    n.pool.reset();
    auto p =
        Pool::Open(std::make_unique<SimBackend>(reactor_.get(), img, SimOptions{}), reactor_.get());
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    n.pool = std::move(p).value();
    n.v = n.pool->FindVolume("vol");
    ASSERT_NE(n.v, nullptr);
    n.volumes = std::make_unique<VolumeManager>(n.pool.get());
    n.dispatcher = std::make_unique<Dispatcher>(n.pool.get(), DispatcherOptions{});
  }
  // Node n's record as a power cut leaves it: open by a boot that ended (the tag
  // MappedFile::Claim writes); n's volume takes it, as its next boot's process would.
  void RecordLeftOpenByABootThatEnded(replica_test::Node& n, const std::string& record) {
    const int fd = open(record.c_str(), O_RDWR | O_CREAT, 0600);
    ASSERT_GE(fd, 0);
    const uint64_t tag = uint64_t{0xdead} << 40;  // not this boot's
    ASSERT_EQ(pwrite(fd, &tag, sizeof tag, offsetof(ActivityFileHeader, open_tag)), 8);
    close(fd);
    ASSERT_TRUE(n.v->replica_activity.Persist(record).ok());
    ASSERT_TRUE(n.v->replica_activity.Take().left_open);
  }
  // r1 takes over (epoch 2) from the primary, away as "p" (its replica server's port then
  // `port`), with r2; both were in sync in epoch 1. r1 keeps its state in DIR/r1.
  void FailOverToR1(uint16_t port) {
    ReplicaSetOptions o =
        Marked(2, {{"p", "127.0.0.1:" + std::to_string(port)}, {"r2", Addr(r2_)}});
    o.state_dir = dir_ + "/r1";
    std::filesystem::create_directories(o.state_dir);
    o.base = r1_.v->generation();
    o.prior = r1_.v->replica_activity.Take();
    ASSERT_TRUE(o.prior.complete);
    o.prior_in_sync = {"p", "r2"};
    auto s = ReplicaSet::Start(r1_.dispatcher.get(), r1_.v, o);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    set_ = std::move(s).value();
    for (int i = 0; i < 5000 && !set_->settled(); ++i) reactor_->RunOnce(1'000'000);
    set_->Attach();
  }
  void ExpectEqual(replica_test::Node& a, replica_test::Node& b) {
    for (uint64_t off = 0; off < kVolBytes; off += 4096)
      ASSERT_EQ(ByteAt(a, off), ByteAt(b, off)) << "offset " << off;
  }
};

// The primary restarts while a replica is out of sync: the map its last process kept (the
// units that replica missed) is resumed, and only those are copied, not the whole volume.
TEST_F(ReplicaSetPersistTest, ARestartedPrimaryResumesTheDirtyMapItsLastProcessKept) {
  uint16_t port = 0;
  ASSERT_NO_FATAL_FAILURE(WriteWhileR2IsAway(&port));
  ASSERT_EQ(Do(RequestOp::kWrite, 17 * 65536 + 4096, 4096, 'y'), 0);
  ASSERT_EQ(Do(RequestOp::kWrite, 40 * 65536, 4096, 'z'), 0);
  DropSet();
  // The next process of the primary's node: its own record of epoch 1 says it was the primary.
  const ReplicaActivity::Snapshot mine = primary_.v->replica_activity.Take();
  ASSERT_TRUE(mine.complete);
  ASSERT_TRUE(mine.primary);
  RestartServer(r2_, port);
  ReplicaSetOptions o = Marked(2, {{"r1", Addr(r1_)}, {"r2", Addr(r2_)}});
  o.base = primary_.v->generation();
  o.prior = mine;
  o.prior_in_sync = {"r1"};
  o.prior_own_term = true;
  // r1's own record keeps the last write it applied (no later message moved the watermark past
  // it): that unit is what r1 gets.
  uint64_t r1_units = 0;
  for (const auto& x : r1_.v->replica_activity.Take().ranges) r1_units += x.units;
  EXPECT_EQ(r1_units, 1u);
  const uint64_t resumed = CounterValue("spd_replication_dirty_maps_resumed_total");
  const uint64_t before = Copied();
  StartSet(o);
  for (int i = 0; i < 10000 && !AllInSync(); ++i) reactor_->RunOnce(1'000'000);
  ASSERT_TRUE(AllInSync()) << set_->Links()[1].detail;
  EXPECT_EQ(CounterValue("spd_replication_dirty_maps_resumed_total") - resumed, 1u);
  EXPECT_EQ(Copied() - before, (3u + r1_units) * 65536)
      << "the three units r2 missed and r1's last one, nothing else";
  ExpectEqual(primary_, r2_);
  ExpectEqual(primary_, r1_);
}

// The primary's node loses power while a replica is out of sync and comes back as the primary.
// What the disk then holds of its map and its own record is any mix of the pages stored (here:
// the map's bits never written back), and both files say a boot that ended had them open.
// Neither is used: both replicas get the whole volume, and both end equal to the primary.
TEST_F(ReplicaSetPersistTest, APrimaryBackFromAPowerLossCopiesTheWholeVolume) {
  const std::string record = dir_ + "/vol.activity";
  ASSERT_TRUE(primary_.v->replica_activity.Persist(record).ok());
  uint16_t port = 0;
  ASSERT_NO_FATAL_FAILURE(WriteWhileR2IsAway(&port));
  ASSERT_EQ(Do(RequestOp::kWrite, 40 * 65536, 4096, 'z'), 0);
  DropSet();
  // The power cut, as the disk may have it: the map's words lost, and the files still claimed
  // by a boot other than this one (the tags MappedFile::Claim writes).
  const std::string map = dir_ + "/vol.dirty.r2";
  {
    const int fd = open(map.c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    std::vector<char> zeros(4096, 0);
    ASSERT_EQ(pwrite(fd, zeros.data(), zeros.size() - 64, 64), 4096 - 64);
    close(fd);
  }
  for (const std::string& f : {map, record}) {
    const uint64_t tag = uint64_t{0xdead} << 40;  // not this boot's
    const int fd = open(f.c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(pwrite(fd, &tag, sizeof tag, 56), 8);
    close(fd);
  }
  // The next boot's process reads its record back (ReplicationManager, PersistActivity).
  ReplicaActivity back;
  ASSERT_TRUE(back.Persist(record).ok());
  RestartServer(r2_, port);
  ReplicaSetOptions o = Marked(2, {{"r1", Addr(r1_)}, {"r2", Addr(r2_)}});
  o.base = primary_.v->generation();
  o.prior = back.Take();
  EXPECT_EQ(o.prior.epoch, 0u) << "the record vouches for nothing";
  o.prior_in_sync = {"r1"};
  o.prior_own_term = true;
  const uint64_t before = Copied();
  StartSet(o);
  for (int i = 0; i < 10000 && !AllInSync(); ++i) reactor_->RunOnce(1'000'000);
  ASSERT_TRUE(AllInSync()) << set_->Links()[1].detail;
  EXPECT_EQ(Copied() - before, 2 * kVolBytes) << "the whole volume to each replica";
  ExpectEqual(primary_, r2_);
  ExpectEqual(primary_, r1_);
}

// The primary loses power with writes acknowledged that its own device had not made durable
// (the replicas hold them), and r1 takes over. Its record of its last writes is gone with the
// power (left open by the boot that ended), but its activity log, written durably before each
// write to a new unit, holds every unit in which it may differ: back, it gets those units (at
// most the log's window) and r1's, not the whole volume, and ends equal to r1.
TEST_F(ReplicaSetPersistTest, AnOldPrimaryBackFromAPowerLossGetsOnlyItsActivityLogsUnits) {
  const std::string record = dir_ + "/vol.activity";
  ASSERT_TRUE(primary_.v->replica_activity.Persist(record).ok());
  ReplicaSetOptions first = Marked(1, {{"r1", Addr(r1_)}, {"r2", Addr(r2_)}});
  first.activity_log_units = 16;
  ASSERT_TRUE(replica_test::RecordFence(reactor_.get(), primary_.v, 1));  // its term's
  StartSet(first);
  // Every unit written (allocated: later writes commit nothing of the pool) and flushed.
  for (int i = 0; i < 64; ++i) ASSERT_EQ(Do(RequestOp::kWrite, i * 65536, 8192, 'a' + i % 26), 0);
  ASSERT_EQ(Do(RequestOp::kFlush, 0, 0, 0), 0);
  // Acknowledged by every copy, durable on none yet.
  ASSERT_EQ(Do(RequestOp::kWrite, 40 * 65536, 4096, 'v'), 0);
  ASSERT_EQ(Do(RequestOp::kWrite, 41 * 65536 + 8192, 4096, 'v'), 0);
  ASSERT_EQ(Do(RequestOp::kWrite, 3 * 65536, 4096, 'w'), 0);
  // More units than the window has room for: units 40, 41 and 3 may leave the log only once a
  // flush made their writes durable here (the set flushes its copy for that).
  for (int u = 4; u < 24; ++u) ASSERT_EQ(Do(RequestOp::kWrite, u * 65536, 4096, 'y'), 0);
  DropSet();
  {
    const ActivityLog::Contents c = ActivityLog::Read(dir_ + "/vol.alog");
    ASSERT_TRUE(c.valid);
    EXPECT_EQ(c.epoch, 1u);
    EXPECT_LE(c.units.size(), 16u);
    EXPECT_TRUE(std::find(c.units.begin(), c.units.end(), 23u) != c.units.end());
  }
  // The power goes: the device keeps only what a flush made durable, the record's file stays
  // claimed by the boot that ended.
  SimBackend::Image img =
      static_cast<SimBackend*>(primary_.pool->backend())->CrashImage(1, CrashOptions{0.0, 0.0});
  const uint16_t port = StopServer(primary_);
  {
    const uint64_t tag = uint64_t{0xdead} << 40;  // not this boot's
    const int fd = open(record.c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(pwrite(fd, &tag, sizeof tag, 56), 8);
    close(fd);
  }
  ASSERT_NO_FATAL_FAILURE(FailOverToR1(port));
  // p's node boots again: its pool as the power cut left it, its record read back.
  ASSERT_NO_FATAL_FAILURE(BootFromImage(primary_, img));
  ASSERT_NE(ByteAt(primary_, 23 * 65536), 'y') << "the write the power took";
  ASSERT_TRUE(primary_.v->replica_activity.Persist(record).ok());
  ASSERT_TRUE(primary_.v->replica_activity.Take().left_open);
  ReplicaServerOptions so;
  so.port = port;
  so.state_dir = dir_;
  primary_.server = std::make_unique<ReplicaServer>(reactor_.get(), primary_.dispatcher.get(),
                                                    primary_.volumes.get(), so);
  ASSERT_TRUE(primary_.server->Start().ok());
  const uint64_t lost = CounterValue("spd_replication_lost_copies_total");
  const uint64_t before = Copied();
  for (int i = 0; i < 10000 && !AllInSync(); ++i) reactor_->RunOnce(1'000'000);
  ASSERT_TRUE(AllInSync()) << set_->Links()[0].detail;
  const uint64_t copied = Copied() - before;
  EXPECT_LE(copied, 16u * 65536) << "at most the log's window";
  EXPECT_GE(copied, 1u * 65536) << "unit 23 at least";
  EXPECT_EQ(CounterValue("spd_replication_lost_copies_total") - lost, 0u);
  ExpectEqual(r1_, primary_);
  EXPECT_EQ(ByteAt(primary_, 40 * 65536), 'v');
  EXPECT_EQ(ByteAt(primary_, 41 * 65536 + 8192), 'v');
  EXPECT_EQ(ByteAt(primary_, 3 * 65536), 'w');
  EXPECT_EQ(ByteAt(primary_, 23 * 65536), 'y');
  EXPECT_FALSE(primary_.v->replica_activity.Take().left_open) << "a resync ended on it";
}

// The primary loses power with writes acknowledged that its own device had not made durable
// and comes back as the primary of the next term (its replicas stayed). Its record is gone with
// the power, but its activity log stands for it (PriorActivity): the replicas, in sync in the
// last term, get only the log's units and their own records', not the whole volume, and end
// equal to the primary's copy as the power left it.
TEST_F(ReplicaSetPersistTest, APrimaryBackFromAPowerLossAsThePrimaryCopiesOnlyItsLogsUnits) {
  const std::string record = dir_ + "/vol.activity";
  ASSERT_TRUE(primary_.v->replica_activity.Persist(record).ok());
  ReplicaSetOptions first = Marked(1, {{"r1", Addr(r1_)}, {"r2", Addr(r2_)}});
  first.activity_log_units = 16;
  StartSet(first);
  for (int i = 0; i < 64; ++i) ASSERT_EQ(Do(RequestOp::kWrite, i * 65536, 8192, 'a' + i % 26), 0);
  ASSERT_EQ(Do(RequestOp::kFlush, 0, 0, 0), 0);
  for (int u = 4; u < 24; ++u) ASSERT_EQ(Do(RequestOp::kWrite, u * 65536, 4096, 'y'), 0);
  DropSet();
  SimBackend::Image img =
      static_cast<SimBackend*>(primary_.pool->backend())->CrashImage(1, CrashOptions{0.0, 0.0});
  StopServer(primary_);
  ASSERT_NO_FATAL_FAILURE(BootFromImage(primary_, img));
  ASSERT_NE(ByteAt(primary_, 23 * 65536), 'y') << "the write the power took";
  ASSERT_EQ(ByteAt(r1_, 23 * 65536), 'y') << "applied on the replicas";
  ASSERT_NO_FATAL_FAILURE(RecordLeftOpenByABootThatEnded(primary_, record));
  ReplicaSetOptions o = Marked(2, {{"r1", Addr(r1_)}, {"r2", Addr(r2_)}});
  o.base = primary_.v->generation();
  // Its fence, as its term recorded it (ReplicationManager::BecomePrimary): term 1. Had it
  // accepted a later term's hello, that term's writes would be in no log.
  EXPECT_FALSE(PriorActivity(primary_.v, dir_, "vol", 2).complete);
  o.prior = PriorActivity(primary_.v, dir_, "vol", 1);
  ASSERT_TRUE(o.prior.complete) << "the log stands for the record";
  EXPECT_EQ(o.prior.epoch, 1u);
  uint64_t log_units = 0;
  for (const auto& x : o.prior.ranges) log_units += x.units;
  EXPECT_LE(log_units, 16u);
  o.prior_in_sync = {"r1", "r2"};
  o.prior_own_term = true;
  uint64_t replica_units = 0;
  for (replica_test::Node* n : {&r1_, &r2_})
    for (const auto& x : n->v->replica_activity.Take().ranges) replica_units += x.units;
  const uint64_t lost = CounterValue("spd_replication_lost_copies_total");
  const uint64_t before = Copied();
  StartSet(o);
  for (int i = 0; i < 10000 && !AllInSync(); ++i) reactor_->RunOnce(1'000'000);
  ASSERT_TRUE(AllInSync()) << set_->Links()[1].detail;
  const uint64_t copied = Copied() - before;
  EXPECT_LE(copied, 2 * (log_units + replica_units) * 65536) << "the log's units and the records'";
  EXPECT_GE(copied, 2u * 65536) << "unit 23 to each replica at least";
  EXPECT_EQ(CounterValue("spd_replication_lost_copies_total"), lost);
  ExpectEqual(primary_, r1_);
  ExpectEqual(primary_, r2_);
  EXPECT_FALSE(primary_.v->replica_activity.Take().left_open) << "its copy is the term's";
}

// A replica that lost power before its first hello to this primary's process may lack what it
// had not made durable then, and with it units a map or a checkpoint counts as copied; nothing
// here kept what it had acknowledged since its last barrier (the primary restarted): the whole
// volume is copied, not only the units it missed.
TEST_F(ReplicaSetPersistTest, AReplicaBackFromAPowerLossBeforeItsFirstHelloGetsTheWholeVolume) {
  uint16_t port = 0;
  ASSERT_NO_FATAL_FAILURE(WriteWhileR2IsAway(&port));
  ASSERT_EQ(Do(RequestOp::kWrite, 40 * 65536, 4096, 'z'), 0);
  DropSet();  // the primary's process restarts
  ASSERT_NO_FATAL_FAILURE(RecordLeftOpenByABootThatEnded(r2_, dir_ + "/r2.activity"));
  RestartServer(r2_, port);
  ReplicaSetOptions o = Marked(2, {{"r1", Addr(r1_)}, {"r2", Addr(r2_)}});
  o.base = primary_.v->generation();
  o.prior = primary_.v->replica_activity.Take();
  o.prior_in_sync = {"r1"};
  o.prior_own_term = true;
  uint64_t r1_units = 0;
  for (const auto& x : r1_.v->replica_activity.Take().ranges) r1_units += x.units;
  const uint64_t lost = CounterValue("spd_replication_lost_copies_total");
  const uint64_t before = Copied();
  StartSet(o);
  for (int i = 0; i < 10000 && !AllInSync(); ++i) reactor_->RunOnce(1'000'000);
  ASSERT_TRUE(AllInSync()) << set_->Links()[1].detail;
  EXPECT_EQ(Copied() - before, kVolBytes + r1_units * 65536)
      << "the whole volume to r2, not the 2 units it missed";
  EXPECT_EQ(CounterValue("spd_replication_lost_copies_total") - lost, 1u);
  EXPECT_FALSE(r2_.v->replica_activity.Take().left_open) << "a resync ended on it";
  ExpectEqual(primary_, r2_);
  ExpectEqual(primary_, r1_);
}

// A map of another term, or none, is not resumed: the whole volume is copied.
TEST_F(ReplicaSetPersistTest, AMapOfAnotherTermIsNotResumed) {
  StartSet(Marked(1, {{"r2", Addr(r2_)}}));
  for (int i = 0; i < 32; ++i) ASSERT_EQ(Do(RequestOp::kWrite, i * 65536, 8192, 'a'), 0);
  const uint16_t port = StopServer(r2_);
  ASSERT_EQ(Do(RequestOp::kWrite, 3 * 65536, 4096, 'x'), 0);
  DropSet();
  RestartServer(r2_, port);
  ReplicaSetOptions o = Marked(5, {{"r2", Addr(r2_)}});
  o.base = primary_.v->generation();
  o.prior = primary_.v->replica_activity.Take();
  o.prior.epoch = 4;  // this node's record is of a later term than the map
  o.prior_own_term = true;
  const uint64_t before = Copied();
  StartSet(o);
  for (int i = 0; i < 10000 && !AllInSync(); ++i) reactor_->RunOnce(1'000'000);
  ASSERT_TRUE(AllInSync());
  EXPECT_EQ(Copied() - before, kVolBytes) << "the whole volume (allocated and holes)";
  ExpectEqual(primary_, r2_);
}

// The old primary comes back after a failover: the new one gives it only what either of them
// had in flight in the old term (the old one's record, kept on its disk, at its hello) and what
// it missed since, not the whole volume.
TEST_F(ReplicaSetPersistTest, TheOldPrimaryBackGetsOnlyWhatEitherHadInFlight) {
  StartSet(Marked(1, {{"r1", Addr(r1_)}, {"r2", Addr(r2_)}}));
  for (int i = 0; i < 32; ++i) ASSERT_EQ(Do(RequestOp::kWrite, i * 65536, 8192, 'a' + i % 26), 0);
  ASSERT_EQ(Do(RequestOp::kFlush, 0, 0, 0), 0);
  DropSet();
  // It dies with a write applied locally only (recorded first, as Admit does).
  alignas(4096) static char buf[4096];
  std::memset(buf, 'L', sizeof buf);
  primary_.v->replica_activity.Record(1, 500, 9 * 65536, 4096);
  ASSERT_EQ(
      testing::RunVolumeIo(reactor_.get(), primary_.v, IoOp::kWrite, 9 * 65536, 4096, buf).result,
      0);
  const uint16_t port = StopServer(primary_);
  ASSERT_NO_FATAL_FAILURE(FailOverToR1(port));
  ASSERT_EQ(set_->Links()[0].state, ReplicaSet::LinkState::kOutOfSync);
  InprocFrontend fe1(r1_.dispatcher.get(), reactor_.get(), InprocFrontend::Options{4, 64 << 10});
  IoRequest* req = fe1.Take();  // a write of the new term, missed by p
  req->op = RequestOp::kWrite;
  req->offset_bytes = 20 * 65536;
  req->length_bytes = 4096;
  req->volume = r1_.v;
  std::memset(req->buf, 'N', 4096);
  int32_t result = 1;
  fe1.Submit(
      req, [](void* arg, IoRequest* r) { *static_cast<int32_t*>(arg) = r->result; }, &result);
  for (int i = 0; i < 3000 && result == 1; ++i) reactor_->RunOnce(1'000'000);
  ASSERT_EQ(result, 0);
  const uint64_t before = Copied();
  RestartServer(primary_, port);
  for (int i = 0; i < 10000 && !AllInSync(); ++i) reactor_->RunOnce(1'000'000);
  ASSERT_TRUE(AllInSync()) << set_->Links()[0].detail;
  EXPECT_EQ(Copied() - before, 2u * 65536) << "unit 9 (the old primary's) and 20 (the new one's)";
  ExpectEqual(r1_, primary_);
  EXPECT_EQ(ByteAt(primary_, 9 * 65536), 'a' + 9 % 26) << "its unreplicated write was undone";
}

// A write that fails on the primary's own copy (an I/O error) while a replica is in sync leaves
// the replica holding what the primary does not: the set says so (the volume must go to the
// replica) and its record vouches for nothing (the old primary, back, gets the whole volume).
// With no replica in sync it stays the volume's.
TEST_F(ReplicaSetPersistTest, AWriteFailingOnThePrimarysCopyGivesTheVolumeUpToAnInSyncReplica) {
  auto* sim = static_cast<SimBackend*>(primary_.pool->backend());
  StartSet(Marked(1, {{"r1", Addr(r1_)}}));
  ASSERT_EQ(Do(RequestOp::kWrite, 0, 4096, 'a'), 0);
  const uint64_t failures = CounterValue("spd_replication_local_write_failures_total");
  sim->FailNext(1);
  EXPECT_EQ(Do(RequestOp::kWrite, 65536, 4096, 'b'), -EIO);
  EXPECT_TRUE(set_->local_failed());
  EXPECT_EQ(CounterValue("spd_replication_local_write_failures_total") - failures, 1u);
  EXPECT_EQ(ByteAt(r1_, 65536), 'b') << "the replica applied it";
  EXPECT_FALSE(primary_.v->replica_activity.Take().complete);
  DropSet();
  // Alone (its replica gone and marked): a failed write changes nothing it cannot resync.
  const uint16_t port = StopServer(r1_);
  StartSet(Marked(2, {{"r1", "127.0.0.1:" + std::to_string(port)}}));
  ASSERT_EQ(Do(RequestOp::kWrite, 0, 4096, 'c'), 0);
  ASSERT_EQ(set_->Links()[0].state, ReplicaSet::LinkState::kOutOfSync);
  sim->FailNext(1);
  EXPECT_EQ(Do(RequestOp::kWrite, 65536, 4096, 'd'), -EIO);
  EXPECT_FALSE(set_->local_failed());
  EXPECT_TRUE(primary_.v->replica_activity.Take().complete);
}

// A flush that fails on the primary's own copy turns its pool read-only: restarted, the pool
// re-opens from its last commit, without writes that an in-sync replica holds (and the writes
// after it fail with EROFS here while the replica applies them). The set says so, as for a
// failed write: the volume goes to the replica and the record vouches for nothing.
TEST_F(ReplicaSetPersistTest, AFlushFailingOnThePrimarysCopyGivesTheVolumeUpToAnInSyncReplica) {
  auto* sim = static_cast<SimBackend*>(primary_.pool->backend());
  StartSet(Marked(1, {{"r1", Addr(r1_)}}));
  ASSERT_EQ(Do(RequestOp::kWrite, 0, 4096, 'a'), 0);
  const uint64_t failures = CounterValue("spd_replication_local_write_failures_total");
  sim->set_fail_flushes(true);
  EXPECT_EQ(Do(RequestOp::kFlush, 0, 0, 0), -EIO);
  sim->set_fail_flushes(false);
  ASSERT_TRUE(primary_.pool->read_only());
  EXPECT_TRUE(set_->local_failed());
  EXPECT_EQ(CounterValue("spd_replication_local_write_failures_total") - failures, 1u);
  EXPECT_FALSE(primary_.v->replica_activity.Take().complete);
  EXPECT_EQ(Do(RequestOp::kWrite, 65536, 4096, 'b'), -EROFS);
  EXPECT_EQ(ByteAt(r1_, 65536), 'b') << "the replica applied it";
}

// The pool turns read-only with no request of the set failing (another volume's commit, a
// background one): the set's next tick finds it, and the manager waits for that verdict
// (read_only_checked) before it gives the volume up. With no replica in sync it stays unmarked.
TEST_F(ReplicaSetPersistTest, APoolTurnedReadOnlyUnderTheSetIsALostCopyWhenAReplicaIsInSync) {
  auto* sim = static_cast<SimBackend*>(primary_.pool->backend());
  StartSet(Marked(1, {{"r1", Addr(r1_)}}));
  ASSERT_EQ(Do(RequestOp::kWrite, 0, 4096, 'a'), 0);
  EXPECT_FALSE(set_->read_only_checked());
  alignas(4096) static char buf[4096] = {};
  ASSERT_EQ(testing::RunVolumeIo(reactor_.get(), primary_.v, IoOp::kWrite, 8192, 4096, buf).result,
            0);
  sim->set_fail_flushes(true);
  EXPECT_EQ(testing::RunVolumeIo(reactor_.get(), primary_.v, IoOp::kFlush, 0, 0, nullptr).result,
            -EIO);
  sim->set_fail_flushes(false);
  ASSERT_TRUE(primary_.pool->read_only());
  for (int i = 0; i < 1000 && !set_->read_only_checked(); ++i) reactor_->RunOnce(1'000'000);
  ASSERT_TRUE(set_->read_only_checked());
  EXPECT_TRUE(set_->local_failed());
  EXPECT_FALSE(primary_.v->replica_activity.Take().complete);
}

TEST_F(ReplicaSetPersistTest, APoolTurnedReadOnlyWithNoReplicaInSyncKeepsTheVolume) {
  auto* sim = static_cast<SimBackend*>(primary_.pool->backend());
  const uint16_t port = StopServer(r1_);
  StartSet(Marked(1, {{"r1", "127.0.0.1:" + std::to_string(port)}}));
  ASSERT_EQ(Do(RequestOp::kWrite, 0, 4096, 'a'), 0);
  ASSERT_EQ(set_->Links()[0].state, ReplicaSet::LinkState::kOutOfSync);
  sim->set_fail_flushes(true);
  EXPECT_EQ(Do(RequestOp::kFlush, 0, 0, 0), -EIO);
  sim->set_fail_flushes(false);
  for (int i = 0; i < 1000 && !set_->read_only_checked(); ++i) reactor_->RunOnce(1'000'000);
  ASSERT_TRUE(set_->read_only_checked());
  EXPECT_FALSE(set_->local_failed()) << "its map holds what the replica missed";
}

// A request past the end (a frontend that did not check) is refused as the volume would refuse
// it, never sent, and is not a failure of the primary's copy (it would give the volume up).
TEST_F(ReplicaSetPersistTest, ARequestPastTheEndIsRefusedNotAFailureOfTheCopy) {
  StartSet(Marked(1, {{"r1", Addr(r1_)}}));
  const uint64_t sent = CounterValue("spd_replication_messages_total");
  EXPECT_EQ(Do(RequestOp::kWrite, kVolBytes, 4096, 'a'), -ENOSPC);
  EXPECT_EQ(Do(RequestOp::kWrite, kVolBytes - 4096, 8192, 'a'), -ENOSPC);
  EXPECT_EQ(Do(RequestOp::kWriteZeroes, ~0ull - 4095, 8192, 0), -EINVAL);  // wraps around
  EXPECT_EQ(Do(RequestOp::kDiscard, kVolBytes, 4096, 0), -EINVAL);
  EXPECT_EQ(CounterValue("spd_replication_messages_total"), sent);
  EXPECT_FALSE(set_->local_failed());
  EXPECT_EQ(Do(RequestOp::kWrite, kVolBytes - 4096, 4096, 'z'), 0);
  EXPECT_EQ(ByteAt(r1_, kVolBytes - 1), 'z');
}

// A primary that stops (its key lost) fails what it had in flight; a write among them may be on
// its own copy already (and on some replica): its record keeps it, as a killed process's would,
// so that the next primary's resync covers its unit.
TEST_F(ReplicaSetPersistTest, AClosingSetKeepsTheRecordOfTheWritesItFailed) {
  ReplicaSetOptions o = Marked(1, {{"r1", Addr(r1_)}});
  std::function<void(bool)> pending;
  o.mark_out_of_sync = [&pending](const std::string&, std::function<void(bool)> done) {
    pending = std::move(done);  // etcd does not answer: the write is held
  };
  StartSet(o);
  ASSERT_EQ(Do(RequestOp::kWrite, 0, 4096, 'a'), 0);
  ASSERT_EQ(Do(RequestOp::kWrite, 7 * 65536, 4096, 'a'), 0);  // its unit in the activity log
  StopServer(r1_);
  Op* w = Submit(RequestOp::kWrite, 7 * 65536, 4096, 'b');
  for (int i = 0; i < 3000 && !pending; ++i) reactor_->RunOnce(1'000'000);
  ASSERT_TRUE(pending) << "the link failed and its mark was asked for";
  EXPECT_EQ(w->result, 1) << "held until the mark is confirmed";
  set_->Detach();
  set_->Close();
  EXPECT_EQ(Wait(w), -EIO);
  EXPECT_EQ(ByteAt(primary_, 7 * 65536), 'b') << "applied on the primary's copy";
  const ReplicaActivity::Snapshot a = primary_.v->replica_activity.Take();
  ASSERT_TRUE(a.complete);
  bool kept = false;
  for (const auto& x : a.ranges) kept |= x.first <= 7 && 7 < x.first + x.units;
  EXPECT_TRUE(kept) << "the failed write's unit left the record";
}

// A replica that loses power loses what it acknowledged since its last barrier (applied, not yet
// durable there). The primary keeps those writes; at its next hello the replica counts one more
// power loss, and they join its dirty map: its resync brings them back with what it missed
// while away, and nothing else (not the whole volume).
TEST_F(ReplicaSetPersistTest, AReplicaThatLostPowerGetsItsUnbarrieredWritesBack) {
  const std::string record = dir_ + "/r1.activity";
  ASSERT_TRUE(r1_.v->replica_activity.Persist(record).ok());
  StartSet(Marked(1, {{"r1", Addr(r1_)}}));
  for (int i = 0; i < 16; ++i) ASSERT_EQ(Do(RequestOp::kWrite, i * 65536, 4096, 'i'), 0);
  ASSERT_EQ(Do(RequestOp::kFlush, 0, 0, 0), 0);  // durable on r1
  ASSERT_EQ(Do(RequestOp::kWrite, 20 * 65536, 4096, 'u'), 0);
  ASSERT_EQ(Do(RequestOp::kWrite, 21 * 65536, 4096, 'u'), 0);
  ASSERT_EQ(ByteAt(r1_, 20 * 65536), 'u') << "applied on r1, not durable there";
  // r1's power goes: its device keeps only what a barrier made durable.
  SimBackend::Image img =
      static_cast<SimBackend*>(r1_.pool->backend())->CrashImage(1, CrashOptions{0.0, 0.0});
  const uint16_t port = StopServer(r1_);
  ASSERT_EQ(Do(RequestOp::kWrite, 30 * 65536, 4096, 'w'), 0);  // it fails here and is marked
  ASSERT_EQ(set_->Links()[0].state, ReplicaSet::LinkState::kOutOfSync);
  ASSERT_NO_FATAL_FAILURE(BootFromImage(r1_, img));
  ASSERT_EQ(ByteAt(r1_, 20 * 65536), 0) << "the unbarriered write is gone";
  ASSERT_NO_FATAL_FAILURE(RecordLeftOpenByABootThatEnded(r1_, record));
  const uint64_t lost = CounterValue("spd_replication_lost_copies_total");
  const uint64_t before = Copied();
  RestartServer(r1_, port);
  for (int i = 0; i < 10000 && !AllInSync(); ++i) reactor_->RunOnce(1'000'000);
  ASSERT_TRUE(AllInSync()) << set_->Links()[0].detail;
  EXPECT_EQ(ByteAt(r1_, 20 * 65536), 'u');
  EXPECT_EQ(ByteAt(r1_, 21 * 65536), 'u');
  EXPECT_EQ(ByteAt(r1_, 30 * 65536), 'w');
  EXPECT_EQ(Copied() - before, 3u * 65536) << "units 20, 21 and 30, not the whole volume";
  EXPECT_EQ(CounterValue("spd_replication_lost_copies_total"), lost);
  EXPECT_FALSE(r1_.v->replica_activity.Take().left_open) << "a resync ended on it";
  ExpectEqual(primary_, r1_);
}

// The same in the middle of a resync: the regions it copied since the replica's last barrier
// were cleared from the map when the replica applied them, and a power loss takes them too.
// They are copied again (with the rest), and the copy ends equal.
TEST_F(ReplicaSetPersistTest, AReplicaThatLostPowerMidResyncGetsItsCopiedRegionsAgain) {
  const std::string record = dir_ + "/r1.activity";
  ASSERT_TRUE(r1_.v->replica_activity.Persist(record).ok());
  ReplicaSetOptions o = Marked(1, {{"r1", Addr(r1_)}});
  o.resync_region_bytes = 64 << 10;
  o.resync_regions_inflight = 1;
  StartSet(o);
  for (int i = 0; i < 48; ++i) ASSERT_EQ(Do(RequestOp::kWrite, i * 65536, 65536, 'i'), 0);
  ASSERT_EQ(Do(RequestOp::kFlush, 0, 0, 0), 0);  // allocated and durable on r1
  uint16_t port = StopServer(r1_);
  for (int i = 0; i < 48; ++i) ASSERT_EQ(Do(RequestOp::kWrite, i * 65536, 65536, 'o'), 0);
  ASSERT_EQ(set_->Links()[0].state, ReplicaSet::LinkState::kOutOfSync);
  RestartServer(r1_, port);
  for (int i = 0; i < 10000 && set_->Links()[0].resynced_bytes < 24 * 65536; ++i)
    reactor_->RunOnce(100'000);
  ASSERT_EQ(set_->Links()[0].state, ReplicaSet::LinkState::kResyncing);
  ASSERT_GE(set_->Links()[0].resynced_bytes, 24u * 65536);
  ASSERT_EQ(ByteAt(r1_, 0), 'o') << "copied, not yet durable there";
  SimBackend::Image img =
      static_cast<SimBackend*>(r1_.pool->backend())->CrashImage(1, CrashOptions{0.0, 0.0});
  port = StopServer(r1_);
  ASSERT_EQ(Do(RequestOp::kWrite, 60 * 65536, 4096, 'w'), 0);
  ASSERT_NO_FATAL_FAILURE(BootFromImage(r1_, img));
  ASSERT_EQ(ByteAt(r1_, 0), 'i') << "the copied region is gone with the power";
  ASSERT_NO_FATAL_FAILURE(RecordLeftOpenByABootThatEnded(r1_, record));
  const uint64_t lost = CounterValue("spd_replication_lost_copies_total");
  RestartServer(r1_, port);
  for (int i = 0; i < 10000 && !AllInSync(); ++i) reactor_->RunOnce(1'000'000);
  ASSERT_TRUE(AllInSync()) << set_->Links()[0].detail;
  EXPECT_EQ(CounterValue("spd_replication_lost_copies_total"), lost) << "not the whole volume";
  ExpectEqual(primary_, r1_);
}

}  // namespace
}  // namespace spd
