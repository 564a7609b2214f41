#include "journal/log_codec.h"

#include <algorithm>
#include <cstring>

#include "common/crc32c.h"

namespace spd::journal {

size_t EncodeBlocks(std::span<const LogRecord> records, uint64_t first_lsn,
                    const uint8_t (&uuid)[16], uint8_t* buf, size_t blocks_max) {
  size_t blocks = 0;
  size_t i = 0;
  while (i < records.size() && blocks < blocks_max) {
    uint8_t* b = buf + blocks * kBlockBytes;
    std::memset(b, 0, kBlockBytes);
    auto* h = reinterpret_cast<LogBlockHeader*>(b);
    h->magic = kLogMagic;
    h->lsn = first_lsn + blocks;
    std::memcpy(h->uuid, uuid, 16);
    const size_t n = std::min<size_t>(kRecordsPerBlock, records.size() - i);
    h->count = static_cast<uint32_t>(n);
    std::memcpy(b + sizeof(LogBlockHeader), records.data() + i, n * sizeof(LogRecord));
    h->crc = Crc32c(0, b, kBlockBytes);
    i += n;
    ++blocks;
  }
  return blocks;
}

const char* BlockCheckName(BlockCheck c) {
  switch (c) {
    case BlockCheck::kValid:
      return "valid";
    case BlockCheck::kBadMagic:
      return "bad magic";
    case BlockCheck::kWrongLsn:
      return "wrong lsn";
    case BlockCheck::kForeignUuid:
      return "another pool's block";
    case BlockCheck::kBadCount:
      return "bad record count";
    case BlockCheck::kBadCrc:
      return "bad checksum";
  }
  return "?";
}

BlockCheck CheckBlock(const uint8_t* blk, uint64_t lsn, const uint8_t (&uuid)[16]) {
  LogBlockHeader h;
  std::memcpy(&h, blk, sizeof h);
  if (h.magic != kLogMagic) return BlockCheck::kBadMagic;
  if (std::memcmp(h.uuid, uuid, 16) != 0) return BlockCheck::kForeignUuid;
  if (h.lsn != lsn) return BlockCheck::kWrongLsn;
  if (h.count > kRecordsPerBlock) return BlockCheck::kBadCount;
  // The checksum covers the block with its own field zero.
  const uint32_t zero = 0;
  uint32_t crc = Crc32c(0, blk, offsetof(LogBlockHeader, crc));
  crc = Crc32c(crc, reinterpret_cast<const uint8_t*>(&zero), sizeof zero);
  const size_t rest = offsetof(LogBlockHeader, crc) + sizeof zero;
  crc = Crc32c(crc, blk + rest, kBlockBytes - rest);
  return crc == h.crc ? BlockCheck::kValid : BlockCheck::kBadCrc;
}

std::span<const LogRecord> BlockRecords(const uint8_t* blk) {
  LogBlockHeader h;
  std::memcpy(&h, blk, sizeof h);
  return {reinterpret_cast<const LogRecord*>(blk + sizeof(LogBlockHeader)),
          std::min<size_t>(h.count, kRecordsPerBlock)};
}

}  // namespace spd::journal
