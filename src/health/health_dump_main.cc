// spd_health_dump: discovers the sensors under a sysfs root, reads each once through the
// collector and the cache, and prints them (one line each, or JSON with --json). Reads back
// through libspdr, so the output is what a client of spd2 would see. Used by
// tests/integration/test_health_sensors_j.sh to cross-check lm-sensors.
//
//   spd_health_dump [--sysfs-root DIR] [--json] [--cache FILE [--keep]]
//   spd_health_dump --open CACHE [--json]    reads a running spd2's cache (/NAME: shared
//                                             memory; a path with more slashes: a file)
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "health/collector.h"
#include "spd/libspdr.h"

namespace {

int Usage() {
  std::fprintf(stderr,
               "usage: spd_health_dump [--sysfs-root DIR] [--json] [--cache FILE [--keep]]\n"
               "       spd_health_dump --open CACHE [--json]\n");
  return 2;
}

nlohmann::json ToJson(const spdr_sensor_info& info, const spdr_reading& r) {
  const double scale = r.value == 0 ? 1.0 : r.value_si / double(r.value);
  nlohmann::json j = {{"name", info.name},
                      {"channel", info.channel},
                      {"label", info.label},
                      {"kind", info.kind},
                      {"unit", spdr_unit_name(info.unit)},
                      {"raw", r.value},
                      {"value", r.value_si},
                      {"status", spdr_status_name(r.status)},
                      {"period_ms", double(info.period_ns) / 1e6}};
  if (info.pci_location[0] != '\0') j["pci_location"] = info.pci_location;
  const std::pair<uint32_t, std::pair<const char*, int64_t>> thresholds[] = {
      {SPDR_HAS_MIN, {"min", r.min}},
      {SPDR_HAS_MAX, {"max", r.max}},
      {SPDR_HAS_CRIT, {"crit", r.crit}},
      {SPDR_HAS_LCRIT, {"lcrit", r.lcrit}}};
  for (const auto& [bit, t] : thresholds) {
    if (r.threshold_mask & bit) j[t.first] = double(t.second) * scale;
  }
  return j;
}

}  // namespace

int main(int argc, char** argv) {
  spd::health::CollectorOptions o;
  bool json = false;
  std::string open_cache;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--json") {
      json = true;
    } else if (a == "--sysfs-root" && i + 1 < argc) {
      o.sysfs_root = argv[++i];
    } else if (a == "--cache" && i + 1 < argc) {
      o.cache.path = argv[++i];
    } else if (a == "--open" && i + 1 < argc) {
      open_cache = argv[++i];
    } else if (a == "--keep") {
      o.cache.unlink_on_close = false;  // leave the cache file for other readers
    } else {
      return Usage();
    }
  }
  std::unique_ptr<spd::health::Collector> collector;
  spdr_cache* cache = nullptr;
  int rc;
  if (!open_cache.empty()) {
    rc = open_cache.find('/', 1) != std::string::npos
             ? spdr_cache_open_path(open_cache.c_str(), &cache)
             : spdr_cache_open(open_cache.c_str(), &cache);
  } else {
    if (o.cache.path.empty()) o.cache.path = "/tmp/spd_health_dump." + std::to_string(getpid());
    o.cache.capacity = spd::health::kSensorsMax;
    auto made = spd::health::Collector::Create(o);
    if (!made.ok()) {
      std::fprintf(stderr, "spd_health_dump: %s\n", made.status().ToString().c_str());
      return 1;
    }
    collector = std::move(*made);
    collector->PollAll(1);  // one round; the monotonic time does not matter here
    rc = spdr_cache_open_path(o.cache.path.c_str(), &cache);
  }
  uint32_t count = 0;
  std::vector<spdr_reading> readings(rc == SPDR_OK ? spdr_sensor_count(cache) : 0);
  // spdr_snapshot gives up after ~1 ms of spd2 mid-round (SPDR_EAGAIN): a writer descheduled
  // on a busy machine holds a round longer. Try again for up to 2 s.
  if (rc == SPDR_OK) {
    for (int i = 0; i < 2000; ++i) {
      rc = spdr_snapshot(cache, readings.data(), readings.size(), &count, nullptr);
      if (rc != SPDR_EAGAIN) break;
      usleep(1000);
    }
  }
  if (rc != SPDR_OK) {
    std::fprintf(stderr, "spd_health_dump: read cache: %s\n", spdr_strerror(rc));
    if (cache != nullptr) spdr_cache_close(cache);
    return 1;
  }
  nlohmann::json all = nlohmann::json::array();
  for (uint32_t i = 0; i < count; ++i) {
    spdr_sensor_info info;
    if (spdr_sensor_info_at(cache, i, &info) != SPDR_OK) continue;
    if (json) {
      all.push_back(ToJson(info, readings[i]));
    } else {
      std::printf("%-48s %12.3f %-6s %s\n", info.name, readings[i].value_si,
                  spdr_unit_name(info.unit), spdr_status_name(readings[i].status));
    }
  }
  if (json) std::printf("%s\n", all.dump(2).c_str());
  spdr_cache_close(cache);
  return 0;
}
