// Writes that need a chunk while freed chunks are still being zeroed and committed: they wait
// (bounded queue, bounded time) instead of failing with ENOSPC, and are retried when commits end.
#include "common/counters.h"
#include "volume/pool.h"
#include "volume/pool_internal.h"

namespace spd {
namespace {

Counter space_waits_total("spd_pool_space_waits_total",
                          "Writes that found no free chunk while freed chunks were being "
                          "zeroed and committed, and waited for one instead of failing.");
Counter space_wait_timeouts_total(
    "spd_pool_space_wait_timeouts_total",
    "Writes that waited for space being reclaimed and failed with ENOSPC after space_wait_ns.");
Counter space_wait_full_total(
    "spd_pool_space_wait_full_total",
    "Writes that failed with ENOSPC at once because kSpaceWaitersMax writes waited already.");

}  // namespace

bool Pool::ReclaimPending() const {
  return !punch_queue_.empty() || punch_free_.size() < kPunchIosMax || !remote_wait_.empty() ||
         freeing_busy_ > 0 || !freed_pending_.empty() || !commit_->batch_freed.empty() ||
         !zero_queue_.empty() || zeroing_inflight_ > 0 || !zeroed_pending_.empty() ||
         !commit_->batch_zeroed.empty() || reserving_ > 0 || !known_zero_free_.empty();
}

void Pool::WaitForSpace(VolumeIo* io) {
  io->space_wait = false;
  if (space_waiters_ >= kSpaceWaitersMax || closing_) {
    space_wait_full_total.Add();
    return FailSpaceWaiter(io);
  }
  if (io->space_deadline_ns == 0) {
    space_waits_total.Add();
    io->space_deadline_ns = MonotonicNs() + space_wait_ns_;
  }
  AppendSpaceWaiter(io);
  // Chunks freed, zeroed or reserved already come back with the next commit: make sure one
  // runs (a known-zero chunk is reserved first).
  if (free_zero_.empty()) RefillReserve();
  if (CommitWouldFreeSpace()) group_->Kick();
  if (space_timer_.heap_index == SIZE_MAX) reactor_->ArmTimer(&space_timer_, io->space_deadline_ns);
}

void Pool::FailSpaceWaiter(VolumeIo* io) {
  if (io->owned) return Volume::ReplyOwned(io, -ENOSPC);  // the owner finishes it
  io->volume->Complete(io, -ENOSPC);
}

void Pool::AppendSpaceWaiter(VolumeIo* io) {
  io->space_next = nullptr;
  if (space_tail_) {
    space_tail_->space_next = io;
  } else {
    space_head_ = io;
  }
  space_tail_ = io;
  ++space_waiters_;
}

void Pool::WakeSpaceWaiters() {
  if (space_head_ == nullptr) return;
  space_wake_ = true;
  reactor_->CancelTimer(&space_timer_);
  reactor_->ArmTimer(&space_timer_, 0);  // due at once: the next tick runs it
}

void Pool::OnSpaceTimer(Timer* t) {
  Pool* self = static_cast<SpaceTimer*>(t)->pool;
  const bool wake = self->space_wake_;
  self->space_wake_ = false;
  const uint64_t now = MonotonicNs();
  VolumeIo* list = self->space_head_;
  self->space_head_ = self->space_tail_ = nullptr;
  self->space_waiters_ = 0;
  while (list) {
    VolumeIo* io = list;
    list = io->space_next;
    io->space_next = nullptr;
    if (io->space_deadline_ns <= now) {
      space_wait_timeouts_total.Add();
      self->FailSpaceWaiter(io);
    } else if (wake) {
      // Allocates, waits again (WaitForSpace), or fails with ENOSPC.
      if (io->owned) {
        io->volume->OwnedAlloc(io);
      } else {
        io->volume->Issue(io);
      }
    } else {
      self->AppendSpaceWaiter(io);  // not due and nothing came back: keep waiting
    }
  }
  // Re-arm for the earliest deadline left (waiters kept above or queued again by Issue).
  uint64_t next = UINT64_MAX;
  for (VolumeIo* io = self->space_head_; io; io = io->space_next)
    next = std::min(next, io->space_deadline_ns);
  self->reactor_->CancelTimer(&self->space_timer_);
  if (next != UINT64_MAX) self->reactor_->ArmTimer(&self->space_timer_, next);
}

}  // namespace spd
