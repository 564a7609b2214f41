// QosScheduler: the scheduler stage that turns each volume's declared intent into the order and
// pace at which its requests reach the device (docs/qos.md).
//
// The dispatcher hands it every request (IoScheduler::Submit) on the reactor of the port the
// request came in on, and gets it back through Sink::Release when it may run. Each reactor has
// a shard: an Engine (engine.h: mClock tags over tenants and their volumes) and the device time
// the shard has outstanding. A request is charged its estimated device time (the pool's cost
// model, cost_model.h); a shard releases requests while what it has outstanding stays under its
// device budget, so that queues form here, where they can be ordered, and not in the device.
// When a volume's connections land on several reactors, each reactor's engine learns what the
// others served of it (Engine::Credit, dmClock's delta and rho), so its limit and reservation
// hold across them.
//
// Each request's time from Submit to Completed is measured per volume in one-second windows; a
// volume's status (met, at risk, violated, with the measured figure) comes from the last
// complete windows of every shard. A volume that turns violated is reported once through
// Options::on_violation (the control plane's event stream).
//
// Intents come from the control plane by volume and tenant name (SetVolumeIntent,
// SetTenantPolicy), from any thread; each shard picks a change up at its volume's next request
// (one atomic load per request) and at once through a posted task, so a new limit holds within
// milliseconds, without reconnecting.
//
// Thread-safety: Submit and Completed on the port's reactor; everything else any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/counters.h"
#include "common/status.h"
#include "qos/cost_model.h"
#include "qos/engine.h"
#include "qos/scheduler.h"

namespace spd {
class Reactor;
class Volume;
}  // namespace spd

namespace spd::qos {

// "p99 under 2 ms": requests of the volume (Submit to Completed) at `percentile` take at most
// `bound_ns`. Unset: percentile 0.
struct LatencyGoal {
  double percentile = 0;
  uint64_t bound_ns = 0;
  bool empty() const { return percentile <= 0 || bound_ns == 0; }
  bool operator==(const LatencyGoal&) const = default;
};

// A volume's intent as the scheduler uses it (compiled from policy::Intent, effective).
struct VolumeIntent {
  FlowPolicy flow;
  LatencyGoal latency;
  bool operator==(const VolumeIntent&) const = default;
};

enum class IntentState : uint8_t {
  kIdle = 0,      // too few requests in the last window to judge
  kMet = 1,       // every goal met with room
  kAtRisk = 2,    // met, but latency within 20% of its bound
  kViolated = 3,  // a latency bound exceeded, or a backlogged volume got under 95% of its
                  // reservation
};
const char* IntentStateName(IntentState s);

// What the last complete window(s) measured of a volume, and what that means for its intent.
struct VolumeStatus {
  IntentState state = IntentState::kIdle;
  std::string reason;      // for at risk and violated: which goal, declared vs measured
  uint64_t window_ns = 0;  // the time the figures cover (0: nothing measured yet)
  uint64_t ops = 0;        // completed in it
  uint64_t bytes = 0;
  double iops = 0;
  double bytes_per_second = 0;
  double latency_percentile = 99;  // the goal's, or 99
  uint64_t latency_ns = 0;         // at latency_percentile (histogram bucket's upper edge)
  uint64_t queue_ns_mean = 0;      // mean time held in the scheduler
};

class QosScheduler final : public IoScheduler {
 public:
  static constexpr unsigned kShardsMax = 64;
  static constexpr size_t kTenantsMax = 4096;
  static constexpr size_t kVolumeIntentsMax = 65536;

  struct Options {
    CostModel cost = CostModel::Default();
    // Device time (ns, as the cost model counts it) a shard keeps outstanding at once:
    // budget_factor * parallelism * the cost of a 4 KiB read: about budget_factor 4 KiB reads in
    // flight per unit of the device's parallelism, enough to keep it busy, few enough that a
    // request the scheduler puts first waits behind little. While no volume with requests on a
    // reactor has an intent that needs requests held back (a reservation, a weight or priority
    // other than the default, a latency target: qos_controller.cc), the reactor uses
    // cost.SaturationDepth() instead of parallelism: a device that needs depth to deliver its
    // capacity (a virtual disk) then gets it, as with FIFO.
    double budget_factor = 2.0;
    // The budget adapts (qos_controller.cc): while requests wait for it and a larger one
    // yields 5% more completed device time, it grows by 25% a step, up to budget_max_factor
    // (same units as budget_factor; equal to it: no adaptation). Not while the latency
    // controller protects a target.
    double budget_max_factor = 32.0;
    // A limit's burst (Engine::Options::limit_burst_ns): a volume below its limit may then
    // release this much of its limit's rate at once. Any 1-second window sees at most
    // limit * (1 s + burst) per shard serving the volume.
    uint64_t limit_burst_ns = 20'000'000;
    // Background I/O (BackgroundGate) is served in the background class (only what volumes
    // leave) but never below this many operations per second, so that zeroing and punching
    // (which writers waiting for space depend on) always progress.
    uint64_t background_reserve_iops = 20;
    // Replication's resync and rebuild I/O (kReqRebuild) is served in a flow of its own in the
    // background class, never below this many bytes per second (so that a rebuild finishes even
    // under a full foreground load).
    uint64_t rebuild_reserve_bytes = 32ull << 20;
    uint64_t window_ns = 1'000'000'000;
    // The latency controller (blk-iolatency's idea, qos_controller.cc): every tick_ns while
    // requests flow. Once a volume misses its latency target in a tick, volumes with a looser
    // target or none may keep only part of the device busy (a unit of its parallelism kept
    // free, less on further misses), so that the tighter volume's requests find the device
    // free; 0: no controller.
    uint64_t tick_ns = 100'000'000;
    // A volume's status turned violated (reason as in VolumeStatus). Called on a reactor
    // thread: must not block (the event hub queues).
    std::function<void(const std::string& volume, const std::string& reason)> on_violation;
  };

