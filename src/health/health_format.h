// The host-health cache: the byte layout of the shared-memory segment that spd2's health
// collector writes and clients (libspdr) map read-only. docs/health_format.md is the prose
// version of this file; both change together, and any change to a byte's meaning bumps
// kHealthFormatVersion.
//
//   offset 0                       HealthHeader           256 bytes
//   offset 256                     SensorRecord[0]        256 bytes
//   offset 256 + 256 * i           SensorRecord[i]
//   ...                            up to sensors_capacity records (kSensorsMax at most)
//
// Every field that changes after publication is a lock-free std::atomic of 4 or 8 bytes, which
// on the platforms we build for (x86-64, aarch64) has the size, alignment and representation of
// the plain integer: a reader in another language reads them as aligned little-endian integers.
// Loads never write, so they work on a PROT_READ mapping.
//
// Two seqlocks make reads consistent without any lock or system call:
//  - SensorRecord::seq, per record: the writer makes it odd, writes the record's changing fields,
//    then makes it even again (WriteSample). A reader copies the fields between two loads of seq
//    and keeps the copy only if both loads saw the same even value (TryReadSample).
//  - HealthHeader::generation, over the whole table: odd while a poll round writes any record.
//    A reader that sees the same even generation before and after copying every record has a
//    snapshot of one instant (between two rounds).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace spd::health {

inline constexpr uint32_t kHealthMagic = 0x48445053;  // "SPDH" in little-endian bytes
inline constexpr uint32_t kHealthFormatVersion = 1;
// The most sensors one segment holds: a big server has a few hundred hwmon channels.
inline constexpr uint32_t kSensorsMax = 4096;
inline constexpr size_t kSensorNameMax = 96;   // with the terminating NUL
inline constexpr size_t kPciLocationMax = 16;  // "0000:01:00.0" and NUL
inline constexpr size_t kChannelMax = 16;      // "temp1", "fan12", "zone0", "spare"
inline constexpr size_t kLabelMax = 32;        // the raw sysfs label (truncated)
// The default POSIX shared-memory name (shm_open): /dev/shm/spd2-health on Linux.
inline constexpr char kDefaultShmName[] = "/spd2-health";

// What a sensor measures. Values are stable: they are part of the format.
enum class SensorKind : uint16_t {
  kUnknown = 0,
  kTemp = 1,                  // hwmon tempN
  kFan = 2,                   // hwmon fanN
  kIn = 3,                    // hwmon inN (voltage)
  kCurr = 4,                  // hwmon currN
  kPower = 5,                 // hwmon powerN
  kEnergy = 6,                // hwmon energyN
  kThermal = 7,               // a thermal zone's temp
  kNvmeTemp = 8,              // SMART composite temperature
  kNvmeAvailableSpare = 9,    // percent, lcrit = the drive's spare threshold
  kNvmePercentUsed = 10,      // percent of rated endurance used (may exceed 100)
  kNvmeCriticalWarning = 11,  // the SMART critical warning bits
  kNvmeMediaErrors = 12,      // media and data integrity errors (count)
  kNvmeUnsafeShutdowns = 13,  // count
  kNvmePowerOnHours = 14,     // hours
};

// The unit of value and of every threshold: the integer sysfs unit, so that a value is exactly
// what the kernel reported. SI value = value * scale (UnitScale).
enum class SensorUnit : uint16_t {
  kNone = 0,
  kMilliCelsius = 1,
  kRpm = 2,
  kMilliVolt = 3,
  kMilliAmp = 4,
  kMicroWatt = 5,
  kMicroJoule = 6,
  kPercent = 7,
  kCount = 8,
  kHours = 9,
  kBitmask = 10,
};

// Status of a record. kStale also means "never read yet" (updated_monotonic_ns == 0).
enum class SensorStatus : uint32_t {
  kOk = 0,
  kWarning = 1,   // at or beyond max (or at or below min)
  kCritical = 2,  // at or beyond crit (or at or below lcrit)
  kStale = 3,     // not updated for kStalePeriods periods
  kFailed = 4,    // the last read failed (last_errno says why); value is the last good one
};

// A record not updated for this many of its periods is stale (the writer applies it while it
// runs, a reader applies it with its own clock in case the writer stopped).
inline constexpr uint64_t kStalePeriods = 3;

