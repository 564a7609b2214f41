#include "volume/pool.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <random>

#include "common/counters.h"
#include "io/sim_backend.h"
#include "testing/volume_io_util.h"
#include "volume/pool_format.h"

namespace spd {
namespace {

constexpr uint64_t kMiB = 1ull << 20;

class PoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = Reactor::Create(ReactorOptions{});
    ASSERT_TRUE(r.ok());
    reactor_ = std::move(r).value();
  }
  std::unique_ptr<SimBackend> NewSim(uint64_t size) {
    return std::make_unique<SimBackend>(reactor_.get(), size, SimOptions{});
  }
  std::unique_ptr<Pool> CreatePool(uint64_t size, SimBackend** sim_out, uint32_t chunk = 1 << 20) {
    auto sim = NewSim(size);
    *sim_out = sim.get();
    PoolOptions o;
    o.chunk_size_bytes = chunk;
    o.log_size_bytes = 1 << 20;
    auto p = Pool::Create(std::move(sim), reactor_.get(), o);
    EXPECT_TRUE(p.ok()) << p.status().ToString();
    return p.ok() ? std::move(p).value() : nullptr;
  }
  // Runs one request to completion.
  int32_t Do(Volume* v, IoOp op, uint64_t off, uint32_t len, void* buf, uint8_t flags = 0) {
    auto r = testing::RunVolumeIo(reactor_.get(), v, op, off, len, buf, flags);
    EXPECT_FALSE(r.completed_inside_submit) << "completed inside Submit";
    EXPECT_NE(r.result, -ETIMEDOUT);
    return r.result;
  }
  std::unique_ptr<Reactor> reactor_;
};

std::vector<uint8_t> Pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937 rng(seed);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

TEST_F(PoolTest, CreateListResizeDelete) {
  SimBackend* sim;
  auto pool = CreatePool(64 * kMiB, &sim);
  ASSERT_TRUE(pool);
  ASSERT_TRUE(pool->CreateVolume("a", 8 * kMiB).ok());
  ASSERT_TRUE(pool->CreateVolume("b", 4 * kMiB, Durability::kSync).ok());
  EXPECT_EQ(pool->CreateVolume("a", kMiB).status().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(pool->CreateVolume("bad/name", kMiB).status().code(), StatusCode::kInvalidArgument);
  auto list = pool->ListVolumes();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].name, "a");
  EXPECT_EQ(list[1].durability, Durability::kSync);
  Volume* a = pool->FindVolume("a");
  auto data = Pattern(4096, 1);
  ASSERT_EQ(Do(a, IoOp::kWrite, 7 * kMiB, 4096, data.data()), 0);
  EXPECT_EQ(pool->ResizeVolume("a", 4 * kMiB).code(), StatusCode::kFailedPrecondition);
  ASSERT_TRUE(pool->ResizeVolume("a", 16 * kMiB).ok());
  EXPECT_EQ(a->size_bytes(), 16 * kMiB);
  uint64_t free_before = pool->stats().chunks_free;
  ASSERT_TRUE(pool->DeleteVolume("a").ok());
  EXPECT_EQ(pool->FindVolume("a"), nullptr);
  EXPECT_EQ(pool->stats().chunks_free, free_before + 1);
  EXPECT_EQ(pool->DeleteVolume("a").code(), StatusCode::kNotFound);
}

TEST_F(PoolTest, ControlOperationsBeyondTheQueueLimitAreRefusedAndTheRestRun) {
  SimBackend* sim;
  auto pool = CreatePool(64 * kMiB, &sim);
  ASSERT_TRUE(pool);
  ASSERT_TRUE(pool->CreateVolume("a", 8 * kMiB).ok());
  // One runs, kControlQueueMax wait; the rest are refused at once (called back later, as all).
  constexpr int kOps = static_cast<int>(Pool::kControlQueueMax) + 6;
  int ok = 0, exhausted = 0, other = 0;
  for (int i = 0; i < kOps; ++i) {
    pool->SyncAllAsync([&](Status s) {
      if (s.ok()) {
        ++ok;
      } else if (s.code() == StatusCode::kResourceExhausted) {
        ++exhausted;
      } else {
        ++other;
      }
    });
  }
  EXPECT_EQ(ok + exhausted + other, 0) << "a callback ran inside the call";
  EXPECT_EQ(pool->control_ops_pending(), Pool::kControlQueueMax + 1);
  for (int i = 0; i < 100000 && ok + exhausted + other < kOps; ++i) reactor_->RunOnce(1'000'000);
  EXPECT_EQ(ok, static_cast<int>(Pool::kControlQueueMax) + 1);
  EXPECT_EQ(exhausted, 5);
  EXPECT_EQ(other, 0);
  EXPECT_EQ(pool->control_ops_pending(), 0u);
}

