// Every volume's intent status as labelled Prometheus metrics, computed at each scrape from the
// same windows as QosScheduler::Status (the last complete one-second window of each shard).
#include <cstdio>
#include <string>
#include <vector>

#include "qos/qos_internal.h"

namespace spd::qos {
namespace {

struct Family {
  const char* name;
  const char* help;
};

constexpr Family kState{"spd_qos_volume_intent_state",
                        "A volume's intent over its last window: 0 idle (too few requests to "
                        "judge), 1 met, 2 at risk, 3 violated."};
constexpr Family kIops{"spd_qos_volume_iops",
                       "Operations per second a volume completed in its "
                       "last window."};
constexpr Family kBytes{"spd_qos_volume_bytes_per_second",
                        "Data bytes per second a volume moved in its last window."};
constexpr Family kLatency{"spd_qos_volume_latency_seconds",
                          "A volume's latency at its target's percentile (99 without a target) "
                          "in its last window: the upper edge of its histogram bucket."};
constexpr Family kQueue{"spd_qos_volume_queue_seconds_mean",
                        "Mean time a volume's requests were held in the scheduler in its last "
                        "window."};

void Header(std::string* out, const Family& f) { PromHeader(out, f.name, f.help, "gauge"); }

void Sample(std::string* out, const Family& f, const std::string& labels, double v) {
  PromSample(out, f.name, labels, v);
}

}  // namespace

void QosScheduler::RenderMetrics(std::string* out) const {
  std::vector<std::string> names;
  {
    std::lock_guard<std::mutex> l(mu_);
    names.reserve(volumes_by_name_.size());
    for (const auto& [name, vs] : volumes_by_name_) names.push_back(name);
  }
  if (names.empty()) return;
  std::vector<std::pair<std::string, VolumeStatus>> st;
  st.reserve(names.size());
  for (const std::string& n : names) st.emplace_back("volume=" + PromLabel(n), Status(n));
  Header(out, kState);
  for (const auto& [l, s] : st) Sample(out, kState, l, static_cast<double>(s.state));
  Header(out, kIops);
  for (const auto& [l, s] : st) Sample(out, kIops, l, s.iops);
  Header(out, kBytes);
  for (const auto& [l, s] : st) Sample(out, kBytes, l, s.bytes_per_second);
  Header(out, kLatency);
  char pct[32];
  for (const auto& [l, s] : st) {
    if (s.window_ns == 0) continue;
    std::snprintf(pct, sizeof pct, "%g", s.latency_percentile);
    Sample(out, kLatency, l + ",percentile=" + PromLabel(pct),
           static_cast<double>(s.latency_ns) / 1e9);
  }
  Header(out, kQueue);
  for (const auto& [l, s] : st) {
    Sample(out, kQueue, l, static_cast<double>(s.queue_ns_mean) / 1e9);
  }
}

}  // namespace spd::qos
