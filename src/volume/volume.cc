// Volume data path: split a request by chunk, map or allocate, issue backend I/O in waves of at
// most VolumeIo::kSubIoMax, and commit when the request's durability asks for it.
#include <cstring>

#include "common/counters.h"
#include "volume/pool.h"
#include "volume/pool_internal.h"
#include "volume/volume_rmw.h"

namespace spd {
namespace volume_counters {

Counter client_bytes_written_total("spd_volume_client_bytes_written_total",
                                   "Bytes clients asked volumes to write.");
Counter invalid_requests_total("spd_volume_invalid_requests_total",
                               "Volume requests refused: out of range or read-only.");
Counter enospc_total("spd_volume_enospc_total", "Writes refused because the pool is full.");
Counter space_wait_exhausted_total(
    "spd_volume_space_wait_exhausted_total",
    "Writes that waited for space being reclaimed, then failed with ENOSPC: nothing was left to "
    "reclaim (other writes took what came back).");
Counter read_only_refusals_total(
    "spd_volume_read_only_pool_refusals_total",
    "Writes, trims, write-zeroes (EROFS) and flushes (EIO) refused because the pool turned "
    "read-only after a failed commit or device flush.");
Counter io_errors_total("spd_volume_io_errors_total", "Volume requests failed by backend errors.");
Counter remote_requests_total(
    "spd_volume_remote_requests_total",
    "Reads and writes a connection's own reactor ran on its channel, without a message to the "
    "pool's reactor.");
Counter remote_fallbacks_total(
    "spd_volume_remote_fallbacks_total",
    "Requests from another reactor that the fast path could not take (a hole, FUA into a chunk "
    "whose allocation is not yet durable, a chunk being freed, a resize) and that went to the "
    "pool's reactor instead.");

}  // namespace volume_counters

using namespace volume_counters;  // NOLINT(google-build-using-namespace): this file's own

void Volume::Submit(VolumeIo* io) {
  if (rmw_ && rmw_->exclusive) return Hold(io);
  if (Unaligned(io)) return SubmitUnaligned(io);
  Start(io);
}

void Volume::Start(VolumeIo* io) {
  io->volume = this;
  io->remote = false;
  io->owned = false;
  io->in_submit = true;
  ++inflight_;
  if (deleted_) {
    invalid_requests_total.Add();
    Complete(io, -ESHUTDOWN);  // a stale pointer to a deleted volume (a tombstone)
  } else if (const int32_t admit = Admit(io); admit != 0) {
    Complete(io, admit > 0 ? 0 : admit);
  } else {
    Issue(io);
  }
  io->in_submit = false;
}

int32_t Volume::Admit(VolumeIo* io) {
  io->result = 0;
  io->first_error = 0;
  io->cursor_bytes = 0;
  io->sub_pending = 0;
  io->zeroing_subs = 0;
  io->needs_commit = false;
  io->space_wait = false;
  io->space_deadline_ns = 0;
  io->space_next = nullptr;
  io->fua = (io->flags & kIoFua) != 0 || info_.durability == Durability::kSync;
  if (info_.durability == Durability::kNone) io->fua = false;
  if (io->op != IoOp::kRead && pool_->read_only()) {
    read_only_refusals_total.Add();
    return io->op == IoOp::kFlush ? -EIO : -EROFS;
  }
  if (io->op == IoOp::kFlush) {
    if (info_.durability == Durability::kNone) return 1;
    io->needs_commit = true;
    return 0;
  }
  if (io->op != IoOp::kRead && info_.read_only) {
    invalid_requests_total.Add();
    return -EPERM;
  }
  if (const int32_t e = RangeError(io->offset_bytes, io->length_bytes,
                                   io->op == IoOp::kWrite || io->op == IoOp::kWriteZeroes);
      e != 0) {
    invalid_requests_total.Add();
    return e;
  }
  if (io->op == IoOp::kWrite) client_bytes_written_total.Add(io->length_bytes);
  if (io->fua && io->op != IoOp::kRead && io->op != IoOp::kWrite) io->needs_commit = true;
  return 0;
}

void Volume::Issue(VolumeIo* io) {
  Pool* pool = pool_;
  const uint64_t chunk = pool->chunk_bytes_;
  io->space_wait = false;
  if (io->op != IoOp::kRead && io->op != IoOp::kFlush && io->first_error == 0 &&
      pool->read_only()) {
    // Turned read-only since the request started (between waves, or while it waited for space).
    read_only_refusals_total.Add();
    io->first_error = -EROFS;
  }
  while (io->first_error == 0 && !io->space_wait && io->cursor_bytes < io->length_bytes &&
         io->sub_pending < VolumeIo::kSubIoMax) {
    const uint64_t off = io->offset_bytes + io->cursor_bytes;
    const uint64_t vchunk = off / chunk;
    const uint64_t in = off % chunk;
    const uint32_t seg =
        static_cast<uint32_t>(std::min<uint64_t>(io->length_bytes - io->cursor_bytes, chunk - in));
    uint32_t p1 = map_[vchunk];
    const uint64_t at = io->cursor_bytes;
    io->cursor_bytes += seg;
    IoOp op = io->op;
    uint8_t flags = 0;
    switch (io->op) {
      case IoOp::kRead:
        if (p1 == 0) {
          std::memset(static_cast<uint8_t*>(io->buf) + at, 0, seg);
          continue;
        }
        break;
      case IoOp::kWrite:
        if (p1 == 0) {
          p1 = pool->AllocChunk(this, vchunk);
          if (p1 == 0 && pool->ReclaimPending()) {
            // Freed chunks are on their way back (a TRIM just now): wait for one rather than
            // fail a write that a file system would take as fatal. Retried from here.
            io->cursor_bytes = at;
            io->space_wait = true;
            continue;
          }
          if (p1 == 0) {
            if (io->space_deadline_ns != 0) space_wait_exhausted_total.Add();
            enospc_total.Add();
            io->first_error = -ENOSPC;
            continue;
          }
          io->needs_commit = io->needs_commit || io->fua;
        } else if (io->fua && pool->AllocPending(p1 - 1)) {
          // Durable data in a chunk whose allocation is not durable yet would be lost.
          io->needs_commit = true;
        }
        if (io->fua) flags |= kIoFua;
        pool->MarkData(p1 - 1, in, seg);
        break;
      case IoOp::kDiscard:
      case IoOp::kWriteZeroes:
        if (p1 == 0) continue;  // unallocated already reads as zeros
        if (seg == chunk && !(io->op == IoOp::kWriteZeroes && (io->flags & kIoNoUnmap))) {
          pool->UnmapChunk(this, vchunk);
          continue;
        }
        // Part of a chunk, or zeros that must stay allocated: zero it in place (a punched hole
        // reads as zeros on files and sim).
        if (!pool->backend_->discard_zeroes()) op = IoOp::kWriteZeroes;
        if (io->op == IoOp::kWriteZeroes && (io->flags & kIoNoUnmap)) flags |= kIoNoUnmap;
        // Block status may say "zero" for what this covers once it has completed, unless a
        // write came in meanwhile: unknown until then.
        pool->MarkData(p1 - 1, in, seg);
        io->zeroing_subs |= static_cast<uint8_t>(1u << io->sub_pending);
        io->sub_wseq[io->sub_pending] = pool->WriteSeq(p1 - 1);
        break;
      case IoOp::kFlush:
        SPD_ASSERT(false);
    }
    BackendIo& sub = io->sub[io->sub_pending++];
    // Sub-I/O slots are reused only when every one of the wave has completed.
    sub.op = op;
    sub.flags = flags;
    sub.offset_bytes = pool->ChunkOffset(p1 - 1) + in;
    sub.length_bytes = seg;
    sub.buf =
        (op == IoOp::kRead || op == IoOp::kWrite) ? static_cast<uint8_t*>(io->buf) + at : nullptr;
    sub.ctx = io;
    sub.done = &Volume::OnSubDone;
    pool->ChunkIoStart(p1 - 1);
    pool->backend_->Submit(&sub);
  }
  if (io->sub_pending > 0) return;
  // Everything issued and completed (or nothing needed the backend).
  if (io->first_error != 0) return Complete(io, io->first_error);
  if (io->space_wait) return pool->WaitForSpace(io);
  if (io->needs_commit) {
    io->waiter.fn = &Volume::OnCommitted;
    pool->WaitCommit(&io->waiter);
    return;
  }
  Complete(io, 0);
}

bool Volume::SubmitRemote(VolumeIo* io, IoBackend* channel) {
  const bool write = io->op == IoOp::kWrite;
  const uint32_t align = pool_->backend_->alignment_bytes();
  if (channel == nullptr || (io->op != IoOp::kRead && !write) || io->length_bytes == 0 ||
      (write && (info_.read_only || pool_->read_only())) ||
      (io->offset_bytes | io->length_bytes) % align != 0)
    return false;  // not a fast-path kind of request (unaligned ones need the bounce buffer
                   // and the exclusive mode of Submit): no count, it is not a fallback
  // Durable at completion (FUA, or every write of a sync volume), as in Submit: the data by the
  // backend's FUA write, the chunk's allocation by a commit, which only the pool's reactor runs;
  // so such a write takes this path only into chunks whose allocation is durable already.
  const bool fua = write && info_.durability != Durability::kNone &&
                   ((io->flags & kIoFua) || info_.durability == Durability::kSync);
  remote_active_.fetch_add(1, std::memory_order_seq_cst);
  // seq_cst pairs with CloseRemote: either it sees us counted, or we see the path closed.
  if (!remote_open_.load(std::memory_order_seq_cst) ||
      remote_paused_.load(std::memory_order_seq_cst)) {
    remote_active_.fetch_sub(1, std::memory_order_seq_cst);
    remote_fallbacks_total.Add();
    return false;
  }
  // From here to the last `done`, map_ and info_.size_bytes stay as they are.
  Pool* pool = pool_;
  const uint64_t chunk = pool->chunk_bytes_;
  const uint64_t end = io->offset_bytes + io->length_bytes;
  const uint64_t first = io->offset_bytes / chunk;
  const uint64_t last = (end - 1) / chunk;
  uint32_t pinned[VolumeIo::kSubIoMax];
  size_t n = 0;
  bool ok = end <= info_.size_bytes && end > io->offset_bytes && last - first < VolumeIo::kSubIoMax;
  for (uint64_t vc = first; ok && vc <= last; ++vc) {
    const uint32_t p1 = MapLoad(vc);
    if (p1 == 0) {
      ok = false;  // a hole: reads need a hole chunk, writes an allocation
      break;
    }
    // Pin, then look again: the pool's reactor unmaps (seq_cst) before it reads the pins, so
    // either it sees this pin and waits, or we see the chunk gone and back off.
    pool->pins_[p1 - 1].fetch_add(1, std::memory_order_seq_cst);
    pinned[n++] = p1 - 1;
    // A pinned chunk is not freed, so its allocation cannot become pending again under us.
    if (MapLoad(vc) != p1 || (fua && pool->AllocPending(p1 - 1))) ok = false;
  }
  if (!ok) {
    for (size_t i = 0; i < n; ++i) pool->pins_[pinned[i]].fetch_sub(1, std::memory_order_seq_cst);
    remote_active_.fetch_sub(1, std::memory_order_seq_cst);
    remote_fallbacks_total.Add();
    return false;
  }
  remote_requests_total.Add();
  if (write) client_bytes_written_total.Add(io->length_bytes);
  io->volume = this;
  io->result = 0;
  io->first_error = 0;
  io->remote = true;
  io->sub_pending = static_cast<uint32_t>(n);
  io->cursor_bytes = io->length_bytes;
  uint64_t at = 0;
  for (size_t i = 0; i < n; ++i) {
    const uint64_t off = io->offset_bytes + at;
    const uint64_t in = off % chunk;
    const uint32_t seg =
        static_cast<uint32_t>(std::min<uint64_t>(io->length_bytes - at, chunk - in));
    if (write) pool->MarkData(pinned[i], in, seg);
    BackendIo& sub = io->sub[i];
    sub.op = io->op;
    sub.flags = fua ? kIoFua : 0;
    sub.offset_bytes = pool->ChunkOffset(pinned[i]) + in;
    sub.length_bytes = seg;
    sub.buf = static_cast<uint8_t*>(io->buf) + at;
    sub.ctx = io;
    sub.done = &Volume::OnRemoteSubDone;
    at += seg;
  }
  // Submit only once every sub is set up: a completion never runs inside Submit, but the
  // subs share io.
  for (size_t i = 0; i < n; ++i) channel->Submit(&io->sub[i]);
  return true;
}

void Volume::OnRemoteSubDone(BackendIo* sub) {
  // On the channel's reactor.
  auto* io = static_cast<VolumeIo*>(sub->ctx);
  Volume* v = io->volume;
  Pool* pool = v->pool_;
  pool->pins_[pool->ChunkAt(sub->offset_bytes)].fetch_sub(1, std::memory_order_seq_cst);
  if (sub->result < 0 && io->first_error == 0) {
    io_errors_total.Add();
    io->first_error = sub->result;
  }
  if (--io->sub_pending > 0) return;
  io->result = io->first_error;
  v->remote_active_.fetch_sub(1, std::memory_order_seq_cst);
  io->done(io);
}

void Volume::OnSubDone(BackendIo* sub) {
  auto* io = static_cast<VolumeIo*>(sub->ctx);
  Volume* v = io->volume;
  Pool* pool = v->pool_;
  const uint32_t p = pool->ChunkAt(sub->offset_bytes);
  const unsigned idx = static_cast<unsigned>(sub - io->sub);
  if ((io->zeroing_subs & (1u << idx)) && sub->result >= 0) {
    pool->MarkZeroIfUnwritten(p, sub->offset_bytes - pool->ChunkOffset(p), sub->length_bytes,
                              io->sub_wseq[idx]);
  }
  pool->ChunkIoDone(p);
  if (sub->result < 0 && io->first_error == 0) {
    io_errors_total.Add();
    io->first_error = sub->result;
  }
  if (--io->sub_pending > 0) return;
  io->zeroing_subs = 0;  // the next wave numbers its subs from 0 again
  v->Issue(io);          // next wave, or finish
}

void Volume::OnCommitted(CommitWaiter* w, int32_t result) {
  VolumeIo* io =
      reinterpret_cast<VolumeIo*>(reinterpret_cast<char*>(w) - offsetof(VolumeIo, waiter));
  io->volume->Complete(io, result);
}

void Volume::Complete(VolumeIo* io, int32_t result) {
  io->result = result;
  if (io->in_submit) {
    // Never complete inside Submit: the caller may not be ready for its callback yet.
    io->task.fn = &Volume::OnDeferredDone;
    pool_->reactor_->Defer(&io->task);
    return;
  }
  --inflight_;
  io->done(io);
  if (rmw_) MaybeRunExclusive();
}

void Volume::OnDeferredDone(Task* t) {
  VolumeIo* io = reinterpret_cast<VolumeIo*>(reinterpret_cast<char*>(t) - offsetof(VolumeIo, task));
  Volume* v = io->volume;
  --v->inflight_;
  io->done(io);
  if (v->rmw_) v->MaybeRunExclusive();
}

Status Volume::MapRange(uint64_t offset_bytes, uint64_t length_bytes, size_t extents_max,
                        std::vector<Extent>* out) const {
  if (offset_bytes > info_.size_bytes || offset_bytes + length_bytes > info_.size_bytes ||
      offset_bytes + length_bytes < offset_bytes)
    return InvalidArgument("range beyond the end of the volume");
  const uint64_t chunk = pool_->chunk_bytes_;
  const uint64_t zb = pool_->zero_block_bytes_;
  uint64_t off = offset_bytes;
  const uint64_t end = offset_bytes + length_bytes;
  while (off < end) {
    const uint64_t vchunk = off / chunk;
    const uint64_t in = off % chunk;
    uint64_t seg = std::min<uint64_t>(end - off, chunk - in);
    ExtentKind kind = ExtentKind::kHole;
    if (const uint32_t p1 = MapLoad(vchunk)) {
      // Within an allocated chunk, a run of zero blocks of one kind (zero or data).
      const uint64_t mask = pool_->ZeroMask(p1 - 1);
      const uint64_t b = in / zb;
      const bool zero = (mask >> b) & 1;
      kind = zero ? ExtentKind::kZero : ExtentKind::kData;
      uint64_t run_end = (b + 1) * zb;
      while (run_end < chunk && (((mask >> (run_end / zb)) & 1) != 0) == zero) run_end += zb;
      seg = std::min<uint64_t>(seg, run_end - in);
    }
    if (!out->empty() && out->back().kind == kind &&
        out->back().offset_bytes + out->back().length_bytes == off &&
        out->back().length_bytes + seg <= UINT32_MAX) {
      out->back().length_bytes += seg;
    } else {
      if (out->size() >= extents_max) break;
      out->push_back({off, seg, kind});
    }
    off += seg;
  }
  return Status::Ok();
}

uint64_t Volume::copy_id() const {
  uint64_t h = 14695981039346656037ull;  // FNV-1a
  auto mix = [&h](const uint8_t* p, size_t n) {
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  };
  mix(pool_->uuid(), 16);
  const uint32_t id = info_.id;
  mix(reinterpret_cast<const uint8_t*>(&id), sizeof id);
  return h != 0 ? h : 1;
}

}  // namespace spd
