// ReplicaSet's links on the wire (replica_set.h): messages leave in batches (one sendmsg per
// link per reactor batch), acks are read in bulk, and injected delays hold messages back.
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "common/counters.h"
#include "frontend/inproc/inproc_frontend.h"
#include "replica/replica_set.h"
#include "replica/replica_set_internal.h"
#include "replica/replica_wire.h"

namespace spd {
namespace {

namespace rw = replica_wire;
using Link = ReplicaSet::Link;

Counter messages_total("spd_replication_messages_total",
                       "Replication messages sent to replicas (writes, barriers)");
Counter injected_losses_total("spd_replication_injected_losses_total",
                              "Messages delayed by an injected loss (inject_loss_ppm)");
Counter ring_barriers_total(
    "spd_replication_ring_barriers_total",
    "Flushes a primary issued itself because a replica held many writes no barrier had made "
    "durable there (a failure would otherwise resync its whole copy)");
Counter ring_barrier_failures_total("spd_replication_ring_barrier_failures_total",
                                    "Flushes a primary issued itself that failed");
Counter marks_failed_total("spd_replication_marks_failed_total",
                           "Out-of-sync marks that could not be made durable (retried)");

void LinkRead(Link* l);
void LinkSend(Link* l);

}  // namespace

namespace replica_internal {

void OnLinkReadable(Completion* c, int32_t, uint32_t) {
  Link* l = static_cast<Link::Watch*>(c)->link;
  if (l->set->owner_->engine() == ReactorEngine::kUring) l->rx_armed = false;
  if (l->closed) return l->set->ReleaseFd(l);
  LinkSend(l);  // epoll: writability arrives here too
  if (!l->closed) LinkRead(l);
}

void OnLinkWritable(Completion* c, int32_t, uint32_t) {
  Link* l = static_cast<Link::Watch*>(c)->link;
  l->tx_armed = false;
  if (l->closed) return l->set->ReleaseFd(l);
  LinkSend(l);
}

}  // namespace replica_internal

void ReplicaSet::PumpLinks() {
  for (auto& l : links_)
    if ((l->info.state == LinkState::kInSync || l->info.state == LinkState::kResyncing) &&
        !l->closed)
      LinkSend(l.get());
}

uint64_t ReplicaSet::SendAt() {
  if (o_.inject_rtt_us == 0 && o_.inject_loss_ppm == 0) return 0;
  uint64_t at = MonotonicNs() + o_.inject_rtt_us * 1'000;
  if (o_.inject_loss_ppm != 0) {
    inject_rng_ ^= inject_rng_ << 13;  // xorshift64
    inject_rng_ ^= inject_rng_ >> 7;
    inject_rng_ ^= inject_rng_ << 17;
    if (inject_rng_ % 1'000'000 < o_.inject_loss_ppm) {
      at += o_.inject_rto_ms * 1'000'000;
      injected_losses_total.Add();
    }
  }
  last_send_at_ns_ = std::max(last_send_at_ns_, at);
  return last_send_at_ns_;
}

void ReplicaSet::WaitToSend(uint64_t at) {
  if (delay_armed_ && delay_deadline_ns_ <= at) return;
  if (delay_armed_) owner_->CancelTimer(&delay_timer_);
  delay_armed_ = true;
  delay_deadline_ns_ = at;
  owner_->ArmTimer(&delay_timer_, at);
}

// Why what the map of `k` (or a checkpoint) counts as copied may not be on the copy that
// answered its hello; empty when the map holds. Each is a loss the map cannot see:
std::string ReplicaSet::LostCopyReason(const Link& k, bool resync) const {
  // Another copy than the one the map was kept for (a new disk, or the volume created again).
  if (k.dirty.copy_id() != 0 && k.dirty.copy_id() != k.reply.copy_id)
    return "answers with another copy of the volume than its map was kept for (a new disk, or "
           "the volume created again)";
  // A copy that lost power since it last closed its record (replica_wire.h) may lack what it
  // had not made durable (a resync's copied regions among it). Losses this set saw the count of
  // at an earlier hello are accounted for in Connected (its ring of unbarriered writes joins
  // the map); one before its first hello to this set is not, unless its durable activity log
  // of the last term, now in the map, covers it.
  if ((k.reply.activity_flags & rw::kActivityLeftOpen) != 0 && !k.prior_from_log && !k.losses_known)
    return "lost power (or its kernel crashed) since it last closed its record: what it had "
           "not made durable may be gone";
  if (k.losses_known && k.reply.losses < k.losses_seen)
    return "counts fewer power losses than at its last hello (its state files were replaced): "
           "it cannot tell what it lost";
  if (k.losses_known && k.reply.losses > k.losses_seen && k.unbarriered_lost != 0)
    return "lost power after more writes since its last barrier than the primary keeps";
  // A copy below a barrier it acknowledged under this primary lost what it had (a new disk, a
  // restored image): what it missed since is not all it lacks.
  if (resync && k.acked_barrier_seq != 0 &&
      ReplicaGeneration{k.reply.gen_epoch, k.reply.gen_seq} <
          ReplicaGeneration{o_.epoch, k.acked_barrier_seq}) {
    char buf[160];
    snprintf(buf, sizeof buf,
             "is back at generation (%llu, %llu), below the barrier (%llu, %llu) it "
             "acknowledged: it lost data",
             static_cast<unsigned long long>(k.reply.gen_epoch),
             static_cast<unsigned long long>(k.reply.gen_seq),
             static_cast<unsigned long long>(o_.epoch),
             static_cast<unsigned long long>(k.acked_barrier_seq));
    return buf;
  }
  return {};
}

void ReplicaSet::BarrierForRing() {
  if (ring_barrier_inflight_ || stopping_ || deposed_ || o_.unbarriered_bytes == 0) return;
  bool full = false;
  for (const auto& l : links_)
    full |= (l->info.state == LinkState::kInSync || l->info.state == LinkState::kResyncing) &&
            l->UnbarrieredFull(o_.unbarriered_bytes);
  if (!full) return;
  // As a client's: this copy and a barrier to every in-sync replica.
  IoRequest* req = TakeOwnFlush(&ring_fe_, 0);
  if (req == nullptr) return;
  ring_barrier_inflight_ = true;
  ring_barriers_total.Add();
  ring_fe_->Submit(req, &ReplicaSet::OnBarrierForRing, this);
}

void ReplicaSet::OnBarrierForRing(void* arg, IoRequest* req) {
  auto* s = static_cast<ReplicaSet*>(arg);
  s->ring_barrier_inflight_ = false;
  // A failure is the links' or this copy's, handled where it happened; the ring stays full
  // until the next one (the pump tries again).
  if (req->result < 0) ring_barrier_failures_total.Add();
}

void ReplicaSet::SchedulePump() {
  if (pump_deferred_) return;
  pump_deferred_ = true;
  owner_->Defer(&pump_task_);
}

namespace {

// Whether the message numbered `seq` is one for link `l` (the table may hold nothing there, a
// newer number, or a message this link does not carry).
IoRequest* MessageFor(Link* l, uint64_t seq) {
  IoRequest* req = l->set->table_[seq & l->set->mask_];
  if (req == nullptr || req->repl_seq != seq || !(req->repl_waiting & l->bit())) return nullptr;
  return req;
}

size_t MessageBytes(const IoRequest* req) {
  return rw::kHeaderBytes + (req->op == RequestOp::kWrite ? req->length_bytes : 0);
}

// Waits for the socket to take more (uring: a one-shot poll; epoll watches both ways).
void ArmWritable(Link* l) {
  ReplicaSet* set = l->set;
  if (!l->tx_armed && set->owner_->engine() == ReactorEngine::kUring &&
      set->owner_->ArmWritable(l->fd, &l->tx).ok())
    l->tx_armed = true;
}

// TLS: the records corked so far go out. False: not all yet (or the link failed).
bool TlsFlush(Link* l) {
  const int rc = gnutls_record_uncork(l->tls, 0);
  if (rc >= 0) {
    l->tls_flush_pending = false;
    return true;
  }
  if (rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED) {
    ArmWritable(l);
    return false;
  }
  l->set->FailLink(l, ReplicaSet::LinkState::kOutOfSync,
                   std::string("TLS send: ") + gnutls_strerror(rc));
  return false;
}

// Sends what the link has not sent yet, as many messages per sendmsg as fit in its iovecs (over
// TLS: corked into records, at most kTlsBatchBytes a round).
void LinkSend(Link* l) {
  constexpr int kIovMax = 64;
  constexpr size_t kTlsBatchBytes = 1u << 20;
  ReplicaSet* set = l->set;
  while (!l->closed) {
    if (l->tls_flush_pending && !TlsFlush(l)) return;
    iovec iov[kIovMax];
    int n = 0;
    size_t batch = 0;
    uint64_t seq = l->send_seq;
    size_t off = l->send_off;
    uint64_t now = 0;
    for (; n + 2 <= kIovMax && seq < set->next_seq_ && !(l->tls && batch >= kTlsBatchBytes);
         ++seq, off = 0) {
      IoRequest* req = MessageFor(l, seq);
      if (req == nullptr) continue;
      const uint64_t at = set->send_at_[seq & set->mask_];
      if (at != 0 && off == 0) {  // an injected delay (inject_rtt_us)
        if (now == 0) now = MonotonicNs();
        if (at > now) {
          set->WaitToSend(at);
          break;
        }
      }
      const size_t payload = MessageBytes(req) - rw::kHeaderBytes;
      batch += MessageBytes(req) - off;
      if (off < rw::kHeaderBytes) {
        iov[n++] = {req->repl_hdr + off, rw::kHeaderBytes - off};
        if (payload) iov[n++] = {req->buf, payload};
      } else {
        iov[n++] = {static_cast<uint8_t*>(req->buf) + (off - rw::kHeaderBytes),
                    payload - (off - rw::kHeaderBytes)};
      }
    }
    if (n == 0) {  // nothing for this link up to the last number
      l->send_seq = seq;
      l->send_off = 0;
      return;
    }
    ssize_t r = 0;
    if (l->tls != nullptr) {
      // GnuTLS copies every byte into its records now; they leave at the flush (loop top).
      gnutls_record_cork(l->tls);
      for (int i = 0; i < n; ++i) {
        const ssize_t w = gnutls_record_send(l->tls, iov[i].iov_base, iov[i].iov_len);
        if (w < 0)
          return set->FailLink(l, ReplicaSet::LinkState::kOutOfSync,
                               std::string("TLS send: ") + gnutls_strerror(static_cast<int>(w)));
        r += w;
      }
      l->tls_flush_pending = true;
    } else {
      msghdr mh{};
      mh.msg_iov = iov;
      mh.msg_iovlen = static_cast<size_t>(n);
      r = sendmsg(l->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (r < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) return ArmWritable(l);
        return set->FailLink(l, ReplicaSet::LinkState::kOutOfSync,
                             std::string("send: ") + std::strerror(errno));
      }
    }
    // Move past what went: whole messages, then part of one.
    size_t left = static_cast<size_t>(r);
    while (left > 0) {
      IoRequest* req = MessageFor(l, l->send_seq);
      if (req == nullptr) {
        ++l->send_seq;
        l->send_off = 0;
        continue;
      }
      const size_t rest = MessageBytes(req) - l->send_off;
      if (left < rest) {
        l->send_off += left;
        break;
      }
      left -= rest;
      messages_total.Add();
      ++l->send_seq;
      l->send_off = 0;
    }
  }
}

// Reads the acks the socket holds, in bulk, and settles their messages.
void LinkRead(Link* l) {
  ReplicaSet* set = l->set;
  const bool uring = set->owner_->engine() == ReactorEngine::kUring;
  for (;;) {
    const size_t room = Link::kAckBufBytes - l->ack_got;
    const ssize_t r = l->tls ? TlsRecv(l->tls, l->ack_buf + l->ack_got, room)
                             : recv(l->fd, l->ack_buf + l->ack_got, room, MSG_DONTWAIT);
    if (r == 0) return set->FailLink(l, ReplicaSet::LinkState::kOutOfSync, "the replica closed");
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN)
        return set->FailLink(l, ReplicaSet::LinkState::kOutOfSync,
                             std::string("recv: ") + std::strerror(errno));
      break;
    }
    l->ack_got += static_cast<size_t>(r);
    size_t pos = 0;
    for (; l->ack_got - pos >= rw::kHeaderBytes; pos += rw::kHeaderBytes) {
      rw::Header h;
      const std::string bad = rw::DecodeHeader(l->ack_buf + pos, 0, &h);
      if (!bad.empty() || h.type != static_cast<uint16_t>(rw::Type::kAck))
        return set->FailLink(l, ReplicaSet::LinkState::kOutOfSync,
                             "bad message from the replica: " + (bad.empty() ? "not an ack" : bad));
      if (h.result == -ESTALE)
        return set->FailLink(l, ReplicaSet::LinkState::kDeposedUs,
                             "the replica follows a newer epoch");
      IoRequest* req = set->table_[h.seq & set->mask_];
      if (req == nullptr || req->repl_seq != h.seq || !(req->repl_waiting & l->bit()))
        return set->FailLink(l, ReplicaSet::LinkState::kOutOfSync,
                             "ack for a message not in flight: " + std::to_string(h.seq));
      if (h.result != 0)
        return set->FailLink(l, ReplicaSet::LinkState::kOutOfSync,
                             "the replica failed message " + std::to_string(h.seq) + ": " +
                                 std::strerror(-h.result));
      {
        std::lock_guard<std::mutex> g(set->info_mu_);
        ++l->info.acked;
      }
      if (req->op == RequestOp::kFlush) {
        l->acked_barrier_seq = std::max(l->acked_barrier_seq, h.seq);
        l->BarrierAcked(h.seq);
      }
      req->repl_waiting &= ~l->bit();
      set->MaybeComplete(req);
      if (l->closed) return;
    }
    std::memmove(l->ack_buf, l->ack_buf + pos, l->ack_got - pos);
    l->ack_got -= pos;
    // A one-shot poll (uring) fires again for anything that arrives later: a read that did not
    // fill the buffer took all there was, so the EAGAIN read is saved. Epoll is edge-triggered
    // here: it reads until EAGAIN.
    // Over TLS a read returns one record at most: read on until EAGAIN.
    if (uring && l->tls == nullptr && static_cast<size_t>(r) < room) break;
  }
  if (uring && !l->rx_armed && !l->closed) {
    if (set->owner_->WatchOnce(l->fd, &l->rx).ok()) {
      l->rx_armed = true;
    } else {
      set->FailLink(l, ReplicaSet::LinkState::kOutOfSync, "cannot watch the socket");
    }
  }
}

}  // namespace

