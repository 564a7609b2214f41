// The latency controller (blk-iolatency's idea, over outstanding device time rather than rates).
//
// Every tick_ns while requests flow, each shard judges its volumes' latency targets against
// 80% of their bounds (ControllerAimNs) (the target is judged over whole windows; aiming below it
// leaves room for the ticks the controller needs to react). When one is missed, on any shard, every
// shard starts protecting it: volumes with a looser target or none ("loose") may keep at most a cap
// of device time outstanding, so that the tighter volume's next request finds a unit of the device
// free instead of queueing inside the device behind theirs, where no scheduler can reorder it. The
// cap starts at the device's parallelism less one unit (a 4 KiB read's cost: one unit kept free)
// and is cut to kCut of itself on each further miss (never below one unit). After kHoldTicks of
// targets met it grows (kGrowRate a tick, at least kGrowUnits) towards kBelowMiss of the cap at
// which the last miss happened, but not below that first ceiling: so a device that serves far
// more at once than its model's parallelism (a virtual disk) leaves the others what the target
// does not need, and one whose model is right stays at one unit kept free. Every kProbeTicks
// calm ticks it probes a quarter higher. A request is released only if the loose volumes'
// outstanding stays within the cap (one at a time below it). The cap goes once no volume with a
// latency target has had requests for kIdleTicks. The loose volumes keep the rest of the device:
// nothing changes their rates, reservations or weights among themselves.
#include <algorithm>

#include "common/counters.h"
#include "qos/qos_internal.h"