// Bits of SensorRecord::threshold_mask: which thresholds the device has.
inline constexpr uint32_t kHasMin = 1u << 0;
inline constexpr uint32_t kHasMax = 1u << 1;
inline constexpr uint32_t kHasCrit = 1u << 2;
inline constexpr uint32_t kHasLcrit = 1u << 3;

struct HealthHeader {
  std::atomic<uint32_t> magic;  // kHealthMagic, stored last (release) when the segment is ready
  uint32_t version;             // kHealthFormatVersion
  uint32_t header_bytes;        // sizeof(HealthHeader)
  uint32_t record_bytes;        // sizeof(SensorRecord)
  uint32_t sensors_capacity;    // records the segment has room for
  // Records published so far; only grows. Record i < sensor_count has its identity written
  // (release here, acquire in readers) and never changes it.
  std::atomic<uint32_t> sensor_count;
  std::atomic<uint64_t> generation;              // table seqlock, odd during a poll round
  std::atomic<uint64_t> heartbeat_monotonic_ns;  // end of the writer's last round
  std::atomic<uint64_t> heartbeat_realtime_ns;
  uint64_t writer_pid;
  uint64_t created_realtime_ns;
  uint64_t total_bytes;  // header_bytes + sensors_capacity * record_bytes
  uint8_t reserved[184];
};

struct SensorRecord {
  // Changing fields, under seq.
  std::atomic<uint64_t> seq;
  std::atomic<int64_t> value;  // in `unit`; the last good value when status is kFailed
  std::atomic<int64_t> min;    // thresholds in `unit`, valid when threshold_mask says so
  std::atomic<int64_t> max;
  std::atomic<int64_t> crit;
  std::atomic<int64_t> lcrit;
  std::atomic<uint64_t> updated_monotonic_ns;  // last successful read; 0: never
  std::atomic<uint64_t> updated_realtime_ns;
  std::atomic<uint32_t> status;  // SensorStatus
  std::atomic<uint32_t> threshold_mask;
  std::atomic<int32_t> last_errno;     // of the last failed read, 0 after a good one
  std::atomic<uint32_t> update_count;  // successful reads, wraps
  // Identity, written before the record is published (sensor_count) and never changed.
  uint64_t period_ns;  // how often the collector reads it
  uint16_t kind;       // SensorKind
  uint16_t unit;       // SensorUnit
  uint32_t source_index;
  char name[kSensorNameMax];           // stable name, NUL-terminated (docs/health_format.md)
  char pci_location[kPciLocationMax];  // "0000:01:00.0" when sysfs maps one, else ""
  char channel[kChannelMax];           // sysfs channel: "temp1", "zone", "spare", ...
  char label[kLabelMax];               // the device's label, else ""
};

static_assert(std::atomic<uint64_t>::is_always_lock_free);
static_assert(std::atomic<int64_t>::is_always_lock_free);
static_assert(std::atomic<uint32_t>::is_always_lock_free);
static_assert(std::atomic<int32_t>::is_always_lock_free);
static_assert(sizeof(std::atomic<uint64_t>) == 8 && alignof(std::atomic<uint64_t>) == 8);
static_assert(sizeof(std::atomic<uint32_t>) == 4 && alignof(std::atomic<uint32_t>) == 4);
static_assert(std::is_standard_layout_v<HealthHeader>);
static_assert(std::is_standard_layout_v<SensorRecord>);
static_assert(sizeof(HealthHeader) == 256);
static_assert(offsetof(HealthHeader, sensors_capacity) == 16);
static_assert(offsetof(HealthHeader, sensor_count) == 20);
static_assert(offsetof(HealthHeader, generation) == 24);
static_assert(offsetof(HealthHeader, heartbeat_monotonic_ns) == 32);
static_assert(offsetof(HealthHeader, writer_pid) == 48);
static_assert(offsetof(HealthHeader, total_bytes) == 64);
static_assert(sizeof(SensorRecord) == 256);
static_assert(offsetof(SensorRecord, value) == 8);
static_assert(offsetof(SensorRecord, lcrit) == 40);
static_assert(offsetof(SensorRecord, updated_monotonic_ns) == 48);
static_assert(offsetof(SensorRecord, status) == 64);
static_assert(offsetof(SensorRecord, update_count) == 76);
static_assert(offsetof(SensorRecord, period_ns) == 80);
static_assert(offsetof(SensorRecord, kind) == 88);
static_assert(offsetof(SensorRecord, source_index) == 92);
static_assert(offsetof(SensorRecord, name) == 96);
static_assert(offsetof(SensorRecord, pci_location) == 192);
static_assert(offsetof(SensorRecord, channel) == 208);
static_assert(offsetof(SensorRecord, label) == 224);

