// libspdr: caches, sensors and snapshots. No exceptions (built with -fno-exceptions), no
// allocation after open, and no system call on the read path.
#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <new>

#include "libspdr/spdr_internal.h"

namespace h = spd::health;

static_assert(SPDR_STATUS_STALE == int(h::SensorStatus::kStale));
static_assert(SPDR_STATUS_FAILED == int(h::SensorStatus::kFailed));
static_assert(SPDR_KIND_NVME_POWER_ON_HOURS == int(h::SensorKind::kNvmePowerOnHours));
static_assert(SPDR_UNIT_BITMASK == int(h::SensorUnit::kBitmask));
static_assert(SPDR_HAS_LCRIT == h::kHasLcrit && SPDR_HAS_MIN == h::kHasMin);
static_assert(SPDR_NAME_MAX == h::kSensorNameMax);

namespace spdr_internal {
namespace {

inline void CpuPause() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

}  // namespace

uint32_t Count(const spdr_cache* c) {
  const uint32_t n = c->header->sensor_count.load(std::memory_order_acquire);
  return n < c->capacity ? n : c->capacity;
}

bool ReadRecord(const spdr_cache* c, uint32_t i, spdr_reading* out, uint32_t attempts) {
  const h::SensorRecord& rec = c->records[i];
  h::SensorSample s;
  for (uint32_t n = 0; !h::TryReadSample(rec, &s); ++n) {
    if (attempts != 0 && n + 1 >= attempts) return false;
    CpuPause();
  }
  out->index = i;
  out->status = int32_t(s.status);
  out->value = s.value;
  out->value_si = double(s.value) * h::UnitScale(static_cast<h::SensorUnit>(rec.unit));
  out->min = s.min;
  out->max = s.max;
  out->crit = s.crit;
  out->lcrit = s.lcrit;
  out->threshold_mask = s.threshold_mask;
  out->last_errno = s.last_errno;
  out->updated_monotonic_ns = s.updated_monotonic_ns;
  out->updated_realtime_ns = s.updated_realtime_ns;
  return true;
}

uint64_t MonotonicNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1'000'000'000ull + uint64_t(ts.tv_nsec);
}

int JudgeStatus(const spdr_cache* c, const spdr_reading& r, uint64_t now_ns, uint64_t* age_ns) {
  const uint64_t period = c->records[r.index].period_ns;
  if (r.updated_monotonic_ns == 0) {
    *age_ns = UINT64_MAX;
    return r.status == SPDR_STATUS_FAILED ? SPDR_STATUS_FAILED : SPDR_STATUS_STALE;
  }
  *age_ns = now_ns > r.updated_monotonic_ns ? now_ns - r.updated_monotonic_ns : 0;
  if (r.status != SPDR_STATUS_FAILED && *age_ns > h::kStalePeriods * period) {
    return SPDR_STATUS_STALE;
  }
  return r.status;
}

}  // namespace spdr_internal

using namespace spdr_internal;  // NOLINT(google-build-using-namespace): this file's own helpers

namespace {

int MapCache(int fd, spdr_cache** out) {
  struct stat st {};
  if (fstat(fd, &st) != 0) return SPDR_ESYS;
  if (size_t(st.st_size) < sizeof(h::HealthHeader)) return SPDR_EFORMAT;
  void* base = mmap(nullptr, size_t(st.st_size), PROT_READ, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) return SPDR_ESYS;
  const auto* hdr = static_cast<const h::HealthHeader*>(base);
  const bool ok =
      hdr->magic.load(std::memory_order_acquire) == h::kHealthMagic &&
      hdr->version == h::kHealthFormatVersion && hdr->header_bytes == sizeof(h::HealthHeader) &&
      hdr->record_bytes == sizeof(h::SensorRecord) && hdr->sensors_capacity <= h::kSensorsMax &&
      h::SegmentBytes(hdr->sensors_capacity) <= uint64_t(st.st_size);
  if (!ok) {
    munmap(base, size_t(st.st_size));
    return SPDR_EFORMAT;
  }
  auto* c = new (std::nothrow) spdr_cache;
  if (c == nullptr) {
    munmap(base, size_t(st.st_size));
    return SPDR_ENOMEM;
  }
  c->base = base;
  c->bytes = size_t(st.st_size);
  c->header = hdr;
  c->records = reinterpret_cast<const h::SensorRecord*>(hdr + 1);
  c->capacity = hdr->sensors_capacity;
  *out = c;
  return SPDR_OK;
}

int OpenFd(int fd, spdr_cache** out) {
  if (fd < 0) return errno == ENOENT ? SPDR_ENOENT : SPDR_ESYS;
  const int rc = MapCache(fd, out);
  const int saved = errno;
  close(fd);
  errno = saved;
  return rc;
}

void FillInfo(const spdr_cache* c, uint32_t i, spdr_sensor_info* out) {
  const h::SensorRecord& r = c->records[i];
  out->index = i;
  out->kind = r.kind;
  out->unit = r.unit;
  out->period_ns = r.period_ns;
  out->name = r.name;
  out->pci_location = r.pci_location;
  out->channel = r.channel;
  out->label = r.label;
}

// "pcie/<pci_location>/<item of the name>"
bool MatchesPciAlias(const h::SensorRecord& r, const char* name) {
  if (r.pci_location[0] == '\0' || std::strncmp(name, "pcie/", 5) != 0) return false;
  const char* item = std::strrchr(r.name, '/');
  if (item == nullptr) return false;
  char alias[h::kSensorNameMax + 32];
  std::snprintf(alias, sizeof(alias), "pcie/%.*s%s", int(sizeof(r.pci_location)), r.pci_location,
                item);
  return std::strcmp(alias, name) == 0;
}

}  // namespace

