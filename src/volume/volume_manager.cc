// VolumeManager: see volume_manager.h. Every operation is posted to the pool's reactor, queued
// there, and run one at a time on top of the pool's asynchronous control operations.
#include "volume/volume_manager.h"

#include <algorithm>

#include "common/counters.h"
#include "common/log.h"

namespace spd {
namespace {

Counter manager_failures_total("spd_volume_manager_failures_total",
                               "Volume manager operations (create, delete, resize, set "
                               "durability) that failed, for any reason.");
Counter manager_queue_full_total(
    "spd_volume_manager_queue_full_total",
    "Volume manager operations refused (kResourceExhausted) because the queue was full.");
Counter manager_close_timeouts_total(
    "spd_volume_manager_close_timeouts_total",
    "Forced deletes that failed because the volume's users did not leave in time.");

// How often a forced delete looks again at the users of the volume it closes.
constexpr uint64_t kClosePollNs = 1'000'000;

}  // namespace

const char* DurabilityName(Durability d) {
  switch (d) {
    case Durability::kFlush:
      return "flush";
    case Durability::kSync:
      return "sync";
    case Durability::kNone:
      return "none";
  }
  return "?";
}

// ---- VolumeHandle ---------------------------------------------------------------------------

VolumeInfo VolumeHandle::info() const {
  std::lock_guard<std::mutex> lock(mu_);
  return info_;
}

void VolumeHandle::SetInfo(const VolumeInfo& info) {
  std::lock_guard<std::mutex> lock(mu_);
  info_ = info;
}

bool VolumeHandle::AddUser() {
  uint64_t cur = users_.load(std::memory_order_acquire);
  do {
    if ((cur & kClosing) || deleted()) return false;
  } while (!users_.compare_exchange_weak(cur, cur + 1, std::memory_order_acq_rel,
                                         std::memory_order_acquire));
  return true;
}

void VolumeHandle::RemoveUser() {
  const uint64_t before = users_.fetch_sub(1, std::memory_order_acq_rel);
  SPD_ASSERT((before & kUsersMask) > 0);
}

uint32_t VolumeHandle::BeginClose() {
  return static_cast<uint32_t>(users_.fetch_or(kClosing, std::memory_order_acq_rel) & kUsersMask);
}

// ---- VolumeManager --------------------------------------------------------------------------

struct VolumeManager::Op : Task {
  enum class Kind { kCreate, kDelete, kResize, kSetDurability };
  Kind kind = Kind::kCreate;
  VolumeManager* mgr = nullptr;
  VolumeSpec spec;  // name; size (create, resize); durability (create, set durability)
  bool force = false;
  bool rejected = false;  // the queue was full: answer kResourceExhausted
  std::function<void(Status, std::shared_ptr<VolumeHandle>)> done;
  // Delete.
  std::shared_ptr<VolumeHandle> handle;
  std::shared_ptr<std::atomic<size_t>> acks_missing;  // listeners yet to call done
  uint64_t deadline_ns = 0;
  struct OpTimer : Timer {
    Op* op = nullptr;
  } timer;
};

VolumeManager::VolumeManager(Pool* pool, Options options)
    : pool_(pool), reactor_(pool->reactor()), options_(options) {
  for (const VolumeInfo& info : pool_->ListVolumes())
    handles_[info.name] =
        std::shared_ptr<VolumeHandle>(new VolumeHandle(pool_->FindVolume(info.name), info));
}

VolumeManager::~VolumeManager() {
  SPD_ASSERT_MSG(!active_ && queue_.empty(), "VolumeManager destroyed with operations pending");
}

void VolumeManager::AddListener(Listener* l) { listeners_.push_back(l); }

void VolumeManager::RemoveListener(Listener* l) {
  listeners_.erase(std::remove(listeners_.begin(), listeners_.end(), l), listeners_.end());
}

std::shared_ptr<VolumeHandle> VolumeManager::Find(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = handles_.find(name);
  return it == handles_.end() ? nullptr : it->second;
}

std::vector<std::pair<std::string, Volume*>> VolumeManager::Volumes() const {
  std::vector<std::pair<std::string, Volume*>> out;
  std::lock_guard<std::mutex> lock(mu_);
  out.reserve(handles_.size());
  for (const auto& [name, h] : handles_)
    if (Volume* v = h->volume()) out.emplace_back(name, v);
  return out;
}

std::vector<VolumeInfo> VolumeManager::List() const {
  std::vector<VolumeInfo> out;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [name, h] : handles_) out.push_back(h->info());
  }
  std::sort(out.begin(), out.end(),
            [](const VolumeInfo& a, const VolumeInfo& b) { return a.id < b.id; });
  return out;
}

