// Opening a pool: superblocks, checkpoint, metadata log replay, and the volumes' maps rebuilt
// from the chunk owners (code moved from pool.cc unchanged).
#include <algorithm>
#include <cstring>

#include "common/counters.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "journal/log_codec.h"
#include "volume/pool.h"
#include "volume/pool_format.h"
#include "volume/pool_internal.h"

namespace spd {
namespace {

Counter replay_skipped_total("spd_pool_replay_skipped_records_total",
                             "Log records skipped at replay because they did not fit the state.");

}  // namespace

Status Pool::Load() {
  SPD_RETURN_IF_ERROR(ReadSuperblock());
  SPD_RETURN_IF_ERROR(LoadMetadata());
  // Free chunks not known to hold zeros may hold data of writes whose allocation never became
  // durable: they are zeroed, in the background, before they can be handed out, so no volume
  // ever sees another's bytes. Serving starts at once; a write that needs a chunk before one is
  // ready waits for it (WaitForSpace).
  StartBackgroundZeroing();
  return Status::Ok();
}

Status Pool::ReadSuperblock() {
  AlignedBuf buf = AllocAligned(2 * pf::kBlockBytes);
  SPD_RETURN_IF_ERROR(backend_->ReadSync(0, buf.get(), 2 * pf::kBlockBytes));
  const pf::Superblock* good = nullptr;
  uint32_t newer = 0;  // a copy that verifies but is of a version this binary does not know
  for (int i = 0; i < 2 && !good; ++i) {
    auto* sb = reinterpret_cast<pf::Superblock*>(buf.get() + i * pf::kBlockBytes);
    uint32_t crc = sb->crc;
    sb->crc = 0;
    uint32_t actual = Crc32c(0, sb, pf::kBlockBytes);
    sb->crc = crc;
    if (sb->magic != pf::kSuperMagic || crc != actual) continue;
    if (sb->version >= pf::kVersionMin && sb->version <= pf::kVersion) {
      good = sb;
    } else {
      newer = sb->version;
    }
  }
  if (!good && newer != 0)
    return DataLoss("pool: format version " + std::to_string(newer) +
                    " is not one this spd2 reads (" + std::to_string(pf::kVersionMin) + ".." +
                    std::to_string(pf::kVersion) + "): a newer spd2 made it");
  if (!good) return DataLoss("pool: no valid superblock (not a pool, or both copies corrupt)");
  std::memcpy(uuid_, good->uuid, 16);
  format_version_ = good->version;
  zero_map_ = good->version >= 2;
  if (good->version >= 3) {
    // Checksummed, but sizes memory and every checkpoint read: never trusted beyond the limit.
    if (good->volumes_max < 1 || good->volumes_max > pf::kVolumesMaxLimit)
      return DataLoss("pool: superblock volume table size " + std::to_string(good->volumes_max) +
                      " is not between 1 and " + std::to_string(pf::kVolumesMaxLimit));
    volumes_max_ = good->volumes_max;
  } else {
    volumes_max_ = pf::kVolumesMaxV2;  // the fixed table of versions 1 and 2
  }
  slots_.clear();
  slots_.resize(volumes_max_);
  pool_bytes_ = good->pool_bytes;
  chunk_bytes_ = good->chunk_bytes;
  ckpt_offset_[0] = good->ckpt_offset[0];
  ckpt_offset_[1] = good->ckpt_offset[1];
  ckpt_bytes_ = good->ckpt_bytes;
  log_offset_ = good->log_offset;
  log_bytes_ = good->log_bytes;
  data_offset_ = good->data_offset;
  chunks_total_ = good->chunks_total;
  return Status::Ok();
}

Status Pool::LoadMetadata() {
  if (pool_bytes_ > backend_->size_bytes() ||
      data_offset_ + chunks_total_ * chunk_bytes_ > pool_bytes_ || chunk_bytes_ == 0)
    return DataLoss("pool: superblock geometry does not fit the backend");
  // Written by a format that had no limits, or corrupt despite its checksum: either way not a
  // pool this code can hold (its checkpoint would not fit one I/O).
  if (pool_bytes_ > pf::kPoolBytesMax || chunks_total_ > pf::kChunksMax ||
      ckpt_bytes_ > pf::kCheckpointBytesMax)
    return DataLoss(
        "pool: superblock geometry beyond the limits (pool_format::kPoolBytesMax, "
        "kChunksMax)");
  // The regions in order, none overlapping the next, and each checkpoint slot large enough
  // for the volume table and the chunk map (a wrong volumes_max or chunk count fails here).
  // Every offset within the pool first, so that none of the sums below can wrap.
  if (ckpt_offset_[0] > pool_bytes_ || ckpt_offset_[1] > pool_bytes_ || log_offset_ > pool_bytes_ ||
      log_bytes_ > pool_bytes_ ||
      ckpt_bytes_ <
          sizeof(pf::CheckpointHeader) + pf::CheckpointPayloadBytes(volumes_max_, chunks_total_) ||
      ckpt_offset_[0] < 2 * pf::kBlockBytes || ckpt_offset_[1] < ckpt_offset_[0] + ckpt_bytes_ ||
      log_offset_ < ckpt_offset_[1] + ckpt_bytes_ || log_bytes_ < pf::kBlockBytes ||
      data_offset_ < log_offset_ + log_bytes_)
    return DataLoss("pool: superblock layout is inconsistent (checkpoint of " +
                    std::to_string(ckpt_bytes_) + " bytes for " + std::to_string(volumes_max_) +
                    " volume slots and " + std::to_string(chunks_total_) + " chunks)");
  ResetChunkState();
  commit_->ckpt_buf = AllocAligned(ckpt_bytes_);
  SPD_RETURN_IF_ERROR(LoadCheckpoint());
  SPD_RETURN_IF_ERROR(ReplayLog());
  RebuildVolumeMaps();
  return Status::Ok();
}

Status Pool::LoadCheckpoint() {
  uint64_t best_seq = 0;
  int best = -1;
  for (int slot = 0; slot < 2; ++slot) {
    uint8_t* b = commit_->ckpt_buf.get();
    SPD_RETURN_IF_ERROR(backend_->ReadSync(ckpt_offset_[slot], b, ckpt_bytes_));
    auto* h = reinterpret_cast<pf::CheckpointHeader*>(b);
    if (h->magic != pf::kCkptMagic || std::memcmp(h->uuid, uuid_, 16) != 0) continue;
    if (h->payload_bytes + sizeof(pf::CheckpointHeader) > ckpt_bytes_) continue;
    uint32_t crc = h->crc;
    h->crc = 0;
    uint32_t actual = Crc32c(0, b, sizeof(pf::CheckpointHeader) + h->payload_bytes);
    h->crc = crc;
    if (crc != actual) continue;
    if (best < 0 || h->seq > best_seq) {
      best = slot;
      best_seq = h->seq;
    }
  }
  if (best < 0) return DataLoss("pool: no valid checkpoint");
  uint8_t* b = commit_->ckpt_buf.get();
  SPD_RETURN_IF_ERROR(backend_->ReadSync(ckpt_offset_[best], b, ckpt_bytes_));
  auto* h = reinterpret_cast<pf::CheckpointHeader*>(b);
  ckpt_seq_ = h->seq;
  next_lsn_ = h->log_lsn;
  log_pos_ = h->log_pos;
  next_volume_id_ = h->next_volume_id;
  if (h->payload_bytes != pf::CheckpointPayloadBytes(volumes_max_, chunks_total_))
    return DataLoss("pool: checkpoint size does not match the geometry");
  auto* vr = reinterpret_cast<pf::VolumeRecord*>(b + sizeof(pf::CheckpointHeader));
  for (uint32_t i = 0; i < volumes_max_; ++i) {
    if (vr[i].id == 0) continue;
    VolumeInfo info;
    info.id = vr[i].id;
    info.name.assign(vr[i].name, strnlen(vr[i].name, pf::kNameBytesMax));
    info.size_bytes = vr[i].size_bytes;
    info.durability = static_cast<Durability>(vr[i].durability);
    info.read_only = vr[i].read_only != 0;
    slots_[i].reset(new Volume(this, info, i));
    slots_[i]->LoadGeneration({vr[i].gen_epoch, vr[i].gen_seq}, vr[i].fence_epoch);
    AssignOwner(slots_[i].get());
  }
  auto* co = reinterpret_cast<pf::ChunkOwner*>(vr + volumes_max_);
  for (uint64_t c = 0; c < chunks_total_; ++c) {
    if (co[c].slot_plus_one == 0) {
      owners_[c] = 0;
      zero_claim_[c] = zero_map_ && co[c].vchunk == pf::kFreeChunkZero;
    } else {
      owners_[c] = (static_cast<uint64_t>(co[c].slot_plus_one) << 32) | co[c].vchunk;
    }
  }
  return Status::Ok();
}

Status Pool::ReplayLog() {
  AlignedBuf blk = AllocAligned(pf::kBlockBytes);
  uint64_t pos = log_pos_;
  uint64_t lsn = next_lsn_;
  log_end_ = "the end of the log region";
  while (pos + pf::kBlockBytes <= log_bytes_) {
    SPD_RETURN_IF_ERROR(backend_->ReadSync(log_offset_ + pos, blk.get(), pf::kBlockBytes));
    // The first block that is not the valid next one ends the log (a torn block is a commit
    // that never completed).
    const journal::BlockCheck check = journal::CheckBlock(blk.get(), lsn, uuid_);
    if (check != journal::BlockCheck::kValid) {
      log_end_ = std::string("LSN ") + std::to_string(lsn) + " at log offset " +
                 std::to_string(pos) + ": " + journal::BlockCheckName(check);
      break;
    }
    std::span<const pf::LogRecord> r = journal::BlockRecords(blk.get());
    for (size_t i = 0; i < r.size(); ++i) {
      if (r[i].type == static_cast<uint32_t>(pf::LogRecordType::kGeneration)) {
        if (r[i].slot < volumes_max_ && slots_[r[i].slot] != nullptr) {
          slots_[r[i].slot]->LoadGeneration({r[i].vchunk, r[i].reserved0}, r[i].pchunk);
        } else {
          replay_skipped_total.Add();
          ++anomalies_;
        }
        continue;
      }
      if (r[i].pchunk >= chunks_total_) {
        replay_skipped_total.Add();
        ++anomalies_;
        continue;
      }
      // In log order: the last record about a chunk says whether it is known zero.
      if (r[i].type == static_cast<uint32_t>(pf::LogRecordType::kFree)) {
        owners_[r[i].pchunk] = 0;
        zero_claim_[r[i].pchunk] = 0;
      } else if (r[i].type == static_cast<uint32_t>(pf::LogRecordType::kAlloc) &&
                 r[i].slot < volumes_max_ && slots_[r[i].slot] != nullptr) {
        owners_[r[i].pchunk] = (static_cast<uint64_t>(r[i].slot + 1) << 32) | r[i].vchunk;
        zero_claim_[r[i].pchunk] = 0;
      } else if (zero_map_ && r[i].type == static_cast<uint32_t>(pf::LogRecordType::kZeroed) &&
                 owners_[r[i].pchunk] == 0) {
        zero_claim_[r[i].pchunk] = 1;
      } else if (zero_map_ && r[i].type == static_cast<uint32_t>(pf::LogRecordType::kReserve)) {
        zero_claim_[r[i].pchunk] = 0;
      } else {
        replay_skipped_total.Add();
        ++anomalies_;
      }
    }
    pos += pf::kBlockBytes;
    ++lsn;
    ++log_blocks_replayed_;
  }
  log_pos_ = pos;
  next_lsn_ = lsn;
  return Status::Ok();
}

void Pool::RebuildVolumeMaps() {
  for (auto& v : slots_) {
    if (!v) continue;
    v->map_.assign((v->info_.size_bytes + chunk_bytes_ - 1) / chunk_bytes_, 0);
    v->info_.allocated_bytes = 0;
    v->allocated_.store(v->info_.allocated_bytes, std::memory_order_relaxed);
  }
  chunks_free_ = 0;
  for (uint64_t c = 0; c < chunks_total_; ++c) {
    uint32_t slot1 = static_cast<uint32_t>(owners_[c] >> 32);
    uint32_t vchunk = static_cast<uint32_t>(owners_[c]);
    // A checkpoint's owner beyond the table (checksummed, but not trusted) fits no volume.
    Volume* v = slot1 != 0 && slot1 <= volumes_max_ ? slots_[slot1 - 1].get() : nullptr;
    if (v == nullptr || vchunk >= v->map_.size() || v->map_[vchunk] != 0) {
      // Free, or an owner that no longer fits (volume gone, shrunk, duplicate): free it.
      if (slot1) {
        replay_skipped_total.Add();
        ++anomalies_;
      }
      const bool zero = slot1 == 0 && zero_claim_[c];
      owners_[c] = 0;
      state_[c] = zero ? kFreeKnownZero : kFreeDirty;
      ++chunks_free_;
      continue;
    }
    v->map_[vchunk] = static_cast<uint32_t>(c + 1);
    v->info_.allocated_bytes += chunk_bytes_;
    v->allocated_.store(v->info_.allocated_bytes, std::memory_order_relaxed);
    state_[c] = kAllocated;
  }
}

}  // namespace spd
