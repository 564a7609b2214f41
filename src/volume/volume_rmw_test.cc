// Unaligned reads and writes on a device that demands 4 KiB alignment (the sim asserts it, as
// O_DIRECT fails it): bounce buffers, read-modify-write, and the exclusive mode that keeps
// concurrent writes into the same blocks from undoing each other.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "common/counters.h"
#include "io/sim_backend.h"
#include "testing/volume_io_util.h"
#include "volume/pool.h"

namespace spd {
namespace {

constexpr uint32_t kAlign = 4096;
constexpr uint32_t kChunk = 64 << 10;
constexpr uint64_t kVolBytes = 1 << 20;

struct Req {
  VolumeIo io;
  std::vector<uint8_t> data;
  uint8_t* buf = nullptr;
  bool done = false;
  ~Req() { std::free(buf); }
  void Set(IoOp op, uint64_t off, uint32_t len, uint8_t fill) {
    buf = static_cast<uint8_t*>(std::aligned_alloc(kAlign, (len + kAlign - 1) / kAlign * kAlign));
    std::memset(buf, fill, len);
    io.op = op;
    io.offset_bytes = off;
    io.length_bytes = len;
    io.buf = buf;
    io.ctx = &done;
    io.done = [](VolumeIo* d) { *static_cast<bool*>(d->ctx) = true; };
  }
};

class VolumeRmwTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = Reactor::Create(ReactorOptions{});
    ASSERT_TRUE(r.ok());
    reactor_ = std::move(r).value();
    SimOptions so;
    so.alignment_bytes = kAlign;
    auto sim = std::make_unique<SimBackend>(reactor_.get(), 16 << 20, so);
    sim_ = sim.get();
    PoolOptions po;
    po.chunk_size_bytes = kChunk;
    po.log_size_bytes = 1 << 20;
    auto p = Pool::Create(std::move(sim), reactor_.get(), po);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    pool_ = std::move(p).value();
    auto v = pool_->CreateVolume("v", kVolBytes);
    ASSERT_TRUE(v.ok());
    vol_ = v.value();
    model_.assign(kVolBytes, 0);
  }
  int32_t Do(IoOp op, uint64_t off, uint32_t len, uint8_t* buf) {
    auto r = testing::RunVolumeIo(reactor_.get(), vol_, op, off, len, buf);
    EXPECT_FALSE(r.completed_inside_submit);
    return r.result;
  }
  void RunUntilDone(std::vector<std::unique_ptr<Req>>& reqs) {
    for (int i = 0; i < 100000; ++i) {
      bool all = true;
      for (auto& q : reqs) all = all && q->done;
      if (all) return;
      reactor_->RunOnce(1'000'000);
    }
    FAIL() << "requests did not complete";
  }
  void ExpectModel() {
    std::vector<uint8_t> got(kVolBytes);
    uint8_t* b = static_cast<uint8_t*>(std::aligned_alloc(kAlign, kVolBytes));
    ASSERT_EQ(Do(IoOp::kRead, 0, kVolBytes, b), 0);
    std::memcpy(got.data(), b, kVolBytes);
    std::free(b);
    for (size_t i = 0; i < kVolBytes; ++i)
      ASSERT_EQ(got[i], model_[i]) << "byte " << i << " differs from the model";
  }
  std::unique_ptr<Reactor> reactor_;
  SimBackend* sim_ = nullptr;
  std::unique_ptr<Pool> pool_;
  Volume* vol_ = nullptr;
  std::vector<uint8_t> model_;
};

TEST_F(VolumeRmwTest, RandomUnalignedReadsAndWritesMatchAModel) {
  std::mt19937 rng(7);
  const uint64_t before = CounterValue("spd_volume_unaligned_requests_total");
  for (int i = 0; i < 300; ++i) {
    const uint32_t len = 1 + rng() % 9000;
    const uint64_t off = rng() % (kVolBytes - len);
    uint8_t* b = static_cast<uint8_t*>(std::aligned_alloc(kAlign, 3 * kAlign));
    if (rng() % 2) {
      for (uint32_t k = 0; k < len; ++k) b[k] = static_cast<uint8_t>(rng());
      ASSERT_EQ(Do(IoOp::kWrite, off, len, b), 0) << "write " << off << "+" << len;
      std::memcpy(&model_[off], b, len);
    } else {
      ASSERT_EQ(Do(IoOp::kRead, off, len, b), 0) << "read " << off << "+" << len;
      ASSERT_EQ(std::memcmp(b, &model_[off], len), 0) << "read " << off << "+" << len;
    }
    std::free(b);
  }
  ExpectModel();
  EXPECT_GT(CounterValue("spd_volume_unaligned_requests_total"), before + 250);
}

