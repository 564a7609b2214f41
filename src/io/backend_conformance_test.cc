// The same tests against every backend: uring, posix (on an io_uring and on an epoll reactor)
// and sim. A new backend joins by adding a row to kCases.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "common/counters.h"
#include "io/io_backend.h"
#include "io/sim_backend.h"

namespace spd {
namespace {

constexpr uint64_t kSize = 64ull << 20;

struct Case {
  const char* name;
  BackendKind kind;
  bool epoll;
  bool inline_memory_io = true;  // the file is in /dev/shm (tmpfs): see BackendOptions
};
const Case kCases[] = {{"uring", BackendKind::kUring, false},
                       {"uring_ring", BackendKind::kUring, false, false},
                       {"posix", BackendKind::kPosix, false},
                       {"posix_workers", BackendKind::kPosix, false, false},
                       {"posix_epoll", BackendKind::kPosix, true},
                       {"sim", BackendKind::kSim, false}};

struct AlignedBuf {
  explicit AlignedBuf(size_t n) : size(n) {
    void* p = nullptr;
    EXPECT_EQ(posix_memalign(&p, 4096, n), 0);
    data = static_cast<uint8_t*>(p);
    std::memset(data, 0, n);
  }
  ~AlignedBuf() { std::free(data); }
  uint8_t* data;
  size_t size;
};

class BackendConformance : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    ReactorOptions ro;
    ro.force_epoll = GetParam().epoll;
    auto r = Reactor::Create(ro);
    ASSERT_TRUE(r.ok());
    reactor_ = std::move(r).value();
    path_ = "/dev/shm/spd-conf-" + std::to_string(getpid()) + "-" + GetParam().name;
    unlink(path_.c_str());
    BackendOptions o;
    o.kind = GetParam().kind;
    o.path = path_;
    o.size_bytes = kSize;
    o.create = true;
    o.queue_depth_max = 8;
    o.inline_memory_writes = GetParam().inline_memory_io;
    o.inline_memory_reads = GetParam().inline_memory_io;
    auto b = OpenBackend(o, reactor_.get());
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    backend_ = std::move(b).value();
  }
  void TearDown() override {
    backend_.reset();
    unlink(path_.c_str());
  }

  // Runs ios to completion; returns their results.
  std::vector<int32_t> Run(std::vector<BackendIo>& ios) {
    int pending = static_cast<int>(ios.size());
    for (auto& io : ios) {
      io.ctx = &pending;
      io.done = [](BackendIo* d) { --*static_cast<int*>(d->ctx); };
      backend_->Submit(&io);
    }
    for (int i = 0; i < 10000 && pending > 0; ++i) reactor_->RunOnce(100'000'000);
    EXPECT_EQ(pending, 0);
    std::vector<int32_t> res;
    for (auto& io : ios) res.push_back(io.result);
    return res;
  }
  int32_t One(IoOp op, uint64_t off, uint32_t len, void* buf, uint8_t flags = 0) {
    std::vector<BackendIo> ios(1);
    ios[0].op = op;
    ios[0].offset_bytes = off;
    ios[0].length_bytes = len;
    ios[0].buf = buf;
    ios[0].flags = flags;
    return Run(ios)[0];
  }

  std::unique_ptr<Reactor> reactor_;
  std::unique_ptr<IoBackend> backend_;
  std::string path_;
};

void FillPattern(uint8_t* p, size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(rng());
}

TEST_P(BackendConformance, ReportsItself) {
  EXPECT_EQ(backend_->size_bytes(), kSize);
  EXPECT_STREQ(backend_->name(), BackendKindName(GetParam().kind));
  EXPECT_GE(backend_->alignment_bytes(), 1u);
}

TEST_P(BackendConformance, NeverWrittenReadsZeros) {
  AlignedBuf b(1 << 20);
  std::memset(b.data, 0xEE, b.size);
  EXPECT_EQ(One(IoOp::kRead, 8 << 20, 1 << 20, b.data), 1 << 20);
  for (size_t i = 0; i < b.size; ++i) ASSERT_EQ(b.data[i], 0) << i;
}

