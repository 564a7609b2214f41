// NVMe drive health: the SMART / Health Information log page (log identifier 02h, 512 bytes,
// NVMe Base Specification, "SMART / Health Information"), read through an interface so that
// tests (and machines without NVMe, like CI) can supply a canned page.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/status.h"

namespace spd::health {

inline constexpr size_t kNvmeSmartLogBytes = 512;
inline constexpr uint8_t kNvmeLogSmart = 0x02;
using NvmeLogPage = std::array<uint8_t, kNvmeSmartLogBytes>;

// Critical warning bits (byte 0).
inline constexpr uint8_t kNvmeWarnSpare = 1u << 0;
inline constexpr uint8_t kNvmeWarnTemperature = 1u << 1;
inline constexpr uint8_t kNvmeWarnReliability = 1u << 2;
inline constexpr uint8_t kNvmeWarnReadOnly = 1u << 3;

// The fields spd2 publishes. 128-bit counters keep their low 64 bits (2^64 hours or shutdowns
// will not happen).
struct NvmeSmartLog {
  uint8_t critical_warning = 0;   // byte 0
  uint16_t composite_temp_k = 0;  // bytes 1-2, Kelvin
  uint8_t available_spare = 0;    // byte 3, percent
  uint8_t spare_threshold = 0;    // byte 4, percent
  uint8_t percent_used = 0;       // byte 5
  uint64_t power_on_hours = 0;    // bytes 128-143
  uint64_t unsafe_shutdowns = 0;  // bytes 144-159
  uint64_t media_errors = 0;      // bytes 160-175
};

NvmeSmartLog ParseSmartLog(const NvmeLogPage& page);
// The inverse, for fixtures.
NvmeLogPage EncodeSmartLog(const NvmeSmartLog& log);

class NvmeHealthSource {
 public:
  virtual ~NvmeHealthSource() = default;
  // Stable id of the drive: its serial number (names are nvme/<serial>/<metric>).
  virtual std::string serial() const = 0;
  // "0000:01:00.0" when known, else "".
  virtual std::string pci_location() const = 0;
  // Reads the SMART log page now. kUnavailable: no fresh page this time (busy), the collector
  // keeps the last values (they go stale); other errors mark the drive's sensors failed.
  virtual Status ReadSmartLog(NvmeLogPage* page) = 0;
};

// The real thing: NVME_IOCTL_ADMIN_CMD with Get Log Page on the controller's character device,
// kept open. Serial and PCI location come from <sysfs_root>/class/nvme/<ctrl>/{serial,address}.
Result<std::unique_ptr<NvmeHealthSource>> OpenNvmeIoctlSource(const std::string& dev_path,
                                                              const std::string& sysfs_root,
                                                              const std::string& ctrl);
// Controllers under <sysfs_root>/class/nvme ("nvme0", ...), sorted.
std::vector<std::string> ListNvmeControllers(const std::string& sysfs_root);

// The fixture hook: a canned page that a test can change at any time (thread-safe).
class NvmeFixtureSource : public NvmeHealthSource {
 public:
  NvmeFixtureSource(std::string serial, std::string pci_location)
      : serial_(std::move(serial)), pci_location_(std::move(pci_location)) {}
  std::string serial() const override { return serial_; }
  std::string pci_location() const override { return pci_location_; }
  Status ReadSmartLog(NvmeLogPage* page) override;
  void Set(const NvmeSmartLog& log);
  // What the next reads return instead of the page (Ok to go back to the page).
  void SetError(Status status);
  int reads() const;

 private:
  const std::string serial_;
  const std::string pci_location_;
  mutable std::mutex mu_;
  NvmeLogPage page_{};
  Status error_;
  int reads_ = 0;
};

}  // namespace spd::health
