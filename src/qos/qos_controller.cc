// The latency controller (blk-iolatency's idea, over IOPS limits): while a volume misses its
// latency target, volumes with a looser target or none are held to 70% of the rate they got
// (never below 10% of what they did when this began, so that a target the device cannot meet
// does not starve everyone); while every target is met, those limits grow by 20% a tick and go
// once they no longer bind. Every tick_ns while requests flow; no timer when idle.
#include <algorithm>

#include "common/counters.h"
#include "qos/qos_internal.h"

namespace spd::qos {
namespace {

Counter throttles_total("spd_qos_latency_throttles_total",
                        "Times the latency controller lowered a volume's IOPS because a volume "
                        "with a tighter latency target missed it.");
Gauge throttled_gauge("spd_qos_latency_throttled_volumes",
                      "Volumes the latency controller holds to an IOPS limit now.");

constexpr double kCut = 0.7;
constexpr double kGrow = 1.2;
// Never below: a throttled volume still makes progress, and a target the device cannot meet
// at all (violated whatever the others do) does not starve everyone else.
constexpr double kFloorIops = 10;
constexpr double kFloorShare = 0.1;  // of the rate when the throttle began
// A target is judged in a tick only from this many requests.
constexpr uint64_t kTickOpsMin = 10;

}  // namespace

FlowPolicy QosScheduler::Shard::Effective(const ShardVolume* sv) const {
  FlowPolicy p = sv->intent.flow;
  if (sv->throttle_iops > 0) {
    const auto t = static_cast<uint64_t>(sv->throttle_iops);
    p.limit.iops = p.limit.iops ? std::min(p.limit.iops, t) : t;
    // A reservation above the throttle would be refused by the engine's limit anyway; keep
    // the policy consistent.
    if (p.reservation.iops > p.limit.iops) p.reservation.iops = p.limit.iops;
  }
  return p;
}

void QosScheduler::Shard::ArmTick(uint64_t now) {
  if (last_tick_ns == 0) last_tick_ns = now;
  reactor->ArmTimer(&tick, now + s->options_.tick_ns);
}

void QosScheduler::Shard::OnTick(Timer* t) {
  Shard* sh = static_cast<TickTimer*>(t)->shard;
  sh->Tick(MonotonicNs());
}

void QosScheduler::Shard::Tick(uint64_t now) {
  const double secs = std::max(1e-3, static_cast<double>(now - last_tick_ns) / 1e9);
  last_tick_ns = now;
  // 1. Which targets were missed here this tick.
  uint64_t missed_bound = UINT64_MAX;
  bool at_risk = false;
  bool active = false;
  for (auto& sv : volumes) {
    active = active || sv->tick_ops > 0;
    const LatencyGoal& g = sv->intent.latency;
    if (g.empty() || sv->tick_ops < kTickOpsMin) continue;
    const double allowed = (1.0 - g.percentile / 100.0) * static_cast<double>(sv->tick_ops);
    if (static_cast<double>(sv->tick_missed) > allowed) {
      missed_bound = std::min(missed_bound, g.bound_ns);
    } else if (static_cast<double>(sv->tick_missed) > allowed / 2) {
      at_risk = true;
    }
  }
  if (missed_bound != UINT64_MAX) {
    // Tell the other shards (their volumes may be the ones crowding this one's).
    s->miss_bound_ns_.store(missed_bound, std::memory_order_relaxed);
    s->miss_at_ns_.store(now, std::memory_order_release);
  } else if (now - s->miss_at_ns_.load(std::memory_order_acquire) < 2 * s->options_.tick_ns) {
    missed_bound = s->miss_bound_ns_.load(std::memory_order_relaxed);
  }
  // 2. Throttle the looser volumes, or let them go.
  bool throttled = false;
  for (auto& sv : volumes) {
    const LatencyGoal& g = sv->intent.latency;
    const double rate = static_cast<double>(sv->tick_ops) / secs;
    double want = sv->throttle_iops;
    if (missed_bound != UINT64_MAX && (g.empty() || g.bound_ns > missed_bound)) {
      // Only volumes that were doing something crowd the device.
      if (sv->tick_ops > 0) {
        if (want == 0) sv->throttle_floor = std::max(kFloorIops, rate * kFloorShare);
        const double cut = std::max(sv->throttle_floor, rate * kCut);
        if (want == 0 || cut < want) {
          want = cut;
          throttles_total.Add();
        }
      }
    } else if (want > 0 && !at_risk) {
      want *= kGrow;
      // No longer binding: the volume does less than the limit allows.
      if (rate < want / (kGrow * kGrow)) want = 0;
    }
    if (want != sv->throttle_iops) {
      if ((want > 0) != (sv->throttle_iops > 0)) throttled_gauge.Add(want > 0 ? 1 : -1);
      sv->throttle_iops = want;
      engine.SetPolicy(sv->flow, Effective(sv.get()), now);
    }
    throttled = throttled || want > 0;
    sv->tick_ops = 0;
    sv->tick_missed = 0;
  }
  Pump(now);
  Sweep();
  // Idle and nothing held back: no timer until the next request.
  if (active || throttled || !retiring.empty()) ArmTick(now);
}

}  // namespace spd::qos
