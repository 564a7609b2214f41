// Pool: its side of group commit (journal/group_commit.h decides when a commit runs and who it
// serves). A commit writes the pending records as log blocks (or a checkpoint), flushes the
// device once, then the waiters complete. See docs/pool_format.md.
#include <algorithm>
#include <cstring>

#include "common/counters.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "journal/log_codec.h"
#include "volume/pool.h"
#include "volume/pool_internal.h"

namespace spd {
namespace {

Counter read_only_commits_total(
    "spd_pool_read_only_commit_refusals_total",
    "Commits and commit waiters failed with EIO because the pool is read-only.");

}  // namespace

// ---- group commit ---------------------------------------------------------------------------

void Pool::WaitCommit(CommitWaiter* w) {
  if (!read_only()) return group_->Wait(w);
  w->next = nullptr;
  if (ro_tail_) {
    ro_tail_->next = w;
  } else {
    ro_head_ = w;
  }
  ro_tail_ = w;
  ScheduleReadOnlyFail();
}

void Pool::FlushFailed(int32_t result) { EnterReadOnly(result, "device flush"); }

void Pool::EnterReadOnly(int32_t result, const char* what) {
  if (read_only()) return;
  read_only_.store(true, std::memory_order_seq_cst);
  group_->set_overlap(false);
  SPD_LOG_ERROR(
      "pool: %s failed (%s): the pool is read-only from now on. Reads still work; every write, "
      "trim, write-zeroes and flush fails, because after a failed device flush the kernel may "
      "have dropped the unwritten data and a later flush could report success without it. "
      "Check the device, then restart spd2: the pool re-opens from its last durable state.",
      what, std::strerror(-result));
  if (read_only_listener_)
    read_only_listener_(std::string(what) + " failed (" + std::strerror(-result) +
                        "): the pool is read-only until spd2 restarts");
  WakeSpaceWaiters();  // writes waiting for space fail now
}

void Pool::ScheduleReadOnlyFail() {
  if (ro_task_scheduled_) return;
  ro_task_scheduled_ = true;
  ro_task_.pool = this;
  ro_task_.fn = &Pool::OnReadOnlyFail;
  reactor_->Defer(&ro_task_);
}

void Pool::OnReadOnlyFail(Task* t) {
  Pool* self = static_cast<RoTask*>(t)->pool;
  self->ro_task_scheduled_ = false;
  if (self->ro_commit_) {
    self->ro_commit_ = false;
    read_only_commits_total.Add();
    self->FinishCommit(-EIO);
  }
  CommitWaiter* w = self->ro_head_;
  self->ro_head_ = self->ro_tail_ = nullptr;
  while (w) {
    CommitWaiter* next = w->next;
    read_only_commits_total.Add();
    w->fn(w, -EIO);
    w = next;
  }
}

bool Pool::CommitHasWork() const {
  return !commit_->records.empty() || !freed_pending_.empty() || !zeroed_pending_.empty() ||
         commit_->want_checkpoint;
}

void Pool::RunCommit() {
  CommitState& c = *commit_;
  if (read_only()) {
    // No device I/O any more: the commit (a background one, or waiters queued before the
    // failure) fails from the reactor.
    ro_commit_ = true;
    return ScheduleReadOnlyFail();
  }
  ++stats_.commits;
  // Step 1: the records pending now, as log blocks (or a checkpoint), written without waiting
  // for the data they describe. That is safe because a chunk is allocated only while it holds
  // zeros and every free chunk not known zero on disk (a chunk handed out never is) is zeroed
  // again after open (docs/pool_format.md): a record that
  // lands without its data shows zeros, which is what an unflushed write may show.
  c.batch.swap(c.records);
  c.records.clear();
  c.batch_freed.swap(freed_pending_);
  freed_pending_.clear();
  // Zeroings completed now are covered by this commit's device flush.
  c.batch_zeroed.swap(zeroed_pending_);
  zeroed_pending_.clear();
  size_t blocks = journal::BlocksFor(c.batch.size());
  c.checkpoint = c.want_checkpoint || blocks > kLogBlocksPerCommitMax ||
                 log_pos_ + blocks * pf::kBlockBytes > log_bytes_ / 2;
  c.want_checkpoint = false;
  c.batch_blocks = 0;
  if (!c.checkpoint && blocks == 0) {
    // Nothing to record: one device flush is the whole commit.
    c.phase = 1;
    return CommitStep(0);
  }
  c.phase = 0;
  c.io.op = IoOp::kWrite;
  c.io.flags = 0;
  if (c.checkpoint) {
    size_t n = EncodeCheckpoint(c.ckpt_buf.get());
    SPD_ASSERT(n <= pf::kCheckpointBytesMax);  // Format and Load refuse larger geometries
    c.io.offset_bytes = ckpt_offset_[(ckpt_seq_ + 1) % 2];
    c.io.length_bytes = static_cast<uint32_t>(n);
    c.io.buf = c.ckpt_buf.get();
  } else {
    c.batch_blocks = journal::EncodeBlocks(c.batch, next_lsn_, uuid_, c.log_buf.get(), blocks);
    c.io.offset_bytes = log_offset_ + log_pos_;
    c.io.length_bytes = static_cast<uint32_t>(c.batch_blocks * pf::kBlockBytes);
    c.io.buf = c.log_buf.get();
  }
  backend_->Submit(&c.io);
}

void Pool::OnCommitIo(BackendIo* io) { static_cast<Pool*>(io->ctx)->CommitStep(io->result); }

size_t Pool::EncodeCheckpoint(uint8_t* buf) {
  const size_t payload = pf::CheckpointPayloadBytes(volumes_max_, chunks_total_);
  std::memset(buf, 0, sizeof(pf::CheckpointHeader) + payload);
  auto* h = reinterpret_cast<pf::CheckpointHeader*>(buf);
  h->magic = pf::kCkptMagic;
  h->seq = ckpt_seq_ + 1;
  std::memcpy(h->uuid, uuid_, 16);
  h->log_lsn = next_lsn_;
  h->log_pos = 0;  // the log starts over after a checkpoint
  h->payload_bytes = payload;
  h->next_volume_id = next_volume_id_;
  auto* vr = reinterpret_cast<pf::VolumeRecord*>(buf + sizeof(pf::CheckpointHeader));
  for (uint32_t i = 0; i < volumes_max_; ++i) {
    if (!slots_[i]) continue;
    const VolumeInfo& info = slots_[i]->info_;
    vr[i].id = info.id;
    vr[i].durability = static_cast<uint8_t>(info.durability);
    vr[i].read_only = info.read_only ? 1 : 0;
    vr[i].size_bytes = info.size_bytes;
    std::memcpy(vr[i].name, info.name.data(), std::min<size_t>(info.name.size(), 64));
    // Every kGeneration record of this commit's batch is in gen_pending_ (records queued after
    // the batch was taken are not: this runs right after, on the same reactor).
    vr[i].gen_epoch = slots_[i]->gen_pending_.epoch;
    vr[i].gen_seq = slots_[i]->gen_pending_.seq;
    vr[i].fence_epoch = slots_[i]->fence_pending_;
  }
  auto* co = reinterpret_cast<pf::ChunkOwner*>(vr + volumes_max_);
  for (uint64_t c = 0; c < chunks_total_; ++c) {
    co[c].slot_plus_one = static_cast<uint32_t>(owners_[c] >> 32);
    co[c].vchunk = static_cast<uint32_t>(owners_[c]);
    // Known zero only for a chunk never handed out since its zeros were flushed: not one being
    // reserved (it may be written before this checkpoint is durable), nor one whose zeroing
    // no flush has covered yet.
    if (owners_[c] == 0)
      co[c].vchunk =
          zero_map_ && state_[c] == kFreeKnownZero ? pf::kFreeChunkZero : pf::kFreeChunkUnknown;
  }
  h->crc = Crc32c(0, buf, sizeof(pf::CheckpointHeader) + payload);
  return RoundUp(sizeof(pf::CheckpointHeader) + payload, pf::kBlockBytes);
}

void Pool::CommitStep(int32_t result) {
  CommitState& c = *commit_;
  if (result < 0) return FinishCommit(result);
  if (c.phase <= 1) {
    // Step 2: one device flush makes durable every data write completed before it was issued
    // (so every write its waiters acknowledged) and the records of step 1.
    c.phase = 2;
    c.io.SetFlush();
    if (fault_skip_commit_flush_) {  // see PoolOptions: a harmless read stands in for the flush
      c.io.op = IoOp::kRead;
      c.io.length_bytes = pf::kBlockBytes;
      c.io.buf = c.log_buf.get();
    }
    backend_->Submit(&c.io);
    return;
  }
  // Phase 2 done: the metadata is durable.
  if (c.checkpoint) {
    ++ckpt_seq_;
    log_pos_ = 0;
    ++stats_.checkpoints;
  } else {
    log_pos_ += c.batch_blocks * pf::kBlockBytes;
    next_lsn_ += c.batch_blocks;
    stats_.log_records += c.batch.size();
  }
  FinishCommit(0);
}

void Pool::FinishCommit(int32_t result) {
  CommitState& c = *commit_;
  if (result < 0) {
    // Not durable, and never retried: after a failed flush the device (or the kernel's cache
    // of it) may have dropped writes that a later successful flush would not bring back, so
    // a retry could acknowledge durability that is not there. Read-only from here; the chunks
    // of the batch's frees stay out of circulation (a restart finds them as the log says).
    EnterReadOnly(result, c.checkpoint ? "checkpoint commit" : "log commit");
  } else {
    for (const pf::LogRecord& r : c.batch) {
      if (r.type == static_cast<uint32_t>(pf::LogRecordType::kAlloc)) SetAllocPending(r.pchunk, 0);
      if (r.type == static_cast<uint32_t>(pf::LogRecordType::kReserve) &&
          state_[r.pchunk] == kReserving) {
        state_[r.pchunk] = kFreeZero;  // not known zero on disk any more: may be written
        free_zero_.push_back(static_cast<uint32_t>(r.pchunk));
        --reserving_;
      }
    }
    for (uint32_t p : c.batch_freed) {
      ReturnZeroedChunk(p);
      ++chunks_free_;
    }
    for (uint32_t p : c.batch_zeroed) ReturnZeroedChunk(p);
  }
  c.batch.clear();
  c.batch_freed.clear();
  c.batch_zeroed.clear();
  group_->CommitDone(result);
  // kReserve records queued while this commit ran: a writer may be about to need them.
  if (reserving_ > 0 && !read_only() && !group_->running() && !closing_) group_->Kick();
  // Writes waiting for space look again: at chunks this commit returned, or, if it returned
  // none, at whether anything is left to reclaim (and start the commit that frees it).
  WakeSpaceWaiters();
}

}  // namespace spd
