#include "replica/activity_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "common/crc32c.h"
#include "common/log.h"
#include "io/file_util.h"

namespace spd {
namespace {

constexpr char kMagic[8] = {'S', 'P', 'D', 'A', 'L', 'O', 'G', '1'};
constexpr uint32_t kVersion = 1;

uint32_t SlotCrc(const uint8_t* slot, uint32_t count) {
  ActivityLogHeader h;
  std::memcpy(&h, slot, sizeof h);
  h.crc = 0;
  return Crc32c(Crc32c(0, &h, sizeof h), slot + sizeof h, size_t{count} * sizeof(uint32_t));
}

}  // namespace

void ActivityLog::Encode(uint64_t snap, uint64_t epoch, const std::vector<uint32_t>& units,
                         uint8_t out[kSlotBytes]) {
  std::memset(out, 0, kSlotBytes);
  ActivityLogHeader h{};
  std::memcpy(h.magic, kMagic, sizeof h.magic);
  h.version = kVersion;
  h.snap = snap;
  h.epoch = epoch;
  h.unit_bytes = kUnitBytes;
  h.count = static_cast<uint32_t>(std::min<size_t>(units.size(), kUnitsMax));
  std::memcpy(out + sizeof h, units.data(), size_t{h.count} * sizeof(uint32_t));
  std::memcpy(out, &h, sizeof h);
  h.crc = SlotCrc(out, h.count);
  std::memcpy(out, &h, sizeof h);
}

ActivityLog::Contents ActivityLog::Read(const std::string& path) {
  Contents best;
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return best;
  std::vector<uint8_t> buf(2 * kSlotBytes);
  const int64_t got = PreadFull(fd, buf.data(), buf.size(), 0);
  close(fd);
  for (int s = 0; s < 2 && got > 0; ++s) {
    if (static_cast<uint64_t>(got) < (s + 1) * uint64_t{kSlotBytes}) break;
    const uint8_t* slot = buf.data() + s * kSlotBytes;
    ActivityLogHeader h;
    std::memcpy(&h, slot, sizeof h);
    if (std::memcmp(h.magic, kMagic, sizeof kMagic) != 0 || h.version != kVersion ||
        h.unit_bytes != kUnitBytes || h.count > kUnitsMax || h.crc != SlotCrc(slot, h.count))
      continue;  // never written, torn, or of another format
    if (best.valid && h.snap <= best.snap) continue;
    best.valid = true;
    best.snap = h.snap;
    best.epoch = h.epoch;
    best.units.resize(h.count);
    std::memcpy(best.units.data(), slot + sizeof h, size_t{h.count} * sizeof(uint32_t));
  }
  std::sort(best.units.begin(), best.units.end());
  best.whole = !best.units.empty() && best.units.back() == kWholeVolume;
  return best;
}

bool ActivityLog::AsRecord(const Contents& c, size_t ranges_max, ReplicaActivity::Snapshot* out) {
  if (!c.valid || c.whole || c.epoch == 0) return false;
  std::vector<ReplicaActivity::Range> r;
  r.reserve(c.units.size());
  for (const uint32_t u : c.units) r.push_back({u, 1});
  r = MergeRanges(std::move(r));
  if (r.size() > ranges_max) return false;
  out->epoch = c.epoch;
  out->complete = true;
  out->primary = true;
  out->ranges = std::move(r);
  return true;
}

Result<std::unique_ptr<ActivityLog>> ActivityLog::Open(const std::string& path, Reactor* owner,
                                                       uint64_t epoch, uint32_t window_units) {
  if (window_units < kWindowMin || window_units > kUnitsMax)
    return InvalidArgument("activity log window of " + std::to_string(window_units) +
                           " units: want " + std::to_string(kWindowMin) + ".." +
                           std::to_string(kUnitsMax));
  const Contents before = Read(path);
  BackendOptions bo;
  bo.kind = ChooseBackendKind(BackendKind::kUring, *owner);
  bo.path = path;
  bo.size_bytes = 2 * kSlotBytes;
  bo.create = true;
  bo.buffered = true;
  bo.queue_depth_max = 2;
  Result<std::unique_ptr<IoBackend>> b = OpenBackend(bo, owner);
  if (!b.ok()) return b.status();
  std::unique_ptr<ActivityLog> log(new ActivityLog());
  log->backend_ = std::move(b).value();
  void* mem = nullptr;
  if (posix_memalign(&mem, 4096, kSlotBytes) != 0) return Internal("out of memory");
  log->buf_.reset(static_cast<uint8_t*>(mem));
  log->window_ = window_units;
  log->epoch_ = epoch;
  // Numbers go on from the file's: the highest valid snapshot is the log.
  log->snap_ = log->durable_snap_ = before.valid ? before.snap : 0;
  log->units_.reserve(window_units * 2);
  log->list_.reserve(window_units);
  return log;
}

ActivityLog::~ActivityLog() = default;

void ActivityLog::MakeRoom(uint64_t durable_below) {
  for (size_t i = 0; i < list_.size();) {
    auto it = units_.find(list_[i]);
    const Entry& e = it->second;
    if (e.snap != 0 && e.snap <= durable_snap_ && e.last_seq < durable_below) {
      units_.erase(it);
      list_[i] = list_.back();
      list_.pop_back();
    } else {
      ++i;
    }
  }
}

void ActivityLog::Span(uint64_t* first, uint64_t* last) const {
  if (*last >= kWholeVolume || *last - *first + 1 > window_ / 4) *first = *last = kWholeVolume;
}

ActivityLog::Need ActivityLog::Admit(uint64_t first, uint64_t last, uint64_t durable_below) {
  Span(&first, &last);
  uint64_t missing = 0;
  bool wait = false;
  for (uint64_t u = first; u <= last; ++u) {
    auto it = units_.find(static_cast<uint32_t>(u));
    if (it == units_.end()) {
      ++missing;
    } else if (it->second.snap == 0 || it->second.snap > durable_snap_) {
      wait = true;
    }
  }
  if (missing == 0) return wait ? Need::kWait : Need::kCovered;
  if (units_.size() + missing > window_) {
    // A scan that found no room finds none again until a flush or the watermark moved
    // durable_below, or a snapshot became durable (writes waiting for room retry often).
    if (durable_below == full_below_ && durable_snap_ == full_snap_) return Need::kFull;
    MakeRoom(durable_below);
    if (units_.size() + missing > window_) {
      full_below_ = durable_below;
      full_snap_ = durable_snap_;
      return Need::kFull;
    }
  }
  for (uint64_t u = first; u <= last; ++u) {
    const auto unit = static_cast<uint32_t>(u);
    if (units_.emplace(unit, Entry{UINT64_MAX, 0}).second) {
      list_.push_back(unit);
      added_.push_back(unit);
    }
  }
  return Need::kWait;
}

void ActivityLog::Touch(uint64_t first, uint64_t last, uint64_t seq) {
  Span(&first, &last);
  for (uint64_t u = first; u <= last; ++u) {
    auto it = units_.find(static_cast<uint32_t>(u));
    if (it == units_.end()) continue;  // cannot be: Admit said covered
    Entry& e = it->second;
    if (e.last_seq == UINT64_MAX || seq > e.last_seq) e.last_seq = seq;
  }
}

void ActivityLog::Write(void (*done)(void* ctx, bool ok), void* ctx) {
  writing_ = true;
  done_ = done;
  done_ctx_ = ctx;
  const uint64_t snap = ++snap_;
  for (const uint32_t u : added_)
    if (auto it = units_.find(u); it != units_.end()) it->second.snap = snap;
  added_.clear();
  Encode(snap, epoch_, list_, buf_.get());
  io_ = BackendIo{};
  io_.op = IoOp::kWrite;
  io_.flags = kIoFua;
  io_.offset_bytes = (snap & 1) * kSlotBytes;
  io_.length_bytes = kSlotBytes;
  io_.buf = buf_.get();
  io_.ctx = this;
  io_.done = &ActivityLog::OnWritten;
  backend_->Submit(&io_);
}

void ActivityLog::OnWritten(BackendIo* io) {
  auto* log = static_cast<ActivityLog*>(io->ctx);
  log->writing_ = false;
  const bool ok = io->result >= 0;
  const uint64_t snap = log->snap_;
  if (ok) {
    log->durable_snap_ = snap;
    ++log->written_;
  } else {
    // Not durable: its new units wait for the next snapshot, which goes to the same slot again
    // (the other one holds the last durable snapshot: it must stay until one after it is).
    log->snap_ = log->durable_snap_;
    for (auto& [u, e] : log->units_)
      if (e.snap == snap) {
        e.snap = 0;
        log->added_.push_back(u);
      }
  }
  log->done_(log->done_ctx_, ok);
}

}  // namespace spd
