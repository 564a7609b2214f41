// Pool format 3: the volume table's size is the pool's own (Superblock::volumes_max), not a
// fixed 256. What these tests hold the pool to:
//   - a new pool holds thousands of volumes, and they and their data survive a reopen (log
//     records of slots beyond 256 replay);
//   - the table is full at exactly volumes_max (kResourceExhausted), a deleted volume's slot is
//     reused, tiny tables work, and the checkpoint is sized from the table;
//   - an out-of-range volumes_max is refused at Create, and a superblock or log record that
//     does not fit the table is refused or skipped at open, never trusted.
// Format 1 and 2 pools keep their 256 slots (pool_test.cc, AVolumeBeyondTheTableLimitIsRefused;
// FormatOneAndTwoPoolsKeepTheirLayout below).
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "common/crc32c.h"
#include "io/sim_backend.h"
#include "testing/volume_io_util.h"
#include "volume/pool.h"
#include "volume/pool_format.h"

namespace spd {
namespace {

namespace pf = pool_format;

constexpr uint64_t kKiB = 1ull << 10;
constexpr uint64_t kMiB = 1ull << 20;

uint64_t RoundUpBlock(uint64_t v) {
  return (v + pf::kBlockBytes - 1) / pf::kBlockBytes * pf::kBlockBytes;
}

std::vector<uint8_t> Pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937 rng(seed);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

class PoolV3Test : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = Reactor::Create(ReactorOptions{});
    ASSERT_TRUE(r.ok());
    reactor_ = std::move(r).value();
  }
  static PoolOptions Options(uint32_t chunk_bytes = 64 << 10) {
    PoolOptions o;
    o.chunk_size_bytes = chunk_bytes;
    o.log_size_bytes = 1 << 20;
    return o;
  }
  // A new pool on a sim device of `size` bytes; `*sim` is its device.
  std::unique_ptr<Pool> Create(uint64_t size, const PoolOptions& o, SimBackend** sim) {
    auto b = std::make_unique<SimBackend>(reactor_.get(), size, SimOptions{});
    *sim = b.get();
    auto p = Pool::Create(std::move(b), reactor_.get(), o);
    EXPECT_TRUE(p.ok()) << p.status().ToString();
    return p.ok() ? std::move(p).value() : nullptr;
  }
  // The durable state of `sim` right now, as after a power cut (unflushed writes dropped).
  static SimBackend::Image Durable(SimBackend* sim) {
    return sim->CrashImage(1, CrashOptions{0.0, 0.0});
  }
  std::unique_ptr<SimBackend> Device(const SimBackend::Image& img) {
    return std::make_unique<SimBackend>(reactor_.get(), img, SimOptions{});
  }
  Result<std::unique_ptr<Pool>> Open(const SimBackend::Image& img) {
    return Pool::Open(Device(img), reactor_.get());
  }
  Result<PoolCheckReport> Check(const SimBackend::Image& img) {
    return Pool::Check(Device(img), reactor_.get(), false);
  }
  // `img` with `edit` applied to the superblock copies in `copies` (bit 0: A, bit 1: B), their
  // checksums recomputed when `fix_crc` (a superblock that verifies but says something wrong).
  SimBackend::Image EditSuperblocks(const SimBackend::Image& img, int copies,
                                    const std::function<void(pf::Superblock*)>& edit,
                                    bool fix_crc) {
    auto dev = Device(img);
    for (int i = 0; i < 2; ++i) {
      if (!(copies & (1 << i))) continue;
      std::vector<uint8_t> blk(pf::kBlockBytes);
      EXPECT_TRUE(dev->ReadSync(i * pf::kBlockBytes, blk.data(), blk.size()).ok());
      auto* sb = reinterpret_cast<pf::Superblock*>(blk.data());
      edit(sb);
      if (fix_crc) {
        sb->crc = 0;
        sb->crc = Crc32c(0, blk.data(), blk.size());
      }
      EXPECT_TRUE(dev->WriteSync(i * pf::kBlockBytes, blk.data(), blk.size()).ok());
    }
    EXPECT_TRUE(dev->FlushSync().ok());
    return dev->VisibleImage();
  }
  static pf::Superblock ReadSuperblock(IoBackend* b, int copy = 0) {
    pf::Superblock sb;
    EXPECT_TRUE(b->ReadSync(copy * pf::kBlockBytes, &sb, sizeof sb).ok());
    return sb;
  }
  int32_t Do(Volume* v, IoOp op, uint64_t off, uint32_t len, void* buf, uint8_t flags = 0) {
    auto r = testing::RunVolumeIo(reactor_.get(), v, op, off, len, buf, flags);
    EXPECT_FALSE(r.completed_inside_submit) << "completed inside Submit";
    EXPECT_NE(r.result, -ETIMEDOUT);
    return r.result;
  }
  std::unique_ptr<Reactor> reactor_;
};

