#include "replica/dirty_map.h"

#include <cstddef>
#include <cstring>

#include "common/log.h"
#include "replica/activity_log.h"
#include "volume/pool.h"

namespace spd {
namespace {

uint64_t WordsFor(uint64_t size_bytes) {
  return (size_bytes / DirtyMap::kUnitBytes + 64) / 64;  // a unit more than needed: never 0
}

size_t BytesFor(uint64_t size_bytes) {
  return sizeof(DirtyFileHeader) + WordsFor(size_bytes) * sizeof(uint64_t);
}

void InitHeader(DirtyFileHeader* h, uint64_t size_bytes) {
  const uint64_t tag = h->open_tag;  // the file's claim stays (MappedFile::Claim)
  std::memset(h, 0, sizeof *h);
  h->open_tag = tag;
  std::memcpy(h->magic, kDirtyFileMagic, sizeof h->magic);
  h->version = kReplicationFileVersion;
  h->size_bytes = size_bytes;
  h->unit_bytes = DirtyMap::kUnitBytes;
  h->words = WordsFor(size_bytes);
}

}  // namespace

void PersistActivity(Volume* v, const std::string& dir, const std::string& name) {
  if (dir.empty()) return;
  const std::string path = ActivityRecordPath(dir, name);
  Status st = MakeDirectories(dir);
  if (st.ok()) st = v->replica_activity.Persist(path);
  if (!st.ok())
    SPD_LOG_WARN("replication: volume %s: activity record kept in memory only: %s", name.c_str(),
                 st.ToString().c_str());
}

ReplicaActivity::Snapshot PriorActivity(Volume* v, const std::string& dir, const std::string& name,
                                        uint64_t fence_before) {
  PersistActivity(v, dir, name);
  ReplicaActivity::Snapshot s = v->replica_activity.Take();
  if (s.epoch != 0 || !s.left_open || dir.empty()) return s;
  const ActivityLog::Contents log = ActivityLog::Read(ActivityLogPath(dir, name));
  ReplicaActivity::Snapshot from_log;
  // A later term's hello accepted here (a higher fence): its writes are in no log.
  if (log.epoch != fence_before ||
      !ActivityLog::AsRecord(log, ReplicaActivity::kEntriesMax, &from_log))
    return s;
  from_log.left_open = true;
  from_log.losses = s.losses;
  SPD_LOG_INFO(
      "replication: volume %s: its record was lost with the power; its activity log of "
      "epoch %llu stands for it (%zu ranges of 64 KiB units)",
      name.c_str(), static_cast<unsigned long long>(from_log.epoch), from_log.ranges.size());
  return from_log;
}

DirtyMap::DirtyMap(uint64_t size_bytes) { Init(size_bytes); }

void DirtyMap::Init(uint64_t size_bytes) {
  units_ = (size_bytes + kUnitBytes - 1) / kUnitBytes;
  heap_ = std::make_unique<uint8_t[]>(BytesFor(size_bytes));  // zeroed: invalid, no bits
  h_ = reinterpret_cast<DirtyFileHeader*>(heap_.get());
  words_ = reinterpret_cast<uint64_t*>(heap_.get() + sizeof(DirtyFileHeader));
  InitHeader(h_, size_bytes);
}

Status DirtyMap::Open(const std::string& path, uint64_t size_bytes) {
  bool existed = false;
  Result<MappedFile> f = MappedFile::Open(path, BytesFor(size_bytes), &existed);
  if (!f.ok()) return f.status();
  auto* fh = reinterpret_cast<DirtyFileHeader*>(f->data());
  // Left open by a boot that ended (a power loss): bits set since it was opened may not have
  // been written back, so it is not used (replica_activity_format.h).
  Result<MappedFile::LastOpener> last = f->Claim(offsetof(DirtyFileHeader, open_tag));
  if (!last.ok()) return last.status();
  // A map of a smaller volume (this one grew: its file was shorter, extended with zeros by the
  // open) is this one's with the new units clean, as Grow would have made it.
  const bool grew = fh->size_bytes < size_bytes && fh->words == WordsFor(fh->size_bytes) &&
                    BytesFor(fh->size_bytes) <= f->size();
  const bool usable = (existed || grew) && *last != MappedFile::LastOpener::kAnotherBoot &&
                      std::memcmp(fh->magic, kDirtyFileMagic, sizeof fh->magic) == 0 &&
                      fh->version == kReplicationFileVersion && fh->size_bytes <= size_bytes &&
                      fh->unit_bytes == kUnitBytes && fh->words == WordsFor(fh->size_bytes) &&
                      fh->pending == 0;
  if (!usable) {
    fh->valid = 0;
    InitHeader(fh, size_bytes);
    std::memset(f->data() + sizeof *fh, 0, f->size() - sizeof *fh);
  } else if (fh->size_bytes < size_bytes) {
    // The words past the old ones are the open's zeros (the file ended there); the header
    // last, so that a crash before it leaves the old map, grown again at the next open.
    std::memset(f->data() + BytesFor(fh->size_bytes), 0, f->size() - BytesFor(fh->size_bytes));
    fh->words = WordsFor(size_bytes);
    fh->size_bytes = size_bytes;
  }
  units_ = (size_bytes + kUnitBytes - 1) / kUnitBytes;
  file_ = std::move(*f);
  heap_.reset();
  h_ = fh;
  words_ = reinterpret_cast<uint64_t*>(file_.data() + sizeof(DirtyFileHeader));
  return Status::Ok();
}

Status DirtyMap::Grow(uint64_t size_bytes) {
  if (size_bytes <= h_->size_bytes) return Status::Ok();
  const size_t old_bytes = BytesFor(h_->size_bytes);
  const size_t new_bytes = BytesFor(size_bytes);
  uint8_t* base = nullptr;
  if (file_.mapped()) {
    if (Status st = file_.Grow(new_bytes); !st.ok()) return st;
    base = file_.data();
  } else {
    auto bigger = std::make_unique<uint8_t[]>(new_bytes);  // zeroed
    std::memcpy(bigger.get(), heap_.get(), old_bytes);
    heap_ = std::move(bigger);
    base = heap_.get();
  }
  std::memset(base + old_bytes, 0, new_bytes - old_bytes);  // the new units: clean
  h_ = reinterpret_cast<DirtyFileHeader*>(base);
  words_ = reinterpret_cast<uint64_t*>(base + sizeof(DirtyFileHeader));
  h_->words = WordsFor(size_bytes);
  h_->size_bytes = size_bytes;
  units_ = (size_bytes + kUnitBytes - 1) / kUnitBytes;
  return Status::Ok();
}

void DirtyMap::Reset(uint64_t epoch, const Ranges& units, bool pending) {
  h_->valid = 0;  // invalid while it changes: a crash in between copies the whole volume
  std::memset(words_, 0, h_->words * sizeof(uint64_t));
  for (const ReplicaActivity::Range& r : units) MarkUnits(r.first, r.units);
  h_->epoch = epoch;
  h_->pending = pending ? 1 : 0;
  h_->valid = 1;
}

void DirtyMap::Carry(uint64_t epoch, const Ranges& units) {
  // The units first: a crash in between leaves the old term's map with more bits, never the
  // new term's with fewer.
  for (const ReplicaActivity::Range& r : units) MarkUnits(r.first, r.units);
  h_->epoch = epoch;
}

void DirtyMap::Resolve(const Ranges& units) {
  for (const ReplicaActivity::Range& r : units) MarkUnits(r.first, r.units);
  h_->pending = 0;
}

void DirtyMap::Invalidate() {
  h_->valid = 0;
  h_->pending = 0;
  std::memset(words_, 0, h_->words * sizeof(uint64_t));
}

void DirtyMap::Mark(uint64_t offset, uint64_t length) {
  if (length == 0) return;
  const uint64_t first = offset / kUnitBytes;
  MarkUnits(first, (offset + length - 1) / kUnitBytes - first + 1);
}

void DirtyMap::MarkUnits(uint64_t first, uint64_t units) {
  for (uint64_t u = first; u < first + units && u / 64 < h_->words; ++u)
    words_[u / 64] |= 1ull << (u % 64);
}

uint64_t DirtyMap::NextDirty(uint64_t unit) const {
  while (unit < units_) {
    const uint64_t w = words_[unit / 64] >> (unit % 64);
    if (w != 0) {
      unit += static_cast<uint64_t>(__builtin_ctzll(w));
      return unit < units_ ? unit : units_;
    }
    unit = (unit / 64 + 1) * 64;
  }
  return units_;
}

uint64_t DirtyMap::Count() const {
  uint64_t n = 0;
  for (uint64_t i = 0; i < h_->words; ++i)
    n += static_cast<uint64_t>(__builtin_popcountll(words_[i]));
  return n;
}

}  // namespace spd
