// The health collector: reads every sensor that DiscoverSysfs finds and every NVMe drive it is
// given, each source (a hwmon chip, a thermal zone, a drive) at its own period, and writes the
// values and their status into the shared-memory cache (health_cache.h).
//
// Value files stay open; a poll is one pread per file (sysfs regenerates an attribute when it
// is read at offset 0). The thread sleeps until the next source is due, so an idle host costs
// one wake-up per period, not a spinning core; clients never cause a read (they read the cache).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/status.h"
#include "health/health_cache.h"
#include "health/health_format.h"
#include "health/nvme_source.h"
#include "health/sysfs_discovery.h"

namespace spd::health {

inline constexpr uint64_t kDefaultPeriodNs = 1'000'000'000;

struct CollectorOptions {
  std::string sysfs_root = "/sys";
  uint64_t period_ns = kDefaultPeriodNs;
  // Per-source periods: the first entry whose string begins the source's name wins
  // ("nvme/" for every drive, "hwmon/k10temp" for one chip). Others use period_ns.
  std::vector<std::pair<std::string, uint64_t>> periods;
  CacheOptions cache;
};

// The status a good reading has against its thresholds (those present in threshold_mask):
// critical at or above crit or below lcrit, warning at or above max or below min, else ok.
SensorStatus EvaluateThresholds(const SensorSample& s);
// Makes s stale when it has not been updated for kStalePeriods periods (failed stays failed).
void ApplyAge(SensorSample* s, uint64_t now_ns, uint64_t period_ns);

class Collector {
 public:
  // Discovers, opens every value file, publishes every sensor in a new cache. The NVMe sources
  // (real ones from OpenNvmeIoctlSource, or fixtures) are owned by the collector.
  static Result<std::unique_ptr<Collector>> Create(
      const CollectorOptions& options, std::vector<std::unique_ptr<NvmeHealthSource>> nvme = {});
  ~Collector();  // stops the thread
  Collector(const Collector&) = delete;
  Collector& operator=(const Collector&) = delete;

  // One round: reads the sources due at now_ns (CLOCK_MONOTONIC), or all of them.
  // REQUIRES: the thread is not running (tests drive time this way).
  void PollDue(uint64_t now_ns);
  void PollAll(uint64_t now_ns);
  // When the next source is due; UINT64_MAX with no source.
  uint64_t NextDueNs() const;

  // Polls on its own thread until Stop (or destruction). Thread-safe with respect to readers
  // of the cache; the collector's own methods belong to the thread that calls Start/Stop.
  [[nodiscard]] Status Start();
  void Stop();

  const HealthCacheWriter& cache() const { return *cache_; }
  size_t source_count() const { return sources_.size(); }
  uint64_t rounds() const { return rounds_.load(std::memory_order_relaxed); }
  uint64_t pread_calls() const { return preads_.load(std::memory_order_relaxed); }
  // Times the thread woke up: about one per due period, never a spin.
  uint64_t wakeups() const { return wakeups_.load(std::memory_order_relaxed); }
  // Channels found but not published (their value file could not be opened).
  uint32_t skipped_channels() const { return skipped_; }

  struct Channel;
  struct Source;

 private:
  Collector() = default;
  Status AddSysfsSource(const SourceSpec& spec, uint32_t source_index);
  Status AddNvmeSource(std::unique_ptr<NvmeHealthSource> nvme, uint32_t source_index);
  uint64_t PeriodFor(const std::string& source_name) const;
  void PollSource(Source& s, uint64_t now_ns, uint64_t realtime_ns);
  void PollSysfsChannel(Channel& c, uint64_t now_ns, uint64_t realtime_ns);
  void PollNvme(Source& s, uint64_t now_ns, uint64_t realtime_ns);
  int ReadInt(int fd, int64_t* value);
  void Run();

  CollectorOptions options_;
  std::unique_ptr<HealthCacheWriter> cache_;
  std::vector<std::unique_ptr<Source>> sources_;
  uint32_t skipped_ = 0;
  std::atomic<uint64_t> rounds_{0};
  std::atomic<uint64_t> preads_{0};
  std::atomic<uint64_t> wakeups_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // guarded by mu_
  std::thread thread_;
};

}  // namespace spd::health