void VolumeManager::Create(VolumeSpec spec,
                           std::function<void(Result<std::shared_ptr<VolumeHandle>>)> done) {
  auto op = std::make_unique<Op>();
  op->kind = Op::Kind::kCreate;
  op->spec = std::move(spec);
  op->done = [done = std::move(done)](Status s, std::shared_ptr<VolumeHandle> h) {
    if (s.ok()) {
      done(std::move(h));
    } else {
      done(std::move(s));
    }
  };
  Submit(std::move(op));
}

void VolumeManager::Delete(std::string name, bool force, std::function<void(Status)> done) {
  auto op = std::make_unique<Op>();
  op->kind = Op::Kind::kDelete;
  op->spec.name = std::move(name);
  op->force = force;
  op->done = [done = std::move(done)](Status s, std::shared_ptr<VolumeHandle>) { done(s); };
  Submit(std::move(op));
}

void VolumeManager::Resize(std::string name, uint64_t size_bytes,
                           std::function<void(Status)> done) {
  auto op = std::make_unique<Op>();
  op->kind = Op::Kind::kResize;
  op->spec.name = std::move(name);
  op->spec.size_bytes = size_bytes;
  op->done = [done = std::move(done)](Status s, std::shared_ptr<VolumeHandle>) { done(s); };
  Submit(std::move(op));
}

void VolumeManager::SetDurability(std::string name, Durability durability,
                                  std::function<void(Status)> done) {
  auto op = std::make_unique<Op>();
  op->kind = Op::Kind::kSetDurability;
  op->spec.name = std::move(name);
  op->spec.durability = durability;
  op->done = [done = std::move(done)](Status s, std::shared_ptr<VolumeHandle>) { done(s); };
  Submit(std::move(op));
}

void VolumeManager::Submit(std::unique_ptr<Op> op) {
  op->mgr = this;
  op->timer.op = op.get();
  // The running operation and kQueueMax waiting ones.
  if (queued_.fetch_add(1, std::memory_order_acq_rel) >= kQueueMax + 1) {
    queued_.fetch_sub(1, std::memory_order_acq_rel);
    manager_queue_full_total.Add();
    op->rejected = true;
  }
  op->fn = [](Task* t) {
    std::unique_ptr<Op> o(static_cast<Op*>(t));
    VolumeManager* self = o->mgr;
    if (o->rejected) {
      manager_failures_total.Add();
      return o->done(ResourceExhausted("volume manager: " + std::to_string(kQueueMax) +
                                       " operations are queued already; try again later"),
                     nullptr);
    }
    self->Enqueue(std::move(o));
  };
  reactor_->Post(op.release());
}

void VolumeManager::Enqueue(std::unique_ptr<Op> op) {
  queue_.push_back(std::move(op));
  StartNext();
}

void VolumeManager::StartNext() {
  if (active_ || queue_.empty()) return;
  active_ = std::move(queue_.front());
  queue_.pop_front();
  Run(active_.get());
}

