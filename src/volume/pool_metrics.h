// The per-pool metric families (label `pool`), for alerting before a thin pool fills and on a
// pool that turned read-only:
//
//   spd_pool_size_bytes, spd_pool_allocated_bytes, spd_pool_free_bytes   gauges (data area)
//   spd_pool_provisioned_bytes                                          gauge, volumes' sizes
//   spd_pool_map_bytes                                                  gauge, their maps' memory
//   spd_pool_read_only                                                  gauge, 1 after a failure
//   spd_pool_volumes, spd_pool_volumes_max                              gauges
//   spd_pool_commits_total, spd_pool_log_records_total, spd_pool_checkpoints_total
//   spd_pool_log_size_bytes, spd_pool_log_used_bytes                    gauges (metadata log)
//
// Thread-safety: Pool::stats() is for the pool's reactor thread, so the scrapes that run this
// collector must run there too (spd2 serves /metrics on its main reactor, which owns the pool).
#pragma once

#include <memory>
#include <string>

#include "common/counters.h"
#include "volume/pool.h"

namespace spd {

class PoolMetrics {
 public:
  PoolMetrics(const Pool* pool, std::string name);
  ~PoolMetrics();

  // The families above, appended to *out (Prometheus text format).
  void Render(std::string* out) const;

 private:
  const Pool* pool_;
  std::string label_;  // pool="NAME", rendered once
  std::unique_ptr<MetricsCollector> collector_;
};

}  // namespace spd
