// libspdr's private types, shared by libspdr.cc and watch.cc.
#pragma once

#include "health/health_format.h"
#include "spd/libspdr.h"

struct spdr_cache {
  void* base = nullptr;
  size_t bytes = 0;
  const spd::health::HealthHeader* header = nullptr;
  const spd::health::SensorRecord* records = nullptr;
  uint32_t capacity = 0;
};

struct spdr_sensor {
  const spdr_cache* cache = nullptr;
  uint32_t index = 0;
};

namespace spdr_internal {

// Sensors published now, never more than the segment holds.
uint32_t Count(const spdr_cache* c);
// One consistent copy of record i: spins (with a CPU pause) up to `attempts` times, 0: forever.
// No system call. False when attempts ran out.
bool ReadRecord(const spdr_cache* c, uint32_t i, spdr_reading* out, uint32_t attempts);
uint64_t MonotonicNs();
// The status a reader gives the record: as written, or stale when it is older than
// kStalePeriods of its periods (or never read). *age_ns: UINT64_MAX when never read.
int JudgeStatus(const spdr_cache* c, const spdr_reading& r, uint64_t now_ns, uint64_t* age_ns);

}  // namespace spdr_internal
