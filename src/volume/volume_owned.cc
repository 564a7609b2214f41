// The owner's path: a volume's requests served on its owning reactor (Volume::SubmitOwned).
//
// The owner splits a request by chunk and runs its backend I/O on its own channel. For what the
// pool shares it sends the request itself, as a message (the request's intrusive task), to the
// pool's reactor, and continues when the answer comes back the same way:
//   kPoolAlloc   a write into a hole needs a chunk (AllocChunk there; it may wait for space
//                being reclaimed, as a write on the pool's reactor does);
//   kPoolUnmap   a trim or write-zeroes of a whole chunk frees it (UnmapChunk there);
//   kPoolCommit  FLUSH, FUA or durability=sync: the next group commit (WaitCommit there).
// One message at a time per request, none for reads and writes of allocated space. Map entries
// are stored only on the pool's reactor; the owner loads them atomically and pins each chunk for
// the time of its I/O (as the fast path, SubmitRemote, does), so a chunk is never zeroed or
// handed to another volume under an I/O. The whole request counts in remote_active_, so a
// control operation that closes the path (and an unaligned request's exclusive mode) waits for
// it to end before it changes the map or the volume's size.
#include <cstring>

#include "common/counters.h"
#include "volume/pool.h"
#include "volume/pool_internal.h"

