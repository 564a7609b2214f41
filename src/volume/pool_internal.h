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
using pool_internal::RoundUp;

struct Pool::PunchIo {
  BackendIo io;
  Pool* pool;
  uint32_t pchunk;
};

struct Pool::CommitState {
  bool running = false;
  bool checkpoint = false;
  bool want_checkpoint = false;
  int phase = 0;                      // 0 write records, 1 (none to write), 2 flush
  CommitWaiter* next_head = nullptr;  // arrived while a commit ran: served by the next one
  CommitWaiter* next_tail = nullptr;
  CommitWaiter* current = nullptr;     // served by the running commit
  std::vector<pf::LogRecord> records;  // pending, not yet in a commit
  std::vector<pf::LogRecord> batch;    // in the running commit
  std::vector<uint32_t> batch_freed;   // become kFreeZero when the running commit is durable
  size_t batch_blocks = 0;
  BackendIo io;
  AlignedBuf log_buf;
  AlignedBuf ckpt_buf;
  uint64_t started = 0;   // commits started
  uint64_t finished = 0;  // commits finished (in order)

  // The overlapping flush: while a commit runs, FLUSH waiters that need no records get a device
  // flush of their own at once instead of waiting for the commit after the running one. They
  // complete in order, once the commit that was running when they arrived has finished too
  // (their writes' records may be in it).
  struct Overlap {
    bool running = false;
    bool flushed = false;  // the device flush completed
    int32_t result = 0;
    int32_t after_result = 0;  // of the commit it waits for: its records may be theirs
    uint64_t after = 0;        // complete once `finished` reaches this
    CommitWaiter* waiters = nullptr;
    BackendIo io;
  } overlap;
};

}  // namespace spd
