#include "volume/volume_stats.h"

#include <algorithm>
#include <cerrno>

namespace spd {

const char* IoClassName(IoClass c) {
  switch (c) {
    case IoClass::kRead:
      return "read";
    case IoClass::kWrite:
      return "write";
    case IoClass::kFlush:
      return "flush";
    case IoClass::kDiscard:
      return "discard";
    case IoClass::kBlockStatus:
      return "block_status";
    case IoClass::kOther:
    case IoClass::kCount:
      break;
  }
  return "other";
}

const char* IoErrorKindName(IoErrorKind k) {
  switch (k) {
    case IoErrorKind::kIo:
      return "io";
    case IoErrorKind::kNoSpace:
      return "no_space";
    case IoErrorKind::kInvalid:
      return "invalid";
    case IoErrorKind::kDenied:
      return "denied";
    case IoErrorKind::kNoMem:
      return "no_memory";
    case IoErrorKind::kOther:
    case IoErrorKind::kCount:
      break;
  }
  return "other";
}

IoErrorKind IoErrorKindOf(int32_t neg_errno) {
  switch (-neg_errno) {
    case EIO:
      return IoErrorKind::kIo;
    case ENOSPC:
    case EDQUOT:
      return IoErrorKind::kNoSpace;
    case EINVAL:
    case ERANGE:
    case EOVERFLOW:
      return IoErrorKind::kInvalid;
    case EPERM:
    case EROFS:
    case EACCES:
      return IoErrorKind::kDenied;
    case ENOMEM:
      return IoErrorKind::kNoMem;
    default:
      return IoErrorKind::kOther;
  }
}

void IoStatsTotals::Add(const IoStatsSlot& s) {
  constexpr auto r = std::memory_order_relaxed;
  for (int c = 0; c < IoStatsSlot::kClasses; ++c) {
    ops[c] += s.ops[c].load(r);
    bytes[c] += s.bytes[c].load(r);
    latency_ns[c] += s.latency_ns[c].load(r);
    for (int b = 0; b <= IoStatsSlot::kBuckets; ++b) hist[c][b] += s.hist[c][b].load(r);
  }
  for (int k = 0; k < IoStatsSlot::kErrorKinds; ++k) errors[k] += s.errors[k].load(r);
  queue_ns += s.queue_ns.load(r);
  inflight += s.inflight.load(r);
}

VolumeIoStats::VolumeIoStats() = default;
VolumeIoStats::~VolumeIoStats() = default;

IoStatsSlot* VolumeIoStats::Attach() {
  auto slot = std::make_unique<IoStatsSlot>();
  IoStatsSlot* p = slot.get();
  std::lock_guard<std::mutex> l(mu_);
  live_.push_back(std::move(slot));
  return p;
}

void VolumeIoStats::Detach(IoStatsSlot* slot) {
  if (slot == nullptr) return;
  std::lock_guard<std::mutex> l(mu_);
  auto it =
      std::find_if(live_.begin(), live_.end(), [&](const auto& p) { return p.get() == slot; });
  if (it == live_.end()) return;
  retired_.Add(*slot);
  // A connection that closed with requests never answered (a half-received write) leaves none
  // in flight.
  retired_.inflight -= slot->inflight.load(std::memory_order_relaxed);
  *it = std::move(live_.back());
  live_.pop_back();
}

void VolumeIoStats::Record(IoStatsSlot* s, bool one_writer, IoClass c, uint64_t bytes,
                           int32_t result, uint64_t latency_ns, uint64_t queue_ns) {
  const auto i = static_cast<int>(c);
  Bump<uint64_t>(s->ops[i], 1, one_writer);
  if (bytes > 0) Bump(s->bytes[i], bytes, one_writer);
  if (result < 0) Bump<uint64_t>(s->errors[static_cast<int>(IoErrorKindOf(result))], 1, one_writer);
  Bump<uint64_t>(s->hist[i][IoStatsSlot::Bucket(latency_ns)], 1, one_writer);
  Bump(s->latency_ns[i], latency_ns, one_writer);
  if (queue_ns > 0) Bump(s->queue_ns, queue_ns, one_writer);
  Bump<int64_t>(s->inflight, -1, one_writer);
}

IoStatsTotals VolumeIoStats::Sum() const {
  std::lock_guard<std::mutex> l(mu_);
  IoStatsTotals t = retired_;
  for (const auto& s : live_) t.Add(*s);
  t.Add(shared_);
  return t;
}

size_t VolumeIoStats::live_slots() const {
  std::lock_guard<std::mutex> l(mu_);
  return live_.size();
}

}  // namespace spd