// ---- out-of-sync marks ---------------------------------------------------------------------

void ReplicaSet::AskMark(Link* l) {
  l->mark_inflight = true;
  // The answer may come after the set is gone (a step-down while etcd is slow): it finds the
  // set through the gate, which the destructor empties.
  std::shared_ptr<MarkGate> gate = mark_gate_;
  Reactor* owner = owner_;
  o_.mark_out_of_sync(l->target.name, [gate, owner, l](bool ok) {
    // Any thread: hand the answer to the owner.
    struct MarkTask : Task {
      std::shared_ptr<MarkGate> gate;
      Link* link;
      bool ok;
    };
    auto* t = new MarkTask();
    t->gate = gate;
    t->link = l;
    t->ok = ok;
    t->fn = [](Task* x) {
      auto* m = static_cast<MarkTask*>(x);
      {
        std::lock_guard<std::mutex> g(m->gate->mu);
        if (m->gate->set != nullptr) m->gate->set->Marked(m->link, m->ok);
      }
      delete m;
    };
    owner->Post(t);
  });
}

void ReplicaSet::Marked(Link* l, bool ok) {
  l->mark_inflight = false;
  if (stopping_) return;  // stopped: nothing waits for it any more
  if (!ok) {
    // Asked again from the tick: the requests keep waiting, within hold_timeout_ms.
    marks_failed_total.Add();
    return;
  }
  marks_pending_ &= ~l->bit();
  {
    std::lock_guard<std::mutex> g(info_mu_);
    l->info.marked = true;
  }
  if (l->resync_at_mark) {  // at the next tick rather than after resync_retry_ms
    l->resync_at_mark = false;
    l->retry_at_ns = MonotonicNs();
  }
  CompleteAll();
}

}  // namespace spd
