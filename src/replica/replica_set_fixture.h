// The fixture of the ReplicaSet tests (replica_set_test.cc, replica_set_async_test.cc): a
// primary and two replicas, each a pool on a sim device with a replica server, all on one
// reactor; requests go through the primary's pipeline from an in-process frontend.
#pragma once

#include "replica/replica_set.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <vector>

#include "common/counters.h"
#include "frontend/inproc/inproc_frontend.h"
#include "io/sim_backend.h"
#include "replica/replica_server.h"
#include "replica/replica_test_util.h"
#include "replica/replica_tls.h"
#include "testing/volume_io_util.h"

namespace spd {
namespace replica_test {

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
  void MakeNode(Node* n, uint64_t seed, uint16_t port = 0) {
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
    ReplicaServerOptions ro;
    ro.port = port;
    n->server =
        std::make_unique<ReplicaServer>(reactor_.get(), n->dispatcher.get(), n->volumes.get(), ro);
    ASSERT_TRUE(n->server->Start().ok());
  }
  std::string Addr(const Node& n) { return "127.0.0.1:" + std::to_string(n.server->port()); }
  // Stops node n's replica server (it goes away); the port it listened on.
  uint16_t StopServer(Node& n) {
    const uint16_t port = n.server->port();
    EXPECT_TRUE(ShutdownServer(reactor_.get(), n.server.get()));
    n.server.reset();
    return port;
  }
  // Starts node n's replica server again on `port` (it comes back, its copy as it was).
  void RestartServer(Node& n, uint16_t port) {
    ReplicaServerOptions so;
    so.port = port;
    n.server =
        std::make_unique<ReplicaServer>(reactor_.get(), n.dispatcher.get(), n.volumes.get(), so);
    ASSERT_TRUE(n.server->Start().ok());
  }
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
  // A set of epoch 1 with one replica, node n as `name`, whose marks (out of sync, in sync)
  // are confirmed at once and whose resync is tried again every 100 ms.
  ReplicaSetOptions ResyncOptions(const std::string& name, const Node& n) {
    ReplicaSetOptions o = Options(1, {{name, Addr(n)}});
    o.mark_out_of_sync = [](const std::string&, std::function<void(bool)> done) { done(true); };
    o.mark_in_sync = [](const std::string&, std::function<void(bool)> done) { done(true); };
    o.resync_retry_ms = 100;
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
  // scribble: its buffer is overwritten as it completes (a frontend reusing it at once).
  Op* Submit(RequestOp op, uint64_t off, uint32_t len, char fill, uint8_t flags = 0,
             bool scribble = false) {
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
    auto done = [](void* arg, IoRequest* r) { static_cast<Op*>(arg)->result = r->result; };
    auto done_scribbled = [](void* arg, IoRequest* r) {
      static_cast<Op*>(arg)->result = r->result;
      std::memset(r->buf, '#', r->length_bytes);
    };
    if (scribble) {
      fe_->Submit(req, done_scribbled, o);
    } else {
      fe_->Submit(req, done, o);
    }
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

  // Node n's copy diverges: 64 KiB of 'j' every `stride` bytes, written there directly.
  void WriteJunk(Node& n, uint64_t stride) {
    alignas(4096) static char junk[65536];
    std::memset(junk, 'j', sizeof junk);
    for (uint64_t off = 0; off < kVolBytes; off += stride)
      ASSERT_EQ(
          testing::RunVolumeIo(reactor_.get(), n.v, IoOp::kWrite, off, sizeof junk, junk).result,
          0);
  }
  // 4 KiB of 'p' every `stride` bytes through the primary's pipeline (before a set: local only).
  void WritePrimary(uint64_t stride) {
    for (uint64_t off = 0; off < kVolBytes; off += stride)
      ASSERT_EQ(Do(RequestOp::kWrite, off, 4096, 'p'), 0);
  }
  // Bytes in which node n's copy differs from the primary's, the whole volume read.
  size_t BytesDifferingFromPrimary(Node& n) {
    std::vector<char> a(kVolBytes), b(kVolBytes);
    for (auto [node, buf] : {std::pair{&primary_, &a}, std::pair{&n, &b}}) {
      for (uint64_t off = 0; off < kVolBytes; off += 65536) {
        alignas(4096) static char chunk[65536];
        EXPECT_EQ(
            testing::RunVolumeIo(reactor_.get(), node->v, IoOp::kRead, off, 65536, chunk).result,
            0);
        std::memcpy(buf->data() + off, chunk, 65536);
      }
    }
    size_t diff = 0;
    for (size_t i = 0; i < kVolBytes; ++i) diff += a[i] != b[i];
    return diff;
  }

  std::unique_ptr<Reactor> reactor_;
  Node primary_, r1_, r2_;
  std::unique_ptr<InprocFrontend> fe_;
  std::unique_ptr<ReplicaSet> set_;
  std::vector<std::unique_ptr<Op>> ops_;
};

// The same with a state directory of its own (dir_: activity records, dirty maps), removed at
// the end.
class ReplicaSetStateTest : public ReplicaSetTest {
 protected:
  void SetUp() override {
    ReplicaSetTest::SetUp();
    char dir[] = "/tmp/spd-replica-state-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
  }
  void TearDown() override {
    ReplicaSetTest::TearDown();
    std::filesystem::remove_all(dir_);
  }
  std::string dir_;
};

}  // namespace replica_test
}  // namespace spd
