#include "volume/pool_metrics.h"

namespace spd {

PoolMetrics::PoolMetrics(const Pool* pool, std::string name)
    : pool_(pool), label_("pool=" + PromLabel(name)) {
  collector_ = std::make_unique<MetricsCollector>([this](std::string* out) { Render(out); });
}

PoolMetrics::~PoolMetrics() = default;

void PoolMetrics::Render(std::string* out) const {
  const PoolStats s = pool_->stats();
  const uint64_t data = s.chunks_total * s.chunk_size_bytes;
  const uint64_t free = s.chunks_free * s.chunk_size_bytes;
  struct Row {
    const char* name;
    const char* help;
    const char* type;
    double v;
  };
  const Row rows[] = {
      {"spd_pool_size_bytes", "Bytes of the pool's data area (what volumes can be given).", "gauge",
       static_cast<double>(data)},
      {"spd_pool_allocated_bytes", "Bytes of the data area held by volumes (thin: written).",
       "gauge", static_cast<double>(data - free)},
      {"spd_pool_free_bytes", "Bytes of the data area free for new allocations.", "gauge",
       static_cast<double>(free)},
      {"spd_pool_provisioned_bytes",
       "The pool's volumes' sizes summed (thin: may exceed spd_pool_size_bytes; the ratio of the "
       "two is the overcommit).",
       "gauge", static_cast<double>(s.provisioned_bytes)},
      {"spd_pool_map_bytes",
       "Memory the volumes' chunk maps take (4 bytes per chunk of each volume's size; bounded by "
       "spd2 --pool-map-memory-max).",
       "gauge", static_cast<double>(s.map_bytes)},
      {"spd_pool_read_only",
       "1 once the pool turned read-only after a failed commit or device flush (restart to "
       "re-open from the last durable state).",
       "gauge", s.read_only ? 1.0 : 0.0},
      {"spd_pool_volumes", "Volumes in the pool.", "gauge", static_cast<double>(s.volumes)},
      {"spd_pool_volumes_max", "Volumes the pool's volume table can hold.", "gauge",
       static_cast<double>(s.volumes_max)},
      {"spd_pool_commits_total", "Metadata commits (group commits) started.", "counter",
       static_cast<double>(s.commits)},
      {"spd_pool_log_records_total", "Metadata log records written.", "counter",
       static_cast<double>(s.log_records)},
      {"spd_pool_checkpoints_total", "Checkpoints written.", "counter",
       static_cast<double>(s.checkpoints)},
      {"spd_pool_log_size_bytes", "Bytes of the metadata log region.", "gauge",
       static_cast<double>(s.log_size_bytes)},
      {"spd_pool_log_used_bytes",
       "Bytes of the metadata log written since the last checkpoint (a checkpoint is taken "
       "once half is used).",
       "gauge", static_cast<double>(s.log_used_bytes)},
  };
  for (const Row& r : rows) {
    PromHeader(out, r.name, r.help, r.type);
    PromSample(out, r.name, label_, r.v);
  }
}

}  // namespace spd
