#include "qos/qos_scheduler.h"

#include "qos/qos_internal.h"

#include <algorithm>
#include <bit>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <unordered_map>

#include "common/assert.h"
#include "common/counters.h"
#include "dispatch/dispatcher.h"
#include "dispatch/io_request.h"
#include "reactor/reactor.h"

namespace spd::qos {
namespace {

Counter released_reservation_total(
    "spd_qos_released_by_reservation_total",
    "Requests the QoS scheduler released to meet a reservation (mClock's constraint phase).");
Counter released_weight_total(
    "spd_qos_released_by_weight_total",
    "Requests the QoS scheduler released by weight and priority (mClock's weight phase).");
Counter rebuild_released_total("spd_qos_rebuild_released_total",
                               "Replication resync and rebuild I/Os the QoS scheduler released "
                               "(their own flow, in the background class).");
Counter held_total("spd_qos_held_total",
                   "Requests the QoS scheduler could not release at once (device budget spent, "
                   "or a limit).");
Counter parked_held_total("spd_qos_latency_parked_total",
                          "Requests of volumes with a looser latency target (or none) the "
                          "latency controller held back, so that a tighter volume's requests "
                          "find the device free.");
Gauge budget_gauge("spd_qos_device_budget_seconds",
                   "Device time (by the cost model) the QoS scheduler lets be outstanding now, "
                   "summed over reactors: the adaptive budget.",
                   kMicros);
Counter violations_total("spd_qos_intent_violations_total",
                         "Volumes whose status turned violated (one per turn).");

std::string Ms(uint64_t ns) {
  char b[32];
  std::snprintf(b, sizeof b, "%.3g ms", static_cast<double>(ns) / 1e6);
  return b;
}

}  // namespace

const char* IntentStateName(IntentState s) {
  switch (s) {
    case IntentState::kIdle:
      return "idle";
    case IntentState::kMet:
      return "met";
    case IntentState::kAtRisk:
      return "at-risk";
    case IntentState::kViolated:
      return "violated";
  }
  return "?";
}

QosScheduler::QosScheduler(std::vector<Reactor*> reactors, Options options)
    : options_(std::move(options)), reactors_(std::move(reactors)) {
  SPD_ASSERT(!reactors_.empty() && reactors_.size() <= kShardsMax);
  budget_ns_ = BudgetOf(options_.cost, options_.budget_factor, false);
  deep_budget_ns_ = BudgetOf(options_.cost, options_.budget_factor, true);
  for (unsigned i = 0; i < reactors_.size(); ++i) {
    auto sh = std::make_unique<Shard>(
        Engine::Options{.max_lag_ns = 10'000'000, .limit_burst_ns = options_.limit_burst_ns});
    sh->s = this;
    sh->reactor = reactors_[i];
    sh->index = i;
    sh->timer.shard = sh.get();
    sh->timer.fn = &Shard::OnTimer;
    sh->refresh.shard = sh.get();
    sh->refresh.fn = &Shard::OnRefresh;
    sh->cost = options_.cost;
    sh->SetModelBudget(budget_ns_, deep_budget_ns_);
    sh->cost_version = cost_version_.load();
    sh->tick.shard = sh.get();
    sh->tick.fn = &Shard::OnTick;
    sh->gate.sh = sh.get();
    shards_.push_back(std::move(sh));
  }
  tenants_.emplace("", std::make_unique<TenantState>());
  collector_ = std::make_unique<MetricsCollector>([this](std::string* out) { RenderMetrics(out); });
}

QosScheduler::~QosScheduler() {
  collector_.reset();  // waits for a scrape in progress
  for (auto& sh : shards_) {
    sh->DropBackground();
    if (sh->timer.heap_index != SIZE_MAX) sh->reactor->CancelTimer(&sh->timer);
    if (sh->tick.heap_index != SIZE_MAX) sh->reactor->CancelTimer(&sh->tick);
    sh->SetLooseCap(0);
    sh->SetDeep(false);  // out of the gauge
    sh->budget_scale = 0;
    sh->SetBudgetBase(0);  // out of the gauge
  }
}

void* QosScheduler::PortState(Reactor* reactor) {
  for (auto& sh : shards_)
    if (sh->reactor == reactor) return sh.get();
  return nullptr;  // a reactor it was not given (calibration's): its requests pass
}

QosScheduler::TenantState* QosScheduler::TenantLocked(const std::string& name) {
  auto it = tenants_.find(name);
  if (it != tenants_.end()) return it->second.get();
  if (tenants_.size() >= kTenantsMax) return tenants_.find("")->second.get();
  auto t = std::make_unique<TenantState>();
  t->name = name;
  TenantState* raw = t.get();
  tenants_.emplace(name, std::move(t));
  return raw;
}

QosScheduler::VolumeState* QosScheduler::StateOf(Volume* v) {
  void* p = v->qos_state.load(std::memory_order_acquire);
  if (p) return static_cast<VolumeState*>(p);
  std::lock_guard<std::mutex> l(mu_);
  p = v->qos_state.load(std::memory_order_acquire);
  if (p) return static_cast<VolumeState*>(p);
  auto vs = std::make_unique<VolumeState>();
  vs->name = v->info().name;
  auto d = declared_.find(vs->name);
  if (d != declared_.end()) {
    vs->intent = d->second.intent;
    vs->tenant = TenantLocked(d->second.tenant);
  } else {
    vs->tenant = TenantLocked("");
  }
  VolumeState* raw = vs.get();
  volumes_.push_back(std::move(vs));
  volumes_by_name_[raw->name] = raw;  // a volume made again under the name replaces the old
  v->qos_state.store(raw, std::memory_order_release);
  return raw;
}

Engine::FlowId QosScheduler::Shard::TenantFlowOf(TenantState* t) {
  auto it = tenants.find(t);
  if (it != tenants.end()) return it->second.flow;
  FlowPolicy p;
  uint64_t version;
  {
    std::lock_guard<std::mutex> l(s->mu_);
    p = t->policy;
    version = t->version.load(std::memory_order_relaxed);
  }
  const Engine::FlowId f = engine.AddTenant(p);
  tenants.emplace(t, TenantFlow{f, version, 0});
  return f;
}

ShardVolume* QosScheduler::Shard::Attach(VolumeState* vs) {
  auto sv = std::make_unique<ShardVolume>();
  sv->vs = vs;
  VolumeIntent intent;
  {
    std::lock_guard<std::mutex> l(s->mu_);
    intent = vs->intent;
    sv->tenant = vs->tenant;
    sv->version = vs->version.load(std::memory_order_relaxed);
  }
  sv->intent = intent;
  const Engine::FlowId tf = TenantFlowOf(sv->tenant);
  ++tenants[sv->tenant].volumes;
  sv->flow = engine.AddVolume(tf, sv->intent.flow);
  const uint64_t bit = 1ull << index;
  const uint64_t before = vs->shards.fetch_or(bit, std::memory_order_acq_rel);
  sv->shared = (before & ~bit) != 0;
  if (sv->shared) {
    sv->seen.ops = vs->ops.load(std::memory_order_acquire);
    sv->seen.bytes = vs->bytes.load(std::memory_order_acquire);
    sv->seen.reserved_ops = vs->reserved_ops.load(std::memory_order_acquire);
    sv->seen.reserved_bytes = vs->reserved_bytes.load(std::memory_order_acquire);
  }
  sv->cur.start_ns = MonotonicNs();
  ShardVolume* raw = sv.get();
  vs->per_shard[index] = raw;
  volumes.push_back(std::move(sv));
  return raw;
}

void QosScheduler::Shard::Refresh(ShardVolume* sv) {
  VolumeIntent intent;
  TenantState* tenant;
  {
    std::lock_guard<std::mutex> l(s->mu_);
    intent = sv->vs->intent;
    tenant = sv->vs->tenant;
    sv->version = sv->vs->version.load(std::memory_order_relaxed);
  }
  sv->intent = intent;
  const uint64_t now = MonotonicNs();
  if (tenant != sv->tenant) {
    // Moved to another tenant: new requests go to a new flow under it; the old flow keeps the
    // requests it has queued (released under the old tenant) and goes once they are (Sweep).
    if (engine.queued(sv->flow) == 0) {
      engine.RemoveVolume(sv->flow);
      --tenants[sv->tenant].volumes;
    } else {
      retiring.push_back({sv->flow, sv->tenant});
    }
    sv->tenant = tenant;
    const Engine::FlowId tf = TenantFlowOf(tenant);
    ++tenants[tenant].volumes;
    sv->flow = engine.AddVolume(tf, sv->intent.flow);
    return;
  }
  engine.SetPolicy(sv->flow, sv->intent.flow, now);
}

void QosScheduler::Shard::Sweep() {
  for (size_t i = 0; i < retiring.size();) {
    if (engine.queued(retiring[i].flow) > 0) {
      ++i;
      continue;
    }
    engine.RemoveVolume(retiring[i].flow);
    --tenants[retiring[i].tenant].volumes;
    retiring[i] = retiring.back();
    retiring.pop_back();
  }
}

void QosScheduler::Shard::CreditElsewhere(ShardVolume* sv, uint64_t now) {
  VolumeState* vs = sv->vs;
  if (!sv->shared) {
    if ((vs->shards.load(std::memory_order_relaxed) & ~(1ull << index)) == 0) return;
    // Another shard began serving the volume: from now on both count what they serve.
    sv->shared = true;
    sv->seen.ops = vs->ops.load(std::memory_order_acquire);
    sv->seen.bytes = vs->bytes.load(std::memory_order_acquire);
    sv->seen.reserved_ops = vs->reserved_ops.load(std::memory_order_acquire);
    sv->seen.reserved_bytes = vs->reserved_bytes.load(std::memory_order_acquire);
    return;
  }
  Served g;
  g.ops = vs->ops.load(std::memory_order_acquire);
  if (g.ops == sv->seen.ops) return;
  g.bytes = vs->bytes.load(std::memory_order_acquire);
  g.reserved_ops = vs->reserved_ops.load(std::memory_order_acquire);
  g.reserved_bytes = vs->reserved_bytes.load(std::memory_order_acquire);
  Served d;
  d.ops = g.ops - sv->seen.ops;
  d.bytes = g.bytes - sv->seen.bytes;
  d.reserved_ops = g.reserved_ops - sv->seen.reserved_ops;
  d.reserved_bytes = g.reserved_bytes - sv->seen.reserved_bytes;
  engine.Credit(sv->flow, d, now);
  sv->seen = g;
}

void QosScheduler::Submit(IoRequest* req, Sink* sink) {
  auto* sh = static_cast<Shard*>(req->port->sched_state());
  if (sh == nullptr || req->op == RequestOp::kBlockStatus) {
    // No device time: the map is in memory.
    req->qos_volume = nullptr;
    return sink->Release(req);
  }
  sh->sink = sink;
  if (req->flags & kReqRebuild) return sh->SubmitRebuild(req, MonotonicNs());
  req->qos_item.rebuild = false;
  VolumeState* vs = StateOf(req->volume);
  ShardVolume* sv = vs->per_shard[sh->index];
  if (sv == nullptr) {
    sv = sh->Attach(vs);
  } else if (sv->version != vs->version.load(std::memory_order_acquire)) {
    sh->Refresh(sv);
  }
  const uint64_t now = MonotonicNs();
  sh->CreditElsewhere(sv, now);
  req->qos_volume = sv;
  req->qos_submit_ns = now;
  req->qos_item.req = req;
  req->qos_item.cost_ns = sh->cost.Cost(ToIoOp(req->op), req->length_bytes);
  req->qos_item.bytes = static_cast<uint32_t>(RequestBytes(req));
  ++sv->cur.enqueues;
  if (sh->engine.queued(sv->flow) > 0) ++sv->cur.backlogged;
  sh->engine.Enqueue(sv->flow, &req->qos_item, now);
  if (options_.tick_ns && sh->tick.heap_index == SIZE_MAX) sh->ArmTick(now);
  const size_t before = sh->engine.queued();
  sh->Pump(now);
  if (sh->engine.queued() == before) held_total.Add();
}

void QosScheduler::Shard::SetBudgetBase(uint64_t base) {
  budget_base_ns = base;
  const uint64_t old_us = budget_ns / 1000;
  budget_ns = static_cast<uint64_t>(static_cast<double>(base) * budget_scale);
  budget_gauge.Add(static_cast<int64_t>(budget_ns / 1000) - static_cast<int64_t>(old_us));
}

void QosScheduler::Shard::Pump(uint64_t now) {
  ReleaseParked(now);
  while (engine.queued() > 0 && outstanding_ns < budget_ns) {
    uint64_t wake = UINT64_MAX;
    Item* it = engine.Dequeue(now, &wake);
    if (it == nullptr) {
      if (wake != UINT64_MAX) ArmWake(wake);
      return;
    }
    IoRequest* r = static_cast<IoRequest::QosItem*>(it)->req;
    if (r == nullptr) {
      ReleaseBackground(static_cast<BgItem*>(static_cast<IoRequest::QosItem*>(it)));
      continue;
    }
    if (r->qos_item.rebuild) {
      outstanding_ns += it->cost_ns;
      rebuild_released_total.Add();
      sink->Release(r);
      continue;
    }
    r->qos_item.loose = loose_cap_ns > 0 && Loose(static_cast<ShardVolume*>(r->qos_volume));
    if (r->qos_item.loose && (parked_head != nullptr ||
                              (loose_out_ns > 0 && loose_out_ns + it->cost_ns > loose_cap_ns))) {
      // Over the loose cap: wait, in release order, so that a tighter volume's next request
      // (the engine's next pick once the loose ones are out of it) finds the device free.
      r->qos_item.parked_next = nullptr;
      (parked_head ? parked_tail->qos_item.parked_next : parked_head) = r;
      parked_tail = r;
      parked_held_total.Add();
      continue;
    }
    Release(r, now);
  }
  if (engine.queued() > 0 && outstanding_ns >= budget_ns) budget_bound = true;
}

void QosScheduler::Shard::ReleaseParked(uint64_t now) {
  while (parked_head != nullptr && outstanding_ns < budget_ns &&
         (loose_cap_ns == 0 || loose_out_ns == 0 ||
          loose_out_ns + parked_head->qos_item.cost_ns <= loose_cap_ns)) {
    IoRequest* r = parked_head;
    parked_head = r->qos_item.parked_next;
    if (parked_head == nullptr) parked_tail = nullptr;
    r->qos_item.loose = loose_cap_ns > 0;
    Release(r, now);
  }
}

void QosScheduler::Shard::Release(IoRequest* r, uint64_t now) {
  Item* it = &r->qos_item;
  auto* sv = static_cast<ShardVolume*>(r->qos_volume);
  outstanding_ns += it->cost_ns;
  if (r->qos_item.loose) loose_out_ns += it->cost_ns;
  r->queue_ns = now - r->qos_submit_ns;
  sv->cur.queue_ns += r->queue_ns;
  const bool by_reservation = it->phase() == Phase::kReservation;
  (by_reservation ? released_reservation_total : released_weight_total).Add();
  if (sv->shared) {
    VolumeState* vs = sv->vs;
    vs->ops.fetch_add(1, std::memory_order_acq_rel);
    vs->bytes.fetch_add(it->bytes, std::memory_order_acq_rel);
    ++sv->seen.ops;
    sv->seen.bytes += it->bytes;
    if (by_reservation) {
      vs->reserved_ops.fetch_add(1, std::memory_order_acq_rel);
      vs->reserved_bytes.fetch_add(it->bytes, std::memory_order_acq_rel);
      ++sv->seen.reserved_ops;
      sv->seen.reserved_bytes += it->bytes;
    }
  }
  sink->Release(r);
}

void QosScheduler::Shard::ArmWake(uint64_t at) {
  if (timer.heap_index != SIZE_MAX) {
    if (timer.deadline_ns <= at) return;
    reactor->CancelTimer(&timer);
  }
  reactor->ArmTimer(&timer, at);
}

void QosScheduler::Shard::OnTimer(Timer* t) {
  Shard* sh = static_cast<WakeTimer*>(t)->shard;
  sh->Pump(MonotonicNs());
}

void QosScheduler::Completed(IoRequest* req) {
  auto* sv = static_cast<ShardVolume*>(req->qos_volume);
  if (sv == nullptr) return;
  req->qos_volume = nullptr;
  auto* sh = static_cast<Shard*>(req->port->sched_state());
  if (req->qos_item.rebuild) return sh->CompletedRebuild(req);
  SPD_ASSERT(sh->outstanding_ns >= req->qos_item.cost_ns);
  sh->outstanding_ns -= req->qos_item.cost_ns;
  sh->tick_done_ns += req->qos_item.cost_ns;
  if (req->qos_item.loose) {
    SPD_ASSERT(sh->loose_out_ns >= req->qos_item.cost_ns);
    sh->loose_out_ns -= req->qos_item.cost_ns;
  }
  const uint64_t now = MonotonicNs();
  Window& w = sv->cur;
  ++w.ops;
  w.bytes += req->qos_item.bytes;
  const uint64_t lat = now - req->qos_submit_ns;
  ++w.hist[Bucket(lat)];
  ++sv->tick_ops;
  if (!sv->intent.latency.empty() && lat > ControllerAimNs(sv->intent.latency.bound_ns)) {
    ++sv->tick_missed;
  }
  if (now - w.start_ns >= options_.window_ns) sh->Roll(sv, now);
  sh->Pump(now);
}

namespace {

// The state a merged window means for `intent`.
IntentState Judge(const VolumeIntent& intent, const Window& w, std::string* reason,
                  uint64_t* latency_ns, double* pct) {
  *pct = intent.latency.empty() ? 99.0 : intent.latency.percentile;
  *latency_ns = w.Percentile(*pct);
  if (w.ops == 0) return IntentState::kIdle;
  IntentState st = IntentState::kMet;
  if (!intent.latency.empty()) {
    // Enough requests that the percentile means something: 10 beyond it.
    const double need = 10.0 / std::max(1e-3, 1.0 - intent.latency.percentile / 100.0);
    if (static_cast<double>(w.ops) < need) {
      st = IntentState::kIdle;
    } else if (*latency_ns > intent.latency.bound_ns) {
      char b[160];
      std::snprintf(b, sizeof b, "latency p%g %s exceeds the target %s", intent.latency.percentile,
                    Ms(*latency_ns).c_str(), Ms(intent.latency.bound_ns).c_str());
      *reason = b;
      return IntentState::kViolated;
    } else if (*latency_ns * 10 > intent.latency.bound_ns * 8) {
      char b[160];
      std::snprintf(b, sizeof b, "latency p%g %s is within 20%% of the target %s",
                    intent.latency.percentile, Ms(*latency_ns).c_str(),
                    Ms(intent.latency.bound_ns).c_str());
      *reason = b;
      st = IntentState::kAtRisk;
    }
  }
  const Rate& r = intent.flow.reservation;
  const uint64_t dur = w.end_ns > w.start_ns ? w.end_ns - w.start_ns : 1;
  // Judged only while the volume had more to do than it was given (most of its requests found
  // others of its own waiting): an application that asks for less than its reservation is not
  // short of it.
  if (!r.empty() && w.enqueues > 0 && w.backlogged * 2 >= w.enqueues) {
    const double secs = static_cast<double>(dur) / 1e9;
    const double iops = static_cast<double>(w.ops) / secs;
    const double bps = static_cast<double>(w.bytes) / secs;
    char b[160];
    if (r.iops && iops < 0.95 * static_cast<double>(r.iops)) {
      std::snprintf(b, sizeof b, "reservation %" PRIu64 " IOPS, got %.0f while backlogged", r.iops,
                    iops);
      *reason = b;
      return IntentState::kViolated;
    }
    if (r.bytes_per_second && bps < 0.95 * static_cast<double>(r.bytes_per_second)) {
      std::snprintf(b, sizeof b, "reservation %" PRIu64 " B/s, got %.0f while backlogged",
                    r.bytes_per_second, bps);
      *reason = b;
      return IntentState::kViolated;
    }
  }
  return st;
}

}  // namespace

void QosScheduler::Shard::Roll(ShardVolume* sv, uint64_t now) {
  sv->cur.end_ns = now;
  VolumeState* vs = sv->vs;
  VolumeIntent intent;
  {
    std::lock_guard<std::mutex> l(s->mu_);
    intent = vs->intent;
  }
  std::string reason;
  uint64_t lat;
  double pct;
  const IntentState st = Judge(intent, sv->cur, &reason, &lat, &pct);
  bool report = false;
  {
    std::lock_guard<std::mutex> l(vs->wmu);
    vs->published[index] = sv->cur;
    if (st == IntentState::kViolated && vs->reported != IntentState::kViolated) report = true;
    if (st != IntentState::kIdle) vs->reported = st;
  }
  if (report) {
    violations_total.Add();
    if (s->options_.on_violation) s->options_.on_violation(vs->name, reason);
  }
  sv->cur = Window{};
  sv->cur.start_ns = now;
}

VolumeStatus QosScheduler::Status(const std::string& volume) const {
  VolumeStatus out;
  VolumeState* vs;
  VolumeIntent intent;
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = volumes_by_name_.find(volume);
    if (it == volumes_by_name_.end()) return out;
    vs = it->second;
    intent = vs->intent;
  }
  const uint64_t now = MonotonicNs();
  Window m;
  {
    std::lock_guard<std::mutex> l(vs->wmu);
    for (unsigned i = 0; i < shards_.size(); ++i) {
      const Window& w = vs->published[i];
      if (w.end_ns == 0 || now - w.end_ns > 2 * options_.window_ns) continue;
      if (m.end_ns == 0 || w.start_ns < m.start_ns) m.start_ns = w.start_ns;
      m.end_ns = std::max(m.end_ns, w.end_ns);
      m.Merge(w);
    }
  }
  if (m.end_ns == 0) return out;
  out.state = Judge(intent, m, &out.reason, &out.latency_ns, &out.latency_percentile);
  out.window_ns = m.end_ns - m.start_ns;
  out.ops = m.ops;
  out.bytes = m.bytes;
  const double secs = std::max(1e-9, static_cast<double>(out.window_ns) / 1e9);
  out.iops = static_cast<double>(m.ops) / secs;
  out.bytes_per_second = static_cast<double>(m.bytes) / secs;
  out.queue_ns_mean = m.ops ? m.queue_ns / m.ops : 0;
  return out;
}

