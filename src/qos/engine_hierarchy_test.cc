// qos::Engine's two levels (a tenant's policy applies to the sum of its volumes) and Credit (a
// flow served by two engines, standing for two reactors, keeps one limit and one reservation),
// on the modelled device of engine_test_sim.h.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>

#include "qos/engine.h"
#include "qos/engine_test_sim.h"

namespace spd::qos {
namespace {

using testing::DeviceSim;
using testing::Req;
constexpr uint64_t kS = DeviceSim::kSecond;
constexpr uint64_t kUs = 1'000;

FlowPolicy Weight(uint32_t w) {
  FlowPolicy f;
  f.weight = w;
  return f;
}

void ExpectNear(double got, double want, double frac, const std::string& what) {
  EXPECT_LE(std::fabs(got - want), frac * want) << what << ": got " << got << ", want " << want;
}

// ---- 5. Hierarchy -------------------------------------------------------------------------

TEST(QosEngineHierarchy, TenantLimitCapsTheSumOfItsVolumes) {
  DeviceSim sim;
  Engine& e = sim.engine();
  FlowPolicy tp;
  tp.limit.iops = 20'000;
  Engine::FlowId t1 = e.AddTenant(tp);
  Engine::FlowId t2 = e.AddTenant(FlowPolicy{});
  int v[3];
  uint32_t weights[3] = {100, 100, 200};
  for (int i = 0; i < 3; i++) v[i] = sim.AddClient(e.AddVolume(t1, Weight(weights[i])), 10 * kUs);
  int other = sim.AddClient(e.AddVolume(t2, FlowPolicy{}), 10 * kUs);
  for (int x : {v[0], v[1], v[2], other}) sim.Saturate(x);
  sim.Run(4 * kS);
  for (size_t w = 0; w < 4; w++) {
    uint64_t sum = 0;
    for (int i = 0; i < 3; i++) {
      sum += sim.ops(v[i], w);
      ExpectNear(sim.ops(v[i], w), 20'000.0 * weights[i] / 400, 0.03, "volume share");
    }
    ExpectNear(sum, 20'000, 0.02, "tenant sum, window " + std::to_string(w));
    ExpectNear(sim.ops(other, w), 80'000, 0.02, "the other tenant");
  }
}

TEST(QosEngineHierarchy, TenantBytesLimitCapsTheSumOfItsVolumes) {
  DeviceSim sim;
  Engine& e = sim.engine();
  FlowPolicy tp;
  tp.limit.bytes_per_second = 40'000'000;
  Engine::FlowId t1 = e.AddTenant(tp);
  int a = sim.AddClient(e.AddVolume(t1, FlowPolicy{}), 10 * kUs, 4096);
  int b = sim.AddClient(e.AddVolume(t1, FlowPolicy{}), 10 * kUs, 16384);
  int other = sim.AddClient(e.AddVolume(e.AddTenant(FlowPolicy{}), FlowPolicy{}), 10 * kUs);
  for (int x : {a, b, other}) sim.Saturate(x);
  sim.Run(3 * kS);
  for (size_t w = 0; w < 3; w++) {
    ExpectNear(sim.bytes(a, w) + sim.bytes(b, w), 40e6, 0.02, "tenant bytes");
    // Inside the tenant, equal weights: equal device time (equal costs here).
    ExpectNear(sim.ops(a, w), sim.ops(b, w), 0.03, "volumes");
  }
}

// Tenants split by their weights however many volumes each runs.
TEST(QosEngineHierarchy, TenantWeightsIgnoreHowManyVolumesEachHas) {
  DeviceSim sim;
  Engine& e = sim.engine();
  struct {
    uint32_t weight;
    int volumes;
    double share;
  } tenants[] = {{100, 1, 0.25}, {100, 5, 0.25}, {200, 2, 0.5}};
  std::vector<std::vector<int>> clients(3);
  for (int i = 0; i < 3; i++) {
    Engine::FlowId t = e.AddTenant(Weight(tenants[i].weight));
    for (int k = 0; k < tenants[i].volumes; k++) {
      clients[i].push_back(sim.AddClient(e.AddVolume(t, Weight(100)), (5 + 5 * k) * kUs));
      sim.Saturate(clients[i].back());
    }
  }
  sim.Run(3 * kS);
  for (size_t w = 0; w < 3; w++) {
    for (int i = 0; i < 3; i++) {
      uint64_t busy = 0;
      for (int c : clients[i]) busy += sim.busy_ns(c, w);
      ExpectNear(busy, tenants[i].share * kS, 0.02, "tenant " + std::to_string(i));
      for (int c : clients[i]) {
        ExpectNear(sim.busy_ns(c, w), tenants[i].share * kS / tenants[i].volumes, 0.03,
                   "volume of tenant " + std::to_string(i));
      }
    }
  }
}

TEST(QosEngineHierarchy, TenantReservationCoversItsVolumes) {
  DeviceSim sim;
  Engine& e = sim.engine();
  FlowPolicy tp = Weight(1);
  tp.reservation.iops = 30'000;
  Engine::FlowId t1 = e.AddTenant(tp);
  int v[3];
  uint32_t weights[3] = {100, 100, 200};
  for (int i = 0; i < 3; i++) v[i] = sim.AddClient(e.AddVolume(t1, Weight(weights[i])), 10 * kUs);
  int other = sim.AddClient(e.AddVolume(e.AddTenant(Weight(10000)), FlowPolicy{}), 10 * kUs);
  for (int x : {v[0], v[1], v[2], other}) sim.Saturate(x);
  sim.Run(3 * kS);
  for (size_t w = 0; w < 3; w++) {
    uint64_t sum = sim.ops(v[0], w) + sim.ops(v[1], w) + sim.ops(v[2], w);
    EXPECT_GE(sum, 28'500u) << "window " << w;
    EXPECT_LE(sum, 30'600u) << "window " << w;
    for (int i = 0; i < 3; i++) {
      ExpectNear(sim.ops(v[i], w), sum * weights[i] / 400.0, 0.03, "volume share");
    }
  }
}

// Volumes reserving more than their tenant's limit get the limit.
TEST(QosEngineHierarchy, TenantLimitWinsOverVolumeReservations) {
  DeviceSim sim;
  Engine& e = sim.engine();
  FlowPolicy tp;
  tp.limit.iops = 10'000;
  Engine::FlowId t1 = e.AddTenant(tp);
  FlowPolicy r1, r2;
  r1.reservation.iops = 20'000;
  r2.reservation.iops = 5'000;
  int a = sim.AddClient(e.AddVolume(t1, r1), 10 * kUs);
  int b = sim.AddClient(e.AddVolume(t1, r2), 10 * kUs);
  int other = sim.AddClient(e.AddVolume(e.AddTenant(FlowPolicy{}), FlowPolicy{}), 10 * kUs);
  for (int x : {a, b, other}) sim.Saturate(x);
  sim.Run(3 * kS);
  for (size_t w = 0; w < 3; w++) {
    ExpectNear(sim.ops(a, w) + sim.ops(b, w), 10'000, 0.02, "tenant sum");
    ExpectNear(sim.ops(other, w), 90'000, 0.02, "the other tenant");
  }
}

// ---- 8. Credit ----------------------------------------------------------------------------

// Two engines (two reactors, each with its own device) with the same tenant and volume, each
// credited now and then with what the other released for the shared volume.
struct TwoEngines {
  DeviceSim sim[2];
  Engine::FlowId vol[2];
  int shared[2], neighbour[2];
  Served pending[2];  // released by engine i, not yet credited to the other
  bool credit = true;
  std::mt19937_64 rng{7};

  // The neighbour's tenant weighs `neighbour_weight` (the shared flow's tenant: its policy's).
  TwoEngines(const FlowPolicy& tenant, const FlowPolicy& volume, uint32_t neighbour_weight = 100) {
    for (int i = 0; i < 2; i++) {
      Engine& e = sim[i].engine();
      vol[i] = e.AddVolume(e.AddTenant(tenant), volume);
      shared[i] = sim[i].AddClient(vol[i], 10 * kUs);
      neighbour[i] = sim[i].AddClient(
          e.AddVolume(e.AddTenant(Weight(neighbour_weight)), Weight(100)), 10 * kUs);
      sim[i].Saturate(neighbour[i]);
      sim[i].on_release = [this, i](const Req& r, uint64_t) {
        if (r.client != shared[i]) return;
        pending[i].ops++;
        pending[i].bytes += r.bytes;
        if (r.phase() == Phase::kReservation) {
          pending[i].reserved_ops++;
          pending[i].reserved_bytes += r.bytes;
        }
      };
    }
  }
  // Every 50-150 us (random: messages between reactors do not keep a beat) each engine is
  // credited with what the other released since.
  void Run(uint64_t until) {
    for (uint64_t t = sim[0].now(); t < until;) {
      t = std::min(until, t + 50 * kUs + rng() % (100 * kUs));
      for (int i = 0; i < 2; i++) sim[i].Run(t);
      for (int i = 0; i < 2; i++) {
        if (credit) sim[1 - i].engine().Credit(vol[1 - i], pending[i], t);
        pending[i] = Served{};
      }
    }
  }
  uint64_t ops(size_t w) const { return sim[0].ops(shared[0], w) + sim[1].ops(shared[1], w); }
};

// (Equal tenant weights: the shared flow's weight share, half of one device, is far above its
// limit, so that the limit binds even when one engine serves it alone.)
TEST(QosEngineCredit, SharedVolumeKeepsOneLimitAcrossTwoEngines) {
  FlowPolicy vp;
  vp.limit.iops = 10'000;
  TwoEngines two(FlowPolicy{}, vp);
  two.sim[0].Saturate(two.shared[0]);
  two.Run(2 * kS);  // served on one engine only
  two.sim[1].Saturate(two.shared[1]);
  two.Run(5 * kS);  // then on both
  for (size_t w : {0, 1, 3, 4}) ExpectNear(two.ops(w), 10'000, 0.02, "window " + std::to_string(w));
  // Both engines serve it once both have work.
  EXPECT_GT(two.sim[1].ops(two.shared[1], 4), 3'000u);
  EXPECT_GT(two.sim[0].ops(two.shared[0], 4), 3'000u);
}

TEST(QosEngineCredit, SharedTenantKeepsOneLimitAcrossTwoEngines) {
  FlowPolicy tp;
  tp.limit.iops = 10'000;
  TwoEngines two(tp, FlowPolicy{});
  for (int i = 0; i < 2; i++) two.sim[i].Saturate(two.shared[i]);
  two.Run(3 * kS);
  for (size_t w = 0; w < 3; w++)
    ExpectNear(two.ops(w), 10'000, 0.02, "window " + std::to_string(w));
}

// A reservation of 30,000 IOPS for the flow as a whole, against heavy neighbours on both
// engines: together they give it its reservation, not twice.
TEST(QosEngineCredit, SharedVolumeGetsOneReservationAcrossTwoEngines) {
  FlowPolicy vp = Weight(1);
  vp.reservation.iops = 30'000;
  TwoEngines two(Weight(1), vp, 1000);
  for (int i = 0; i < 2; i++) two.sim[i].Saturate(two.shared[i]);
  two.Run(3 * kS);
  for (size_t w = 0; w < 3; w++) {
    EXPECT_GE(two.ops(w), 28'500u) << "window " << w;
    EXPECT_LE(two.ops(w), 31'500u) << "window " << w;
  }
}

// Crediting an idle flow delays its next start here: service elsewhere used the limit (all but
// max_lag_ns of it, the lag any backlogged flow may have).
TEST(QosEngineCredit, CreditOnAnIdleFlowDelaysItsNextStart) {
  Engine e;
  FlowPolicy vp;
  vp.limit.iops = 1000;
  Engine::FlowId v = e.AddVolume(e.AddTenant(FlowPolicy{}), vp);
  Served s;
  s.ops = 5;
  e.Credit(v, s, 10 * kS);  // five served elsewhere lately: 5 ms of the limit
  Req r;
  r.cost_ns = 1;
  e.Enqueue(v, &r, 10 * kS + 1000);
  uint64_t wake = 0;
  EXPECT_EQ(e.Dequeue(10 * kS + 1000, &wake), nullptr);
  EXPECT_EQ(wake, 10 * kS + 5'000'000 - Engine::Options{}.max_lag_ns);
  EXPECT_EQ(e.Dequeue(wake, &wake), &r);
}

}  // namespace
}  // namespace spd::qos