// A format 2 pool keeps its fixed table of 256 volumes (format 3 pools size theirs:
// pool_v3_test.cc), also after a reopen by this version, which never rewrites it as format 3.
TEST_F(PoolTest, AVolumeBeyondTheTableLimitIsRefused) {
  PoolOptions o;
  o.chunk_size_bytes = 1 << 20;
  o.log_size_bytes = 1 << 20;
  o.format_version_for_test = 2;
  auto sim_owned = NewSim(64 * kMiB);
  SimBackend* sim = sim_owned.get();
  auto created = Pool::Create(std::move(sim_owned), reactor_.get(), o);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  std::unique_ptr<Pool> pool = std::move(created).value();
  EXPECT_EQ(pool->format_version(), 2u);
  ASSERT_EQ(pool->volumes_max(), pool_format::kVolumesMaxV2);
  for (uint32_t i = 0; i < pool_format::kVolumesMaxV2; ++i)
    ASSERT_TRUE(pool->CreateVolume("v" + std::to_string(i), 4096).ok()) << i;
  auto r = pool->CreateVolume("one-more", 4096);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted) << r.status().ToString();
  EXPECT_NE(r.status().ToString().find("maximum of 256 volumes"), std::string::npos)
      << r.status().ToString();
  EXPECT_EQ(pool->ListVolumes().size(), pool_format::kVolumesMaxV2);
  ASSERT_TRUE(pool->DeleteVolume("v7").ok());  // a free slot: creatable again
  EXPECT_TRUE(pool->CreateVolume("one-more", 4096).ok());

  // Reopened: still format 2 with 256 slots, all of them in use.
  std::vector<uint8_t> sb_before(2 * pool_format::kBlockBytes);
  ASSERT_TRUE(sim->ReadSync(0, sb_before.data(), sb_before.size()).ok());
  SimBackend::Image img = sim->CrashImage(1, CrashOptions{0.0, 0.0});
  pool.reset();
  auto reopened =
      Pool::Open(std::make_unique<SimBackend>(reactor_.get(), img, SimOptions{}), reactor_.get());
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  pool = std::move(reopened).value();
  EXPECT_EQ(pool->format_version(), 2u);
  EXPECT_EQ(pool->volumes_max(), pool_format::kVolumesMaxV2);
  EXPECT_EQ(pool->ListVolumes().size(), pool_format::kVolumesMaxV2);
  EXPECT_NE(pool->FindVolume("one-more"), nullptr);
  EXPECT_EQ(pool->FindVolume("v7"), nullptr);
  EXPECT_EQ(pool->CreateVolume("257th", 4096).status().code(), StatusCode::kResourceExhausted);
  ASSERT_TRUE(pool->DeleteVolume("v100").ok());
  ASSERT_TRUE(pool->CreateVolume("again", 4096).ok());
  // Both superblock copies are as format 2 wrote them: version 2, no volumes_max.
  std::vector<uint8_t> sb_after(2 * pool_format::kBlockBytes);
  ASSERT_TRUE(pool->backend()->ReadSync(0, sb_after.data(), sb_after.size()).ok());
  EXPECT_EQ(sb_after, sb_before);
  const auto* sb = reinterpret_cast<const pool_format::Superblock*>(sb_after.data());
  EXPECT_EQ(sb->version, 2u);
  EXPECT_EQ(sb->volumes_max, 0u);
}

TEST_F(PoolTest, ReadWriteAcrossChunksAndZerosWhereUnwritten) {
  SimBackend* sim;
  auto pool = CreatePool(64 * kMiB, &sim, 64 << 10);
  ASSERT_TRUE(pool);
  Volume* v = pool->CreateVolume("v", 16 * kMiB).value();
  // 1 MiB + 3 KiB starting 1 KiB before a chunk boundary: 18 chunks, more than kSubIoMax.
  auto data = Pattern(kMiB + 3072, 2);
  ASSERT_EQ(Do(v, IoOp::kWrite, (64 << 10) - 1024, static_cast<uint32_t>(data.size()), data.data()),
            0);
  std::vector<uint8_t> back(2 * kMiB, 0xEE);
  ASSERT_EQ(Do(v, IoOp::kRead, 0, 2 * kMiB, back.data()), 0);
  for (size_t i = 0; i < back.size(); ++i) {
    size_t lo = (64 << 10) - 1024;
    uint8_t want = (i >= lo && i < lo + data.size()) ? data[i - lo] : 0;
    ASSERT_EQ(back[i], want) << i;
  }
  EXPECT_EQ(sim->stats().errors, 0u);
}

