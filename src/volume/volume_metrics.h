// The per-volume metric families (labels `volume`, and `tenant` when it has one), in the style of
// node_exporter's node_disk_*: base units, counters end in _total.
//
//   spd_volume_requests_total{op}            requests answered, by operation class
//   spd_volume_read_bytes_total, spd_volume_written_bytes_total
//   spd_volume_errors_total{kind}            requests answered with an error, by kind
//   spd_volume_request_duration_seconds{op}  histogram, the frontend's arrival to its reply
//   spd_volume_inflight_requests             gauge
//   spd_volume_scheduler_queue_seconds_total time requests were held by the scheduler stage
//   spd_volume_size_bytes, spd_volume_allocated_bytes
//
// Series of an operation class or error kind a volume has not seen yet are left out (they
// appear with their first request), which keeps a scrape of many volumes small.
//
// Thread-safety: the collector runs on the scraping thread; the tenant function must be
// callable from it.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "common/counters.h"
#include "volume/volume_manager.h"

namespace spd {

class VolumeMetrics {
 public:
  // `tenant_of(volume)`: the tenant label ("" when none; may be null: always "").
  VolumeMetrics(const VolumeManager* manager,
                std::function<std::string(const std::string&)> tenant_of);
  ~VolumeMetrics();

  // The families above for every volume, appended to *out (Prometheus text format).
  void Render(std::string* out) const;

 private:
  const VolumeManager* manager_;
  std::function<std::string(const std::string&)> tenant_of_;
  std::unique_ptr<MetricsCollector> collector_;
};

}  // namespace spd
