// Background I/O through the scheduler: the pool's chunk zeroing and punching (Pool::
// SetBackgroundGate) queue in a flow of their own under the default tenant, in the background
// class (released only when no volume can use the device) with a small reservation (so they
// always progress: writers waiting for space depend on them). They count against the shard's
// device budget like a volume's requests.
#include "qos/qos_internal.h"

namespace spd::qos {
namespace {

Counter bg_released_total("spd_qos_background_released_total",
                          "Background I/Os (chunk zeroing and punching) the QoS scheduler "
                          "released to the device.");
Counter bg_ungated_total("spd_qos_background_ungated_total",
                         "Background I/Os sent straight to the device because the scheduler "
                         "already held its maximum of them (256 per reactor).");

}  // namespace

IoGate* QosScheduler::BackgroundGate(Reactor* reactor) {
  auto* sh = static_cast<Shard*>(PortState(reactor));
  return sh ? &sh->gate : nullptr;
}

void QosScheduler::Shard::Gate::Submit(IoBackend* backend, BackendIo* io) {
  Shard* s = sh;
  BgItem* b = s->bg_free;
  if (b != nullptr) {
    s->bg_free = b->next_free;
  } else if (s->bg_items.size() < kBgItemsMax) {
    s->bg_items.push_back(std::make_unique<BgItem>());
    b = s->bg_items.back().get();
  } else {
    bg_ungated_total.Add();
    io->gate_state = nullptr;
    return backend->Submit(io);
  }
  if (s->bg_flow == Engine::kNoFlow) {
    TenantState* t = s->s->tenants_.at("").get();  // never removed
    FlowPolicy p;
    p.priority = Priority::kBackground;
    p.reservation.iops = s->s->options_.background_reserve_iops;
    s->bg_flow = s->engine.AddVolume(s->TenantFlowOf(t), p);
    ++s->tenants[t].volumes;
  }
  b->req = nullptr;
  b->io = io;
  b->backend = backend;
  b->next_free = nullptr;
  b->cost_ns = s->cost.Cost(io->op, io->length_bytes);
  b->bytes = io->op == IoOp::kWrite ? io->length_bytes : 0;
  io->gate_state = b;
  const uint64_t now = MonotonicNs();
  s->engine.Enqueue(s->bg_flow, b, now);
  s->Pump(now);
}

void QosScheduler::Shard::ReleaseBackground(BgItem* b) {
  outstanding_ns += b->cost_ns;
  bg_released_total.Add();
  b->backend->Submit(b->io);
}

void QosScheduler::Shard::Gate::Done(BackendIo* io) {
  Shard* s = sh;
  auto* b = static_cast<BgItem*>(io->gate_state);
  io->gate_state = nullptr;
  SPD_ASSERT(b != nullptr && b->io == io && s->outstanding_ns >= b->cost_ns);
  s->outstanding_ns -= b->cost_ns;
  s->tick_done_ns += b->cost_ns;
  b->io = nullptr;
  b->next_free = s->bg_free;
  s->bg_free = b;
  s->Pump(MonotonicNs());
}

// Replication's resync and rebuild I/O: a flow of its own under the default tenant, in the
// background class, with a reservation in bytes (Options::rebuild_reserve_bytes). Its requests
// count against the device budget; they add nothing to any volume's figures or credit.
void QosScheduler::Shard::SubmitRebuild(IoRequest* req, uint64_t now) {
  if (rebuild_flow == Engine::kNoFlow) {
    TenantState* t = s->tenants_.at("").get();  // never removed
    FlowPolicy p;
    p.priority = Priority::kBackground;
    p.reservation.bytes_per_second = s->options_.rebuild_reserve_bytes;
    rebuild_flow = engine.AddVolume(TenantFlowOf(t), p);
    ++tenants[t].volumes;
  }
  req->qos_volume = this;  // not null: Completed comes back here
  req->qos_submit_ns = now;
  req->qos_item.req = req;
  req->qos_item.rebuild = true;
  req->qos_item.loose = false;
  req->qos_item.cost_ns = cost.Cost(ToIoOp(req->op), req->length_bytes);
  req->qos_item.bytes = static_cast<uint32_t>(RequestBytes(req));
  engine.Enqueue(rebuild_flow, &req->qos_item, now);
  Pump(now);
}

void QosScheduler::Shard::CompletedRebuild(IoRequest* req) {
  SPD_ASSERT(outstanding_ns >= req->qos_item.cost_ns);
  outstanding_ns -= req->qos_item.cost_ns;
  tick_done_ns += req->qos_item.cost_ns;
  req->qos_item.rebuild = false;
  Pump(MonotonicNs());
}

void QosScheduler::Shard::DropBackground() {
  if (bg_flow == Engine::kNoFlow) return;
  // No volume's request is queued any more (the dispatchers are gone): what the engine still
  // holds is background I/O, sent on unscheduled; in-flight ones complete without Done.
  while (engine.queued(bg_flow) > 0) {
    uint64_t wake = 0;
    Item* it = engine.Dequeue(MonotonicNs(), &wake);
    if (it == nullptr) break;
    auto* qi = static_cast<IoRequest::QosItem*>(it);
    if (qi->req != nullptr) continue;
    auto* b = static_cast<BgItem*>(qi);
    b->io->gate_state = nullptr;
    b->backend->Submit(b->io);
    b->io = nullptr;
  }
  for (auto& b : bg_items)
    if (b->io != nullptr) b->io->gate_state = nullptr;
}

}  // namespace spd::qos