TEST_F(PoolTest, DiscardFreesSpaceAndReadsZero) {
  SimBackend* sim;
  auto pool = CreatePool(64 * kMiB, &sim);
  ASSERT_TRUE(pool);
  Volume* v = pool->CreateVolume("v", 16 * kMiB).value();
  auto data = Pattern(4 * kMiB, 3);
  ASSERT_EQ(Do(v, IoOp::kWrite, 0, 4 * kMiB, data.data()), 0);
  EXPECT_EQ(v->info().allocated_bytes, 4 * kMiB);
  uint64_t free0 = pool->stats().chunks_free;
  ASSERT_EQ(Do(v, IoOp::kDiscard, kMiB, 2 * kMiB, nullptr), 0);
  EXPECT_EQ(v->info().allocated_bytes, 2 * kMiB);
  ASSERT_EQ(Do(v, IoOp::kFlush, 0, 0, nullptr), 0);  // frees become reusable after a commit
  EXPECT_EQ(pool->stats().chunks_free, free0 + 2);
  std::vector<uint8_t> back(4 * kMiB);
  ASSERT_EQ(Do(v, IoOp::kRead, 0, 4 * kMiB, back.data()), 0);
  for (size_t i = 0; i < back.size(); ++i)
    ASSERT_EQ(back[i], (i >= kMiB && i < 3 * kMiB) ? 0 : data[i]) << i;
  std::vector<Extent> ext;
  ASSERT_TRUE(v->MapRange(0, 4 * kMiB, 16, &ext).ok());
  ASSERT_EQ(ext.size(), 3u);
  EXPECT_EQ(ext[1].kind, ExtentKind::kHole);
  EXPECT_EQ(ext[1].offset_bytes, kMiB);
  EXPECT_EQ(ext[1].length_bytes, 2 * kMiB);
  // Whole-chunk write-zeroes that must stay allocated: reported as known zeros, not as data;
  // a later write makes it data again.
  ASSERT_EQ(Do(v, IoOp::kWriteZeroes, 0, kMiB, nullptr, kIoNoUnmap), 0);
  ext.clear();
  ASSERT_TRUE(v->MapRange(0, kMiB, 4, &ext).ok());
  ASSERT_EQ(ext.size(), 1u);
  EXPECT_EQ(ext[0].kind, ExtentKind::kZero);
  EXPECT_EQ(v->info().allocated_bytes, 2 * kMiB);
  ASSERT_EQ(Do(v, IoOp::kWrite, 4096, 4096, data.data()), 0);
  ext.clear();
  ASSERT_TRUE(v->MapRange(0, kMiB, 4, &ext).ok());
  EXPECT_EQ(ext[0].kind, ExtentKind::kData);
}

TEST_F(PoolTest, OutOfSpaceFailsTheWriterOnly) {
  SimBackend* sim;
  auto pool = CreatePool(16 * kMiB, &sim);
  ASSERT_TRUE(pool);
  Volume* big = pool->CreateVolume("big", 64 * kMiB).value();  // thin: larger than the pool
  Volume* small = pool->CreateVolume("small", 4 * kMiB).value();
  auto one = Pattern(kMiB, 4);
  ASSERT_EQ(Do(small, IoOp::kWrite, 0, kMiB, one.data()), 0);
  int32_t r = 0;
  uint64_t off = 0;
  for (; off < 64 * kMiB; off += kMiB) {
    r = Do(big, IoOp::kWrite, off, kMiB, one.data());
    if (r != 0) break;
  }
  EXPECT_EQ(r, -ENOSPC);
  EXPECT_GT(off, 0u);
  // The other volume keeps working: reads and writes of its allocated chunk.
  std::vector<uint8_t> back(kMiB);
  ASSERT_EQ(Do(small, IoOp::kRead, 0, kMiB, back.data()), 0);
  EXPECT_EQ(back, one);
  ASSERT_EQ(Do(small, IoOp::kWrite, 0, 4096, one.data()), 0);
}

TEST_F(PoolTest, WritesBeyondTheSpaceWaiterLimitFailAtOnce) {
  SimBackend* sim;
  auto pool = CreatePool(16 * kMiB, &sim);
  ASSERT_TRUE(pool);
  Volume* v = pool->CreateVolume("v", 4096 * kMiB).value();  // thin: far larger than the pool
  auto one = Pattern(4096, 3);
  uint64_t chunks = 0;
  while (chunks < 64 && Do(v, IoOp::kWrite, chunks * kMiB, 4096, one.data()) == 0) ++chunks;
  ASSERT_LT(chunks, 64u) << "the pool never filled";
  ASSERT_TRUE(pool->SyncAll().ok());
  // A trim puts a chunk on its way back (unmapped inside Submit, zeroed and committed later);
  // at once, more writes into holes than may wait for it.
  VolumeIo trim;
  bool trimmed = false;
  trim.op = IoOp::kDiscard;
  trim.offset_bytes = 0;
  trim.length_bytes = kMiB;
  trim.ctx = &trimmed;
  trim.done = [](VolumeIo* io) { *static_cast<bool*>(io->ctx) = true; };
  v->Submit(&trim);
  constexpr int kWriters = 1100;  // kSpaceWaitersMax (1024) wait, the other 76 fail at once
  struct W {
    VolumeIo io;
    bool done = false;
  };
  std::vector<W> ws(kWriters);
  const uint64_t full0 = CounterValue("spd_pool_space_wait_full_total");
  for (int i = 0; i < kWriters; ++i) {
    W& w = ws[i];
    w.io.op = IoOp::kWrite;
    w.io.offset_bytes = (100 + uint64_t(i)) * kMiB;  // each a hole of its own
    w.io.length_bytes = 4096;
    w.io.buf = one.data();
    w.io.ctx = &w.done;
    w.io.done = [](VolumeIo* io) { *static_cast<bool*>(io->ctx) = true; };
    v->Submit(&w.io);
  }
  EXPECT_EQ(CounterValue("spd_pool_space_wait_full_total") - full0, 76u);
  auto all_done = [&] {
    if (!trimmed) return false;
    for (const W& w : ws)
      if (!w.done) return false;
    return true;
  };
  for (int i = 0; i < 100000 && !all_done(); ++i) reactor_->RunOnce(1'000'000);
  ASSERT_TRUE(all_done());
  int ok = 0, enospc = 0;
  for (const W& w : ws) {
    ok += w.io.result == 0;
    enospc += w.io.result == -ENOSPC;
  }
  EXPECT_EQ(trim.result, 0);
  EXPECT_GE(ok, 1) << "no waiter got the trimmed chunk";
  EXPECT_EQ(ok + enospc, kWriters);
}

