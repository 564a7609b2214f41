// The QoS scheduler in the real pipeline: in-process frontends on one reactor, the dispatcher,
// a pool on the sim backend with a capacity model slow enough (2,000 IOPS) that the device, not
// the CPU, is the bottleneck even on a loaded machine. Assertions are on shares and on limits
// (upper bounds), which a slow machine cannot break; absolute rates are not asserted.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <functional>
#include <vector>

#include "common/counters.h"
#include "frontend/inproc/inproc_frontend.h"
#include "qos/qos_scheduler.h"

namespace spd::qos {
namespace {

constexpr uint32_t kChunk = 64 << 10;
constexpr uint64_t kDeviceIops = 2000;
constexpr uint64_t kVolumeBytes = 1ull << 20;

class QosPipelineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = Reactor::Create(ReactorOptions{});
    ASSERT_TRUE(r.ok());
    reactor_ = std::move(r).value();
    auto o = Reactor::Create(ReactorOptions{});
    ASSERT_TRUE(o.ok());
    other_ = std::move(o).value();
    bo_.kind = BackendKind::kSim;
    bo_.size_bytes = 64ull << 20;
    bo_.sim.iops_max = kDeviceIops;
    auto b = OpenBackend(bo_, reactor_.get());
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    PoolOptions po;
    po.chunk_size_bytes = kChunk;
    po.log_size_bytes = 1 << 20;
    auto p = Pool::Create(std::move(b).value(), reactor_.get(), po);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    pool_ = std::move(p).value();
  }
  void TearDown() override {
    clients_.clear();
    dispatcher_.reset();
    if (pool_) pool_->SetBackgroundGate(nullptr);
    sched_.reset();
    pool_.reset();
  }
  void Start(QosScheduler::Options o = {}) {
    o.cost = ForSim(bo_.sim);
    o.on_violation = [this](const std::string& v, const std::string& why) {
      violations_.push_back(v + ": " + why);
    };
    sched_ = std::make_unique<QosScheduler>(std::vector<Reactor*>{reactor_.get(), other_.get()}, o);
    dispatcher_ = std::make_unique<Dispatcher>(pool_.get(), DispatcherOptions{}, sched_.get());
  }
  // Both reactors, once each.
  void Spin() {
    reactor_->RunOnce(1);
    other_->RunOnce(1);
  }
  // A client keeping `qd` 4 KiB reads of `name` in flight (a new one as each completes), on
  // the pool's reactor or on `other_`.
  struct Client {
    QosPipelineTest* t = nullptr;
    Reactor* on = nullptr;
    struct Refill : Task {
      Client* c;
    } refill;
    bool refill_pending = false;
    Volume* vol = nullptr;
    std::unique_ptr<InprocFrontend> fe;
    uint64_t done = 0;
    bool stop = false;
    uint32_t next = 0;
    uint8_t flags = 0;  // on every read (kReqRebuild: replication's resync class)
  };
  Client* AddClient(const std::string& name, uint32_t qd, bool on_other = false) {
    auto c = std::make_unique<Client>();
    c->t = this;
    c->on = on_other ? other_.get() : reactor_.get();
    c->refill.c = c.get();
    c->refill.fn = [](Task* t) {
      Client* cl = static_cast<Client::Refill*>(t)->c;
      cl->refill_pending = false;
      Issue(cl);
    };
    Volume* existing = nullptr;
    for (auto& o : clients_)
      if (o->vol->info().name == name) existing = o->vol;
    if (existing) {
      c->vol = existing;
    } else {
      auto v = pool_->CreateVolume(name, kVolumeBytes);
      EXPECT_TRUE(v.ok());
      c->vol = v.value();
    }
    InprocFrontend::Options fo;
    fo.queue_depth = qd;
    fo.buffer_bytes = 4096;
    c->fe = std::make_unique<InprocFrontend>(dispatcher_.get(), c->on, fo);
    // Written whole first: reads of holes never reach the device.
    for (uint64_t off = 0; off < kVolumeBytes; off += 4096) {
      IoRequest* r = nullptr;
      while ((r = c->fe->Take()) == nullptr) Spin();
      r->op = RequestOp::kWrite;
      r->offset_bytes = off;
      r->length_bytes = 4096;
      r->volume = c->vol;
      std::memset(r->buf, 0x5a, 4096);
      c->fe->Submit(
          r, [](void*, IoRequest* req) { EXPECT_EQ(req->result, 0); }, nullptr);
    }
    while (c->fe->inflight() > 0) Spin();
    clients_.push_back(std::move(c));
    return clients_.back().get();
  }
  static void Issue(Client* c) {
    while (!c->stop) {
      IoRequest* r = c->fe->Take();
      if (r == nullptr) return;
      r->op = RequestOp::kRead;
      r->flags = c->flags;
      r->offset_bytes = (c->next++ % (kVolumeBytes / 4096)) * 4096ull;
      r->length_bytes = 4096;
      r->volume = c->vol;
      c->fe->Submit(
          r,
          [](void* arg, IoRequest* req) {
            auto* cl = static_cast<Client*>(arg);
            EXPECT_EQ(req->result, 0);
            ++cl->done;
            // Submitting from the completion is allowed; the frontend frees the slot after.
            if (!cl->refill_pending) {
              cl->refill_pending = true;
              cl->on->Defer(&cl->refill);
            }
          },
          c);
    }
  }
  // Runs every client for `ns` of real time; returns what each completed.
  std::vector<uint64_t> Run(uint64_t ns, uint64_t at_ns = 0, std::function<void()> at = {}) {
    for (auto& c : clients_) {
      c->done = 0;
      c->stop = false;
    }
    for (auto& c : clients_) Issue(c.get());
    const uint64_t start = MonotonicNs();
    const uint64_t end = start + ns;
    while (MonotonicNs() < end) {
      if (at && MonotonicNs() >= start + at_ns) {
        at();  // while requests are queued
        at = {};
      }
      Spin();
    }
    std::vector<uint64_t> out;
    for (auto& c : clients_) {
      c->stop = true;
      out.push_back(c->done);
    }
    for (int i = 0; i < 200000; ++i) {
      bool idle = true;
      for (auto& c : clients_) idle = idle && c->fe->inflight() == 0;
      if (idle) break;
      Spin();
    }
    return out;
  }
  static VolumeIntent Intent(uint64_t res_iops, uint64_t lim_iops, uint32_t weight = 100) {
    VolumeIntent in;
    in.flow.reservation.iops = res_iops;
    in.flow.limit.iops = lim_iops;
    in.flow.weight = weight;
    return in;
  }

