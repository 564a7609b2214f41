#include "daemon/health_setup.h"

#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <cctype>

#include "common/log.h"

namespace spd {
namespace {

bool IsControllerName(const std::string& c) {
  if (c.size() < 5 || c.compare(0, 4, "nvme") != 0) return false;
  for (size_t i = 4; i < c.size(); ++i)
    if (!std::isdigit(static_cast<unsigned char>(c[i]))) return false;
  return true;
}

}  // namespace

std::string NvmeControllerOf(const std::string& path, const std::string& sysfs_root) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0 || !S_ISBLK(st.st_mode)) return "";
  const std::string link = sysfs_root + "/dev/block/" + std::to_string(major(st.st_rdev)) + ":" +
                           std::to_string(minor(st.st_rdev));
  char resolved[PATH_MAX];
  if (realpath(link.c_str(), resolved) == nullptr) return "";
  // .../nvme/nvme0/nvme0n1[/nvme0n1p1]: the controller is the component "nvmeN".
  std::string p = resolved, found;
  size_t start = 0;
  while (start < p.size()) {
    size_t end = p.find('/', start);
    if (end == std::string::npos) end = p.size();
    const std::string comp = p.substr(start, end - start);
    if (IsControllerName(comp)) found = comp;
    start = end + 1;
  }
  return found;
}

Result<std::unique_ptr<health::Collector>> StartHealth(const DaemonOptions& o) {
  if (o.health == "off") return std::unique_ptr<health::Collector>();
  health::CollectorOptions co;
  co.sysfs_root = o.sysfs_root;
  co.period_ns = o.health_period_ms * 1'000'000;
  for (const auto& [prefix, ms] : o.health_source_periods)
    co.periods.emplace_back(prefix, ms * 1'000'000);
  if (o.health_shm.find('/', 1) != std::string::npos) {
    co.cache.path = o.health_shm;
  } else {
    co.cache.shm_name = o.health_shm;
  }
  co.cache.capacity = health::kSensorsMax;
  std::vector<std::unique_ptr<health::NvmeHealthSource>> nvme;
  const std::string ctrl = NvmeControllerOf(o.pool_path, o.sysfs_root);
  if (!ctrl.empty()) {
    auto src = health::OpenNvmeIoctlSource("/dev/" + ctrl, o.sysfs_root, ctrl);
    if (src.ok()) {
      nvme.push_back(std::move(*src));
    } else {
      SPD_LOG_WARN("health: pool %s is on %s, whose SMART log cannot be read: %s",
                   o.pool_path.c_str(), ctrl.c_str(), src.status().ToString().c_str());
    }
  }
  Status st;
  auto c = health::Collector::Create(co, std::move(nvme));
  if (c.ok()) {
    st = (*c)->Start();
  } else {
    st = c.status();
  }
  if (!st.ok()) {
    if (o.health == "on") return st.WithContext("--health on");
    SPD_LOG_WARN("health: not collecting (%s); --health off silences this", st.ToString().c_str());
    return std::unique_ptr<health::Collector>();
  }
  SPD_LOG_INFO("health: %u sensor(s) from %zu source(s) under %s, every %llu ms, cache %s",
               (*c)->cache().sensor_count(), (*c)->source_count(), o.sysfs_root.c_str(),
               static_cast<unsigned long long>(o.health_period_ms),
               (*c)->cache().location().c_str());
  return std::move(*c);
}

}  // namespace spd
