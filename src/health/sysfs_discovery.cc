#include "health/sysfs_discovery.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <fstream>
#include <map>
#include <optional>

namespace spd::health {
namespace {

bool Exists(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0;
}

// The first line of a small text file, or nullopt.
std::optional<std::string> ReadLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) return std::nullopt;
  while (!line.empty() && (line.back() == '\n' || line.back() == ' ')) line.pop_back();
  return line;
}

std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return out;
  while (dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") out.push_back(std::move(n));
  }
  closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

// "hwmon12" -> 12 for prefix "hwmon"; -1 when it does not match.
long NumberAfter(std::string_view s, std::string_view prefix) {
  if (s.substr(0, prefix.size()) != prefix || s.size() == prefix.size()) return -1;
  long n = 0;
  for (char c : s.substr(prefix.size())) {
    if (c < '0' || c > '9' || n > 1'000'000) return -1;
    n = n * 10 + (c - '0');
  }
  return n;
}

struct TypeInfo {
  std::string_view prefix;
  SensorKind kind;
  SensorUnit unit;
};
constexpr TypeInfo kHwmonTypes[] = {
    {"temp", SensorKind::kTemp, SensorUnit::kMilliCelsius},
    {"fan", SensorKind::kFan, SensorUnit::kRpm},
    {"in", SensorKind::kIn, SensorUnit::kMilliVolt},
    {"curr", SensorKind::kCurr, SensorUnit::kMilliAmp},
    {"power", SensorKind::kPower, SensorUnit::kMicroWatt},
    {"energy", SensorKind::kEnergy, SensorUnit::kMicroJoule},
};
constexpr std::string_view kSlotSuffix[kSlotCount] = {"_min", "_max", "_crit", "_lcrit"};

// A hwmon device before naming: its chip name, device id and channels.
struct RawChip {
  long number = 0;
  std::string dir;
  std::string chip;
  std::string dev_id;  // basename of the resolved device link, "" without one
  std::string pci_location;
  std::vector<ChannelSpec> channels;
};

std::vector<ChannelSpec> HwmonChannels(const std::string& dir) {
  std::vector<ChannelSpec> out;
  for (const std::string& f : ListDir(dir)) {
    constexpr std::string_view kInput = "_input";
    if (f.size() <= kInput.size() || f.compare(f.size() - kInput.size(), kInput.size(), kInput))
      continue;
    const std::string channel = f.substr(0, f.size() - kInput.size());
    for (const TypeInfo& t : kHwmonTypes) {
      if (NumberAfter(channel, t.prefix) < 0) continue;
      ChannelSpec c;
      c.channel = channel;
      c.kind = t.kind;
      c.unit = t.unit;
      c.input_path = dir + "/" + f;
      c.label = ReadLine(dir + "/" + channel + "_label").value_or("");
      for (int s = 0; s < kSlotCount; ++s) {
        std::string p = dir + "/" + channel + std::string(kSlotSuffix[s]);
        if (Exists(p)) c.threshold_paths[s] = std::move(p);
      }
      out.push_back(std::move(c));
      break;
    }
  }
  return out;
}

// Item names: the sanitized label when it is unique in the chip, else the channel.
void NameItems(const std::string& prefix, std::vector<ChannelSpec>* channels) {
  std::map<std::string, int> uses;
  for (const ChannelSpec& c : *channels) {
    if (!c.label.empty()) ++uses[SanitizeItem(c.label)];
  }
  for (ChannelSpec& c : *channels) {
    const std::string item = SanitizeItem(c.label);
    const bool by_label = !c.label.empty() && uses[item] == 1 && !item.empty();
    c.name = prefix + "/" + (by_label ? item : c.channel);
  }
}

std::vector<RawChip> ReadHwmonChips(const std::string& root) {
  std::vector<RawChip> chips;
  const std::string class_dir = root + "/class/hwmon";
  for (const std::string& e : ListDir(class_dir)) {
    RawChip c;
    c.number = NumberAfter(e, "hwmon");
    if (c.number < 0) continue;
    c.dir = class_dir + "/" + e;
    c.chip = SanitizeItem(ReadLine(c.dir + "/name").value_or(""));
    if (c.chip.empty()) c.chip = "unnamed";
    char resolved[PATH_MAX];
    if (realpath((c.dir + "/device").c_str(), resolved) != nullptr) {
      std::string_view r(resolved);
      c.dev_id = std::string(r.substr(r.rfind('/') + 1));
      c.pci_location = PciLocationOf(r);
    }
    c.channels = HwmonChannels(c.dir);
    if (!c.channels.empty()) chips.push_back(std::move(c));
  }
  std::sort(chips.begin(), chips.end(),
            [](const RawChip& a, const RawChip& b) { return a.number < b.number; });
  return chips;
}

