// Volume::SubmitOwned: a volume's owning reactor serving its requests on its own channel and
// asking the pool's reactor by message only for chunks, unmapping and commits.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <random>
#include <thread>

#include "common/counters.h"
#include "io/forwarding_backend.h"
#include "testing/volume_io_util.h"
#include "volume/pool.h"

namespace spd {
namespace {

constexpr uint32_t kChunk = 64 << 10;

uint64_t CounterValue(const char* name) {
  for (const auto& [n, v] : SnapshotCounters())
    if (n == name) return v;
  ADD_FAILURE() << "no counter " << name;
  return 0;
}
uint64_t Messages() { return CounterValue("spd_volume_owner_pool_messages_total"); }

struct Buf {
  explicit Buf(size_t n) : n(n), p(static_cast<uint8_t*>(std::aligned_alloc(4096, n))) {
    std::memset(p, 0, n);
  }
  ~Buf() { std::free(p); }
  void Fill(uint32_t seed) {
    std::mt19937 rng(seed);
    for (size_t i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(rng() | 1);  // never zero
  }
  bool Same(const Buf& o) const { return n == o.n && std::memcmp(p, o.p, n) == 0; }
  bool Zero(size_t from = 0, size_t len = SIZE_MAX) const {
    for (size_t i = from; i < n && i < from + len; ++i)
      if (p[i]) return false;
    return true;
  }
  size_t n;
  uint8_t* p;
};

// The owner's channel: counts what reaches the device and remembers the last I/O's flags.
class Recorder : public ForwardingBackend {
 public:
  explicit Recorder(IoBackend* inner) : ForwardingBackend(inner) {}
  const char* name() const override { return "recorder"; }
  void Submit(BackendIo* io) override {
    ++ios;
    last_flags = io->flags;
    inner_->Submit(io);
  }
  uint64_t ios = 0;
  uint8_t last_flags = 0xff;
};

// One request on the owner's path.
struct OwnedIo {
  VolumeIo io;
  bool started = false;
  bool done = false;
  bool Start(Volume* v, IoBackend* channel, Reactor* owner, IoOp op, uint64_t off, uint32_t len,
             void* buf, uint8_t flags = 0) {
    io.op = op;
    io.offset_bytes = off;
    io.length_bytes = len;
    io.buf = buf;
    io.flags = flags;
    io.ctx = &done;
    io.done = [](VolumeIo* d) { *static_cast<bool*>(d->ctx) = true; };
    done = false;
    started = v->SubmitOwned(&io, channel, owner);
    return started;
  }
};

// The pool on one reactor, the owner on another, both driven by the test thread.
class OwnedIoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = "/dev/shm/spd-owned-io-test-" + std::to_string(getpid()) + ".img";
    unlink(path_.c_str());
    auto p = Reactor::Create(ReactorOptions{});
    ASSERT_TRUE(p.ok());
    pool_reactor_ = std::move(p).value();
    if (pool_reactor_->engine() != ReactorEngine::kUring) GTEST_SKIP() << "io_uring unavailable";
    auto o = Reactor::Create(ReactorOptions{});
    ASSERT_TRUE(o.ok());
    owner_ = std::move(o).value();
    auto pl = testing::CreateShmUringPool(pool_reactor_.get(), path_, 32ull << 20, kChunk);
    ASSERT_TRUE(pl.ok()) << pl.status().ToString();
    pool_ = std::move(pl).value();
    ASSERT_TRUE(pool_->SetVolumeReactors({pool_reactor_.get(), owner_.get()}).ok());
    auto ch = pool_->backend()->OpenChannel(owner_.get());
    ASSERT_TRUE(ch.ok()) << ch.status().ToString();
    channel_ = std::move(ch).value();
    rec_ = std::make_unique<Recorder>(channel_.get());
  }
  void TearDown() override {
    rec_.reset();
    channel_.reset();
    pool_.reset();
    unlink(path_.c_str());
  }
  // Drives both reactors until `rio` completed.
  int32_t Wait(OwnedIo* rio) {
    for (int i = 0; i < 200000 && !rio->done; ++i) {
      owner_->RunOnce(0);
      pool_reactor_->RunOnce(0);
    }
    return rio->done ? rio->io.result : -ETIMEDOUT;
  }
  // One request on the owner's path, to completion; it must be taken and not complete inside.
  int32_t Owned(Volume* v, IoOp op, uint64_t off, uint32_t len, void* buf, uint8_t flags = 0) {
    OwnedIo rio;
    if (!rio.Start(v, rec_.get(), owner_.get(), op, off, len, buf, flags)) {
      ADD_FAILURE() << "the owner's path refused the request";
      return -EAGAIN;
    }
    EXPECT_FALSE(rio.done) << "completed inside SubmitOwned";
    return Wait(&rio);
  }
  // On the pool's reactor (Volume::Submit), for comparison.
  int32_t OnPool(Volume* v, IoOp op, uint64_t off, uint32_t len, void* buf) {
    return testing::RunVolumeIo(pool_reactor_.get(), v, op, off, len, buf).result;
  }
  std::string path_;
  std::unique_ptr<Reactor> pool_reactor_;
  std::unique_ptr<Reactor> owner_;
  std::unique_ptr<Pool> pool_;
  std::unique_ptr<IoBackend> channel_;
  std::unique_ptr<Recorder> rec_;
};

TEST_F(OwnedIoTest, VolumesAreSpreadOverTheReactorsLeastLoadedFirst) {
  auto a = pool_->CreateVolume("a", 1 << 20);
  auto b = pool_->CreateVolume("b", 1 << 20);
  auto c = pool_->CreateVolume("c", 1 << 20);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a.value()->owner(), pool_reactor_.get());
  EXPECT_EQ(b.value()->owner(), owner_.get());
  EXPECT_EQ(c.value()->owner(), pool_reactor_.get());
  EXPECT_EQ(b.value()->owner_index(), 1u);
  // A deleted volume's reactor is the least loaded again.
  ASSERT_TRUE(pool_->DeleteVolume("b").ok());
  auto d = pool_->CreateVolume("d", 1 << 20);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d.value()->owner(), owner_.get());
  EXPECT_FALSE(pool_->SetVolumeReactors({nullptr}).ok());
  EXPECT_FALSE(
      pool_->SetVolumeReactors(std::vector<Reactor*>(Pool::kVolumeReactorsMax + 1, owner_.get()))
          .ok());
}