TEST_F(VolumeRmwTest, ConcurrentSectorWritesIntoOneBlockAllLand) {
  // Eight 512-byte writes into the same 4 KiB block, all in flight at once, plus aligned writes
  // around them: without the exclusive mode, each read-modify-write would undo the others.
  std::vector<std::unique_ptr<Req>> reqs;
  for (int round = 0; round < 4; ++round) {
    const uint64_t block = static_cast<uint64_t>(round) * 3 * kAlign + kChunk;
    for (int s = 0; s < 8; ++s) {
      auto q = std::make_unique<Req>();
      const uint8_t fill = static_cast<uint8_t>(16 * round + s + 1);
      q->Set(IoOp::kWrite, block + 512 * s, 512, fill);
      std::memset(&model_[block + 512 * s], fill, 512);
      reqs.push_back(std::move(q));
    }
    auto q = std::make_unique<Req>();
    q->Set(IoOp::kWrite, block + kAlign, kAlign, 0xee);  // aligned, the next block
    std::memset(&model_[block + kAlign], 0xee, kAlign);
    reqs.push_back(std::move(q));
  }
  for (auto& q : reqs) vol_->Submit(&q->io);
  for (auto& q : reqs) EXPECT_FALSE(q->done) << "completed inside Submit";
  RunUntilDone(reqs);
  for (auto& q : reqs) EXPECT_EQ(q->io.result, 0);
  ExpectModel();
}

TEST_F(VolumeRmwTest, RequestsArrivingDuringExclusiveModeKeepTheirOrder) {
  // An unaligned write, then an aligned write of the whole block: the aligned one was held and
  // must land last.
  std::vector<std::unique_ptr<Req>> reqs;
  reqs.push_back(std::make_unique<Req>());
  reqs.back()->Set(IoOp::kWrite, 8192 + 100, 200, 0x11);
  reqs.push_back(std::make_unique<Req>());
  reqs.back()->Set(IoOp::kWrite, 8192, kAlign, 0x22);
  const uint64_t held = CounterValue("spd_volume_exclusive_held_requests_total");
  for (auto& q : reqs) vol_->Submit(&q->io);
  RunUntilDone(reqs);
  EXPECT_EQ(CounterValue("spd_volume_exclusive_held_requests_total"), held + 1);
  std::memset(&model_[8192], 0x22, kAlign);
  ExpectModel();
}

TEST_F(VolumeRmwTest, TheFastPathIsPausedWhileExclusive) {
  auto ch = pool_->backend()->OpenChannel(reactor_.get());
  ASSERT_TRUE(ch.ok());
  uint8_t* b = static_cast<uint8_t*>(std::aligned_alloc(kAlign, kAlign));
  std::memset(b, 1, kAlign);
  ASSERT_EQ(Do(IoOp::kWrite, 0, kAlign, b), 0);  // allocate the chunk
  Req unaligned;
  unaligned.Set(IoOp::kWrite, 10, 10, 5);
  vol_->Submit(&unaligned.io);
  VolumeIo fast;
  fast.op = IoOp::kRead;
  fast.offset_bytes = 0;
  fast.length_bytes = kAlign;
  fast.buf = b;
  bool done = false;
  fast.ctx = &done;
  fast.done = [](VolumeIo* d) { *static_cast<bool*>(d->ctx) = true; };
  EXPECT_FALSE(vol_->SubmitRemote(&fast, ch.value().get())) << "fast path taken while exclusive";
  for (int i = 0; i < 10000 && !unaligned.done; ++i) reactor_->RunOnce(1'000'000);
  ASSERT_TRUE(unaligned.done);
  // Unaligned requests never take the fast path (the device would refuse them: O_DIRECT).
  VolumeIo odd = fast;
  odd.offset_bytes = 512;
  odd.length_bytes = 1024;
  EXPECT_FALSE(vol_->SubmitRemote(&odd, ch.value().get())) << "unaligned request on the fast path";
  EXPECT_TRUE(vol_->SubmitRemote(&fast, ch.value().get())) << "fast path not reopened";
  for (int i = 0; i < 10000 && !done; ++i) reactor_->RunOnce(1'000'000);
  ASSERT_TRUE(done);
  EXPECT_EQ(fast.result, 0);
  EXPECT_EQ(b[10], 5);
  EXPECT_EQ(b[9], 1);
  std::free(b);
}

}  // namespace
}  // namespace spd
