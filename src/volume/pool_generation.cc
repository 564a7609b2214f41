// Pool: the replication generation of each volume (docs/replication.md, "Never promote stale
// data"), recorded durably after the data it vouches for.
#include <algorithm>
#include <cerrno>

#include "common/counters.h"
#include "volume/pool.h"
#include "volume/pool_format.h"
#include "volume/pool_internal.h"

namespace spd {
namespace {

Counter generation_records_total("spd_pool_generation_records_total",
                                 "Replication generations recorded durably (kGeneration records "
                                 "or checkpoints carrying them).");
Counter generation_refused_total(
    "spd_pool_generation_refused_total",
    "Replication generations refused: below the volume's, deleted volume, or a failed commit.");

void Finish(GenerationRecord* r, int32_t result) {
  r->result = result;
  if (result != 0) generation_refused_total.Add();
  r->done(r);
}

}  // namespace

void Volume::LoadGeneration(ReplicaGeneration g, uint64_t fence) {
  fence = std::max(fence, g.epoch);
  gen_pending_ = std::max(gen_pending_, g);
  fence_pending_ = std::max(fence_pending_, fence);
  {
    std::lock_guard<std::mutex> l(gen_mu_);
    gen_durable_ = gen_pending_;
    fence_durable_ = fence_pending_;
  }
  fence_seen_.store(fence_pending_, std::memory_order_release);
}

void Pool::RecordGeneration(Volume* v, GenerationRecord* r) {
  r->volume = v;
  r->result = 0;
  r->step = 0;
  r->waiter.record = r;
  r->waiter.fn = &Pool::OnGenerationCommit;
  r->fence_epoch = std::max(r->fence_epoch, r->generation.epoch);
  if (v->deleted_ || r->generation < v->gen_pending_ || r->fence_epoch < v->fence_pending_) {
    // Answered from the reactor like every other outcome: a failing commit waiter does that.
    r->step = 2;
    r->result = v->deleted_ ? -ESHUTDOWN : -EINVAL;
  } else if (r->fence_epoch > v->fence_seen_.load(std::memory_order_relaxed)) {
    v->fence_seen_.store(r->fence_epoch, std::memory_order_release);
  }
  // Step 0: a commit that starts after this call; its device flush makes every write completed
  // before it durable.
  WaitCommit(&r->waiter);
}

void Pool::OnGenerationCommit(CommitWaiter* w, int32_t result) {
  GenerationRecord* r = static_cast<GenerationRecord::Waiter*>(w)->record;
  Volume* v = r->volume;
  Pool* self = v->pool_;
  if (r->step == 2) return Finish(r, r->result);  // refused at the call
  if (result < 0) return Finish(r, result);
  if (v->deleted_) return Finish(r, -ESHUTDOWN);
  if (r->step == 0) {
    // Step 1: the record, in the next commit (written after the flush above completed).
    r->step = 1;
    if (r->generation > v->gen_pending_ || r->fence_epoch > v->fence_pending_) {
      // Checked again: another record may have raised them since the call.
      v->gen_pending_ = std::max(v->gen_pending_, r->generation);
      v->fence_pending_ = std::max(v->fence_pending_, r->fence_epoch);
      self->commit_->records.push_back({static_cast<uint32_t>(pf::LogRecordType::kGeneration),
                                        v->slot_, v->gen_pending_.epoch, v->fence_pending_,
                                        v->gen_pending_.seq});
    }
    return self->WaitCommit(&r->waiter);
  }
  // Durable: this commit carried the record (or an earlier one carried an equal or higher one).
  {
    std::lock_guard<std::mutex> l(v->gen_mu_);
    v->gen_durable_ = std::max(v->gen_durable_, r->generation);
    v->fence_durable_ = std::max(v->fence_durable_, r->fence_epoch);
  }
  generation_records_total.Add();
  Finish(r, 0);
}

}  // namespace spd