TEST_F(OwnedIoTest, TheOwnerServesItsVolumeAndAsksThePoolOnlyForChunksUnmapsAndCommits) {
  auto va = pool_->CreateVolume("a", 1 << 20);
  ASSERT_TRUE(va.ok());
  Volume* a = va.value();
  Buf one(8192), two(4096), got(8192), chunk(kChunk);
  one.Fill(1);
  two.Fill(2);

  // A write into a hole: one message (a chunk), then the data on the owner's channel.
  uint64_t m = Messages(), ios = rec_->ios;
  ASSERT_EQ(Owned(a, IoOp::kWrite, 0, 8192, one.p), 0);
  EXPECT_EQ(Messages(), m + 1);
  EXPECT_EQ(rec_->ios, ios + 1);
  EXPECT_EQ(rec_->last_flags, 0);
  ASSERT_EQ(OnPool(a, IoOp::kRead, 0, 8192, got.p), 0);
  EXPECT_TRUE(got.Same(one)) << "the pool's reactor does not see the owner's write";
  // Reads and writes of allocated space need no message.
  m = Messages();
  ASSERT_EQ(Owned(a, IoOp::kWrite, 4096, 4096, two.p), 0);
  std::memset(got.p, 0, got.n);
  ASSERT_EQ(Owned(a, IoOp::kRead, 0, 8192, got.p), 0);
  EXPECT_TRUE(got.Same(one) == false);
  EXPECT_EQ(std::memcmp(got.p, one.p, 4096), 0);
  EXPECT_EQ(std::memcmp(got.p + 4096, two.p, 4096), 0);
  EXPECT_EQ(Messages(), m);
  // A read of a hole is answered with zeros, with no I/O and no message.
  ios = rec_->ios;
  std::memset(got.p, 0xee, got.n);
  ASSERT_EQ(Owned(a, IoOp::kRead, 3 * kChunk, 8192, got.p), 0);
  EXPECT_TRUE(got.Zero());
  EXPECT_EQ(rec_->ios, ios);
  EXPECT_EQ(Messages(), m);

  // FUA into a new chunk: a chunk, the FUA write, then a commit for the allocation.
  ASSERT_EQ(Owned(a, IoOp::kWrite, kChunk, 4096, two.p, kIoFua), 0);
  EXPECT_EQ(Messages(), m + 2);
  EXPECT_EQ(rec_->last_flags & kIoFua, kIoFua);
  // FUA into a chunk whose allocation is durable: no message.
  ASSERT_EQ(Owned(a, IoOp::kWrite, kChunk, 4096, two.p, kIoFua), 0);
  EXPECT_EQ(Messages(), m + 2);
  // FLUSH: a commit.
  ASSERT_EQ(Owned(a, IoOp::kFlush, 0, 0, nullptr), 0);
  EXPECT_EQ(Messages(), m + 3);

  // Trim of a whole chunk: unmapped by the pool; it reads as zeros and its space comes back.
  const uint64_t free0 = pool_->stats().chunks_free;
  m = Messages();
  ASSERT_EQ(Owned(a, IoOp::kDiscard, 0, kChunk, nullptr), 0);
  EXPECT_EQ(Messages(), m + 1);
  std::vector<Extent> ext;
  Status st;
  ASSERT_TRUE(a->MapRangeOwned(0, 2 * kChunk, 8, &ext, &st));
  ASSERT_TRUE(st.ok());
  ASSERT_EQ(ext.size(), 2u);
  EXPECT_EQ(ext[0].kind, ExtentKind::kHole);
  EXPECT_EQ(ext[1].kind, ExtentKind::kData);
  std::memset(got.p, 0xee, got.n);
  ASSERT_EQ(Owned(a, IoOp::kRead, 0, 8192, got.p), 0);
  EXPECT_TRUE(got.Zero());
  ASSERT_TRUE(pool_->SyncAll().ok());
  for (int i = 0; i < 200 && pool_->stats().chunks_free != free0 + 1; ++i) {
    pool_reactor_->RunOnce(1'000'000);
    ASSERT_TRUE(pool_->SyncAll().ok());
  }
  EXPECT_EQ(pool_->stats().chunks_free, free0 + 1);

  // Part of a chunk: zeroed in place by the owner, no message; the rest stays.
  chunk.Fill(3);
  ASSERT_EQ(Owned(a, IoOp::kWrite, 2 * kChunk, kChunk, chunk.p), 0);
  m = Messages();
  ios = rec_->ios;
  ASSERT_EQ(Owned(a, IoOp::kWriteZeroes, 2 * kChunk + 4096, 8192, nullptr), 0);
  EXPECT_EQ(Messages(), m);
  EXPECT_EQ(rec_->ios, ios + 1);
  Buf back(kChunk);
  ASSERT_EQ(OnPool(a, IoOp::kRead, 2 * kChunk, kChunk, back.p), 0);
  EXPECT_EQ(std::memcmp(back.p, chunk.p, 4096), 0);
  EXPECT_TRUE(back.Zero(4096, 8192));
  EXPECT_EQ(std::memcmp(back.p + 12288, chunk.p + 12288, kChunk - 12288), 0);
  // Write-zeroes of a whole chunk that must stay allocated (NO_HOLE): in place, known zero.
  ASSERT_EQ(Owned(a, IoOp::kWriteZeroes, 2 * kChunk, kChunk, nullptr, kIoNoUnmap), 0);
  EXPECT_EQ(Messages(), m);
  ext.clear();
  ASSERT_TRUE(a->MapRangeOwned(2 * kChunk, kChunk, 8, &ext, &st));
  ASSERT_EQ(ext.size(), 1u);
  EXPECT_EQ(ext[0].kind, ExtentKind::kZero);

  // Refused, as on the pool's reactor.
  EXPECT_EQ(Owned(a, IoOp::kRead, 1 << 20, 4096, got.p), -EINVAL);
  EXPECT_EQ(Owned(a, IoOp::kWrite, (1 << 20) - 4096, 8192, got.p), -ENOSPC);
  // Not taken: unaligned (the pool's exclusive mode does those), no channel.
  OwnedIo rio;
  EXPECT_FALSE(rio.Start(a, rec_.get(), owner_.get(), IoOp::kRead, 512, 512, got.p));
  EXPECT_FALSE(rio.Start(a, nullptr, owner_.get(), IoOp::kRead, 0, 4096, got.p));
}

