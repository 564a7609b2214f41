// Finds the host's sensors under a sysfs root (/sys, or a fake tree in tests) and gives each a
// stable name (docs/health_format.md, "Stable names"). Reads the documented hwmon ABI
// (Documentation/hwmon/sysfs-interface) and the thermal zone ABI; opens nothing it keeps.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "health/health_format.h"

namespace spd::health {

// Threshold files of a channel, in the order of ThresholdSlot; empty: the device has none.
enum ThresholdSlot { kSlotMin = 0, kSlotMax = 1, kSlotCrit = 2, kSlotLcrit = 3, kSlotCount = 4 };

struct ChannelSpec {
  std::string name;  // stable name
  std::string pci_location;
  std::string channel;  // "temp1", "temp" (thermal zone)
  std::string label;
  SensorKind kind = SensorKind::kUnknown;
  SensorUnit unit = SensorUnit::kNone;
  std::string input_path;
  std::string threshold_paths[kSlotCount];
};

// One chip or zone: what is polled together, at one period.
struct SourceSpec {
  std::string name;  // "hwmon/<chip>", "thermal/<type>"
  std::vector<ChannelSpec> channels;
};

// Every hwmon device (<root>/class/hwmon/hwmon*) and thermal zone
// (<root>/class/thermal/thermal_zone*) with at least one channel: hwmon devices by number, then
// zones by number.
// Missing class directories are not an error (a VM has no hwmon).
Result<std::vector<SourceSpec>> DiscoverSysfs(const std::string& sysfs_root);

// The label as a name component: characters other than [A-Za-z0-9._+-] become '_'.
std::string SanitizeItem(std::string_view label);

// "0000:01:00.0" when one component of the resolved path is a PCI function address (the last
// such one, nearest the device), else "".
std::string PciLocationOf(std::string_view resolved_path);

}  // namespace spd::health