void QosScheduler::Bump(VolumeState* vs) { vs->version.fetch_add(1, std::memory_order_acq_rel); }

void QosScheduler::SetVolumeIntent(const std::string& volume, const std::string& tenant,
                                   const VolumeIntent& intent) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (declared_.size() >= kVolumeIntentsMax && declared_.find(volume) == declared_.end())
      return;  // the pool's volume table is smaller than this; never reached
    declared_[volume] = Declared{tenant, intent};
    auto it = volumes_by_name_.find(volume);
    if (it != volumes_by_name_.end()) {
      it->second->intent = intent;
      it->second->tenant = TenantLocked(tenant);
      Bump(it->second);
    }
  }
  PostRefresh();
}

void QosScheduler::ForgetVolume(const std::string& volume) {
  std::lock_guard<std::mutex> l(mu_);
  declared_.erase(volume);
}

void QosScheduler::SetTenantPolicy(const std::string& tenant, const FlowPolicy& policy) {
  {
    std::lock_guard<std::mutex> l(mu_);
    TenantState* t = TenantLocked(tenant);
    t->policy = policy;
    t->version.fetch_add(1, std::memory_order_acq_rel);
  }
  PostRefresh();
}

void QosScheduler::PostRefresh() {
  for (auto& sh : shards_) {
    if (sh->refresh_posted.exchange(true, std::memory_order_acq_rel)) continue;
    sh->reactor->Post(&sh->refresh);
  }
}