// A write into a full pool right after a TRIM waits for the freed chunks (their zeroing, then
// the commit that records the frees) instead of failing with ENOSPC, which a file system takes
// as fatal. A pool with nothing being reclaimed still fails at once.
TEST_F(PoolTest, WriteRightAfterTrimOnAFullPoolWaitsForTheFreedChunks) {
  SimBackend* sim;
  auto pool = CreatePool(32 * kMiB, &sim);
  ASSERT_TRUE(pool);
  Volume* v = pool->CreateVolume("v", 128 * kMiB).value();  // thin: larger than the pool
  auto one = Pattern(kMiB, 9);
  uint64_t chunks = 0;
  int32_t r = 0;
  for (; chunks < 128; ++chunks) {
    r = Do(v, IoOp::kWrite, chunks * kMiB, kMiB, one.data());
    if (r != 0) break;
  }
  ASSERT_EQ(r, -ENOSPC);
  ASSERT_GT(chunks, 8u);
  const uint64_t waits0 = CounterValue("spd_pool_space_waits_total");
  // Truly full, nothing being reclaimed: ENOSPC at once, no waiting.
  const uint64_t t0 = MonotonicNs();
  EXPECT_EQ(Do(v, IoOp::kWrite, chunks * kMiB, 4096, one.data()), -ENOSPC);
  EXPECT_LT(MonotonicNs() - t0, 100'000'000u);
  EXPECT_EQ(CounterValue("spd_pool_space_waits_total"), waits0);
  // Free everything, then at once write as much again elsewhere: every write succeeds.
  ASSERT_EQ(Do(v, IoOp::kDiscard, 0, static_cast<uint32_t>(chunks * kMiB), nullptr), 0);
  for (uint64_t i = 0; i < chunks; ++i)
    ASSERT_EQ(Do(v, IoOp::kWrite, (chunks + i) * kMiB, kMiB, one.data()), 0) << "write " << i;
  EXPECT_GT(CounterValue("spd_pool_space_waits_total"), waits0);
  std::vector<uint8_t> back(kMiB);
  ASSERT_EQ(Do(v, IoOp::kRead, (2 * chunks - 1) * kMiB, kMiB, back.data()), 0);
  EXPECT_EQ(back, one);
  ASSERT_EQ(Do(v, IoOp::kRead, 0, kMiB, back.data()), 0);
  EXPECT_EQ(back, std::vector<uint8_t>(kMiB, 0));
  // Full again and nothing left to reclaim: prompt ENOSPC again.
  EXPECT_EQ(Do(v, IoOp::kWrite, 2 * chunks * kMiB, 4096, one.data()), -ENOSPC);
}

// A write waiting for space gives up with ENOSPC after PoolOptions::space_wait_ns.
TEST_F(PoolTest, WriteWaitingForSpaceTimesOut) {
  SimOptions so;
  so.latency_base_ns = 20'000'000;  // real time: the zeroing and the commit take 20 ms each
  auto sim = std::make_unique<SimBackend>(reactor_.get(), 16 * kMiB, so);
  PoolOptions o;
  o.log_size_bytes = 1 << 20;
  auto p = Pool::Create(std::move(sim), reactor_.get(), o);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  std::unique_ptr<Pool> pool = std::move(p).value();
  Volume* v = pool->CreateVolume("v", 64 * kMiB).value();
  auto one = Pattern(kMiB, 10);
  uint64_t chunks = 0;
  while (chunks < 64 && Do(v, IoOp::kWrite, chunks * kMiB, kMiB, one.data()) == 0) ++chunks;
  ASSERT_GT(chunks, 2u);
  pool->set_space_wait_ns(1'000'000);
  const uint64_t timeouts0 = CounterValue("spd_pool_space_wait_timeouts_total");
  ASSERT_EQ(Do(v, IoOp::kDiscard, 0, kMiB, nullptr), 0);
  EXPECT_EQ(Do(v, IoOp::kWrite, chunks * kMiB, kMiB, one.data()), -ENOSPC);
  EXPECT_EQ(CounterValue("spd_pool_space_wait_timeouts_total"), timeouts0 + 1);
  // The chunk does come back (a commit after its zeroing): a later write gets it.
  for (int i = 0; i < 10 && pool->stats().chunks_free == 0; ++i)
    ASSERT_EQ(Do(v, IoOp::kFlush, 0, 0, nullptr), 0);
  EXPECT_EQ(Do(v, IoOp::kWrite, chunks * kMiB, kMiB, one.data()), 0);
}

