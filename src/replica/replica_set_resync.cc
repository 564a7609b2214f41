// ReplicaSet: resync of an out-of-sync replica (docs/replication.md, "Resync"). The whole
// volume is copied to it, one region at a time: while a region is copied no write to it is in
// flight (the copy waits for those running and parks those that arrive), so the copy and the
// writes around it reach the replica in an order that leaves it equal to the primary. New
// writes go to the resyncing replica all along. A final barrier makes the copy durable there;
// then it is in sync.
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
  Link* link = nullptr;
  enum class Phase { kRegion, kReading, kSending, kBarrier, kDone } phase = Phase::kRegion;
  uint64_t off = 0;  // the region being copied
  uint32_t len = 0;
  uint32_t region = 0;                 // the largest region
  bool locked = false;                 // writes to [off, off+len) are parked
  bool hole = false;                   // the region is unallocated here: sent as a discard
  bool queued = false;                 // the message is in the table
  IoRequest msg;                       // the replication message (a table entry of its own)
  void* buf = nullptr;                 // the region's data
  std::unique_ptr<InprocFrontend> fe;  // local reads
  bool read_pending = false;
  IoRequest* parked_head = nullptr;
  IoRequest* parked_tail = nullptr;
  uint64_t copied = 0;
  std::vector<Extent> extents;
  ~Copy() {
    if (fe && fe->inflight() > 0) {
      // A local read never came back (its reactor stopped first, at shutdown): the frontend
      // and the buffer it reads into are left to the process's end rather than freed under it.
      (void)fe.release();
      return;
    }
    std::free(buf);
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
}

bool ReplicaSet::IsCopyMessage(const IoRequest* req) const {
  return copy_ != nullptr && req == &copy_->msg;
}

void ReplicaSet::StartCopy(Link* l) {
  auto c = std::make_unique<Copy>();
  c->link = l;
  const uint32_t region = std::min<uint32_t>(o_.resync_region_bytes, l->reply.write_bytes_max > 0
                                                                         ? l->reply.write_bytes_max
                                                                         : o_.resync_region_bytes);
  c->len = region;
  c->region = region;
  if (posix_memalign(&c->buf, 4096, region) != 0) {
    FailLink(l, LinkState::kOutOfSync, "resync: out of memory for its buffer");
    return;
  }
  InprocFrontend::Options fo;
  fo.queue_depth = 1;
  fo.buffer_bytes = 0;
  c->fe = std::make_unique<InprocFrontend>(dispatcher_, owner_, fo);
  c->extents.reserve(9);
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
  CopyStep();
}

bool ReplicaSet::ParkIfCopying(IoRequest* req) {
  Copy* c = copy_.get();
  if (c == nullptr || !c->locked || req->op == RequestOp::kFlush) return false;
  if (req->offset_bytes >= c->off + c->len || req->offset_bytes + req->length_bytes <= c->off)
    return false;
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
  Copy* c = copy_.get();
  if (c == nullptr || c->read_pending || c->queued || c->phase == Copy::Phase::kDone) return;
  if (c->phase == Copy::Phase::kBarrier) return CopySend();
  Link* l = c->link;
  const uint64_t size = volume_->size_bytes();
  if (l->dirty.valid()) {
    // Only what it may have missed: the next run of dirty units, at most a region long.
    constexpr uint64_t kUnit = Link::kDirtyUnitBytes;
    c->off = l->dirty.NextDirty(c->off / kUnit) * kUnit;
    uint64_t end = c->off;
    while (end < size && end - c->off < c->region && l->IsDirty(end / kUnit)) end += kUnit;
    c->len = static_cast<uint32_t>(std::min(end, size) - std::min(c->off, size));
  } else {
    c->len =
        static_cast<uint32_t>(std::min<uint64_t>(c->region, size > c->off ? size - c->off : 0));
  }
  if (c->off >= size) {
    c->phase = Copy::Phase::kBarrier;
    return CopySend();
  }
  c->locked = true;
  // Writes to the region already numbered must be done first (they may still be on their way
  // to the local disk, or to the replica, where they would race the copy).
  for (IoRequest* r : table_) {
    if (r == nullptr || r == &c->msg || r->op == RequestOp::kFlush) continue;
    if (r->offset_bytes < c->off + c->len && r->offset_bytes + r->length_bytes > c->off) return;
  }
  c->extents.clear();
  Status st;
  if (!volume_->MapRangeOwned(c->off, c->len, 8, &c->extents, &st)) return;  // again next tick
  c->hole = st.ok() && !c->extents.empty();
  for (const Extent& e : c->extents)
    if (e.kind != ExtentKind::kHole) c->hole = false;
  if (c->hole) {
    c->phase = Copy::Phase::kSending;
    return CopySend();
  }
  IoRequest* req = c->fe->Take();
  req->op = RequestOp::kRead;
  req->flags = kReqRebuild;  // the QoS scheduler's rebuild class
  req->volume = volume_;
  req->offset_bytes = c->off;
  req->length_bytes = c->len;
  req->buf = c->buf;
  c->read_pending = true;
  c->phase = Copy::Phase::kReading;
  c->fe->Submit(req, &ReplicaSet::OnCopyRead, this);
}

void ReplicaSet::OnCopyRead(void* arg, IoRequest* req) {
  auto* self = static_cast<ReplicaSet*>(arg);
  Copy* c = self->copy_.get();
  if (c == nullptr) return;  // aborted meanwhile
  c->read_pending = false;
  if (req->result < 0)
    return self->AbortCopy(std::string("local read: ") + std::strerror(-req->result));
  c->phase = Copy::Phase::kSending;
  self->CopySend();
}

