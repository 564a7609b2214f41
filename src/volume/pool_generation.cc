// Pool: the replication generation of each volume (docs/replication.md, "Never promote stale
// data"), recorded durably after the data it vouches for.
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

void Volume::LoadGeneration(ReplicaGeneration g) {
  if (g <= gen_pending_) return;
  gen_pending_ = g;
  {
    std::lock_guard<std::mutex> l(gen_mu_);
    gen_durable_ = g;
  }
  if (g.epoch > epoch_seen_.load(std::memory_order_relaxed))
    epoch_seen_.store(g.epoch, std::memory_order_release);
}

void Pool::RecordGeneration(Volume* v, GenerationRecord* r) {
  r->volume = v;
  r->result = 0;
  r->step = 0;
  r->waiter.record = r;
  r->waiter.fn = &Pool::OnGenerationCommit;
  if (v->deleted_ || r->generation < v->gen_pending_) {
    // Answered from the reactor like every other outcome: a failing commit waiter does that.
    r->step = 2;
    r->result = v->deleted_ ? -ESHUTDOWN : -EINVAL;
  } else if (r->generation.epoch > v->epoch_seen_.load(std::memory_order_relaxed)) {
    v->epoch_seen_.store(r->generation.epoch, std::memory_order_release);
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
    if (r->generation > v->gen_pending_) {
      v->gen_pending_ = r->generation;
      self->commit_->records.push_back({static_cast<uint32_t>(pf::LogRecordType::kGeneration),
                                        v->slot_, r->generation.epoch, 0, r->generation.seq});
    }
    return self->WaitCommit(&r->waiter);
  }
  // Durable: this commit carried the record (or an earlier one carried an equal or higher one).
  {
    std::lock_guard<std::mutex> l(v->gen_mu_);
    if (r->generation > v->gen_durable_) v->gen_durable_ = r->generation;
  }
  generation_records_total.Add();
  Finish(r, 0);
}

}  // namespace spd