void VolumeManager::Finish(Op* op, Status s) {
  SPD_ASSERT(op == active_.get());
  std::unique_ptr<Op> mine = std::move(active_);
  reactor_->CancelTimer(&op->timer);
  if (!s.ok()) manager_failures_total.Add();
  std::shared_ptr<VolumeHandle> h = s.ok() ? op->handle : nullptr;
  queued_.fetch_sub(1, std::memory_order_acq_rel);
  op->done(std::move(s), std::move(h));
  StartNext();
}

void VolumeManager::Notify(const VolumeInfo& info, Change kind) {
  for (Listener* l : listeners_) l->OnVolumeChanged(info, kind);
}

void VolumeManager::Run(Op* op) {
  const std::string& name = op->spec.name;
  op->handle = Find(name);
  if (!op->handle) {
    // A volume made by the pool directly (not through the manager) is adopted here.
    if (Volume* v = pool_->FindVolume(name)) {
      op->handle = std::shared_ptr<VolumeHandle>(new VolumeHandle(v, v->info()));
      std::lock_guard<std::mutex> lock(mu_);
      handles_[name] = op->handle;
    }
  }
  std::shared_ptr<VolumeHandle> h = op->handle;
  switch (op->kind) {
    case Op::Kind::kCreate: {
      if (h) {
        const VolumeInfo info = h->info();
        if (info.size_bytes == op->spec.size_bytes && info.durability == op->spec.durability &&
            info.read_only == op->spec.read_only)
          return Finish(op, Status::Ok());  // idempotent: the same volume again
        return Finish(op, AlreadyExists("volume '" + name + "' exists with size " +
                                        std::to_string(info.size_bytes) + ", durability " +
                                        DurabilityName(info.durability) +
                                        (info.read_only ? ", read-only" : ", read-write")));
      }
      return pool_->CreateVolumeAsync(
          name, op->spec.size_bytes, op->spec.durability, op->spec.read_only,
          [this, op](Result<Volume*> r) {
            if (!r.ok()) return Finish(op, r.status());
            Volume* v = r.value();
            op->handle = std::shared_ptr<VolumeHandle>(new VolumeHandle(v, v->info()));
            {
              std::lock_guard<std::mutex> lock(mu_);
              handles_[op->spec.name] = op->handle;
            }
            Notify(v->info(), Change::kCreated);
            Finish(op, Status::Ok());
          });
    }
    case Op::Kind::kResize:
    case Op::Kind::kSetDurability: {
      if (!h) return Finish(op, NotFound("no volume '" + name + "'"));
      Volume* v = h->volume();
      if (!v) return Finish(op, NotFound("no volume '" + name + "'"));
      const bool resize = op->kind == Op::Kind::kResize;
      const VolumeInfo before = v->info();
      auto after = [this, op, v, before, resize](Status s) {
        if (!s.ok()) return Finish(op, s);
        const VolumeInfo now = v->info();
        op->handle->SetInfo(now);
        if (resize ? now.size_bytes != before.size_bytes : now.durability != before.durability)
          Notify(now, resize ? Change::kResized : Change::kDurability);
        Finish(op, Status::Ok());
      };
      if (resize) return pool_->ResizeVolumeAsync(name, op->spec.size_bytes, std::move(after));
      return pool_->SetDurabilityAsync(name, op->spec.durability, std::move(after));
    }
    case Op::Kind::kDelete:
      return RunDelete(op);
  }
}

void VolumeManager::RunDelete(Op* op) {
  std::shared_ptr<VolumeHandle> h = op->handle;
  if (!h || h->deleted()) return Finish(op, NotFound("no volume '" + op->spec.name + "'"));
  const uint32_t users = h->BeginClose();  // from here on AddUser fails
  if (users > 0 && !op->force) {
    h->EndClose();
    return Finish(op,
                  FailedPrecondition("volume '" + op->spec.name + "' has " + std::to_string(users) +
                                     " open user(s) (connections); use force to close "
                                     "them and delete it anyway"));
  }
  op->acks_missing = std::make_shared<std::atomic<size_t>>(0);
  if (op->force) {
    op->acks_missing->store(listeners_.size(), std::memory_order_release);
    for (Listener* l : listeners_) {
      l->OnVolumeClosing(
          h, [acks = op->acks_missing] { acks->fetch_sub(1, std::memory_order_acq_rel); });
    }
  }
  op->deadline_ns = MonotonicNs() + options_.close_timeout_ns;
  op->timer.fn = [](Timer* t) {
    Op* o = static_cast<Op::OpTimer*>(t)->op;
    o->mgr->DeleteWhenClosed(o);
  };
  DeleteWhenClosed(op);
}

