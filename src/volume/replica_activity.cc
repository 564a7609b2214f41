#include "volume/replica_activity.h"

#include <algorithm>

namespace spd {

void ReplicaActivity::Begin(uint64_t epoch) {
  std::lock_guard<std::mutex> l(mu_);
  if (epoch == epoch_) return;
  epoch_ = epoch;
  complete_ = true;
  head_ = count_ = 0;
}

void ReplicaActivity::Record(uint64_t epoch, uint64_t seq, uint64_t offset, uint64_t length) {
  std::lock_guard<std::mutex> l(mu_);
  if (epoch != epoch_) {  // not a term this record follows: it cannot vouch for this copy
    complete_ = false;
    return;
  }
  if (!complete_) return;
  const uint64_t first = offset / kUnitBytes;
  const uint64_t last = length == 0 ? first : (offset + length - 1) / kUnitBytes;
  if (last >= UINT32_MAX || count_ == kEntriesMax) {
    complete_ = false;  // a volume above 256 TiB, or more in flight than the ring holds
    return;
  }
  if (ring_.size() < kEntriesMax) ring_.resize(kEntriesMax);
  ring_[(head_ + count_) % kEntriesMax] = {seq, static_cast<uint32_t>(first),
                                           static_cast<uint32_t>(last - first + 1)};
  ++count_;
}

void ReplicaActivity::Trim(uint64_t epoch, uint64_t seq) {
  std::lock_guard<std::mutex> l(mu_);
  if (epoch != epoch_) return;
  while (count_ > 0 && ring_[head_].seq < seq) {
    head_ = (head_ + 1) % kEntriesMax;
    --count_;
  }
}

ReplicaActivity::Snapshot ReplicaActivity::Take() const {
  Snapshot s;
  std::vector<Range> r;
  {
    std::lock_guard<std::mutex> l(mu_);
    s.epoch = epoch_;
    s.complete = complete_;
    if (!complete_) return s;
    r.reserve(count_);
    for (size_t i = 0; i < count_; ++i) {
      const Entry& e = ring_[(head_ + i) % kEntriesMax];
      r.push_back({e.first, e.units});
    }
  }
  s.ranges = MergeRanges(std::move(r));
  return s;
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