// 1,100 volumes (slots far beyond the old 256) each with data in one of its two chunks: after a
// power cut and a reopen all are there with their data. The data's allocation records are in
// the log, not the last checkpoint (every create wrote one, then came the writes): their slot
// numbers are bounds-checked against the pool's table at replay, so a check against the old 256
// would drop the data of every volume from slot 256 on.
TEST_F(PoolV3Test, AThousandVolumesAndTheirDataSurviveAReopen) {
  constexpr uint32_t kVolumes = 1100;
  constexpr uint32_t kChunk = 64 << 10;
  SimBackend* sim;
  auto pool = Create(160 * kMiB, Options(kChunk), &sim);
  ASSERT_TRUE(pool);
  EXPECT_EQ(pool->format_version(), pf::kVersion);
  EXPECT_EQ(pool->volumes_max(), pf::kVolumesMaxDefault);
  auto name = [](uint32_t i) { return "vol-" + std::to_string(i); };
  for (uint32_t i = 0; i < kVolumes; ++i)
    ASSERT_TRUE(pool->CreateVolume(name(i), 2 * kChunk).ok()) << i;
  for (uint32_t i = 0; i < kVolumes; ++i) {
    Volume* v = pool->FindVolume(name(i));
    ASSERT_NE(v, nullptr) << i;
    auto data = Pattern(4096, i);
    ASSERT_EQ(Do(v, IoOp::kWrite, (i % 2) * kChunk + 512 * (i % 7), 4096, data.data()), 0) << i;
  }
  ASSERT_EQ(Do(pool->FindVolume(name(0)), IoOp::kFlush, 0, 0, nullptr), 0);
  SimBackend::Image img = Durable(sim);
  pool.reset();

  auto report = Check(img);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_TRUE(report.value().problems.empty()) << report.value().problems.front();
  EXPECT_EQ(report.value().format_version, pf::kVersion);
  EXPECT_EQ(report.value().volumes_max, pf::kVolumesMaxDefault);
  EXPECT_EQ(report.value().volumes, kVolumes);
  EXPECT_GT(report.value().log_blocks_replayed, 0u) << "the allocations should be in the log";

  auto reopened = Open(img);
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  pool = std::move(reopened).value();
  EXPECT_EQ(pool->volumes_max(), pf::kVolumesMaxDefault);
  ASSERT_EQ(pool->ListVolumes().size(), kVolumes);
  std::vector<uint8_t> back(2 * kChunk);
  for (uint32_t i = 0; i < kVolumes; ++i) {
    Volume* v = pool->FindVolume(name(i));
    ASSERT_NE(v, nullptr) << name(i);
    EXPECT_EQ(v->size_bytes(), 2 * kChunk);
    EXPECT_EQ(v->info().allocated_bytes, kChunk) << name(i);
    ASSERT_EQ(Do(v, IoOp::kRead, 0, static_cast<uint32_t>(back.size()), back.data()), 0);
    const auto data = Pattern(4096, i);
    const uint64_t at = (i % 2) * kChunk + 512 * (i % 7);
    for (uint64_t b = 0; b < back.size(); ++b)
      ASSERT_EQ(back[b], b >= at && b < at + 4096 ? data[b - at] : 0) << name(i) << " byte " << b;
  }
  // The reopened pool keeps going: a checkpoint (a create) and more volumes.
  ASSERT_TRUE(pool->CreateVolume("after-reopen", 4096).ok());
  EXPECT_EQ(pool->ListVolumes().size(), kVolumes + 1);
}

