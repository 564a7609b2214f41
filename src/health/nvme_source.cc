#include "health/nvme_source.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/nvme_ioctl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>

#include "common/file_util.h"

namespace spd::health {
namespace {

uint64_t LoadLe(const NvmeLogPage& p, size_t offset, size_t bytes) {
  uint64_t v = 0;
  for (size_t i = 0; i < bytes; ++i) v |= uint64_t{p[offset + i]} << (8 * i);
  return v;
}

void StoreLe(NvmeLogPage* p, size_t offset, size_t bytes, uint64_t v) {
  for (size_t i = 0; i < bytes; ++i) (*p)[offset + i] = uint8_t(v >> (8 * i));
}

class NvmeIoctlSource : public NvmeHealthSource {
 public:
  NvmeIoctlSource(int fd, std::string serial, std::string pci)
      : fd_(fd), serial_(std::move(serial)), pci_(std::move(pci)) {}
  ~NvmeIoctlSource() override { close(fd_); }
  std::string serial() const override { return serial_; }
  std::string pci_location() const override { return pci_; }

  Status ReadSmartLog(NvmeLogPage* page) override {
    nvme_admin_cmd cmd{};
    cmd.opcode = 0x02;       // Get Log Page
    cmd.nsid = 0xffffffffu;  // the controller as a whole
    cmd.addr = reinterpret_cast<uintptr_t>(page->data());
    cmd.data_len = kNvmeSmartLogBytes;
    // CDW10: NUMDL (dwords - 1, zero-based) in bits 31:16, the log identifier in bits 7:0.
    cmd.cdw10 = ((kNvmeSmartLogBytes / 4 - 1) << 16) | kNvmeLogSmart;
    const int rc = ioctl(fd_, NVME_IOCTL_ADMIN_CMD, &cmd);
    if (rc < 0) {
      const int e = errno;
      if (e == EINTR || e == EAGAIN || e == EBUSY) {
        return Status(StatusCode::kUnavailable, "nvme smart log: device busy", e);
      }
      return Status::FromErrno(e, "nvme get log page");
    }
    if (rc > 0) return Status(StatusCode::kInternal, "nvme status " + std::to_string(rc), EIO);
    return Status::Ok();
  }

 private:
  const int fd_;
  const std::string serial_;
  const std::string pci_;
};

}  // namespace

NvmeSmartLog ParseSmartLog(const NvmeLogPage& p) {
  NvmeSmartLog l;
  l.critical_warning = p[0];
  l.composite_temp_k = uint16_t(LoadLe(p, 1, 2));
  l.available_spare = p[3];
  l.spare_threshold = p[4];
  l.percent_used = p[5];
  l.power_on_hours = LoadLe(p, 128, 8);
  l.unsafe_shutdowns = LoadLe(p, 144, 8);
  l.media_errors = LoadLe(p, 160, 8);
  return l;
}

NvmeLogPage EncodeSmartLog(const NvmeSmartLog& l) {
  NvmeLogPage p{};
  p[0] = l.critical_warning;
  StoreLe(&p, 1, 2, l.composite_temp_k);
  p[3] = l.available_spare;
  p[4] = l.spare_threshold;
  p[5] = l.percent_used;
  StoreLe(&p, 128, 8, l.power_on_hours);
  StoreLe(&p, 144, 8, l.unsafe_shutdowns);
  StoreLe(&p, 160, 8, l.media_errors);
  return p;
}

Result<std::unique_ptr<NvmeHealthSource>> OpenNvmeIoctlSource(const std::string& dev_path,
                                                              const std::string& sysfs_root,
                                                              const std::string& ctrl) {
  const int fd = open(dev_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, "open " + dev_path);
  const std::string dir = sysfs_root + "/class/nvme/" + ctrl;
  std::string serial = FirstLine(dir + "/serial");
  if (serial.empty()) serial = ctrl;
  return std::unique_ptr<NvmeHealthSource>(
      new NvmeIoctlSource(fd, std::move(serial), FirstLine(dir + "/address")));
}

std::vector<std::string> ListNvmeControllers(const std::string& sysfs_root) {
  std::vector<std::string> out;
  DIR* d = opendir((sysfs_root + "/class/nvme").c_str());
  if (d == nullptr) return out;
  while (dirent* e = readdir(d)) {
    const std::string n = e->d_name;
    if (n.rfind("nvme", 0) == 0 && n.size() > 4) out.push_back(n);
  }
  closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

Status NvmeFixtureSource::ReadSmartLog(NvmeLogPage* page) {
  std::lock_guard<std::mutex> lock(mu_);
  ++reads_;
  if (!error_.ok()) return error_;
  *page = page_;
  return Status::Ok();
}

void NvmeFixtureSource::Set(const NvmeSmartLog& log) {
  std::lock_guard<std::mutex> lock(mu_);
  page_ = EncodeSmartLog(log);
}

void NvmeFixtureSource::SetError(Status status) {
  std::lock_guard<std::mutex> lock(mu_);
  error_ = std::move(status);
}

int NvmeFixtureSource::reads() const {
  std::lock_guard<std::mutex> lock(mu_);
  return reads_;
}

}  // namespace spd::health
