// ActivityLog: a primary's durable record of the 64 KiB units in which its own copy may differ
// from its replicas' should it lose power (docs/replication.md, "The primary's activity log").
//
// The activity record (volume/replica_activity.h) is a mapped file: it survives a killed
// process, not a power cut. What a primary that lost power may lack or hold in excess is wider
// than what it had in flight: writes complete everywhere that its own pool had not made durable
// are gone from its copy too. This log covers both: a unit is written to it, durably, before
// any write to that unit is numbered (sent anywhere or applied here), and leaves it only once
// every write to it is durable on this copy (a flush completed after it) and complete on every
// in-sync copy (below the watermark). At most `window` units are in it (DRBD's activity log
// makes the same trade with 4 MiB extents); a write to a new unit beyond that waits until a
// flush of this copy lets older units go.
//
// The file holds two slots of kSlotBytes; each write puts a whole snapshot (every unit in the
// log) into the slot after the last one with FUA, and a snapshot is valid when its checksum
// holds. Read takes the valid snapshot with the highest number: a torn write leaves the slot
// before it, which covers every write numbered until then (a write waits for the snapshot that
// holds its unit). A snapshot that removed units is as good a cover as the one before it: the
// units it dropped needed none.
//
// Thread-safety: Open, Read from any thread; the rest on the owner's thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "io/io_backend.h"
#include "volume/replica_activity.h"

namespace spd {

struct ActivityLogHeader {
  char magic[8];
  uint32_t version;
  uint32_t crc;    // crc32c of the header (this field 0) and its count units
  uint64_t snap;   // the snapshot's number: the highest valid one is the log
  uint64_t epoch;  // the term whose primary wrote it
  uint32_t unit_bytes;
  uint32_t count;  // units that follow (uint32_t each)
  uint8_t reserved[24];
};
static_assert(sizeof(ActivityLogHeader) == 64);

// Where a volume's activity log is kept under a node's replication state directory.
inline std::string ActivityLogPath(const std::string& dir, const std::string& volume) {
  return dir + "/" + volume + ".alog";
}

class ActivityLog {
 public:
  static constexpr uint32_t kSlotBytes = 8192;
  static constexpr uint64_t kUnitBytes = 64 << 10;
  static constexpr uint32_t kUnitsMax = (kSlotBytes - sizeof(ActivityLogHeader)) / 4;  // 2032
  static constexpr uint32_t kWindowMin = 16;

  // The unit that stands for the whole volume: a request wider than a quarter of the window is
  // logged as it (a power loss while it is in the log copies the whole volume back).
  static constexpr uint32_t kWholeVolume = UINT32_MAX;
  struct Contents {
    bool valid = false;
    bool whole = false;  // kWholeVolume is in it
    uint64_t epoch = 0;
    uint64_t snap = 0;
    std::vector<uint32_t> units;  // sorted
  };
  // The log in `path` as a process after a power loss finds it; invalid when there is none.
  static Contents Read(const std::string& path);
  // What a log read back says of its term, as a record would (ReplicaActivity::Snapshot: that
  // epoch, complete, this copy its primary, its units as ranges): every unit in which this
  // copy may differ from that term's other copies. False (nothing set) when it cannot say: no
  // valid log, "the whole volume" in it, or more ranges than `ranges_max`.
  static bool AsRecord(const Contents& c, size_t ranges_max, ReplicaActivity::Snapshot* out);
  // A slot's bytes for a snapshot (tests write torn and stale slots with it).
  static void Encode(uint64_t snap, uint64_t epoch, const std::vector<uint32_t>& units,
                     uint8_t out[kSlotBytes]);

  // Opens (creating) `path` for the term `epoch`, its writes through a backend on `owner`.
  // window_units: kWindowMin..kUnitsMax.
  static Result<std::unique_ptr<ActivityLog>> Open(const std::string& path, Reactor* owner,
                                                   uint64_t epoch, uint32_t window_units);
  ~ActivityLog();

  enum class Need {
    kCovered,  // every unit is in a durable snapshot
    kWait,     // some are on their way: write the log (Write) and wait for it
    kFull,     // no room for a unit: a flush of this copy must let older ones go first
  };
  // Units [first, last] of a request about to be numbered. Adds the missing ones, all or
  // none (reserved until Touch), making room from units whose writes are all numbered below
  // `durable_below` (durable on this copy and complete on every in-sync one).
  Need Admit(uint64_t first, uint64_t last, uint64_t durable_below);
  // The request was numbered `seq`.
  void Touch(uint64_t first, uint64_t last, uint64_t seq);
  // Units added and not yet in a snapshot on its way.
  bool pending() const { return !added_.empty(); }
  bool writing() const { return writing_; }
  // Writes a snapshot of every unit in the log; `done(ctx, ok)` on the owner once it is durable
  // or failed (its new units are then pending again). REQUIRES: !writing().
  void Write(void (*done)(void* ctx, bool ok), void* ctx);
  size_t units() const { return units_.size(); }
  uint32_t window() const { return window_; }
  uint64_t snapshots_written() const { return written_; }

 private:
  ActivityLog() = default;
  static void OnWritten(BackendIo* io);
  void MakeRoom(uint64_t durable_below);
  // [first, last] as the log keeps it: the units, or kWholeVolume alone.
  void Span(uint64_t* first, uint64_t* last) const;
  struct Entry {
    uint64_t last_seq = 0;  // the newest write numbered to it (UINT64_MAX: reserved)
    uint64_t snap = 0;      // the first snapshot that holds it (0: none yet)
  };
  std::unordered_map<uint32_t, Entry> units_;
  // The same units in a flat list (a snapshot copies it as it is), and those added since the
  // last snapshot was numbered.
  std::vector<uint32_t> list_;
  std::vector<uint32_t> added_;
  uint32_t window_ = 0;
  uint64_t epoch_ = 0;
  uint64_t snap_ = 0;          // the last snapshot numbered
  uint64_t durable_snap_ = 0;  // the last one known written
  // The last scan for room that found too little was at these (Admit).
  uint64_t full_below_ = UINT64_MAX;
  uint64_t full_snap_ = UINT64_MAX;
  bool writing_ = false;
  uint64_t written_ = 0;
  std::unique_ptr<IoBackend> backend_;
  BackendIo io_;
  std::unique_ptr<uint8_t, void (*)(void*)> buf_{nullptr, &std::free};
  void (*done_)(void*, bool) = nullptr;
  void* done_ctx_ = nullptr;
};

}  // namespace spd
