// ReplicaSet with real ReplicaServers in the same process (every pool on one reactor): writes,
// write-zeroes, FUA and flushes reach every in-sync replica before they complete; a replica
// that is down or goes away stops counting only once its out-of-sync mark is confirmed; a mark
// that cannot be made fails the held requests; a newer primary fences the old one.
#include "replica/replica_set.h"

#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <vector>

#include "common/counters.h"
#include "frontend/inproc/inproc_frontend.h"
#include "io/sim_backend.h"
#include "replica/replica_server.h"
#include "replica/replica_test_util.h"
#include "testing/volume_io_util.h"

namespace spd {
namespace {

constexpr uint64_t kVolBytes = 4 << 20;

struct Node {
  std::unique_ptr<Pool> pool;
  std::unique_ptr<VolumeManager> volumes;
  std::unique_ptr<Dispatcher> dispatcher;
  std::unique_ptr<ReplicaServer> server;
  Volume* v = nullptr;
};

class ReplicaSetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = Reactor::Create(ReactorOptions{});
    ASSERT_TRUE(r.ok());
    reactor_ = std::move(r).value();
    uint64_t seed = 1;
    for (Node* n : {&primary_, &r1_, &r2_}) MakeNode(n, seed++);
    fe_ = std::make_unique<InprocFrontend>(primary_.dispatcher.get(), reactor_.get(),
                                           InprocFrontend::Options{32, 64 << 10});
  }
  void TearDown() override {
    if (set_) {
      set_->Detach();
      set_->Stop();
      set_.reset();
    }
    fe_.reset();
    for (Node* n : {&primary_, &r1_, &r2_}) {
      if (n->server) {
        EXPECT_TRUE(replica_test::ShutdownServer(reactor_.get(), n->server.get()));
        n->server.reset();
      }
      n->dispatcher.reset();
      n->volumes.reset();
      n->pool.reset();
    }
  }
  // Each node's device completes I/O after a random 0-100 us of its own (its own seed), so
  // that writes in flight together complete, and land, in different orders on different nodes.
  void MakeNode(Node* n, uint64_t seed) {
    PoolOptions o;
    o.chunk_size_bytes = 64 << 10;
    o.log_size_bytes = 1 << 20;
    SimOptions so;
    so.seed = seed;
    so.latency_jitter_ns = 100'000;
    auto p = Pool::Create(std::make_unique<SimBackend>(reactor_.get(), 64ull << 20, so),
                          reactor_.get(), o);
    ASSERT_TRUE(p.ok());
    n->pool = std::move(p).value();
    auto v = n->pool->CreateVolume("vol", kVolBytes);
    ASSERT_TRUE(v.ok());
    n->v = *v;
    n->volumes = std::make_unique<VolumeManager>(n->pool.get());
    n->dispatcher = std::make_unique<Dispatcher>(n->pool.get(), DispatcherOptions{});
    n->server = std::make_unique<ReplicaServer>(reactor_.get(), n->dispatcher.get(),
                                                n->volumes.get(), ReplicaServerOptions{});
    ASSERT_TRUE(n->server->Start().ok());
  }
  std::string Addr(const Node& n) { return "127.0.0.1:" + std::to_string(n.server->port()); }
  ReplicaSetOptions Options(uint64_t epoch, std::vector<ReplicaTarget> targets) {
    ReplicaSetOptions o;
    o.volume = "vol";
    o.epoch = epoch;
    o.replicas = std::move(targets);
    o.ack_timeout_ms = 1000;
    o.hold_timeout_ms = 500;
    o.connect_timeout_ms = 1000;
    return o;
  }
  // Starts a set on the primary's volume and drives the reactor until every link settled.
  void StartSet(ReplicaSetOptions o) {
    auto s = ReplicaSet::Start(primary_.dispatcher.get(), primary_.v, std::move(o));
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    set_ = std::move(s).value();
    for (int i = 0; i < 5000 && !set_->settled(); ++i) reactor_->RunOnce(1'000'000);
    ASSERT_TRUE(set_->settled());
    set_->Attach();
  }
  struct Op {
    int32_t result = 1;  // 1: not completed
  };
  // Submits a request through the primary's pipeline; returns its Op (result 1 until done).
  Op* Submit(RequestOp op, uint64_t off, uint32_t len, char fill, uint8_t flags = 0) {
    IoRequest* req = fe_->Take();
    EXPECT_NE(req, nullptr);
    req->op = op;
    req->offset_bytes = off;
    req->length_bytes = len;
    req->flags = flags;
    req->volume = primary_.v;
    if (op == RequestOp::kWrite) std::memset(req->buf, fill, len);
    ops_.push_back(std::make_unique<Op>());
    Op* o = ops_.back().get();
    fe_->Submit(
        req, [](void* arg, IoRequest* r) { static_cast<Op*>(arg)->result = r->result; }, o);
    return o;
  }
  int32_t Wait(Op* o, int ms = 3000) {
    for (int i = 0; i < ms && o->result == 1; ++i) reactor_->RunOnce(1'000'000);
    return o->result;
  }
  int32_t Do(RequestOp op, uint64_t off, uint32_t len, char fill, uint8_t flags = 0) {
    return Wait(Submit(op, off, len, fill, flags));
  }
  char ByteAt(Node& n, uint64_t off) {
    alignas(4096) static char buf[4096];
    EXPECT_EQ(
        testing::RunVolumeIo(reactor_.get(), n.v, IoOp::kRead, off & ~4095ull, 4096, buf).result,
        0);
    return buf[off & 4095];
  }

