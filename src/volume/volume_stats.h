// Per-volume I/O figures for the metrics endpoint: operations, bytes, errors by kind, latency
// histograms by operation, requests in flight and time held in the scheduler stage.
//
// The data path never shares a cache line between reactors: every writer (an NBD connection, on
// its reactor) gets a slot of its own (Attach) and updates it with plain loads and stores of
// relaxed atomics (one writer: no locked instruction). A scrape sums the live slots and what
// detached slots left behind (Detach folds a slot into the volume's retired totals), so every
// counter only grows. Writers without a slot of their own (in-process frontends, tests) use
// `shared()`, updated with atomic adds.
//
// Thread-safety: a slot's Record* from its one writer (shared(): any thread); Attach, Detach
// and Sum from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace spd {

// What the metrics tell apart. Discard and write-zeroes are one class ("discard"): both free or
// zero a range without data.
enum class IoClass : uint8_t { kRead, kWrite, kFlush, kDiscard, kBlockStatus, kOther, kCount };
const char* IoClassName(IoClass c);  // "read", "write", "flush", "discard", "block_status", "other"

// Errors by kind: the errno families a client can act on.
enum class IoErrorKind : uint8_t {
  kIo,       // EIO: the device failed
  kNoSpace,  // ENOSPC, EDQUOT: the pool (or volume end) is full
  kInvalid,  // EINVAL, ERANGE, EOVERFLOW: a request the volume cannot take
  kDenied,   // EPERM, EROFS, EACCES: read-only volume or pool
  kNoMem,    // ENOMEM: the server was short of memory for it
  kOther,
  kCount
};
const char* IoErrorKindName(IoErrorKind k);  // "io", "no_space", "invalid", "denied", ...
IoErrorKind IoErrorKindOf(int32_t neg_errno);

struct IoStatsSlot {
  // Latency buckets' upper bounds: 100 µs .. 1 s (10 finite buckets, then +Inf). Few on purpose:
  // a scrape carries them for every volume and operation (docs/observability.md).
  static constexpr int kBuckets = 10;
  static constexpr uint64_t kBoundsNs[kBuckets] = {
      100'000,   250'000,    500'000,    1'000'000,   2'500'000,
      5'000'000, 10'000'000, 25'000'000, 100'000'000, 1'000'000'000};
  static constexpr int kClasses = static_cast<int>(IoClass::kCount);
  static constexpr int kErrorKinds = static_cast<int>(IoErrorKind::kCount);

  std::atomic<uint64_t> ops[kClasses] = {};
  std::atomic<uint64_t> bytes[kClasses] = {};
  std::atomic<uint64_t> errors[kErrorKinds] = {};
  std::atomic<uint64_t> hist[kClasses][kBuckets + 1] = {};
  std::atomic<uint64_t> latency_ns[kClasses] = {};  // sum
  std::atomic<uint64_t> queue_ns = {};              // sum of time held by the scheduler stage
  std::atomic<int64_t> inflight = {};

  static int Bucket(uint64_t ns) {
    int i = 0;
    while (i < kBuckets && ns > kBoundsNs[i]) ++i;
    return i;
  }
};

// The sum of a volume's slots, at one scrape.
struct IoStatsTotals {
  uint64_t ops[IoStatsSlot::kClasses] = {};
  uint64_t bytes[IoStatsSlot::kClasses] = {};
  uint64_t errors[IoStatsSlot::kErrorKinds] = {};
  uint64_t hist[IoStatsSlot::kClasses][IoStatsSlot::kBuckets + 1] = {};
  uint64_t latency_ns[IoStatsSlot::kClasses] = {};
  uint64_t queue_ns = 0;
  int64_t inflight = 0;
  void Add(const IoStatsSlot& s);
};

class VolumeIoStats {
 public:
  VolumeIoStats();
  ~VolumeIoStats();
  VolumeIoStats(const VolumeIoStats&) = delete;
  VolumeIoStats& operator=(const VolumeIoStats&) = delete;

  // A slot for one writer; give it back with Detach (its figures stay in the totals).
  IoStatsSlot* Attach();
  void Detach(IoStatsSlot* slot);
  IoStatsSlot* shared() { return &shared_; }

  // One request begins / ends. `bytes` counts for reads and writes only (a discard's length is
  // not data moved). `latency_ns` from the frontend's arrival to its reply; `result` 0 or -errno.
  static void Begin(IoStatsSlot* s, bool one_writer) { Bump<int64_t>(s->inflight, 1, one_writer); }
  static void Record(IoStatsSlot* s, bool one_writer, IoClass c, uint64_t bytes, int32_t result,
                     uint64_t latency_ns, uint64_t queue_ns);

  IoStatsTotals Sum() const;
  size_t live_slots() const;

 private:
  template <typename T>
  static void Bump(std::atomic<T>& a, T n, bool one_writer) {
    if (one_writer) {
      a.store(a.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    } else {
      a.fetch_add(n, std::memory_order_relaxed);
    }
  }

  mutable std::mutex mu_;
  std::vector<std::unique_ptr<IoStatsSlot>> live_;  // guarded by mu_
  IoStatsTotals retired_;                           // guarded by mu_
  IoStatsSlot shared_;
};

}  // namespace spd
