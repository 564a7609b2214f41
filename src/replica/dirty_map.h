// DirtyMap: what a replica may lack, as a bit per 64 KiB unit of the volume, kept by the primary
// (docs/replication.md, "What is copied"). Valid or not: an invalid map means "copy the whole
// volume". In memory, or in a file mapped shared (Open; volume/replica_activity_format.h): every
// bit set is then in the page cache at once, and the next process of this node can resume the
// resync from it after a crash or a restart (ReplicaSetOptions::state_dir).
//
// Thread-safety: none; the owning reactor's.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/mapped_file.h"
#include "common/status.h"
#include "volume/replica_activity.h"
#include "volume/replica_activity_format.h"

namespace spd {

class Volume;

// Keeps `v`'s activity record (Volume::replica_activity) in DIR/NAME.activity from now on,
// taking over what an earlier process of this node left there. Logged when it cannot (the record
// stays in memory). Idempotent.
void PersistActivity(Volume* v, const std::string& dir, const std::string& name);
// Where a copy's activity record is kept (DIR/VOLUME.activity), and where a primary keeps its
// dirty map of the copy on node `node` (DIR/VOLUME.dirty.NODE; "" for a node name that could
// name a path outside DIR: empty, ".", ".." or with a '/'; the names come from etcd).
inline std::string ActivityRecordPath(const std::string& dir, const std::string& volume) {
  return dir + "/" + volume + ".activity";
}
inline std::string DirtyMapPath(const std::string& dir, const std::string& volume,
                                const std::string& node) {
  if (node.empty() || node == "." || node == ".." || node.find('/') != std::string::npos) return "";
  return dir + "/" + volume + ".dirty." + node;
}
// What this copy applied last in its previous term, for a primary of a new term
// (ReplicaSetOptions::prior): its record (PersistActivity first). After a power loss the record
// vouches for nothing; if this node's activity log (DIR/NAME.alog) is valid and of the last term
// the copy took part in (`fence_before`: its fence before the new term's), the log stands for
// it: the term it was the primary of, every unit in which its copy may differ from that term's
// others (replica/activity_log.h).
ReplicaActivity::Snapshot PriorActivity(Volume* v, const std::string& dir, const std::string& name,
                                        uint64_t fence_before);

class DirtyMap {
 public:
  static constexpr uint64_t kUnitBytes = 64 << 10;

  // In memory, for a volume of size_bytes; invalid.
  explicit DirtyMap(uint64_t size_bytes = 0);
  // Keeps the map in `path` for a volume of size_bytes. A valid map found there (same unit, of
  // the same size or of a smaller volume that grew since: Grow) is loaded as it stands;
  // otherwise the file starts invalid.
  Status Open(const std::string& path, uint64_t size_bytes);
  // The volume grew to size_bytes: the units past the old end start clean (the copies grow
  // before anything is written there: they hold its zeros), the rest as it was. A smaller or
  // equal size changes nothing. On failure (the file could not grow) the map is as it was.
  Status Grow(uint64_t size_bytes);
  bool persisted() const { return file_.mapped(); }

  bool valid() const { return h_->valid != 0; }
  uint64_t epoch() const { return h_->epoch; }
  // The copy of the volume the map is of (replica_wire::HelloReplyBody::copy_id; 0: unknown).
  // Kept through Reset, Carry and Resolve; a new or unusable file starts with 0.
  uint64_t copy_id() const { return h_->copy_id; }
  void set_copy_id(uint64_t id) { h_->copy_id = id; }
  using Ranges = std::vector<ReplicaActivity::Range>;
  // Valid, holding only `units`, kept by the primary of `epoch`. `pending`: more units are to
  // come (Resolve) before it is all the replica lacks; until then no other process may use it.
  void Reset(uint64_t epoch, const Ranges& units, bool pending);
  // Not valid (the whole volume is copied); the bits are cleared.
  void Invalidate();
  // The map goes on into the primary term `epoch` with `units` more (a restarted primary
  // resuming it, with what it had in flight).
  void Carry(uint64_t epoch, const Ranges& units);
  // The units that were to come: the map is complete.
  void Resolve(const Ranges& units);

  // REQUIRES for the bit operations: valid().
  void Mark(uint64_t offset, uint64_t length);
  void MarkUnits(uint64_t first, uint64_t units);
  bool IsDirty(uint64_t unit) const {
    return unit / 64 < h_->words && (words_[unit / 64] >> (unit % 64)) & 1;
  }
  void Clear(uint64_t unit) {
    if (unit / 64 < h_->words) words_[unit / 64] &= ~(1ull << (unit % 64));
  }
  // The first dirty unit at or after `unit` (units() when none).
  uint64_t NextDirty(uint64_t unit) const;
  uint64_t Count() const;
  uint64_t units() const { return units_; }

 private:
  void Init(uint64_t size_bytes);
  uint64_t units_ = 0;
  DirtyFileHeader* h_ = nullptr;
  uint64_t* words_ = nullptr;
  std::unique_ptr<uint8_t[]> heap_;
  MappedFile file_;
};

}  // namespace spd
