// Named monotonic counters and gauges: every failure path and every fallback increments one.
// They are process-wide, lock-free to update, and exported by telemetry (Prometheus text).
//
// Thread-safety: Add/Set from any thread; Snapshot from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace spd {

// How many stored units make one exported unit: a counter kept in µs and exported in seconds
// (Prometheus' base unit) is declared with kMicros.
struct PerUnit {
  uint64_t n;
};
inline constexpr PerUnit kMicros{1'000'000};

class Counter {
 public:
  // `name` follows Prometheus naming (spd_<box>_<what>_total). `help` is one line.
  // Counters are created once at static-init or start-up time and live forever.
  Counter(const char* name, const char* help) : Counter(name, help, false) {}
  // Kept in 1/per_unit of the exported unit (MicrosCounter: µs, exported in seconds).
  Counter(const char* name, const char* help, PerUnit per_unit) : Counter(name, help, false) {
    per_unit_ = per_unit.n;
  }
  void Add(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  bool gauge() const { return gauge_; }
  uint64_t per_unit() const { return per_unit_; }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }
  const char* name() const { return name_; }
  const char* help() const { return help_; }

 protected:
  Counter(const char* name, const char* help, bool gauge);
  void Store(uint64_t v) { value_.store(v, std::memory_order_relaxed); }
  uint64_t per_unit_ = 1;  // exported as value / per_unit_ (CounterValue reads it raw)

 private:
  const char* name_;
  const char* help_;
  bool gauge_;
  std::atomic<uint64_t> value_{0};
};

// A value that goes up and down (a state, not a count: bytes in use, connections open):
// exported as a Prometheus gauge, read with CounterValue like a counter (or GaugeValue, signed).
// Named without _total. Lock-free like Counter.
class Gauge : public Counter {
 public:
  Gauge(const char* name, const char* help) : Counter(name, help, true) {}
  Gauge(const char* name, const char* help, PerUnit per_unit) : Counter(name, help, true) {
    per_unit_ = per_unit.n;
  }
  void Set(uint64_t v) { Store(v); }
  // Signed: wraps through the unsigned store, so a matched +n/-n always returns to where it was.
  void Add(int64_t n) { Counter::Add(static_cast<uint64_t>(n)); }
  int64_t value() const { return static_cast<int64_t>(Counter::value()); }
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

// A source of labelled samples (per volume, per tenant), asked at every scrape of the metrics
// endpoint: `fn` appends whole metric families (# HELP, # TYPE, samples) in Prometheus text
// format to *out. Registered while the object lives; its destructor waits for a running call.
// `fn` runs on the scraping thread and must not register or drop collectors.
class MetricsCollector {
 public:
  explicit MetricsCollector(std::function<void(std::string* out)> fn);
  ~MetricsCollector();
  MetricsCollector(const MetricsCollector&) = delete;
  MetricsCollector& operator=(const MetricsCollector&) = delete;

 private:
  friend std::string RenderCountersPrometheus();
  std::function<void(std::string*)> fn_;
};

// `v` as a Prometheus label value, quoted: backslash, double quote and newline escaped.
std::string PromLabel(std::string_view v);
// For collectors: a family's "# HELP" and "# TYPE" lines (type "counter", "gauge",
// "histogram"), and one sample `name{labels} value` (labels already rendered, may be empty;
// whole values print as integers, others with 9 significant digits).
void PromHeader(std::string* out, std::string_view name, std::string_view help,
                std::string_view type);
void PromSample(std::string* out, std::string_view name, std::string_view labels, double v);

// All counters as (name, value), for tests and the metrics endpoint.
std::vector<std::pair<std::string, uint64_t>> SnapshotCounters();
// Prometheus text exposition format of every counter and histogram, then every collector's.
std::string RenderCountersPrometheus();
// A registered counter's or gauge's value; an unknown name stops the process (SPD_ASSERT).
uint64_t CounterValue(const std::string& name);
int64_t GaugeValue(const std::string& name);

}  // namespace spd
