// Unaligned reads and writes: through a bounce buffer, writes as read-modify-write of the
// aligned blocks around them, one at a time, with the volume exclusive.
//
// Why exclusive: a read-modify-write rewrites bytes the client did not send (the rest of each
// block it touches). Any write to those blocks that runs between our read and our write would
// be undone, even one that does not overlap the client's bytes at all (two 512-byte writes
// into one 4 KiB block). So while unaligned requests are served, nothing else touches the
// volume: the fast path is paused (SubmitRemote takes nothing and sends requests here), the
// requests already started finish first, and the ones that arrive wait in `held` until the
// last unaligned request is done. Aligned requests, the common case, pay one pointer test.
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "common/counters.h"
#include "volume/pool.h"
#include "volume/volume_rmw.h"

namespace spd {
namespace {

Counter unaligned_total("spd_volume_unaligned_requests_total",
                        "Reads and writes not aligned to the pool backend's alignment, served "
                        "through a bounce buffer (writes as read-modify-write).");
Counter held_total("spd_volume_exclusive_held_requests_total",
                   "Requests that waited while a volume served unaligned requests exclusively.");
Counter bounce_alloc_failures_total("spd_volume_bounce_alloc_failures_total",
                                    "Unaligned requests failed with ENOMEM: no bounce buffer.");
// A bounce buffer this large or smaller stays with the volume for the next unaligned request.
constexpr size_t kBounceKeepBytes = 1u << 20;
// How soon to look again while requests on the fast path are still running.
constexpr uint64_t kExclusiveRecheckNs = 50'000;

void Append(VolumeIo** head, VolumeIo** tail, VolumeIo* io) {
  io->wait_next = nullptr;
  if (*tail) {
    (*tail)->wait_next = io;
  } else {
    *head = io;
  }
  *tail = io;
}

VolumeIo* Pop(VolumeIo** head, VolumeIo** tail) {
  VolumeIo* io = *head;
  if (io) {
    *head = io->wait_next;
    if (*head == nullptr) *tail = nullptr;
    io->wait_next = nullptr;
  }
  return io;
}

}  // namespace

Volume::~Volume() {
  if (!rmw_) return;
  SPD_ASSERT_MSG(!rmw_->exclusive, "volume destroyed while serving unaligned requests");
  std::free(rmw_->bounce);
  delete rmw_;
}

bool Volume::Unaligned(const VolumeIo* io) const {
  if ((io->op != IoOp::kRead && io->op != IoOp::kWrite) || io->length_bytes == 0) return false;
  const uint64_t a = pool_->backend_->alignment_bytes();
  if (a <= 1 || (io->offset_bytes % a == 0 && io->length_bytes % a == 0)) return false;
  // Out of range or refused requests take the normal path, which answers them.
  const uint64_t end = io->offset_bytes + io->length_bytes;
  if (end < io->offset_bytes || end > info_.size_bytes) return false;
  return !(io->op == IoOp::kWrite && info_.read_only);
}

void Volume::Hold(VolumeIo* io) {
  held_total.Add();
  io->volume = this;
  Append(&rmw_->held_head, &rmw_->held_tail, io);
}

void Volume::SubmitUnaligned(VolumeIo* io) {
  unaligned_total.Add();
  if (!rmw_) {
    rmw_ = new Rmw();
    rmw_->timer.volume = this;
    rmw_->timer.fn = &Volume::OnExclusiveTimer;
    rmw_->next.volume = this;
    rmw_->next.fn = [](Task* t) {
      Volume* v = static_cast<Rmw::NextTask*>(t)->volume;
      v->rmw_->next_pending = false;
      v->RunNextUnaligned();
    };
  }
  io->volume = this;
  io->in_submit = false;
  Append(&rmw_->queue_head, &rmw_->queue_tail, io);
  if (!rmw_->exclusive) {
    rmw_->exclusive = true;
    // seq_cst pairs with SubmitRemote: it either sees the pause or is counted in
    // remote_active_, which we wait for.
    remote_paused_.store(true, std::memory_order_seq_cst);
  }
  MaybeRunExclusive();
}

void Volume::MaybeRunExclusive() {
  Rmw* r = rmw_;
  if (!r->exclusive || r->running || r->next_pending) return;
  if (inflight_ > 0) return;  // a completion calls again
  if (remote_active_.load(std::memory_order_seq_cst) > 0) {
    if (r->timer.heap_index == SIZE_MAX)
      pool_->reactor_->ArmTimer(&r->timer, MonotonicNs() + kExclusiveRecheckNs);
    return;
  }
  // Never from inside a completion of the request whose state we are about to reuse.
  r->next_pending = true;
  pool_->reactor_->Defer(&r->next);
}

void Volume::OnExclusiveTimer(Timer* t) {
  static_cast<Rmw::ExclusiveTimer*>(t)->volume->MaybeRunExclusive();
}

void Volume::RunNextUnaligned() {
  Rmw* r = rmw_;
  if (inflight_ > 0 || remote_active_.load(std::memory_order_seq_cst) > 0) {
    return MaybeRunExclusive();  // something started meanwhile: wait again
  }
  VolumeIo* io = Pop(&r->queue_head, &r->queue_tail);
  if (io == nullptr) return LeaveExclusive();
  r->cur = io;
  r->running = true;
  ++inflight_;  // Complete() of `io` gives it back
  const uint64_t a = pool_->backend_->alignment_bytes();
  r->start_bytes = io->offset_bytes / a * a;
  r->end_bytes = (io->offset_bytes + io->length_bytes + a - 1) / a * a;
  if (r->end_bytes > info_.size_bytes) {
    // Only a volume whose size is not a multiple of the alignment (made before sizes were
    // checked) has such a tail, and its last partial block cannot be written directly.
    return FinishUnaligned(-EINVAL);
  }
  const size_t need = r->end_bytes - r->start_bytes;
  if (r->bounce_bytes < need) {
    std::free(r->bounce);
    r->bounce = nullptr;
    r->bounce_bytes = 0;
    void* p = nullptr;
    if (posix_memalign(&p, 4096, need) != 0) {
      bounce_alloc_failures_total.Add();
      return FinishUnaligned(-ENOMEM);
    }
    r->bounce = static_cast<uint8_t*>(p);
    r->bounce_bytes = need;
  }
  VolumeIo& in = r->inner;
  in.op = IoOp::kRead;
  in.flags = 0;
  in.offset_bytes = r->start_bytes;
  in.length_bytes = static_cast<uint32_t>(need);
  in.buf = r->bounce;
  in.done = &Volume::OnRmwReadDone;
  in.ctx = this;
  Start(&in);
}

void Volume::OnRmwReadDone(VolumeIo* inner) {
  auto* v = static_cast<Volume*>(inner->ctx);
  Rmw* r = v->rmw_;
  VolumeIo* io = r->cur;
  if (inner->result < 0) return v->FinishUnaligned(inner->result);
  uint8_t* at = r->bounce + (io->offset_bytes - r->start_bytes);
  if (io->op == IoOp::kRead) {
    std::memcpy(io->buf, at, io->length_bytes);
    return v->FinishUnaligned(0);
  }
  std::memcpy(at, io->buf, io->length_bytes);
  inner->op = IoOp::kWrite;
  inner->flags = io->flags & kIoFua;
  inner->done = &Volume::OnRmwWriteDone;
  v->Start(inner);
}

void Volume::OnRmwWriteDone(VolumeIo* inner) {
  auto* v = static_cast<Volume*>(inner->ctx);
  v->FinishUnaligned(inner->result);
}

void Volume::FinishUnaligned(int32_t result) {
  Rmw* r = rmw_;
  VolumeIo* io = r->cur;
  r->cur = nullptr;
  r->running = false;
  if (r->bounce_bytes > kBounceKeepBytes) {
    std::free(r->bounce);
    r->bounce = nullptr;
    r->bounce_bytes = 0;
  }
  Complete(io, result);  // runs io->done, then MaybeRunExclusive for the next one
}

void Volume::LeaveExclusive() {
  Rmw* r = rmw_;
  r->exclusive = false;
  pool_->reactor_->CancelTimer(&r->timer);
  remote_paused_.store(false, std::memory_order_seq_cst);
  // In arrival order; an unaligned one among them makes the volume exclusive again, and the
  // ones after it wait again, so the order holds.
  VolumeIo* head = r->held_head;
  r->held_head = r->held_tail = nullptr;
  while (head) {
    VolumeIo* io = head;
    head = io->wait_next;
    io->wait_next = nullptr;
    Submit(io);
  }
}

}  // namespace spd
