// Which NVMe controller a pool's block device belongs to, through a fake sysfs tree and block
// device nodes made with mknod (no NVMe hardware needed; needs root for mknod).
#include "daemon/health_setup.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "health/fake_sysfs_testing.h"

namespace spd {
namespace {

class NvmeControllerOfTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "mknod needs root";
    sys_.MakeDirs("devices/pci0000:00/0000:00:04.0/nvme/nvme3/nvme3n1/nvme3n1p2");
    sys_.MakeDirs("devices/virtual/block/loop5");
    sys_.Symlink(sys_.Path("devices/pci0000:00/0000:00:04.0/nvme/nvme3/nvme3n1"),
                 "dev/block/259:7");
    sys_.Symlink(sys_.Path("devices/pci0000:00/0000:00:04.0/nvme/nvme3/nvme3n1/nvme3n1p2"),
                 "dev/block/259:9");
    sys_.Symlink(sys_.Path("devices/virtual/block/loop5"), "dev/block/7:5");
  }
  std::string Node(const std::string& name, unsigned maj, unsigned min) {
    const std::string p = sys_.Path(name);
    EXPECT_EQ(mknod(p.c_str(), S_IFBLK | 0600, makedev(maj, min)), 0);
    return p;
  }
  health::FakeSysfs sys_;
};

TEST_F(NvmeControllerOfTest, NamespaceAndPartitionNameTheirController) {
  EXPECT_EQ(NvmeControllerOf(Node("ns", 259, 7), sys_.root()), "nvme3");
  EXPECT_EQ(NvmeControllerOf(Node("part", 259, 9), sys_.root()), "nvme3");
}

TEST_F(NvmeControllerOfTest, OtherDevicesAndFilesHaveNone) {
  EXPECT_EQ(NvmeControllerOf(Node("loop", 7, 5), sys_.root()), "");
  EXPECT_EQ(NvmeControllerOf(Node("unknown", 8, 0), sys_.root()), "");  // no sysfs entry
  sys_.Write("pool.img", "x");
  EXPECT_EQ(NvmeControllerOf(sys_.Path("pool.img"), sys_.root()), "");
  EXPECT_EQ(NvmeControllerOf(sys_.Path("missing"), sys_.root()), "");
}

}  // namespace
}  // namespace spd