uint64_t QosScheduler::BudgetOf(const CostModel& c, double factor, bool deep) {
  const double depth = deep ? c.SaturationDepth() : c.parallelism;
  const double b = factor * depth * static_cast<double>(c.Cost(IoOp::kRead, 4096));
  return std::max<uint64_t>(1, static_cast<uint64_t>(b));
}

CostModel QosScheduler::cost_model() const {
  std::lock_guard<std::mutex> l(mu_);
  return options_.cost;
}

uint64_t QosScheduler::budget_ns() const {
  std::lock_guard<std::mutex> l(mu_);
  return budget_ns_;
}

uint64_t QosScheduler::deep_budget_ns() const {
  std::lock_guard<std::mutex> l(mu_);
  return deep_budget_ns_;
}

void QosScheduler::SetCostModel(const CostModel& model) {
  {
    std::lock_guard<std::mutex> l(mu_);
    options_.cost = model;
    budget_ns_ = BudgetOf(model, options_.budget_factor, false);
    deep_budget_ns_ = BudgetOf(model, options_.budget_factor, true);
    cost_version_.fetch_add(1, std::memory_order_acq_rel);
  }
  PostRefresh();
}

void QosScheduler::Shard::OnRefresh(Task* t) {
  Shard* sh = static_cast<RefreshTask*>(t)->shard;
  sh->refresh_posted.store(false, std::memory_order_release);
  if (const uint64_t v = sh->s->cost_version_.load(std::memory_order_acquire);
      v != sh->cost_version) {
    std::lock_guard<std::mutex> l(sh->s->mu_);
    sh->cost = sh->s->options_.cost;
    sh->SetModelBudget(sh->s->budget_ns_, sh->s->deep_budget_ns_);
    sh->cost_version = v;
  }
  for (auto& sv : sh->volumes)
    if (sv->version != sv->vs->version.load(std::memory_order_acquire)) sh->Refresh(sv.get());
  const uint64_t now = MonotonicNs();
  for (auto& [ts, tf] : sh->tenants) {
    const uint64_t v = ts->version.load(std::memory_order_acquire);
    if (v == tf.version) continue;
    FlowPolicy p;
    {
      std::lock_guard<std::mutex> l(sh->s->mu_);
      p = ts->policy;
    }
    sh->engine.SetPolicy(tf.flow, p, now);
    tf.version = v;
  }
  sh->Pump(now);
  sh->Sweep();
}

