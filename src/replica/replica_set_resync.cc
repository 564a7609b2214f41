// ReplicaSet: resync of an out-of-sync replica (docs/replication.md, "Resync"). The whole
// volume (or what its dirty map holds) is copied to it, region by region, a few regions in
// flight at once (ReplicaSetOptions::resync_regions_inflight): while a region is copied no
// write to it is in flight (the copy waits for those running and parks those that arrive), so
// the copy and the writes around it reach the replica in an order that leaves it equal to the
// primary. New writes go to the resyncing replica all along. A final barrier makes the copy
// durable there; then it is in sync.
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "common/counters.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "frontend/inproc/inproc_frontend.h"
#include "replica/replica_set.h"
#include "replica/replica_set_internal.h"
#include "replica/replica_wire.h"

namespace spd {
namespace {

namespace rw = replica_wire;

Counter resync_bytes_total("spd_replication_resync_bytes_total",
                           "Bytes a primary copied to resyncing replicas (written regions)");
Counter resync_checkpoints_total(
    "spd_replication_resync_checkpoints_total",
    "Whole-volume resyncs cut short whose progress was kept: the next attempt copies only the "
    "rest and what was written meanwhile");
Counter resync_discard_bytes_total(
    "spd_replication_resync_discard_bytes_total",
    "Bytes of unallocated regions a primary sent to resyncing replicas as discards");
Counter resyncs_total("spd_replication_resyncs_total", "Resyncs completed (a replica in sync)");
Counter resync_yields_total(
    "spd_replication_resync_yielded_regions_total",
    "Regions a resync copied one at a time and at a quarter of their size because clients were "
    "writing (their writes to the resyncing replica queue behind the copy on the link)");
Counter resyncs_aborted_total("spd_replication_resyncs_aborted_total",
                              "Resyncs abandoned (the replica failed, a local read failed, the "
                              "set closed); retried from the start");

Counter resumed_maps_total("spd_replication_dirty_maps_resumed_total",
                           "Dirty maps of out-of-sync replicas a restarted primary took over from "
                           "its previous process (their resync copies only what they lack)");
Counter prior_units_total("spd_replication_failover_resync_units_total",
                          "64 KiB units a new primary resyncs to a replica that was in sync with "
                          "the previous primary (the writes that were in flight at the failover); "
                          "a replica without them gets the whole volume copied");
}  // namespace

struct ReplicaSet::Copy {
  // One region on its way: read here, sent, written there. Writes to it are parked meanwhile.
  struct Slot {
    enum class Phase { kFree, kWaiting, kReading, kSending, kQueued } phase = Phase::kFree;
    uint64_t off = 0;
    uint32_t len = 0;
    bool hole = false;  // unallocated here: sent as a discard
    void* buf = nullptr;
    IoRequest msg;  // the replication message (a table entry of its own)
    std::vector<Extent> extents;
  };
  Link* link = nullptr;
  uint32_t region = 0;  // the largest region
  uint64_t cursor = 0;  // where the next region starts looking
  std::vector<Slot> slots;
  enum class End { kNo, kBarrier, kQueued } end = End::kNo;  // the final barrier
  IoRequest barrier;
  std::unique_ptr<InprocFrontend> fe;  // local reads
  IoRequest* parked_head = nullptr;    // writes to regions in flight, in their order
  IoRequest* parked_tail = nullptr;
  uint64_t copied = 0;
  // CopyStep runs once at a time: a step asked for meanwhile (a read that completed at once)
  // runs after it, and an abort asked for meanwhile (a link that failed while sending) waits
  // for it to return, so that nothing it still uses is freed under it.
  bool stepping = false;
  bool again = false;
  std::string abort_why;

