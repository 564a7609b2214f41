#include "health/sysfs_discovery.h"

#include <gtest/gtest.h>

#include <map>

#include "health/fake_sysfs_testing.h"

namespace spd::health {
namespace {

// A host with: a labelled chip, a PCI device's chip, two chips sharing a name, an empty chip,
// and two thermal zones.
void BuildHost(const FakeSysfs& fs) {
  const std::string h0 = "class/hwmon/hwmon0/";
  fs.Write(h0 + "name", "spdfake");
  fs.Write(h0 + "temp1_input", 42500);
  fs.Write(h0 + "temp1_label", "CPU");
  fs.Write(h0 + "temp1_max", 80000);
  fs.Write(h0 + "temp1_crit", 95000);
  fs.Write(h0 + "temp2_input", 30000);
  fs.Write(h0 + "fan1_input", 1200);
  fs.Write(h0 + "fan1_min", 300);
  fs.Write(h0 + "in0_input", 1100);
  fs.Write(h0 + "in0_label", "VCore 1");
  fs.Write(h0 + "in0_lcrit", 900);
  fs.Write(h0 + "curr1_input", 500);
  fs.Write(h0 + "power1_input", 12000000);
  fs.Write(h0 + "energy1_input", 123456789);
  fs.Write(h0 + "pwm1", 128);  // not a sensor
  const std::string pci = "devices/pci0000:00/0000:00:01.0/0000:01:00.0";
  fs.Write(pci + "/nvme/nvme0/dev", "259:0");
  fs.Write("class/hwmon/hwmon1/name", "nvme");
  fs.Write("class/hwmon/hwmon1/temp1_input", 35850);
  fs.Write("class/hwmon/hwmon1/temp1_label", "Composite");
  fs.Symlink("../../../" + pci + "/nvme/nvme0", "class/hwmon/hwmon1/device");
  fs.Write("class/hwmon/hwmon2/name", "dup");
  fs.Write("class/hwmon/hwmon2/temp1_input", 1000);
  fs.Write("class/hwmon/hwmon10/name", "dup");
  fs.Write("class/hwmon/hwmon10/temp1_input", 2000);
  fs.Write("class/hwmon/hwmon3/name", "empty");
  fs.Write("class/thermal/thermal_zone0/type", "x86_pkg_temp");
  fs.Write("class/thermal/thermal_zone0/temp", 51000);
  fs.Write("class/thermal/thermal_zone0/trip_point_0_type", "passive");
  fs.Write("class/thermal/thermal_zone0/trip_point_0_temp", 85000);
  fs.Write("class/thermal/thermal_zone0/trip_point_1_type", "critical");
  fs.Write("class/thermal/thermal_zone0/trip_point_1_temp", 105000);
  fs.Write("class/thermal/thermal_zone1/type", "acpitz");
  fs.Write("class/thermal/thermal_zone1/temp", 27800);
  fs.Write("class/thermal/cooling_device0/type", "Processor");
}

std::map<std::string, ChannelSpec> ByName(const std::vector<SourceSpec>& sources) {
  std::map<std::string, ChannelSpec> out;
  for (const SourceSpec& s : sources) {
    for (const ChannelSpec& c : s.channels) out[c.name] = c;
  }
  return out;
}

TEST(SysfsDiscovery, FindsEveryChannelWithStableNames) {
  FakeSysfs fs;
  BuildHost(fs);
  auto sources = DiscoverSysfs(fs.root());
  ASSERT_TRUE(sources.ok()) << sources.status().ToString();
  std::vector<std::string> source_names;
  for (const SourceSpec& s : *sources) source_names.push_back(s.name);
  // hwmon by number (hwmon10 after hwmon2), the empty chip left out, then zones.
  EXPECT_EQ(source_names,
            (std::vector<std::string>{"hwmon/spdfake", "hwmon/nvme", "hwmon/dup@0", "hwmon/dup@1",
                                      "thermal/x86_pkg_temp", "thermal/acpitz"}));
  auto by_name = ByName(*sources);
  std::vector<std::string> names;
  for (const auto& [n, c] : by_name) names.push_back(n);
  EXPECT_EQ(names, (std::vector<std::string>{
                       "hwmon/dup@0/temp1", "hwmon/dup@1/temp1", "hwmon/nvme/Composite",
                       "hwmon/spdfake/CPU", "hwmon/spdfake/VCore_1", "hwmon/spdfake/curr1",
                       "hwmon/spdfake/energy1", "hwmon/spdfake/fan1", "hwmon/spdfake/power1",
                       "hwmon/spdfake/temp2", "thermal/acpitz", "thermal/x86_pkg_temp"}));
  const ChannelSpec& cpu = by_name["hwmon/spdfake/CPU"];
  EXPECT_EQ(cpu.kind, SensorKind::kTemp);
  EXPECT_EQ(cpu.unit, SensorUnit::kMilliCelsius);
  EXPECT_EQ(cpu.channel, "temp1");
  EXPECT_EQ(cpu.label, "CPU");
  EXPECT_EQ(cpu.threshold_paths[kSlotMax], fs.Path("class/hwmon/hwmon0/temp1_max"));
  EXPECT_EQ(cpu.threshold_paths[kSlotCrit], fs.Path("class/hwmon/hwmon0/temp1_crit"));
  EXPECT_TRUE(cpu.threshold_paths[kSlotMin].empty());
  EXPECT_EQ(by_name["hwmon/spdfake/fan1"].unit, SensorUnit::kRpm);
  EXPECT_FALSE(by_name["hwmon/spdfake/fan1"].threshold_paths[kSlotMin].empty());
  EXPECT_FALSE(by_name["hwmon/spdfake/VCore_1"].threshold_paths[kSlotLcrit].empty());
  EXPECT_EQ(by_name["hwmon/spdfake/energy1"].unit, SensorUnit::kMicroJoule);
  EXPECT_EQ(by_name["hwmon/spdfake/power1"].kind, SensorKind::kPower);
  EXPECT_EQ(by_name["hwmon/nvme/Composite"].pci_location, "0000:01:00.0");
  EXPECT_EQ(cpu.pci_location, "");
  const ChannelSpec& pkg = by_name["thermal/x86_pkg_temp"];
  EXPECT_EQ(pkg.kind, SensorKind::kThermal);
  EXPECT_EQ(pkg.threshold_paths[kSlotMax],
            fs.Path("class/thermal/thermal_zone0/trip_point_0_temp"));
  EXPECT_EQ(pkg.threshold_paths[kSlotCrit],
            fs.Path("class/thermal/thermal_zone0/trip_point_1_temp"));
}

TEST(SysfsDiscovery, ChipsWithAShareNameUseTheirDevice) {
  FakeSysfs fs;
  fs.Write("devices/platform/coretemp.0/x", "");
  fs.Write("devices/platform/coretemp.1/x", "");
  for (int i : {0, 1}) {
    const std::string h = "class/hwmon/hwmon" + std::to_string(i) + "/";
    fs.Write(h + "name", "coretemp");
    fs.Write(h + "temp1_input", 40000);
    fs.Write(h + "temp1_label", "Package id " + std::to_string(i));
    fs.Symlink("../../../devices/platform/coretemp." + std::to_string(1 - i), h + "device");
  }
  auto sources = DiscoverSysfs(fs.root());
  ASSERT_TRUE(sources.ok());
  auto by_name = ByName(*sources);
  EXPECT_EQ(by_name.count("hwmon/coretemp@coretemp.1/Package_id_0"), 1u);
  EXPECT_EQ(by_name.count("hwmon/coretemp@coretemp.0/Package_id_1"), 1u);
}

TEST(SysfsDiscovery, DuplicateLabelsFallBackToChannels) {
  FakeSysfs fs;
  fs.Write("class/hwmon/hwmon0/name", "x");
  fs.Write("class/hwmon/hwmon0/temp1_input", 1);
  fs.Write("class/hwmon/hwmon0/temp1_label", "Core");
  fs.Write("class/hwmon/hwmon0/temp2_input", 2);
  fs.Write("class/hwmon/hwmon0/temp2_label", "Core");
  auto sources = DiscoverSysfs(fs.root());
  ASSERT_TRUE(sources.ok());
  auto by_name = ByName(*sources);
  EXPECT_EQ(by_name.count("hwmon/x/temp1"), 1u);
  EXPECT_EQ(by_name.count("hwmon/x/temp2"), 1u);
}

TEST(SysfsDiscovery, MissingRootIsNotFoundAndEmptyHostIsEmpty) {
  EXPECT_EQ(DiscoverSysfs("/nonexistent/sysfs").status().code(), StatusCode::kNotFound);
  FakeSysfs fs;
  auto sources = DiscoverSysfs(fs.root());
  ASSERT_TRUE(sources.ok());
  EXPECT_TRUE(sources->empty());
}

TEST(SysfsDiscovery, PciLocation) {
  EXPECT_EQ(PciLocationOf("/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/nvme/nvme0"),
            "0000:01:00.0");
  EXPECT_EQ(PciLocationOf("/sys/devices/platform/coretemp.0"), "");
  EXPECT_EQ(PciLocationOf("/sys/devices/pci0000:00/10000:3a:00.7"), "10000:3a:00.7");
  EXPECT_EQ(PciLocationOf("/x/0000:01:00.9"), "");
  EXPECT_EQ(SanitizeItem("Package id 0/x"), "Package_id_0_x");
}

}  // namespace
}  // namespace spd::health