TEST_P(BackendConformance, WriteThenReadBack) {
  AlignedBuf w(256 * 1024), r(256 * 1024);
  FillPattern(w.data, w.size, 1);
  EXPECT_EQ(One(IoOp::kWrite, 4096 * 3, 256 * 1024, w.data), 256 * 1024);
  EXPECT_EQ(One(IoOp::kFlush, 0, 0, nullptr), 0);
  EXPECT_EQ(One(IoOp::kRead, 4096 * 3, 256 * 1024, r.data), 256 * 1024);
  EXPECT_EQ(std::memcmp(w.data, r.data, w.size), 0);
  // FUA write is readable too.
  FillPattern(w.data, 4096, 2);
  EXPECT_EQ(One(IoOp::kWrite, 0, 4096, w.data, kIoFua), 4096);
  EXPECT_EQ(One(IoOp::kRead, 0, 4096, r.data), 4096);
  EXPECT_EQ(std::memcmp(w.data, r.data, 4096), 0);
}

TEST_P(BackendConformance, DiscardAndWriteZeroesReadZeros) {
  AlignedBuf w(1 << 20), r(1 << 20);
  FillPattern(w.data, w.size, 3);
  ASSERT_EQ(One(IoOp::kWrite, 16 << 20, 1 << 20, w.data), 1 << 20);
  ASSERT_EQ(One(IoOp::kWriteZeroes, (16 << 20) + 65536, 65536, nullptr, kIoNoUnmap), 65536);
  ASSERT_EQ(One(IoOp::kWriteZeroes, (16 << 20) + 262144, 65536, nullptr), 65536);
  if (backend_->discard_zeroes()) {
    ASSERT_EQ(One(IoOp::kDiscard, (16 << 20) + 524288, 65536, nullptr, kIoFua), 65536);
  }
  ASSERT_EQ(One(IoOp::kRead, 16 << 20, 1 << 20, r.data), 1 << 20);
  for (size_t i = 0; i < r.size; ++i) {
    bool zero = (i >= 65536 && i < 131072) || (i >= 262144 && i < 327680) ||
                (backend_->discard_zeroes() && i >= 524288 && i < 589824);
    ASSERT_EQ(r.data[i], zero ? 0 : w.data[i]) << "byte " << i;
  }
}

TEST_P(BackendConformance, ManyConcurrentIosBeyondTheQueueLimit) {
  // 64 writes with queue_depth_max 8: most wait inside the backend; all must complete.
  constexpr int kIos = 64;
  std::vector<std::unique_ptr<AlignedBuf>> bufs;
  std::vector<BackendIo> ios(kIos);
  for (int i = 0; i < kIos; ++i) {
    bufs.push_back(std::make_unique<AlignedBuf>(8192));
    FillPattern(bufs.back()->data, 8192, 100 + i);
    ios[i].op = IoOp::kWrite;
    ios[i].offset_bytes = static_cast<uint64_t>(i) * 65536;
    ios[i].length_bytes = 8192;
    ios[i].buf = bufs.back()->data;
  }
  for (int32_t r : Run(ios)) EXPECT_EQ(r, 8192);
  EXPECT_EQ(backend_->stats().inflight, 0u);
  EXPECT_EQ(backend_->stats().completed, static_cast<uint64_t>(kIos));
  AlignedBuf r(8192);
  for (int i = 0; i < kIos; i += 7) {
    ASSERT_EQ(One(IoOp::kRead, static_cast<uint64_t>(i) * 65536, 8192, r.data), 8192);
    EXPECT_EQ(std::memcmp(r.data, bufs[i]->data, 8192), 0) << i;
  }
}

TEST_P(BackendConformance, RegisteredBuffers) {
  AlignedBuf w(64 * 1024), r(64 * 1024);
  iovec iov[2] = {{w.data, w.size}, {r.data, r.size}};
  Status s = backend_->RegisterBuffers(iov, 2);
  if (s.code() == StatusCode::kUnimplemented) GTEST_SKIP() << s.ToString();
  ASSERT_TRUE(s.ok()) << s.ToString();
  const uint64_t fixed_before = CounterValue("spd_io_uring_fixed_buffer_ios_total");
  const uint64_t inline_before = CounterValue("spd_io_uring_inline_writes_total");
  const uint64_t inline_reads_before = CounterValue("spd_io_uring_inline_reads_total");
  FillPattern(w.data, w.size, 21);
  std::vector<BackendIo> ios(1);
  ios[0].op = IoOp::kWrite;
  ios[0].offset_bytes = 3 << 20;
  ios[0].length_bytes = 32768;
  ios[0].buf = w.data + 4096;  // inside registered buffer 0, not at its start
  ios[0].buf_index = 0;
  ASSERT_EQ(Run(ios)[0], 32768);
  ios[0].op = IoOp::kRead;
  ios[0].buf = r.data;
  ios[0].buf_index = 1;
  ASSERT_EQ(Run(ios)[0], 32768);
  EXPECT_EQ(std::memcmp(r.data, w.data + 4096, 32768), 0);
  // On /dev/shm the write and the read are done inline (pwrite, pread) unless the case turns
  // that off; then both go through the ring on the registered buffers.
  const uint64_t inline_ios = GetParam().inline_memory_io ? 1 : 0;
  EXPECT_EQ(CounterValue("spd_io_uring_inline_writes_total"), inline_before + inline_ios);
  EXPECT_EQ(CounterValue("spd_io_uring_inline_reads_total"), inline_reads_before + inline_ios);
  EXPECT_EQ(CounterValue("spd_io_uring_fixed_buffer_ios_total"), fixed_before + 2 - 2 * inline_ios);
  EXPECT_TRUE(backend_->RegisterBuffers(nullptr, 0).ok());  // unregister
}