// After a failed device flush the pool never reports durability again ("fsyncgate": the
// kernel may drop the failed pages, and a later fdatasync succeeds without them). Every waiter
// of the failed commit gets the error; later writes, trims, write-zeroes and flushes fail;
// reads work; a restart opens the last durable state.
TEST_F(PoolTest, FailedFlushMakesThePoolReadOnlyForGood) {
  SimBackend* sim;
  auto pool = CreatePool(64 * kMiB, &sim);
  ASSERT_TRUE(pool);
  Volume* v = pool->CreateVolume("v", 16 * kMiB).value();
  auto first = Pattern(64 << 10, 11);
  auto second = Pattern(64 << 10, 12);
  ASSERT_EQ(Do(v, IoOp::kWrite, 0, 64 << 10, first.data()), 0);
  ASSERT_EQ(Do(v, IoOp::kFlush, 0, 0, nullptr), 0);
  ASSERT_FALSE(pool->read_only());
  ASSERT_EQ(Do(v, IoOp::kWrite, 0, 64 << 10, second.data()), 0);
  ASSERT_EQ(Do(v, IoOp::kWrite, 4 * kMiB, 64 << 10, second.data()), 0);  // a record pending
  // Two FLUSHes in flight together while the device's flushes fail: both get the error.
  std::vector<std::string> told;  // the read-only listener hears of it once
  pool->set_read_only_listener([&](const std::string& why) { told.push_back(why); });
  sim->set_fail_flushes(true);
  VolumeIo a, b;
  int done = 0;
  for (VolumeIo* io : {&a, &b}) {
    io->op = IoOp::kFlush;
    io->ctx = &done;
    io->done = [](VolumeIo* d) { ++*static_cast<int*>(d->ctx); };
    v->Submit(io);
  }
  for (int i = 0; i < 100000 && done < 2; ++i) reactor_->RunOnce(1'000'000);
  ASSERT_EQ(done, 2);
  EXPECT_EQ(a.result, -EIO);
  EXPECT_EQ(b.result, -EIO);
  EXPECT_TRUE(pool->read_only());
  EXPECT_TRUE(pool->stats().read_only);
  ASSERT_EQ(told.size(), 1u);
  EXPECT_NE(told[0].find("read-only"), std::string::npos) << told[0];
  // The device works again, but the data of the failed flush is gone from its cache: a flush
  // must not report success now.
  sim->set_fail_flushes(false);
  EXPECT_EQ(Do(v, IoOp::kFlush, 0, 0, nullptr), -EIO);
  EXPECT_EQ(Do(v, IoOp::kWrite, 8 * kMiB, 4096, first.data()), -EROFS);
  EXPECT_EQ(Do(v, IoOp::kWrite, 0, 4096, first.data()), -EROFS);
  EXPECT_EQ(Do(v, IoOp::kDiscard, 0, kMiB, nullptr), -EROFS);
  EXPECT_EQ(Do(v, IoOp::kWriteZeroes, 0, 4096, nullptr), -EROFS);
  EXPECT_FALSE(pool->SyncAll().ok());
  std::vector<uint8_t> back(64 << 10);
  ASSERT_EQ(Do(v, IoOp::kRead, 0, 64 << 10, back.data()), 0);
  EXPECT_EQ(back, second);  // what was written (not durable, but readable until the restart)
  // A restart opens the last durable state: the first version.
  SimBackend::Image img = sim->CrashImage(3, CrashOptions{0.0, 0.0});
  pool.reset();
  auto reopened =
      Pool::Open(std::make_unique<SimBackend>(reactor_.get(), img, SimOptions{}), reactor_.get());
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  EXPECT_FALSE(reopened.value()->read_only());
  Volume* v2 = reopened.value()->FindVolume("v");
  ASSERT_EQ(Do(v2, IoOp::kRead, 0, 64 << 10, back.data()), 0);
  EXPECT_EQ(back, first);
  EXPECT_EQ(Do(v2, IoOp::kWrite, 0, 4096, first.data()), 0);
  EXPECT_EQ(Do(v2, IoOp::kFlush, 0, 0, nullptr), 0);
}

