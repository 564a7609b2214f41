// Volume::SubmitRemote: a connection's own reactor running reads and plain writes on a channel
// of the pool's backend, and the pins that keep a chunk from being zeroed and reused under it.
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

struct Buf {
  explicit Buf(size_t n) : n(n), p(static_cast<uint8_t*>(std::aligned_alloc(4096, n))) {
    std::memset(p, 0, n);
  }
  ~Buf() { std::free(p); }
  void Fill(uint32_t seed) {
    std::mt19937 rng(seed);
    for (size_t i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(rng());
  }
  bool Same(const Buf& o) const { return n == o.n && std::memcmp(p, o.p, n) == 0; }
  bool Zero() const {
    for (size_t i = 0; i < n; ++i)
      if (p[i]) return false;
    return true;
  }
  size_t n;
  uint8_t* p;
};

// A channel that remembers the flags of the last I/O it was given.
class Recorder : public ForwardingBackend {
 public:
  explicit Recorder(IoBackend* inner) : ForwardingBackend(inner) {}
  const char* name() const override { return "recorder"; }
  void Submit(BackendIo* io) override {
    last_flags = io->flags;
    inner_->Submit(io);
  }
  uint8_t last_flags = 0xff;
};

// One request on the remote path; `started` says whether SubmitRemote took it.
struct RemoteIo {
  VolumeIo io;
  bool started = false;
  bool done = false;
  bool Start(Volume* v, IoBackend* channel, IoOp op, uint64_t off, Buf* buf, uint8_t flags = 0,
             uint32_t len = 0) {
    io.op = op;
    io.offset_bytes = off;
    io.length_bytes = len ? len : static_cast<uint32_t>(buf->n);
    io.buf = buf->p;
    io.flags = flags;
    io.ctx = &done;
    io.done = [](VolumeIo* d) { *static_cast<bool*>(d->ctx) = true; };
    done = false;
    started = v->SubmitRemote(&io, channel);
    return started;
  }
  int32_t Wait(Reactor* r) {
    for (int i = 0; i < 100000 && !done; ++i) r->RunOnce(1'000'000);
    return done ? io.result : -ETIMEDOUT;
  }
};

class RemoteIoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = "/dev/shm/spd-remote-io-test-" + std::to_string(getpid()) + ".img";
    unlink(path_.c_str());
    auto o = Reactor::Create(ReactorOptions{});
    ASSERT_TRUE(o.ok());
    owner_ = std::move(o).value();
    if (owner_->engine() != ReactorEngine::kUring) GTEST_SKIP() << "io_uring unavailable";
    auto r = Reactor::Create(ReactorOptions{});
    ASSERT_TRUE(r.ok());
    remote_ = std::move(r).value();
    auto p = testing::CreateShmUringPool(owner_.get(), path_, 32ull << 20, kChunk);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    pool_ = std::move(p).value();
  }
  void TearDown() override {
    pool_.reset();
    unlink(path_.c_str());
  }
  int32_t Do(Volume* v, IoOp op, uint64_t off, Buf* buf, uint32_t len = 0) {
    auto r =
        testing::RunVolumeIo(owner_.get(), v, op, off, len ? len : buf->n, buf ? buf->p : nullptr);
    EXPECT_FALSE(r.completed_inside_submit);
    return r.result;
  }
  std::string path_;
  std::unique_ptr<Reactor> owner_;
  std::unique_ptr<Reactor> remote_;
  std::unique_ptr<Pool> pool_;
};