void AddHwmon(const std::string& root, std::vector<SourceSpec>* out) {
  std::vector<RawChip> chips = ReadHwmonChips(root);
  std::map<std::string, int> uses, seen;
  for (const RawChip& c : chips) ++uses[c.chip];
  for (RawChip& c : chips) {
    std::string chip = c.chip;
    const int k = seen[c.chip]++;
    if (uses[c.chip] > 1) chip += "@" + (c.dev_id.empty() ? std::to_string(k) : c.dev_id);
    SourceSpec s;
    s.name = "hwmon/" + chip;
    for (ChannelSpec& ch : c.channels) ch.pci_location = c.pci_location;
    NameItems(s.name, &c.channels);
    s.channels = std::move(c.channels);
    out->push_back(std::move(s));
  }
}

// A zone's trip points: the lowest critical one is crit, the lowest hot or passive one is max.
void ZoneTrips(const std::string& dir, ChannelSpec* c) {
  long crit_temp = LONG_MAX, max_temp = LONG_MAX;
  for (const std::string& f : ListDir(dir)) {
    constexpr std::string_view kType = "_type";
    if (f.rfind("trip_point_", 0) != 0 || f.size() <= kType.size() ||
        f.compare(f.size() - kType.size(), kType.size(), kType))
      continue;
    const std::string base = f.substr(0, f.size() - kType.size());
    const std::string type = ReadLine(dir + "/" + f).value_or("");
    const std::optional<std::string> temp = ReadLine(dir + "/" + base + "_temp");
    if (!temp) continue;
    const long t = std::strtol(temp->c_str(), nullptr, 10);
    if (type == "critical" && t < crit_temp) {
      crit_temp = t;
      c->threshold_paths[kSlotCrit] = dir + "/" + base + "_temp";
    } else if ((type == "hot" || type == "passive") && t < max_temp) {
      max_temp = t;
      c->threshold_paths[kSlotMax] = dir + "/" + base + "_temp";
    }
  }
}

void AddThermal(const std::string& root, std::vector<SourceSpec>* out) {
  const std::string class_dir = root + "/class/thermal";
  std::vector<std::pair<long, std::string>> zones;  // number, type
  std::map<std::string, int> uses;
  for (const std::string& e : ListDir(class_dir)) {
    const long n = NumberAfter(e, "thermal_zone");
    if (n < 0 || !Exists(class_dir + "/" + e + "/temp")) continue;
    std::string type = SanitizeItem(ReadLine(class_dir + "/" + e + "/type").value_or(""));
    if (type.empty()) type = "zone";
    ++uses[type];
    zones.emplace_back(n, std::move(type));
  }
  std::sort(zones.begin(), zones.end());
  for (const auto& [n, type] : zones) {
    const std::string dir = class_dir + "/thermal_zone" + std::to_string(n);
    SourceSpec s;
    s.name = "thermal/" + type + (uses[type] > 1 ? "@" + std::to_string(n) : "");
    ChannelSpec c;
    c.name = s.name;
    c.channel = "temp";
    c.label = ReadLine(dir + "/type").value_or("");
    c.kind = SensorKind::kThermal;
    c.unit = SensorUnit::kMilliCelsius;
    c.input_path = dir + "/temp";
    ZoneTrips(dir, &c);
    s.channels.push_back(std::move(c));
    out->push_back(std::move(s));
  }
}

bool IsHex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

// dddd:bb:dd.f with a domain of 4 or more hex digits.
bool IsPciAddress(std::string_view s) {
  const size_t colon = s.find(':');
  if (colon == std::string_view::npos || colon < 4 || s.size() != colon + 8) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const size_t j = i - colon;  // position after the domain
    const bool ok = i < colon          ? IsHex(s[i])
                    : j == 0 || j == 3 ? s[i] == ':'
                    : j == 6           ? s[i] == '.'
                    : j == 7           ? s[i] >= '0' && s[i] <= '7'
                                       : IsHex(s[i]);
    if (!ok) return false;
  }
  return true;
}

}  // namespace

std::string SanitizeItem(std::string_view label) {
  std::string out(label);
  for (char& c : out) {
    const bool keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '_' || c == '+' || c == '-';
    if (!keep) c = '_';
  }
  return out;
}

std::string PciLocationOf(std::string_view path) {
  std::string found;
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    const std::string_view part = path.substr(start, end - start);
    if (IsPciAddress(part)) found = std::string(part);
    start = end + 1;
  }
  return found;
}

Result<std::vector<SourceSpec>> DiscoverSysfs(const std::string& sysfs_root) {
  if (!Exists(sysfs_root)) return NotFound("sysfs root " + sysfs_root + " does not exist");
  std::vector<SourceSpec> out;
  AddHwmon(sysfs_root, &out);
  AddThermal(sysfs_root, &out);
  return out;
}

}  // namespace spd::health
