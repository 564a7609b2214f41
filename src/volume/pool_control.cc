// Pool control operations: create, delete, resize, set durability and sync, as asynchronous
// state machines on the pool's reactor (one at a time, bounded queue, bounded waits, state
// restored on failure), their blocking wrappers, and the volume table's lookups.
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstring>

#include "common/counters.h"
#include "common/log.h"
#include "volume/pool.h"
#include "volume/pool_format.h"
#include "volume/pool_internal.h"

namespace spd {

namespace {

bool ValidName(const std::string& n) {
  if (n.empty() || n.size() > pf::kNameBytesMax) return false;
  for (char c : n)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-'))
      return false;
  return true;
}

}  // namespace

// ---- control operations ---------------------------------------------------------------------
//
// Each operation is a ControlOp: queued, then run alone as a state machine on the pool's reactor.
// Its waits are completions (a commit waiter, the resize's tail zeroing) or a poll timer (the
// remote path's drain, a deleted volume's zeroing), each bounded by a deadline. The callback
// runs from a deferred task; the next queued operation starts after it.

namespace {

Counter control_failures_total("spd_pool_control_failures_total",
                               "Control operations (create, delete, resize, set durability, "
                               "sync) that failed, for any reason.");
Counter control_timeouts_total(
    "spd_pool_control_timeouts_total",
    "Control operations that gave up waiting (remote drain, commit, zeroing) and failed.");
Counter control_queue_full_total(
    "spd_pool_control_queue_full_total",
    "Control operations refused (kResourceExhausted) because the queue was full.");
// How often a control operation looks again at a condition it polls for.
constexpr uint64_t kControlPollNs = 1'000'000;

std::string Seconds(uint64_t ns) {
  return std::to_string(ns / 1'000'000'000.0).substr(0, 5) + " s";
}

Status CheckVolumeSize(uint64_t size_bytes, uint32_t chunk_bytes) {
  if (size_bytes == 0 || size_bytes % Pool::kVolumeSizeAlign != 0)
    return InvalidArgument("volume size must be a positive multiple of 4096 bytes, got " +
                           std::to_string(size_bytes));
  if (size_bytes / chunk_bytes >= UINT32_MAX)
    return InvalidArgument("volume too large: " + std::to_string(size_bytes) + " bytes");
  return Status::Ok();
}

}  // namespace

void Pool::CreateVolumeAsync(const std::string& name, uint64_t size_bytes, Durability durability,
                             bool read_only, std::function<void(Result<Volume*>)> done) {
  auto op = std::make_unique<ControlOp>(ControlOp::Kind::kCreate);
  op->name = name;
  op->size_bytes = size_bytes;
  op->durability = durability;
  op->read_only = read_only;
  op->done = [done = std::move(done)](Status s, Volume* v) {
    if (s.ok()) {
      done(v);
    } else {
      done(std::move(s));
    }
  };
  SubmitControl(std::move(op));
}

void Pool::DeleteVolumeAsync(const std::string& name, ControlCallback done) {
  auto op = std::make_unique<ControlOp>(ControlOp::Kind::kDelete);
  op->name = name;
  op->done = [done = std::move(done)](Status s, Volume*) { done(std::move(s)); };
  SubmitControl(std::move(op));
}

void Pool::ResizeVolumeAsync(const std::string& name, uint64_t size_bytes, ControlCallback done) {
  auto op = std::make_unique<ControlOp>(ControlOp::Kind::kResize);
  op->name = name;
  op->size_bytes = size_bytes;
  op->done = [done = std::move(done)](Status s, Volume*) { done(std::move(s)); };
  SubmitControl(std::move(op));
}

void Pool::SetDurabilityAsync(const std::string& name, Durability durability,
                              ControlCallback done) {
  auto op = std::make_unique<ControlOp>(ControlOp::Kind::kSetDurability);
  op->name = name;
  op->durability = durability;
  op->done = [done = std::move(done)](Status s, Volume*) { done(std::move(s)); };
  SubmitControl(std::move(op));
}

void Pool::SyncAllAsync(ControlCallback done) {
  auto op = std::make_unique<ControlOp>(ControlOp::Kind::kSync);
  op->done = [done = std::move(done)](Status s, Volume*) { done(std::move(s)); };
  SubmitControl(std::move(op));
}

void Pool::SubmitControl(std::unique_ptr<ControlOp> op) {
  ControlOp* o = op.get();
  o->pool = this;
  o->timer.op = o;
  o->timer.fn = &Pool::OnControlTimer;
  o->waiter.op = o;
  o->waiter.fn = &Pool::OnControlCommit;
  o->done_task.op = o;
  o->done_task.fn = &Pool::OnControlDone;
  o->io.ctx = o;
  o->io.done = &Pool::OnControlIo;
  control_ops_.push_back(std::move(op));
  if (control_queue_.size() >= kControlQueueMax) {
    control_queue_full_total.Add();
    return ControlFinish(o, ResourceExhausted(o->What() + ": " + std::to_string(kControlQueueMax) +
                                              " control operations are queued already"));
  }
  control_queue_.push_back(o);
  StartNextControl();
}

void Pool::StartNextControl() {
  if (control_active_ != nullptr || control_queue_.empty()) return;
  control_active_ = control_queue_.front();
  control_queue_.pop_front();
  ControlStart(control_active_);
}

void Pool::ControlStart(ControlOp* op) {
  using Kind = ControlOp::Kind;
  if (op->kind == Kind::kSync) return ControlCommit(op, false);
  if (op->kind == Kind::kCreate) {
    if (!ValidName(op->name))
      return ControlFinish(op, InvalidArgument("volume name must be 1-64 characters of "
                                               "[A-Za-z0-9._-]: '" +
                                               op->name + "'"));
    if (Status s = CheckVolumeSize(op->size_bytes, chunk_bytes_); !s.ok())
      return ControlFinish(op, s.WithContext(op->What()));
    if (FindVolume(op->name))
      return ControlFinish(op, AlreadyExists("volume '" + op->name + "' exists"));
    if (Status s = CheckGrowth(0, op->size_bytes, op->What()); !s.ok()) return ControlFinish(op, s);
    // The lowest free slot (a linear search: at most 65,536, once per create, next to a
    // checkpoint write). A deleted volume's slot is free again once its delete committed.
    uint32_t slot = volumes_max_;
    for (uint32_t i = 0; i < volumes_max_ && slot == volumes_max_; ++i)
      if (!slots_[i]) slot = i;
    if (slot == volumes_max_)
      return ControlFinish(
          op, ResourceExhausted("pool holds the maximum of " + std::to_string(volumes_max_) +
                                (volumes_max_ == 1 ? " volume" : " volumes") +
                                " already (fixed when it was formatted)"));
    VolumeInfo info;
    info.id = next_volume_id_++;
    info.name = op->name;
    info.size_bytes = op->size_bytes;
    info.durability = op->durability;
    info.read_only = op->read_only;
    slots_[slot].reset(new Volume(this, info, slot));
    op->v = slots_[slot].get();
    AssignOwner(op->v);
    op->v->hidden_ = true;  // until its checkpoint is durable
    op->v->map_.assign((op->size_bytes + chunk_bytes_ - 1) / chunk_bytes_, 0);
    return ControlCommit(op, true);
  }
  Volume* v = FindVolume(op->name);
  if (!v) return ControlFinish(op, NotFound("no volume '" + op->name + "'"));
  op->v = v;
  if (op->kind == Kind::kResize) {
    if (Status s = CheckVolumeSize(op->size_bytes, chunk_bytes_); !s.ok())
      return ControlFinish(op, s.WithContext(op->What()));
    if (op->size_bytes == v->info_.size_bytes) return ControlFinish(op, Status::Ok());
    if (op->size_bytes > v->info_.size_bytes)
      if (Status s = CheckGrowth(v->info_.size_bytes, op->size_bytes, op->What()); !s.ok())
        return ControlFinish(op, s);
  }
  if (op->kind == Kind::kSetDurability && op->durability == v->info_.durability)
    return ControlFinish(op, Status::Ok());
  if (op->kind == Kind::kDelete && v->inflight_ > 0)
    return ControlFinish(op, FailedPrecondition("volume '" + op->name + "' has I/O in flight"));
  // Remote readers of map_ and info_ (size, durability) wait outside while they change; for a
  // delete none may look at the volume from here on.
  v->BeginCloseRemote();
  op->remote_closed = true;
  op->phase = ControlOp::Phase::kDrain;
  op->deadline_ns = MonotonicNs() + control_timeouts_.remote_drain_ns;
  ControlPollTimer(op);
}

void Pool::ControlPollTimer(ControlOp* op) {
  using Phase = ControlOp::Phase;
  const uint64_t now = MonotonicNs();
  switch (op->phase) {
    case Phase::kDrain:
      if (op->v->RemoteDrained()) return ControlAfterDrain(op);
      if (now >= op->deadline_ns) {
        control_timeouts_total.Add();
        return ControlFinish(op, FailedPrecondition("volume '" + op->name +
                                                    "' still has remote I/O in flight after " +
                                                    Seconds(control_timeouts_.remote_drain_ns)));
      }
      break;
    case Phase::kPunch: {
      bool punched = true;
      for (uint32_t p : op->chunks)
        if (state_[p] == kFreeing) punched = false;
      if (punched) return ControlCommit(op, false);
      if (now >= op->deadline_ns) {
        control_timeouts_total.Add();
        return ControlFinish(op, Status(StatusCode::kDeadlineExceeded,
                                        op->What() +
                                            ": deleted, but zeroing its chunks did not "
                                            "finish within " +
                                            Seconds(control_timeouts_.punch_ns) +
                                            " (the space returns when it does)"));
      }
      break;
    }
    case Phase::kTail:
    case Phase::kCommit:
    case Phase::kFreeCommit:
      // The deadline of a completion that did not come. A commit that still lands later
      // carries the change; the checkpoint asked for here rewrites the table as restored.
      control_timeouts_total.Add();
      if (op->phase != Phase::kFreeCommit) {
        ControlRestore(op);
        commit_->want_checkpoint = true;
      }
      return ControlFinish(
          op, Status(StatusCode::kDeadlineExceeded,
                     op->What() + ": no " + (op->phase == Phase::kTail ? "zeroing" : "commit") +
                         " within " + Seconds(control_timeouts_.commit_ns)));
    case Phase::kQueued:
    case Phase::kDone:
      return;
  }
  reactor_->ArmTimer(&op->timer, std::min(op->deadline_ns, now + kControlPollNs));
}

void Pool::ControlAfterDrain(ControlOp* op) {
  using Kind = ControlOp::Kind;
  Volume* v = op->v;
  if (op->kind == Kind::kDelete) {
    // Local requests may have started while the remote ones drained.
    if (v->inflight_ > 0)
      return ControlFinish(op, FailedPrecondition("volume '" + op->name + "' has I/O in flight"));
    // Atomic delete: first a checkpoint without the volume (its chunks ownerless but not yet
    // reusable), then the chunks are zeroed and freed. A crash before the checkpoint leaves the
    // volume whole; after it, the chunks are free and zeroed again at open.
    for (uint64_t vc = 0; vc < v->map_.size(); ++vc) {
      if (!v->map_[vc]) continue;
      uint32_t p = v->map_[vc] - 1;
      owners_[p] = 0;
      state_[p] = kFreeing;
      op->chunks.push_back(p);
    }
    op->gone = std::move(slots_[v->slot_]);
    return ControlCommit(op, true);
  }
  if (op->kind == Kind::kSetDurability) {
    op->old_durability = v->info_.durability;
    v->info_.durability = op->durability;
    return ControlCommit(op, true);
  }
  // Resize.
  const uint64_t chunks = (op->size_bytes + chunk_bytes_ - 1) / chunk_bytes_;
  const bool shrink = op->size_bytes < v->info_.size_bytes;
  if (shrink) {
    if (v->inflight_ > 0)
      return ControlFinish(op, FailedPrecondition("volume '" + op->name + "' has I/O in flight"));
    for (uint64_t vc = chunks; vc < v->map_.size(); ++vc)
      if (v->map_[vc])
        return ControlFinish(
            op, FailedPrecondition("cannot shrink '" + op->name +
                                   "': data is allocated beyond the new end (discard it first)"));
  }
  op->old_size = v->info_.size_bytes;
  v->info_.size_bytes = op->size_bytes;
  v->map_.resize(chunks, 0);
  // The tail of the last kept chunk must read as zeros if the volume grows again.
  const uint64_t tail = op->size_bytes % chunk_bytes_;
  if (shrink && tail && v->map_[chunks - 1]) {
    op->phase = ControlOp::Phase::kTail;
    op->io.op = backend_->discard_zeroes() ? IoOp::kDiscard : IoOp::kWriteZeroes;
    op->io.flags = 0;
    op->io.offset_bytes = ChunkOffset(v->map_[chunks - 1] - 1) + tail;
    op->io.length_bytes = static_cast<uint32_t>(chunk_bytes_ - tail);
    op->io.buf = nullptr;
    op->io_pending = true;
    op->deadline_ns = MonotonicNs() + control_timeouts_.commit_ns;
    reactor_->ArmTimer(&op->timer, op->deadline_ns);
    backend_->Submit(&op->io);
    return;
  }
  ControlCommit(op, true);
}

void Pool::OnControlIo(BackendIo* io) {
  auto* op = static_cast<ControlOp*>(io->ctx);
  Pool* self = op->pool;
  op->io_pending = false;
  if (op->phase != ControlOp::Phase::kTail) return self->ControlMaybeFree(op);  // timed out
  self->reactor_->CancelTimer(&op->timer);
  if (io->result < 0) {
    self->ControlRestore(op);
    return self->ControlFinish(
        op, Status::FromErrno(-io->result, "zeroing the new tail").WithContext(op->What()));
  }
  self->ControlCommit(op, true);
}

void Pool::ControlCommit(ControlOp* op, bool checkpoint) {
  op->phase = op->phase == ControlOp::Phase::kPunch ? ControlOp::Phase::kFreeCommit
                                                    : ControlOp::Phase::kCommit;
  if (checkpoint) commit_->want_checkpoint = true;
  op->waiter_pending = true;
  op->deadline_ns = MonotonicNs() + control_timeouts_.commit_ns;
  reactor_->CancelTimer(&op->timer);
  reactor_->ArmTimer(&op->timer, op->deadline_ns);
  WaitCommit(&op->waiter);
}

void Pool::OnControlCommit(CommitWaiter* w, int32_t result) {
  ControlOp* op = static_cast<ControlOp::OpWaiter*>(w)->op;
  Pool* self = op->pool;
  op->waiter_pending = false;
  if (op->phase != ControlOp::Phase::kCommit && op->phase != ControlOp::Phase::kFreeCommit)
    return self->ControlMaybeFree(op);  // timed out earlier
  self->reactor_->CancelTimer(&op->timer);
  self->ControlCommitted(op, result);
}

void Pool::ControlCommitted(ControlOp* op, int32_t result) {
  using Kind = ControlOp::Kind;
  if (op->phase == ControlOp::Phase::kFreeCommit) {
    if (result < 0)
      return ControlFinish(op, Status::FromErrno(-result, "pool commit")
                                   .WithContext(op->What() + ": deleted, but its free space"));
    return ControlFinish(op, Status::Ok());
  }
  if (result < 0) {
    // Not durable: put everything back as it was.
    ControlRestore(op);
    return ControlFinish(op, Status::FromErrno(-result, "pool commit").WithContext(op->What()));
  }
  switch (op->kind) {
    case Kind::kCreate:
      op->v->hidden_ = false;
      op->result_volume = op->v;
      return ControlFinish(op, Status::Ok());
    case Kind::kDelete: {
      // Durable: the volume is gone. Keep a tombstone for stale pointers, then hand the space
      // back: zero the chunks (after any I/O still on them), then commit their frees.
      Volume* gone = op->gone.get();
      gone->deleted_ = true;
      gone->info_.size_bytes = 0;
      gone->info_.allocated_bytes = 0;
      gone->allocated_.store(0, std::memory_order_relaxed);
      std::vector<uint32_t>().swap(gone->map_);
      graveyard_.push_back(std::move(op->gone));
      op->remote_closed = false;  // stays closed for good
      for (uint32_t p : op->chunks)
        if (chunk_inflight_[p] == 0) MaybeStartPunch(p);
      op->phase = ControlOp::Phase::kPunch;
      op->deadline_ns = MonotonicNs() + control_timeouts_.punch_ns;
      return ControlPollTimer(op);
    }
    case Kind::kResize:
    case Kind::kSetDurability:
    case Kind::kSync:
      return ControlFinish(op, Status::Ok());
  }
}

void Pool::ControlRestore(ControlOp* op) {
  Volume* v = op->v;
  switch (op->kind) {
    case ControlOp::Kind::kCreate:
      // Hidden so far: no request can have reached it.
      slots_[v->slot_].reset();
      op->v = nullptr;
      break;
    case ControlOp::Kind::kDelete: {
      Volume* g = op->gone.get();
      for (uint32_t p : op->chunks) state_[p] = kAllocated;
      for (uint64_t vc = 0; vc < g->map_.size(); ++vc)
        if (g->map_[vc])
          owners_[g->map_[vc] - 1] = (static_cast<uint64_t>(g->slot_ + 1) << 32) | vc;
      op->chunks.clear();
      slots_[g->slot_] = std::move(op->gone);
      break;
    }
    case ControlOp::Kind::kResize:
      v->info_.size_bytes = op->old_size;
      v->map_.resize((op->old_size + chunk_bytes_ - 1) / chunk_bytes_, 0);
      break;
    case ControlOp::Kind::kSetDurability:
      v->info_.durability = op->old_durability;
      break;
    case ControlOp::Kind::kSync:
      break;
  }
}

void Pool::OnControlTimer(Timer* t) {
  ControlOp* op = static_cast<ControlOp::OpTimer*>(t)->op;
  op->pool->ControlPollTimer(op);
}

void Pool::ControlFinish(ControlOp* op, Status status) {
  op->phase = ControlOp::Phase::kDone;
  reactor_->CancelTimer(&op->timer);
  if (op->remote_closed && op->v) op->v->OpenRemote();
  op->remote_closed = false;
  if (!status.ok()) {
    control_failures_total.Add();
    SPD_LOG_WARN("%s", status.ToString().c_str());
  }
  op->result = std::move(status);
  op->callback_pending = true;
  reactor_->Defer(&op->done_task);
}

void Pool::OnControlDone(Task* t) {
  ControlOp* op = static_cast<ControlOp::OpTask*>(t)->op;
  Pool* self = op->pool;
  op->callback_pending = false;
  auto done = std::move(op->done);
  done(op->result, op->result_volume);
  if (self->control_active_ == op) {
    self->control_active_ = nullptr;
    self->StartNextControl();
  }
  self->ControlMaybeFree(op);
}

void Pool::ControlMaybeFree(ControlOp* op) {
  if (op->phase != ControlOp::Phase::kDone || op->callback_pending || op->waiter_pending ||
      op->io_pending || op == control_active_)
    return;
  auto it = std::find_if(control_ops_.begin(), control_ops_.end(),
                         [op](const std::unique_ptr<ControlOp>& p) { return p.get() == op; });
  if (it != control_ops_.end()) control_ops_.erase(it);
}

namespace {

// The blocking wrappers' loop: the operation's callback sets *finished.
void DriveUntil(Reactor* reactor, const bool* finished) {
  while (!*finished) reactor->RunOnce(100'000'000);
}

}  // namespace

Result<Volume*> Pool::CreateVolume(const std::string& name, uint64_t size_bytes,
                                   Durability durability, bool read_only) {
  bool finished = false;
  Result<Volume*> out(Internal("create volume: not run"));
  CreateVolumeAsync(name, size_bytes, durability, read_only, [&](Result<Volume*> r) {
    out = std::move(r);
    finished = true;
  });
  DriveUntil(reactor_, &finished);
  return out;
}

Status Pool::DeleteVolume(const std::string& name) {
  bool finished = false;
  Status out;
  DeleteVolumeAsync(name, [&](Status s) {
    out = std::move(s);
    finished = true;
  });
  DriveUntil(reactor_, &finished);
  return out;
}

Status Pool::ResizeVolume(const std::string& name, uint64_t size_bytes) {
  bool finished = false;
  Status out;
  ResizeVolumeAsync(name, size_bytes, [&](Status s) {
    out = std::move(s);
    finished = true;
  });
  DriveUntil(reactor_, &finished);
  return out;
}

Status Pool::SetDurability(const std::string& name, Durability durability) {
  bool finished = false;
  Status out;
  SetDurabilityAsync(name, durability, [&](Status s) {
    out = std::move(s);
    finished = true;
  });
  DriveUntil(reactor_, &finished);
  return out;
}

Status Pool::SyncAll() {
  bool finished = false;
  Status out;
  SyncAllAsync([&](Status s) {
    out = std::move(s);
    finished = true;
  });
  DriveUntil(reactor_, &finished);
  return out;
}

Status Pool::SetVolumeReactors(const std::vector<Reactor*>& reactors) {
  if (reactors.size() > kVolumeReactorsMax)
    return InvalidArgument("pool: at most " + std::to_string(kVolumeReactorsMax) +
                           " volume reactors, got " + std::to_string(reactors.size()));
  for (Reactor* r : reactors)
    if (r == nullptr) return InvalidArgument("pool: a volume reactor is null");
  volume_reactors_ = reactors;
  // Assigned again from scratch, in slot order, counting as it goes: one pass, not an
  // AssignOwner (a pass of its own) per volume, which a table of thousands would make slow.
  uint32_t count[kVolumeReactorsMax] = {};
  for (auto& v : slots_) {
    if (!v) continue;
    SetOwner(v.get(), count);
    ++count[v->owner_index_];
  }
  return Status::Ok();
}

void Pool::AssignOwner(Volume* v) {
  // The least-loaded reactor by live volumes (counted, not kept: one pass over the table, once
  // per create or open of a volume).
  uint32_t count[kVolumeReactorsMax] = {};
  if (!volume_reactors_.empty())
    for (const auto& u : slots_)
      if (u && u.get() != v && u->owner_ != nullptr) ++count[u->owner_index_];
  SetOwner(v, count);
}

void Pool::SetOwner(Volume* v, const uint32_t* count) {
  v->owner_ = reactor_;
  v->owner_index_ = 0;
  if (volume_reactors_.empty()) return;
  size_t best = 0;
  for (size_t i = 1; i < volume_reactors_.size(); ++i)
    if (count[i] < count[best]) best = i;
  v->owner_ = volume_reactors_[best];
  v->owner_index_ = static_cast<unsigned>(best);
}

Volume* Pool::FindVolume(const std::string& name) {
  for (auto& v : slots_)
    if (v && !v->hidden_ && v->info_.name == name) return v.get();
  return nullptr;
}

std::vector<VolumeInfo> Pool::ListVolumes() const {
  std::vector<VolumeInfo> out;
  for (auto& v : slots_)
    if (v && !v->hidden_) out.push_back(v->info_);
  std::sort(out.begin(), out.end(),
            [](const VolumeInfo& a, const VolumeInfo& b) { return a.id < b.id; });
  return out;
}

Status Pool::CheckGrowth(uint64_t old_size, uint64_t new_size, const std::string& what) const {
  const PoolStats st = stats();
  const uint64_t data = chunks_total_ * chunk_bytes_;
  const uint64_t rest = st.provisioned_bytes - std::min(st.provisioned_bytes, old_size);
  const uint64_t provisioned = rest > UINT64_MAX - new_size ? UINT64_MAX : rest + new_size;
  if (overcommit_max_ > 0 && static_cast<double>(provisioned) > overcommit_max_ * data) {
    char bound[32];
    std::snprintf(bound, sizeof(bound), "%g", overcommit_max_);
    return ResourceExhausted(what + ": the pool's volumes would be given " +
                             std::to_string(provisioned) + " bytes, over " + bound +
                             " times its data area of " + std::to_string(data) +
                             " bytes (--pool-overcommit-max)");
  }
  // Each volume's chunk map is in memory whole (4 bytes per chunk of its size, written or not).
  auto map_bytes = [&](uint64_t size) {
    return (size + chunk_bytes_ - 1) / chunk_bytes_ * sizeof(uint32_t);
  };
  const uint64_t maps = st.map_bytes - map_bytes(old_size) + map_bytes(new_size);
  if (map_memory_max_ > 0 && maps > map_memory_max_)
    return ResourceExhausted(what + ": the volumes' chunk maps would take " + std::to_string(maps) +
                             " bytes of memory, over " + std::to_string(map_memory_max_) +
                             " (--pool-map-memory-max; 4 bytes per " +
                             std::to_string(chunk_bytes_) + "-byte chunk of each volume's size)");
  return Status::Ok();
}

PoolStats Pool::stats() const {
  PoolStats s = stats_;
  s.size_bytes = pool_bytes_;
  s.chunk_size_bytes = chunk_bytes_;
  s.chunks_total = chunks_total_;
  s.chunks_free = chunks_free_;
  s.log_size_bytes = log_bytes_;
  s.log_used_bytes = log_pos_;
  s.volumes_max = volumes_max_;
  for (const auto& v : slots_) {
    if (v == nullptr) continue;
    ++s.volumes;
    const uint64_t size = v->size_bytes();
    s.provisioned_bytes =
        s.provisioned_bytes > UINT64_MAX - size ? UINT64_MAX : s.provisioned_bytes + size;
    s.map_bytes += v->map_.size() * sizeof(uint32_t);
  }
  s.read_only = read_only();
  return s;
}

}  // namespace spd