// On /dev/shm (tmpfs) reads and writes are copies done on the reactor thread unless the case
// turns that off; either way the data must round-trip.
TEST_P(BackendConformance, MemoryBackedReadsAndWritesInlineOrNot) {
  if (GetParam().kind == BackendKind::kSim) GTEST_SKIP() << "no file";
  const bool uring = GetParam().kind == BackendKind::kUring;
  const char* const names[] = {"spd_io_uring_inline_writes_total",
                               "spd_io_uring_inline_reads_total", "spd_io_posix_inline_ios_total"};
  uint64_t before[3];
  for (int i = 0; i < 3; ++i) before[i] = CounterValue(names[i]);
  AlignedBuf w(16384), r(16384);
  FillPattern(w.data, w.size, 33);
  ASSERT_EQ(One(IoOp::kWrite, 5 << 20, 16384, w.data), 16384);
  ASSERT_EQ(One(IoOp::kRead, 5 << 20, 16384, r.data), 16384);
  EXPECT_EQ(std::memcmp(w.data, r.data, w.size), 0);
  const uint64_t n = GetParam().inline_memory_io ? 1 : 0;
  EXPECT_EQ(CounterValue(names[0]) - before[0], uring ? n : 0);
  EXPECT_EQ(CounterValue(names[1]) - before[1], uring ? n : 0);
  EXPECT_EQ(CounterValue(names[2]) - before[2], uring ? 0 : 2 * n);
}

TEST_P(BackendConformance, SyncHelpers) {
  AlignedBuf w(8192), r(8192);
  FillPattern(w.data, w.size, 9);
  ASSERT_TRUE(backend_->WriteSync(1 << 20, w.data, w.size).ok());
  ASSERT_TRUE(backend_->FlushSync().ok());
  ASSERT_TRUE(backend_->ReadSync(1 << 20, r.data, r.size).ok());
  EXPECT_EQ(std::memcmp(w.data, r.data, w.size), 0);
  ASSERT_TRUE(backend_->DiscardSync(1 << 20, 8192).ok());
  if (backend_->discard_zeroes()) {
    ASSERT_TRUE(backend_->ReadSync(1 << 20, r.data, r.size).ok());
    for (size_t i = 0; i < r.size; ++i) ASSERT_EQ(r.data[i], 0);
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, BackendConformance, ::testing::ValuesIn(kCases),
                         [](const auto& info) { return std::string(info.param.name); });

// Sim-only behaviour: the models and the crash image.
class SimModels : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = Reactor::Create(ReactorOptions{});
    ASSERT_TRUE(r.ok());
    reactor_ = std::move(r).value();
  }
  std::unique_ptr<Reactor> reactor_;
};

TEST_F(SimModels, LatencyModelDelaysCompletions) {
  SimOptions o;
  o.latency_base_ns = 20'000'000;
  SimBackend sim(reactor_.get(), kSize, o);
  uint8_t buf[512];
  BackendIo io;
  io.op = IoOp::kRead;
  io.length_bytes = 512;
  io.buf = buf;
  bool done = false;
  io.ctx = &done;
  io.done = [](BackendIo* d) { *static_cast<bool*>(d->ctx) = true; };
  uint64_t start = MonotonicNs();
  sim.Submit(&io);
  while (!done) reactor_->RunOnce(100'000'000);
  EXPECT_GE(MonotonicNs() - start, 20'000'000u);
}

TEST_F(SimModels, ErrorRangesFailWithEio) {
  SimOptions o;
  o.error_ranges.push_back({1 << 20, 4096});
  SimBackend sim(reactor_.get(), kSize, o);
  uint8_t buf[4096] = {};
  BackendIo a, b;
  for (BackendIo* io : {&a, &b}) {
    io->op = IoOp::kWrite;
    io->length_bytes = 4096;
    io->buf = buf;
    io->done = [](BackendIo*) {};
  }
  a.offset_bytes = (1 << 20) - 2048;  // overlaps the bad range
  b.offset_bytes = 2 << 20;
  sim.Submit(&a);
  sim.Submit(&b);
  reactor_->RunOnce(0);
  EXPECT_EQ(a.result, -EIO);
  EXPECT_EQ(b.result, 4096);
}

