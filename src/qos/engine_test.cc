// qos::Engine on a virtual clock: the API's contracts, then the scheduling properties against a
// modelled device (engine_test_sim.h) counted in windows: reservations, weights, limits (also
// across a live change), work conservation, idle return, priorities. The hierarchy and Credit
// are in engine_hierarchy_test.cc.
#include "qos/engine.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "qos/engine_test_sim.h"

namespace spd::qos {
namespace {

using testing::DeviceSim;
using testing::Req;
constexpr uint64_t kS = DeviceSim::kSecond;
constexpr uint64_t kMs = 1'000'000;
constexpr uint64_t kUs = 1'000;

FlowPolicy Weight(uint32_t w, Priority p = Priority::kStandard) {
  FlowPolicy f;
  f.weight = w;
  f.priority = p;
  return f;
}

FlowPolicy IopsLimit(uint64_t iops, uint32_t w = 100) {
  FlowPolicy f = Weight(w);
  f.limit.iops = iops;
  return f;
}

FlowPolicy IopsReservation(uint64_t iops, uint32_t w = 100) {
  FlowPolicy f = Weight(w);
  f.reservation.iops = iops;
  return f;
}

// |got - want| <= frac * want.
void ExpectNear(double got, double want, double frac, const std::string& what) {
  EXPECT_LE(std::fabs(got - want), frac * want) << what << ": got " << got << ", want " << want;
}

// ---- Contracts ----------------------------------------------------------------------------

TEST(QosEngine, EmptyEngineReleasesNothing) {
  Engine e;
  uint64_t wake = 0;
  EXPECT_EQ(e.Dequeue(5, &wake), nullptr);
  EXPECT_EQ(wake, UINT64_MAX);
  Engine::FlowId t = e.AddTenant(FlowPolicy{});
  e.AddVolume(t, FlowPolicy{});
  EXPECT_EQ(e.Dequeue(6, &wake), nullptr);
  EXPECT_EQ(wake, UINT64_MAX);
  EXPECT_EQ(e.queued(), 0u);
}

TEST(QosEngine, ReleasesAVolumesItemsInOrder) {
  Engine e;
  Engine::FlowId t = e.AddTenant(FlowPolicy{});
  Engine::FlowId v = e.AddVolume(t, FlowPolicy{});
  Req r[5];
  for (Req& x : r) {
    x.cost_ns = 1000;
    e.Enqueue(v, &x, 0);
  }
  EXPECT_EQ(e.queued(), 5u);
  EXPECT_EQ(e.queued(v), 5u);
  uint64_t wake = 0;
  for (Req& x : r) {
    EXPECT_EQ(e.Dequeue(1, &wake), &x);
    EXPECT_EQ(wake, 1u);
    EXPECT_EQ(x.phase(), Phase::kWeight);
  }
  EXPECT_EQ(e.Dequeue(1, nullptr), nullptr);
  EXPECT_EQ(e.queued(), 0u);
}

TEST(QosEngine, LimitHoldsItemsAndReportsWhenTheyMayRun) {
  Engine e;
  Engine::FlowId t = e.AddTenant(FlowPolicy{});
  Engine::FlowId v = e.AddVolume(t, IopsLimit(1000));  // one per ms
  Req r[3];
  for (Req& x : r) {
    x.cost_ns = 10;
    e.Enqueue(v, &x, 100);
  }
  uint64_t wake = 0;
  EXPECT_EQ(e.Dequeue(100, &wake), &r[0]);  // idle flow: no added latency
  EXPECT_EQ(e.Dequeue(100, &wake), nullptr);
  EXPECT_EQ(wake, 100 + kMs);
  EXPECT_EQ(e.Dequeue(100 + kMs - 1, &wake), nullptr);
  EXPECT_EQ(wake, 100 + kMs);
  EXPECT_EQ(e.Dequeue(100 + kMs, &wake), &r[1]);
  EXPECT_EQ(e.Dequeue(100 + kMs, &wake), nullptr);
  EXPECT_EQ(wake, 100 + 2 * kMs);
  // A tenant's limit holds its volumes the same way.
  Engine::FlowId t2 = e.AddTenant(IopsLimit(100));
  Engine::FlowId v2 = e.AddVolume(t2, FlowPolicy{});
  Req s[2];
  for (Req& x : s) {
    x.cost_ns = 10;
    e.Enqueue(v2, &x, 200);
  }
  EXPECT_EQ(e.Dequeue(200, &wake), &s[0]);
  EXPECT_EQ(e.Dequeue(300, &wake), nullptr);
  EXPECT_EQ(wake, 100 + 2 * kMs);  // v's next, before s[1] at 200 + 10 ms
  EXPECT_EQ(e.Dequeue(100 + 2 * kMs, &wake), &r[2]);
  EXPECT_EQ(e.Dequeue(100 + 2 * kMs, &wake), nullptr);
  EXPECT_EQ(wake, 200 + 10 * kMs);
  EXPECT_EQ(e.Dequeue(200 + 10 * kMs, &wake), &s[1]);
}

// No credit for idle time: a limited flow back from idling starts at once, then at its rate.
TEST(QosEngine, IdleTimeEarnsNoCredit) {
  Engine e;
  Engine::FlowId v = e.AddVolume(e.AddTenant(FlowPolicy{}), IopsLimit(1000));
  Req r[4];
  for (Req& x : r) x.cost_ns = 10;
  e.Enqueue(v, &r[0], 0);
  EXPECT_EQ(e.Dequeue(0, nullptr), &r[0]);
  for (int i = 1; i < 4; i++) e.Enqueue(v, &r[i], 10 * kS);
  uint64_t wake = 0;
  EXPECT_EQ(e.Dequeue(10 * kS, &wake), &r[1]);
  EXPECT_EQ(e.Dequeue(10 * kS, &wake), nullptr);
  EXPECT_EQ(wake, 10 * kS + kMs);
  EXPECT_EQ(e.Dequeue(wake, &wake), &r[2]);
}

// With a burst, an idle flow may start limit_burst_ns of its limit's rate at once; then its pace.
TEST(QosEngine, IdleTimeEarnsTheLimitsBurstAndNoMore) {
  Engine e(Engine::Options{.limit_burst_ns = 20 * kMs});
  Engine::FlowId v = e.AddVolume(e.AddTenant(FlowPolicy{}), IopsLimit(1000));
  Req r[40];
  for (Req& x : r) x.cost_ns = 10;
  for (Req& x : r) e.Enqueue(v, &x, 10 * kS);
  uint64_t wake = 0;
  int at_once = 0;
  while (e.Dequeue(10 * kS, &wake) != nullptr) at_once++;
  // Tags from now - 20 ms to now: 21 items of a 1,000 IOPS limit.
  EXPECT_EQ(at_once, 21);
  EXPECT_EQ(wake, 10 * kS + kMs);
  EXPECT_NE(e.Dequeue(wake, &wake), nullptr);
  EXPECT_EQ(e.Dequeue(wake, &wake), nullptr);
  // Backlogged since: no new burst while it stays busy, even much later.
  EXPECT_EQ(wake, 10 * kS + 2 * kMs);
}

// A saturating limited flow with a burst: every 1-second window within limit * (1 s + burst).
TEST(QosEngine, ABurstKeepsEveryWindowWithinLimitPlusBurst) {
  DeviceSim sim(Engine::Options{.limit_burst_ns = 20 * kMs});
  Engine& e = sim.engine();
  Engine::FlowId t = e.AddTenant(FlowPolicy{});
  int a = sim.AddClient(e.AddVolume(t, IopsLimit(1000)), 4 * kUs);
  int b = sim.AddClient(e.AddVolume(t, Weight(100)), 4 * kUs);
  sim.Saturate(a);
  sim.Saturate(b);
  sim.Run(3 * kS);
  sim.Stop(a);
  sim.Run(4 * kS);
  sim.Saturate(a);
  sim.Run(7 * kS);
  for (size_t w = 0; w < 7; w++) {
    if (w == 3) continue;  // stopped
    EXPECT_LE(sim.ops(a, w), 1000u + 21u) << "window " << w;
    EXPECT_GE(sim.ops(a, w), 980u) << "window " << w;
  }
}

TEST(QosEngine, BytesLimitChargesBytesAndLetsFlushesPass) {
  Engine e;
  FlowPolicy p;
  p.limit.bytes_per_second = 1'000'000;  // 4096 bytes: 4.096 ms
  Engine::FlowId v = e.AddVolume(e.AddTenant(FlowPolicy{}), p);
  Req a, flush, b;
  a.cost_ns = flush.cost_ns = b.cost_ns = 10;
  a.bytes = b.bytes = 4096;
  e.Enqueue(v, &a, 0);
  e.Enqueue(v, &flush, 0);
  e.Enqueue(v, &b, 0);
  uint64_t wake = 0;
  EXPECT_EQ(e.Dequeue(0, &wake), &a);
  EXPECT_EQ(e.Dequeue(0, &wake), nullptr);  // the flush waits its turn in the FIFO
  EXPECT_EQ(wake, 4'096'000u);
  EXPECT_EQ(e.Dequeue(wake, &wake), &flush);
  EXPECT_EQ(e.Dequeue(4'096'000, &wake), &b);  // a flush moves no bytes
}

TEST(QosEngine, ReservationReleasesAreMarked) {
  Engine e;
  Engine::FlowId t = e.AddTenant(FlowPolicy{});
  Engine::FlowId a = e.AddVolume(t, IopsReservation(1000, 1));
  Engine::FlowId b = e.AddVolume(t, Weight(1000));
  Req ra[2], rb[2];
  for (int i = 0; i < 2; i++) {
    ra[i].cost_ns = rb[i].cost_ns = 100;
    e.Enqueue(a, &ra[i], 0);
    e.Enqueue(b, &rb[i], 0);
  }
  EXPECT_EQ(e.Dequeue(0, nullptr), &ra[0]);  // reservation due: before the heavier weight
  EXPECT_EQ(ra[0].phase(), Phase::kReservation);
  EXPECT_EQ(e.Dequeue(0, nullptr), &rb[0]);  // a's next is due at 1 ms
  EXPECT_EQ(rb[0].phase(), Phase::kWeight);
}

TEST(QosEngine, RemovedFlowsIdsAreReused) {
  Engine e;
  Engine::FlowId t = e.AddTenant(FlowPolicy{});
  Engine::FlowId v = e.AddVolume(t, FlowPolicy{});
  Req r;
  r.cost_ns = 5;
  e.Enqueue(v, &r, 0);
  EXPECT_EQ(e.Dequeue(0, nullptr), &r);
  e.RemoveVolume(v);
  e.RemoveTenant(t);
  Engine::FlowId t2 = e.AddTenant(Weight(7));
  EXPECT_TRUE(t2 == t || t2 == v);
  EXPECT_EQ(e.policy(t2).weight, 7u);
  Engine::FlowId v2 = e.AddVolume(t2, Weight(9));
  e.Enqueue(v2, &r, 1);
  EXPECT_EQ(e.Dequeue(1, nullptr), &r);
}

// ---- 1. Reservations ----------------------------------------------------------------------

// A volume reserving 30% of the device against two saturating neighbours with 1000x its weight.
void ExpectReservationMet(const FlowPolicy& reserving, bool bytes) {
  DeviceSim sim;
  Engine& e = sim.engine();
  Engine::FlowId t = e.AddTenant(FlowPolicy{});
  int a = sim.AddClient(e.AddVolume(t, reserving), 10 * kUs);  // device: 100,000 items/s
  int b = sim.AddClient(e.AddVolume(t, Weight(1000)), 10 * kUs);
  int c = sim.AddClient(e.AddVolume(t, Weight(1000)), 10 * kUs);
  for (int x : {a, b, c}) sim.Saturate(x);
  sim.Run(10 * kS);
  for (size_t w = 0; w < 10; w++) {
    uint64_t got = bytes ? sim.bytes(a, w) : sim.ops(a, w);
    uint64_t want = bytes ? 30'000 * 4096 : 30'000;
    EXPECT_GE(got, want * 95 / 100) << "window " << w;
    // Not more: its weight share is tiny, and the reservation's releases advance its P.
    EXPECT_LE(got, want * 102 / 100) << "window " << w;
  }
}

TEST(QosEngine, ReservationMetAgainstHeavierNeighboursIops) {
  ExpectReservationMet(IopsReservation(30'000, 1), false);
}

TEST(QosEngine, ReservationMetAgainstHeavierNeighboursBytes) {
  FlowPolicy p = Weight(1);
  p.reservation.bytes_per_second = 30'000 * 4096;
  ExpectReservationMet(p, true);
}

// Served alone by weight for 2 s (far more than its reservation), then the heavy neighbours
// arrive: the surplus did not count against the reservation (mClock's R-tag adjustment).
TEST(QosEngine, ReservationHoldsRightAfterAWeightPhaseSurplus) {
  DeviceSim sim;
  Engine& e = sim.engine();
  Engine::FlowId t = e.AddTenant(FlowPolicy{});
  int a = sim.AddClient(e.AddVolume(t, IopsReservation(30'000, 1)), 10 * kUs);
  int b = sim.AddClient(e.AddVolume(t, Weight(1000)), 10 * kUs);
  sim.Saturate(a);
  sim.Run(2 * kS);
  EXPECT_GE(sim.ops(a, 1), 99'000u);
  sim.Saturate(b);
  sim.Run(5 * kS);
  for (size_t w = 2; w < 5; w++) EXPECT_GE(sim.ops(a, w), 28'500u) << "window " << w;
}

// ---- 2. Weights ---------------------------------------------------------------------------

TEST(QosEngine, WeightsSplitTheDevice1To2To4) {
  DeviceSim sim;
  Engine& e = sim.engine();
  Engine::FlowId t = e.AddTenant(FlowPolicy{});
  int c[3];
  uint32_t weights[3] = {100, 200, 400};
  for (int i = 0; i < 3; i++) {
    c[i] = sim.AddClient(e.AddVolume(t, Weight(weights[i])), 10 * kUs);
    sim.Saturate(c[i]);
  }
  sim.Run(5 * kS);
  for (size_t w = 0; w < 5; w++) {
    for (int i = 0; i < 3; i++) {
      ExpectNear(sim.ops(c[i], w), 100'000.0 * weights[i] / 700, 0.02,
                 "window " + std::to_string(w) + " volume " + std::to_string(i));
    }
  }
}

// Shares are of device time: an item four times as costly is served four times less often.
TEST(QosEngine, WeightsShareDeviceTimeNotOperations) {
  DeviceSim sim;
  Engine& e = sim.engine();
  Engine::FlowId t = e.AddTenant(FlowPolicy{});
  int a = sim.AddClient(e.AddVolume(t, Weight(100)), 10 * kUs);
  int b = sim.AddClient(e.AddVolume(t, Weight(100)), 40 * kUs, 65536);
  sim.Saturate(a);
  sim.Saturate(b);
  sim.Run(3 * kS);
  for (size_t w = 0; w < 3; w++) {
    ExpectNear(sim.busy_ns(a, w), kS / 2.0, 0.02, "a");
    ExpectNear(sim.busy_ns(b, w), kS / 2.0, 0.02, "b");
    ExpectNear(sim.ops(a, w), 4.0 * sim.ops(b, w), 0.02, "a vs b ops");
  }
}

// ---- 3. Limits ----------------------------------------------------------------------------

// A limited volume beside a saturating unlimited one (the device, 250,000 items/s, is always
// busy: the limited flow's items come due while another item is on the device).
class QosEngineIopsLimit : public ::testing::TestWithParam<uint64_t> {};

TEST_P(QosEngineIopsLimit, EveryWindowWithin2Percent) {
  uint64_t limit = GetParam();
  DeviceSim sim;
  Engine& e = sim.engine();
  Engine::FlowId t = e.AddTenant(FlowPolicy{});
  int a = sim.AddClient(e.AddVolume(t, IopsLimit(limit)), 4 * kUs);
  int b = sim.AddClient(e.AddVolume(t, Weight(100)), 4 * kUs);
  sim.Saturate(a);
  sim.Saturate(b);
  sim.Run(5 * kS);
  for (size_t w = 0; w < 5; w++)
    ExpectNear(sim.ops(a, w), limit, 0.02, "window " + std::to_string(w));
  // Work-conserving: the neighbour takes the rest.
  ExpectNear(sim.ops(b, 4), 250'000.0 - limit, 0.02, "neighbour");
}

INSTANTIATE_TEST_SUITE_P(Limits, QosEngineIopsLimit,
                         ::testing::Values(100, 1'000, 10'000, 100'000));

struct BytesCase {
  uint64_t bytes_per_second;
  uint32_t item_bytes;
};

class QosEngineBytesLimit : public ::testing::TestWithParam<BytesCase> {};

TEST_P(QosEngineBytesLimit, EveryWindowWithin2Percent) {
  BytesCase bc = GetParam();
  DeviceSim sim;
  Engine& e = sim.engine();
  Engine::FlowId t = e.AddTenant(FlowPolicy{});
  FlowPolicy p;
  p.limit.bytes_per_second = bc.bytes_per_second;
  int a = sim.AddClient(e.AddVolume(t, p), 4 * kUs, bc.item_bytes);
  int b = sim.AddClient(e.AddVolume(t, Weight(100)), 4 * kUs);
  sim.Saturate(a);
  sim.Saturate(b);
  sim.Run(5 * kS);
  for (size_t w = 0; w < 5; w++) {
    ExpectNear(sim.bytes(a, w), bc.bytes_per_second, 0.02, "window " + std::to_string(w));
  }
}

INSTANTIATE_TEST_SUITE_P(Limits, QosEngineBytesLimit,
                         ::testing::Values(BytesCase{1'000'000, 4096}, BytesCase{10'000'000, 16384},
                                           BytesCase{100'000'000, 131072},
                                           BytesCase{1'000'000'000, 1 << 20}));

// A live change, up and down: the new limit holds from the next window on.
TEST(QosEngine, LimitChangeTakesEffectWithinTheNextWindow) {
  DeviceSim sim;
  Engine& e = sim.engine();
  Engine::FlowId t = e.AddTenant(FlowPolicy{});
  Engine::FlowId va = e.AddVolume(t, IopsLimit(1000));
  FlowPolicy bp;
  bp.limit.bytes_per_second = 4'000'000;
  Engine::FlowId vb = e.AddVolume(t, bp);
  int a = sim.AddClient(va, 4 * kUs);
  int b = sim.AddClient(vb, 4 * kUs, 4000);  // 1,000 items/s
  int n = sim.AddClient(e.AddVolume(t, Weight(100)), 4 * kUs);
  for (int x : {a, b, n}) sim.Saturate(x);
  sim.Run(2 * kS + kS / 2);
  e.SetPolicy(va, IopsLimit(5000), sim.now());
  bp.limit.bytes_per_second = 20'000'000;
  e.SetPolicy(vb, bp, sim.now());
  sim.Run(5 * kS + kS / 2);
  e.SetPolicy(va, IopsLimit(200), sim.now());
  bp.limit.bytes_per_second = 800'000;
  e.SetPolicy(vb, bp, sim.now());
  sim.Run(8 * kS);
  struct {
    size_t w;
    double iops, bps;
  } want[] = {{0, 1000, 4e6},  {1, 1000, 4e6},  {3, 5000, 20e6},
              {4, 5000, 20e6}, {6, 200, 0.8e6}, {7, 200, 0.8e6}};
  for (auto& x : want) {
    ExpectNear(sim.ops(a, x.w), x.iops, 0.02, "iops window " + std::to_string(x.w));
    ExpectNear(sim.bytes(b, x.w), x.bps, 0.02, "bytes window " + std::to_string(x.w));
  }
  // The windows of the changes lie between the two limits.
  ExpectNear(sim.ops(a, 2), 3000, 0.02, "window 2");
  ExpectNear(sim.ops(a, 5), 2600, 0.02, "window 5");
}

// The debt of the last release is repaid at the new rate: a limit raised from 1 IOPS (next item
// due in a second) to 10,000 lets the next item run ~100 us later, not a second later.
TEST(QosEngine, RaisedLimitAppliesToTheItemAlreadyWaiting) {
  Engine e;
  Engine::FlowId v = e.AddVolume(e.AddTenant(FlowPolicy{}), IopsLimit(1));
  Req r[3];
  for (Req& x : r) {
    x.cost_ns = 10;
    e.Enqueue(v, &x, 0);
  }
  uint64_t wake = 0;
  EXPECT_EQ(e.Dequeue(0, &wake), &r[0]);
  EXPECT_EQ(e.Dequeue(10 * kMs, &wake), nullptr);
  EXPECT_EQ(wake, kS);
  e.SetPolicy(v, IopsLimit(10'000), 10 * kMs);
  EXPECT_EQ(e.Dequeue(10 * kMs, &wake), nullptr);
  EXPECT_EQ(wake, 10 * kMs + 99 * kUs);  // (1 s - 10 ms) / 10,000
  EXPECT_EQ(e.Dequeue(wake, &wake), &r[1]);
  // A dimension newly set starts now.
  FlowPolicy p = IopsLimit(10'000);
  p.limit.bytes_per_second = 1000;
  e.SetPolicy(v, p, 20 * kMs);
  EXPECT_EQ(e.Dequeue(20 * kMs, &wake), &r[2]);
}

// A new weight applies at once, also to the lead the flow has: from weight 1 (each release puts
// its P 10 us ahead) to 10,000, it gets nearly everything from the next release on.
TEST(QosEngine, WeightChangeTakesEffectAtOnce) {
  DeviceSim sim({}, kMs);
  Engine& e = sim.engine();
  Engine::FlowId t = e.AddTenant(FlowPolicy{});
  Engine::FlowId va = e.AddVolume(t, Weight(1));
  int a = sim.AddClient(va, 10 * kUs);
  int b = sim.AddClient(e.AddVolume(t, Weight(100)), 10 * kUs);
  sim.Saturate(a);
  sim.Saturate(b);
  sim.Run(kS);
  e.SetPolicy(va, Weight(10000), sim.now());
  sim.Run(kS + 2 * kMs);
  EXPECT_GE(sim.ops(a, 1000), 97u);  // of 100
  EXPECT_GE(sim.ops(a, 1001), 98u);
}

// A limited volume starved by a much heavier neighbour banks no rate: when the neighbour
// leaves, it still gets only its limit (its L tag lags now by at most max_lag_ns).
TEST(QosEngine, LimitHoldsWhenCompetitionEnds) {
  DeviceSim sim;
  Engine& e = sim.engine();
  Engine::FlowId t = e.AddTenant(FlowPolicy{});
  int a = sim.AddClient(e.AddVolume(t, IopsLimit(20'000, 1)), 10 * kUs);
  int b = sim.AddClient(e.AddVolume(t, Weight(1000)), 10 * kUs);
  sim.Saturate(a);
  sim.Saturate(b);
  sim.Run(2 * kS);
  EXPECT_LT(sim.ops(a, 1), 1000u);
  sim.Stop(b);
  sim.Run(4 * kS);
  ExpectNear(sim.ops(a, 2), 20'000, 0.02, "window 2");
  ExpectNear(sim.ops(a, 3), 20'000, 0.02, "window 3");
}

// ---- 4. Work conservation -----------------------------------------------------------------

// Reservations, weights, priorities, tenants, and limits far above the device's capacity;
// saturating and bursty open-loop clients: the device never idles while anything is queued.
TEST(QosEngine, DeviceNeverIdlesWhileItemsAreQueued) {
  DeviceSim sim;
  Engine& e = sim.engine();
  FlowPolicy tp = Weight(300);
  tp.limit = {10'000'000, 1ull << 40};
  Engine::FlowId t1 = e.AddTenant(tp);
  Engine::FlowId t2 = e.AddTenant(IopsReservation(5000, 50));
  std::vector<int> clients;
  for (int i = 0; i < 8; i++) {
    FlowPolicy p = Weight(50 + 100 * i, static_cast<Priority>(i % 3));
    p.limit = {1'000'000u + i, 1ull << 39};
    if (i % 4 == 1) p.reservation.iops = 3000;
    Engine::FlowId v = e.AddVolume(i < 5 ? t1 : t2, p);
    clients.push_back(sim.AddClient(v, (5 + 3 * i) * kUs, 4096u << (i % 4)));
  }
  sim.Saturate(clients[0]);
  sim.Saturate(clients[6]);
  std::mt19937_64 rng(42);
  std::exponential_distribution<double> gap(1.0 / 200e3);  // ns: ~5,000 items/s each
  for (int c : clients) {
    double at = 0;
    while (at < 3e9) {
      at += gap(rng);
      sim.ArriveAt(c, static_cast<uint64_t>(at));
    }
  }
  sim.Run(kS);
  sim.Stop(clients[0]);  // idle periods: only the open-loop arrivals now
  sim.Run(2 * kS);
  sim.Saturate(clients[0]);
  sim.Stop(clients[6]);
  sim.Run(3 * kS);
  EXPECT_EQ(sim.held(), 0u);
  EXPECT_EQ(sim.held_ns(), 0u);
  // Everyone but the background volumes without reservation (i = 2) got something.
  for (int i = 0; i < 8; i++) {
    if (i != 2) {
      EXPECT_GT(sim.total_ops(clients[i]), 0u) << "volume " << i;
    }
  }
}

// Random policies and open-loop traffic: no release ever exceeds a limit (a volume's or its
// tenant's, in either dimension) beyond what the start tags and max_lag_ns allow:
// items i..j released at t_i..t_j moved at most (t_j - t_i + max_lag) * rate, plus item j.
TEST(QosEngine, RandomTrafficNeverExceedsALimit) {
  for (uint64_t seed = 1; seed <= 4; seed++) {
    DeviceSim sim;
    sim.keep_log = true;
    Engine& e = sim.engine();
    std::mt19937_64 rng(seed);
    auto pick = [&](uint64_t lo, uint64_t hi) { return lo + rng() % (hi - lo + 1); };
    std::vector<Engine::FlowId> tenants;
    std::vector<FlowPolicy> tenant_policy;
    for (int i = 0; i < 3; i++) {
      FlowPolicy p = Weight(static_cast<uint32_t>(pick(1, 1000)));
      if (rng() % 2) p.limit.iops = pick(2'000, 40'000);
      if (rng() % 2) p.limit.bytes_per_second = pick(10, 200) << 20;
      if (rng() % 3 == 0) p.reservation.iops = pick(100, 5'000);
      tenants.push_back(e.AddTenant(p));
      tenant_policy.push_back(p);
    }
    struct Vol {
      int tenant;
      FlowPolicy p;
    };
    std::vector<Vol> vols;
    for (int i = 0; i < 10; i++) {
      FlowPolicy p = Weight(static_cast<uint32_t>(pick(1, 1000)), static_cast<Priority>(rng() % 3));
      if (rng() % 2) p.limit.iops = pick(500, 30'000);
      if (rng() % 2) p.limit.bytes_per_second = pick(5, 100) << 20;
      if (rng() % 3 == 0) p.reservation.bytes_per_second = pick(1, 20) << 20;
      int tn = static_cast<int>(rng() % 3);
      int c = sim.AddClient(e.AddVolume(tenants[tn], p), pick(2, 30) * kUs,
                            static_cast<uint32_t>(512 << pick(0, 8)));
      EXPECT_EQ(c, i);
      vols.push_back({tn, p});
      double at = 0, mean = 1e9 / static_cast<double>(pick(1'000, 60'000));
      std::exponential_distribution<double> gap(1.0 / mean);
      while (at < 1e9) {
        at += gap(rng) * ((at / 1e8) - std::floor(at / 1e8) < 0.5 ? 0.5 : 4);
        sim.ArriveAt(c, static_cast<uint64_t>(at));
      }
    }
    sim.Run(2 * kS);
    // Checks one flow: `member` selects its releases.
    auto check = [&](const FlowPolicy& p, auto member, const std::string& what) {
      const double lag = static_cast<double>(Engine::Options{}.max_lag_ns);
      for (int dim = 0; dim < 2; dim++) {
        uint64_t rate = dim ? p.limit.bytes_per_second : p.limit.iops;
        if (rate == 0) continue;
        // With U_k the units released before item k and X_k = U_k * 1e9 - t_k * rate:
        // X_j - X_i <= lag * rate for all i < j (exact integers).
        using I128 = __int128;
        I128 units = 0, min_x = 0, worst = 0;
        bool first = true;
        for (const auto& rel : sim.log()) {
          if (!member(rel.client)) continue;
          I128 x = units * 1'000'000'000 - static_cast<I128>(rel.t_ns) * static_cast<I128>(rate);
          if (!first) worst = std::max(worst, x - min_x);
          min_x = first ? x : std::min(min_x, x);
          first = false;
          units += dim ? rel.bytes : 1;
        }
        // (+1 ns: a tag is compared with now in whole ns, its fraction of a ns carried apart.)
        EXPECT_LE(static_cast<double>(worst), (lag + 1) * static_cast<double>(rate))
            << what << " dim " << dim << " seed " << seed;
      }
    };
    for (int i = 0; i < 10; i++) {
      check(
          vols[i].p, [&](int c) { return c == i; }, "volume " + std::to_string(i));
    }
    for (int tn = 0; tn < 3; tn++) {
      check(
          tenant_policy[tn], [&](int c) { return vols[c].tenant == tn; },
          "tenant " + std::to_string(tn));
    }
  }
}

// ---- 6. Idle return -----------------------------------------------------------------------

TEST(QosEngine, VolumeBackFromIdleGetsItsShareNotABurst) {
  DeviceSim sim({}, 10 * kMs);  // 10 ms windows: 1,000 items each
  Engine& e = sim.engine();
  Engine::FlowId t = e.AddTenant(FlowPolicy{});
  int c[3];
  for (int& x : c) x = sim.AddClient(e.AddVolume(t, Weight(100)), 10 * kUs);
  sim.Saturate(c[1]);
  sim.Saturate(c[2]);
  sim.Run(10 * kS);
  sim.Saturate(c[0]);
  sim.Run(11 * kS);
  uint64_t sum[3] = {};
  for (size_t w = 1000; w < 1100; w++) {
    for (int i = 0; i < 3; i++) {
      ExpectNear(sim.ops(c[i], w), 1000.0 / 3, 0.1, "window " + std::to_string(w));
      sum[i] += sim.ops(c[i], w);
    }
  }
  for (uint64_t s : sum) ExpectNear(s, 100'000.0 / 3, 0.02, "second 10");
}

// Nor do its reservation and limit: their tags restart at now.
TEST(QosEngine, LimitedVolumeBackFromIdleGetsNoBurst) {
  DeviceSim sim({}, 10 * kMs);
  Engine& e = sim.engine();
  Engine::FlowId t = e.AddTenant(FlowPolicy{});
  FlowPolicy p = IopsLimit(1000, 1);
  p.reservation.iops = 500;
  int a = sim.AddClient(e.AddVolume(t, p), 10 * kUs);
  int b = sim.AddClient(e.AddVolume(t, Weight(1000)), 10 * kUs);
  sim.Saturate(a, 1);
  sim.Saturate(b);
  sim.Run(kS);
  sim.Stop(a);
  sim.Run(11 * kS);
  sim.Saturate(a);
  sim.Run(12 * kS);
  uint64_t sum = 0;
  for (size_t w = 1100; w < 1200; w++) {
    EXPECT_LE(sim.ops(a, w), 11u) << "window " << w;
    sum += sim.ops(a, w);
  }
  EXPECT_GE(sum, 490u);
  EXPECT_LE(sum, 1020u);
}

// ---- 7. Priorities ------------------------------------------------------------------------

TEST(QosEngine, BackgroundGetsOnlyWhatOthersLeave) {
  DeviceSim sim;
  Engine& e = sim.engine();
  Engine::FlowId t = e.AddTenant(FlowPolicy{});
  int bg = sim.AddClient(e.AddVolume(t, Weight(10000, Priority::kBackground)), 10 * kUs);
  Engine::FlowId vs = e.AddVolume(t, Weight(1));
  int s = sim.AddClient(vs, 10 * kUs);
  sim.Saturate(bg);
  sim.Saturate(s);
  sim.Run(2 * kS);
  EXPECT_EQ(sim.ops(bg, 0), 0u);
  EXPECT_EQ(sim.ops(bg, 1), 0u);
  e.SetPolicy(vs, IopsLimit(60'000, 1), sim.now());
  sim.Run(4 * kS);
  ExpectNear(sim.ops(s, 3), 60'000, 0.02, "standard, limited");
  ExpectNear(sim.ops(bg, 3), 40'000, 0.02, "background, the rest");
  sim.Stop(s);
  sim.Run(6 * kS);
  ExpectNear(sim.ops(bg, 5), 100'000, 0.02, "background alone");
}

// Reservations come first, whatever the class; then critical before standard, whatever the
// weights.
TEST(QosEngine, CriticalBeforeStandardOnceReservationsAreMet) {
  DeviceSim sim;
  Engine& e = sim.engine();
  Engine::FlowId t = e.AddTenant(FlowPolicy{});
  int cr = sim.AddClient(e.AddVolume(t, Weight(1, Priority::kCritical)), 10 * kUs);
  int st = sim.AddClient(e.AddVolume(t, IopsReservation(20'000, 10000)), 10 * kUs);
  FlowPolicy bp = IopsReservation(10'000, 10000);
  bp.priority = Priority::kBackground;
  int bg = sim.AddClient(e.AddVolume(t, bp), 10 * kUs);
  int st2 = sim.AddClient(e.AddVolume(t, Weight(10000)), 10 * kUs);
  for (int x : {cr, st, bg, st2}) sim.Saturate(x);
  sim.Run(3 * kS);
  for (size_t w = 0; w < 3; w++) {
    ExpectNear(sim.ops(cr, w), 70'000, 0.02, "critical");
    ExpectNear(sim.ops(st, w), 20'000, 0.02, "standard, reserved");
    ExpectNear(sim.ops(bg, w), 10'000, 0.02, "background, reserved");
    EXPECT_EQ(sim.ops(st2, w), 0u);
  }
}

// A flow joining a class's competition starts at the smallest P there, not at a starved
// background flow's: neither a volume (inside its tenant) nor a tenant (at the root, whose
// background volume had kept it competing in the background class only) bursts ahead.
TEST(QosEngine, JoiningAClassStartsAtItsCompetitorsP) {
  DeviceSim sim;
  Engine& e = sim.engine();
  Engine::FlowId ta = e.AddTenant(FlowPolicy{});
  Engine::FlowId tb = e.AddTenant(FlowPolicy{});
  int a_bg = sim.AddClient(e.AddVolume(ta, Weight(100, Priority::kBackground)), 10 * kUs);
  int a_std = sim.AddClient(e.AddVolume(ta, Weight(100)), 10 * kUs);
  int b1 = sim.AddClient(e.AddVolume(tb, Weight(100)), 10 * kUs);
  int b2 = sim.AddClient(e.AddVolume(tb, Weight(100)), 10 * kUs);
  int b_bg = sim.AddClient(e.AddVolume(tb, Weight(100, Priority::kBackground)), 10 * kUs);
  for (int c : {a_bg, b1, b_bg}) sim.Saturate(c);
  sim.Run(2 * kS);
  EXPECT_EQ(sim.total_ops(a_bg) + sim.total_ops(b_bg), 0u);
  sim.Saturate(a_std);  // tenant a joins the standard class at the root
  sim.Saturate(b2);     // b2 joins b1 inside tenant b (beside starved b_bg)
  sim.Run(3 * kS);
  ExpectNear(sim.ops(a_std, 2), 50'000, 0.02, "tenant a's standard volume");
  ExpectNear(sim.ops(b1, 2), 25'000, 0.02, "b1");
  ExpectNear(sim.ops(b2, 2), 25'000, 0.02, "b2");
}

// A tenant's class applies to its volumes: background if either is, else critical if either is.
TEST(QosEngine, TenantPriorityAppliesToItsVolumes) {
  DeviceSim sim;
  Engine& e = sim.engine();
  Engine::FlowId tb = e.AddTenant(Weight(100, Priority::kBackground));
  Engine::FlowId tc = e.AddTenant(Weight(100, Priority::kCritical));
  Engine::FlowId ts = e.AddTenant(Weight(10000));
  int in_bg = sim.AddClient(e.AddVolume(tb, Weight(100, Priority::kCritical)), 10 * kUs);
  int in_cr = sim.AddClient(e.AddVolume(tc, IopsLimit(30'000)), 10 * kUs);
  int in_st = sim.AddClient(e.AddVolume(ts, IopsLimit(50'000)), 10 * kUs);
  for (int x : {in_bg, in_cr, in_st}) sim.Saturate(x);
  sim.Run(2 * kS);
  ExpectNear(sim.ops(in_cr, 1), 30'000, 0.02, "critical tenant");
  ExpectNear(sim.ops(in_st, 1), 50'000, 0.02, "standard tenant");
  ExpectNear(sim.ops(in_bg, 1), 20'000, 0.02, "background tenant");
  // Live: the background tenant becomes standard; its critical volume now goes first.
  e.SetPolicy(tb, Weight(100), sim.now());
  sim.Run(4 * kS);
  ExpectNear(sim.ops(in_bg, 3), 70'000, 0.02, "now critical");
  ExpectNear(sim.ops(in_cr, 3), 30'000, 0.02, "critical tenant, after");
  EXPECT_EQ(sim.ops(in_st, 3), 0u);
}

}  // namespace
}  // namespace spd::qos
