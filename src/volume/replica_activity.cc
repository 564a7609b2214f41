#include "volume/replica_activity.h"

#include <algorithm>
#include <cstddef>
#include <cstring>

namespace spd {
namespace {

// A header with no record. The file's claim (MappedFile::Claim) and power-loss counts stay.
void InitHeader(ActivityFileHeader* h) {
  const uint64_t tag = h->open_tag;
  const uint64_t losses = h->losses;
  const uint64_t resynced = h->losses_resynced;
  std::memset(h, 0, sizeof *h);
  h->open_tag = tag;
  h->losses = losses;
  h->losses_resynced = resynced;
  std::memcpy(h->magic, kActivityFileMagic, sizeof h->magic);
  h->version = kActivityFileVersion;
  h->entries_max = ReplicaActivity::kEntriesMax;
}

bool HeaderValid(const ActivityFileHeader* h) {
  return std::memcmp(h->magic, kActivityFileMagic, sizeof h->magic) == 0 &&
         h->version == kActivityFileVersion && h->entries_max == ReplicaActivity::kEntriesMax &&
         h->head < h->entries_max && h->count <= h->entries_max;
}

}  // namespace

void ReplicaActivity::EnsureMemory() {
  if (h_ != nullptr) return;
  heap_ = std::make_unique<uint8_t[]>(kBytes);
  h_ = reinterpret_cast<ActivityFileHeader*>(heap_.get());
  ring_ = reinterpret_cast<ActivityFileEntry*>(heap_.get() + sizeof(ActivityFileHeader));
  std::memset(h_, 0, sizeof *h_);
  InitHeader(h_);
}

Status ReplicaActivity::Persist(const std::string& path) {
  std::lock_guard<std::mutex> l(mu_);
  if (file_.mapped() && file_.path() == path) return Status::Ok();
  bool existed = false;
  Result<MappedFile> f = MappedFile::Open(path, kBytes, &existed);
  if (!f.ok()) return f.status();
  auto* fh = reinterpret_cast<ActivityFileHeader*>(f->data());
  // Left open by a boot that ended (a power loss): the pages it holds are any mix of what was
  // stored, so it vouches for nothing (replica_activity_format.h).
  Result<MappedFile::LastOpener> last = f->Claim(offsetof(ActivityFileHeader, open_tag));
  if (!last.ok()) return last.status();
  const bool another_boot = *last == MappedFile::LastOpener::kAnotherBoot;
  // The power-loss counts, from a valid header (a file of an older version has none).
  uint64_t losses = 0;
  uint64_t resynced = 0;
  if (existed && HeaderValid(fh)) {
    losses = fh->losses;
    resynced = std::min(fh->losses_resynced, losses);
  }
  if (another_boot) ++losses;
  const bool mine = h_ != nullptr && h_->epoch != 0;
  if (mine) {
    // This process has a record already: the file gets it (incomplete while it is copied).
    fh->flags = 0;
    std::memcpy(f->data() + sizeof(ActivityFileHeader), ring_, kEntriesMax * sizeof *ring_);
    const uint32_t flags = h_->flags;
    ActivityFileHeader copy = *h_;
    copy.flags = 0;
    copy.open_tag = fh->open_tag;
    std::memcpy(fh, &copy, sizeof copy);
    fh->flags = flags;
  } else if (!existed || !HeaderValid(fh) || another_boot) {
    InitHeader(fh);  // flags 0: no record, vouches for nothing
  }
  fh->losses = losses;
  fh->losses_resynced = resynced;
  // A new loss is on the disk before any primary hears of this copy: counted once only, and
  // never below what a primary saw at an earlier hello (replica_wire::HelloReplyBody::losses).
  if (another_boot) {
    if (Status st = f->Sync(); !st.ok()) return st;
  }
  file_ = std::move(*f);
  heap_.reset();
  h_ = fh;
  ring_ = reinterpret_cast<ActivityFileEntry*>(file_.data() + sizeof(ActivityFileHeader));
  return Status::Ok();
}

std::string ReplicaActivity::path() const {
  std::lock_guard<std::mutex> l(mu_);
  return file_.path();
}

void ReplicaActivity::Begin(uint64_t epoch, bool primary, bool resyncing) {
  std::lock_guard<std::mutex> l(mu_);
  EnsureMemory();
  if (epoch == h_->epoch) {
    if (resyncing) h_->flags |= kActivityFlagResyncing;
    return;
  }
  std::vector<Range> r;
  replaced_ = TakeLocked(&r);
  replaced_.ranges = MergeRanges(std::move(r));
  replaced_by_ = epoch;
  h_->flags = 0;  // incomplete first: a crash in between leaves a record that vouches for nothing
  h_->head = h_->count = 0;
  h_->max_seq = 0;
  h_->epoch = epoch;
  // The primary of a new term: its copy is the term's from now on, whatever a power loss took
  // from it before (the others are resynced to it).
  if (primary) h_->losses_resynced = h_->losses;
  h_->flags = kActivityFlagComplete | (primary ? kActivityFlagPrimary : 0) |
              (resyncing ? kActivityFlagResyncing : 0);
}

void ReplicaActivity::ResyncEnded(uint64_t epoch) {
  std::lock_guard<std::mutex> l(mu_);
  if (h_ != nullptr && h_->epoch == epoch) {
    h_->flags &= ~(kActivityFlagResyncing | kActivityFlagSpoiled);
    h_->losses_resynced = h_->losses;
  }
}

void ReplicaActivity::Record(uint64_t epoch, uint64_t seq, uint64_t offset, uint64_t length) {
  std::lock_guard<std::mutex> l(mu_);
  EnsureMemory();
  if (epoch != h_->epoch) {  // not a term this record follows: it cannot vouch for this copy
    h_->flags &= ~kActivityFlagComplete;
    return;
  }
  if (seq > h_->max_seq) h_->max_seq = seq;
  if (!(h_->flags & kActivityFlagComplete)) return;
  const uint64_t first = offset / kUnitBytes;
  const uint64_t last = length == 0 ? first : (offset + length - 1) / kUnitBytes;
  if (last >= UINT32_MAX || h_->count == kEntriesMax) {
    h_->flags &= ~kActivityFlagComplete;  // beyond 256 TiB, or more in flight than the ring holds
    return;
  }
  // The entry before the count that makes it part of the record.
  ring_[(h_->head + h_->count) % kEntriesMax] = {seq, static_cast<uint32_t>(first),
                                                 static_cast<uint32_t>(last - first + 1)};
  ++h_->count;
}

void ReplicaActivity::Trim(uint64_t epoch, uint64_t seq) {
  std::lock_guard<std::mutex> l(mu_);
  if (h_ == nullptr || epoch != h_->epoch) return;
  // The head before the count: a crash in between leaves one stale slot at the end of the
  // record (units that need no resync, or none), never a live entry dropped.
  while (h_->count > 0 && ring_[h_->head].seq < seq) {
    h_->head = (h_->head + 1) % kEntriesMax;
    --h_->count;
  }
}

void ReplicaActivity::Spoil() {
  std::lock_guard<std::mutex> l(mu_);
  if (h_ != nullptr) h_->flags = (h_->flags & ~kActivityFlagComplete) | kActivityFlagSpoiled;
}

ReplicaActivity::Snapshot ReplicaActivity::TakeLocked(std::vector<Range>* r) const {
  Snapshot s;
  if (h_ == nullptr) return s;
  s.losses = h_->losses;
  s.left_open = h_->losses > h_->losses_resynced;
  s.epoch = h_->epoch;
  s.complete = (h_->flags & kActivityFlagComplete) != 0;
  s.primary = (h_->flags & kActivityFlagPrimary) != 0;
  s.resyncing = (h_->flags & kActivityFlagResyncing) != 0;
  s.spoiled = (h_->flags & kActivityFlagSpoiled) != 0;
  s.max_seq = h_->max_seq;
  if (h_->count > 0) s.first_seq = ring_[h_->head].seq;
  if (!s.complete) return s;
  r->reserve(h_->count);
  for (size_t i = 0; i < h_->count; ++i) {
    const ActivityFileEntry& e = ring_[(h_->head + i) % kEntriesMax];
    r->push_back({e.first_unit, e.units});
  }
  return s;
}

ReplicaActivity::Snapshot ReplicaActivity::Take() const {
  std::vector<Range> r;
  Snapshot s;
  {
    std::lock_guard<std::mutex> l(mu_);
    s = TakeLocked(&r);
  }
  s.ranges = MergeRanges(std::move(r));
  return s;
}

ReplicaActivity::Snapshot ReplicaActivity::TakeForHello(uint64_t epoch) const {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (h_ != nullptr && replaced_by_ == epoch && h_->epoch == epoch && h_->max_seq == 0 &&
        h_->count == 0) {
      Snapshot s = replaced_;
      s.losses = h_->losses;
      s.left_open = h_->losses > h_->losses_resynced;
      return s;
    }
  }
  return Take();
}

std::vector<ReplicaActivity::Range> MergeRanges(std::vector<ReplicaActivity::Range> ranges) {
  using Range = ReplicaActivity::Range;
  std::sort(ranges.begin(), ranges.end(),
            [](const Range& a, const Range& b) { return a.first < b.first; });
  std::vector<Range> out;
  for (const Range& x : ranges) {
    if (x.units == 0) continue;
    const uint64_t end = uint64_t{x.first} + x.units;
    if (!out.empty() && uint64_t{out.back().first} + out.back().units >= x.first) {
      const uint64_t cur = uint64_t{out.back().first} + out.back().units;
      if (end > cur) out.back().units = static_cast<uint32_t>(end - out.back().first);
    } else {
      out.push_back(x);
    }
  }
  return out;
}

}  // namespace spd
