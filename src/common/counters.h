// Named monotonic counters and gauges: every failure path and every fallback increments one.
// They are process-wide, lock-free to update, and exported by telemetry (Prometheus text).
//
// Thread-safety: Add/Set from any thread; Snapshot from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace spd {

class Counter {
 public:
  // `name` follows Prometheus naming (spd_<box>_<what>_total). `help` is one line.
  // Counters are created once at static-init or start-up time and live forever.
  Counter(const char* name, const char* help);
  void Add(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }
  const char* name() const { return name_; }
  const char* help() const { return help_; }

 private:
  const char* name_;
  const char* help_;
  std::atomic<uint64_t> value_{0};
};

// A value that goes up and down (bytes in use, connections open), exported as a Prometheus
// gauge. Lock-free like Counter.
class Gauge {
 public:
  Gauge(const char* name, const char* help);
  void Add(int64_t n) { value_.fetch_add(n, std::memory_order_relaxed); }
  int64_t value() const { return value_.load(std::memory_order_relaxed); }
  const char* name() const { return name_; }
  const char* help() const { return help_; }

 private:
  const char* name_;
  const char* help_;
  std::atomic<int64_t> value_{0};
};

// A latency histogram: buckets with upper bounds 1 us, 2 us, 4 us, ... 2^23 us (about 8.4 s) and
// +Inf, rendered in seconds as a Prometheus histogram (NAME_bucket{le=...}, NAME_sum,
// NAME_count). Observe() is lock-free and can be called from any thread.
class Histogram {
 public:
  static constexpr int kBuckets = 24;  // finite ones; index kBuckets is +Inf
  Histogram(const char* name, const char* help);
  void Observe(uint64_t ns);
  const char* name() const { return name_; }
  const char* help() const { return help_; }
  uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  uint64_t bucket(int i) const { return buckets_[i].load(std::memory_order_relaxed); }
  uint64_t sum_ns() const { return sum_ns_.load(std::memory_order_relaxed); }
  static uint64_t UpperBoundNs(int i) { return 1000ull << i; }  // i < kBuckets

 private:
  const char* name_;
  const char* help_;
  std::atomic<uint64_t> buckets_[kBuckets + 1] = {};
  std::atomic<uint64_t> sum_ns_{0};
  std::atomic<uint64_t> count_{0};
};

// The upper bound (ns) of the bucket holding quantile q (0..1) of the observations in the
// bucket-count differences `after - before` (two snapshots of one histogram); 0 when empty,
// UINT64_MAX when it falls in +Inf.
uint64_t HistogramQuantileNs(const std::vector<uint64_t>& before,
                             const std::vector<uint64_t>& after, double q);
// Bucket counts of the histogram named `name` (kBuckets + 1 values; zeros when unknown).
std::vector<uint64_t> HistogramBuckets(const std::string& name);

// All counters as (name, value), for tests and the metrics endpoint.
std::vector<std::pair<std::string, uint64_t>> SnapshotCounters();
// Prometheus text exposition format of every counter and histogram.
std::string RenderCountersPrometheus();
uint64_t CounterValue(const std::string& name);  // 0 when unknown
int64_t GaugeValue(const std::string& name);     // 0 when unknown

}  // namespace spd
