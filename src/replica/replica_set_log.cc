// ReplicaSet's activity log (replica/activity_log.h; docs/replication.md, "The primary's
// activity log"): a write is numbered only once its 64 KiB units are durably in the log, and
// units leave it once every write to them is durable on this copy and complete everywhere.
#include <cerrno>

#include "common/counters.h"
#include "common/log.h"
#include "frontend/inproc/inproc_frontend.h"
#include "replica/activity_log.h"
#include "replica/replica_set_internal.h"

namespace spd {
namespace {

Counter log_writes_total("spd_replication_activity_log_writes_total",
                         "Snapshots of primaries' activity logs written (each a FUA write of "
                         "8 KiB, before the writes to new 64 KiB units it holds are numbered)");
Counter log_failures_total("spd_replication_activity_log_failures_total",
                           "Activity log writes or this copy's flushes for it that failed: the "
                           "writes waiting for them failed with EIO");
Counter log_flushes_total("spd_replication_activity_log_flushes_total",
                          "Flushes of a primary's own copy made to let units leave a full "
                          "activity log (and the first of each term)");
Counter log_full_waits_total("spd_replication_activity_log_full_waits_total",
                             "Writes that waited for room in a full activity log");

std::pair<uint64_t, uint64_t> Units(const IoRequest* req) {
  const uint64_t u = ActivityLog::kUnitBytes;
  return {req->offset_bytes / u, (req->offset_bytes + req->length_bytes - 1) / u};
}

bool Logged(const IoRequest* req) { return req->op != RequestOp::kFlush && req->length_bytes != 0; }

}  // namespace

void ReplicaSet::OpenLog() {
  if (o_.state_dir.empty() || o_.activity_log_units == 0) return;
  Result<std::unique_ptr<ActivityLog>> l = ActivityLog::Open(
      ActivityLogPath(o_.state_dir, o_.volume), owner_, o_.epoch, o_.activity_log_units);
  if (!l.ok()) {
    // Writes go on; a power loss of this node then copies the whole volume back to it.
    SPD_LOG_WARN("replication: volume %s: no activity log: %s", o_.volume.c_str(),
                 l.status().ToString().c_str());
    return;
  }
  log_ = std::move(l).value();
  cover_.assign(o_.inflight_max, 0);
  // Writes of before this term may not be durable here yet and no log covers them: a flush
  // first, and writes to new units wait for it.
  FlushForLog();
}

uint64_t ReplicaSet::LocalCover() const {
  uint64_t low = next_seq_;
  for (const IoRequest* r : active_)
    if (r->repl_local_pending && r->repl_seq < low) low = r->repl_seq;
  return low;
}

bool ReplicaSet::ParkForLog(IoRequest* req) {
  if (log_ == nullptr || !Logged(req)) return false;
  ActivityLog::Need need = ActivityLog::Need::kFull;
  if (log_ready_) {
    const auto [first, last] = Units(req);
    need = log_->Admit(first, last, std::min(local_durable_, low_seq_));
  }
  if (need == ActivityLog::Need::kCovered) return false;
  req->repl_next = nullptr;
  if (log_wait_tail_ != nullptr) {
    log_wait_tail_->repl_next = req;
  } else {
    log_wait_head_ = req;
  }
  log_wait_tail_ = req;
  if (need == ActivityLog::Need::kFull) {
    // Units leave once a flush of this copy covers their writes and they are complete
    // everywhere: flush when that moves the first, try again when the watermark moves.
    if (log_ready_) log_full_waits_total.Add();
    log_retry_ = true;
    if (!log_ready_ || LocalCover() > local_durable_) FlushForLog();
  }
  SchedulePump();  // the snapshot leaves once this round's requests are in
  return true;
}

void ReplicaSet::LogNumbered(const IoRequest* req) {
  if (log_ == nullptr) return;
  if (Logged(req)) {
    const auto [first, last] = Units(req);
    log_->Touch(first, last, req->repl_seq);
  } else if (req->op == RequestOp::kFlush) {
    cover_[req->repl_seq & mask_] = LocalCover();
  }
}

void ReplicaSet::LogLocalDone(const IoRequest* req) {
  if (log_ == nullptr || req->op != RequestOp::kFlush || req->result < 0) return;
  const uint64_t c = cover_[req->repl_seq & mask_];
  if (c > local_durable_) local_durable_ = c;
}

void ReplicaSet::PumpLog() {
  if (log_ == nullptr || log_->writing() || !log_->pending() || stopping_) return;
  log_->Write(&ReplicaSet::OnLogWritten, this);
}

void ReplicaSet::OnLogWritten(void* ctx, bool ok) {
  auto* s = static_cast<ReplicaSet*>(ctx);
  if (ok) {
    log_writes_total.Add();
  } else {
    log_failures_total.Add();
    SPD_LOG_ERROR(
        "replication: volume %s: the activity log could not be written: the writes "
        "waiting for it fail",
        s->o_.volume.c_str());
  }
  if (s->stopping_) return;  // Close failed the waiting ones
  if (!ok) {
    // Their units are not durably logged: numbered now, a power loss could leave this copy
    // without them and nothing saying so.
    return s->FailLogWaiting(-EIO);
  }
  s->RequeueLogWaiting();
  s->AdmitWaiting();
  s->PumpLog();  // units added while this one was on its way
}

IoRequest* ReplicaSet::TakeOwnFlush(std::unique_ptr<InprocFrontend>* fe, uint8_t flags) {
  if (*fe == nullptr) {
    InprocFrontend::Options fo;
    fo.queue_depth = 1;
    fo.buffer_bytes = 0;
    *fe = std::make_unique<InprocFrontend>(dispatcher_, owner_, fo);
  }
  IoRequest* req = (*fe)->Take();
  if (req == nullptr) return nullptr;
  req->op = RequestOp::kFlush;
  req->flags = flags;
  req->volume = volume_;
  return req;
}

void ReplicaSet::FlushForLog() {
  if (log_flush_inflight_ || stopping_) return;
  // This copy only: no barrier to the replicas.
  IoRequest* req = TakeOwnFlush(&log_fe_, kReqFromPrimary);
  if (req == nullptr) return;
  log_flush_inflight_ = true;
  log_flush_cover_ = LocalCover();
  log_flushes_total.Add();
  log_fe_->Submit(req, &ReplicaSet::OnFlushForLog, this);
}

void ReplicaSet::OnFlushForLog(void* arg, IoRequest* req) {
  auto* s = static_cast<ReplicaSet*>(arg);
  s->log_flush_inflight_ = false;
  if (s->stopping_) return;
  if (req->result < 0) {
    log_failures_total.Add();
    s->LocalCopyLost("failed a flush for its activity log");
    return s->FailLogWaiting(-EIO);
  }
  if (s->log_flush_cover_ > s->local_durable_) s->local_durable_ = s->log_flush_cover_;
  s->log_ready_ = true;
  // Those that waited for room (or for this first flush) try again.
  s->RequeueLogWaiting();
  s->AdmitWaiting();
  s->PumpLog();
}

void ReplicaSet::FailLogWaiting(int32_t result) {
  while (IoRequest* req = log_wait_head_) {
    log_wait_head_ = req->repl_next;
    req->result = result;
    Dispatcher::FinishReplicated(req);
  }
  log_wait_tail_ = nullptr;
}

void ReplicaSet::RequeueLogWaiting() {
  if (log_wait_head_ == nullptr) return;
  log_wait_tail_->repl_next = wait_head_;
  if (wait_head_ == nullptr) wait_tail_ = log_wait_tail_;
  wait_head_ = log_wait_head_;
  log_wait_head_ = log_wait_tail_ = nullptr;
}

bool ReplicaSet::LogBusy() const {
  return (log_ != nullptr && log_->writing()) || log_flush_inflight_;
}

}  // namespace spd
