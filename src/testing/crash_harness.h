// The crash-consistency harness: runs a seeded random workload against a pool on the sim
// backend, takes crash states at every flush boundary of the device (everything flushed, plus a
// random subset of the unflushed writes, some of them torn), opens the pool from each state
// with the production recovery code and checks it against the oracle (crash_oracle.h):
//   - the pool opens without repair (superblock, checkpoint and log checksums verify);
//   - every volume whose creation was acknowledged exists, every acknowledged delete stuck;
//   - every sector holds its last durable version or a later written one, zeros where never
//     written, and never a byte of another volume.
#pragma once

#include <cstdint>
#include <string>

namespace spd::testing {

struct CrashSweepOptions {
  uint64_t first_seed = 1;
  uint64_t seeds = 100;
  int ops_per_seed = 80;
  int states_per_boundary = 4;  // crash states taken at each device flush
  bool verbose = false;
  // When non-zero: keep running seeds (beyond `seeds`) until at least this many crash states
  // were checked, those of the exhaustive sequences (run first) included.
  uint64_t states_min = 0;
  // Also run every sequence of 1..exhaustive_depth operations drawn from {write, FUA write,
  // flush, discard, write-zeroes, create, delete, grow} (8 + 64 + 512 sequences for depth 3).
  int exhaustive_depth = 0;
  // Run the pools with PoolOptions::fault_skip_commit_flush: the sweep must then fail.
  bool fault_skip_commit_flush = false;
};

struct CrashSweepResult {
  uint64_t seeds_run = 0;
  uint64_t sequences_run = 0;
  uint64_t crash_states = 0;
  // The pools' metadata commits and checkpoints over the sweep (PoolStats: these are no
  // registry counters).
  uint64_t commits = 0;
  uint64_t checkpoints = 0;
  uint64_t failures = 0;
  std::string first_failure;  // with the seed that replays it
  double seconds = 0;
};

CrashSweepResult RunCrashSweep(const CrashSweepOptions& options);

}  // namespace spd::testing