  // Everything below this offset is on the replica (the regions in flight start at or above).
  uint64_t Low() const {
    uint64_t low = cursor;
    for (const Slot& s : slots)
      if (s.phase != Slot::Phase::kFree) low = std::min(low, s.off);
    return low;
  }
  bool Idle() const {
    for (const Slot& s : slots)
      if (s.phase != Slot::Phase::kFree) return false;
    return true;
  }
  ~Copy() {
    if (fe && fe->inflight() > 0) {
      // A local read never came back (its reactor stopped first, at shutdown): the frontend
      // and the buffers it reads into are left to the process's end rather than freed under it.
      (void)fe.release();
      return;
    }
    for (Slot& s : slots) std::free(s.buf);
  }
};

ReplicaSet::ReplicaSet(Dispatcher* d, Volume* v, ReplicaSetOptions o)
    : owner_(v->owner()),
      dispatcher_(d),
      volume_(v),
      o_(std::move(o)),
      mark_gate_(std::make_shared<MarkGate>()) {
  mark_gate_->set = this;
}

ReplicaSet::~ReplicaSet() {
  {
    // A mark answered from now on (its task may still be posted) finds no set.
    std::lock_guard<std::mutex> g(mark_gate_->mu);
    mark_gate_->set = nullptr;
  }
  JoinThreads();
  FreeShadows();
  // A flush or a snapshot of the log that never came back (its reactor stopped first, at
  // shutdown): left to the process's end rather than freed under the backend.
  if (log_fe_ && log_fe_->inflight() > 0) (void)log_fe_.release();
  if (ring_fe_ && ring_fe_->inflight() > 0) (void)ring_fe_.release();
  if (log_ && log_->writing()) (void)log_.release();
}

bool ReplicaSet::IsCopyMessage(const IoRequest* req) const {
  if (copy_ == nullptr) return false;
  if (req == &copy_->barrier) return true;
  for (const Copy::Slot& s : copy_->slots)
    if (req == &s.msg) return true;
  return false;
}

void ReplicaSet::StartCopy(Link* l) {
  auto c = std::make_unique<Copy>();
  c->link = l;
  const uint32_t region = std::min<uint32_t>(o_.resync_region_bytes, l->reply.write_bytes_max > 0
                                                                         ? l->reply.write_bytes_max
                                                                         : o_.resync_region_bytes);
  c->region = region;
  c->slots.resize(std::max<uint32_t>(1, o_.resync_regions_inflight));
  for (Copy::Slot& s : c->slots) {
    if (posix_memalign(&s.buf, 4096, region) != 0) {
      FailLink(l, LinkState::kOutOfSync, "resync: out of memory for its buffers");
      return;
    }
    s.extents.reserve(9);
  }
  InprocFrontend::Options fo;
  fo.queue_depth = static_cast<uint32_t>(c->slots.size());
  fo.buffer_bytes = 0;
  c->fe = std::make_unique<InprocFrontend>(dispatcher_, owner_, fo);
  {
    std::lock_guard<std::mutex> g(info_mu_);
    l->info.resynced_bytes = 0;
    l->info.detail = "resyncing";
  }
  const uint64_t dirty_units = l->dirty.valid() ? l->dirty.Count() : 0;
  SPD_LOG_INFO(
      "replication: volume %s: resyncing replica %s: %s", o_.volume.c_str(), l->target.name.c_str(),
      l->dirty.valid()
          ? ("the " + std::to_string(dirty_units * Link::kDirtyUnitBytes) +
             " bytes it may have missed")
                .c_str()
          : ("the whole volume, " + std::to_string(volume_->size_bytes()) + " bytes").c_str());
  copy_ = std::move(c);
  fg_wrote_ = fg_busy_ = false;  // writes from before the copy do not count
  fg_window_ns_ = MonotonicNs();
  CopyStep();
}

bool ReplicaSet::ParkIfCopying(IoRequest* req) {
  Copy* c = copy_.get();
  if (c == nullptr || req->op == RequestOp::kFlush) return false;
  bool locked = false;
  for (const Copy::Slot& s : c->slots)
    locked |= s.phase != Copy::Slot::Phase::kFree && req->offset_bytes < s.off + s.len &&
              req->offset_bytes + req->length_bytes > s.off;
  if (!locked) return false;
  req->repl_next = nullptr;
  if (c->parked_tail) {
    c->parked_tail->repl_next = req;
  } else {
    c->parked_head = req;
  }
  c->parked_tail = req;
  return true;
}

void ReplicaSet::CopyStep() {
  copy_stalled_ = false;
  Copy* c = copy_.get();
  if (c == nullptr) return;
  if (c->stepping) {
    c->again = true;
    return;
  }
  c->stepping = true;
  do {
    c->again = false;
    CopyStepOnce();
  } while (c->again && c->abort_why.empty());
  c->stepping = false;
  if (!c->abort_why.empty()) AbortCopy(std::string(c->abort_why));
}

void ReplicaSet::CopyStepOnce() {
  Copy* c = copy_.get();
  using Phase = Copy::Slot::Phase;
  if (c->end != Copy::End::kNo) {
    if (c->end == Copy::End::kBarrier &&
        CopySend(c->barrier, 0, 0, nullptr, /*hole=*/false, /*barrier=*/true))
      c->end = Copy::End::kQueued;
    return;
  }
  Link* l = c->link;
  const uint64_t size = volume_->size_bytes();
  // While clients write, one region of a quarter size at a time (at least one dirty unit):
  // their writes to this replica wait on the link behind what the copy sent before them.
  const uint64_t now = MonotonicNs();
  if (now - fg_window_ns_ >= uint64_t{o_.resync_yield_window_ms} * 1'000'000) {
    fg_busy_ = fg_wrote_ && o_.resync_yield_window_ms > 0;
    fg_wrote_ = false;
    fg_window_ns_ = now;
  }
  const uint32_t region =
      fg_busy_ ? std::max<uint32_t>(Link::kDirtyUnitBytes, c->region / 4) : c->region;
  size_t active = 0;
  for (const Copy::Slot& s : c->slots) active += s.phase != Phase::kFree;
  for (Copy::Slot& s : c->slots) {
    if (s.phase == Phase::kFree && c->cursor < size && (!fg_busy_ || active == 0)) {
      // The next region: with a dirty map only what it may have missed (the next run of dirty
      // units, at most a region long), else the next region of the volume.
      uint64_t off = c->cursor;
      uint64_t end;
      if (l->dirty.valid()) {
        constexpr uint64_t kUnit = Link::kDirtyUnitBytes;
        off = l->dirty.NextDirty(off / kUnit) * kUnit;
        end = off;
        while (end < size && end - off < region && l->IsDirty(end / kUnit)) end += kUnit;
      } else {
        end = off + region;
      }
      end = std::min(end, size);
      c->cursor = std::max(off, end);
      if (off >= size) continue;
      s.off = off;
      s.len = static_cast<uint32_t>(end - off);
      s.phase = Phase::kWaiting;  // locked: writes to it are parked from now on
      ++active;
      if (fg_busy_) resync_yields_total.Add();
    }
    if (s.phase == Phase::kWaiting) {
      // Writes to the region already numbered must be done first (they may still be on their
      // way to the local disk, or to the replica, where they would race the copy).
      bool busy = false;
      for (uint64_t q = low_seq_; q < next_seq_ && !busy; ++q) {
        const IoRequest* r = table_[q & mask_];
        if (r == nullptr || r->op == RequestOp::kFlush || IsCopyMessage(r)) continue;
        busy |= r->offset_bytes < s.off + s.len && r->offset_bytes + r->length_bytes > s.off;
      }
      Status st;
      s.extents.clear();
      if (busy || !volume_->MapRangeOwned(s.off, s.len, 8, &s.extents, &st)) {
        copy_stalled_ = true;  // again at a completion, or the next tick
        continue;
      }
      s.hole = st.ok() && !s.extents.empty();
      for (const Extent& e : s.extents)
        if (e.kind != ExtentKind::kHole) s.hole = false;
      if (s.hole) {
        s.phase = Phase::kSending;
      } else {
        IoRequest* req = c->fe->Take();
        req->op = RequestOp::kRead;
        req->flags = kReqRebuild;  // the QoS scheduler's rebuild class
        req->volume = volume_;
        req->offset_bytes = s.off;
        req->length_bytes = s.len;
        req->buf = s.buf;
        s.phase = Phase::kReading;
        c->fe->Submit(req, &ReplicaSet::OnCopyRead, this);
        if (!c->abort_why.empty()) return;  // a read that failed at once
      }
    }
    if (s.phase == Phase::kSending) {
      if (!CopySend(s.msg, s.off, s.len, s.buf, s.hole, /*barrier=*/false)) {
        copy_stalled_ = true;  // the table is full
        continue;
      }
      s.phase = Phase::kQueued;
      if (!c->abort_why.empty()) return;  // the link failed while sending
    }
  }
  if (c->cursor >= size && c->Idle()) {
    c->end = Copy::End::kBarrier;
    if (CopySend(c->barrier, 0, 0, nullptr, false, /*barrier=*/true)) {
      c->end = Copy::End::kQueued;
    } else {
      copy_stalled_ = true;
    }
  }
}

void ReplicaSet::OnCopyRead(void* arg, IoRequest* req) {
  auto* self = static_cast<ReplicaSet*>(arg);
  Copy* c = self->copy_.get();
  if (c == nullptr) return;  // aborted meanwhile
  Copy::Slot* s = nullptr;
  for (Copy::Slot& x : c->slots)
    if (x.buf == req->buf && x.phase == Copy::Slot::Phase::kReading) s = &x;
  if (s == nullptr) return;  // a read of an aborted copy
  if (req->result < 0)
    return self->AbortCopy(std::string("local read: ") + std::strerror(-req->result));
  s->phase = Copy::Slot::Phase::kSending;
  self->CopyStep();
}

bool ReplicaSet::CopySend(IoRequest& m, uint64_t off, uint32_t len, void* buf, bool hole,
                          bool barrier) {
  Copy* c = copy_.get();
  if (table_[next_seq_ & mask_] != nullptr) return false;  // a slot frees up: a completion
  m.repl_seq = next_seq_++;
  m.repl_waiting = c->link->bit();
  m.repl_local_pending = false;
  m.repl_result = 0;
  m.repl_deadline_ns = MonotonicNs() + o_.ack_timeout_ms * 1'000'000;
  send_at_[m.repl_seq & mask_] = SendAt();
  m.buf = buf;
  rw::Header h;
  h.epoch = o_.epoch;
  h.seq = m.repl_seq;
  h.result = Gap(m.repl_seq);
  h.flags = barrier ? rw::kFlagResyncEnd : rw::kFlagRebuild;
  if (barrier) {
    h.type = static_cast<uint16_t>(rw::Type::kBarrier);
    m.op = RequestOp::kFlush;
    m.length_bytes = 0;
  } else {
    h.type = static_cast<uint16_t>(hole ? rw::Type::kDiscard : rw::Type::kWrite);
    h.offset = off;
    h.length = len;
    if (!hole) h.crc = Crc32c(0, buf, len);
    m.op = hole ? RequestOp::kDiscard : RequestOp::kWrite;
    m.offset_bytes = off;
    m.length_bytes = len;
    c->link->NoteUnbarriered(m.repl_seq, off, len);  // durable there at the next barrier
  }
  rw::EncodeHeader(h, m.repl_hdr);
  table_[m.repl_seq & mask_] = &m;
  PumpLinks();
  return true;
}

void ReplicaSet::CopyAcked(IoRequest* req) {
  Copy* c = copy_.get();
  // A message whose link failed meanwhile completes too (its wait was dropped, FailLink): it
  // proves nothing, and the copy is being abandoned.
  const bool ok =
      req->repl_result == 0 && c->abort_why.empty() && c->link->info.state == LinkState::kResyncing;
  if (req == &c->barrier) {
    c->end = Copy::End::kBarrier;  // not queued any more
    if (!ok) return AbortCopy("the replica failed the resync's final barrier");
    Link* l = c->link;
    resyncs_total.Add();
    SPD_LOG_INFO("replication: volume %s: replica %s resynced (%llu bytes copied); in sync",
                 o_.volume.c_str(), l->target.name.c_str(),
                 static_cast<unsigned long long>(c->copied));
    {
      std::lock_guard<std::mutex> g(info_mu_);
      ++l->info.resyncs;
      l->info.marked = false;
    }
    l->SetState(LinkState::kInSync, "");
    l->dirty.Invalidate();
    copy_.reset();
    copy_stalled_ = false;
    if (o_.mark_in_sync) o_.mark_in_sync(l->target.name, [](bool) {});
    return;
  }
  Copy::Slot* s = nullptr;
  for (Copy::Slot& x : c->slots)
    if (&x.msg == req) s = &x;
  SPD_ASSERT(s != nullptr);
  s->phase = Copy::Slot::Phase::kFree;  // not queued any more, whatever comes next
  if (!ok) return AbortCopy("the replica failed a copied region");
  if (c->link->dirty.valid()) {
    constexpr uint64_t kUnit = Link::kDirtyUnitBytes;
    for (uint64_t u = s->off / kUnit; u < (s->off + s->len + kUnit - 1) / kUnit; ++u)
      c->link->dirty.Clear(u);
  }
  if (s->hole) {
    resync_discard_bytes_total.Add(s->len);
  } else {
    resync_bytes_total.Add(s->len);
    c->copied += s->len;
  }
  {
    std::lock_guard<std::mutex> g(info_mu_);
    c->link->info.resynced_bytes = c->Low();
  }
  // The region is on the replica: the writes parked for it go now (those that also touch a
  // region still in flight are parked again, in their order), then the next regions.
  ReleaseParked();
  if (copy_) CopyStep();
}

void ReplicaSet::ReleaseParked() {
  Copy* c = copy_.get();
  IoRequest* p = c->parked_head;
  c->parked_head = c->parked_tail = nullptr;
  while (p != nullptr) {
    IoRequest* next = p->repl_next;
    Start(p);
    p = next;
  }
}

void ReplicaSet::CheckpointCopy() {
  Copy* c = copy_.get();
  if (c == nullptr || c->link->dirty.valid()) return;  // a dirty map: copied units are cleared
  // Everything below the lowest region in flight is on the replica, and every write to it
  // since went there too (the link was resyncing): the rest of the volume is what is left to
  // copy, plus the writes in flight and from now on (FailLink, Admit mark those).
  Link* l = c->link;
  constexpr uint64_t kUnit = Link::kDirtyUnitBytes;
  const uint64_t units = (volume_->size_bytes() + kUnit - 1) / kUnit;
  const uint64_t low = std::min(c->Low() / kUnit, units);
  l->dirty.Reset(o_.epoch, {}, false);
  l->dirty.MarkUnits(low, units - low);
  resync_checkpoints_total.Add();
}

void ReplicaSet::AbortCopy(const std::string& why) {
  if (copy_ == nullptr) return;
  if (copy_->stepping) {  // CopyStep aborts it once it returns
    if (copy_->abort_why.empty()) copy_->abort_why = why;
    return;
  }
  CheckpointCopy();
  std::unique_ptr<Copy> c = std::move(copy_);
  copy_stalled_ = false;
  resyncs_aborted_total.Add();
  SPD_LOG_WARN("replication: volume %s: resync of %s abandoned at %llu bytes: %s",
               o_.volume.c_str(), c->link->target.name.c_str(),
               static_cast<unsigned long long>(c->Low()), why.c_str());
  for (Copy::Slot& s : c->slots)
    if (s.phase == Copy::Slot::Phase::kQueued) ClearSlot(s.msg.repl_seq);
  if (c->end == Copy::End::kQueued) ClearSlot(c->barrier.repl_seq);
  IoRequest* p = c->parked_head;
  c->parked_head = c->parked_tail = nullptr;
  // Back to the wait queue, in order, ahead of the others.
  IoRequest* first = nullptr;
  IoRequest* last = nullptr;
  while (p != nullptr) {
    IoRequest* next = p->repl_next;
    p->repl_next = nullptr;
    if (last) {
      last->repl_next = p;
    } else {
      first = p;
    }
    last = p;
    p = next;
  }
  if (first != nullptr) {
    last->repl_next = wait_head_;
    wait_head_ = first;
    if (wait_tail_ == nullptr) wait_tail_ = last;
  }
  // A local read still running completes into a frontend that must outlive it: keep the copy.
  if (c->fe && c->fe->inflight() > 0) stale_copies_.push_back(std::move(c));
  AdmitWaiting();
}

void ReplicaSet::FreeStaleCopies() {
  std::erase_if(stale_copies_,
                [](const std::unique_ptr<Copy>& c) { return c->fe->inflight() == 0; });
}

bool ReplicaSet::SlotFree(const Link& l) const {
  if (!l.removed || l.fd >= 0 || l.rx_armed || l.tx_armed || l.connected_pending || l.mark_inflight)
    return false;
  if (copy_ != nullptr && copy_->link == &l) return false;
  for (const auto& c : stale_copies_)
    if (c->link == &l) return false;
  return true;
}

void ReplicaSet::SeedDirty(Link* l) {
  bool in_prior = false;
  for (const std::string& n : o_.prior_in_sync) in_prior |= n == l->target.name;
  if (in_prior) {
    // What it missed of the last term's writes: this copy's record now, its own at its hello.
    l->dirty.Reset(o_.epoch, o_.prior.ranges, /*pending=*/true);
    l->prior_pending = true;
  } else if (o_.prior_own_term && l->dirty.valid() && l->dirty.epoch() == o_.prior.epoch) {
    // Out of sync in the term this node was the primary of, its map kept by that process: the
    // map, plus what that primary had in flight, is all it lacks.
    const uint64_t before = l->dirty.Count();
    l->dirty.Carry(o_.epoch, o_.prior.ranges);
    resumed_maps_total.Add();
    SPD_LOG_INFO(
        "replication: volume %s: replica %s resumes its dirty map of epoch %llu: %llu units of "
        "64 KiB (%llu from the writes in flight then)",
        o_.volume.c_str(), l->target.name.c_str(), static_cast<unsigned long long>(o_.prior.epoch),
        static_cast<unsigned long long>(l->dirty.Count()),
        static_cast<unsigned long long>(l->dirty.Count() - before));
  } else {
    l->dirty.Invalidate();
  }
}

void ReplicaSet::AdoptPriorActivity(Link* l) {
  if (!l->prior_pending) return;
  l->prior_pending = false;
  const ReplicaActivity::Snapshot& mine = o_.prior;
  if (!(l->reply.activity_flags & rw::kActivityComplete) || l->reply.activity_epoch != mine.epoch) {
    l->dirty.Invalidate();  // its record cannot vouch: the whole volume
    return;
  }
  l->prior_from_log = (l->reply.activity_flags & rw::kActivityDurableLog) != 0;
  std::vector<ReplicaActivity::Range> all = mine.ranges;
  for (const rw::ActivityRange& r : l->reply_ranges) all.push_back({r.first_unit, r.units});
  all = MergeRanges(std::move(all));
  l->dirty.Resolve(all);
  uint64_t units = 0;
  for (const ReplicaActivity::Range& r : all) units += r.units;
  prior_units_total.Add(units);
  SPD_LOG_INFO(
      "replication: volume %s: replica %s was in sync in epoch %llu; only the %llu "
      "units of 64 KiB either copy applied last then%s will be resynced",
      o_.volume.c_str(), l->target.name.c_str(), static_cast<unsigned long long>(mine.epoch),
      static_cast<unsigned long long>(units),
      l->prior_from_log ? " (its share from its activity log: it lost power)" : "");
}

}  // namespace spd
