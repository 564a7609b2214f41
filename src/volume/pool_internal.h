// Private to the pool's implementation files (pool.cc, pool_commit.cc): shared limits,
// aligned buffers, and the state of background zeroing and group commit.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/assert.h"
#include "common/counters.h"
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

// The volume data path's counters (defined in volume.cc), shared by its paths: the pool
// reactor's (volume.cc), the owner's (volume_owned.cc) and the fast path.
namespace volume_counters {
extern Counter client_bytes_written_total;
extern Counter invalid_requests_total;
extern Counter enospc_total;
extern Counter space_wait_exhausted_total;
extern Counter read_only_refusals_total;
extern Counter io_errors_total;
extern Counter remote_requests_total;
extern Counter remote_fallbacks_total;
}  // namespace volume_counters

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

// One control operation (pool_control.cc): queued, running, or finished with something of its
// still outstanding. Here because ~Pool (pool.cc) owns them too.
struct Pool::ControlOp {
  enum class Kind { kCreate, kDelete, kResize, kSetDurability, kSync };
  enum class Phase { kQueued, kDrain, kTail, kCommit, kPunch, kFreeCommit, kDone };
  explicit ControlOp(Kind k) : kind(k) {}
  const Kind kind;
  Phase phase = Phase::kQueued;
  std::string name;
  uint64_t size_bytes = 0;
  Durability durability = Durability::kFlush;
  bool read_only = false;
  std::function<void(Status, Volume*)> done;

  Pool* pool = nullptr;
  struct OpTimer : Timer {
    ControlOp* op;
  } timer;
  struct OpWaiter : CommitWaiter {
    ControlOp* op;
  } waiter;
  struct OpTask : Task {
    ControlOp* op;
  } done_task;
  BackendIo io;  // resize: zeroing the tail of the last kept chunk
  // Outstanding: a finished (timed-out) operation stays allocated until these come back.
  bool waiter_pending = false;
  bool io_pending = false;
  bool callback_pending = false;
  uint64_t deadline_ns = 0;

  // What a failure restores.
  Volume* v = nullptr;
  bool remote_closed = false;
  uint64_t old_size = 0;
  Durability old_durability = Durability::kFlush;
  std::unique_ptr<Volume> gone;  // delete: out of slots_ while its checkpoint commits
  std::vector<uint32_t> chunks;  // delete: the chunks it held

  Status result;
  Volume* result_volume = nullptr;

  std::string What() const {
    switch (kind) {
      case Kind::kCreate:
        return "create volume " + name;
      case Kind::kDelete:
        return "delete volume " + name;
      case Kind::kResize:
        return "resize volume " + name;
      case Kind::kSetDurability:
        return "set durability of volume " + name;
      case Kind::kSync:
        return "sync";
    }
    return "";
  }
};

}  // namespace spd