  // `reactors`: every reactor whose ports may submit (the shards), at most kShardsMax. Requests
  // from a port on any other reactor pass unscheduled (calibration's: control/calibration.h).
  QosScheduler(std::vector<Reactor*> reactors, Options options);
  // REQUIRES: every dispatcher using it gone, and each reactor stopped or this on its thread
  // (the shards' timers are cancelled).
  ~QosScheduler() override;
  QosScheduler(const QosScheduler&) = delete;
  QosScheduler& operator=(const QosScheduler&) = delete;

  const char* name() const override { return "qos"; }
  void* PortState(Reactor* reactor) override;
  void Submit(IoRequest* req, Sink* sink) override;
  void Completed(IoRequest* req) override;

  // The control plane (any thread). A volume without an intent gets the default (weight 100,
  // standard, nothing reserved or limited) under the default tenant "".
  void SetVolumeIntent(const std::string& volume, const std::string& tenant,
                       const VolumeIntent& intent);
  void ForgetVolume(const std::string& volume);
  void SetTenantPolicy(const std::string& tenant, const FlowPolicy& policy);
  // The status of a volume by name (kIdle with zeros when it never ran a request).
  VolumeStatus Status(const std::string& volume) const;

  // Admission control: OK when the reservations granted (every volume's but `volume`'s own and
  // every tenant's, SetTenantPolicy, plus `want`) fit in `fraction` of the device's capacity by
  // the cost model, with reads and writes of 4 KiB for IOPS and 128 KiB transfers for bytes/s.
  // Else kResourceExhausted naming `field` and what is left ("... 12,345 IOPS of 4 KiB are left
  // to reserve"). A tenant's reservation counts in full beside its volumes' own: the engine may
  // serve both (a volume's reservation and its tenant's are separate schedules), so their sum is
  // what the device may owe.
  [[nodiscard]] spd::Status AdmitReservation(const std::string& field, const std::string& volume,
                                             const Rate& want, double fraction = 0.9) const;
  // The same for a tenant's reservation: every volume's and every tenant's but `tenant`'s own.
  [[nodiscard]] spd::Status AdmitTenantReservation(const std::string& field,
                                                   const std::string& tenant, const Rate& want,
                                                   double fraction = 0.9) const;

  CostModel cost_model() const;
  uint64_t budget_ns() const;
  uint64_t deep_budget_ns() const;  // the same while nothing needs ordering (BudgetOf, deep)
  // Replaces the cost model (a calibration's), live: every shard takes it at once (a posted
  // task) and recomputes its device budget.
  void SetCostModel(const CostModel& model);

  // The gate the pool's background I/O (chunk zeroing and punching) goes through on `reactor`
  // (Pool::SetBackgroundGate): a flow of its own in the background class, which gets what the
  // volumes leave and at least Options::background_reserve_iops. Null for a reactor not given.
  // Clear it from the pool before this is destroyed.
  IoGate* BackgroundGate(Reactor* reactor);

  struct Shard;
  struct VolumeState;
  struct TenantState;
  struct BgItem;

 private:
  VolumeState* StateOf(Volume* v);
  VolumeState* FindByName(const std::string& volume) const;  // REQUIRES: mu_
  TenantState* TenantLocked(const std::string& name);        // REQUIRES: mu_
  void Bump(VolumeState* vs);                                // REQUIRES: mu_
  void PostRefresh();
  // AdmitReservation's check, leaving out the volume `volume` or the tenant `tenant` (null: none).
  spd::Status Admit(const std::string& field, const std::string* volume, const std::string* tenant,
                    const Rate& want, double fraction) const;

  // factor * (deep ? c.SaturationDepth() : c.parallelism) * the cost of a 4 KiB read.
  static uint64_t BudgetOf(const CostModel& c, double factor, bool deep);

  Options options_;          // .cost guarded by mu_ (each shard has its copy)
  uint64_t budget_ns_;       // guarded by mu_
  uint64_t deep_budget_ns_;  // guarded by mu_: the same at the model's SaturationDepth
  std::atomic<uint64_t> cost_version_{1};
  // The latency controller's signal across shards: the tightest bound missed, and when.
  std::atomic<uint64_t> miss_at_ns_{0};
  std::atomic<uint64_t> miss_bound_ns_{UINT64_MAX};
  // Last tick at which a shard saw requests of a volume with a latency target.
  std::atomic<uint64_t> latency_active_at_ns_{0};
  // Shards that had requests in their last tick (bit i: shard i): they share the budget.
  std::atomic<uint64_t> active_shards_{0};
  std::vector<Reactor*> reactors_;
  std::vector<std::unique_ptr<Shard>> shards_;

  mutable std::mutex mu_;
  struct Declared {
    std::string tenant;
    VolumeIntent intent;
  };
  std::map<std::string, Declared, std::less<>> declared_;                     // guarded by mu_
  std::map<std::string, std::unique_ptr<TenantState>, std::less<>> tenants_;  // guarded by mu_
  // Every VolumeState made (one per Volume object: volumes are never freed while the pool
  // lives), by name for the control plane's lookups.
  std::vector<std::unique_ptr<VolumeState>> volumes_;                 // guarded by mu_
  std::map<std::string, VolumeState*, std::less<>> volumes_by_name_;  // guarded by mu_
  // Every volume's status as labelled metrics (qos_metrics.cc); dropped first at destruction.
  void RenderMetrics(std::string* out) const;
  std::unique_ptr<MetricsCollector> collector_;
};

}  // namespace spd::qos
