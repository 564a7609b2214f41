// QosScheduler's insides, shared by qos_scheduler.cc (the stage: submit, release, complete,
// status, intents) and qos_controller.cc (the latency controller). Internal to src/qos.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "dispatch/io_request.h"
#include "qos/qos_scheduler.h"
#include "reactor/reactor.h"

namespace spd::qos {

// The bytes a request moves (what byte rates count).
inline uint64_t RequestBytes(const IoRequest* r) {
  return (r->op == RequestOp::kRead || r->op == RequestOp::kWrite) ? r->length_bytes : 0;
}

// Latency histogram: bucket 0 below 1 us, then 8 buckets per power of two up to 2^36 ns (69 s);
// a bucket's upper edge is at most 12.5% above its lower.
constexpr int kSubBits = 3;
constexpr int kMinExp = 10;  // 1,024 ns
constexpr int kMaxExp = 36;
constexpr int kBuckets = 1 + (kMaxExp - kMinExp) * (1 << kSubBits);

inline int Bucket(uint64_t ns) {
  if (ns < (1ull << kMinExp)) return 0;
  int e = 63 - std::countl_zero(ns);
  if (e >= kMaxExp) return kBuckets - 1;
  const int sub = static_cast<int>((ns >> (e - kSubBits)) & ((1 << kSubBits) - 1));
  return 1 + (e - kMinExp) * (1 << kSubBits) + sub;
}

inline uint64_t BucketUpper(int b) {
  if (b == 0) return 1ull << kMinExp;
  const int e = kMinExp + (b - 1) / (1 << kSubBits);
  const uint64_t sub = static_cast<uint64_t>((b - 1) % (1 << kSubBits));
  return ((1ull << kSubBits) + sub + 1) << (e - kSubBits);
}

struct Window {
  uint64_t start_ns = 0;
  uint64_t end_ns = 0;
  uint64_t ops = 0;
  uint64_t bytes = 0;
  uint64_t queue_ns = 0;    // sum of time held in the scheduler
  uint64_t enqueues = 0;    // requests submitted
  uint64_t backlogged = 0;  // of them, ones that found the volume's queue non-empty
  uint32_t hist[kBuckets] = {};

