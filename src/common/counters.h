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

// All counters as (name, value), for tests and the metrics endpoint.
std::vector<std::pair<std::string, uint64_t>> SnapshotCounters();
// Prometheus text exposition format of every counter.
std::string RenderCountersPrometheus();
uint64_t CounterValue(const std::string& name);  // 0 when unknown

}  // namespace spd
