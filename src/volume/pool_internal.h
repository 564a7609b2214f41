// Private to the pool's implementation files (pool.cc, pool_commit.cc): shared limits,
// aligned buffers, and the state of background zeroing and group commit.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "common/assert.h"
#include "volume/pool.h"
#include "volume/pool_format.h"

namespace spd {

namespace pf = pool_format;

namespace pool_internal {

constexpr size_t kLogBlocksPerCommitMax = 64;
constexpr size_t kPunchIosMax = 32;
// Background zeroing after open (chunks not known zero): I/Os in flight at most.
constexpr size_t kZeroIosMax = 8;
// Writes that may wait for space being reclaimed at once (Pool::WaitForSpace); more fail with
// ENOSPC. NBD bounds each connection's requests, so this is only a backstop for memory of none.
constexpr size_t kSpaceWaitersMax = 1024;
// Pending records (or freed chunks waiting for a commit) beyond which the pool commits on its
// own, without waiting for a client FLUSH: bounds memory and returns freed space.
constexpr size_t kBackgroundCommitRecords = 2048;

inline uint64_t RoundUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

struct AlignedFree {
  void operator()(uint8_t* p) const { std::free(p); }
};
using AlignedBuf = std::unique_ptr<uint8_t, AlignedFree>;
inline AlignedBuf AllocAligned(size_t bytes) {
  void* p = nullptr;
  SPD_ASSERT(posix_memalign(&p, 4096, RoundUp(bytes, 4096)) == 0);
  std::memset(p, 0, RoundUp(bytes, 4096));
  return AlignedBuf(static_cast<uint8_t*>(p));
}

}  // namespace pool_internal

using pool_internal::AlignedBuf;
using pool_internal::AllocAligned;
using pool_internal::kBackgroundCommitRecords;
using pool_internal::kLogBlocksPerCommitMax;
using pool_internal::kPunchIosMax;
using pool_internal::kSpaceWaitersMax;
using pool_internal::kZeroIosMax;
using pool_internal::RoundUp;

// Free chunks kept allocatable (kFreeZero, not known zero on disk): at most this many, and
// 1/64 of the pool, at least 8. A reopen zeroes at most these (plus chunks freed since the last
// commit) instead of all free space.
constexpr uint64_t kReserveChunksMax = 256;
// Bytes of zeros one zeroing write carries (block devices, whose discard does not zero).
constexpr uint32_t kZeroWriteBytes = 1u << 20;

struct Pool::PunchIo {
  BackendIo io;
  Pool* pool;
  uint32_t pchunk;
  uint64_t done_bytes;  // zero writes: how much of the chunk is written
  bool background;      // one of the kZeroIosMax of background zeroing (kZeroing chunks)
};

struct Pool::ZeroBuf {
  AlignedBuf buf;  // kZeroWriteBytes of zeros
};

// The pool's side of a commit; journal/group_commit.h holds the waiters and the ordering.
struct Pool::CommitState {
  bool checkpoint = false;
  bool want_checkpoint = false;
  int phase = 0;                       // 0 write records, 1 (none to write), 2 flush
  std::vector<pf::LogRecord> records;  // pending, not yet in a commit
  std::vector<pf::LogRecord> batch;    // in the running commit
  std::vector<uint32_t> batch_freed;   // become kFreeZero when the running commit is durable
  std::vector<uint32_t> batch_zeroed;  // background-zeroed: likewise (ReturnZeroedChunk)
  size_t batch_blocks = 0;
  BackendIo io;
  AlignedBuf log_buf;
  AlignedBuf ckpt_buf;
};

}  // namespace spd