namespace spd::qos {
namespace {

Counter cuts_total("spd_qos_latency_throttles_total",
                   "Times the latency controller lowered the device time that volumes with a "
                   "looser latency target (or none) may keep outstanding, because a volume "
                   "with a tighter target missed it.");
Gauge capped_gauge("spd_qos_latency_capped_shards",
                   "Reactors on which the latency controller caps the device time of volumes "
                   "with a looser latency target (or none) now.");

constexpr double kCut = 0.7;
constexpr double kGrowUnits = 0.25;
constexpr uint32_t kHoldTicks = 5;
constexpr double kGrowRate = 1.1;      // or kGrowUnits, whichever is more
constexpr double kBelowMiss = 0.9;     // of the cap at the last miss
constexpr uint32_t kProbeTicks = 300;  // 30 s
constexpr uint64_t kIdleTicks = 10;
Counter budget_steps_total("spd_qos_budget_steps_total",
                           "Times a reactor's adaptive device budget changed (grew by 25% while "
                           "throughput grew with it, or stepped back).");
constexpr double kBudgetStep = 1.25;
constexpr double kBudgetGain = 1.05;
constexpr double kBudgetFar = 1.15;  // a step that gained this much: the next is a leap
constexpr double kBudgetLeap = 1.5;
constexpr uint32_t kBudgetTicks = 2;
constexpr uint32_t kBudgetHoldTicks = 10;
// A target is judged in a tick only from this many requests.
constexpr uint64_t kTickOpsMin = 10;
Gauge deep_gauge("spd_qos_deep_shards",
                 "Reactors whose volumes lately have no intent that needs requests held back "
                 "(reservation, weight or priority other than the default, latency target): "
                 "they keep the device at its calibrated depth, as FIFO would.");

// A share the scheduler can give only by holding requests back while others wait. A limit is
// not one: pacing holds it at any budget.
bool Holds(const FlowPolicy& p) {
  return !p.reservation.empty() || p.weight != FlowPolicy{}.weight ||
         p.priority != Priority::kStandard;
}

}  // namespace

void QosScheduler::Shard::SetDeep(bool d) {
  if (d == deep) return;
  deep = d;
  deep_gauge.Add(d ? 1 : -1);
  // Another base: the adaptive budget starts over from it.
  budget_scale = 1.0;
  base_rate = 0;
  probe_ticks = 0;
  meas_done_ns = meas_elapsed_ns = 0;
  SetBudgetBase(BaseBudget() / share_of);
}

void QosScheduler::Shard::ArmTick(uint64_t now) {
  last_tick_ns = now;  // after an idle spell too: a tick covers only time with requests
  reactor->ArmTimer(&tick, now + s->options_.tick_ns);
}

void QosScheduler::Shard::OnTick(Timer* t) {
  Shard* sh = static_cast<TickTimer*>(t)->shard;
  sh->Tick(MonotonicNs());
}

// Hill climbing on the budget. While requests wait for it, measure the device time completed
// per second over kBudgetTicks ticks at the current budget, step it up by kBudgetStep (kBudgetLeap
// after a step that gained kBudgetFar; a step that did not pay is undone whole), let a
// tick pass (the change settling), measure kBudgetTicks more: kept if it completed kBudgetGain
// more (and the next step follows), else stepped back, with kBudgetHoldTicks before probing
// again. A device whose throughput keeps growing with depth (a virtual disk, a RAID) so gets the
// depth it needs; one that saturates at the model's budget stays there (probing costs a few
// ticks of deeper queueing every couple of seconds). A tick in which the budget did not bind, or
// in which the latency controller caps anyone, restarts the measurement; a tick in which a
// volume got under 95% of its IOPS reservation steps the budget back.
void QosScheduler::Shard::AdaptBudget(uint64_t elapsed_ns, bool reserve_short) {
  const uint64_t done = tick_done_ns;
  const bool bound = budget_bound;
  tick_done_ns = 0;
  budget_bound = false;
  const double max_scale = s->options_.budget_max_factor / s->options_.budget_factor;
  if (max_scale <= 1.0) return;
  if (reserve_short && budget_scale > 1.0) {
    // A volume got less than its reservation: a deeper device queue makes each of its requests
    // slower, which a client with few requests in flight cannot make up. Step back.
    budget_scale = std::max(1.0, budget_scale / kBudgetStep);
    SetBudgetBase(budget_base_ns);
    budget_steps_total.Add();
    probe_skip = kBudgetHoldTicks;
  }
  if (loose_cap_ns > 0 || !bound || reserve_short) {
    base_rate = 0;
    probe_ticks = 0;
    meas_done_ns = meas_elapsed_ns = 0;
    return;
  }
  if (probe_skip > 0) {
    --probe_skip;
    return;
  }
  meas_done_ns += done;
  meas_elapsed_ns += elapsed_ns;
  if (++probe_ticks < kBudgetTicks) return;
  const double rate = static_cast<double>(meas_done_ns) / static_cast<double>(meas_elapsed_ns);
  probe_ticks = 0;
  meas_done_ns = meas_elapsed_ns = 0;
  double scale = budget_scale;
  if (base_rate > 0 && rate < base_rate * kBudgetGain) {
    scale = std::max(1.0, scale / last_step);  // the last step did not pay: undo it whole
    base_rate = 0;
    probe_skip = kBudgetHoldTicks;
  } else if (scale < max_scale) {
    // After a step that paid well the device is far from saturated: leap further.
    const bool far = base_rate > 0 && rate >= base_rate * kBudgetFar;
    base_rate = rate;
    const double next = std::min(max_scale, scale * (far ? kBudgetLeap : kBudgetStep));
    last_step = next / scale;
    scale = next;
    probe_skip = 1;
  } else {
    base_rate = 0;
  }
  if (scale != budget_scale) {
    budget_scale = scale;
    SetBudgetBase(budget_base_ns);
    budget_steps_total.Add();
  }
}

// The device is one: the shards with requests lately share its budget, each keeping an equal
// part as its base (which the adaptive budget then scales), so that N reactors do not keep N
// budgets outstanding. A shard that goes idle leaves the sharing at its last tick.
void QosScheduler::Shard::ShareBudget(bool active) {
  const uint64_t bit = 1ull << index;
  const uint64_t mask =
      active ? s->active_shards_.fetch_or(bit) | bit : s->active_shards_.fetch_and(~bit) & ~bit;
  const unsigned n = std::max(1, std::popcount(mask));
  if (n == share_of) return;
  share_of = n;
  SetBudgetBase(BaseBudget() / n);
}

void QosScheduler::Shard::SetLooseCap(uint64_t cap_ns) {
  if ((cap_ns > 0) != (loose_cap_ns > 0)) capped_gauge.Add(cap_ns > 0 ? 1 : -1);
  loose_cap_ns = cap_ns;
  if (cap_ns == 0) protect_bound_ns = UINT64_MAX;
}

void QosScheduler::Shard::Tick(uint64_t now) {
  const uint64_t elapsed = std::max<uint64_t>(1, now - last_tick_ns);
  last_tick_ns = now;
  const uint64_t tick_ns = s->options_.tick_ns;
  // 1. Which targets were missed here this tick.
  uint64_t missed_bound = UINT64_MAX;
  bool at_risk = false;
  bool active = false;
  bool latency_active = false;
  bool reserve_short = false;
  const double secs = static_cast<double>(elapsed) / 1e9;
  bool holds = false;  // a volume with requests has an intent that needs held requests
  for (auto& sv : volumes) {
    active = active || sv->tick_ops > 0;
    if (sv->tick_ops > 0 && !holds) {
      holds = Holds(sv->intent.flow) || !sv->intent.latency.empty();
      auto t = tenants.find(sv->tenant);
      if (!holds && t != tenants.end()) holds = Holds(engine.policy(t->second.flow));
    }
    const Rate& r = sv->intent.flow.reservation;
    if (r.iops && sv->tick_ops > 0 &&
        static_cast<double>(sv->tick_ops) < 0.95 * static_cast<double>(r.iops) * secs) {
      reserve_short = true;
    }
    const LatencyGoal& g = sv->intent.latency;
    if (!g.empty() && sv->tick_ops > 0) latency_active = true;
    if (g.empty() || sv->tick_ops < kTickOpsMin) continue;
    const double allowed = (1.0 - g.percentile / 100.0) * static_cast<double>(sv->tick_ops);
    if (static_cast<double>(sv->tick_missed) > allowed) {
      missed_bound = std::min(missed_bound, g.bound_ns);
    } else if (static_cast<double>(sv->tick_missed) > allowed / 2) {
      at_risk = true;
    }
  }
  for (auto& sv : volumes) {
    sv->tick_ops = 0;
    sv->tick_missed = 0;
  }
  if (latency_active) s->latency_active_at_ns_.store(now, std::memory_order_release);
  if (missed_bound != UINT64_MAX) {
    // Tell the other shards (their volumes may be the ones crowding this one's).
    s->miss_bound_ns_.store(missed_bound, std::memory_order_relaxed);
    s->miss_at_ns_.store(now, std::memory_order_release);
  } else if (now - s->miss_at_ns_.load(std::memory_order_acquire) < 2 * tick_ns) {
    missed_bound = s->miss_bound_ns_.load(std::memory_order_relaxed);
  }
  // 2. The loose volumes' cap.
  const double unit = std::max(1.0, cost.CostNs(IoOp::kRead, 4096));
  const auto ceiling = static_cast<uint64_t>(
      std::min(static_cast<double>(budget_ns), std::max(unit, (cost.parallelism - 1) * unit)));
  if (missed_bound != UINT64_MAX) {
    protect_bound_ns = std::min(protect_bound_ns, missed_bound);
    if (loose_cap_ns == 0) {
      miss_cap_ns = budget_ns;
      SetLooseCap(ceiling);
    } else {
      miss_cap_ns = loose_cap_ns;
      SetLooseCap(static_cast<uint64_t>(std::max(unit, static_cast<double>(loose_cap_ns) * kCut)));
    }
    hold_ticks = kHoldTicks;
    calm_ticks = 0;
    cuts_total.Add();
  } else if (loose_cap_ns > 0) {
    const uint64_t last = s->latency_active_at_ns_.load(std::memory_order_acquire);
    if (now - last > kIdleTicks * tick_ns) {
      SetLooseCap(0);  // nobody to protect any more
    } else if (hold_ticks > 0) {
      --hold_ticks;
    } else if (!at_risk) {
      // Towards just below where the last miss happened (at least the ceiling); every
      // kProbeTicks calm ticks, a quarter higher.
      if (++calm_ticks % kProbeTicks == 0) miss_cap_ns += miss_cap_ns / 4;
      const double target = std::min(
          static_cast<double>(budget_ns),
          std::max(static_cast<double>(ceiling), kBelowMiss * static_cast<double>(miss_cap_ns)));
      const double cap = static_cast<double>(loose_cap_ns);
      const double grown = std::max(cap + kGrowUnits * unit, cap * kGrowRate);
      SetLooseCap(static_cast<uint64_t>(std::max(unit, std::min(target, grown))));
    }
  }
  ShareBudget(active);
  if (active) SetDeep(!holds);
  AdaptBudget(elapsed, reserve_short);
  Pump(now);
  Sweep();
  // Idle and nothing held back: no timer until the next request.
  if (active || loose_cap_ns > 0 || !retiring.empty()) {
    ArmTick(now);
  } else {
    ShareBudget(false);
  }
}

}  // namespace spd::qos