TEST_F(RemoteIoTest, ReadsAndWritesOfAllocatedSpaceRunOnTheChannel) {
  auto ch = pool_->backend()->OpenChannel(remote_.get());
  ASSERT_TRUE(ch.ok()) << ch.status().ToString();
  std::unique_ptr<IoBackend> channel = std::move(ch).value();
  Recorder rec(channel.get());
  auto va = pool_->CreateVolume("a", 1 << 20);
  auto vs = pool_->CreateVolume("s", 1 << 20, Durability::kSync);
  ASSERT_TRUE(va.ok() && vs.ok());
  Volume* a = va.value();
  Volume* s = vs.value();
  const uint64_t ok0 = CounterValue("spd_volume_remote_requests_total");
  const uint64_t fb0 = CounterValue("spd_volume_remote_fallbacks_total");

  Buf one(4096), two(4096), got(4096);
  one.Fill(1);
  two.Fill(2);
  RemoteIo rio;
  EXPECT_FALSE(rio.Start(a, channel.get(), IoOp::kWrite, 0, &one));  // a hole: allocation
  ASSERT_EQ(Do(a, IoOp::kWrite, 0, &one), 0);                        // the pool allocates
  ASSERT_TRUE(rio.Start(a, &rec, IoOp::kWrite, 0, &two));
  EXPECT_FALSE(rio.done) << "completed inside SubmitRemote";
  ASSERT_EQ(rio.Wait(remote_.get()), 0);
  EXPECT_EQ(rec.last_flags, 0);  // a plain write stays plain
  ASSERT_EQ(Do(a, IoOp::kRead, 0, &got), 0);
  EXPECT_TRUE(got.Same(two)) << "the pool does not see the channel's write";
  std::memset(got.p, 0, got.n);
  ASSERT_TRUE(rio.Start(a, channel.get(), IoOp::kRead, 0, &got));
  ASSERT_EQ(rio.Wait(remote_.get()), 0);
  EXPECT_TRUE(got.Same(two));

  // FUA into a chunk whose allocation is not durable yet needs a commit: the pool's reactor.
  EXPECT_FALSE(rio.Start(a, &rec, IoOp::kWrite, 0, &one, kIoFua));
  ASSERT_TRUE(pool_->SyncAll().ok());
  ASSERT_TRUE(rio.Start(a, &rec, IoOp::kWrite, 0, &one, kIoFua));  // allocation durable now
  ASSERT_EQ(rio.Wait(remote_.get()), 0);
  EXPECT_EQ(rec.last_flags & kIoFua, kIoFua) << "a FUA write lost its FUA on the channel";
  Buf span(8192);
  EXPECT_FALSE(rio.Start(a, &rec, IoOp::kRead, kChunk - 4096, &span));  // half a hole
  EXPECT_FALSE(rio.Start(a, &rec, IoOp::kRead, 1 << 20, &got));         // past the end
  EXPECT_FALSE(rio.Start(a, &rec, IoOp::kFlush, 0, &got));
  EXPECT_FALSE(rio.Start(a, nullptr, IoOp::kRead, 0, &got));  // no channel
  // A sync volume commits each allocation before the write completes; its later writes are
  // FUA writes into durable chunks.
  ASSERT_EQ(Do(s, IoOp::kWrite, 0, &one), 0);
  ASSERT_TRUE(rio.Start(s, &rec, IoOp::kWrite, 0, &two));
  ASSERT_EQ(rio.Wait(remote_.get()), 0);
  EXPECT_EQ(rec.last_flags & kIoFua, kIoFua) << "a sync volume's write lost its FUA";
  ASSERT_TRUE(rio.Start(s, &rec, IoOp::kRead, 0, &got));
  ASSERT_EQ(rio.Wait(remote_.get()), 0);
  EXPECT_TRUE(got.Same(two));
  EXPECT_EQ(rec.last_flags, 0);

  EXPECT_EQ(CounterValue("spd_volume_remote_requests_total") - ok0, 5u);
  // The hole, FUA before the commit, half a hole, past the end (a flush and a missing channel
  // are no candidates).
  EXPECT_EQ(CounterValue("spd_volume_remote_fallbacks_total") - fb0, 4u);
  channel.reset();
}

TEST_F(RemoteIoTest, AChunkFreedUnderARemoteReadIsNotZeroedUntilTheReadEnds) {
  auto ch = pool_->backend()->OpenChannel(remote_.get());
  ASSERT_TRUE(ch.ok());
  std::unique_ptr<IoBackend> channel = std::move(ch).value();
  auto va = pool_->CreateVolume("a", 1 << 20);
  ASSERT_TRUE(va.ok());
  Volume* a = va.value();
  Buf data(kChunk), got(kChunk);
  data.Fill(7);
  ASSERT_EQ(Do(a, IoOp::kWrite, 0, &data), 0);
  ASSERT_TRUE(pool_->SyncAll().ok());
  const uint64_t free0 = pool_->stats().chunks_free;
  const uint64_t pinned0 = CounterValue("spd_pool_remote_pinned_frees_total");

  // The read's SQE waits in the remote reactor's ring until that reactor runs.
  RemoteIo rio;
  ASSERT_TRUE(rio.Start(a, channel.get(), IoOp::kRead, 0, &got));
  ASSERT_EQ(Do(a, IoOp::kDiscard, 0, nullptr, kChunk), 0);  // unmaps the chunk under the read
  EXPECT_EQ(CounterValue("spd_pool_remote_pinned_frees_total") - pinned0, 1u);
  // Give the pool every chance to zero the chunk (it must not while the read pins it).
  for (int i = 0; i < 20; ++i) owner_->RunOnce(1'000'000);
  ASSERT_EQ(rio.Wait(remote_.get()), 0);
  EXPECT_TRUE(got.Same(data)) << (got.Zero() ? "read zeros: the chunk was punched under the read"
                                             : "read other data");
  // Unpinned, the chunk is zeroed and handed back (the wait timer looks again every 200 µs).
  for (int i = 0; i < 200 && pool_->stats().chunks_free != free0 + 1; ++i) {
    owner_->RunOnce(1'000'000);
    ASSERT_TRUE(pool_->SyncAll().ok());
  }
  EXPECT_EQ(pool_->stats().chunks_free, free0 + 1);
  channel.reset();
}

