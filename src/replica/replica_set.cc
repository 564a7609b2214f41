#include "replica/replica_set.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "common/counters.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "common/os_util.h"
#include "replica/replica_set_internal.h"
#include "replica/replica_wire.h"

namespace spd {
namespace {

namespace rw = replica_wire;

Counter link_failures_total("spd_replication_link_failures_total",
                            "Replicas that stopped counting for a volume (connection, error, "
                            "timeout, out of sync at the hello)");
Counter deposed_total("spd_replication_deposed_total",
                      "Volumes whose primary learned from a replica that a newer one exists");
Counter local_failures_total("spd_replication_local_write_failures_total",
                             "Primaries whose own copy failed a write or a flush, or whose pool "
                             "turned read-only, while a replica was in sync: each gives its "
                             "volume up and gets the whole volume back as a replica");
Counter powered_off_units_total(
    "spd_replication_power_loss_units_total",
    "64 KiB units a replica that lost power since its last hello had acknowledged since its "
    "last barrier: resynced with what it missed, instead of its whole copy");
Counter lost_copies_total("spd_replication_lost_copies_total",
                          "Replicas back at a generation below a barrier they acknowledged (a "
                          "new disk, a restored image), with another copy than their map's (a "
                          "new disk) or from a power loss (their record left open by a boot "
                          "that ended): resynced whole, not by their dirty map");

}  // namespace

const char* ReplicaSet::LinkStateName(LinkState s) {
  switch (s) {
    case LinkState::kConnecting:
      return "connecting";
    case LinkState::kInSync:
      return "in-sync";
    case LinkState::kOutOfSync:
      return "out-of-sync";
    case LinkState::kDeposedUs:
      return "deposed-us";
    case LinkState::kResyncing:
      return "resyncing";
  }
  return "unknown";
}

Result<std::unique_ptr<ReplicaSet>> ReplicaSet::Start(Dispatcher* d, Volume* v,
                                                      ReplicaSetOptions o) {
  if (o.replicas.size() > kReplicasMax)
    return InvalidArgument("at most " + std::to_string(kReplicasMax) + " replicas");
  if (o.inflight_max == 0 || (o.inflight_max & (o.inflight_max - 1)) != 0)
    return InvalidArgument("inflight_max must be a power of two");
  if (o.volume.empty() || o.volume.size() > 64) return InvalidArgument("volume name");
  std::unique_ptr<ReplicaSet> s(new ReplicaSet(d, v, std::move(o)));
  s->table_.assign(s->o_.inflight_max, nullptr);
  s->send_at_.assign(s->o_.inflight_max, 0);
  s->mask_ = s->o_.inflight_max - 1;
  s->tick_.set = s.get();
  s->tick_.fn = [](Timer* t) { static_cast<TickTimer*>(t)->set->OnTick(); };
  s->delay_timer_.set = s.get();
  s->delay_timer_.fn = [](Timer* t) {
    ReplicaSet* set = static_cast<DelayTimer*>(t)->set;
    set->delay_armed_ = false;
    set->PumpLinks();
  };
  s->inject_rng_ = s->o_.inject_seed | 1;
  s->pump_task_.set = s.get();
  s->pump_task_.fn = [](Task* t) {
    ReplicaSet* set = static_cast<PumpTask*>(t)->set;
    set->pump_deferred_ = false;
    set->AdmitWaiting();  // the log's requests waiting for room, after the watermark moved
    set->PumpLinks();
    set->ShadowPending();
    set->PumpLog();  // after this round's requests took their units
    set->BarrierForRing();
  };
  rw::HelloBody hello;
  std::memcpy(hello.volume, s->o_.volume.data(), s->o_.volume.size());
  hello.size_bytes = v->size_bytes();
  hello.base_epoch = s->o_.base.epoch;
  hello.base_seq = s->o_.base.seq;
  hello.write_bytes_max = 1u << 20;
  // A primary that applied writes after its base (a replica until now, or restarted) may hold
  // some that no copy has: none is in sync with it until resynced.
  if (!v->CleanAtGeneration()) hello.flags |= rw::kHelloPrimaryDirty;
  s->hello_ = hello;
  for (size_t i = 0; i < s->o_.replicas.size(); ++i) {
    std::unique_ptr<Link> l = s->MakeLink(i, s->o_.replicas[i]);
    s->SeedDirty(l.get());
    l->connected_pending = true;
    Link* raw = l.get();
    const uint64_t epoch = s->o_.epoch;
    const uint64_t timeout = s->o_.connect_timeout_ms;
    l->connector = std::thread([raw, hello, epoch, timeout] {
      NameThisThread("spd-repl-conn");
      raw->Connect(hello, epoch, timeout);
    });
    s->links_.push_back(std::move(l));
  }
  // This copy's record of the new term, as its primary (after the maps took the old one's).
  v->replica_activity.Begin(s->o_.epoch, /*primary=*/true);
  s->OpenLog();
  s->tick_armed_ = true;
  s->owner_->ArmTimer(&s->tick_, MonotonicNs() + kTickNs);
  s->CheckSettled();
  return s;
}

void ReplicaSet::Connected(Link* k) {
  k->connected_pending = false;
  if (stopping_ || k->removed) {  // a link removed while it connected (SetReplicas) too
    if (k->conn_tls != nullptr) gnutls_deinit(k->conn_tls);
    k->conn_tls = nullptr;
    if (k->conn_fd >= 0) close(k->conn_fd);
    return;
  }
  if (!k->conn_error.empty()) {
    if (k->resync_attempt) {  // still out of sync (and marked): try again later
      k->retry_at_ns = MonotonicNs() + o_.resync_retry_ms * 1'000'000;
      const std::string detail = "resync: " + k->conn_error;
      bool changed;
      {
        std::lock_guard<std::mutex> g(info_mu_);
        changed = k->info.detail != detail;
        k->info.detail = detail;
      }
      if (changed)  // logged when the reason changes, not at every attempt
        SPD_LOG_WARN("replication: volume %s: replica %s (%s): %s", o_.volume.c_str(),
                     k->target.name.c_str(), k->target.address.c_str(), detail.c_str());
      return;
    }
    return FailLink(k, LinkState::kOutOfSync, k->conn_error);
  }
  k->fd = k->conn_fd;
  k->tls = k->conn_tls;
  k->conn_tls = nullptr;
  k->tls_flush_pending = false;
  k->closed = false;
  k->ack_got = 0;
  k->send_off = 0;
  const auto status = static_cast<rw::HelloStatus>(k->reply.status);
  if (status == rw::HelloStatus::kOutOfSync || status == rw::HelloStatus::kInSync)
    AdoptPriorActivity(k);
  if (status == rw::HelloStatus::kStaleEpoch)
    return FailLink(k, LinkState::kDeposedUs,
                    "the replica follows epoch " + std::to_string(k->reply.fence_epoch));
  // A resync attempt resyncs whatever the copy answers: "in sync" (its generation is the base
  // and it applied nothing after it) does not mean it has what it missed while away.
  bool answered = status == rw::HelloStatus::kOutOfSync || status == rw::HelloStatus::kInSync;
  // The volume began to grow after this hello left: the copy answered at the old size and never
  // got the kGrow (numbered before it joined). It connects again, naming the new size.
  const bool grew = answered && k->hello.size_bytes < SizeTarget();
  if (grew) answered = false;
  const bool resync = k->resync_attempt && answered && copy_ == nullptr;
  if (answered && k->dirty.valid()) {
    if (const std::string why = LostCopyReason(*k, resync); !why.empty()) {
      SPD_LOG_WARN("replication: volume %s: replica %s %s: the whole volume is copied",
                   o_.volume.c_str(), k->target.name.c_str(), why.c_str());
      k->dirty.Invalidate();
      lost_copies_total.Add();
    }
  }
  // It lost power since its last hello to this set: what it acknowledged since its last
  // barrier then may be gone (the map holds the rest). Otherwise all of it is there.
  if (answered && k->losses_known && k->reply.losses > k->losses_seen && k->dirty.valid()) {
    powered_off_units_total.Add(k->UnbarrieredUnits());
    k->MarkUnbarriered();
  }
  if (answered) {
    k->DropUnbarriered();
    k->losses_known = true;
    k->losses_seen = k->reply.losses;
  }
  k->prior_from_log = false;  // for this hello only: a later power loss is a loss again
  if (answered) k->dirty.set_copy_id(k->reply.copy_id);
  if (!resync && (k->resync_attempt || status != rw::HelloStatus::kInSync || grew)) {
    if (!k->resync_attempt) {
      // It is there and answers: its resync may start as soon as its mark is confirmed.
      k->resync_at_mark = status == rw::HelloStatus::kOutOfSync;
      return FailLink(k, LinkState::kOutOfSync,
                      grew ? std::string("the volume grew during its hello")
                           : std::string("hello: ") + rw::HelloStatusName(status));
    }
    // A resync the replica would not take: close and try again later.
    k->closed = true;
    shutdown(k->fd, SHUT_RDWR);
    k->CloseFd();
    k->retry_at_ns = MonotonicNs() + o_.resync_retry_ms * 1'000'000;
    return;
  }
  k->send_seq = next_seq_;
  if (!owner_->WatchOnce(k->fd, &k->rx).ok())
    return FailLink(k, LinkState::kOutOfSync, "cannot watch the socket");
  k->rx_armed = owner_->engine() == ReactorEngine::kUring;
  if (resync) {
    k->SetState(LinkState::kResyncing, "");
    StartCopy(k);
  } else {
    k->dirty.Invalidate();  // in sync: nothing to copy
    k->SetState(LinkState::kInSync, "");
  }
  CheckSettled();
}

std::unique_ptr<ReplicaSet::Link> ReplicaSet::MakeLink(size_t index, const ReplicaTarget& t) {
  auto l = std::make_unique<Link>();
  l->set = this;
  l->index = index;
  l->target = t;
  l->info.name = t.name;
  l->rx.link = l.get();
  l->rx.fn = &replica_internal::OnLinkReadable;
  l->tx.link = l.get();
  l->tx.fn = &replica_internal::OnLinkWritable;
  l->connected.link = l.get();
  l->connected.fn = [](Task* x) {
    Link* k = static_cast<Link::Connected*>(x)->link;
    k->set->Connected(k);
  };
  l->hello = hello_;
  l->hello.size_bytes = SizeTarget();
  l->dirty = DirtyMap(SizeTarget());
  if (const std::string path = DirtyMapPath(o_.state_dir, o_.volume, t.name);
      !o_.state_dir.empty() && !path.empty()) {
    if (Status st = l->dirty.Open(path, SizeTarget()); !st.ok())
      SPD_LOG_WARN("replication: volume %s: dirty map of %s kept in memory only: %s",
                   o_.volume.c_str(), t.name.c_str(), st.ToString().c_str());
  }
  return l;
}

bool ReplicaSet::ShutLink(Link* l) {
  if (l->fd < 0 || l->closed) return false;
  l->closed = true;
  shutdown(l->fd, SHUT_RDWR);  // an armed one-shot poll fires once more
  if (owner_->engine() != ReactorEngine::kUring) {
    owner_->Unwatch(l->fd, &l->rx);
    l->rx_armed = l->tx_armed = false;
  }
  return true;
}

void ReplicaSet::ReleaseFd(Link* l) {
  if (!l->closed || l->rx_armed || l->tx_armed || l->fd < 0) return;
  l->CloseFd();
}

void ReplicaSet::Reconnect(Link* l) {
  if (l->connector.joinable()) l->connector.join();  // it posted its result long ago
  if (o_.resolve_address) {
    const std::string a = o_.resolve_address(l->target.name);
    if (!a.empty()) l->target.address = a;
  }
  l->resync_attempt = true;
  l->retry_at_ns = 0;
  l->connected_pending = true;
  l->hello.size_bytes = SizeTarget();  // the volume may have grown (Grow)
  rw::HelloBody hello = l->hello;
  hello.flags =
      rw::kHelloResync | (volume_->CleanAtGeneration() ? 0u : uint32_t{rw::kHelloPrimaryDirty});
  hello.base_epoch = volume_->generation().epoch;
  hello.base_seq = volume_->generation().seq;
  const uint64_t epoch = o_.epoch;
  const uint64_t timeout = o_.connect_timeout_ms;
  l->connector = std::thread([l, hello, epoch, timeout] {
    NameThisThread("spd-repl-conn");
    l->Connect(hello, epoch, timeout);
  });
}

void ReplicaSet::Close() {
  if (stopping_) return;
  ShadowPending();  // done locally: shadowed (copied if not sent) as before the close
  stopping_ = true;
  if (tick_armed_) owner_->CancelTimer(&tick_);
  tick_armed_ = false;
  if (delay_armed_) owner_->CancelTimer(&delay_timer_);
  delay_armed_ = false;
  AbortCopy("the set is closing");  // parked requests go back to the wait queue, failed below
  // Nothing more is acknowledged: what waits fails, what runs locally fails when it ends.
  FailWaiting(-EIO);
  for (IoRequest* r : table_)
    if (r != nullptr) {
      r->repl_waiting = 0;
      r->repl_result = -EIO;
    }
  CompleteAll();
  FinishQuiesce(0);  // a hand-over that had not sent its barrier yet
  FinishGrow(-EIO);  // a grow whose message had not gone
  for (auto& l : links_) {
    ShutLink(l.get());
  }
}

void ReplicaSet::JoinThreads() {
  for (auto& l : links_)
    if (l->connector.joinable()) l->connector.join();
}

void ReplicaSet::Attach() { volume_->replica_hook.store(static_cast<ReplicaHook*>(this)); }

void ReplicaSet::Detach() { volume_->replica_hook.store(nullptr); }

void ReplicaSet::Stop() {
  Close();
  JoinThreads();
  // The posted hand-overs and the final poll events must come back before the links go.
  for (int i = 0; i < 100000; ++i) {
    bool busy = pump_deferred_ || LogBusy() || ring_barrier_inflight_;
    for (auto& l : links_) busy |= l->connected_pending || l->rx_armed || l->tx_armed;
    if (!busy) break;
    owner_->RunOnce(1'000'000);
  }
  for (auto& l : links_)
    if (l->fd >= 0) l->CloseFd();
}

std::vector<ReplicaSet::LinkInfo> ReplicaSet::Links() const {
  std::lock_guard<std::mutex> g(info_mu_);
  std::vector<LinkInfo> out;
  for (const auto& l : links_)
    if (!l->removed) out.push_back(l->info);
  return out;
}

uint32_t ReplicaSet::InSyncBits() const {
  uint32_t bits = 0;
  for (const auto& l : links_)
    if (l->info.state == LinkState::kInSync || l->info.state == LinkState::kResyncing)
      bits |= l->bit();
  return bits;
}

void ReplicaSet::CheckSettled() {
  if (settled_) return;
  for (const auto& l : links_)
    if (l->info.state == LinkState::kConnecting) return;
  settled_ = true;
  AdmitWaiting();
}

// ---- requests ------------------------------------------------------------------------------

void ReplicaSet::Start(IoRequest* req) {
  req->repl_next = nullptr;
  req->repl_result = 0;
  if (stopping_) {  // closed between the dispatcher's look at the hook and now
    req->result = -EIO;
    return Dispatcher::FinishReplicated(req);
  }
  if (quiescing_) {  // being handed over: the next primary takes writes
    req->result = -EROFS;
    return Dispatcher::FinishReplicated(req);
  }
  if (req->op != RequestOp::kFlush) {
    // Past the end (a frontend that did not check): refused here as the volume would refuse it,
    // sent nowhere, so that it never reads as a failure of this copy (LocalWriteFailed).
    req->result =
        volume_->RangeError(req->offset_bytes, req->length_bytes, req->op != RequestOp::kDiscard);
    if (req->result != 0) return Dispatcher::FinishReplicated(req);
  }
  if (ParkIfCopying(req)) return;
  if (settled_ && wait_head_ == nullptr && ParkIfConflicting(req)) return;
  if (!settled_ || wait_head_ != nullptr || table_[next_seq_ & mask_] != nullptr) {
    if (wait_tail_) {
      wait_tail_->repl_next = req;
    } else {
      wait_head_ = req;
    }
    wait_tail_ = req;
    return;
  }
  if (ParkForLog(req)) return;
  Admit(req);
}

void ReplicaSet::AdmitWaiting() {
  while (settled_ && !stopping_ && wait_head_ != nullptr && table_[next_seq_ & mask_] == nullptr) {
    IoRequest* req = wait_head_;
    wait_head_ = req->repl_next;
    if (wait_head_ == nullptr) wait_tail_ = nullptr;
    req->repl_next = nullptr;
    if (ParkIfCopying(req)) continue;
    if (ParkIfConflicting(req)) continue;
    if (ParkForLog(req)) continue;
    Admit(req);
  }
}

void ReplicaSet::Admit(IoRequest* req) {
  if (req->op != RequestOp::kFlush) {
    fg_wrote_ = true;  // a resync yields to the foreground (CopyStepOnce)
    volume_->MarkApplied();
    for (auto& l : links_)
      if (l->dirty.valid() && l->info.state == LinkState::kOutOfSync)
        l->MarkDirty(req->offset_bytes, req->length_bytes);
  }
  const uint64_t seq = next_seq_++;
  req->repl_seq = seq;
  table_[seq & mask_] = req;
  WakeTick();  // its ack's deadline
  // This copy's own record of the term: what it has in flight, should it crash or restart.
  if (req->op != RequestOp::kFlush)
    volume_->replica_activity.Record(o_.epoch, seq, req->offset_bytes, req->length_bytes);
  LogNumbered(req);
  if (req->op != RequestOp::kFlush) {
    req->repl_active = static_cast<uint32_t>(active_.size());
    active_.push_back(req);
    active_ranges_.emplace_back(req->offset_bytes, req->offset_bytes + req->length_bytes);
  }
  req->repl_local_pending = true;
  req->repl_deadline_ns = MonotonicNs() + o_.ack_timeout_ms * 1'000'000;
  send_at_[seq & mask_] = SendAt();
  req->repl_waiting = deposed_ ? 0 : InSyncBits();
  if (req->op != RequestOp::kFlush && req->repl_waiting != 0)
    for (auto& l : links_)
      if (req->repl_waiting & l->bit())
        l->NoteUnbarriered(seq, req->offset_bytes, req->length_bytes);
  rw::Header h;
  h.epoch = o_.epoch;
  h.seq = seq;
  h.result = Gap(seq);
  switch (req->op) {
    case RequestOp::kWrite:
      h.type = static_cast<uint16_t>(rw::Type::kWrite);
      h.length = req->length_bytes;
      if (req->repl_waiting != 0) h.crc = Crc32c(0, req->buf, req->length_bytes);
      break;
    case RequestOp::kWriteZeroes:
      h.type = static_cast<uint16_t>(rw::Type::kWriteZeroes);
      h.length = req->length_bytes;
      if (req->flags & kReqNoHole) h.flags |= rw::kFlagNoHole;
      break;
    case RequestOp::kDiscard:
      h.type = static_cast<uint16_t>(rw::Type::kDiscard);
      h.length = req->length_bytes;
      break;
    default:  // flush
      h.type = static_cast<uint16_t>(rw::Type::kBarrier);
      break;
  }
  if (req->op != RequestOp::kFlush) {
    h.offset = req->offset_bytes;
    if (req->flags & kReqFua) h.flags |= rw::kFlagFua;
  }
  rw::EncodeHeader(h, req->repl_hdr);
  if (req->repl_waiting != 0) SchedulePump();
  dispatcher_->ExecuteLocal(req);
}

void ReplicaSet::LocalDone(IoRequest* req) {
  req->repl_local_pending = false;
  LogLocalDone(req);
  if (req->result < 0 && req->repl_result == 0) req->repl_result = req->result;
  // EINVAL and EPERM refuse a request before it touches the copy (the replicas refuse it too).
  if (req->result < 0 && req->result != -EINVAL && req->result != -EPERM) LocalWriteFailed(req);
  MaybeComplete(req);
}

void ReplicaSet::LocalWriteFailed(IoRequest* req) {
  // This copy missed a write that the replicas may have applied (an I/O error, or EROFS from a
  // pool turned read-only). A resyncing one is stopped and gets the unit again (its copy cursor
  // may be past it). A failed flush leaves the copy whole for now, but a pool whose flush or
  // commit failed is read-only for good and re-opens from its last durable commit: without
  // the writes acknowledged since, which the replicas hold.
  if (req->op != RequestOp::kFlush)
    for (auto& l : links_)
      if (l->info.state == LinkState::kResyncing) {
        FailLink(l.get(), LinkState::kOutOfSync, "this primary's copy failed a write it sent");
        l->MarkDirty(req->offset_bytes, req->length_bytes);
      }
  LocalCopyLost(
      (std::string(req->op == RequestOp::kFlush ? "failed a flush (" : "failed a write (") +
       std::strerror(-req->result) + ")")
          .c_str());
}

void ReplicaSet::LocalCopyLost(const char* what) {
  // An in-sync replica now holds what this copy does not (or will not after a restart), and
  // this copy's record cannot say where (a failed write leaves it once retired; what the pool
  // loses is everything since its last commit): the primary gives the volume up to it
  // (ReplicationManager) and, back as a replica, gets the whole volume. With none in sync
  // nothing diverged that a dirty map does not hold (Admit marked the units of the out-of-sync
  // ones; their maps start before the copy's last commit): this copy stays the volume's.
  bool any_in_sync = false;
  for (auto& l : links_) any_in_sync |= l->info.state == LinkState::kInSync;
  if (any_in_sync && !local_failed_.exchange(true)) {
    volume_->replica_activity.Spoil();
    local_failures_total.Add();
    SPD_LOG_ERROR(
        "replication: volume %s: this primary's own copy %s: it may differ from the "
        "replicas'; giving the volume up",
        o_.volume.c_str(), what);
  }
}

void ReplicaSet::MaybeComplete(IoRequest* req) {
  if (req->flags & kReqReplShadow) {
    if (req->repl_waiting == 0) RetireShadow(req);
    return;
  }
  if (req->repl_local_pending) return;
  if (req->repl_waiting != 0) {
    if (o_.async && !IsCopyMessage(req) && !IsOwnMessage(req)) MaybeShadow(req);
    return;
  }
  if (IsCopyMessage(req)) {
    ClearSlot(req->repl_seq);
    return CopyAcked(req);
  }
  if (!stopping_) {
    if (Holding()) return;
    if (o_.lease_valid && !deposed_ && !o_.lease_valid()) return;  // the tick tries again
  }
  if (req == &quiesce_msg_) {
    ClearSlot(req->repl_seq);
    return FinishQuiesce(req->repl_result == 0 && !deposed_ && !stopping_ ? req->repl_seq : 0);
  }
  if (req == &grow_msg_) {
    ClearSlot(req->repl_seq);
    return FinishGrow(!deposed_ && !stopping_ ? 0 : -EIO);
  }
  req->result = deposed_ ? -EIO : req->repl_result;
  Retire(req);
  Dispatcher::FinishReplicated(req);
  AdmitWaiting();
  MaybeSendQuiesce();
  MaybeSendGrow();
  if (copy_stalled_) CopyStep();  // it waited for this write, or for a table slot
}

void ReplicaSet::Quiesce(std::function<void(uint64_t)> done) {
  if (quiesce_done_ || quiesce_sent_) return done(0);  // one at a time
  quiescing_ = true;
  quiesce_done_ = std::move(done);
  if (stopping_ || deposed_) return FinishQuiesce(0);
  // What waits to be numbered was never started: it fails like anything new.
  AbortCopy("the volume is being handed over");
  FailWaiting(-EROFS);
  MaybeSendQuiesce();
}

void ReplicaSet::RequeueParked() {
  if (conflict_head_ == nullptr) return;
  conflict_tail_->repl_next = wait_head_;
  if (wait_head_ == nullptr) wait_tail_ = conflict_tail_;
  wait_head_ = conflict_head_;
  conflict_head_ = conflict_tail_ = nullptr;
}

void ReplicaSet::FailWaiting(int32_t result) {
  RequeueLogWaiting();
  RequeueParked();
  while (wait_head_ != nullptr) {
    IoRequest* req = wait_head_;
    wait_head_ = req->repl_next;
    req->result = result;
    Dispatcher::FinishReplicated(req);
  }
  wait_tail_ = nullptr;
}

void ReplicaSet::MaybeSendQuiesce() {
  if (!quiescing_ || quiesce_sent_ || !quiesce_done_) return;
  if (stopping_ || deposed_) return FinishQuiesce(0);
  for (IoRequest* r : table_)
    if (r != nullptr) return;             // called again as they complete
  if (log_wait_head_ != nullptr) return;  // called again once they are numbered and complete
  quiesce_sent_ = true;
  uint32_t bits = 0;
  for (const auto& l : links_)
    if (l->info.state == LinkState::kInSync) bits |= l->bit();
  SendOwnMessage(&quiesce_msg_, RequestOp::kFlush, static_cast<uint16_t>(rw::Type::kBarrier), 0,
                 bits);
}

void ReplicaSet::SendOwnMessage(IoRequest* m, RequestOp op, uint16_t type, uint64_t offset,
                                uint32_t bits) {
  m->op = op;
  m->offset_bytes = 0;
  m->length_bytes = 0;
  m->flags = 0;
  m->repl_seq = next_seq_++;
  m->repl_waiting = bits;
  m->repl_local_pending = false;
  m->repl_result = 0;
  m->repl_deadline_ns = MonotonicNs() + o_.ack_timeout_ms * 1'000'000;
  rw::Header h;
  h.type = type;
  h.epoch = o_.epoch;
  h.seq = m->repl_seq;
  h.result = Gap(m->repl_seq);
  h.offset = offset;
  rw::EncodeHeader(h, m->repl_hdr);
  table_[m->repl_seq & mask_] = m;
  WakeTick();
  send_at_[m->repl_seq & mask_] = SendAt();
  if (bits != 0) SchedulePump();
  MaybeComplete(m);  // no replica to wait for: done at once
}

void ReplicaSet::FinishQuiesce(uint64_t seq) {
  auto done = std::move(quiesce_done_);
  quiesce_done_ = nullptr;
  if (done) done(seq);
}

bool ReplicaSet::ParkIfConflicting(IoRequest* req) {
  if (req->op == RequestOp::kFlush || req->length_bytes == 0) return false;
  const uint64_t a = req->offset_bytes, b = a + req->length_bytes;
  bool conflict = false;
  for (const auto& [first, end] : active_ranges_)
    if (first < b && end > a) {
      conflict = true;
      break;
    }
  for (const IoRequest* r = conflict_head_; !conflict && r != nullptr; r = r->repl_next)
    if (r->offset_bytes < b && r->offset_bytes + r->length_bytes > a) conflict = true;
  if (!conflict) return false;
  req->repl_next = nullptr;
  if (conflict_tail_) {
    conflict_tail_->repl_next = req;
  } else {
    conflict_head_ = req;
  }
  conflict_tail_ = req;
  return true;
}

void ReplicaSet::Retire(IoRequest* req) {
  ClearSlot(req->repl_seq);
  if (req->op != RequestOp::kFlush && req->repl_active < active_.size() &&
      active_[req->repl_active] == req) {
    IoRequest* last = active_.back();
    active_[req->repl_active] = last;
    active_ranges_[req->repl_active] = active_ranges_.back();
    last->repl_active = req->repl_active;
    active_.pop_back();
    active_ranges_.pop_back();
  }
  // Parked writes go back to the front of the wait queue, in order; AdmitWaiting parks again
  // those that still overlap something.
  RequeueParked();
}

void ReplicaSet::ClearSlot(uint64_t seq) {
  table_[seq & mask_] = nullptr;
  const uint64_t low = low_seq_;
  while (low_seq_ < next_seq_ && table_[low_seq_ & mask_] == nullptr) ++low_seq_;
  // Not while closing: the messages failed then may have been applied here (and on some copy),
  // so the record keeps them, as a killed process's would, for the next primary's resync.
  if (low_seq_ != low && !stopping_) volume_->replica_activity.Trim(o_.epoch, low_seq_);
  if (log_retry_ && low_seq_ != low) {  // units may leave the log now
    log_retry_ = false;
    RequeueLogWaiting();
    SchedulePump();
  }
}

void ReplicaSet::CompleteAll() {
  for (IoRequest*& r : table_)
    if (r != nullptr) MaybeComplete(r);
}

// ---- links ---------------------------------------------------------------------------------

void ReplicaSet::FailLink(Link* l, LinkState state, const std::string& why) {
  if (l->info.state == LinkState::kOutOfSync || l->info.state == LinkState::kDeposedUs) return;
  // What it may have missed from now on: the writes in flight, then every new one (Admit). A
  // replica that was in sync starts a fresh record; one that was resyncing keeps its record
  // (the regions copied so far were cleared from it), plus what is in flight.
  if (l->info.state == LinkState::kInSync) l->dirty.Reset(o_.epoch, {}, false);
  // A whole-volume copy cut short resumes where it stopped (what it copied stays there).
  if (l->info.state == LinkState::kResyncing) CheckpointCopy();
  if (l->info.state == LinkState::kInSync || l->info.state == LinkState::kResyncing) {
    for (IoRequest* r : table_)
      if (r != nullptr && r->op != RequestOp::kFlush && (r->repl_waiting & l->bit()))
        l->MarkDirty(r->offset_bytes, r->length_bytes);
    // What it acknowledged since its last barrier stays in its ring: its next hello tells
    // whether it lost power (Connected).
  }
  link_failures_total.Add();
  SPD_LOG_WARN("replication: volume %s: replica %s (%s) %s: %s", o_.volume.c_str(),
               l->target.name.c_str(), l->target.address.c_str(), LinkStateName(state),
               why.c_str());
  StopCounting(l, state, why);
  l->retry_at_ns = MonotonicNs() + o_.resync_retry_ms * 1'000'000;
  WakeTick();  // its reconnect, its mark
  if (state == LinkState::kDeposedUs && !deposed_.exchange(true)) {
    deposed_total.Add();
    SPD_LOG_ERROR(
        "replication: volume %s: this primary (epoch %llu) is deposed; every write "
        "fails from now on",
        o_.volume.c_str(), static_cast<unsigned long long>(o_.epoch));
  }
  // Requests no longer wait for it (StopCounting); none completes until its mark is confirmed.
  bool already_marked;
  {
    std::lock_guard<std::mutex> g(info_mu_);
    already_marked = l->info.marked;  // a resync that failed: it never counted
  }
  if (o_.mark_out_of_sync && state != LinkState::kDeposedUs && !already_marked) {
    marks_pending_ |= l->bit();
    AskMark(l);
  } else {
    std::lock_guard<std::mutex> g(info_mu_);
    l->info.marked = true;
  }
  CheckSettled();
  CompleteAll();
}

void ReplicaSet::StopCounting(Link* l, LinkState state, const std::string& why) {
  if (l->info.state == LinkState::kResyncing) AbortCopy(why);
  l->SetState(state, why);
  if (ShutLink(l)) ReleaseFd(l);
  for (IoRequest* r : table_)
    if (r != nullptr) r->repl_waiting &= ~l->bit();
}

}  // namespace spd
