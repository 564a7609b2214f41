// The on-disk form of a copy's activity record (replica_activity.h) and of a primary's dirty
// map of a replica (replica/dirty_map.h): files under DATA_DIR/replication/, mapped shared, so
// every store is in the page cache at once and survives the process (docs/replication.md,
// "Persisted state"). Little-endian, native alignment.
//
// VOLUME.activity:
//   ActivityFileHeader (128 bytes), then ActivityFileEntry[entries_max] (a ring: head, count).
// VOLUME.dirty.NODE:
//   DirtyFileHeader (128 bytes), then uint64_t words[words]: bit u % 64 of word u / 64 is unit u
//   (unit_bytes each) of the volume.
//
// Crash order: a record is made incomplete (flags) before anything else of it changes and marked
// complete again last, so a process killed between two stores leaves a record that vouches for
// nothing rather than one that vouches wrongly; likewise a dirty map is made invalid first.
// Power loss: the kernel writes pages back in no order, so `open_tag` (MappedFile::Claim) names
// the boot that has the file open, written back when opened and zeroed, after everything else
// was written back, when closed in order. A file found open by another boot vouches for nothing
// (no record; the map invalid: the whole volume is copied). Files of before the tag have 0 there.
#pragma once

#include <cstddef>
#include <cstdint>

namespace spd {

inline constexpr char kActivityFileMagic[8] = {'S', 'P', 'D', 'A', 'C', 'T', '0', '1'};
inline constexpr char kDirtyFileMagic[8] = {'S', 'P', 'D', 'D', 'R', 'T', '0', '1'};
inline constexpr uint32_t kReplicationFileVersion = 1;  // of VOLUME.dirty.NODE
// Of VOLUME.activity: 2 added the power-loss counts (a file of version 1 is taken as no
// record, once, after an upgrade: a failover then resyncs that copy whole).
inline constexpr uint32_t kActivityFileVersion = 2;

struct ActivityFileHeader {
  char magic[8];
  uint32_t version;
  uint32_t flags;  // kActivityFlag*
  uint64_t epoch;  // the term the record is of (0: none)
  uint64_t head;   // ring index of the oldest entry
  uint64_t count;  // entries in the ring
  uint64_t entries_max;
  uint64_t max_seq;  // the highest message number of `epoch` applied (0 in records of old versions)
  uint64_t open_tag;  // the boot and claim that has the file open; 0: closed in order
  // Power losses: how many times a process found the file left open by a boot that ended
  // (counted, and written back, before the process answers any primary); how many of them a
  // resync that ended on the copy made good. losses > losses_resynced: the copy may lack what
  // it had not made durable (ReplicaActivity::Snapshot::left_open). Not part of the record:
  // they stay when a new term or a reset starts one.
  uint64_t losses;
  uint64_t losses_resynced;
  uint8_t reserved[48];
};
inline constexpr uint32_t kActivityFlagComplete = 1;  // the record vouches for its term
inline constexpr uint32_t kActivityFlagPrimary = 2;   // this copy was the term's primary
// The copy is being resynced in this term: it holds only part of it until the primary's last
// barrier of the copy (which clears the flag).
inline constexpr uint32_t kActivityFlagResyncing = 4;
// A write failed on this copy in this term: it may lack what it acknowledged (Spoil).
inline constexpr uint32_t kActivityFlagSpoiled = 8;

struct ActivityFileEntry {
  uint64_t seq;
  uint32_t first_unit;
  uint32_t units;
};

struct DirtyFileHeader {
  char magic[8];
  uint32_t version;
  uint32_t valid;       // 1: the bits are what the replica may lack; 0: copy the whole volume
  uint64_t epoch;       // the primary's term that keeps the map
  uint64_t size_bytes;  // of the volume
  uint64_t unit_bytes;
  uint64_t words;
  uint32_t pending;  // 1: waits for the replica's own record (ReplicaSet, prior_pending): not
                     // usable by another process
  uint32_t reserved;
  uint64_t open_tag;  // as in ActivityFileHeader
  // The copy the map is of (replica_wire::HelloReplyBody::copy_id; 0: not known yet). A replica
  // that answers with another copy lacks more than the map says (a new disk).
  uint64_t copy_id;
  uint8_t reserved2[56];
};

static_assert(sizeof(ActivityFileHeader) == 128);
static_assert(offsetof(ActivityFileHeader, epoch) == 16);
static_assert(offsetof(ActivityFileHeader, entries_max) == 40);
static_assert(offsetof(ActivityFileHeader, max_seq) == 48);
static_assert(offsetof(ActivityFileHeader, open_tag) == 56);
static_assert(offsetof(ActivityFileHeader, losses) == 64);
static_assert(sizeof(ActivityFileEntry) == 16);
static_assert(sizeof(DirtyFileHeader) == 128);
static_assert(offsetof(DirtyFileHeader, epoch) == 16);
static_assert(offsetof(DirtyFileHeader, words) == 40);
static_assert(offsetof(DirtyFileHeader, pending) == 48);
static_assert(offsetof(DirtyFileHeader, open_tag) == 56);
static_assert(offsetof(DirtyFileHeader, copy_id) == 64);

}  // namespace spd
