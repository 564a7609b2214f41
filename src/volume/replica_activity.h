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
// The primary keeps one too, of its own writes (Begin with primary = true): after it crashes or
// restarts, what it had in flight is in it.
//
// Persist puts the record in a file mapped shared (replica_activity_format.h): every store is in
// the page cache at once, so a killed process leaves its record behind, complete or not, and the
// next process of this node reads it back. A power cut keeps only what the kernel wrote back
// (docs/replication.md, "Persisted state").
//
// Thread-safety: every call from any thread (a mutex; one uncontended lock per applied write).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/mapped_file.h"
#include "common/status.h"
#include "volume/replica_activity_format.h"

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
    uint64_t epoch = 0;      // the term the record is of (0: none)
    bool complete = false;   // see above
    bool primary = false;    // this copy was that term's primary
    bool resyncing = false;  // a resync of that term had not ended on this copy
    bool spoiled = false;    // a write failed on this copy in that term
    // A process of this node found the record left open by a boot that ended (a power loss
    // or a kernel crash: replica_activity_format.h), and no resync has ended on this copy
    // since: it may lack what it had not made durable then. Kept in the file: a restart of
    // the daemon before the resync does not forget it.
    bool left_open = false;
    // How many such power losses the copy had, ever (kept in the file; 0 in memory only).
    uint64_t losses = 0;
    uint64_t max_seq = 0;       // the highest message of that term applied here
    uint64_t first_seq = 0;     // the lowest message the record holds (0: none)
    std::vector<Range> ranges;  // sorted, disjoint, not adjacent
  };

  // Keeps the record in `path` from now on: a valid record there (of an earlier process) is
  // taken as this one's if this one has none yet; otherwise the file gets this one. Idempotent
  // for the same path. On failure the record stays in memory.
  Status Persist(const std::string& path);
  // The file the record is kept in ("" in memory).
  std::string path() const;

  // A session of `epoch` was accepted on this copy (or this copy became its primary: `primary`):
  // a newer epoch starts a fresh, complete record; the same epoch keeps the one it has (a
  // reconnection within the term).
  // `resyncing`: the session resyncs this copy (the record says so until ResyncEnded).
  // A new term with `primary` ends left_open: the copy is that term's.
  void Begin(uint64_t epoch, bool primary = false, bool resyncing = false);
  // The resync of `epoch` ended on this copy (its last barrier is durable): it holds the term
  // (neither resyncing nor spoiled; the record stays incomplete: it missed entries), and
  // whatever a power loss took before is back (left_open ends).
  void ResyncEnded(uint64_t epoch);
  // Before applying message `seq` of `epoch` to [offset, offset + length).
  void Record(uint64_t epoch, uint64_t seq, uint64_t offset, uint64_t length);
  // Every message of `epoch` below `seq` is on every in-sync copy: its records go.
  void Trim(uint64_t epoch, uint64_t seq);
  Snapshot Take() const;
  // What a hello of `epoch` is answered with: Take(), unless a session of that epoch began the
  // record (Begin) and nothing of it was applied since: then the record that Begin replaced (a
  // primary whose first reply was lost hears at its next hello what the first one said). In
  // memory only: a restart in between answers with the fresh record.
  Snapshot TakeForHello(uint64_t epoch) const;
  // The copy lost track of what it holds (a write failed on it): the record vouches for nothing
  // until a new term begins.
  void Spoil();

 private:
  static constexpr size_t kBytes =
      sizeof(ActivityFileHeader) + kEntriesMax * sizeof(ActivityFileEntry);
  // REQUIRES: mu_ held. Memory for a record, on first use (most volumes never replicate).
  void EnsureMemory();
  // REQUIRES: mu_ held. The record's fields; its ranges not yet merged (Take merges them).
  Snapshot TakeLocked(std::vector<Range>* ranges) const;
  // The record the last Begin of a new epoch replaced (TakeForHello), and that epoch.
  Snapshot replaced_;
  uint64_t replaced_by_ = 0;
  mutable std::mutex mu_;
  // The record: a header and a ring of at most kEntriesMax entries in the order applied (the
  // primary's order), in heap_ or in file_; null until first used.
  ActivityFileHeader* h_ = nullptr;
  ActivityFileEntry* ring_ = nullptr;
  std::unique_ptr<uint8_t[]> heap_;
  MappedFile file_;
};

// Merges `ranges` (any order, overlapping) into sorted, disjoint, non-adjacent ones.
std::vector<ReplicaActivity::Range> MergeRanges(std::vector<ReplicaActivity::Range> ranges);

}  // namespace spd
