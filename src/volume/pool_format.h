// On-disk format of a pool. All integers little-endian. See docs/pool_format.md.
//
//   offset 0       superblock copy A (4 KiB)
//   offset 4096    superblock copy B (4 KiB)
//   ckpt_offset[0] checkpoint slot 0 (ckpt_bytes)
//   ckpt_offset[1] checkpoint slot 1 (ckpt_bytes)
//   log_offset     metadata log (log_bytes, 4 KiB blocks)
//   data_offset    data chunks (chunks_total x chunk_bytes), chunk-aligned
#pragma once

#include <cstddef>
#include <cstdint>

#include "journal/journal_format.h"

namespace spd::pool_format {

constexpr uint32_t kBlockBytes = journal::kBlockBytes;
// 2: free chunks' known-zero state is kept (ChunkOwner::vchunk of a free chunk, kZeroed and
// kReserve records). Version 1 pools still open; they keep no known-zero state.
// 3: the volume table's size is the pool's own (Superblock::volumes_max) instead of a fixed 256.
// Versions 1 and 2 still open, with their 256-entry table; they are never rewritten as 3.
constexpr uint32_t kVersion = 3;
constexpr uint32_t kVersionMin = 1;
constexpr uint64_t kSuperMagic = 0x4c4f4f5032445053ull;  // "SPD2POOL"
constexpr uint64_t kCkptMagic = 0x54504b4332445053ull;   // "SPD2CKPT"
constexpr uint32_t kNameBytesMax = 64;

// Volume table entries (volume slots) in every checkpoint. Versions 1 and 2 have exactly
// kVolumesMaxV2; a version 3 pool has Superblock::volumes_max, fixed at format, from 1 to
// kVolumesMaxLimit (kVolumesMaxDefault unless PoolOptions::volumes_max says otherwise). The
// table is part of every checkpoint (128 bytes a slot, used or not), and every volume create,
// delete or resize writes a whole checkpoint: the default table is 512 KiB, the largest 8 MiB.
constexpr uint32_t kVolumesMaxV2 = 256;
constexpr uint32_t kVolumesMaxDefault = 4096;
constexpr uint32_t kVolumesMaxLimit = 65536;

struct Superblock {
  uint64_t magic;
  uint32_t version;
  uint32_t crc;  // crc32c of the whole 4 KiB block with this field zero
  uint8_t uuid[16];
  uint64_t pool_bytes;
  uint32_t chunk_bytes;
  uint32_t reserved0;
  uint64_t ckpt_offset[2];
  uint64_t ckpt_bytes;
  uint64_t log_offset;
  uint64_t log_bytes;
  uint64_t data_offset;
  uint64_t chunks_total;
  // Version 3: volume table slots (1..kVolumesMaxLimit; anything else is damage). Versions 1
  // and 2 wrote zero here (and kVolumesMaxV2 applies); it is read only for version 3.
  uint32_t volumes_max;
  uint32_t reserved1;
  uint8_t pad[kBlockBytes - 112];
};
static_assert(sizeof(Superblock) == kBlockBytes);
static_assert(offsetof(Superblock, crc) == 12);
static_assert(offsetof(Superblock, chunks_total) == 96);
static_assert(offsetof(Superblock, volumes_max) == 104);

// Volume table entry inside a checkpoint.
struct VolumeRecord {
  uint32_t id;  // stable id, unique for the pool's life (0 = slot unused)
  uint8_t durability;
  uint8_t read_only;
  uint16_t reserved0;
  uint64_t size_bytes;
  char name[kNameBytesMax];  // NUL-padded
  // Replication generation (docs/replication.md): the epoch and sequence every write up to
  // which is durable here. Zero for a volume never replicated (and in pools written before
  // replication existed: the bytes were padding, always zero).
  uint64_t gen_epoch;
  uint64_t gen_seq;
  uint64_t fence_epoch;  // the highest primary epoch promised to (>= gen_epoch)
  uint8_t pad[24];
};
static_assert(sizeof(VolumeRecord) == 128);
static_assert(offsetof(VolumeRecord, gen_epoch) == 80);

// Chunk owner map entry: who owns each data chunk.
struct ChunkOwner {
  uint32_t slot_plus_one;  // volume table slot + 1; 0 = free
  uint32_t vchunk;         // chunk index inside the volume; of a free chunk: kFreeChunk*
};
constexpr uint32_t kFreeChunkUnknown = 0;  // free chunk, contents unknown: zeroed at open
constexpr uint32_t kFreeChunkZero = 1;     // free chunk known to hold zeros (format 2)
static_assert(sizeof(ChunkOwner) == 8);

struct CheckpointHeader {
  uint64_t magic;
  uint64_t seq;      // higher wins
  uint8_t uuid[16];  // the pool's: a stale checkpoint of another pool never loads
  uint64_t log_lsn;  // first log block LSN to replay
  uint64_t log_pos;  // byte offset in the log region where replay starts
  uint64_t payload_bytes;
  uint32_t next_volume_id;
  uint32_t crc;  // crc32c of header (this field zero) + payload
  uint8_t pad[8];
};
static_assert(sizeof(CheckpointHeader) == 72);
// Payload: VolumeRecord[volumes_max] then ChunkOwner[chunks_total] (volumes_max: kVolumesMaxV2
// for versions 1 and 2, Superblock::volumes_max for version 3).
constexpr uint64_t CheckpointPayloadBytes(uint64_t volumes_max, uint64_t chunks_total) {
  return volumes_max * sizeof(VolumeRecord) + chunks_total * sizeof(ChunkOwner);
}

// Size limits. A checkpoint is written and read as one backend I/O, whose length is a uint32
// and whose result an int32 (so at most 2 GiB - 1), and it is held in memory whole: it must
// stay well below 2 GiB. It holds 8 bytes per chunk, so the chunk count is what is bounded:
// kChunksMax chunks and the largest volume table (kVolumesMaxLimit) make a checkpoint of
// 520 MiB + 72 bytes (about a quarter of the I/O limit). The pool size is bounded too, at
// kChunksMax chunks of the default 1 MiB (64 TiB); with smaller chunks the chunk limit comes first
// (64 KiB chunks: 4 TiB). Format refuses a bigger backend; open refuses a superblock beyond either
// limit.
constexpr uint64_t kChunksMax = 1ull << 26;
constexpr uint64_t kPoolBytesMax = 64ull << 40;  // 64 TiB
constexpr uint64_t kCheckpointBytesMax =
    (sizeof(CheckpointHeader) + CheckpointPayloadBytes(kVolumesMaxLimit, kChunksMax) +
     (kBlockBytes - 1)) /
    kBlockBytes * kBlockBytes;
static_assert(kCheckpointBytesMax <= (1ull << 30), "a checkpoint must stay well below 2 GiB");

// The metadata log's blocks and records: the journal's format (journal/journal_format.h).
using journal::kLogMagic;
using journal::kRecordsPerBlock;
using journal::LogBlockHeader;
using journal::LogRecord;
using journal::LogRecordType;

}  // namespace spd::pool_format
