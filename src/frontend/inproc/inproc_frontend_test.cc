// The request pipeline driven by the in-process frontend: dispatch on the owner's reactor and
// from another one (hop or fast path), the scheduler stage, block status, read-hole extents,
// stage stamps, invalid requests. No sockets: what NBD adds on top is tested in
// frontend/nbd/nbd_server_test.cc.
#include "frontend/inproc/inproc_frontend.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <deque>

#include "common/counters.h"

namespace spd {
namespace {

constexpr uint32_t kChunk = 64 << 10;

// Holds every request until Flush(), then releases them newest first: proves that every request
// passes through the stage and that the dispatcher copes with a scheduler that holds and
// reorders.
class HoldingScheduler : public IoScheduler {
 public:
  const char* name() const override { return "holding"; }
  void Submit(IoRequest* req, Sink* sink) override {
    held_.push_back(req);
    sink_ = sink;
    ++submitted;
  }
  void Completed(IoRequest*) override { ++completed; }
  void ReleaseAllNewestFirst() {
    while (!held_.empty()) {
      IoRequest* r = held_.back();
      held_.pop_back();
      sink_->Release(r);
    }
  }
  size_t held() const { return held_.size(); }
  int submitted = 0;
  int completed = 0;

 private:
  std::deque<IoRequest*> held_;
  Sink* sink_ = nullptr;
};

class PipelineTest : public ::testing::TestWithParam<BackendKind> {
 protected:
  void SetUp() override {
    auto o = Reactor::Create(ReactorOptions{});
    ASSERT_TRUE(o.ok());
    owner_ = std::move(o).value();
    auto r = Reactor::Create(ReactorOptions{});
    ASSERT_TRUE(r.ok());
    other_ = std::move(r).value();
    BackendOptions bo;
    bo.kind = GetParam();
    bo.size_bytes = 32ull << 20;
    if (bo.kind == BackendKind::kUring) {
      if (owner_->engine() != ReactorEngine::kUring) GTEST_SKIP() << "io_uring unavailable";
      path_ = "/dev/shm/spd-pipeline-test-" + std::to_string(getpid()) + ".img";
      unlink(path_.c_str());
      bo.path = path_;
      bo.create = true;
    }
    auto b = OpenBackend(bo, owner_.get());
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    PoolOptions po;
    po.chunk_size_bytes = kChunk;
    po.log_size_bytes = 1 << 20;
    auto p = Pool::Create(std::move(b).value(), owner_.get(), po);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    pool_ = std::move(p).value();
    auto v = pool_->CreateVolume("v", 4ull << 20);
    ASSERT_TRUE(v.ok());
    vol_ = v.value();
  }
  void TearDown() override {
    fe_.reset();
    dispatcher_.reset();
    pool_.reset();
    if (!path_.empty()) unlink(path_.c_str());
  }
  void MakeDispatcher(Reactor* client, IoScheduler* sched = nullptr, bool remote_io = true,
                      bool stamp_stages = false) {
    DispatcherOptions o;
    o.remote_io = remote_io;
    o.stamp_stages = stamp_stages;
    dispatcher_ = std::make_unique<Dispatcher>(pool_.get(), o, sched);
    InprocFrontend::Options fo;
    fo.queue_depth = 8;
    fo.buffer_bytes = 256 << 10;
    fe_ = std::make_unique<InprocFrontend>(dispatcher_.get(), client, fo);
  }
  // Drives both reactors until `n` callbacks ran (or a bound).
  void RunUntil(const int* done, int n) {
    for (int i = 0; i < 200000 && *done < n; ++i) {
      owner_->RunOnce(0);
      other_->RunOnce(0);
    }
    ASSERT_EQ(*done, n) << "requests did not complete";
  }
  struct Result {
    int32_t result = 1;
    std::vector<Extent> extents;
    bool extents_valid = false;
    std::vector<uint8_t> data;
    uint64_t stages[static_cast<int>(Stage::kCount)] = {};
  };
  // Submits one request; returns its result once complete.
  Result Do(RequestOp op, uint64_t off, uint32_t len, uint8_t flags = 0, uint8_t fill = 0) {
    Result out;
    int done = 0;
    IoRequest* r = fe_->Take();
    EXPECT_NE(r, nullptr);
    r->op = op;
    r->offset_bytes = off;
    r->length_bytes = len;
    r->flags = flags;
    r->volume = vol_;
    if (op == RequestOp::kWrite) std::memset(r->buf, fill, len);
    struct Ctx {
      Result* out;
      int* done;
    } ctx{&out, &done};
    fe_->Submit(
        r,
        [](void* arg, IoRequest* req) {
          auto* c = static_cast<Ctx*>(arg);
          c->out->result = req->result;
          c->out->extents_valid = req->extents_valid;
          if (req->extents_valid) c->out->extents = *req->extents;
          if (req->op == RequestOp::kRead && req->result == 0) {
            auto* p = static_cast<uint8_t*>(req->buf);
            c->out->data.assign(p, p + req->length_bytes);
          }
          std::memcpy(c->out->stages, req->stage_ns, sizeof req->stage_ns);
          ++*c->done;
        },
        &ctx);
    EXPECT_EQ(done, 0) << "completed inside Submit";
    RunUntil(&done, 1);
    return out;
  }