inline constexpr uint64_t SegmentBytes(uint32_t capacity) {
  return sizeof(HealthHeader) + uint64_t{capacity} * sizeof(SensorRecord);
}

// A plain copy of a record's changing fields.
struct SensorSample {
  int64_t value = 0;
  int64_t min = 0;
  int64_t max = 0;
  int64_t crit = 0;
  int64_t lcrit = 0;
  uint64_t updated_monotonic_ns = 0;
  uint64_t updated_realtime_ns = 0;
  uint32_t status = static_cast<uint32_t>(SensorStatus::kStale);
  uint32_t threshold_mask = 0;
  int32_t last_errno = 0;
  uint32_t update_count = 0;
};

// Writer side of the record seqlock. REQUIRES: one writer per record.
inline void WriteSample(SensorRecord& r, const SensorSample& s) {
  constexpr auto kRelaxed = std::memory_order_relaxed;
  const uint64_t seq = r.seq.load(kRelaxed);
  r.seq.store(seq + 1, kRelaxed);
  // Orders the odd seq before the field stores: a reader that sees a new field also sees odd.
  std::atomic_thread_fence(std::memory_order_release);
  r.value.store(s.value, kRelaxed);
  r.min.store(s.min, kRelaxed);
  r.max.store(s.max, kRelaxed);
  r.crit.store(s.crit, kRelaxed);
  r.lcrit.store(s.lcrit, kRelaxed);
  r.updated_monotonic_ns.store(s.updated_monotonic_ns, kRelaxed);
  r.updated_realtime_ns.store(s.updated_realtime_ns, kRelaxed);
  r.status.store(s.status, kRelaxed);
  r.threshold_mask.store(s.threshold_mask, kRelaxed);
  r.last_errno.store(s.last_errno, kRelaxed);
  r.update_count.store(s.update_count, kRelaxed);
  r.seq.store(seq + 2, std::memory_order_release);
}

// Reader side: one attempt, false when the writer was inside the record (retry). No system call.
inline bool TryReadSample(const SensorRecord& r, SensorSample* out) {
  constexpr auto kRelaxed = std::memory_order_relaxed;
  const uint64_t seq = r.seq.load(std::memory_order_acquire);
  if (seq & 1) return false;
  out->value = r.value.load(kRelaxed);
  out->min = r.min.load(kRelaxed);
  out->max = r.max.load(kRelaxed);
  out->crit = r.crit.load(kRelaxed);
  out->lcrit = r.lcrit.load(kRelaxed);
  out->updated_monotonic_ns = r.updated_monotonic_ns.load(kRelaxed);
  out->updated_realtime_ns = r.updated_realtime_ns.load(kRelaxed);
  out->status = r.status.load(kRelaxed);
  out->threshold_mask = r.threshold_mask.load(kRelaxed);
  out->last_errno = r.last_errno.load(kRelaxed);
  out->update_count = r.update_count.load(kRelaxed);
  // Orders the field loads before the second seq load.
  std::atomic_thread_fence(std::memory_order_acquire);
  return r.seq.load(kRelaxed) == seq;
}

// Writer side of the table seqlock: every WriteSample of one round goes between the two.
inline void BeginRound(HealthHeader& h) {
  const uint64_t g = h.generation.load(std::memory_order_relaxed);
  h.generation.store(g + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
}
inline void EndRound(HealthHeader& h) {
  h.generation.store(h.generation.load(std::memory_order_relaxed) + 1, std::memory_order_release);
}

// SI value of v in unit u: degrees Celsius, RPM, volts, amperes, watts, joules, percent, ...
inline constexpr double UnitScale(SensorUnit u) {
  switch (u) {
    case SensorUnit::kMilliCelsius:
    case SensorUnit::kMilliVolt:
    case SensorUnit::kMilliAmp:
      return 1e-3;
    case SensorUnit::kMicroWatt:
    case SensorUnit::kMicroJoule:
      return 1e-6;
    default:
      return 1.0;
  }
}

}  // namespace spd::health