// The table is full at exactly volumes_max (here the default, 4,096); a deleted volume's slot
// (one far beyond 256) is free again, and a reopen sees the same full table.
TEST_F(PoolV3Test, TheTableIsFullAtVolumesMaxAndADeletedSlotIsReused) {
  SimBackend* sim;
  auto pool = Create(64 * kMiB, Options(), &sim);
  ASSERT_TRUE(pool);
  const uint32_t max = pool->volumes_max();
  ASSERT_EQ(max, pf::kVolumesMaxDefault);
  for (uint32_t i = 0; i < max; ++i)
    ASSERT_TRUE(pool->CreateVolume("v" + std::to_string(i), 4096).ok()) << i;
  auto r = pool->CreateVolume("one-more", 4096);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted) << r.status().ToString();
  EXPECT_NE(r.status().ToString().find("maximum of 4096 volumes"), std::string::npos)
      << r.status().ToString();
  ASSERT_TRUE(pool->DeleteVolume("v3000").ok());
  ASSERT_TRUE(pool->CreateVolume("one-more", 4096).ok());
  EXPECT_EQ(pool->CreateVolume("two-more", 4096).status().code(), StatusCode::kResourceExhausted);

  SimBackend::Image img = Durable(sim);
  pool.reset();
  auto reopened = Open(img);
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  pool = std::move(reopened).value();
  EXPECT_EQ(pool->ListVolumes().size(), max);
  EXPECT_NE(pool->FindVolume("one-more"), nullptr);
  EXPECT_EQ(pool->FindVolume("v3000"), nullptr);
  EXPECT_NE(pool->FindVolume("v4095"), nullptr);
  EXPECT_EQ(pool->CreateVolume("two-more", 4096).status().code(), StatusCode::kResourceExhausted);
}

// A table of 4 (and of 1): the limit, a reused slot, data across a reopen; the checkpoint and
// with it the data region's offset follow from the table's size.
TEST_F(PoolV3Test, ASmallTableWorksAndSizesTheCheckpoint) {
  PoolOptions o = Options();
  o.volumes_max = 4;
  SimBackend* sim;
  auto pool = Create(64 * kMiB, o, &sim);
  ASSERT_TRUE(pool);
  EXPECT_EQ(pool->volumes_max(), 4u);
  const pf::Superblock sb = ReadSuperblock(pool->backend());
  EXPECT_EQ(sb.version, 3u);
  EXPECT_EQ(sb.volumes_max, 4u);
  const uint64_t chunks_guess = 64 * kMiB / o.chunk_size_bytes;
  EXPECT_EQ(sb.ckpt_bytes,
            RoundUpBlock(sizeof(pf::CheckpointHeader) + 4 * sizeof(pf::VolumeRecord) +
                         chunks_guess * sizeof(pf::ChunkOwner)));
  EXPECT_EQ(sb.ckpt_offset[1], sb.ckpt_offset[0] + sb.ckpt_bytes);
  EXPECT_EQ(sb.log_offset, sb.ckpt_offset[1] + sb.ckpt_bytes);

  for (uint32_t i = 0; i < 4; ++i) {
    Volume* v = pool->CreateVolume("s" + std::to_string(i), kMiB).value();
    auto data = Pattern(8192, 100 + i);
    ASSERT_EQ(Do(v, IoOp::kWrite, 8192 * i, 8192, data.data()), 0);
  }
  auto r = pool->CreateVolume("s4", kMiB);
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(r.status().ToString().find("maximum of 4 volumes"), std::string::npos)
      << r.status().ToString();
  ASSERT_TRUE(pool->DeleteVolume("s1").ok());
  Volume* again = pool->CreateVolume("s1-again", kMiB).value();
  auto data = Pattern(8192, 200);
  ASSERT_EQ(Do(again, IoOp::kWrite, 0, 8192, data.data()), 0);
  ASSERT_EQ(Do(again, IoOp::kFlush, 0, 0, nullptr), 0);

  SimBackend::Image img = Durable(sim);
  pool.reset();
  auto reopened = Open(img);
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  pool = std::move(reopened).value();
  EXPECT_EQ(pool->volumes_max(), 4u);
  ASSERT_EQ(pool->ListVolumes().size(), 4u);
  std::vector<uint8_t> back(8192);
  for (uint32_t i : {0u, 2u, 3u}) {
    Volume* v = pool->FindVolume("s" + std::to_string(i));
    ASSERT_NE(v, nullptr) << i;
    ASSERT_EQ(Do(v, IoOp::kRead, 8192 * i, 8192, back.data()), 0);
    EXPECT_EQ(back, Pattern(8192, 100 + i)) << i;
  }
  ASSERT_EQ(Do(pool->FindVolume("s1-again"), IoOp::kRead, 0, 8192, back.data()), 0);
  EXPECT_EQ(back, data);
  EXPECT_EQ(pool->CreateVolume("s5", kMiB).status().code(), StatusCode::kResourceExhausted);

  // One slot, and the default 4,096: each checkpoint slot holds the table, 128 bytes a slot.
  o.volumes_max = 1;
  SimBackend* sim1;
  auto one = Create(64 * kMiB, o, &sim1);
  ASSERT_TRUE(one);
  ASSERT_TRUE(one->CreateVolume("only", kMiB).ok());
  EXPECT_EQ(one->CreateVolume("second", kMiB).status().code(), StatusCode::kResourceExhausted);
  SimBackend* sim_default;
  auto def = Create(64 * kMiB, Options(), &sim_default);
  ASSERT_TRUE(def);
  for (auto [p, slots] : {std::pair{one.get(), 1u}, std::pair{def.get(), pf::kVolumesMaxDefault}}) {
    const pf::Superblock s = ReadSuperblock(p->backend());
    EXPECT_EQ(s.volumes_max, slots);
    EXPECT_EQ(s.ckpt_bytes,
              RoundUpBlock(sizeof(pf::CheckpointHeader) + slots * sizeof(pf::VolumeRecord) +
                           chunks_guess * sizeof(pf::ChunkOwner)));
    EXPECT_EQ(s.data_offset % o.chunk_size_bytes, 0u);
    EXPECT_GE(s.data_offset, s.log_offset + s.log_bytes);
  }
  EXPECT_LT(def->stats().chunks_total, one->stats().chunks_total);  // the table takes room
}

