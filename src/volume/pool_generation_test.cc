// Pool::RecordGeneration: a replica's generation is recorded durably, after the data it vouches
// for, survives a power cut through the log and through a checkpoint, and never goes down.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "io/sim_backend.h"
#include "testing/volume_io_util.h"
#include "volume/pool.h"

namespace spd {
namespace {

class PoolGenerationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = Reactor::Create(ReactorOptions{});
    ASSERT_TRUE(r.ok());
    reactor_ = std::move(r).value();
    auto b = std::make_unique<SimBackend>(reactor_.get(), 64ull << 20, SimOptions{});
    sim_ = b.get();
    PoolOptions o;
    o.chunk_size_bytes = 64 << 10;
    o.log_size_bytes = 1 << 20;
    auto p = Pool::Create(std::move(b), reactor_.get(), o);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    pool_ = std::move(p).value();
    auto v = pool_->CreateVolume("r", 8 << 20);
    ASSERT_TRUE(v.ok());
    v_ = *v;
  }
  // Records `g` on `v` and drives the reactor until done: the result.
  int32_t Record(Volume* v, ReplicaGeneration g) {
    GenerationRecord r;
    r.generation = g;
    bool done = false;
    r.ctx = &done;
    r.done = [](GenerationRecord* x) { *static_cast<bool*>(x->ctx) = true; };
    pool_->RecordGeneration(v, &r);
    EXPECT_FALSE(done) << "completed inside the call";
    for (int i = 0; i < 100000 && !done; ++i) reactor_->RunOnce(1'000'000);
    EXPECT_TRUE(done);
    return r.result;
  }
  int32_t Write(Volume* v, uint64_t off, char fill) {
    std::memset(buf_, fill, sizeof buf_);
    return testing::RunVolumeIo(reactor_.get(), v, IoOp::kWrite, off, sizeof buf_, buf_).result;
  }
  // The pool as a power cut now would leave it (every unflushed write dropped), reopened.
  std::unique_ptr<Pool> PowerCutAndReopen() {
    SimBackend::Image img = sim_->CrashImage(1, CrashOptions{0.0, 0.0});
    pool_.reset();
    auto b = std::make_unique<SimBackend>(reactor_.get(), img, SimOptions{});
    sim_ = b.get();
    auto p = Pool::Open(std::move(b), reactor_.get());
    EXPECT_TRUE(p.ok()) << p.status().ToString();
    return p.ok() ? std::move(p).value() : nullptr;
  }

  std::unique_ptr<Reactor> reactor_;
  SimBackend* sim_ = nullptr;
  std::unique_ptr<Pool> pool_;
  Volume* v_ = nullptr;
  alignas(4096) char buf_[4096];
};

TEST_F(PoolGenerationTest, SurvivesAPowerCutWithTheDataBeforeIt) {
  EXPECT_EQ(v_->generation(), (ReplicaGeneration{0, 0}));
  ASSERT_EQ(Write(v_, 0, 'a'), 0);  // completed, never flushed by itself
  ASSERT_EQ(Record(v_, {3, 7}), 0);
  EXPECT_EQ(v_->generation(), (ReplicaGeneration{3, 7}));
  EXPECT_EQ(v_->fence_epoch(), 3u);
  pool_ = PowerCutAndReopen();
  ASSERT_NE(pool_, nullptr);
  Volume* v = pool_->FindVolume("r");
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(v->generation(), (ReplicaGeneration{3, 7})) << "the log record did not replay";
  EXPECT_EQ(v->fence_epoch(), 3u);
  std::memset(buf_, 0, sizeof buf_);
  ASSERT_EQ(testing::RunVolumeIo(reactor_.get(), v, IoOp::kRead, 0, sizeof buf_, buf_).result, 0);
  EXPECT_EQ(buf_[0], 'a') << "the generation outlived the data it vouches for";
  EXPECT_EQ(buf_[4095], 'a');
}

TEST_F(PoolGenerationTest, NeverGoesDown) {
  ASSERT_EQ(Record(v_, {3, 7}), 0);
  EXPECT_EQ(Record(v_, {3, 6}), -EINVAL);
  EXPECT_EQ(Record(v_, {2, 100}), -EINVAL);
  EXPECT_EQ(v_->generation(), (ReplicaGeneration{3, 7}));
  EXPECT_EQ(Record(v_, {3, 7}), 0);  // the same again: fine
  EXPECT_EQ(Record(v_, {4, 0}), 0);  // a new epoch starts its sequence over
  EXPECT_EQ(v_->generation(), (ReplicaGeneration{4, 0}));
  EXPECT_EQ(Record(v_, {3, 9}), -EINVAL);
  pool_ = PowerCutAndReopen();
  ASSERT_NE(pool_, nullptr);
  EXPECT_EQ(pool_->FindVolume("r")->generation(), (ReplicaGeneration{4, 0}));
}