TEST_F(SimModels, CrashImageKeepsFlushedDataAndMayDropTheRest) {
  SimBackend sim(reactor_.get(), kSize, SimOptions{});
  std::vector<uint8_t> one(4096, 1), two(4096, 2);
  ASSERT_TRUE(sim.WriteSync(0, one.data(), 4096).ok());
  ASSERT_TRUE(sim.FlushSync().ok());
  ASSERT_TRUE(sim.WriteSync(0, two.data(), 4096).ok());
  ASSERT_TRUE(sim.WriteSync(8192, two.data(), 4096).ok());
  int saw_old = 0, saw_new = 0, saw_torn = 0;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    CrashOptions co;
    co.torn_probability = 0.5;
    SimBackend crashed(reactor_.get(), sim.CrashImage(seed, co), SimOptions{});
    std::vector<uint8_t> got(4096);
    ASSERT_TRUE(crashed.ReadSync(0, got.data(), 4096).ok());
    int ones = 0, twos = 0;
    for (size_t s = 0; s < 4096; s += 512) {
      ASSERT_TRUE(got[s] == 1 || got[s] == 2);  // never garbage, never the never-written zero
      // Each 512-byte sector is whole.
      for (size_t i = s; i < s + 512; ++i) ASSERT_EQ(got[i], got[s]);
      (got[s] == 1 ? ones : twos)++;
    }
    if (twos == 0) saw_old++;
    if (ones == 0) saw_new++;
    if (ones && twos) saw_torn++;
  }
  EXPECT_GT(saw_old, 0);
  EXPECT_GT(saw_new, 0);
  EXPECT_GT(saw_torn, 0);
  // Same seed, same image.
  auto a = sim.CrashImage(42, CrashOptions{});
  auto b = sim.CrashImage(42, CrashOptions{});
  SimBackend sa(reactor_.get(), std::move(a), SimOptions{});
  SimBackend sb(reactor_.get(), std::move(b), SimOptions{});
  std::vector<uint8_t> x(16384), y(16384);
  ASSERT_TRUE(sa.ReadSync(0, x.data(), x.size()).ok());
  ASSERT_TRUE(sb.ReadSync(0, y.data(), y.size()).ok());
  EXPECT_EQ(x, y);
}

TEST_F(SimModels, CrashImageMayHoldAWriteStillInFlight) {
  SimOptions so;
  so.latency_base_ns = 50'000'000;  // 50 ms: still in flight when the images are taken
  SimBackend sim(reactor_.get(), kSize, so);
  std::vector<uint8_t> data(4096, 7);
  BackendIo io;
  io.op = IoOp::kWrite;
  io.offset_bytes = 4096;
  io.length_bytes = 4096;
  io.buf = data.data();
  bool done = false;
  io.ctx = &done;
  io.done = [](BackendIo* b) { *static_cast<bool*>(b->ctx) = true; };
  sim.Submit(&io);
  int landed = 0, absent = 0;
  for (uint64_t seed = 0; seed < 100; ++seed) {
    SimBackend crashed(reactor_.get(), sim.CrashImage(seed, CrashOptions{}), SimOptions{});
    std::vector<uint8_t> got(4096);
    ASSERT_TRUE(crashed.ReadSync(4096, got.data(), 4096).ok());
    for (size_t i = 0; i < got.size(); i += 512) ASSERT_TRUE(got[i] == 0 || got[i] == 7);
    if (got[0] == 7) landed++;
    if (got[0] == 0) absent++;
  }
  EXPECT_GT(landed, 0);  // a device may land a write before reporting it done
  EXPECT_GT(absent, 0);
  for (int i = 0; i < 1000 && !done; ++i) reactor_->RunOnce(10'000'000);
  EXPECT_TRUE(done);
}

