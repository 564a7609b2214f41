// A fake sysfs tree in a temporary directory, for the health tests (and spd_health_dump's
// tests). Files are rewritten in place (same inode), as sysfs attributes are: a collector that
// keeps them open sees the new contents on its next pread at offset 0.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "common/assert.h"

namespace spd::health {

class FakeSysfs {
 public:
  FakeSysfs() {
    char tmpl[] = "/tmp/spd-fake-sysfs.XXXXXX";
    SPD_ASSERT(mkdtemp(tmpl) != nullptr);
    root_ = tmpl;
  }
  ~FakeSysfs() {
    const std::string cmd = "rm -rf '" + root_ + "'";
    SPD_ASSERT(std::system(cmd.c_str()) == 0);
  }
  FakeSysfs(const FakeSysfs&) = delete;
  FakeSysfs& operator=(const FakeSysfs&) = delete;

  const std::string& root() const { return root_; }
  std::string Path(const std::string& rel) const { return root_ + "/" + rel; }

  // Writes content + "\n" to rel (creating parent directories), in place.
  void Write(const std::string& rel, const std::string& content) const {
    MakeParent(rel);
    const int fd = open(Path(rel).c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    SPD_ASSERT(fd >= 0);
    const std::string line = content.empty() ? "" : content + "\n";
    SPD_ASSERT(write(fd, line.data(), line.size()) == ssize_t(line.size()));
    close(fd);
  }
  void Write(const std::string& rel, long long value) const { Write(rel, std::to_string(value)); }
  // Makes rel an empty file: its next read returns no data, as a failing attribute does.
  void Empty(const std::string& rel) const { Write(rel, ""); }
  void Symlink(const std::string& target, const std::string& rel) const {
    MakeParent(rel);
    SPD_ASSERT(symlink(target.c_str(), Path(rel).c_str()) == 0);
  }
  void MakeParent(const std::string& rel) const {
    const size_t slash = rel.rfind('/');
    if (slash != std::string::npos) MakeDirs(rel.substr(0, slash));
  }
  void MakeDirs(const std::string& rel) const {
    std::string p = root_;
    size_t start = 0;
    while (start < rel.size()) {
      size_t end = rel.find('/', start);
      if (end == std::string::npos) end = rel.size();
      p += "/" + rel.substr(start, end - start);
      mkdir(p.c_str(), 0755);
      start = end + 1;
    }
  }

 private:
  std::string root_;
};

}  // namespace spd::health
