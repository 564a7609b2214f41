// Asynchronous replicated volumes (ReplicaSetOptions::async): a request that is done locally
// completes at once while its message is still in flight to the replicas. The message must
// outlive the request (whose buffer goes back to its frontend), so it moves into a shadow: an
// IoRequest of the set's own with a copy of the header and payload, in the request's table slot
// and in-flight entry. The links send and settle shadows like any message; the last ack retires
// it. The lag (payload of the shadows, age of the oldest message in flight) is bounded: beyond
// async_lag_bytes or async_lag_ms a completion waits for its acks, as in synchronous mode.
// A request done before its message left waits for the links' send of the same reactor round:
// what went out is in the sockets, and its shadow then holds no copy of the payload (a copy is
// made only for a message still held back: a full socket, an injected delay).
#include <cstring>

#include "common/counters.h"
#include "common/log.h"
#include "dispatch/dispatcher.h"
#include "replica/replica_set.h"
#include "replica/replica_set_internal.h"

namespace spd {
namespace {

Gauge lag_bytes_gauge("spd_replication_async_lag_bytes",
                      "Asynchronous volumes: payload bytes completed to clients and not yet "
                      "acknowledged by every in-sync replica (all volumes of this node)");
Counter shadowed_total("spd_replication_async_shadowed_total",
                       "Asynchronous volumes: requests completed before their replicas had them");
Counter payload_copies_total("spd_replication_async_payload_copies_total",
                             "Asynchronous volumes: requests completed before their message had "
                             "left for every replica, whose payload was copied to be sent later");
Counter lag_waits_total("spd_replication_async_lag_waits_total",
                        "Asynchronous volumes: completions held back because the lag was at its "
                        "bound (bytes or time), counted at each look");

// The set's free shadows: at most this many are kept for reuse.
constexpr size_t kShadowsFreeMax = 1024;

}  // namespace

uint64_t ReplicaSet::lag_ms() const {
  const uint64_t oldest = lag_oldest_ns_.load(std::memory_order_relaxed);
  const uint64_t now = MonotonicNs();
  return oldest == 0 || now < oldest ? 0 : (now - oldest) / 1'000'000;
}

// When the oldest message still in flight was numbered, while shadows exist (0: none).
void ReplicaSet::NoteOldest() {
  uint64_t at = 0;
  if (lag_bytes_.load(std::memory_order_relaxed) != 0 || shadows_live_ != 0) {
    const IoRequest* oldest = low_seq_ < next_seq_ ? table_[low_seq_ & mask_] : nullptr;
    if (oldest != nullptr) at = oldest->repl_deadline_ns - o_.ack_timeout_ms * 1'000'000;
  }
  lag_oldest_ns_.store(at, std::memory_order_relaxed);
}

void ReplicaSet::MaybeShadow(IoRequest* req) {
  if (stopping_ || deposed_ || Holding()) return;
  if (o_.lease_valid && !o_.lease_valid()) return;  // nothing is acknowledged then
  const uint64_t payload = req->op == RequestOp::kWrite ? req->length_bytes : 0;
  const IoRequest* oldest = table_[low_seq_ & mask_];
  const uint64_t oldest_at =
      oldest != nullptr ? oldest->repl_deadline_ns - o_.ack_timeout_ms * 1'000'000 : 0;
  const uint64_t now = MonotonicNs();
  if (lag_bytes_.load(std::memory_order_relaxed) + payload > o_.async_lag_bytes ||
      (oldest_at != 0 && now > oldest_at && now - oldest_at > o_.async_lag_ms * 1'000'000)) {
    lag_waits_total.Add();
    return;  // the acks complete it
  }
  const bool sent = SentToAll(req);
  if (!sent && !shadow_now_) {
    shadow_pending_.emplace_back(req, req->repl_seq);
    SchedulePump();
    return;
  }
  std::unique_ptr<Shadow> s;
  if (!shadows_free_.empty()) {
    s = std::move(shadows_free_.back());
    shadows_free_.pop_back();
  } else {
    s = std::make_unique<Shadow>();
  }
  const bool copy = payload != 0 && !sent;
  if (copy && s->capacity < payload) {
    s->data.reset(new uint8_t[payload]);
    s->capacity = payload;
  }
  s->op = req->op;
  s->volume = req->volume;
  s->offset_bytes = req->offset_bytes;
  s->length_bytes = req->length_bytes;
  s->flags = static_cast<uint8_t>(req->flags | kReqReplShadow);
  s->buf = copy ? s->data.get() : nullptr;  // a message that left is never sent again
  if (copy) {
    std::memcpy(s->buf, req->buf, payload);
    payload_copies_total.Add();
  }
  s->payload = payload;
  s->repl_seq = req->repl_seq;
  s->repl_waiting = req->repl_waiting;
  s->repl_result = 0;
  s->repl_local_pending = false;
  s->repl_deadline_ns = req->repl_deadline_ns;
  s->repl_active = req->repl_active;
  s->repl_next = nullptr;
  std::memcpy(s->repl_hdr, req->repl_hdr, sizeof s->repl_hdr);
  Shadow* raw = s.release();
  table_[raw->repl_seq & mask_] = raw;
  if (req->op != RequestOp::kFlush && req->repl_active < active_.size() &&
      active_[req->repl_active] == req)
    active_[req->repl_active] = raw;  // overlapping writes keep waiting for its acks
  ++shadows_live_;
  lag_bytes_.fetch_add(payload, std::memory_order_relaxed);
  lag_bytes_gauge.Add(static_cast<int64_t>(payload));
  shadowed_total.Add();
  NoteOldest();
  req->repl_waiting = 0;
  req->result = req->repl_result;
  Dispatcher::FinishReplicated(req);
  AdmitWaiting();
}

bool ReplicaSet::SentToAll(const IoRequest* req) const {
  for (const auto& l : links_)
    if ((req->repl_waiting & l->bit()) && l->send_seq <= req->repl_seq) return false;
  return true;
}

void ReplicaSet::ShadowPending() {
  if (shadow_pending_.empty()) return;
  shadow_pending_run_.swap(shadow_pending_);
  shadow_now_ = true;
  for (auto [req, seq] : shadow_pending_run_) {
    // Still this request, still waiting in its slot: not completed meanwhile (a link's failure),
    // nor shadowed by an earlier entry for it (it may be listed twice).
    if (table_[seq & mask_] != req || req->repl_seq != seq) continue;
    MaybeComplete(req);
  }
  shadow_now_ = false;
  shadow_pending_run_.clear();
}

void ReplicaSet::RetireShadow(IoRequest* req) {
  auto* s = static_cast<Shadow*>(req);
  Retire(s);  // its slot, its in-flight entry; writes parked behind it retry
  --shadows_live_;
  lag_bytes_.fetch_sub(s->payload, std::memory_order_relaxed);
  lag_bytes_gauge.Add(-static_cast<int64_t>(s->payload));
  NoteOldest();
  if (shadows_free_.size() < kShadowsFreeMax) {
    shadows_free_.emplace_back(s);
  } else {
    delete s;
  }
  AdmitWaiting();
  MaybeSendQuiesce();
}

void ReplicaSet::FreeShadows() {
  // Close() retired every shadow (nothing waits for acks once closed); any left is freed here.
  for (IoRequest*& r : table_)
    if (r != nullptr && (r->flags & kReqReplShadow)) {
      auto* s = static_cast<Shadow*>(r);
      lag_bytes_gauge.Add(-static_cast<int64_t>(s->payload));
      delete s;
      r = nullptr;
    }
  shadows_free_.clear();
  shadow_pending_.clear();
}

}  // namespace spd
