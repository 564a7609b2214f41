// ReplicaActivity: what a replicated copy applied of its primary's most recent writes, so that
// after the primary dies the new primary resyncs the other copies only where they may differ
// (docs/replication.md, "Resync after a failover").
//
// The primary numbers its messages (seq) and tells, with each, the lowest number that may still
// be incomplete (the watermark: every message below it is on every in-sync copy). A copy records
// the 64 KiB units of every write, write-zeroes and discard it applies, with its number, and
// drops the records below the watermark. When the primary dies, two copies that were both in
// sync with it can differ only in writes it had in flight, and each such write is in the record
// of the copy that applied it: the union of the two records is all a resync must copy.
//
// A record is for one epoch (one primary's term) and complete only if it saw every write of that
// term this process applied since the term began here (Begin), with nothing dropped for want of
// room (kEntriesMax records above the watermark; a primary keeps at most 1,024 messages in flight
// by default). An incomplete one makes the new primary copy the whole volume, as before.
//
// Thread-safety: every call from any thread (a mutex; one uncontended lock per applied write).
#pragma once

#include <cstdint>
#include <mutex>
#include <vector>

namespace spd {

class ReplicaActivity {
 public:
  static constexpr uint64_t kUnitBytes = 64 << 10;
  static constexpr size_t kEntriesMax = 4096;
  // Units [first, first + units).
  struct Range {
    uint32_t first = 0;
    uint32_t units = 0;
  };
  struct Snapshot {
    uint64_t epoch = 0;         // the term the record is of (0: none)
    bool complete = false;      // see above
    std::vector<Range> ranges;  // sorted, disjoint, not adjacent
  };

  // A session of `epoch` was accepted on this copy: a newer epoch starts a fresh, complete
  // record; the same epoch keeps the one it has (a reconnection within the term).
  void Begin(uint64_t epoch);
  // Before applying message `seq` of `epoch` to [offset, offset + length).
  void Record(uint64_t epoch, uint64_t seq, uint64_t offset, uint64_t length);
  // Every message of `epoch` below `seq` is on every in-sync copy: its records go.
  void Trim(uint64_t epoch, uint64_t seq);
  Snapshot Take() const;

 private:
  struct Entry {
    uint64_t seq;
    uint32_t first;
    uint32_t units;
  };
  mutable std::mutex mu_;
  uint64_t epoch_ = 0;
  bool complete_ = false;
  // A ring of at most kEntriesMax, in the order applied (the primary's order).
  std::vector<Entry> ring_;
  size_t head_ = 0;
  size_t count_ = 0;
};

// Merges `ranges` (any order, overlapping) into sorted, disjoint, non-adjacent ones.
std::vector<ReplicaActivity::Range> MergeRanges(std::vector<ReplicaActivity::Range> ranges);

}  // namespace spd
