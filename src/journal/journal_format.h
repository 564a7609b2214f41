// On-disk format of the write-ahead log (metadata journal): 4 KiB blocks of fixed-size records,
// each block checksummed and numbered. All integers little-endian. See docs/pool_format.md
// ("Metadata log") for where the log lives in a pool and what the records mean.
#pragma once

#include <cstddef>
#include <cstdint>

namespace spd::journal {

constexpr uint32_t kBlockBytes = 4096;
constexpr uint32_t kLogMagic = 0x4c445053u;  // "SPDL"

struct LogBlockHeader {
  uint32_t magic;
  uint32_t crc;  // crc32c of the whole block with this field zero
  uint64_t lsn;  // consecutive; replay stops at the first block that breaks the sequence
  uint8_t uuid[16];
  uint32_t count;  // records in this block
  uint32_t reserved0;
};
static_assert(sizeof(LogBlockHeader) == 40);

enum class LogRecordType : uint32_t {
  kAlloc = 1,  // chunk `pchunk` now holds volume slot `slot`'s chunk `vchunk`
  kFree = 2,   // chunk `pchunk` is free (its contents were zeroed before this record)
  // Pool format 2: the known-zero state of a free chunk (docs/pool_format.md).
  kZeroed = 3,   // free chunk `pchunk` holds zeros, durably since before this record
  kReserve = 4,  // free chunk `pchunk` may be handed out: no longer known to hold zeros
  // Replication (docs/replication.md): volume slot `slot` holds, durably since before this
  // record, every write of its primaries up to generation (epoch `vchunk`, sequence
  // `reserved0`), and follows no primary of an epoch below `pchunk` (its fence). Pools that
  // never replicate never carry one.
  kGeneration = 5,
};

struct LogRecord {
  uint32_t type;
  uint32_t slot;
  uint64_t vchunk;
  uint64_t pchunk;
  uint64_t reserved0;
};
static_assert(sizeof(LogRecord) == 32);

constexpr uint32_t kRecordsPerBlock = (kBlockBytes - sizeof(LogBlockHeader)) / sizeof(LogRecord);
static_assert(kRecordsPerBlock == 126);

}  // namespace spd::journal