// A checkpoint (8 bytes per chunk) is one backend I/O: its length must stay far below 2 GiB,
// so format refuses backends beyond pool_format::kPoolBytesMax or kChunksMax chunks, with an
// error that says which limit and what to do. The sim is sparse: a huge one costs nothing.
TEST_F(PoolTest, FormatRefusesABackendBeyondTheLimits) {
  PoolOptions o;
  auto too_big = Pool::Create(NewSim(pool_format::kPoolBytesMax + kMiB), reactor_.get(), o);
  ASSERT_FALSE(too_big.ok());
  EXPECT_EQ(too_big.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(too_big.status().ToString().find("64 TiB"), std::string::npos)
      << too_big.status().ToString();
  // Within the size limit, but too many small chunks.
  o.chunk_size_bytes = 64 << 10;
  auto too_many = Pool::Create(NewSim(8ull << 40), reactor_.get(), o);
  ASSERT_FALSE(too_many.ok());
  EXPECT_NE(too_many.status().ToString().find("--chunk-size"), std::string::npos)
      << too_many.status().ToString();
  static_assert(pool_format::kCheckpointBytesMax < (1ull << 31) / 2);
}

// Format 2: a re-open zeroes only free chunks not known to hold zeros (the reserve, chunks
// freed since), in the background, and serves at once; what it hands out reads as zeros.
TEST_F(PoolTest, ReopenZeroesOnlyChunksNotKnownZero) {
  SimBackend* sim;
  auto pool = CreatePool(128 * kMiB, &sim, 64 << 10);  // ~2000 chunks, a reserve of 31
  ASSERT_TRUE(pool);
  const uint64_t chunks = pool->stats().chunks_total;
  Volume* v = pool->CreateVolume("v", 64 * kMiB).value();
  auto data = Pattern(kMiB, 13);
  for (uint64_t off = 0; off < 16 * kMiB; off += kMiB)
    ASSERT_EQ(Do(v, IoOp::kWrite, off, kMiB, data.data()), 0);
  ASSERT_EQ(Do(v, IoOp::kDiscard, 0, 8 * kMiB, nullptr), 0);
  ASSERT_EQ(Do(v, IoOp::kFlush, 0, 0, nullptr), 0);
  ASSERT_EQ(Do(v, IoOp::kFlush, 0, 0, nullptr), 0);  // the kZeroed records of the frees
  SimBackend::Image img = sim->CrashImage(4, CrashOptions{0.0, 0.0});
  pool.reset();
  const uint64_t zeroing0 = CounterValue("spd_pool_open_zeroing_chunks_total");
  auto reopened =
      Pool::Open(std::make_unique<SimBackend>(reactor_.get(), img, SimOptions{}), reactor_.get());
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  const uint64_t zeroing = CounterValue("spd_pool_open_zeroing_chunks_total") - zeroing0;
  EXPECT_LE(zeroing, 64u) << "of " << chunks << " chunks";
  EXPECT_GT(chunks, 1000u);
  EXPECT_TRUE(reopened.value()->CheckFreeChunksHoldZeros().ok());
  // Serves at once; a new volume's chunks (some of them freed by the discard) read as zeros.
  Volume* w = reopened.value()->CreateVolume("w", 64 * kMiB).value();
  std::vector<uint8_t> back(kMiB);
  for (uint64_t off = 0; off < 32 * kMiB; off += 64 << 10)  // 512 chunks, one sector each
    ASSERT_EQ(Do(w, IoOp::kWrite, off, 512, data.data()), 0);
  for (uint64_t off = 0; off < 32 * kMiB; off += kMiB) {
    ASSERT_EQ(Do(w, IoOp::kRead, off, kMiB, back.data()), 0);
    for (size_t i = 0; i < back.size(); ++i) {
      const size_t in = i % (64 << 10);
      ASSERT_EQ(back[i], in < 512 ? data[in] : 0) << "offset " << off + i;
    }
  }
  ASSERT_TRUE(reopened.value()->DeleteVolume("w").ok());
}

TEST_F(PoolTest, OutOfRangeRequests) {
  SimBackend* sim;
  auto pool = CreatePool(32 * kMiB, &sim);
  Volume* v = pool->CreateVolume("v", 4 * kMiB).value();
  std::vector<uint8_t> buf(8192);
  EXPECT_EQ(Do(v, IoOp::kRead, 4 * kMiB + 4096, 4096, buf.data()), -EINVAL);
  EXPECT_EQ(Do(v, IoOp::kRead, 4 * kMiB - 4096, 8192, buf.data()), -EINVAL);
  EXPECT_EQ(Do(v, IoOp::kWrite, 4 * kMiB - 4096, 8192, buf.data()), -ENOSPC);
  Volume* ro = pool->CreateVolume("ro", kMiB, Durability::kFlush, true).value();
  EXPECT_EQ(Do(ro, IoOp::kWrite, 0, 4096, buf.data()), -EPERM);
  EXPECT_EQ(Do(ro, IoOp::kRead, 0, 4096, buf.data()), 0);
}

TEST_F(PoolTest, ReopenSeesVolumesAndFlushedData) {
  SimBackend* sim;
  auto pool = CreatePool(64 * kMiB, &sim, 64 << 10);
  Volume* v = pool->CreateVolume("v", 8 * kMiB).value();
  auto data = Pattern(3 * kMiB, 5);
  ASSERT_EQ(Do(v, IoOp::kWrite, 100 * 1024, static_cast<uint32_t>(data.size()), data.data()), 0);
  ASSERT_EQ(Do(v, IoOp::kFlush, 0, 0, nullptr), 0);
  // A power cut right now: only durable state survives.
  SimBackend::Image img = sim->CrashImage(1, CrashOptions{0.0, 0.0});
  pool.reset();
  auto reopened =
      Pool::Open(std::make_unique<SimBackend>(reactor_.get(), img, SimOptions{}), reactor_.get());
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  Volume* v2 = reopened.value()->FindVolume("v");
  ASSERT_NE(v2, nullptr);
  std::vector<uint8_t> back(data.size());
  ASSERT_EQ(Do(v2, IoOp::kRead, 100 * 1024, static_cast<uint32_t>(back.size()), back.data()), 0);
  EXPECT_EQ(back, data);
}

TEST_F(PoolTest, ManyCommitsWrapTheLogIntoCheckpoints) {
  SimBackend* sim;
  auto pool = CreatePool(256 * kMiB, &sim, 64 << 10);
  Volume* v = pool->CreateVolume("v", 200 * kMiB).value();
  auto data = Pattern(4096, 6);
  // Every write allocates a fresh chunk and is followed by a flush: one log block per commit,
  // so the 1 MiB log (256 blocks) fills and checkpoints take over several times.
  for (uint64_t i = 0; i < 1000; ++i) {
    ASSERT_EQ(Do(v, IoOp::kWrite, i * (64 << 10), 4096, data.data()), 0);
    ASSERT_EQ(Do(v, IoOp::kFlush, 0, 0, nullptr), 0);
  }
  EXPECT_GT(pool->stats().checkpoints, 3u);
  SimBackend::Image img = sim->CrashImage(2, CrashOptions{0.0, 0.0});
  pool.reset();
  auto reopened =
      Pool::Open(std::make_unique<SimBackend>(reactor_.get(), img, SimOptions{}), reactor_.get());
  ASSERT_TRUE(reopened.ok());
  Volume* v2 = reopened.value()->FindVolume("v");
  EXPECT_EQ(v2->info().allocated_bytes, 1000 * (64ull << 10));
  std::vector<uint8_t> back(4096);
  ASSERT_EQ(Do(v2, IoOp::kRead, 999 * (64 << 10), 4096, back.data()), 0);
  EXPECT_EQ(back, data);
}

// Randomized model test: a volume and an in-memory reference get the same seeded operations.
// A FLUSH that arrives while a commit runs, with no records of its own to write, gets its own
// device flush at once (no wait for the commit after the running one) and still completes
// after the running commit, whose records may describe its writes.
TEST_F(PoolTest, FlushDuringACommitOverlapsAndCompletesInOrder) {
  SimBackend* sim;
  auto pool = CreatePool(64 * kMiB, &sim);
  ASSERT_TRUE(pool);
  auto v = pool->CreateVolume("a", 8 * kMiB);
  ASSERT_TRUE(v.ok());
  Volume* vol = v.value();
  auto data = Pattern(4096, 7);
  ASSERT_EQ(Do(vol, IoOp::kWrite, 0, 4096, data.data()), 0);  // allocates: a record is pending
  const uint64_t overlaps_before = CounterValue("spd_pool_overlap_flushes_total");
  const uint64_t flushes_before = sim->flushes();
  struct Tracked {
    VolumeIo io;
    std::vector<int>* order;
    int id;
  };
  std::vector<int> order;
  Tracked a{{}, &order, 1}, b{{}, &order, 2};
  for (Tracked* t : {&a, &b}) {
    t->io.op = IoOp::kFlush;
    t->io.ctx = t;
    t->io.done = [](VolumeIo* io) {
      auto* self = static_cast<Tracked*>(io->ctx);
      self->order->push_back(self->id);
    };
  }
  vol->Submit(&a.io);  // starts the commit: log write, then device flush
  vol->Submit(&b.io);  // arrives while it runs, nothing left to record
  for (int i = 0; i < 100000 && order.size() < 2; ++i) reactor_->RunOnce(1'000'000);
  ASSERT_EQ(order.size(), 2u);
  EXPECT_EQ(order[0], 1);
  EXPECT_EQ(order[1], 2);
  EXPECT_EQ(a.io.result, 0);
  EXPECT_EQ(b.io.result, 0);
  EXPECT_EQ(CounterValue("spd_pool_overlap_flushes_total"), overlaps_before + 1);
  EXPECT_EQ(sim->flushes(), flushes_before + 2);  // the commit's and the overlapping one
}

TEST_F(PoolTest, RandomOperationsMatchAReferenceModel) {
  std::vector<uint64_t> seeds = {1, 2, 3, 4};
  if (const char* s = std::getenv("SPD_MODEL_SEED")) seeds = {std::strtoull(s, nullptr, 10)};
  for (uint64_t seed : seeds) {
    SimBackend* sim;
    auto pool = CreatePool(32 * kMiB, &sim, 64 << 10);
    const uint64_t size = 4 * kMiB;
    Volume* v = pool->CreateVolume("m", size).value();
    std::vector<uint8_t> model(size, 0);
    std::mt19937_64 rng(seed);
    std::vector<uint8_t> buf;
    for (int op = 0; op < 1500; ++op) {
      uint64_t len = 512 * (1 + rng() % 512);
      uint64_t off = 512 * (rng() % ((size - len) / 512 + 1));
      int kind = static_cast<int>(rng() % 10);
      buf.resize(len);
      SCOPED_TRACE("seed " + std::to_string(seed) + " (replay: SPD_MODEL_SEED=" +
                   std::to_string(seed) + ") op " + std::to_string(op));
      if (kind < 4) {
        for (auto& b : buf) b = static_cast<uint8_t>(rng());
        uint8_t flags = (rng() % 8 == 0) ? kIoFua : 0;
        ASSERT_EQ(Do(v, IoOp::kWrite, off, static_cast<uint32_t>(len), buf.data(), flags), 0);
        std::memcpy(model.data() + off, buf.data(), len);
      } else if (kind < 7) {
        ASSERT_EQ(Do(v, IoOp::kRead, off, static_cast<uint32_t>(len), buf.data()), 0);
        ASSERT_EQ(std::memcmp(buf.data(), model.data() + off, len), 0);
      } else if (kind == 7) {
        ASSERT_EQ(Do(v, IoOp::kDiscard, off, static_cast<uint32_t>(len), nullptr), 0);
        std::memset(model.data() + off, 0, len);
      } else if (kind == 8) {
        uint8_t flags = (rng() & 1) ? kIoNoUnmap : 0;
        ASSERT_EQ(Do(v, IoOp::kWriteZeroes, off, static_cast<uint32_t>(len), nullptr, flags), 0);
        std::memset(model.data() + off, 0, len);
      } else {
        ASSERT_EQ(Do(v, IoOp::kFlush, 0, 0, nullptr), 0);
      }
    }
    std::vector<uint8_t> all(size);
    ASSERT_EQ(Do(v, IoOp::kRead, 0, static_cast<uint32_t>(size), all.data()), 0);
    ASSERT_EQ(all, model) << "seed " << seed;
  }
}

}  // namespace
}  // namespace spd

