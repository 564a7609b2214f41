// HealthCacheWriter: creates the shared-memory segment of health_format.h and writes it.
//
// One writer per segment (the collector's thread); any number of readers map it read-only
// (libspdr). The writer never blocks on readers and readers never block the writer: every
// record has its own seqlock, and a poll round is bracketed by the table's generation seqlock.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"
#include "health/health_format.h"

namespace spd::health {

struct CacheOptions {
  // POSIX shared-memory name, used when `path` is empty.
  std::string shm_name = kDefaultShmName;
  // A file instead of shared memory (tests, containers). Built beside and renamed into place.
  std::string path;
  uint32_t capacity = 1024;  // records; at most kSensorsMax
  mode_t mode = 0644;        // readable by every local user, writable by the daemon only
  bool unlink_on_close = true;
};

// What AddSensor publishes; never changes afterwards.
struct SensorIdentity {
  std::string name;
  std::string pci_location;
  std::string channel;
  std::string label;
  SensorKind kind = SensorKind::kUnknown;
  SensorUnit unit = SensorUnit::kNone;
  uint64_t period_ns = 0;
  uint32_t source_index = 0;
};

class HealthCacheWriter {
 public:
  // Replaces any segment of the same name left by a writer that is gone (readers of the old one
  // see its heartbeat stop). While another writer of the name lives (its NAME.lock held):
  // kFailedPrecondition naming its pid, and nothing of the name is touched.
  static Result<std::unique_ptr<HealthCacheWriter>> Create(const CacheOptions& options);
  ~HealthCacheWriter();
  HealthCacheWriter(const HealthCacheWriter&) = delete;
  HealthCacheWriter& operator=(const HealthCacheWriter&) = delete;

  // Writes the identity of the next record, then publishes it. Its sample starts stale (never
  // read). kResourceExhausted once capacity records exist.
  Result<uint32_t> AddSensor(const SensorIdentity& identity);

  // REQUIRES: index < sensor_count(); between BeginRound and EndRound.
  void Write(uint32_t index, const SensorSample& sample);
  void BeginRound();
  void EndRound(uint64_t monotonic_ns, uint64_t realtime_ns);

  uint32_t sensor_count() const;
  const HealthHeader& header() const { return *header_; }
  const SensorRecord& record(uint32_t index) const;
  const std::string& location() const { return location_; }

 private:
  HealthCacheWriter() = default;
  CacheOptions options_;
  std::string location_;  // the file path, or the shm name
  void* base_ = nullptr;
  size_t bytes_ = 0;
  HealthHeader* header_ = nullptr;
  SensorRecord* records_ = nullptr;
  bool in_round_ = false;
  int lock_fd_ = -1;       // NAME.lock, flock'ed for the writer's life
  std::string lock_name_;  // its file path or shm name
};

// Copies s into a fixed char field, truncating, always NUL-terminated and zero-padded.
void CopyField(char* dst, size_t capacity, std::string_view s);

}  // namespace spd::health
