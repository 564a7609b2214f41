#include "dispatch/dispatcher.h"

#include <cerrno>

#include "common/counters.h"
#include "common/log.h"
#include "dispatch/replica_hook.h"
#include "dispatch/request_probes.h"

namespace spd {
namespace {

Counter hops_total("spd_dispatch_hops_total",
                   "Requests sent to their volume's owning reactor and back by message.");
Counter pool_hops_total(
    "spd_dispatch_pool_hops_total",
    "Requests a volume's owning reactor passed on to the pool's reactor (unaligned, the volume "
    "closed by a control operation, no backend channel on the owner).");
Counter invalid_total("spd_dispatch_invalid_requests_total",
                      "Requests refused by the dispatcher before any volume saw them (no "
                      "volume, an unknown operation, no extent scratch).");

}  // namespace

const char* RequestOpName(RequestOp op) {
  switch (op) {
    case RequestOp::kRead:
      return "read";
    case RequestOp::kWrite:
      return "write";
    case RequestOp::kFlush:
      return "flush";
    case RequestOp::kDiscard:
      return "discard";
    case RequestOp::kWriteZeroes:
      return "write-zeroes";
    case RequestOp::kBlockStatus:
      return "block-status";
  }
  return "?";
}

DispatchPort::~DispatchPort() {
  SPD_ASSERT_MSG(inflight_ == 0, "dispatch port closed with requests in flight");
}

IoBackend* DispatchPort::Channel() {
  if (channel_) return channel_.get();
  if (channel_refused_) return nullptr;
  auto ch = dispatcher_->pool()->backend()->OpenChannel(reactor_);
  if (!ch.ok()) {
    // sim has no channels: every request hops to the owner, as with remote_io off.
    SPD_LOG_DEBUG("dispatch: no I/O channel on this reactor: %s", ch.status().ToString().c_str());
    channel_refused_ = true;
    return nullptr;
  }
  channel_ = std::move(ch).value();
  return channel_.get();
}

Dispatcher::Dispatcher(Pool* pool, DispatcherOptions options, IoScheduler* scheduler)
    : pool_(pool), options_(options), scheduler_(scheduler ? scheduler : &pass_through_) {}

std::unique_ptr<DispatchPort> Dispatcher::OpenPort(Reactor* reactor) {
  return std::unique_ptr<DispatchPort>(
      new DispatchPort(this, reactor, scheduler_->PortState(reactor)));
}

void Dispatcher::Submit(DispatchPort* port, IoRequest* req) {
  req->port = port;
  req->result = 0;
  req->repl_hook = nullptr;
  req->queue_ns = 0;
  req->extents_valid = false;
  req->stamp_stages = options_.stamp_stages;
  req->Stamp(Stage::kQueued);
  ++port->inflight_;
  req->hop.req = req;
  const bool describes = req->op == RequestOp::kBlockStatus ||
                         (req->op == RequestOp::kRead && (req->flags & kReqWantExtents));
  if (req->volume == nullptr || static_cast<uint8_t>(req->op) > 5 ||
      (describes && (req->extents == nullptr || req->extents_max == 0 ||
                     req->extents->capacity() < req->extents_max + 1))) {
    invalid_total.Add();
    req->result = -EINVAL;
    req->hop.fn = [](Task* t) {  // the scheduler never saw it: no Completed
      IoRequest* r = static_cast<IoRequest::Hop*>(t)->req;
      --r->port->inflight_;
      r->done(r);
    };
    port->reactor_->Defer(&req->hop);
    return;
  }
  // Both schedulers (the pass-through and QoS) take every request here and give it back through
  // Release: the two probes mark the scheduler stage whichever runs.
  SPD_REQUEST_PROBE(sched__enqueue, req);
  scheduler_->Submit(req, this);
}

void Dispatcher::Release(IoRequest* req) {
  req->Stamp(Stage::kDispatched);
  SPD_REQUEST_PROBE(sched__dispatch, req);
  DispatchPort* port = req->port;
  Reactor* owner = OwnerOf(req->volume);
  if (port->reactor_ == owner) return ExecuteOnOwner(req);
  if (options_.remote_io && req->length_bytes > 0 &&
      (req->op == RequestOp::kRead ||
       (req->op == RequestOp::kWrite &&
        req->volume->replica_hook.load(std::memory_order_acquire) == nullptr))) {
    VolumeIo& v = req->vio;
    v.op = req->op == RequestOp::kRead ? IoOp::kRead : IoOp::kWrite;
    v.flags = (req->flags & kReqFua) ? kIoFua : 0;
    v.offset_bytes = req->offset_bytes;
    v.length_bytes = req->length_bytes;
    v.buf = req->buf;
    v.done = &Dispatcher::OnRemoteDone;
    v.ctx = req;
    req->Stamp(Stage::kBackendSubmit);
    if (req->volume->SubmitRemote(&v, port->Channel())) {
      // After the call, not before: a refused one started nothing and the request goes on to the
      // owner, where the probe fires then. `done` never runs inside the call, so
      // backend__complete still comes after.
      SPD_REQUEST_PROBE(backend__submit, req);
      return;
    }
  }
  hops_total.Add();
  req->hop.fn = &Dispatcher::OnHopToOwner;
  owner->Post(&req->hop);
}

void Dispatcher::OnHopToOwner(Task* t) {
  IoRequest* req = static_cast<IoRequest::Hop*>(t)->req;
  req->port->dispatcher_->ExecuteOnOwner(req);
}

IoBackend* Dispatcher::OwnerChannel(const Volume* v) {
  OwnerSide& side = owner_sides_[v->owner_index()];
  if (side.channel) return side.channel.get();
  if (side.refused) return nullptr;
  auto ch = pool_->backend()->OpenChannel(v->owner());
  if (!ch.ok()) {
    // sim has no channels on other reactors: the owner hands every request to the pool's.
    SPD_LOG_DEBUG("dispatch: no I/O channel on an owning reactor: %s",
                  ch.status().ToString().c_str());
    side.refused = true;
    return nullptr;
  }
  side.channel = std::move(ch).value();
  return side.channel.get();
}

void Dispatcher::ExecuteOnOwner(IoRequest* req) {
  if (req->op != RequestOp::kRead && req->op != RequestOp::kBlockStatus &&
      !(req->flags & kReqFromPrimary)) {
    if (void* h = req->volume->replica_hook.load(std::memory_order_acquire)) {
      req->repl_hook = static_cast<ReplicaHook*>(h);
      return req->repl_hook->Start(req);
    }
  }
  ExecuteLocal(req);
}

void Dispatcher::ExecuteLocal(IoRequest* req) {
  Volume* vol = req->volume;
  Reactor* owner = vol->owner();
  if (owner == pool_->reactor()) return ExecuteOnPool(req);
  if (req->op == RequestOp::kBlockStatus) {
    req->Stamp(Stage::kBackendSubmit);
    req->extents->clear();
    Status st;
    if (vol->MapRangeOwned(req->offset_bytes, req->length_bytes, req->extents_max, req->extents,
                           &st)) {
      // Answered from memory: the backend stage is the map lookup, already done.
      SPD_REQUEST_PROBE(backend__submit, req);
      return FinishBlockStatus(req, st, owner);
    }
    return HopToPool(req);
  }
  FillVolumeIo(req);
  req->vio.done = &Dispatcher::OnOwnedDone;
  req->Stamp(Stage::kBackendSubmit);
  if (vol->SubmitOwned(&req->vio, OwnerChannel(vol), owner)) {
    SPD_REQUEST_PROBE(backend__submit, req);  // after: as in Release
    return;
  }
  HopToPool(req);
}

void Dispatcher::HopToPool(IoRequest* req) {
  pool_hops_total.Add();
  req->hop.fn = &Dispatcher::OnHopToPool;
  pool_->reactor()->Post(&req->hop);
}

void Dispatcher::OnHopToPool(Task* t) {
  IoRequest* req = static_cast<IoRequest::Hop*>(t)->req;
  req->port->dispatcher_->ExecuteOnPool(req);
}

void Dispatcher::FillVolumeIo(IoRequest* req) {
  VolumeIo& v = req->vio;
  SPD_ASSERT(req->op != RequestOp::kBlockStatus);
  v.op = ToIoOp(req->op);
  v.flags = 0;
  // FUA means something for what writes; no-hole only for write-zeroes.
  if ((req->flags & kReqFua) && req->op != RequestOp::kRead && req->op != RequestOp::kFlush)
    v.flags |= kIoFua;
  if ((req->flags & kReqNoHole) && req->op == RequestOp::kWriteZeroes) v.flags |= kIoNoUnmap;
  v.offset_bytes = req->op == RequestOp::kFlush ? 0 : req->offset_bytes;
  v.length_bytes = req->op == RequestOp::kFlush ? 0 : req->length_bytes;
  v.buf = (req->op == RequestOp::kRead || req->op == RequestOp::kWrite) ? req->buf : nullptr;
  v.ctx = req;
}

void Dispatcher::ExecuteOnPool(IoRequest* req) {
  if (req->op == RequestOp::kBlockStatus) {
    req->Stamp(Stage::kBackendSubmit);
    SPD_REQUEST_PROBE(backend__submit, req);
    req->extents->clear();
    Status st =
        req->volume->MapRange(req->offset_bytes, req->length_bytes, req->extents_max, req->extents);
    return FinishBlockStatus(req, st, pool_->reactor());
  }
  FillVolumeIo(req);
  req->vio.done = &Dispatcher::OnVolumeDone;
  req->Stamp(Stage::kBackendSubmit);
  SPD_REQUEST_PROBE(backend__submit, req);  // the last resort: Volume::Submit always takes it
  req->volume->Submit(&req->vio);
}

void Dispatcher::FinishBlockStatus(IoRequest* req, const Status& st, Reactor* here) {
  if (!st.ok()) {
    req->result = -(st.sys_errno() ? st.sys_errno() : EINVAL);
  } else if (req->extents->empty()) {
    req->result = -EIO;
  } else {
    req->extents_valid = true;
  }
  req->Stamp(Stage::kBackendComplete);
  SPD_REQUEST_PROBE(backend__complete, req, req->result);
  // Never complete inside Submit: on the port's own reactor this ran in the caller's frame.
  req->hop.fn = &Dispatcher::OnHopBack;
  if (req->port->reactor_ == here) {
    req->port->reactor_->Defer(&req->hop);
  } else {
    req->port->reactor_->Post(&req->hop);
  }
}

void Dispatcher::DescribeHoles(IoRequest* req, int32_t result) {
  // Where the map may be read: the pool's reactor, or the owner inside the volume's gate.
  if (req->op != RequestOp::kRead || !(req->flags & kReqWantExtents) || result != 0) return;
  req->extents->clear();
  req->extents_valid =
      req->volume->MapRange(req->offset_bytes, req->length_bytes, req->extents_max, req->extents)
          .ok() &&
      !req->extents->empty();
}

void Dispatcher::OnVolumeDone(VolumeIo* vio) {
  // On the pool's reactor. A read that wants its holes described asks the map here.
  auto* req = static_cast<IoRequest*>(vio->ctx);
  req->Stamp(Stage::kBackendComplete);
  req->result = vio->result;
  SPD_REQUEST_PROBE(backend__complete, req, req->result);
  if (req->repl_hook != nullptr)
    return LocalPartDone(req, req->port->dispatcher_->pool_->reactor());
  DescribeHoles(req, vio->result);
  Finish(req, req->port->dispatcher_->pool_->reactor());
}

void Dispatcher::OnOwnedDone(VolumeIo* vio) {
  // On the owner, inside the volume's gate (SubmitOwned's `done`): the map stays put.
  auto* req = static_cast<IoRequest*>(vio->ctx);
  req->Stamp(Stage::kBackendComplete);
  req->result = vio->result;
  SPD_REQUEST_PROBE(backend__complete, req, req->result);
  if (req->repl_hook != nullptr) return LocalPartDone(req, req->volume->owner());
  DescribeHoles(req, vio->result);
  Finish(req, req->volume->owner());
}

void Dispatcher::LocalPartDone(IoRequest* req, Reactor* here) {
  if (here == req->volume->owner()) return req->repl_hook->LocalDone(req);
  req->hop.fn = &Dispatcher::OnHopToOwnerLocalDone;
  req->volume->owner()->Post(&req->hop);
}

void Dispatcher::OnHopToOwnerLocalDone(Task* t) {
  IoRequest* req = static_cast<IoRequest::Hop*>(t)->req;
  req->repl_hook->LocalDone(req);
}

void Dispatcher::FinishReplicated(IoRequest* req) {
  req->repl_hook = nullptr;
  // Never inside the hook's Start: the owner may be the port's reactor, in Submit's frame.
  req->hop.fn = &Dispatcher::OnHopBack;
  if (req->port->reactor_ == req->volume->owner()) {
    req->port->reactor_->Defer(&req->hop);
  } else {
    req->port->reactor_->Post(&req->hop);
  }
}

void Dispatcher::Finish(IoRequest* req, Reactor* here) {
  if (req->port->reactor_ == here) return Complete(req);
  req->hop.fn = &Dispatcher::OnHopBack;
  req->port->reactor_->Post(&req->hop);
}

void Dispatcher::OnRemoteDone(VolumeIo* vio) {
  // On the port's reactor. A fast-path read covered allocated chunks only: no holes.
  auto* req = static_cast<IoRequest*>(vio->ctx);
  req->Stamp(Stage::kBackendComplete);
  req->result = vio->result;
  SPD_REQUEST_PROBE(backend__complete, req, req->result);
  Complete(req);
}

void Dispatcher::OnHopBack(Task* t) { Complete(static_cast<IoRequest::Hop*>(t)->req); }

void Dispatcher::Complete(IoRequest* req) {
  DispatchPort* port = req->port;
  SPD_ASSERT(port->inflight_ > 0);
  --port->inflight_;
  port->dispatcher_->scheduler_->Completed(req);
  req->done(req);
}

}  // namespace spd
