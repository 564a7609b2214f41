// FullTmpfs: a file system with no space left, for tests of what a full disk does to code that
// writes files (a store into a hole of a shared mapping is a SIGBUS there). A tmpfs of 64 KiB
// mounted at a fresh directory under /tmp and filled; unmounted and removed when destroyed.
// Needs root (CI runs as root): ok() is false when the mount was refused, and the test skips.
#pragma once

#include <fcntl.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

namespace spd::testing {

class FullTmpfs {
 public:
  FullTmpfs() {
    char tmpl[] = "/tmp/spd-full-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) return;
    dir_ = tmpl;
    if (mount("tmpfs", dir_.c_str(), "tmpfs", 0, "size=64k") != 0) return;
    mounted_ = true;
    const int fd = open(Path("filler").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return;
    std::vector<char> block(4096, 'f');
    while (write(fd, block.data(), block.size()) > 0) {
    }
    close(fd);
    full_ = true;
  }
  ~FullTmpfs() {
    if (mounted_) umount2(dir_.c_str(), MNT_DETACH);
    if (!dir_.empty()) rmdir(dir_.c_str());
  }
  FullTmpfs(const FullTmpfs&) = delete;
  FullTmpfs& operator=(const FullTmpfs&) = delete;

  bool ok() const { return full_; }
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }

 private:
  std::string dir_;
  bool mounted_ = false;
  bool full_ = false;
};

}  // namespace spd::testing