void VolumeManager::DeleteWhenClosed(Op* op) {
  std::shared_ptr<VolumeHandle> h = op->handle;
  Volume* v = h->volume();
  const size_t acks = op->acks_missing->load(std::memory_order_acquire);
  const uint32_t users = h->users();
  const uint64_t inflight = v ? v->inflight() : 0;
  if (acks > 0 || users > 0 || inflight > 0) {
    const uint64_t now = MonotonicNs();
    if (now < op->deadline_ns) {
      reactor_->ArmTimer(&op->timer, std::min(op->deadline_ns, now + kClosePollNs));
      return;
    }
    manager_close_timeouts_total.Add();
    h->EndClose();
    return Finish(
        op, Status(StatusCode::kDeadlineExceeded,
                   "delete volume " + op->spec.name + ": after " +
                       std::to_string(options_.close_timeout_ns / 1'000'000) + " ms still " +
                       std::to_string(users) + " user(s), " + std::to_string(inflight) +
                       " request(s) in flight, " + std::to_string(acks) + " listener(s) not done"));
  }
  // No users and none can come: requests on the pool's reactor that look at the handle from
  // here on see no volume.
  h->volume_.store(nullptr, std::memory_order_release);
  const VolumeInfo info = v ? v->info() : h->info();
  pool_->DeleteVolumeAsync(op->spec.name, [this, op, v, info](Status s) {
    std::shared_ptr<VolumeHandle> h = op->handle;
    if (!s.ok() && pool_->FindVolume(op->spec.name) == v) {
      // Not deleted: the volume is back as it was.
      h->volume_.store(v, std::memory_order_release);
      h->EndClose();
      return Finish(op, s);
    }
    // Deleted (even if returning its space then failed: the status says so).
    h->deleted_.store(true, std::memory_order_release);
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = handles_.find(op->spec.name);
      if (it != handles_.end() && it->second == h) handles_.erase(it);
    }
    Notify(info, Change::kDeleted);
    Finish(op, s);
  });
}

// ---- blocking forms -------------------------------------------------------------------------

void VolumeManager::Drive(const bool* finished) {
  while (!*finished) reactor_->RunOnce(100'000'000);
}

Result<std::shared_ptr<VolumeHandle>> VolumeManager::CreateBlocking(VolumeSpec spec) {
  bool finished = false;
  Result<std::shared_ptr<VolumeHandle>> out(Internal("create: not run"));
  Create(std::move(spec), [&](Result<std::shared_ptr<VolumeHandle>> r) {
    out = std::move(r);
    finished = true;
  });
  Drive(&finished);
  return out;
}

Status VolumeManager::DeleteBlocking(std::string name, bool force) {
  bool finished = false;
  Status out;
  Delete(std::move(name), force, [&](Status s) {
    out = std::move(s);
    finished = true;
  });
  Drive(&finished);
  return out;
}

Status VolumeManager::ResizeBlocking(std::string name, uint64_t size_bytes) {
  bool finished = false;
  Status out;
  Resize(std::move(name), size_bytes, [&](Status s) {
    out = std::move(s);
    finished = true;
  });
  Drive(&finished);
  return out;
}

Status VolumeManager::SetDurabilityBlocking(std::string name, Durability durability) {
  bool finished = false;
  Status out;
  SetDurability(std::move(name), durability, [&](Status s) {
    out = std::move(s);
    finished = true;
  });
  Drive(&finished);
  return out;
}

}  // namespace spd
