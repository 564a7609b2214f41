// Per-volume I/O figures: slots summed at scrape, detached slots kept in the totals, the error
// kinds, the buckets, and the spd_volume_* families a scrape renders.
#include "volume/volume_stats.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <sstream>
#include <thread>

#include "io/sim_backend.h"
#include "volume/pool_metrics.h"
#include "volume/volume_metrics.h"

namespace spd {
namespace {

TEST(VolumeIoStats, SlotsAreSummedAndDetachedOnesStayCounted) {
  VolumeIoStats st;
  IoStatsSlot* a = st.Attach();
  IoStatsSlot* b = st.Attach();
  EXPECT_EQ(st.live_slots(), 2u);
  VolumeIoStats::Begin(a, true);
  VolumeIoStats::Record(a, true, IoClass::kRead, 4096, 0, 150'000, 0);
  VolumeIoStats::Begin(b, true);
  VolumeIoStats::Record(b, true, IoClass::kWrite, 8192, 0, 2'000'000'000, 7'000);
  VolumeIoStats::Begin(b, true);
  VolumeIoStats::Record(b, true, IoClass::kWrite, 0, -ENOSPC, 50'000, 0);
  VolumeIoStats::Begin(b, true);  // never answered: the connection goes
  VolumeIoStats::Begin(st.shared(), false);
  VolumeIoStats::Record(st.shared(), false, IoClass::kFlush, 0, -EIO, 1'000'000, 0);

  IoStatsTotals t = st.Sum();
  EXPECT_EQ(t.ops[static_cast<int>(IoClass::kRead)], 1u);
  EXPECT_EQ(t.ops[static_cast<int>(IoClass::kWrite)], 2u);
  EXPECT_EQ(t.ops[static_cast<int>(IoClass::kFlush)], 1u);
  EXPECT_EQ(t.bytes[static_cast<int>(IoClass::kRead)], 4096u);
  EXPECT_EQ(t.bytes[static_cast<int>(IoClass::kWrite)], 8192u);
  EXPECT_EQ(t.errors[static_cast<int>(IoErrorKind::kNoSpace)], 1u);
  EXPECT_EQ(t.errors[static_cast<int>(IoErrorKind::kIo)], 1u);
  EXPECT_EQ(t.queue_ns, 7'000u);
  EXPECT_EQ(t.inflight, 1);
  // 150 µs: the 250 µs bucket; 2 s: +Inf; 50 µs: the first; 1 ms exactly: the 1 ms bucket.
  EXPECT_EQ(t.hist[static_cast<int>(IoClass::kRead)][1], 1u);
  EXPECT_EQ(t.hist[static_cast<int>(IoClass::kWrite)][IoStatsSlot::kBuckets], 1u);
  EXPECT_EQ(t.hist[static_cast<int>(IoClass::kWrite)][0], 1u);
  EXPECT_EQ(t.hist[static_cast<int>(IoClass::kFlush)][3], 1u);
  EXPECT_EQ(t.latency_ns[static_cast<int>(IoClass::kWrite)], 2'000'050'000u);

  st.Detach(b);
  st.Detach(b);  // twice: ignored
  EXPECT_EQ(st.live_slots(), 1u);
  IoStatsTotals u = st.Sum();
  EXPECT_EQ(u.ops[static_cast<int>(IoClass::kWrite)], 2u) << "a closed connection's requests";
  EXPECT_EQ(u.bytes[static_cast<int>(IoClass::kWrite)], 8192u);
  EXPECT_EQ(u.inflight, 0) << "its unanswered request is not in flight any more";
  st.Detach(a);
}

TEST(VolumeIoStats, ErrorKindsAndBuckets) {
  EXPECT_EQ(IoErrorKindOf(-EIO), IoErrorKind::kIo);
  EXPECT_EQ(IoErrorKindOf(-ENOSPC), IoErrorKind::kNoSpace);
  EXPECT_EQ(IoErrorKindOf(-EOVERFLOW), IoErrorKind::kInvalid);
  EXPECT_EQ(IoErrorKindOf(-EROFS), IoErrorKind::kDenied);
  EXPECT_EQ(IoErrorKindOf(-EPERM), IoErrorKind::kDenied);
  EXPECT_EQ(IoErrorKindOf(-ENOMEM), IoErrorKind::kNoMem);
  EXPECT_EQ(IoErrorKindOf(-ESHUTDOWN), IoErrorKind::kOther);
  EXPECT_EQ(IoStatsSlot::Bucket(0), 0);
  EXPECT_EQ(IoStatsSlot::Bucket(100'000), 0);  // upper bounds are inclusive (le)
  EXPECT_EQ(IoStatsSlot::Bucket(100'001), 1);
  EXPECT_EQ(IoStatsSlot::Bucket(1'000'000'000), IoStatsSlot::kBuckets - 1);
  EXPECT_EQ(IoStatsSlot::Bucket(1'000'000'001), IoStatsSlot::kBuckets);
}

// Writers on other threads with the shared slot lose nothing (atomic adds).
TEST(VolumeIoStats, TheSharedSlotTakesManyWriters) {
  VolumeIoStats st;
  std::vector<std::thread> ts;
  for (int i = 0; i < 4; ++i) {
    ts.emplace_back([&] {
      for (int k = 0; k < 10000; ++k) {
        VolumeIoStats::Begin(st.shared(), false);
        VolumeIoStats::Record(st.shared(), false, IoClass::kRead, 512, 0, 1000, 0);
      }
    });
  }
  for (auto& t : ts) t.join();
  const IoStatsTotals t = st.Sum();
  EXPECT_EQ(t.ops[static_cast<int>(IoClass::kRead)], 40000u);
  EXPECT_EQ(t.bytes[static_cast<int>(IoClass::kRead)], 40000u * 512);
  EXPECT_EQ(t.inflight, 0);
}

class VolumeMetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = Reactor::Create(ReactorOptions{});
    ASSERT_TRUE(r.ok());
    reactor_ = std::move(r).value();
    auto sim = std::make_unique<SimBackend>(reactor_.get(), 64 << 20, SimOptions{});
    PoolOptions o;
    o.chunk_size_bytes = 64 << 10;
    o.log_size_bytes = 1 << 20;
    auto p = Pool::Create(std::move(sim), reactor_.get(), o);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    pool_ = std::move(p).value();
    mgr_ = std::make_unique<VolumeManager>(pool_.get());
  }
  void TearDown() override {
    mgr_.reset();
    pool_.reset();
  }
  std::unique_ptr<Reactor> reactor_;
  std::unique_ptr<Pool> pool_;
  std::unique_ptr<VolumeManager> mgr_;
};

TEST_F(VolumeMetricsTest, EveryFamilyOnceWithLabelsAndConsistentHistograms) {
  VolumeSpec a;
  a.name = "a";
  a.size_bytes = 4 << 20;
  VolumeSpec c;
  c.name = "c";
  c.size_bytes = 1 << 20;
  auto ha = mgr_->CreateBlocking(a);
  ASSERT_TRUE(ha.ok()) << ha.status().ToString();
  ASSERT_TRUE(mgr_->CreateBlocking(c).ok());
  Volume* va = ha.value()->volume();
  IoStatsSlot* s = va->io_stats.Attach();
  for (uint64_t lat : {50'000ull, 300'000ull, 300'000ull, 20'000'000ull}) {
    VolumeIoStats::Begin(s, true);
    VolumeIoStats::Record(s, true, IoClass::kRead, 4096, 0, lat, 1'000'000);
  }
  VolumeIoStats::Begin(s, true);
  VolumeIoStats::Record(s, true, IoClass::kWrite, 0, -ENOSPC, 10'000, 0);
  VolumeMetrics m(mgr_.get(), [](const std::string& v) { return v == "c" ? "ac\"me" : ""; });
  std::string out;
  m.Render(&out);
  va->io_stats.Detach(s);

  auto has = [&](const std::string& line) {
    EXPECT_NE(out.find("\n" + line + "\n"), std::string::npos) << line << "\n" << out;
  };
  const std::string la = "volume=\"a\"";  // no tenant: no tenant label
  has("spd_volume_requests_total{" + la + ",op=\"read\"} 4");
  has("spd_volume_requests_total{" + la + ",op=\"write\"} 1");
  has("spd_volume_read_bytes_total{" + la + "} 16384");
  has("spd_volume_read_bytes_total{volume=\"c\",tenant=\"ac\\\"me\"} 0");
  has("spd_volume_errors_total{" + la + ",kind=\"no_space\"} 1");
  has("spd_volume_request_duration_seconds_bucket{" + la + ",op=\"read\",le=\"0.0001\"} 1");
  has("spd_volume_request_duration_seconds_bucket{" + la + ",op=\"read\",le=\"0.0005\"} 3");
  has("spd_volume_request_duration_seconds_bucket{" + la + ",op=\"read\",le=\"0.025\"} 4");
  has("spd_volume_request_duration_seconds_bucket{" + la + ",op=\"read\",le=\"+Inf\"} 4");
  has("spd_volume_request_duration_seconds_sum{" + la + ",op=\"read\"} 0.02065");
  has("spd_volume_request_duration_seconds_count{" + la + ",op=\"read\"} 4");
  has("spd_volume_scheduler_queue_seconds_total{" + la + "} 0.004");
  has("spd_volume_size_bytes{volume=\"c\",tenant=\"ac\\\"me\"} 1048576");
  has("spd_volume_inflight_requests{" + la + "} 0");
  // No series for what a volume has not seen.
  EXPECT_EQ(out.find("volume=\"c\",tenant=\"ac\\\"me\",op="), std::string::npos);
  EXPECT_EQ(out.find("op=\"flush\""), std::string::npos);
  // Each family's HELP and TYPE exactly once.
  for (const char* f : {"spd_volume_requests_total", "spd_volume_errors_total",
                        "spd_volume_request_duration_seconds", "spd_volume_inflight_requests"}) {
    const std::string help = std::string("# HELP ") + f + " ";
    const size_t first = out.find(help);
    ASSERT_NE(first, std::string::npos) << f;
    EXPECT_EQ(out.find(help, first + 1), std::string::npos) << f;
  }
  // The collector is registered: the endpoint's text carries the families.
  EXPECT_NE(RenderCountersPrometheus().find("spd_volume_size_bytes{volume=\"c\""),
            std::string::npos);
}

TEST_F(VolumeMetricsTest, PoolFamiliesFollowAllocationAndVolumes) {
  PoolMetrics pm(pool_.get(), "p\"1");
  const std::string l = "{pool=\"p\\\"1\"}";
  auto value = [&](const std::string& family) {
    std::string out;
    pm.Render(&out);
    const std::string key = "\n" + family + l + " ";
    const size_t at = out.find(key);
    EXPECT_NE(at, std::string::npos) << family << "\n" << out;
    return at == std::string::npos ? -1.0 : std::stod(out.substr(at + key.size()));
  };
  const double size = value("spd_pool_size_bytes");
  EXPECT_GT(size, 0);
  EXPECT_EQ(value("spd_pool_allocated_bytes"), 0);
  EXPECT_EQ(value("spd_pool_free_bytes"), size);
  EXPECT_EQ(value("spd_pool_volumes"), 0);
  EXPECT_EQ(value("spd_pool_provisioned_bytes"), 0);
  EXPECT_EQ(value("spd_pool_read_only"), 0);
  EXPECT_EQ(value("spd_pool_log_size_bytes"), 1 << 20);
  const double commits0 = value("spd_pool_commits_total");

  VolumeSpec a;
  a.name = "a";
  a.size_bytes = 4 << 20;
  auto ha = mgr_->CreateBlocking(a);
  ASSERT_TRUE(ha.ok()) << ha.status().ToString();
  EXPECT_EQ(value("spd_pool_volumes"), 1);
  EXPECT_EQ(value("spd_pool_provisioned_bytes"), 4 << 20);  // its size, none of it written yet
  EXPECT_GT(value("spd_pool_commits_total"), commits0);
  // One 4 KiB write allocates one 64 KiB chunk.
  std::vector<uint8_t> buf(4096, 7);
  VolumeIo io;
  io.op = IoOp::kWrite;
  io.offset_bytes = 1 << 20;
  io.length_bytes = 4096;
  io.buf = buf.data();
  bool done = false;
  io.ctx = &done;
  io.done = [](VolumeIo* d) { *static_cast<bool*>(d->ctx) = true; };
  ha.value()->volume()->Submit(&io);
  for (int i = 0; i < 100000 && !done; ++i) reactor_->RunOnce(1'000'000);
  ASSERT_TRUE(done);
  ASSERT_EQ(io.result, 0);
  EXPECT_EQ(value("spd_pool_allocated_bytes"), 64 << 10);
  EXPECT_EQ(value("spd_pool_free_bytes"), size - (64 << 10));
  // Registered: the endpoint's text carries them.
  EXPECT_NE(RenderCountersPrometheus().find("spd_pool_volumes" + l + " 1\n"), std::string::npos);
}

}  // namespace
}  // namespace spd