  BackendOptions bo_;
  std::unique_ptr<Reactor> reactor_;
  std::unique_ptr<Reactor> other_;
  std::unique_ptr<Pool> pool_;
  std::unique_ptr<QosScheduler> sched_;
  std::unique_ptr<Dispatcher> dispatcher_;
  std::vector<std::unique_ptr<Client>> clients_;
  std::vector<std::string> violations_;
};

TEST_F(QosPipelineTest, ALimitCapsItsVolumeAndTheOtherTakesTheRest) {
  Start();
  sched_->SetVolumeIntent("lim", "", Intent(0, 200));
  AddClient("lim", 8);
  AddClient("free", 8);
  std::vector<uint64_t> n = Run(1'000'000'000);
  // 200 IOPS for one second: the start tags let one request in at once, so at most ~201.
  EXPECT_LE(n[0], 210u) << "limited volume";
  EXPECT_GE(n[0], 100u) << "limited volume starved";
  EXPECT_GT(n[1], 2 * n[0]) << "the other volume did not get what the limit left";
}

TEST_F(QosPipelineTest, ALimitHoldsAcrossReactors) {
  // One volume, a client on each reactor: each reactor's engine learns what the other served
  // (dmClock credits), so the two together stay under the limit.
  Start();
  sched_->SetVolumeIntent("v", "", Intent(0, 300));
  AddClient("v", 8, /*on_other=*/false);
  AddClient("v", 8, /*on_other=*/true);
  std::vector<uint64_t> n = Run(1'000'000'000);
  EXPECT_LE(n[0] + n[1], 315u) << n[0] << " + " << n[1];
  EXPECT_GT(n[0], 20u);
  EXPECT_GT(n[1], 20u);
}

TEST_F(QosPipelineTest, ATenantLimitCapsItsVolumesTogetherAndAMoveLeavesIt) {
  Start();
  FlowPolicy t;
  t.limit.iops = 300;
  sched_->SetTenantPolicy("acme", t);
  sched_->SetVolumeIntent("a1", "acme", Intent(0, 0));
  sched_->SetVolumeIntent("a2", "acme", Intent(0, 0));
  AddClient("a1", 8);
  AddClient("a2", 8);
  std::vector<uint64_t> n = Run(1'000'000'000);
  EXPECT_LE(n[0] + n[1], 315u) << n[0] << " + " << n[1];
  EXPECT_GT(n[0], 50u);
  EXPECT_GT(n[1], 50u);
  // a2 leaves the tenant while its requests are queued in the scheduler.
  n = Run(1'000'000'000, 100'000'000, [this] { sched_->SetVolumeIntent("a2", "", Intent(0, 0)); });
  EXPECT_LE(n[0], 315u);
  // Under acme, a1 + a2 <= 315 in this second; a2 alone past it shows the move took effect (no
  // ratio to a1: a loaded CI machine slows the sim device itself, 958 I/O in this second once).
  EXPECT_GT(n[1], 330u) << n[0] << " vs " << n[1] << ": a2 still under acme's limit";
}

TEST_F(QosPipelineTest, WeightsShareTheDevice) {
  Start();
  sched_->SetVolumeIntent("w1", "", Intent(0, 0, 100));
  sched_->SetVolumeIntent("w4", "", Intent(0, 0, 400));
  AddClient("w1", 8);
  AddClient("w4", 8);
  std::vector<uint64_t> n = Run(1'000'000'000);
  ASSERT_GT(n[0], 0u);
  const double ratio = static_cast<double>(n[1]) / static_cast<double>(n[0]);
  // 4:1 by weight (an even share would be 1:1); a loaded CI machine starves the clients and the
  // sim device alike (2.88 once, 393 vs 1130), so the bound leaves room below 4.
  EXPECT_GT(ratio, 2.5) << n[0] << " vs " << n[1];
  EXPECT_LT(ratio, 5.0) << n[0] << " vs " << n[1];
}

TEST_F(QosPipelineTest, AReservationIsServedFirst) {
  Start();
  // 30% of the device against two saturating neighbours of ten times its weight.
  sched_->SetVolumeIntent("res", "", Intent(kDeviceIops * 3 / 10, 0, 10));
  sched_->SetVolumeIntent("a", "", Intent(0, 0, 1000));
  sched_->SetVolumeIntent("b", "", Intent(0, 0, 1000));
  // In arrival order (FIFO) it would get 8/72 of the device by its queue depth.
  AddClient("res", 8);
  AddClient("a", 32);
  AddClient("b", 32);
  std::vector<uint64_t> n = Run(1'000'000'000);
  const uint64_t total = n[0] + n[1] + n[2];
  ASSERT_GT(total, 0u);
  // By weight alone it would get 10/2010 of the device; its reservation gives it about 30%.
  EXPECT_GT(static_cast<double>(n[0]) / static_cast<double>(total), 0.25)
      << n[0] << " " << n[1] << " " << n[2];
}

TEST_F(QosPipelineTest, ALiveLimitChangeHoldsAtOnce) {
  Start();
  AddClient("v", 8);
  std::vector<uint64_t> before = Run(300'000'000);
  sched_->SetVolumeIntent("v", "", Intent(0, 100));
  Spin();  // the refresh tasks
  std::vector<uint64_t> after = Run(500'000'000);
  EXPECT_GT(before[0], after[0]);
  EXPECT_LE(after[0], 55u) << "100 IOPS for half a second";
}

TEST_F(QosPipelineTest, StatusReportsMeasuredFiguresAndAViolatedLatencyTarget) {
  QosScheduler::Options o;
  o.window_ns = 400'000'000;
  o.tick_ns = 0;  // no latency controller: the tight target would throttle the loose volume
  Start(o);
  VolumeIntent tight = Intent(0, 0);
  tight.latency.percentile = 90;    // judged from 100 requests a window
  tight.latency.bound_ns = 10'000;  // 10 us: a 2,000 IOPS device cannot
  sched_->SetVolumeIntent("tight", "", tight);
  VolumeIntent loose = Intent(0, 0);
  loose.latency.percentile = 90;
  loose.latency.bound_ns = 10'000'000'000;  // 10 s
  sched_->SetVolumeIntent("loose", "", loose);
  AddClient("tight", 4);
  AddClient("loose", 4);
  Run(1'000'000'000);
  VolumeStatus t = sched_->Status("tight");
  VolumeStatus l = sched_->Status("loose");
  EXPECT_EQ(t.state, IntentState::kViolated) << t.reason;
  EXPECT_NE(t.reason.find("latency p90"), std::string::npos) << t.reason;
  EXPECT_EQ(l.state, IntentState::kMet) << l.reason;
  EXPECT_GT(l.iops, 0);
  EXPECT_GT(l.latency_ns, 0u);
  ASSERT_FALSE(violations_.empty());
  EXPECT_EQ(violations_[0].rfind("tight: ", 0), 0u) << violations_[0];
  EXPECT_EQ(sched_->Status("never").state, IntentState::kIdle);
}

TEST_F(QosPipelineTest, AdmissionRefusesAReservationBeyondTheDeviceAndSaysWhatIsLeft) {
  Start();
  sched_->SetVolumeIntent("big", "", Intent(kDeviceIops / 2, 0));
  EXPECT_TRUE(sched_->AdmitReservation("f", "other", Rate{kDeviceIops / 4, 0}).ok());
  spd::Status s = sched_->AdmitReservation("f", "other", Rate{kDeviceIops / 2, 0});
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(std::string(s.message()).find("are left to reserve"), std::string::npos)
      << s.ToString();
  // A volume's own reservation does not count against its new one.
  EXPECT_TRUE(sched_->AdmitReservation("f", "big", Rate{kDeviceIops * 8 / 10, 0}).ok());
}

TEST_F(QosPipelineTest, AdmissionCountsTenantsReservationsBesideVolumes) {
  Start();
  // Half the device reserved by a tenant: a volume gets only what is left.
  FlowPolicy half;
  half.reservation = Rate{kDeviceIops / 2, 0};
  sched_->SetTenantPolicy("acme", half);
  EXPECT_TRUE(sched_->AdmitReservation("f", "v", Rate{kDeviceIops / 4, 0}).ok());
  EXPECT_EQ(sched_->AdmitReservation("f", "v", Rate{kDeviceIops / 2, 0}).code(),
            StatusCode::kResourceExhausted);
  // So does another tenant, refused naming the field and what is left.
  spd::Status s =
      sched_->AdmitTenantReservation("tenant.intent.reservation", "beta", Rate{kDeviceIops / 2, 0});
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(std::string(s.message()).rfind("tenant.intent.reservation: ", 0), 0u) << s.ToString();
  EXPECT_NE(std::string(s.message()).find("are left to reserve"), std::string::npos)
      << s.ToString();
  // A tenant's own reservation does not count against its new one.
  EXPECT_TRUE(sched_->AdmitTenantReservation("f", "acme", Rate{kDeviceIops * 8 / 10, 0}).ok());
  // Volumes' reservations count against a tenant's, its own volumes' included (in full).
  sched_->SetVolumeIntent("v", "acme", Intent(kDeviceIops / 2, 0));
  EXPECT_FALSE(sched_->AdmitTenantReservation("f", "beta", Rate{kDeviceIops / 4, 0}).ok());
  EXPECT_FALSE(sched_->AdmitTenantReservation("f", "acme", Rate{kDeviceIops * 8 / 10, 0}).ok());
  // A tenant back to the default (deleted): its reservation is free again.
  sched_->SetTenantPolicy("acme", FlowPolicy{});
  EXPECT_TRUE(sched_->AdmitTenantReservation("f", "beta", Rate{kDeviceIops / 4, 0}).ok());
}

// The latency controller on a device with 4 units (each 4 KiB read alone 2 ms): a QD1 volume
// with a latency target beside a QD16 one without. Asserted: the mechanism (the other volume's
// requests held back once the target is missed, the cap on the shard, gone a second after the
// target's volume stops) and that both make progress; latencies are printed, not asserted.
class QosLatencyControllerTest : public QosPipelineTest {
 protected:
  QosLatencyControllerTest() { bo_.sim.units = 4; }
};

TEST_F(QosLatencyControllerTest, AMissedTargetCapsTheOthersAndTheCapGoesWhenItsVolumeStops) {
  Start();
  VolumeIntent victim = Intent(0, 0);
  victim.latency.percentile = 90;
  victim.latency.bound_ns = 3'000'000;  // aim 2.4 ms; alone 2 ms, behind a full device ~4 ms
  sched_->SetVolumeIntent("victim", "", victim);
  // Before the clients: on a loaded machine starting them can take a tick, and the first cut.
  const uint64_t cuts0 = CounterValue("spd_qos_latency_throttles_total");
  const uint64_t parked0 = CounterValue("spd_qos_latency_parked_total");
  AddClient("victim", 1);
  AddClient("bulk", 16);
  std::vector<uint64_t> n = Run(1'500'000'000);
  EXPECT_GT(CounterValue("spd_qos_latency_throttles_total"), cuts0);
  EXPECT_GT(CounterValue("spd_qos_latency_parked_total"), parked0);
  EXPECT_EQ(GaugeValue("spd_qos_latency_capped_shards"), 1);  // the pool reactor's shard
  EXPECT_GT(n[0], 50u) << "victim";
  // How much the capped volume keeps depends on the latency the victim sees, which a loaded
  // machine inflates beyond the device's (then the cap goes to its floor): only progress is
  // asserted.
  EXPECT_GT(n[1], 50u) << "the capped volume";
  const VolumeStatus st = sched_->Status("victim");
  std::printf("victim %lu, bulk %lu I/O; victim p90 %.2f ms (%s)\n",
              static_cast<unsigned long>(n[0]), static_cast<unsigned long>(n[1]),
              static_cast<double>(st.latency_ns) / 1e6, st.reason.c_str());
  // The victim stops: after the controller's idle ticks (1 s) nobody is protected.
  clients_.erase(clients_.begin());
  Run(1'500'000'000);
  EXPECT_EQ(GaugeValue("spd_qos_latency_capped_shards"), 0);
}

// The adaptive budget: a cost model that underrates the device (parallelism 1 where the sim
// serves 8 reads at once, each 4 ms) lets a fixed budget keep 2 reads outstanding: at most
// 500 IOPS, whatever the machine. Adapting, the budget grows while throughput grows with it.
class QosAdaptiveBudgetTest : public QosPipelineTest {
 protected:
  QosAdaptiveBudgetTest() { bo_.sim.units = 8; }
};

TEST_F(QosAdaptiveBudgetTest, AnUnderratedDeviceGetsTheDepthItNeeds) {
  Start();
  SimOptions underrated = bo_.sim;
  underrated.units = 1;
  sched_->SetCostModel(ForSim(underrated));
  const uint64_t fixed_max = kDeviceIops / 8 * 2;  // 2 outstanding, 4 ms each
  AddClient("v", 32);
  const uint64_t steps0 = CounterValue("spd_qos_budget_steps_total");
  Run(2'500'000'000);  // 25 ticks: a step every other tick while it pays
  std::vector<uint64_t> n = Run(1'000'000'000);
  EXPECT_GT(CounterValue("spd_qos_budget_steps_total"), steps0);
  // Beyond what any fixed budget gets, with a margin for the sim's timing (1.2x failed once at
  // 589 of 600 under ASan on a loaded 2-core machine, the budget having stepped 6 times).
  EXPECT_GT(n[0], fixed_max * 11 / 10) << "a fixed budget allows at most " << fixed_max;
  std::printf("adaptive budget: %lu reads in 1 s (a fixed budget: at most %lu), %lu steps\n",
              static_cast<unsigned long>(n[0]), static_cast<unsigned long>(fixed_max),
              static_cast<unsigned long>(CounterValue("spd_qos_budget_steps_total") - steps0));
}

// A model that claims 1 unit but was calibrated to need 8 in flight (depth 8): with no intent
// to order, the reactor keeps the device at that depth, as FIFO would; a weight (which only
// held requests can give) brings the parallelism's budget back. No adaptation here.
TEST_F(QosAdaptiveBudgetTest, NothingToOrderKeepsTheDeviceAtItsDepth) {
  QosScheduler::Options o;
  o.budget_max_factor = o.budget_factor;
  Start(o);
  SimOptions underrated = bo_.sim;
  underrated.units = 1;
  CostModel m = ForSim(underrated);
  m.depth = 8;
  sched_->SetCostModel(m);
  EXPECT_EQ(sched_->deep_budget_ns(), 8 * sched_->budget_ns());
  const uint64_t fixed_max = kDeviceIops / 8 * 2;  // 2 outstanding, 4 ms each
  AddClient("v", 32);
  Run(300'000'000);  // a tick or more
  std::vector<uint64_t> n = Run(1'000'000'000);
  EXPECT_EQ(GaugeValue("spd_qos_deep_shards"), 1);
  EXPECT_GT(n[0], fixed_max * 6 / 5) << "the parallelism's budget allows at most " << fixed_max;

  sched_->SetVolumeIntent("v", "", Intent(0, 0, 200));
  Run(300'000'000);
  n = Run(1'000'000'000);
  EXPECT_EQ(GaugeValue("spd_qos_deep_shards"), 0);
  EXPECT_LE(n[0], fixed_max * 11 / 10) << "a weight to give, yet the device kept deep";
  std::printf("depth budget: %lu reads in 1 s with a weight set (at most %lu)\n",
              static_cast<unsigned long>(n[0]), static_cast<unsigned long>(fixed_max));
}

// Background I/O through the scheduler: the chunks of a trimmed volume are punched in the
// background class, which beside a saturating volume gets its reservation (5 a second) and not
// more, and everything once the volume stops.
TEST_F(QosPipelineTest, BackgroundPunchesGetTheirReservationBesideASaturatingVolume) {
  QosScheduler::Options o;
  o.tick_ns = 0;
  o.background_reserve_iops = 5;
  Start(o);
  pool_->SetBackgroundGate(sched_->BackgroundGate(reactor_.get()));
  AddClient("fg", 16);
  Client* bg = AddClient("bg", 16);
  std::unique_ptr<Client> bg_owner = std::move(clients_.back());
  clients_.pop_back();  // runs no reads: only its trim, 100 ms into the run below
  auto trim = [&] {
    for (uint64_t off = 0; off < kVolumeBytes; off += kChunk) {
      IoRequest* r = bg->fe->Take();
      ASSERT_NE(r, nullptr);
      r->op = RequestOp::kDiscard;
      r->offset_bytes = off;
      r->length_bytes = kChunk;
      r->volume = bg->vol;
      bg->fe->Submit(
          r, [](void*, IoRequest* req) { EXPECT_EQ(req->result, 0); }, nullptr);
    }
  };
  const uint64_t released0 = CounterValue("spd_qos_background_released_total");
  std::vector<uint64_t> n = Run(1'100'000'000, 100'000'000, trim);
  const uint64_t beside = CounterValue("spd_qos_background_released_total") - released0;
  EXPECT_GT(n[0], 500u) << "the volume";
  EXPECT_GE(beside, 2u) << "the reservation did not let background work progress";
  std::printf("beside the volume (%lu reads in 1.1 s): %lu punches\n",
              static_cast<unsigned long>(n[0]), static_cast<unsigned long>(beside));
  // Only a saturated device bounds background work by its reservation: the scheduler is
  // work-conserving, and a loaded machine (ASan, other tests on 2 cores) can keep this test's
  // client from filling the device, leaving idle time that background work may take (a CI run
  // at 94% of the device's 2,200 operations in 1.1 s saw 9 punches). TODO: virtual time.
  if (n[0] >= kDeviceIops * 11 / 10 * 95 / 100) {
    EXPECT_LE(beside, 8u) << "background work took more than its reservation beside the volume";
  }
  // The volume stops: the rest of the 16 punches go at once.
  clients_.clear();
  const uint64_t end = MonotonicNs() + 2'000'000'000;
  while (CounterValue("spd_qos_background_released_total") - released0 < 16 && MonotonicNs() < end)
    Spin();
  EXPECT_EQ(CounterValue("spd_qos_background_released_total") - released0, 16u);
  while (bg->fe->inflight() > 0) Spin();
  EXPECT_EQ(CounterValue("spd_qos_background_ungated_total"), 0u);
}

// Replication's resync reads (kReqRebuild) are a class of their own: beside a volume that
// saturates the device they get their reservation and little more, and they add nothing to
// their volume's figures; alone, they get the whole device.
TEST_F(QosPipelineTest, ResyncIoGetsItsReservationBesideASaturatingVolume) {
  QosScheduler::Options o;
  o.tick_ns = 0;
  o.rebuild_reserve_bytes = 5 * 4096;  // 5 reads of 4 KiB a second
  Start(o);
  AddClient("fg", 16);
  Client* rb = AddClient("rb", 16);
  rb->flags = kReqRebuild;
  const uint64_t released0 = CounterValue("spd_qos_rebuild_released_total");
  std::vector<uint64_t> n = Run(1'100'000'000);
  const uint64_t beside = CounterValue("spd_qos_rebuild_released_total") - released0;
  EXPECT_EQ(beside, rb->done) << "every resync read went through the rebuild class";
  EXPECT_GT(n[0], 500u) << "the volume";
  EXPECT_GE(n[1], 2u) << "the reservation did not let the resync progress";
  std::printf("beside the volume (%lu reads in 1.1 s): %lu resync reads\n",
              static_cast<unsigned long>(n[0]), static_cast<unsigned long>(n[1]));
  if (n[0] >= kDeviceIops * 9 / 10) {  // a saturated device only (see the punches' test)
    EXPECT_LE(n[1], 24u) << "the resync took more than its reservation beside the volume";
  }
  EXPECT_EQ(sched_->Status("rb").iops, 0) << "resync reads counted as the volume's own";
  // Alone, the resync gets the device (the class is work-conserving).
  std::unique_ptr<Client> fg = std::move(clients_.front());
  clients_.erase(clients_.begin());
  n = Run(500'000'000);
  EXPECT_GT(n[0], 300u) << "the resync alone";
}

// The device is one: two reactors with requests share its budget (half each), not one each.
TEST_F(QosPipelineTest, ReactorsWithRequestsShareTheDeviceBudget) {
  QosScheduler::Options o;
  o.budget_max_factor = o.budget_factor;  // no adaptation: the base alone
  Start(o);
  const auto whole_us = static_cast<int64_t>(sched_->budget_ns() / 1000);
  const int64_t before = GaugeValue("spd_qos_device_budget_seconds");
  EXPECT_NEAR(before, 2 * whole_us, 2) << "two shards, each the whole budget before any tick";
  AddClient("a", 8);
  AddClient("b", 8, /*on_other=*/true);
  Run(500'000'000);
  EXPECT_NEAR(GaugeValue("spd_qos_device_budget_seconds"), whole_us, 2);
}

}  // namespace
}  // namespace spd::qos