  void Merge(const Window& o) {
    ops += o.ops;
    bytes += o.bytes;
    queue_ns += o.queue_ns;
    enqueues += o.enqueues;
    backlogged += o.backlogged;
    for (int i = 0; i < kBuckets; ++i) hist[i] += o.hist[i];
  }
  uint64_t Percentile(double p) const {
    if (ops == 0) return 0;
    const uint64_t rank = std::max<uint64_t>(
        1, static_cast<uint64_t>(std::ceil(p / 100.0 * static_cast<double>(ops))));
    uint64_t seen = 0;
    for (int i = 0; i < kBuckets; ++i) {
      seen += hist[i];
      if (seen >= rank) return BucketUpper(i);
    }
    return BucketUpper(kBuckets - 1);
  }
};

// The latency the controller aims at for a volume with latency bound `bound_ns`: 80% of it
// (qos_controller.cc).
inline uint64_t ControllerAimNs(uint64_t bound_ns) { return bound_ns / 5 * 4; }

struct QosScheduler::TenantState {
  std::string name;
  FlowPolicy policy;  // guarded by QosScheduler::mu_
  std::atomic<uint64_t> version{1};
};

// A volume on one shard: its flow in that shard's engine and what the shard measures of it.
struct ShardVolume {
  QosScheduler::VolumeState* vs = nullptr;
  Engine::FlowId flow = Engine::kNoFlow;
  QosScheduler::TenantState* tenant = nullptr;
  uint64_t version = 0;  // of the VolumeState's intent it runs with
  bool shared = false;   // other shards serve the volume too: exchange what each served
  Served seen;           // the volume's global totals as last taken into account here
  Window cur;
  VolumeIntent intent;  // as of `version`
  // The latency controller (qos_controller.cc): what this tick saw.
  uint64_t tick_ops = 0;
  uint64_t tick_missed = 0;  // over the controller's aim (a fraction of its latency bound)
};

struct QosScheduler::VolumeState {
  std::string name;
  std::atomic<uint64_t> version{1};
  VolumeIntent intent;            // guarded by QosScheduler::mu_
  TenantState* tenant = nullptr;  // guarded by QosScheduler::mu_
  // Shards that have a flow for it (bit i: shard i); more than one: `served` is kept.
  std::atomic<uint64_t> shards{0};
  // Released so far by every shard that serves it while shared (dmClock).
  std::atomic<uint64_t> ops{0}, bytes{0}, reserved_ops{0}, reserved_bytes{0};
  ShardVolume* per_shard[kShardsMax] = {};  // element i: shard i's thread only
  mutable std::mutex wmu;
  Window published[kShardsMax];               // guarded by wmu: each shard's last complete window
  IntentState reported = IntentState::kIdle;  // guarded by wmu
};

// A background I/O in a shard's engine (req == nullptr tells it from a volume's request).
struct QosScheduler::BgItem : IoRequest::QosItem {
  BackendIo* io = nullptr;  // queued or in flight; null: free
  IoBackend* backend = nullptr;
  BgItem* next_free = nullptr;
};

struct QosScheduler::Shard {
  QosScheduler* s = nullptr;
  Reactor* reactor = nullptr;
  unsigned index = 0;
  explicit Shard(Engine::Options eo) : engine(eo) {}
  Engine engine;
  IoScheduler::Sink* sink = nullptr;
  uint64_t outstanding_ns = 0;
  // The scheduler's cost model and budget as of cost_version (SetCostModel).
  CostModel cost;
  uint64_t budget_ns = 0;       // budget_base_ns * budget_scale
  uint64_t budget_base_ns = 0;  // QosScheduler::budget_ns_
  // The adaptive budget (qos_controller.cc, AdaptBudget): a device that keeps gaining
  // throughput with depth past the model's budget gets more outstanding.
  double budget_scale = 1.0;
  double last_step = 1.0;     // the factor of the last step up
  double base_rate = 0;       // device time completed per ns at the current scale; 0: unknown
  uint32_t probe_ticks = 0;   // ticks measured so far (meas_*) at the current scale
  uint32_t probe_skip = 0;    // ticks to let pass before measuring (a change settling, a hold)
  uint64_t meas_done_ns = 0;  // device time completed over the measured ticks
  uint64_t meas_elapsed_ns = 0;
  uint64_t tick_done_ns = 0;          // device time (cost) completed this tick
  bool budget_bound = false;          // this tick, requests waited for the budget
  void SetBudgetBase(uint64_t base);  // and budget_ns (spd_qos_device_budget_seconds)
  // The scheduler's budget (QosScheduler::budget_ns_), shared by the shards active lately: each
  // keeps model_budget_ns / share_of as its base (qos_controller.cc, ShareBudget).
  uint64_t model_budget_ns = 0;
  // The same for a device at its calibrated depth (QosScheduler::deep_budget_ns_): the base
  // while `deep`, that is while no volume with requests here lately has an intent that only
  // held requests can give (Holds, qos_controller.cc), so that a scheduler with nothing to
  // order keeps the device as busy as FIFO would.
  uint64_t deep_budget_ns = 0;
  bool deep = false;
  unsigned share_of = 1;
  uint64_t BaseBudget() const { return deep ? deep_budget_ns : model_budget_ns; }
  void SetModelBudget(uint64_t ordered, uint64_t deep_b) {
    model_budget_ns = ordered;
    deep_budget_ns = deep_b;
    SetBudgetBase(BaseBudget() / share_of);
  }
  void SetDeep(bool d);
  void ShareBudget(bool active);
  void AdaptBudget(uint64_t elapsed_ns, bool reserve_short);
  uint64_t cost_version = 0;
  struct WakeTimer : Timer {
    Shard* shard;
  } timer;
  struct RefreshTask : Task {
    Shard* shard;
  } refresh;
  struct TickTimer : Timer {
    Shard* shard;
  } tick;
  uint64_t last_tick_ns = 0;
  // The latency controller's headroom: while protecting (a volume with a latency bound of at
  // most protect_bound_ns missed it lately), the other volumes ("loose") may keep at most
  // loose_cap_ns of device time outstanding; their requests the engine releases beyond that
  // wait here, in release order, for loose requests to complete.
  uint64_t protect_bound_ns = UINT64_MAX;  // UINT64_MAX: not protecting
  uint64_t loose_cap_ns = 0;
  uint64_t loose_out_ns = 0;
  uint32_t hold_ticks = 0;   // ticks to wait after a cut before the cap grows again
  uint64_t miss_cap_ns = 0;  // the cap (or the budget, uncapped) at the last miss
  uint32_t calm_ticks = 0;   // ticks without a miss since
  IoRequest* parked_head = nullptr;
  IoRequest* parked_tail = nullptr;
  bool Loose(const ShardVolume* sv) const {
    return sv->intent.latency.empty() || sv->intent.latency.bound_ns > protect_bound_ns;
  }
  void SetLooseCap(uint64_t cap_ns);  // keeps spd_qos_latency_capped_shards (qos_controller.cc)
  void Release(IoRequest* r, uint64_t now);
  // Background I/O (qos_background.cc).
  struct Gate final : IoGate {
    Shard* sh = nullptr;
    void Submit(IoBackend* backend, BackendIo* io) override;
    void Done(BackendIo* io) override;
  } gate;
  Engine::FlowId bg_flow = Engine::kNoFlow;
  Engine::FlowId rebuild_flow = Engine::kNoFlow;  // kReqRebuild requests (qos_background.cc)
  void SubmitRebuild(IoRequest* req, uint64_t now);
  void CompletedRebuild(IoRequest* req);
  std::vector<std::unique_ptr<BgItem>> bg_items;  // at most kBgItemsMax
  BgItem* bg_free = nullptr;
  static constexpr size_t kBgItemsMax = 256;
  void ReleaseBackground(BgItem* b);
  void DropBackground();  // at teardown: queued ones straight to their backend
  void ReleaseParked(uint64_t now);
  std::atomic<bool> refresh_posted{false};
  struct TenantFlow {
    Engine::FlowId flow;
    uint64_t version;
    uint32_t volumes;
  };
  std::unordered_map<TenantState*, TenantFlow> tenants;
  std::vector<std::unique_ptr<ShardVolume>> volumes;
  // Flows of volumes moved to another tenant while requests were queued in them: removed once
  // empty (Sweep, at each tick and refresh).
  struct Retiring {
    Engine::FlowId flow;
    TenantState* tenant;
  };
  std::vector<Retiring> retiring;

  ShardVolume* Attach(VolumeState* vs);
  void Refresh(ShardVolume* sv);
  Engine::FlowId TenantFlowOf(TenantState* t);
  void CreditElsewhere(ShardVolume* sv, uint64_t now);
  void Pump(uint64_t now);
  void ArmWake(uint64_t at);
  void Roll(ShardVolume* sv, uint64_t now);
  void Sweep();
  static void OnTimer(Timer* t);
  static void OnRefresh(Task* t);
  // qos_controller.cc
  void ArmTick(uint64_t now);
  void Tick(uint64_t now);
  static void OnTick(Timer* t);
};

}  // namespace spd::qos