  std::unique_ptr<Reactor> reactor_;
  Node primary_, r1_, r2_;
  std::unique_ptr<InprocFrontend> fe_;
  std::unique_ptr<ReplicaSet> set_;
  std::vector<std::unique_ptr<Op>> ops_;
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
  for (int i = 0; i < 5000 && set_->Links()[1].state != ReplicaSet::LinkState::kInSync; ++i)
    reactor_->RunOnce(1'000'000);
  ASSERT_EQ(set_->Links()[1].state, ReplicaSet::LinkState::kInSync) << set_->Links()[1].detail;
  EXPECT_EQ(set_->Links()[1].resyncs, 1u);
  EXPECT_EQ(in_sync_marks, std::vector<std::string>{"r2"});
  ASSERT_EQ(Do(RequestOp::kWrite, 4096, 4096, 'z'), 0);  // in sync: it gets this one too
  ASSERT_EQ(Do(RequestOp::kFlush, 0, 0, 0), 0);
  // Equal to the primary, byte for byte.
  std::vector<char> a(kVolBytes), b(kVolBytes);
  for (auto [node, buf] : {std::pair{&primary_, &a}, std::pair{&r2_, &b}}) {
    for (uint64_t off = 0; off < kVolBytes; off += 65536) {
      alignas(4096) static char chunk[65536];
      ASSERT_EQ(
          testing::RunVolumeIo(reactor_.get(), node->v, IoOp::kRead, off, 65536, chunk).result, 0);
      std::memcpy(buf->data() + off, chunk, 65536);
    }
  }
  size_t diff = 0;
  for (size_t i = 0; i < kVolBytes; ++i) diff += a[i] != b[i];
  EXPECT_EQ(diff, 0u) << "the resynced copy differs from the primary";
  EXPECT_EQ(b[2 << 20], 'p');
  EXPECT_EQ(b[(3 << 20) + 8192], 0) << "a region the primary never wrote kept the copy's old data";
}

// A replica that was in sync and goes away for a while gets back only what it missed: the
// regions written meanwhile (64 KiB units), not the whole volume.
TEST_F(ReplicaSetTest, AReplicaBackFromAnOutageGetsOnlyWhatItMissed) {
  ReplicaSetOptions o = Options(1, {{"r1", Addr(r1_)}});
  o.mark_out_of_sync = [](const std::string&, std::function<void(bool)> done) { done(true); };
  o.resync_retry_ms = 100;
  StartSet(o);
  for (int i = 0; i < 16; ++i) ASSERT_EQ(Do(RequestOp::kWrite, i * 65536, 4096, 'i'), 0);
  ASSERT_EQ(Do(RequestOp::kFlush, 0, 0, 0), 0);
  // r1 goes away (its server stops), then comes back on the same port.
  const uint16_t port = r1_.server->port();
  EXPECT_TRUE(replica_test::ShutdownServer(reactor_.get(), r1_.server.get()));
  r1_.server.reset();
  ASSERT_EQ(Do(RequestOp::kWrite, 0, 4096, 'x'), 0);  // it fails here and is marked
  ASSERT_EQ(set_->Links()[0].state, ReplicaSet::LinkState::kOutOfSync);
  ASSERT_EQ(Do(RequestOp::kWrite, 5 * 65536 + 8192, 4096, 'y'), 0);
  ASSERT_EQ(Do(RequestOp::kWrite, 40 * 65536, 4096, 'w'), 0);
  const uint64_t copied_before = CounterValue("spd_replication_resync_bytes_total");
  ReplicaServerOptions so;
  so.port = port;
  r1_.server =
      std::make_unique<ReplicaServer>(reactor_.get(), r1_.dispatcher.get(), r1_.volumes.get(), so);
  ASSERT_TRUE(r1_.server->Start().ok());
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
