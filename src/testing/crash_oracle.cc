#include "testing/crash_oracle.h"

#include <cstring>

#include "common/assert.h"

namespace spd::testing {
namespace {

constexpr uint64_t kMagic = 0x5350443243525348ull;  // "SPD2CRSH"

uint64_t Mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}

}  // namespace

void FillSector(uint8_t* dst, uint32_t volume_tag, uint64_t sector, uint64_t write_id) {
  if (write_id == 0) {
    std::memset(dst, 0, kSectorBytes);
    return;
  }
  uint64_t words[kSectorBytes / 8];
  words[0] = kMagic;
  words[1] = volume_tag;
  words[2] = sector;
  words[3] = write_id;
  uint64_t seed = Mix(volume_tag ^ Mix(sector ^ Mix(write_id)));
  for (size_t i = 4; i < kSectorBytes / 8; ++i) words[i] = seed = Mix(seed + i);
  std::memcpy(dst, words, kSectorBytes);
}

uint64_t DecodeSector(const uint8_t* src, uint32_t volume_tag, uint64_t sector) {
  static const uint8_t kZero[kSectorBytes] = {};
  if (std::memcmp(src, kZero, kSectorBytes) == 0) return 0;
  uint64_t head[4];
  std::memcpy(head, src, sizeof head);
  if (head[0] != kMagic || head[1] != volume_tag || head[2] != sector || head[3] == 0)
    return UINT64_MAX;
  uint8_t expect[kSectorBytes];
  FillSector(expect, volume_tag, sector, head[3]);
  if (std::memcmp(src, expect, kSectorBytes) != 0) return UINT64_MAX;
  return head[3];
}

VolumeOracle::VolumeOracle(uint32_t volume_tag, uint64_t sectors) : tag_(volume_tag) {
  Grow(sectors);
}

void VolumeOracle::Grow(uint64_t sectors) {
  uint64_t old = history_.size();
  if (sectors <= old) return;
  history_.resize(sectors);
  durable_.resize(sectors, 0);
  for (uint64_t s = old; s < sectors; ++s) history_[s].push_back({0, 0});
}

void VolumeOracle::Completed(uint64_t first, uint64_t count, uint64_t write_id, bool durable) {
  SPD_ASSERT(first + count <= history_.size());
  uint64_t seq = ++completions_;
  for (uint64_t s = first; s < first + count; ++s) {
    history_[s].push_back({write_id, seq});
    if (durable) {
      durable_[s] = static_cast<uint32_t>(history_[s].size() - 1);
    } else {
      dirty_.push_back(s);
    }
  }
}

void VolumeOracle::Submitted(uint64_t first, uint64_t count, uint64_t write_id) {
  SPD_ASSERT(first + count <= history_.size());
  for (uint64_t s = first; s < first + count; ++s) {
    history_[s].push_back({write_id, UINT64_MAX});  // no FLUSH covers it until it finishes
    dirty_.push_back(s);
  }
}

void VolumeOracle::Finished(uint64_t first, uint64_t count, uint64_t write_id, bool durable) {
  const uint64_t seq = ++completions_;
  for (uint64_t s = first; s < first + count; ++s) {
    auto& h = history_[s];
    for (uint32_t i = static_cast<uint32_t>(h.size()); i-- > 0;) {
      if (h[i].write_id != write_id) continue;
      h[i].completion = seq;
      if (durable && i > durable_[s]) durable_[s] = i;
      break;
    }
  }
}

void VolumeOracle::MadeDurable(uint64_t first, uint64_t count, uint64_t write_id) {
  for (uint64_t s = first; s < first + count; ++s) {
    const auto& h = history_[s];
    for (uint32_t i = static_cast<uint32_t>(h.size()); i-- > durable_[s];) {
      if (h[i].write_id == write_id) {
        durable_[s] = i;
        break;
      }
    }
  }
}

void VolumeOracle::FlushCompleted(uint64_t seen) {
  std::vector<uint64_t> still_dirty;
  for (uint64_t s : dirty_) {
    const auto& h = history_[s];
    // The newest version that had completed when the flush was submitted is now durable.
    uint32_t idx = durable_[s];
    for (uint32_t i = idx; i < h.size(); ++i)
      if (h[i].completion <= seen) idx = i;
    durable_[s] = idx;
    if (idx + 1 < h.size()) still_dirty.push_back(s);
  }
  dirty_.swap(still_dirty);
}

std::vector<uint32_t> VolumeOracle::DurableSnapshot() const { return durable_; }

std::string VolumeOracle::Check(const std::vector<uint32_t>& snapshot, uint64_t sector,
                                uint64_t found) const {
  if (found == UINT64_MAX)
    return "sector " + std::to_string(sector) + " holds bytes no write of this volume put there";
  const auto& h = history_[sector];
  uint32_t from = sector < snapshot.size() ? snapshot[sector] : 0;
  for (uint32_t i = from; i < h.size(); ++i)
    if (h[i].write_id == found) return "";
  std::string allowed;
  for (uint32_t i = from; i < h.size(); ++i) allowed += " " + std::to_string(h[i].write_id);
  return "sector " + std::to_string(sector) + " holds write " + std::to_string(found) +
         ", allowed:" + allowed;
}

}  // namespace spd::testing