TEST_F(SimModels, VirtualTimeCompletesInDeadlineOrderWithoutWaiting) {
  SimOptions so;
  so.virtual_time = true;
  so.flush_extra_ns = 10'000'000'000ull;  // 10 s, simulated
  so.write_extra_ns = 1'000'000;          // 1 ms, simulated
  SimBackend sim(reactor_.get(), kSize, so);
  std::vector<uint8_t> data(4096, 3);
  std::vector<int> order;
  struct Op {
    BackendIo io;
    std::vector<int>* order;
    int id;
  } flush{{}, &order, 1}, write{{}, &order, 2};
  flush.io.op = IoOp::kFlush;
  write.io.op = IoOp::kWrite;
  write.io.length_bytes = 4096;
  write.io.buf = data.data();
  for (Op* op : {&flush, &write}) {
    op->io.ctx = op;
    op->io.done = [](BackendIo* b) {
      auto* self = static_cast<Op*>(b->ctx);
      self->order->push_back(self->id);
    };
  }
  const uint64_t t0 = MonotonicNs();
  sim.Submit(&flush.io);
  sim.Submit(&write.io);
  for (int i = 0; i < 100 && order.size() < 2; ++i) reactor_->RunOnce(1'000'000'000);
  ASSERT_EQ(order.size(), 2u);
  EXPECT_EQ(order[0], 2);  // the 1 ms write before the 10 s flush
  EXPECT_EQ(order[1], 1);
  EXPECT_LT(MonotonicNs() - t0, 5'000'000'000ull);  // nowhere near 10 s of real time
}

TEST_F(SimModels, CapacityModelServesUnitsAtOnceThenQueues) {
  // 4,000 IOPS over 4 units: an operation alone takes 1 ms; 8 at once finish 4 at 1 ms and 4
  // at 2 ms (simulated time, so the check does not depend on the machine).
  SimOptions so;
  so.virtual_time = true;
  so.iops_max = 4000;
  so.units = 4;
  SimBackend sim(reactor_.get(), kSize, so);
  std::vector<uint8_t> buf(4096 * 8);
  struct Op {
    BackendIo io;
    SimBackend* sim;
    std::vector<uint64_t>* at;
  };
  std::vector<uint64_t> at;
  std::vector<Op> ops(8);
  for (int i = 0; i < 8; ++i) {
    ops[i].sim = &sim;
    ops[i].at = &at;
    ops[i].io.op = IoOp::kRead;
    ops[i].io.offset_bytes = i * 4096ull;
    ops[i].io.length_bytes = 4096;
    ops[i].io.buf = buf.data() + i * 4096;
    ops[i].io.ctx = &ops[i];
    ops[i].io.done = [](BackendIo* b) {
      auto* op = static_cast<Op*>(b->ctx);
      op->at->push_back(op->sim->now_ns());
    };
  }
  const uint64_t t0 = sim.now_ns();
  for (Op& op : ops) sim.Submit(&op.io);
  for (int i = 0; i < 100 && at.size() < 8; ++i) reactor_->RunOnce(1'000'000'000);
  ASSERT_EQ(at.size(), 8u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(at[i] - t0, 1'000'000u) << i;
  for (int i = 4; i < 8; ++i) EXPECT_EQ(at[i] - t0, 2'000'000u) << i;
}

TEST_F(SimModels, AFlushCoversOnlyWritesCompletedBeforeItWasIssued) {
  SimOptions so;
  so.virtual_time = true;
  so.flush_extra_ns = 10'000'000;  // the flush takes 10 ms (simulated) ...
  SimBackend sim(reactor_.get(), kSize, so);
  std::vector<uint8_t> before(4096, 1), during(4096, 2);
  ASSERT_TRUE(sim.WriteSync(0, before.data(), 4096).ok());  // cached before the flush
  BackendIo flush, write;
  int done = 0;
  for (BackendIo* io : {&flush, &write}) {
    io->ctx = &done;
    io->done = [](BackendIo* b) { ++*static_cast<int*>(b->ctx); };
  }
  flush.op = IoOp::kFlush;
  write.op = IoOp::kWrite;
  write.offset_bytes = 8192;
  write.length_bytes = 4096;
  write.buf = during.data();
  sim.Submit(&flush);
  sim.Submit(&write);  // ... and this write completes while it runs
  for (int i = 0; i < 100 && done < 2; ++i) reactor_->RunOnce(1'000'000);
  ASSERT_EQ(done, 2);
  CrashOptions keep_nothing;
  keep_nothing.keep_probability = 0;
  SimBackend crashed(reactor_.get(), sim.CrashImage(1, keep_nothing), SimOptions{});
  std::vector<uint8_t> got(4096);
  ASSERT_TRUE(crashed.ReadSync(0, got.data(), 4096).ok());
  EXPECT_EQ(got, before);  // covered
  ASSERT_TRUE(crashed.ReadSync(8192, got.data(), 4096).ok());
  EXPECT_EQ(got, std::vector<uint8_t>(4096, 0));  // not covered: may be lost
}

}  // namespace
}  // namespace spd