extern "C" {

int spdr_cache_open(const char* shm_name, spdr_cache** out) {
  if (out == nullptr) return SPDR_EINVAL;
  return OpenFd(shm_open(shm_name ? shm_name : SPDR_DEFAULT_SHM_NAME, O_RDONLY, 0), out);
}

int spdr_cache_open_path(const char* path, spdr_cache** out) {
  if (path == nullptr || out == nullptr) return SPDR_EINVAL;
  return OpenFd(open(path, O_RDONLY | O_CLOEXEC), out);
}

void spdr_cache_close(spdr_cache* cache) {
  if (cache == nullptr) return;
  munmap(cache->base, cache->bytes);
  delete cache;
}

uint32_t spdr_sensor_count(const spdr_cache* cache) { return cache ? Count(cache) : 0; }

int spdr_sensor_info_at(const spdr_cache* cache, uint32_t index, spdr_sensor_info* out) {
  if (cache == nullptr || out == nullptr || index >= Count(cache)) return SPDR_EINVAL;
  FillInfo(cache, index, out);
  return SPDR_OK;
}

uint64_t spdr_cache_heartbeat_ns(const spdr_cache* cache) {
  return cache ? cache->header->heartbeat_monotonic_ns.load(std::memory_order_acquire) : 0;
}

int spdr_sensor_open(spdr_cache* cache, const char* name, spdr_sensor** out) {
  if (cache == nullptr || name == nullptr || out == nullptr) return SPDR_EINVAL;
  const uint32_t n = Count(cache);
  for (uint32_t i = 0; i < n; ++i) {
    const h::SensorRecord& r = cache->records[i];
    if (std::strncmp(r.name, name, sizeof(r.name)) != 0 && !MatchesPciAlias(r, name)) continue;
    auto* s = new (std::nothrow) spdr_sensor;
    if (s == nullptr) return SPDR_ENOMEM;
    s->cache = cache;
    s->index = i;
    *out = s;
    return SPDR_OK;
  }
  return SPDR_ENOENT;
}

void spdr_sensor_close(spdr_sensor* sensor) { delete sensor; }

int spdr_sensor_info_get(const spdr_sensor* sensor, spdr_sensor_info* out) {
  if (sensor == nullptr || out == nullptr) return SPDR_EINVAL;
  FillInfo(sensor->cache, sensor->index, out);
  return SPDR_OK;
}

int spdr_sensor_read_cached(const spdr_sensor* sensor, spdr_reading* out, unsigned flags) {
  if (sensor == nullptr || out == nullptr || (flags & ~SPDR_READ_NO_BLOCK) != 0) {
    return SPDR_EINVAL;
  }
  const uint32_t attempts = (flags & SPDR_READ_NO_BLOCK) ? 64 : 0;
  return ReadRecord(sensor->cache, sensor->index, out, attempts) ? SPDR_OK : SPDR_EAGAIN;
}

int spdr_sensor_status(const spdr_sensor* sensor, int* status, uint64_t* age_ns) {
  if (sensor == nullptr) return SPDR_EINVAL;
  spdr_reading r;
  ReadRecord(sensor->cache, sensor->index, &r, 0);
  uint64_t age = 0;
  const int st = JudgeStatus(sensor->cache, r, MonotonicNs(), &age);
  if (status != nullptr) *status = st;
  if (age_ns != nullptr) *age_ns = age;
  return SPDR_OK;
}

int spdr_snapshot(const spdr_cache* cache, spdr_reading* readings, uint32_t capacity,
                  uint32_t* count, uint64_t* generation) {
  if (cache == nullptr || count == nullptr || (readings == nullptr && capacity != 0)) {
    return SPDR_EINVAL;
  }
  const uint32_t n = Count(cache);
  *count = n;
  if (n > capacity) return SPDR_ERANGE;
  // A poll round takes microseconds; after a few spins, yield to let the writer finish it.
  constexpr int kAttempts = 1000;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    if (attempt >= 16) sched_yield();
    const uint64_t g1 = cache->header->generation.load(std::memory_order_acquire);
    if (g1 & 1) continue;
    bool ok = true;
    for (uint32_t i = 0; i < n && ok; ++i) ok = ReadRecord(cache, i, &readings[i], 64);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (ok && cache->header->generation.load(std::memory_order_relaxed) == g1) {
      if (generation != nullptr) *generation = g1;
      return SPDR_OK;
    }
  }
  return SPDR_EAGAIN;
}

const char* spdr_status_name(int status) {
  switch (status) {
    case SPDR_STATUS_OK:
      return "ok";
    case SPDR_STATUS_WARNING:
      return "warning";
    case SPDR_STATUS_CRITICAL:
      return "critical";
    case SPDR_STATUS_STALE:
      return "stale";
    case SPDR_STATUS_FAILED:
      return "failed";
    default:
      return "unknown";
  }
}

const char* spdr_unit_name(int unit) {
  static const char* const kNames[] = {"",  "C", "RPM",   "V",     "A",      "W",
                                       "J", "%", "count", "hours", "bitmask"};
  return unit >= 0 && unit <= SPDR_UNIT_BITMASK ? kNames[unit] : "";
}

const char* spdr_strerror(int error) {
  switch (error) {
    case SPDR_OK:
      return "ok";
    case SPDR_EINVAL:
      return "invalid argument";
    case SPDR_ENOENT:
      return "no such cache or sensor";
    case SPDR_EAGAIN:
      return "busy, try again";
    case SPDR_EFORMAT:
      return "not a health cache of a known version";
    case SPDR_ESYS:
      return "system call failed (see errno)";
    case SPDR_ENOMEM:
      return "out of memory";
    case SPDR_ERANGE:
      return "array too small";
    default:
      return "unknown error";
  }
}

}  // extern "C"
