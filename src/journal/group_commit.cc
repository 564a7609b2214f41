#include "journal/group_commit.h"

#include "common/assert.h"
#include "common/counters.h"

namespace spd {
namespace {

Counter commit_errors_total("spd_pool_commit_errors_total", "Commits that failed (I/O error).");
Counter overlap_flushes_total(
    "spd_pool_overlap_flushes_total",
    "Device flushes issued for FLUSH waiters while a commit ran (no records to write).");

void CompleteWaiters(CommitWaiter* w, int32_t result) {
  while (w) {
    CommitWaiter* next = w->next;
    w->fn(w, result);
    w = next;
  }
}

}  // namespace

GroupCommit::GroupCommit(Owner* owner, IoBackend* backend, bool overlap)
    : owner_(owner), backend_(backend), overlap_on_(overlap) {
  overlap_.io.ctx = this;
  overlap_.io.done = &GroupCommit::OnOverlapFlushed;
}

void GroupCommit::Wait(CommitWaiter* w) {
  w->next = nullptr;
  if (next_tail_) {
    next_tail_->next = w;
  } else {
    next_head_ = w;
  }
  next_tail_ = w;
  if (!running_) return Start();
  if (overlap_on_ && !overlap_.running && !owner_->CommitHasWork()) StartOverlap();
}

void GroupCommit::Kick() {
  if (!running_) Start();
}

void GroupCommit::Start() {
  SPD_ASSERT(!running_);
  running_ = true;
  current_ = next_head_;
  next_head_ = next_tail_ = nullptr;
  ++started_;
  owner_->RunCommit();
}

void GroupCommit::CommitDone(int32_t result) {
  SPD_ASSERT(running_);
  if (result < 0) commit_errors_total.Add();
  running_ = false;
  ++finished_;
  if (overlap_.running && overlap_.after == finished_) overlap_.after_result = result;
  CommitWaiter* w = current_;
  current_ = nullptr;
  CompleteWaiters(w, result);
  MaybeFinishOverlap();  // its waiters come after this commit's
  if (next_head_ && !running_) Start();
}

void GroupCommit::StartOverlap() {
  Overlap& o = overlap_;
  o.running = true;
  o.flushed = false;
  o.result = 0;
  o.after_result = 0;
  o.after = started_;  // the running commit
  o.waiters = next_head_;
  next_head_ = next_tail_ = nullptr;
  ++overlap_flushes_;
  overlap_flushes_total.Add();
  o.io.SetFlush();
  backend_->Submit(&o.io);
}

void GroupCommit::OnOverlapFlushed(BackendIo* io) {
  auto* self = static_cast<GroupCommit*>(io->ctx);
  self->overlap_.flushed = true;
  self->overlap_.result = io->result;
  self->MaybeFinishOverlap();
}

void GroupCommit::MaybeFinishOverlap() {
  Overlap& o = overlap_;
  if (!o.running || !o.flushed || finished_ < o.after) return;
  CommitWaiter* w = o.waiters;
  o.waiters = nullptr;
  o.running = false;
  const int32_t result = o.result < 0 ? o.result : o.after_result;
  if (o.result < 0) {
    commit_errors_total.Add();
    owner_->FlushFailed(o.result);
  }
  CompleteWaiters(w, result);
}

}  // namespace spd
