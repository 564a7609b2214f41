// ReplicaSet's tick (on the owner's reactor): replicas that did not acknowledge in time, the
// reconnects of out-of-sync copies, requests held past hold_timeout_ms, a resync's next step, a
// pool turned read-only; every kTickNs, or kIdleTickNs while the set is idle (WakeTick).
#include "common/counters.h"
#include "common/log.h"
#include "replica/replica_set.h"
#include "replica/replica_set_internal.h"

namespace spd {
namespace {

Counter held_failed_total("spd_replication_held_failed_total",
                          "Requests failed with EIO after waiting hold_timeout_ms for an "
                          "out-of-sync mark");

// With nothing in flight, every copy in sync and connected and nothing held, the tick has only
// a pool turned read-only to notice: once a second (an idle primary of many volumes wakes
// 1 time a second per volume rather than 10).
constexpr uint64_t kIdleTickNs = 1'000'000'000;

}  // namespace

void ReplicaSet::OnTick() {
  tick_armed_ = false;
  if (stopping_) return;
  const uint64_t now = MonotonicNs();
  // A pool turned read-only by another volume's commit, or by one of this volume's with no
  // request of it failing yet, loses this copy's acknowledged writes since its last commit
  // just as well. Then the manager may act on it (read_only_checked).
  if (!read_only_checked_ && volume_->pool()->read_only()) {
    LocalCopyLost("is on a pool turned read-only");
    read_only_checked_ = true;
  }
  // Replicas that did not answer in time stop counting.
  bool in_flight = false;
  for (IoRequest* r : table_) {
    in_flight = in_flight || r != nullptr;
    if (r == nullptr || r->repl_waiting == 0 || now < r->repl_deadline_ns) continue;
    for (auto& l : links_)
      if (r->repl_waiting & l->bit())
        FailLink(l.get(), LinkState::kOutOfSync,
                 "no ack within " + std::to_string(o_.ack_timeout_ms) + " ms");
  }
  // Out-of-sync replicas whose mark is confirmed: connect again for a resync.
  if (o_.resync && !deposed_) {
    // One resync at a time: none while a copy runs or a resync hello is on its way.
    bool busy = copy_ != nullptr;
    for (auto& l : links_) busy |= l->connected_pending && l->resync_attempt;
    for (auto& l : links_) {
      if (busy) break;
      bool marked;
      {
        std::lock_guard<std::mutex> g(info_mu_);
        marked = l->info.marked;
      }
      if (l->info.state == LinkState::kOutOfSync && marked && !l->removed &&
          !l->connected_pending && l->fd < 0 && l->retry_at_ns != 0 && now >= l->retry_at_ns) {
        Reconnect(l.get());
        busy = true;
      }
    }
  }
  if (copy_) CopyStep();  // a drain or a table slot it waits for
  if (!stale_copies_.empty()) FreeStaleCopies();
  const bool lease_ok = !o_.lease_valid || o_.lease_valid();
  if (lease_ok && !Holding()) CompleteAll();  // requests held while the lease was not valid
  // Marks not confirmed, or no valid lease: requests held past hold_timeout_ms fail.
  if (Holding() || !lease_ok) {
    for (auto& l : links_)
      if ((marks_pending_ & l->bit()) && !l->mark_inflight) AskMark(l.get());
    for (IoRequest*& r : table_) {
      if (r == nullptr || r->repl_local_pending || (r->flags & kReqReplShadow) ||
          now < r->repl_deadline_ns + o_.hold_timeout_ms * 1'000'000)
        continue;
      held_failed_total.Add();
      IoRequest* req = r;
      req->result = -EIO;
      Retire(req);
      Dispatcher::FinishReplicated(req);
    }
  }
  // Idle: nothing this tick could have to do within its short period until WakeTick.
  bool idle = !in_flight && copy_ == nullptr && stale_copies_.empty() && !Holding() && lease_ok &&
              wait_head_ == nullptr && log_wait_head_ == nullptr;
  for (auto& l : links_)
    idle = idle && (l->removed ||
                    (l->info.state == LinkState::kInSync && l->fd >= 0 && !l->connected_pending));
  tick_idle_ = idle;
  tick_armed_ = true;
  owner_->ArmTimer(&tick_, now + (idle ? kIdleTickNs : kTickNs));
}

void ReplicaSet::WakeTick() {
  if (!tick_idle_ || !tick_armed_ || stopping_) return;
  tick_idle_ = false;
  owner_->CancelTimer(&tick_);
  owner_->ArmTimer(&tick_, MonotonicNs() + kTickNs);
}

}  // namespace spd