TEST_F(PoolV3Test, AVolumesMaxOutOfRangeIsRefusedAtCreate) {
  for (uint32_t bad : {0u, pf::kVolumesMaxLimit + 1, 0xffffffffu}) {
    PoolOptions o = Options(kMiB);
    o.volumes_max = bad;
    auto p = Pool::Create(std::make_unique<SimBackend>(reactor_.get(), 64 * kMiB, SimOptions{}),
                          reactor_.get(), o);
    ASSERT_FALSE(p.ok()) << bad;
    EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument) << p.status().ToString();
    EXPECT_NE(p.status().ToString().find("volumes_max"), std::string::npos)
        << p.status().ToString();
  }
  // The largest table: two checkpoints of 8 MiB and more.
  PoolOptions o = Options(kMiB);
  o.volumes_max = pf::kVolumesMaxLimit;
  SimBackend* sim;
  auto pool = Create(64 * kMiB, o, &sim);
  ASSERT_TRUE(pool);
  EXPECT_GT(ReadSuperblock(pool->backend()).ckpt_bytes, 8 * kMiB);
  ASSERT_TRUE(pool->CreateVolume("x", kMiB).ok());
  SimBackend::Image img = Durable(sim);
  pool.reset();
  auto reopened = Open(img);
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  EXPECT_EQ(reopened.value()->volumes_max(), pf::kVolumesMaxLimit);
  EXPECT_NE(reopened.value()->FindVolume("x"), nullptr);
}