TEST_F(OwnedIoTest, AControlOperationClosesTheOwnersPathAndWaitsForItsRequests) {
  auto va = pool_->CreateVolume("a", 1 << 20);
  ASSERT_TRUE(va.ok());
  Volume* a = va.value();
  Buf w(4096), got(4096);
  w.Fill(5);
  // A write into a hole: its chunk request goes to the pool, whose answer the owner has not
  // taken yet (only the pool's reactor runs below).
  OwnedIo first;
  ASSERT_TRUE(first.Start(a, rec_.get(), owner_.get(), IoOp::kWrite, 0, 4096, w.p));
  bool grown = false;
  Status grow_status;
  pool_->ResizeVolumeAsync("a", 2 << 20, [&](Status s) {
    grow_status = s;
    grown = true;
  });
  for (int i = 0; i < 50; ++i) pool_reactor_->RunOnce(100'000);
  EXPECT_FALSE(grown) << "the resize did not wait for the owner's request";
  EXPECT_EQ(a->size_bytes(), 1u << 20);
  // Closed meanwhile: a new request is not taken (the caller hands it to the pool's reactor).
  OwnedIo second;
  EXPECT_FALSE(second.Start(a, rec_.get(), owner_.get(), IoOp::kRead, 0, 4096, got.p));
  // The owner finishes its request; the resize goes on and reopens the path.
  ASSERT_EQ(Wait(&first), 0);
  for (int i = 0; i < 20000 && !grown; ++i) {
    owner_->RunOnce(0);
    pool_reactor_->RunOnce(100'000);
  }
  ASSERT_TRUE(grown);
  EXPECT_TRUE(grow_status.ok()) << grow_status.ToString();
  EXPECT_EQ(a->size_bytes(), 2u << 20);
  ASSERT_EQ(Owned(a, IoOp::kRead, 0, 4096, got.p), 0);
  EXPECT_TRUE(got.Same(w));
  ASSERT_EQ(Owned(a, IoOp::kWrite, (2 << 20) - 4096, 4096, w.p), 0);  // in the new space
}

TEST_F(OwnedIoTest, AControlOperationThatCannotDrainTheOwnersPathFailsAndRestores) {
  auto va = pool_->CreateVolume("a", 1 << 20);
  ASSERT_TRUE(va.ok());
  Volume* a = va.value();
  Pool::ControlTimeouts t;
  t.remote_drain_ns = 50'000'000;
  pool_->set_control_timeouts(t);
  Buf w(4096), got(4096);
  w.Fill(6);
  // A request the owner does not finish (its reactor does not run) holds the path open.
  OwnedIo stuck;
  ASSERT_TRUE(stuck.Start(a, rec_.get(), owner_.get(), IoOp::kWrite, 0, 4096, w.p));
  bool grown = false;
  Status grow_status;
  pool_->ResizeVolumeAsync("a", 2 << 20, [&](Status s) {
    grow_status = s;
    grown = true;
  });
  const uint64_t give_up = MonotonicNs() + 5'000'000'000ull;
  while (!grown && MonotonicNs() < give_up) pool_reactor_->RunOnce(1'000'000);
  ASSERT_TRUE(grown) << "the drain was not bounded";
  EXPECT_EQ(grow_status.code(), StatusCode::kFailedPrecondition) << grow_status.ToString();
  // As before the operation: the old size, and the path open again.
  EXPECT_EQ(a->size_bytes(), 1u << 20);
  ASSERT_EQ(Wait(&stuck), 0);
  ASSERT_EQ(Owned(a, IoOp::kRead, 0, 4096, got.p), 0);
  EXPECT_TRUE(got.Same(w));
  // With the owner done, the same resize succeeds.
  EXPECT_TRUE(pool_->ResizeVolume("a", 2 << 20).ok());
}

TEST_F(OwnedIoTest, AFullPoolWaitsForTrimmedSpaceInsteadOfFailing) {
  // A volume larger than the pool: written chunk by chunk on the owner's path until ENOSPC.
  auto va = pool_->CreateVolume("a", 64ull << 20);
  ASSERT_TRUE(va.ok());
  Volume* a = va.value();
  Buf data(kChunk);
  data.Fill(9);
  uint64_t written = 0;
  int32_t r = 0;
  for (; written < 1024; ++written) {
    r = Owned(a, IoOp::kWrite, written * kChunk, kChunk, data.p);
    if (r != 0) break;
  }
  ASSERT_EQ(r, -ENOSPC) << "the pool never filled";
  ASSERT_GT(written, 100u);
  ASSERT_TRUE(pool_->SyncAll().ok());
  // A trim, and at once a write that needs a chunk: it waits for the trimmed one.
  ASSERT_EQ(Owned(a, IoOp::kDiscard, 0, kChunk, nullptr), 0);
  EXPECT_EQ(Owned(a, IoOp::kWrite, written * kChunk, kChunk, data.p), 0);
  // Nothing left to reclaim: ENOSPC at once.
  EXPECT_EQ(Owned(a, IoOp::kWrite, (written + 1) * kChunk, kChunk, data.p), -ENOSPC);
}

TEST_F(OwnedIoTest, OwnerThreadAndPoolThreadRaceOnMapsSizesAndChunks) {
  // The owner's reactor runs on a thread of its own: it writes into holes, reads back, trims
  // whole chunks and flushes on `a`, while the pool's reactor (this thread) answers its
  // messages and meanwhile grows `a` (the owner's path closes and drains) and churns `b`. Under
  // TSan a race is an error; a read-back that differs is a failure here.
  rec_.reset();
  channel_.reset();
  auto va = pool_->CreateVolume("a", 1 << 20);
  auto vb = pool_->CreateVolume("b", 1 << 20);
  ASSERT_TRUE(va.ok() && vb.ok());
  Volume* a = va.value();
  Volume* b = vb.value();
  std::atomic<bool> done{false}, stopped{false};
  std::atomic<uint64_t> ok{0}, refused{0}, mismatches{0}, failures{0};
  std::string thread_error;
  std::thread t([&] {
    auto rc = testing::OpenReactorWithChannel(pool_.get());
    if (!rc.ok()) {
      thread_error = rc.status().ToString();
      done = true;
      return;
    }
    std::unique_ptr<Reactor> reactor = std::move(rc.value().reactor);
    std::unique_ptr<IoBackend> channel = std::move(rc.value().channel);
    Buf w(8192), got(8192);
    OwnedIo rio;
    auto run = [&](IoOp op, uint64_t off, uint32_t len, void* buf) -> int32_t {
      for (int tries = 0; tries < 1000; ++tries) {
        if (rio.Start(a, channel.get(), reactor.get(), op, off, len, buf)) {
          for (int i = 0; i < 2000000 && !rio.done; ++i) reactor->RunOnce(100'000);
          return rio.done ? rio.io.result : -ETIMEDOUT;
        }
        ++refused;  // closed while the pool resizes: try again shortly
        reactor->RunOnce(100'000);
      }
      return -EAGAIN;
    };
    for (uint32_t i = 0; i < 600; ++i) {
      const uint64_t c = i % 8;
      const uint64_t off = c * kChunk + uint64_t(i % 7) * 4096;
      w.Fill(i);
      if (run(IoOp::kWrite, off, 8192, w.p) != 0) ++failures;
      if (run(IoOp::kRead, off, 8192, got.p) != 0) ++failures;
      if (!got.Same(w)) ++mismatches;
      if (i % 3 == 0) {
        if (run(IoOp::kDiscard, c * kChunk, kChunk, nullptr) != 0) ++failures;
        if (run(IoOp::kRead, off, 8192, got.p) != 0) ++failures;
        if (!got.Zero()) ++mismatches;
      }
      if (i % 50 == 0 && run(IoOp::kFlush, 0, 0, nullptr) != 0) ++failures;
      ++ok;
    }
    channel.reset();
    done = true;
    // Destroy the reactor only once the pool's reactor has stopped turning: a Post to it may
    // still be writing its wake-up after the task it carried ran.
    while (!stopped.load()) std::this_thread::yield();
  });
  Buf churn(kChunk);
  int i = 0;
  const uint64_t deadline = MonotonicNs() + 60'000'000'000ull;
  while (!done.load() && MonotonicNs() < deadline) {
    if (i < 400) {
      churn.Fill(100 + i);
      const uint64_t off = uint64_t(8 + i % 8) * kChunk;
      EXPECT_EQ(OnPool(b, IoOp::kWrite, off, kChunk, churn.p), 0);
      EXPECT_EQ(OnPool(b, IoOp::kDiscard, off, kChunk, nullptr), 0);
      if (i % 40 == 0) {
        EXPECT_TRUE(pool_->ResizeVolume("a", (1 << 20) + uint64_t(i / 40 + 1) * kChunk).ok());
      }
      ++i;
    }
    pool_reactor_->RunOnce(100'000);
  }
  stopped = true;
  t.join();
  ASSERT_EQ(thread_error, "");
  EXPECT_TRUE(done.load()) << "the owner thread did not finish in 60 s";
  EXPECT_EQ(failures.load(), 0u);
  EXPECT_EQ(mismatches.load(), 0u);
  EXPECT_EQ(ok.load(), 600u);
  EXPECT_GT(i, 10);
  ASSERT_TRUE(pool_->SyncAll().ok());
}

}  // namespace
}  // namespace spd
