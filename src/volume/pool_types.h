// The plain types of the pool's interface: durability, a replica's generation and its record,
// a volume's description, the pool's options and statistics, and block-status extents. Kept
// apart from pool.h, which holds the Pool and Volume classes.
#pragma once

#include <compare>
#include <cstdint>
#include <string>

#include "journal/group_commit.h"

namespace spd {

class Volume;

enum class Durability : uint8_t {
  kFlush = 0,  // default: durable at FLUSH or FUA
  kSync = 1,   // every write durable before its acknowledgement
  kNone = 2,   // scratch: may lose everything on crash
};

// A replica's position in its volume's history (docs/replication.md): the primary's epoch and
// the sequence number of the last barrier whose writes are durable here. Ordered by epoch,
// then sequence; the replica with the highest durable generation is the freshest.
struct ReplicaGeneration {
  uint64_t epoch = 0;
  uint64_t seq = 0;
  auto operator<=>(const ReplicaGeneration&) const = default;
};

// Pool::RecordGeneration's request, owned by the caller (preallocated), alive until `done`.
struct GenerationRecord {
  ReplicaGeneration generation;
  // The fence: the highest primary epoch this replica has promised to follow (it refuses writes
  // of any lower one). Raised to generation.epoch when below it.
  uint64_t fence_epoch = 0;
  // 0 once durable; -EINVAL for a generation or fence below the volume's (nothing recorded),
  // -EIO on a failed commit, -ESHUTDOWN for a deleted volume.
  int32_t result = 0;
  void (*done)(GenerationRecord* r) = nullptr;
  void* ctx = nullptr;
  // Pool-private state.
  struct Waiter : CommitWaiter {
    GenerationRecord* record = nullptr;
  } waiter;
  Volume* volume = nullptr;
  uint8_t step = 0;
};

struct VolumeInfo {
  uint32_t id = 0;
  std::string name;
  uint64_t size_bytes = 0;
  uint64_t allocated_bytes = 0;
  Durability durability = Durability::kFlush;
  bool read_only = false;
};

struct PoolOptions {
  uint32_t chunk_size_bytes = 1u << 20;  // power of two, >= 64 KiB
  uint64_t log_size_bytes = 16u << 20;   // metadata log region
  // Volumes a new pool can hold, fixed at format (1..65,536, pool_format::kVolumesMaxLimit).
  // Every checkpoint carries the whole table, 128 bytes a slot whether used or not (the default
  // 4,096: 512 KiB), and every volume create, delete or resize writes one checkpoint.
  uint32_t volumes_max = 4096;
  // Tests only: format an older version (1 or 2: their fixed 256-slot table, volumes_max
  // ignored) to check that such pools still open and behave as before. 0: the current version.
  uint32_t format_version_for_test = 0;
  // While a commit runs, give FLUSH waiters that need no records a device flush of their own at
  // once (best where flushes run in parallel); off: they wait for the next commit (fewer, larger
  // batches, best where the device serializes flushes).
  bool overlap_flush = true;
  // How long a write that needs a chunk waits, while freed chunks are being zeroed and
  // committed, before it fails with ENOSPC (docs/pool_format.md, "Space being reclaimed").
  uint64_t space_wait_ns = 5'000'000'000;
  // Thin provisioning's bound: a create or a growth that would make the volumes' sizes summed
  // (PoolStats::provisioned_bytes) exceed this many times the data area is refused
  // (kResourceExhausted). 0: no bound; 1: no overcommit. A choice of this run, not of the format.
  double overcommit_max = 0;
  // Every volume's chunk map is in memory whole, 4 bytes per chunk of its size (written or not):
  // a create or growth that would make them all take more than this is refused
  // (kResourceExhausted), so that no caller can make the daemon allocate without bound (a 2 PiB
  // thin volume of 1 MiB chunks: 8 GiB). 0: no bound. A choice of this run.
  uint64_t map_memory_max = 1ull << 30;
  // Fault injection for the crash harness's own test, never set in production: a commit
  // acknowledges its waiters without the device flush. Proves the harness catches that bug.
  bool fault_skip_commit_flush = false;
};

struct PoolStats {
  uint64_t size_bytes = 0;
  uint64_t chunk_size_bytes = 0;
  uint64_t chunks_total = 0;
  uint64_t chunks_free = 0;
  uint64_t commits = 0;
  uint64_t log_records = 0;
  uint64_t checkpoints = 0;
  uint64_t log_size_bytes = 0;  // the metadata log region
  uint64_t log_used_bytes = 0;  // written since the last checkpoint (one starts at half)
  uint32_t volumes = 0;         // live volumes (table slots in use)
  // The live volumes' sizes summed: what the pool has promised (thin: may exceed the data area;
  // over chunks_total * chunk_size_bytes it is the overcommit).
  uint64_t provisioned_bytes = 0;  // saturates at UINT64_MAX
  uint64_t map_bytes = 0;          // memory the live volumes' chunk maps take
  uint32_t volumes_max = 0;
  bool read_only = false;
};

// Extent kinds for Volume::MapRange (what NBD BLOCK_STATUS reports).
enum class ExtentKind : uint8_t {
  kData = 0,  // allocated; holds written data (or zeros written by the client)
  kZero = 1,  // allocated but known to read as zeros
  kHole = 2,  // unallocated: reads as zeros, uses no space
};

struct Extent {
  uint64_t offset_bytes;
  uint64_t length_bytes;
  ExtentKind kind;
};

}  // namespace spd