  std::string path_;
  std::unique_ptr<Reactor> owner_;
  std::unique_ptr<Reactor> other_;
  std::unique_ptr<Pool> pool_;
  Volume* vol_ = nullptr;
  std::unique_ptr<Dispatcher> dispatcher_;
  std::unique_ptr<InprocFrontend> fe_;
};

TEST_P(PipelineTest, WriteReadRoundTripOnTheOwnerAndFromAnotherReactor) {
  for (Reactor* client : {owner_.get(), other_.get()}) {
    MakeDispatcher(client);
    const uint8_t fill = client == owner_.get() ? 0x5a : 0xa5;
    ASSERT_EQ(Do(RequestOp::kWrite, kChunk - 4096, 8192, 0, fill).result, 0);
    Result r = Do(RequestOp::kRead, kChunk - 4096, 8192);
    ASSERT_EQ(r.result, 0);
    ASSERT_EQ(r.data.size(), 8192u);
    if (GetParam() != BackendKind::kNull) {  // the null device keeps nothing
      for (uint8_t b : r.data) ASSERT_EQ(b, fill);
    }
    ASSERT_EQ(Do(RequestOp::kFlush, 0, 0).result, 0);
    fe_.reset();
  }
}

TEST_P(PipelineTest, FastPathFromAnotherReactorNeedsNoHop) {
  MakeDispatcher(other_.get());
  ASSERT_EQ(Do(RequestOp::kWrite, 0, 4096, 0, 1).result, 0);  // allocates: hops to the owner
  const uint64_t hops = CounterValue("spd_dispatch_hops_total");
  const uint64_t remote = CounterValue("spd_volume_remote_requests_total");
  ASSERT_EQ(Do(RequestOp::kRead, 0, 4096).result, 0);
  ASSERT_EQ(Do(RequestOp::kWrite, 4096, 4096, 0, 2).result, 0);
  if (GetParam() == BackendKind::kSim) {
    // The sim has no channels: everything hops.
    EXPECT_EQ(CounterValue("spd_dispatch_hops_total"), hops + 2);
  } else {
    EXPECT_EQ(CounterValue("spd_dispatch_hops_total"), hops);
    EXPECT_EQ(CounterValue("spd_volume_remote_requests_total"), remote + 2);
  }
}

TEST_P(PipelineTest, EveryRequestPassesTheSchedulerStageWhichMayHoldAndReorder) {
  HoldingScheduler sched;
  MakeDispatcher(other_.get(), &sched);
  int done = 0;
  int order[4] = {};
  struct Ctx {
    int* done;
    int* order;
    int id;
  } ctx[4];
  for (int i = 0; i < 4; ++i) {
    IoRequest* r = fe_->Take();
    r->op = RequestOp::kWrite;
    r->offset_bytes = i * 4096;
    r->length_bytes = 4096;
    r->volume = vol_;
    std::memset(r->buf, i + 1, 4096);
    ctx[i] = {&done, order, i};
    fe_->Submit(
        r,
        [](void* arg, IoRequest*) {
          auto* c = static_cast<Ctx*>(arg);
          c->order[(*c->done)++] = c->id;
        },
        &ctx[i]);
  }
  for (int i = 0; i < 1000; ++i) {
    owner_->RunOnce(0);
    other_->RunOnce(0);
  }
  EXPECT_EQ(done, 0) << "a request got past the scheduler stage without being released";
  EXPECT_EQ(sched.held(), 4u);
  sched.ReleaseAllNewestFirst();
  RunUntil(&done, 4);
  EXPECT_EQ(sched.submitted, 4);
  EXPECT_EQ(sched.completed, 4);
  // Released newest first, and run in that order.
  for (int i = 0; i < 4; ++i) EXPECT_EQ(order[i], 3 - i);
}

TEST_P(PipelineTest, BlockStatusAndReadExtentsDescribeHoles) {
  MakeDispatcher(other_.get());
  ASSERT_EQ(Do(RequestOp::kWrite, kChunk, 4096, 0, 7).result, 0);
  Result bs = Do(RequestOp::kBlockStatus, 0, 3 * kChunk);
  ASSERT_EQ(bs.result, 0);
  ASSERT_TRUE(bs.extents_valid);
  ASSERT_EQ(bs.extents.size(), 3u);
  EXPECT_EQ(bs.extents[0].kind, ExtentKind::kHole);
  EXPECT_EQ(bs.extents[1].kind, ExtentKind::kData);
  EXPECT_EQ(bs.extents[2].kind, ExtentKind::kHole);
  // A read over a hole and data, asking for extents: described (it needs the owner's map).
  Result rd = Do(RequestOp::kRead, 0, 2 * kChunk, kReqWantExtents);
  ASSERT_EQ(rd.result, 0);
  ASSERT_TRUE(rd.extents_valid);
  ASSERT_EQ(rd.extents.size(), 2u);
  EXPECT_EQ(rd.extents[0].kind, ExtentKind::kHole);
  for (uint32_t i = 0; i < kChunk; ++i) ASSERT_EQ(rd.data[i], 0);
  if (GetParam() != BackendKind::kNull) {
    EXPECT_EQ(rd.data[kChunk], 7);
  }
  // Out of range block status: an error, not a crash.
  EXPECT_LT(Do(RequestOp::kBlockStatus, 8ull << 20, 4096).result, 0);
}

TEST_P(PipelineTest, StagesAreStampedInOrderWhenAsked) {
  MakeDispatcher(other_.get(), nullptr, true, /*stamp_stages=*/true);
  Result w = Do(RequestOp::kWrite, 0, 4096, 0, 3);
  ASSERT_EQ(w.result, 0);
  for (int s = 1; s < static_cast<int>(Stage::kCount); ++s) {
    EXPECT_NE(w.stages[s], 0u) << "stage " << s << " not stamped";
    EXPECT_LE(w.stages[s - 1], w.stages[s]) << "stage " << s << " before stage " << s - 1;
  }
  fe_.reset();
  MakeDispatcher(other_.get());  // off: no clock reads
  w = Do(RequestOp::kWrite, 0, 4096, 0, 3);
  for (int s = 0; s < static_cast<int>(Stage::kCount); ++s) EXPECT_EQ(w.stages[s], 0u) << s;
}

TEST_P(PipelineTest, InvalidRequestsFailCleanlyAndLater) {
  MakeDispatcher(owner_.get());
  Volume* keep = vol_;
  vol_ = nullptr;
  EXPECT_EQ(Do(RequestOp::kRead, 0, 4096).result, -EINVAL);  // no volume
  vol_ = keep;
  EXPECT_EQ(Do(RequestOp::kRead, 4ull << 20, 4096).result, -EINVAL);  // beyond the end
  EXPECT_EQ(Do(RequestOp::kWrite, (4ull << 20) - 4096, 8192).result, -ENOSPC);
}

TEST_P(PipelineTest, AVolumeOwnedByAnotherReactorIsServedThereFromEveryPort) {
  // Volumes spread over both reactors: "v" stays on the pool's, "w" is the other reactor's.
  ASSERT_TRUE(pool_->SetVolumeReactors({owner_.get(), other_.get()}).ok());
  ASSERT_EQ(vol_->owner(), owner_.get());
  auto w = pool_->CreateVolume("w", 4ull << 20);
  ASSERT_TRUE(w.ok());
  vol_ = w.value();
  ASSERT_EQ(vol_->owner(), other_.get());
  const bool keeps = GetParam() != BackendKind::kNull;  // the null device keeps nothing
  const bool channels = GetParam() != BackendKind::kSim;
  uint8_t fill = 0x10;
  for (Reactor* client : {owner_.get(), other_.get()}) {
    MakeDispatcher(client);
    const uint64_t msgs = CounterValue("spd_volume_owner_pool_messages_total");
    const uint64_t pool_hops = CounterValue("spd_dispatch_pool_hops_total");
    const uint64_t base = client == owner_.get() ? 0 : 2 * kChunk;
    ++fill;
    // Into a hole (a chunk from the pool), FUA (and a commit), then read back.
    ASSERT_EQ(Do(RequestOp::kWrite, base + kChunk - 4096, 8192, kReqFua, fill).result, 0);
    Result r = Do(RequestOp::kRead, base + kChunk - 4096, 8192);
    ASSERT_EQ(r.result, 0);
    if (keeps) {
      for (uint8_t b : r.data) ASSERT_EQ(b, fill);
    }
    Result bs = Do(RequestOp::kBlockStatus, base, 2 * kChunk);
    ASSERT_EQ(bs.result, 0);
    ASSERT_TRUE(bs.extents_valid);
    ASSERT_EQ(bs.extents.size(), 1u);
    EXPECT_EQ(bs.extents[0].kind, ExtentKind::kData);
    // Trim the first chunk whole: a hole again; the second keeps its data.
    ASSERT_EQ(Do(RequestOp::kDiscard, base, kChunk).result, 0);
    Result rd = Do(RequestOp::kRead, base + kChunk - 4096, 8192, kReqWantExtents);
    ASSERT_EQ(rd.result, 0);
    ASSERT_TRUE(rd.extents_valid);
    ASSERT_EQ(rd.extents.size(), 2u);
    EXPECT_EQ(rd.extents[0].kind, ExtentKind::kHole);
    for (uint32_t i = 0; i < 4096; ++i) ASSERT_EQ(rd.data[i], 0);
    if (keeps) {
      for (uint32_t i = 4096; i < 8192; ++i) ASSERT_EQ(rd.data[i], fill);
    }
    ASSERT_EQ(Do(RequestOp::kFlush, 0, 0).result, 0);
    if (channels) {
      // The owner did the work and asked the pool by message only for two chunks and a commit
      // (the FUA write across two new chunks), an unmap and the flush's commit; no request went
      // on to the pool's reactor whole.
      EXPECT_EQ(CounterValue("spd_volume_owner_pool_messages_total"), msgs + 5);
      EXPECT_EQ(CounterValue("spd_dispatch_pool_hops_total"), pool_hops);
    } else {
      // No sim channel on the other reactor: every request but block status went on to the
      // pool's reactor, except, from the pool reactor's own port, the first read (allocated
      // space: the fast path on that port's channel).
      EXPECT_EQ(CounterValue("spd_dispatch_pool_hops_total"),
                pool_hops + (client == owner_.get() ? 4 : 5));
    }
    fe_.reset();
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, PipelineTest,
                         ::testing::Values(BackendKind::kSim, BackendKind::kUring,
                                           BackendKind::kNull),
                         [](const auto& info) { return std::string(BackendKindName(info.param)); });

}  // namespace
}  // namespace spd
