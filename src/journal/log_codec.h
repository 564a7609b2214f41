// Encoding and verification of write-ahead log blocks (journal_format.h). Pure functions: the
// pool decides where blocks go and when they are flushed; replay asks CheckBlock() of each block
// in turn and stops at the first one that is not the valid next block.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "journal/journal_format.h"

namespace spd::journal {

// Packs records into consecutive blocks numbered first_lsn, first_lsn + 1, ... at `buf`
// (blocks_max * kBlockBytes bytes). Returns the number of blocks written; they hold the first
// min(records.size(), blocks * kRecordsPerBlock) records.
size_t EncodeBlocks(std::span<const LogRecord> records, uint64_t first_lsn,
                    const uint8_t (&uuid)[16], uint8_t* buf, size_t blocks_max);

// Blocks needed for `records` records.
inline size_t BlocksFor(size_t records) {
  return (records + kRecordsPerBlock - 1) / kRecordsPerBlock;
}

enum class BlockCheck {
  kValid,
  kBadMagic,     // never written, or another structure: the end of the log
  kWrongLsn,     // a block of an older pass over the log region: the end of the log
  kForeignUuid,  // left over from another pool formatted on the same device
  kBadCount,     // more records than fit: corrupt
  kBadCrc,       // torn or corrupt: the commit that wrote it never completed
};
const char* BlockCheckName(BlockCheck c);

// Is `blk` (kBlockBytes) the valid log block numbered `lsn` of the pool `uuid`?
BlockCheck CheckBlock(const uint8_t* blk, uint64_t lsn, const uint8_t (&uuid)[16]);

// The records of a block that CheckBlock() found valid.
std::span<const LogRecord> BlockRecords(const uint8_t* blk);

}  // namespace spd::journal