namespace spd {
namespace {

// Block status below the chunk: zero blocks of 64 KiB. A fresh chunk is zero except what was
// written; write-zeroes and trims inside a written chunk turn what they cover whole back into
// zeros (copy and backup tools skip them), and a write turns it back into data.
TEST_F(PoolTest, BlockStatusKnowsZerosBelowTheChunk) {
  SimBackend* sim;
  auto pool = CreatePool(64 * kMiB, &sim);
  ASSERT_TRUE(pool);
  auto v = pool->CreateVolume("z", 8 * kMiB);
  ASSERT_TRUE(v.ok());
  Volume* vol = v.value();
  auto map = [&](uint64_t off, uint64_t len) {
    std::vector<Extent> e;
    EXPECT_TRUE(vol->MapRange(off, len, 64, &e).ok());
    std::vector<std::pair<uint64_t, ExtentKind>> out;
    for (const Extent& x : e) out.push_back({x.length_bytes, x.kind});
    return out;
  };
  using K = ExtentKind;
  constexpr uint64_t kK = 1024;
  auto data = Pattern(kMiB, 1);
  ASSERT_EQ(Do(vol, IoOp::kWrite, 0, 4096, data.data()), 0);  // into a fresh chunk
  EXPECT_EQ(map(0, kMiB),
            (std::vector<std::pair<uint64_t, K>>{{64 * kK, K::kData}, {960 * kK, K::kZero}}));
  ASSERT_EQ(Do(vol, IoOp::kWrite, 0, kMiB, data.data()), 0);  // the whole chunk: data
  EXPECT_EQ(map(0, kMiB), (std::vector<std::pair<uint64_t, K>>{{kMiB, K::kData}}));
  // 128 KiB of write-zeroes inside the written chunk, at 64 KiB: reads back as zeros.
  ASSERT_EQ(Do(vol, IoOp::kWriteZeroes, 64 * kK, 128 * kK, nullptr, kIoNoUnmap), 0);
  EXPECT_EQ(map(0, kMiB), (std::vector<std::pair<uint64_t, K>>{
                              {64 * kK, K::kData}, {128 * kK, K::kZero}, {832 * kK, K::kData}}));
  // A trim of a partial block covers no whole zero block; one of 192 KiB from 448 KiB covers
  // the blocks at 448, 512 and 576 KiB.
  ASSERT_EQ(Do(vol, IoOp::kDiscard, 400 * kK, 4096, nullptr), 0);
  ASSERT_EQ(Do(vol, IoOp::kDiscard, 448 * kK, 192 * kK, nullptr), 0);
  EXPECT_EQ(map(0, kMiB), (std::vector<std::pair<uint64_t, K>>{{64 * kK, K::kData},
                                                               {128 * kK, K::kZero},
                                                               {256 * kK, K::kData},
                                                               {192 * kK, K::kZero},
                                                               {384 * kK, K::kData}}));
  // A 4 KiB write into a zero block makes that block data again.
  ASSERT_EQ(Do(vol, IoOp::kWrite, 128 * kK, 4096, data.data()), 0);
  EXPECT_EQ(map(0, kMiB), (std::vector<std::pair<uint64_t, K>>{{64 * kK, K::kData},
                                                               {64 * kK, K::kZero},
                                                               {320 * kK, K::kData},
                                                               {192 * kK, K::kZero},
                                                               {384 * kK, K::kData}}));
  // What status calls zero really reads as zeros.
  std::vector<uint8_t> back(kMiB);
  ASSERT_EQ(Do(vol, IoOp::kRead, 0, kMiB, back.data()), 0);
  for (uint64_t i = 448 * kK; i < 640 * kK; ++i) ASSERT_EQ(back[i], 0) << i;
  for (uint64_t i = 64 * kK; i < 128 * kK; ++i) ASSERT_EQ(back[i], 0) << i;
}

// A zeroing that fails must not be reported as zeros.
TEST_F(PoolTest, AFailedZeroingLeavesTheBlocksData) {
  SimBackend* sim;
  auto pool = CreatePool(64 * kMiB, &sim);
  ASSERT_TRUE(pool);
  auto v = pool->CreateVolume("z", 8 * kMiB);
  ASSERT_TRUE(v.ok());
  Volume* vol = v.value();
  auto data = Pattern(kMiB, 2);
  ASSERT_EQ(Do(vol, IoOp::kWrite, 0, kMiB, data.data()), 0);
  sim->FailNext(1);  // the next backend operation fails with EIO
  EXPECT_LT(Do(vol, IoOp::kWriteZeroes, 0, 256 * 1024, nullptr, kIoNoUnmap), 0);
  std::vector<Extent> e;
  ASSERT_TRUE(vol->MapRange(0, kMiB, 64, &e).ok());
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].kind, ExtentKind::kData);
}

}  // namespace
}  // namespace spd