// The epoch seen rises at the call, before the record is durable: fencing starts at once.
TEST_F(PoolGenerationTest, EpochSeenRisesAtTheCall) {
  GenerationRecord r;
  r.generation = {9, 1};
  bool done = false;
  r.ctx = &done;
  r.done = [](GenerationRecord* x) { *static_cast<bool*>(x->ctx) = true; };
  pool_->RecordGeneration(v_, &r);
  EXPECT_EQ(v_->fence_epoch(), 9u);
  EXPECT_EQ(v_->generation(), (ReplicaGeneration{0, 0})) << "durable before any commit";
  for (int i = 0; i < 100000 && !done; ++i) reactor_->RunOnce(1'000'000);
  ASSERT_TRUE(done);
  EXPECT_EQ(r.result, 0);
  EXPECT_EQ(v_->generation(), (ReplicaGeneration{9, 1}));
}

// A checkpoint restarts the log: the generation must then be in the checkpoint's volume table.
TEST_F(PoolGenerationTest, CheckpointCarriesIt) {
  ASSERT_EQ(Record(v_, {5, 11}), 0);
  auto other = pool_->CreateVolume("other", 1 << 20);  // a checkpoint
  ASSERT_TRUE(other.ok());
  ASSERT_EQ(Record(*other, {2, 2}), 0);
  ASSERT_TRUE(pool_->ResizeVolume("other", 2 << 20).ok());  // another: both in the table
  pool_ = PowerCutAndReopen();
  ASSERT_NE(pool_, nullptr);
  EXPECT_EQ(pool_->FindVolume("r")->generation(), (ReplicaGeneration{5, 11}));
  EXPECT_EQ(pool_->FindVolume("other")->generation(), (ReplicaGeneration{2, 2}));
}

// The fence rises on its own (a new primary's epoch, before the replica holds its data) and
// never goes down; a generation's epoch raises it too.
TEST_F(PoolGenerationTest, FenceIsRecordedAndNeverGoesDown) {
  GenerationRecord r;
  r.generation = {1, 5};
  r.fence_epoch = 4;
  bool done = false;
  r.ctx = &done;
  r.done = [](GenerationRecord* x) { *static_cast<bool*>(x->ctx) = true; };
  pool_->RecordGeneration(v_, &r);
  EXPECT_EQ(v_->fence_epoch(), 4u);
  EXPECT_EQ(v_->fence_epoch_durable(), 0u);
  for (int i = 0; i < 100000 && !done; ++i) reactor_->RunOnce(1'000'000);
  ASSERT_EQ(r.result, 0);
  EXPECT_EQ(v_->fence_epoch_durable(), 4u);
  EXPECT_EQ(v_->generation(), (ReplicaGeneration{1, 5}));
  r.generation = {1, 6};
  r.fence_epoch = 3;  // below the fence: refused
  done = false;
  pool_->RecordGeneration(v_, &r);
  for (int i = 0; i < 100000 && !done; ++i) reactor_->RunOnce(1'000'000);
  EXPECT_EQ(r.result, -EINVAL);
  EXPECT_EQ(Record(v_, {6, 0}), 0);  // fence follows the generation's epoch
  EXPECT_EQ(v_->fence_epoch(), 6u);
  pool_ = PowerCutAndReopen();
  ASSERT_NE(pool_, nullptr);
  EXPECT_EQ(pool_->FindVolume("r")->fence_epoch_durable(), 6u);
  EXPECT_EQ(pool_->FindVolume("r")->fence_epoch(), 6u);
  EXPECT_EQ(pool_->FindVolume("r")->generation(), (ReplicaGeneration{6, 0}));
}

TEST_F(PoolGenerationTest, ADeletedVolumeRefuses) {
  ASSERT_TRUE(pool_->DeleteVolume("r").ok());
  EXPECT_EQ(Record(v_, {1, 1}), -ESHUTDOWN);
}

}  // namespace
}  // namespace spd