spd::Status QosScheduler::AdmitReservation(const std::string& field, const std::string& volume,
                                           const Rate& want, double fraction) const {
  return Admit(field, &volume, nullptr, want, fraction);
}

spd::Status QosScheduler::AdmitTenantReservation(const std::string& field,
                                                 const std::string& tenant, const Rate& want,
                                                 double fraction) const {
  return Admit(field, nullptr, &tenant, want, fraction);
}

spd::Status QosScheduler::Admit(const std::string& field, const std::string* volume,
                                const std::string* tenant, const Rate& want,
                                double fraction) const {
  const CostModel c = cost_model();
  const double op4k = std::max(c.CostNs(IoOp::kRead, 4096), c.CostNs(IoOp::kWrite, 4096));
  const double per_byte =
      std::max(c.CostNs(IoOp::kRead, 128 << 10), c.CostNs(IoOp::kWrite, 128 << 10)) /
      static_cast<double>(128 << 10);
  auto device_ns = [&](const Rate& r) {
    return static_cast<double>(r.iops) * op4k + static_cast<double>(r.bytes_per_second) * per_byte;
  };
  const double capacity = c.parallelism * 1e9 * fraction;  // device-ns per second
  double used = 0;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& [name, d] : declared_)
      if (volume == nullptr || name != *volume) used += device_ns(d.intent.flow.reservation);
    for (const auto& [name, t] : tenants_)
      if (tenant == nullptr || name != *tenant) used += device_ns(t->policy.reservation);
  }
  const double need = device_ns(want);
  if (used + need <= capacity) return spd::Status::Ok();
  const double left = std::max(0.0, capacity - used);
  char b[256];
  std::snprintf(b, sizeof b,
                "%s: the device cannot honour this reservation beside the ones granted: %.0f "
                "IOPS of 4 KiB (or %.0f MB/s) are left to reserve, of %.0f in all",
                field.c_str(), left / op4k, left / per_byte / 1e6, capacity / op4k);
  return ResourceExhausted(b);
}

}  // namespace spd::qos