TEST_F(RemoteIoTest, ConcurrentRemoteTrafficWhileThePoolResizesAndChurns) {
  // A reactor thread of its own does remote writes and read-backs on chunks 0..3 of `a` while
  // the pool's reactor grows `a` (map_ reallocated: the remote path is closed meanwhile) and
  // allocates, writes and frees other chunks. Under ASan a reader of a stale map_ is an error;
  // a read-back that differs from what the same thread wrote is a failure here.
  auto va = pool_->CreateVolume("a", 1 << 20);
  auto vb = pool_->CreateVolume("b", 1 << 20);
  ASSERT_TRUE(va.ok() && vb.ok());
  Volume* a = va.value();
  Volume* b = vb.value();
  Buf seed(kChunk);
  seed.Fill(1);
  for (int c = 0; c < 4; ++c) ASSERT_EQ(Do(a, IoOp::kWrite, uint64_t(c) * kChunk, &seed), 0);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> remote_ok{0}, remote_refused{0}, mismatches{0};
  std::string thread_error;
  std::thread t([&] {
    auto rc = testing::OpenReactorWithChannel(pool_.get());
    if (!rc.ok()) {
      thread_error = rc.status().ToString();
      return;
    }
    std::unique_ptr<Reactor> reactor = std::move(rc.value().reactor);
    std::unique_ptr<IoBackend> channel = std::move(rc.value().channel);
    Buf w(4096), got(4096);
    RemoteIo rio;
    for (uint32_t i = 0; i < 20000 && !stop.load(); ++i) {
      const uint64_t off = uint64_t(i % 4) * kChunk + uint64_t(i % 16) * 4096;
      w.Fill(i);
      if (!rio.Start(a, channel.get(), IoOp::kWrite, off, &w)) {
        ++remote_refused;
        continue;
      }
      if (rio.Wait(reactor.get()) != 0) ++mismatches;
      if (!rio.Start(a, channel.get(), IoOp::kRead, off, &got)) {
        ++remote_refused;
        continue;
      }
      if (rio.Wait(reactor.get()) != 0 || !got.Same(w)) ++mismatches;
      ++remote_ok;
    }
    channel.reset();
  });
  Buf churn(kChunk);
  const uint64_t end = MonotonicNs() + 2'000'000'000ull;
  for (int i = 0; i < 400 && MonotonicNs() < end; ++i) {
    churn.Fill(100 + i);
    const uint64_t off = uint64_t(8 + i % 8) * kChunk;
    EXPECT_EQ(Do(a, IoOp::kWrite, off, &churn), 0);
    EXPECT_EQ(Do(b, IoOp::kWrite, off, &churn), 0);
    EXPECT_EQ(Do(a, IoOp::kDiscard, off, nullptr, kChunk), 0);
    EXPECT_EQ(Do(b, IoOp::kDiscard, off, nullptr, kChunk), 0);
    if (i % 20 == 0) {
      EXPECT_TRUE(pool_->ResizeVolume("a", (1 << 20) + uint64_t(i / 20 + 1) * kChunk).ok());
    }
    owner_->RunOnce(0);
  }
  stop = true;
  // The thread may need the pool's reactor no more, but keep it turning until the thread ends.
  while (remote_ok.load() + remote_refused.load() == 0 && thread_error.empty())
    owner_->RunOnce(1'000'000);
  t.join();
  ASSERT_EQ(thread_error, "");
  EXPECT_EQ(mismatches.load(), 0u);
  EXPECT_GT(remote_ok.load(), 0u);
  ASSERT_TRUE(pool_->SyncAll().ok());
}

}  // namespace
}  // namespace spd
