// spd2's host-health flags (docs/health.md): kept apart from
// options.cc, which holds the storage flags.
#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "daemon/options.h"

namespace spd {

void AddHealthOptions(CLI::App* app, DaemonOptions* o, std::vector<std::string>* source_periods) {
  app->add_option("--health", o->health,
                  "Host health: poll the host's sensors (hwmon chips, thermal zones under "
                  "--sysfs-root; the NVMe drive of the pool when the pool is an NVMe block "
                  "device) and publish them in a shared-memory cache that libspdr clients and "
                  "Redfish read. auto: on, and a failure to start it (no shared memory) is "
                  "logged and the daemon goes on without it; on: such a failure stops the start "
                  "(exit 1); off: none. A host without sensors gets an empty cache and a "
                  "collector thread that never wakes up (docs/health.md)")
      ->check(CLI::IsMember({"auto", "on", "off"}))
      ->capture_default_str();
  app->add_option("--sysfs-root", o->sysfs_root,
                  "Where sysfs is: the collector reads ROOT/class/hwmon and ROOT/class/thermal "
                  "(a copy of that layout for tests)")
      ->capture_default_str();
  app->add_option("--health-shm", o->health_shm,
                  "The health cache: a POSIX shared-memory name (/NAME, in /dev/shm; the default "
                  "is libspdr's SPDR_DEFAULT_SHM_NAME, so spdr_cache_open(NULL) finds it), or an "
                  "absolute file path with more than one slash (spdr_cache_open_path). Mode 0644: "
                  "every local user may read it, only spd2 writes it")
      ->capture_default_str();
  app->add_option("--health-period-ms", o->health_period_ms,
                  "How often every sensor is read, in milliseconds")
      ->check(CLI::Range(uint64_t{10}, uint64_t{3'600'000}))
      ->capture_default_str();
  app->add_option("--health-source-period", *source_periods,
                  "PREFIX=MS: sources whose name begins with PREFIX (hwmon/k10temp, thermal/, "
                  "nvme/) are read every MS milliseconds instead of --health-period-ms; the first "
                  "matching flag wins. Repeatable");
}

Status FinishHealthOptions(DaemonOptions* o, const std::vector<std::string>& source_periods) {
  for (const std::string& sp : source_periods) {
    const size_t eq = sp.find('=');
    uint64_t ms = 0;
    try {
      if (eq == std::string::npos || eq == 0) throw std::invalid_argument("no =");
      size_t used = 0;
      ms = std::stoull(sp.substr(eq + 1), &used);
      if (used != sp.size() - eq - 1) throw std::invalid_argument("trailing");
    } catch (...) {
      return InvalidArgument("--health-source-period wants PREFIX=MS, got '" + sp + "'");
    }
    if (ms < 10 || ms > 3'600'000)
      return InvalidArgument("--health-source-period: MS must be between 10 and 3600000, got '" +
                             sp + "'");
    o->health_source_periods.emplace_back(sp.substr(0, eq), ms);
  }
  if (o->health_shm.empty() || o->health_shm[0] != '/')
    return InvalidArgument("--health-shm wants /NAME or an absolute file path, got '" +
                           o->health_shm + "'");
  return Status::Ok();
}

}  // namespace spd