namespace spd {
namespace {

enum PoolOp : uint8_t { kPoolNone = 0, kPoolAlloc = 1, kPoolUnmap = 2, kPoolCommit = 3 };

Counter owner_pool_messages_total(
    "spd_volume_owner_pool_messages_total",
    "Messages from a volume's owning reactor to the pool's reactor: a chunk for a write into a "
    "hole, the unmapping of a whole chunk, or a commit (FLUSH, FUA, durability=sync).");
Counter owner_fallbacks_total(
    "spd_volume_owner_fallbacks_total",
    "Requests the owner's path did not take (closed by a control operation or an unaligned "
    "request's exclusive mode; unaligned; no backend channel) and that the pool's reactor served.");

constexpr auto kSeqCst = std::memory_order_seq_cst;

}  // namespace

using namespace volume_counters;  // NOLINT(google-build-using-namespace)

bool Volume::EnterRemote() const {
  // seq_cst pairs with BeginCloseRemote / the exclusive mode: either the closer sees us counted
  // (and waits), or we see the path closed (and stay out).
  remote_active_.fetch_add(1, kSeqCst);
  if (remote_open_.load(kSeqCst) && !remote_paused_.load(kSeqCst)) return true;
  remote_active_.fetch_sub(1, kSeqCst);
  return false;
}

bool Volume::SubmitOwned(VolumeIo* io, IoBackend* channel, Reactor* owner) {
  if (channel == nullptr || !EnterRemote()) {
    owner_fallbacks_total.Add();
    return false;
  }
  if (Unaligned(io)) {  // needs the bounce buffer and the exclusive mode of Submit
    remote_active_.fetch_sub(1, kSeqCst);
    owner_fallbacks_total.Add();
    return false;
  }
  io->volume = this;
  io->owner = owner;
  io->owner_channel = channel;
  io->owned = true;
  io->remote = false;
  io->pool_op = kPoolNone;
  io->in_submit = true;
  const int32_t admit = Admit(io);
  if (admit != 0) {
    OwnedFinish(io, admit > 0 ? 0 : admit);
  } else {
    OwnedIssue(io);
  }
  io->in_submit = false;
  return true;
}

void Volume::OwnedIssue(VolumeIo* io) {
  Pool* pool = pool_;
  const uint64_t chunk = pool->chunk_bytes_;
  if (io->op != IoOp::kRead && io->op != IoOp::kFlush && io->first_error == 0 &&
      pool->read_only()) {
    read_only_refusals_total.Add();
    io->first_error = -EROFS;
  }
  while (io->first_error == 0 && io->pool_op == kPoolNone && io->cursor_bytes < io->length_bytes &&
         io->sub_pending < VolumeIo::kSubIoMax) {
    const uint64_t off = io->offset_bytes + io->cursor_bytes;
    const uint64_t vchunk = off / chunk;
    const uint64_t in = off % chunk;
    const uint32_t seg =
        static_cast<uint32_t>(std::min<uint64_t>(io->length_bytes - io->cursor_bytes, chunk - in));
    const uint32_t p1 = MapLoad(vchunk);
    if (p1 != 0) {
      // Pin, then look again: UnmapChunk stores the 0 before it reads the pins.
      pool->pins_[p1 - 1].fetch_add(1, kSeqCst);
      if (MapLoad(vchunk) != p1) {
        pool->pins_[p1 - 1].fetch_sub(1, kSeqCst);
        continue;  // unmapped (and maybe mapped again) meanwhile: look again
      }
    }
    const uint64_t at = io->cursor_bytes;
    IoOp op = io->op;
    uint8_t flags = 0;
    switch (io->op) {
      case IoOp::kRead:
        if (p1 == 0) {
          std::memset(static_cast<uint8_t*>(io->buf) + at, 0, seg);
          io->cursor_bytes += seg;
          continue;
        }
        break;
      case IoOp::kWrite:
        if (p1 == 0) {
          io->pool_vchunk = vchunk;
          io->pool_op = kPoolAlloc;  // ends the wave; the answer resumes from this segment
          continue;
        }
        if (io->fua) {
          flags |= kIoFua;
          // Durable data in a chunk whose allocation is not durable yet would be lost.
          if (pool->AllocPending(p1 - 1)) io->needs_commit = true;
        }
        pool->MarkData(p1 - 1, in, seg);
        break;
      case IoOp::kDiscard:
      case IoOp::kWriteZeroes:
        if (p1 == 0) {  // unallocated already reads as zeros
          io->cursor_bytes += seg;
          continue;
        }
        if (seg == chunk && !(io->op == IoOp::kWriteZeroes && (io->flags & kIoNoUnmap))) {
          pool->pins_[p1 - 1].fetch_sub(1, kSeqCst);
          io->pool_vchunk = vchunk;
          io->pool_p1 = p1;
          io->pool_op = kPoolUnmap;
          continue;
        }
        // Part of a chunk, or zeros that must stay allocated: zeroed in place here, as on the
        // pool's reactor (Volume::Issue).
        if (!pool->backend_->discard_zeroes()) op = IoOp::kWriteZeroes;
        if (io->op == IoOp::kWriteZeroes && (io->flags & kIoNoUnmap)) flags |= kIoNoUnmap;
        pool->MarkData(p1 - 1, in, seg);
        io->zeroing_subs |= static_cast<uint8_t>(1u << io->sub_pending);
        io->sub_wseq[io->sub_pending] = pool->WriteSeq(p1 - 1);
        break;
      case IoOp::kFlush:
        SPD_ASSERT(false);
    }
    io->cursor_bytes += seg;
    BackendIo& sub = io->sub[io->sub_pending++];
    sub.op = op;
    sub.flags = flags;
    sub.offset_bytes = pool->ChunkOffset(p1 - 1) + in;
    sub.length_bytes = seg;
    sub.buf =
        (op == IoOp::kRead || op == IoOp::kWrite) ? static_cast<uint8_t*>(io->buf) + at : nullptr;
    sub.ctx = io;
    sub.done = &Volume::OnOwnedSubDone;
    io->owner_channel->Submit(&sub);  // completes later on the owner, never inside
  }
  if (io->sub_pending > 0) return;  // the last completion calls again
  if (io->first_error != 0) return OwnedFinish(io, io->first_error);
  if (io->pool_op != kPoolNone) return AskPool(io, io->pool_op);
  if (io->needs_commit) return AskPool(io, kPoolCommit);
  OwnedFinish(io, 0);
}

void Volume::OnOwnedSubDone(BackendIo* sub) {
  auto* io = static_cast<VolumeIo*>(sub->ctx);
  Volume* v = io->volume;
  Pool* pool = v->pool_;
  const uint32_t p = pool->ChunkAt(sub->offset_bytes);
  const unsigned idx = static_cast<unsigned>(sub - io->sub);
  if ((io->zeroing_subs & (1u << idx)) && sub->result >= 0) {
    pool->MarkZeroIfUnwritten(p, sub->offset_bytes - pool->ChunkOffset(p), sub->length_bytes,
                              io->sub_wseq[idx]);
  }
  pool->pins_[p].fetch_sub(1, kSeqCst);
  if (sub->result < 0 && io->first_error == 0) {
    io_errors_total.Add();
    io->first_error = sub->result;
  }
  if (--io->sub_pending > 0) return;
  io->zeroing_subs = 0;  // the next wave numbers its subs from 0 again
  v->OwnedIssue(io);
}

void Volume::OwnedFinish(VolumeIo* io, int32_t result) {
  io->result = result;
  if (io->in_submit) {
    io->task.fn = &Volume::OnOwnedDeferredDone;  // never complete inside SubmitOwned
    io->owner->Defer(&io->task);
    return;
  }
  // `done` runs inside the gate (the map cannot be reallocated under it: a read that wants its
  // holes described may call MapRange there); the count is the volume's, not io's.
  io->done(io);
  remote_active_.fetch_sub(1, kSeqCst);
}

void Volume::OnOwnedDeferredDone(Task* t) {
  VolumeIo* io = reinterpret_cast<VolumeIo*>(reinterpret_cast<char*>(t) - offsetof(VolumeIo, task));
  Volume* v = io->volume;
  io->done(io);
  v->remote_active_.fetch_sub(1, kSeqCst);
}

void Volume::AskPool(VolumeIo* io, uint8_t op) {
  owner_pool_messages_total.Add();
  io->pool_op = op;
  io->pool_result = 0;
  io->task.fn = &Volume::OnPoolRequest;
  pool_->reactor_->Post(&io->task);
}

// ---- on the pool's reactor ----

void Volume::OnPoolRequest(Task* t) {
  VolumeIo* io = reinterpret_cast<VolumeIo*>(reinterpret_cast<char*>(t) - offsetof(VolumeIo, task));
  Volume* v = io->volume;
  Pool* pool = v->pool_;
  switch (io->pool_op) {
    case kPoolAlloc:
      return v->OwnedAlloc(io);
    case kPoolUnmap:
      if (pool->read_only()) {
        read_only_refusals_total.Add();
        return ReplyOwned(io, -EROFS);
      }
      // Someone else unmapped it (the pool's own path) since the owner looked: look again.
      if (v->MapLoad(io->pool_vchunk) != io->pool_p1) return ReplyOwned(io, -EAGAIN);
      pool->UnmapChunk(v, io->pool_vchunk);
      return ReplyOwned(io, 0);
    case kPoolCommit:
      io->waiter.fn = &Volume::OnOwnedCommitted;
      return pool->WaitCommit(&io->waiter);
    default:
      SPD_ASSERT(false);
  }
}

void Volume::OwnedAlloc(VolumeIo* io) {
  Pool* pool = pool_;
  if (pool->read_only()) {
    read_only_refusals_total.Add();
    return ReplyOwned(io, -EROFS);
  }
  if (MapLoad(io->pool_vchunk) != 0) return ReplyOwned(io, 0);  // another request's allocation
  if (pool->AllocChunk(this, io->pool_vchunk) != 0) return ReplyOwned(io, 0);
  // Freed chunks are on their way back (a TRIM just now): wait for one, as Issue does; the
  // pool's space timer calls OwnedAlloc again or answers ENOSPC (FailSpaceWaiter).
  if (pool->ReclaimPending()) return pool->WaitForSpace(io);
  if (io->space_deadline_ns != 0) space_wait_exhausted_total.Add();
  enospc_total.Add();
  ReplyOwned(io, -ENOSPC);
}

void Volume::OnOwnedCommitted(CommitWaiter* w, int32_t result) {
  ReplyOwned(reinterpret_cast<VolumeIo*>(reinterpret_cast<char*>(w) - offsetof(VolumeIo, waiter)),
             result);
}

void Volume::ReplyOwned(VolumeIo* io, int32_t result) {
  io->pool_result = result;
  io->task.fn = &Volume::OnPoolReply;
  io->owner->Post(&io->task);
}

// ---- back on the owner ----

void Volume::OnPoolReply(Task* t) {
  VolumeIo* io = reinterpret_cast<VolumeIo*>(reinterpret_cast<char*>(t) - offsetof(VolumeIo, task));
  Volume* v = io->volume;
  const uint8_t op = io->pool_op;
  const int32_t result = io->pool_result;
  io->pool_op = kPoolNone;
  if (op == kPoolCommit) return v->OwnedFinish(io, result);
  if (op == kPoolUnmap && result == 0) {
    io->cursor_bytes += v->pool_->chunk_bytes_;  // the whole chunk is done
  } else if (result < 0 && result != -EAGAIN && io->first_error == 0) {
    io->first_error = result;
  }
  v->OwnedIssue(io);  // an allocated chunk is mapped now: the loop loads it
}

bool Volume::MapRangeOwned(uint64_t offset_bytes, uint64_t length_bytes, size_t extents_max,
                           std::vector<Extent>* out, Status* status) const {
  if (!EnterRemote()) {
    owner_fallbacks_total.Add();
    return false;
  }
  *status = MapRange(offset_bytes, length_bytes, extents_max, out);
  remote_active_.fetch_sub(1, kSeqCst);
  return true;
}

}  // namespace spd