void ReplicaSet::CopySend() {
  Copy* c = copy_.get();
  if (table_[next_seq_ & mask_] != nullptr) return;  // a slot frees up: MaybeComplete, the tick
  IoRequest& m = c->msg;
  m.repl_seq = next_seq_++;
  m.repl_waiting = c->link->bit();
  m.repl_local_pending = false;
  m.repl_result = 0;
  m.repl_deadline_ns = MonotonicNs() + o_.ack_timeout_ms * 1'000'000;
  send_at_[m.repl_seq & mask_] = SendAt();
  m.buf = c->buf;
  rw::Header h;
  h.epoch = o_.epoch;
  h.seq = m.repl_seq;
  h.result = Gap(m.repl_seq);
  h.flags = c->phase == Copy::Phase::kBarrier ? rw::kFlagResyncEnd : rw::kFlagRebuild;
  if (c->phase == Copy::Phase::kBarrier) {
    h.type = static_cast<uint16_t>(rw::Type::kBarrier);
    m.op = RequestOp::kFlush;
    m.length_bytes = 0;
  } else if (c->hole) {
    h.type = static_cast<uint16_t>(rw::Type::kDiscard);
    h.offset = c->off;
    h.length = c->len;
    m.op = RequestOp::kDiscard;
    m.offset_bytes = c->off;
    m.length_bytes = c->len;
  } else {
    h.type = static_cast<uint16_t>(rw::Type::kWrite);
    h.offset = c->off;
    h.length = c->len;
    h.crc = Crc32c(0, c->buf, c->len);
    m.op = RequestOp::kWrite;
    m.offset_bytes = c->off;
    m.length_bytes = c->len;
  }
  rw::EncodeHeader(h, m.repl_hdr);
  table_[m.repl_seq & mask_] = &m;
  c->queued = true;
  PumpLinks();
}

void ReplicaSet::CopyAcked(int32_t result) {
  Copy* c = copy_.get();
  c->queued = false;
  if (result != 0) return AbortCopy("the replica failed a copied region");
  if (c->phase == Copy::Phase::kBarrier) {
    Link* l = c->link;
    c->phase = Copy::Phase::kDone;
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
    if (o_.mark_in_sync) o_.mark_in_sync(l->target.name, [](bool) {});
    return;
  }
  if (c->link->dirty.valid()) {
    constexpr uint64_t kUnit = Link::kDirtyUnitBytes;
    for (uint64_t u = c->off / kUnit; u < (c->off + c->len + kUnit - 1) / kUnit; ++u)
      c->link->dirty.Clear(u);
  }
  if (c->hole) {
    resync_discard_bytes_total.Add(c->len);
  } else {
    resync_bytes_total.Add(c->len);
    c->copied += c->len;
  }
  {
    std::lock_guard<std::mutex> g(info_mu_);
    c->link->info.resynced_bytes = c->off + c->len;
  }
  // The region is on the replica: its parked writes go now, then the next region.
  c->locked = false;
  c->off += c->len;
  c->phase = Copy::Phase::kRegion;
  IoRequest* p = c->parked_head;
  c->parked_head = c->parked_tail = nullptr;
  while (p != nullptr) {
    IoRequest* next = p->repl_next;
    Start(p);
    p = next;
  }
  if (copy_) CopyStep();
}

void ReplicaSet::CheckpointCopy() {
  Copy* c = copy_.get();
  if (c == nullptr || c->link->dirty.valid()) return;  // a dirty map: copied units are cleared
  // Everything below the region being copied is on the replica, and every write to it since
  // went there too (the link was resyncing): the rest of the volume is what is left to copy,
  // plus the writes in flight and from now on (FailLink, Admit mark those).
  Link* l = c->link;
  constexpr uint64_t kUnit = Link::kDirtyUnitBytes;
  const uint64_t units = (volume_->size_bytes() + kUnit - 1) / kUnit;
  l->dirty.Reset(o_.epoch, {}, false);
  l->dirty.MarkUnits(c->off / kUnit, units - c->off / kUnit);
  resync_checkpoints_total.Add();
}

void ReplicaSet::AbortCopy(const std::string& why) {
  if (copy_ == nullptr) return;
  CheckpointCopy();
  std::unique_ptr<Copy> c = std::move(copy_);
  resyncs_aborted_total.Add();
  SPD_LOG_WARN("replication: volume %s: resync of %s abandoned at %llu bytes: %s",
               o_.volume.c_str(), c->link->target.name.c_str(),
               static_cast<unsigned long long>(c->off), why.c_str());
  if (c->queued) ClearSlot(c->msg.repl_seq);
  // A local read still running completes into a frontend that must outlive it: keep the copy.
  IoRequest* p = c->parked_head;
  c->parked_head = c->parked_tail = nullptr;
  while (p != nullptr) {  // back to the wait queue, in order, ahead of the others
    IoRequest* next = p->repl_next;
    p->repl_next = wait_head_;
    wait_head_ = p;
    if (wait_tail_ == nullptr) wait_tail_ = p;
    p = next;
  }
  if (c->read_pending) {
    stale_copies_.push_back(std::move(c));
  }
  AdmitWaiting();
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
  std::vector<ReplicaActivity::Range> all = mine.ranges;
  for (const rw::ActivityRange& r : l->reply_ranges) all.push_back({r.first_unit, r.units});
  all = MergeRanges(std::move(all));
  l->dirty.Resolve(all);
  uint64_t units = 0;
  for (const ReplicaActivity::Range& r : all) units += r.units;
  prior_units_total.Add(units);
  SPD_LOG_INFO(
      "replication: volume %s: replica %s was in sync in epoch %llu; only the %llu "
      "units of 64 KiB either copy applied last then will be resynced",
      o_.volume.c_str(), l->target.name.c_str(), static_cast<unsigned long long>(mine.epoch),
      static_cast<unsigned long long>(units));
}

}  // namespace spd
