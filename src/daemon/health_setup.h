// spd2's host-health collector, made from the daemon's flags (docs/health.md).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "daemon/options.h"
#include "health/collector.h"

namespace spd {

// The collector as --health asks, its thread started; nullptr when health is off, or auto and
// it could not be made (logged). An error only with --health on.
// pool_path: the pool's file or block device; an NVMe namespace brings its controller's SMART.
Result<std::unique_ptr<health::Collector>> StartHealth(const DaemonOptions& o);

// The NVMe controller ("nvme0") whose namespace (or a partition of it) is the block device at
// `path`, found through SYSFS_ROOT/dev/block/MAJOR:MINOR; "" when path is not such a device.
std::string NvmeControllerOf(const std::string& path, const std::string& sysfs_root);

}  // namespace spd