// volumes_max sizes memory and the checkpoint that is read: a superblock whose value is out of
// range, or in range but not the pool's, is damage (kDataLoss), even when its checksum verifies.
// A copy whose checksum does not verify (the field is covered) is not used.
TEST_F(PoolV3Test, ACorruptVolumesMaxInTheSuperblockIsRefused) {
  SimBackend* sim;
  auto pool = Create(64 * kMiB, Options(), &sim);
  ASSERT_TRUE(pool);
  Volume* v = pool->CreateVolume("a", kMiB).value();
  auto data = Pattern(4096, 7);
  ASSERT_EQ(Do(v, IoOp::kWrite, 0, 4096, data.data()), 0);
  ASSERT_EQ(Do(v, IoOp::kFlush, 0, 0, nullptr), 0);
  const SimBackend::Image img = Durable(sim);
  pool.reset();

  // Copy A changed, checksum left: copy B is used; check names copy A.
  auto set = [](uint32_t n) { return [n](pf::Superblock* sb) { sb->volumes_max = n; }; };
  SimBackend::Image a_bad = EditSuperblocks(img, 1, set(8), false);
  auto opened = Open(a_bad);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  EXPECT_EQ(opened.value()->volumes_max(), pf::kVolumesMaxDefault);
  EXPECT_NE(opened.value()->FindVolume("a"), nullptr);
  opened.value().reset();
  auto rep = Check(a_bad);
  ASSERT_TRUE(rep.ok());
  EXPECT_FALSE(rep.value().superblock_ok[0]);
  EXPECT_TRUE(rep.value().superblock_ok[1]);
  // Both copies changed, checksums left: no superblock at all.
  EXPECT_EQ(Open(EditSuperblocks(img, 3, set(8), false)).status().code(), StatusCode::kDataLoss);

  // Checksums that verify: out of range, then in range but not what the pool was made with
  // (a smaller table does not match the checkpoint, a larger one does not fit its slot).
  for (uint32_t bad : {0u, pf::kVolumesMaxLimit + 1, 0x80000000u, 0xffffffffu, 256u, 2048u, 4095u,
                       4097u, 8192u, pf::kVolumesMaxLimit}) {
    SimBackend::Image edited = EditSuperblocks(img, 3, set(bad), true);
    auto p = Open(edited);
    ASSERT_FALSE(p.ok()) << bad;
    EXPECT_EQ(p.status().code(), StatusCode::kDataLoss) << bad << ": " << p.status().ToString();
    auto c = Check(edited);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    EXPECT_FALSE(c.value().problems.empty()) << bad;
  }
  // Claiming format 2 (a fixed 256) for a format 3 pool does not fit either.
  auto v2 = Open(EditSuperblocks(
      img, 3, [](pf::Superblock* sb) { sb->version = 2; }, true));
  EXPECT_EQ(v2.status().code(), StatusCode::kDataLoss) << v2.status().ToString();
  // A version this code does not know yet: refused, and the message says why.
  auto v4 = Open(EditSuperblocks(
      img, 3, [](pf::Superblock* sb) { sb->version = pf::kVersion + 1; }, true));
  EXPECT_EQ(v4.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(v4.status().ToString().find("format version 4"), std::string::npos)
      << v4.status().ToString();
  // The untouched image still opens with the data.
  auto good = Open(img);
  ASSERT_TRUE(good.ok()) << good.status().ToString();
  std::vector<uint8_t> back(4096);
  ASSERT_EQ(Do(good.value()->FindVolume("a"), IoOp::kRead, 0, 4096, back.data()), 0);
  EXPECT_EQ(back, data);
}

// A log record naming a slot beyond the table (or an empty slot) is skipped at replay and
// reported by check, never used as an index: the chunk is treated as free.
TEST_F(PoolV3Test, ALogRecordBeyondTheTableIsSkipped) {
  PoolOptions o = Options();
  o.volumes_max = 4;
  for (uint32_t bad_slot : {4u, 3u, 1000u, 0xffffffffu}) {
    SimBackend* sim;
    auto pool = Create(32 * kMiB, o, &sim);
    ASSERT_TRUE(pool);
    Volume* v = pool->CreateVolume("a", kMiB).value();  // slot 0; a checkpoint, log from 0
    auto data = Pattern(4096, 9);
    ASSERT_EQ(Do(v, IoOp::kWrite, 0, 4096, data.data()), 0);
    ASSERT_EQ(Do(v, IoOp::kFlush, 0, 0, nullptr), 0);
    const pf::Superblock sb = ReadSuperblock(pool->backend());
    SimBackend::Image img = Durable(sim);
    pool.reset();
    {
      // The allocation record's slot, changed, with the block's checksum made good again.
      auto dev = Device(img);
      std::vector<uint8_t> blk(pf::kBlockBytes);
      ASSERT_TRUE(dev->ReadSync(sb.log_offset, blk.data(), blk.size()).ok());
      auto* h = reinterpret_cast<pf::LogBlockHeader*>(blk.data());
      ASSERT_EQ(h->magic, pf::kLogMagic);
      auto* rec = reinterpret_cast<pf::LogRecord*>(blk.data() + sizeof(pf::LogBlockHeader));
      int allocs = 0;
      for (uint32_t i = 0; i < h->count; ++i) {
        if (rec[i].type != static_cast<uint32_t>(pf::LogRecordType::kAlloc)) continue;
        rec[i].slot = bad_slot;
        ++allocs;
      }
      ASSERT_EQ(allocs, 1);
      h->crc = 0;
      h->crc = Crc32c(0, blk.data(), blk.size());
      ASSERT_TRUE(dev->WriteSync(sb.log_offset, blk.data(), blk.size()).ok());
      ASSERT_TRUE(dev->FlushSync().ok());
      img = dev->VisibleImage();
    }
    auto rep = Check(img);
    ASSERT_TRUE(rep.ok()) << rep.status().ToString();
    ASSERT_FALSE(rep.value().problems.empty()) << bad_slot;
    EXPECT_NE(rep.value().problems[0].find("do not fit the volume table"), std::string::npos)
        << rep.value().problems[0];
    auto reopened = Open(img);
    ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
    Volume* a = reopened.value()->FindVolume("a");
    ASSERT_NE(a, nullptr);
    EXPECT_EQ(a->info().allocated_bytes, 0u) << bad_slot;
    EXPECT_TRUE(reopened.value()->CheckFreeChunksHoldZeros().ok());
  }
}

// Pools of format 1 and 2 keep their fixed 256-slot table and layout: the checkpoint size is
// what those versions computed, volumes_max stays unwritten, and they open as they were.
TEST_F(PoolV3Test, FormatOneAndTwoPoolsKeepTheirLayout) {
  for (uint32_t version : {1u, 2u}) {
    PoolOptions o = Options();
    o.format_version_for_test = version;
    o.volumes_max = 10;  // ignored: the older formats have no such field
    SimBackend* sim;
    auto pool = Create(64 * kMiB, o, &sim);
    ASSERT_TRUE(pool);
    EXPECT_EQ(pool->format_version(), version);
    EXPECT_EQ(pool->volumes_max(), pf::kVolumesMaxV2);
    const pf::Superblock sb = ReadSuperblock(pool->backend());
    EXPECT_EQ(sb.version, version);
    EXPECT_EQ(sb.volumes_max, 0u);
    EXPECT_EQ(sb.ckpt_bytes, RoundUpBlock(sizeof(pf::CheckpointHeader) + 256 * 128 +
                                          (64 * kMiB / o.chunk_size_bytes) * 8));
    for (uint32_t i = 0; i < 20; ++i) {
      Volume* v = pool->CreateVolume("v" + std::to_string(i), kMiB).value();
      auto data = Pattern(4096, i);
      ASSERT_EQ(Do(v, IoOp::kWrite, 4096, 4096, data.data()), 0);
    }
    ASSERT_EQ(Do(pool->FindVolume("v0"), IoOp::kFlush, 0, 0, nullptr), 0);
    SimBackend::Image img = Durable(sim);
    pool.reset();
    auto rep = Check(img);
    ASSERT_TRUE(rep.ok());
    EXPECT_TRUE(rep.value().problems.empty()) << rep.value().problems.front();
    EXPECT_EQ(rep.value().format_version, version);
    EXPECT_EQ(rep.value().volumes_max, pf::kVolumesMaxV2);
    auto reopened = Open(img);
    ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
    EXPECT_EQ(reopened.value()->format_version(), version);
    EXPECT_EQ(reopened.value()->volumes_max(), pf::kVolumesMaxV2);
    std::vector<uint8_t> back(4096);
    for (uint32_t i = 0; i < 20; ++i) {
      Volume* v = reopened.value()->FindVolume("v" + std::to_string(i));
      ASSERT_NE(v, nullptr);
      ASSERT_EQ(Do(v, IoOp::kRead, 4096, 4096, back.data()), 0);
      EXPECT_EQ(back, Pattern(4096, i)) << version << " v" << i;
    }
  }
  PoolOptions o = Options();
  o.format_version_for_test = pf::kVersion + 1;
  auto p = Pool::Create(std::make_unique<SimBackend>(reactor_.get(), 64 * kMiB, SimOptions{}),
                        reactor_.get(), o);
  EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
}

// --pool-overcommit-max: creates and growths beyond the bound are refused with
// kResourceExhausted and change nothing; shrinks, deletes and creates within it are not; a
// reopen with another bound applies that one (it is not part of the format).
TEST_F(PoolV3Test, TheOvercommitBoundRefusesCreatesAndGrowthsBeyondIt) {
  PoolOptions o = Options();
  o.overcommit_max = 2;
  SimBackend* sim;
  auto pool = Create(64 * kMiB, o, &sim);
  ASSERT_TRUE(pool);
  const uint64_t data = pool->stats().chunks_total * pool->stats().chunk_size_bytes;
  constexpr uint64_t kChunk = 64 << 10;
  ASSERT_TRUE(pool->CreateVolume("a", data).ok());  // once the data area
  auto over = pool->CreateVolume("b", data + kChunk);
  EXPECT_EQ(over.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(over.status().ToString().find("--pool-overcommit-max"), std::string::npos)
      << over.status().ToString();
  EXPECT_EQ(pool->stats().volumes, 1u);
  ASSERT_TRUE(pool->CreateVolume("b", data).ok());  // exactly twice: allowed
  EXPECT_EQ(pool->stats().provisioned_bytes, data * 2);
  EXPECT_EQ(pool->ResizeVolume("b", data + kChunk).code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(pool->stats().provisioned_bytes, data * 2);      // unchanged
  ASSERT_TRUE(pool->ResizeVolume("a", data - kChunk).ok());  // a shrink is never refused
  ASSERT_TRUE(pool->ResizeVolume("b", data + kChunk).ok());  // and makes room to grow
  ASSERT_TRUE(pool->DeleteVolume("a").ok());
  ASSERT_TRUE(pool->CreateVolume("c", data - kChunk).ok());
  EXPECT_EQ(pool->stats().provisioned_bytes, data * 2);
  // Reopened without a bound: anything goes.
  SimBackend::Image img = Durable(sim);
  pool.reset();
  auto reopened = Pool::OpenOrCreate(Device(img), reactor_.get(), Options());
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  EXPECT_TRUE((*reopened)->CreateVolume("d", data * 10).ok());
}

// Every volume's chunk map is in memory whole (4 bytes per chunk of its size): a create or growth
// that would take the maps beyond PoolOptions::map_memory_max is refused, so that no caller can
// make the daemon allocate without bound; the pool's stats and metric report the maps' memory.
TEST_F(PoolV3Test, TheMapMemoryBoundRefusesVolumesWhoseMapsWouldNotFit) {
  PoolOptions o = Options();    // 64 KiB chunks
  o.map_memory_max = 64 << 10;  // 16,384 chunks of maps: 1 GiB of volumes
  SimBackend* sim;
  auto pool = Create(64 * kMiB, o, &sim);
  ASSERT_TRUE(pool);
  ASSERT_TRUE(pool->CreateVolume("a", 768 * kMiB).ok());
  EXPECT_EQ(pool->stats().map_bytes, 768u * kMiB / (64 << 10) * 4);
  auto over = pool->CreateVolume("b", 512 * kMiB);
  EXPECT_EQ(over.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(over.status().ToString().find("--pool-map-memory-max"), std::string::npos)
      << over.status().ToString();
  ASSERT_TRUE(pool->CreateVolume("b", 256 * kMiB).ok());  // exactly the bound
  EXPECT_EQ(pool->stats().map_bytes, uint64_t{64 << 10});
  EXPECT_EQ(pool->ResizeVolume("b", 320 * kMiB).code(), StatusCode::kResourceExhausted);
  ASSERT_TRUE(pool->ResizeVolume("a", 512 * kMiB).ok());  // a shrink frees map memory
  ASSERT_TRUE(pool->ResizeVolume("b", 512 * kMiB).ok());
  EXPECT_EQ(pool->stats().map_bytes, uint64_t{64 << 10});
  ASSERT_TRUE(pool->DeleteVolume("a").ok());
  EXPECT_EQ(pool->stats().map_bytes, uint64_t{32 << 10});
}

}  // namespace
}  // namespace spd
