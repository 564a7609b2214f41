#include "common/mapped_file.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "testing/full_tmpfs.h"

namespace spd {
namespace {

// Bytes the file system holds for `path` (not its apparent size).
uint64_t AllocatedBytes(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(stat(path.c_str(), &st), 0);
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

// A store into a page of a shared mapping that the file system has not allocated is a SIGBUS
// when it is full (a replica's dirty map on a full disk ended the daemon so). Open allocates
// every page first, for a new file and for one found sparse at its size.
TEST(MappedFile, EveryPageIsAllocatedOnceOpen) {
  char tmpl[] = "/tmp/spd-mapped-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  constexpr size_t kBytes = 1 << 20;
  bool existed = true;
  {
    Result<MappedFile> f = MappedFile::Open(dir + "/new", kBytes, &existed);
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    EXPECT_FALSE(existed);
    EXPECT_GE(AllocatedBytes(dir + "/new"), kBytes);
  }
  const std::string sparse = dir + "/sparse";
  const int fd = open(sparse.c_str(), O_RDWR | O_CREAT, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, kBytes), 0);
  close(fd);
  ASSERT_LT(AllocatedBytes(sparse), kBytes);
  {
    Result<MappedFile> f = MappedFile::Open(sparse, kBytes, &existed);
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    EXPECT_TRUE(existed);
    EXPECT_GE(AllocatedBytes(sparse), kBytes);
  }
  ASSERT_EQ(unlink((dir + "/new").c_str()), 0);
  ASSERT_EQ(unlink(sparse.c_str()), 0);
  ASSERT_EQ(rmdir(dir.c_str()), 0);
}

// On a file system with no space left, Open fails (ENOSPC): before, it mapped a hole and the
// first store into it ended the process (SIGBUS).
TEST(MappedFile, AFullFileSystemIsAnErrorAtOpenNotASignalAtTheFirstStore) {
  testing::FullTmpfs fs;
  if (!fs.ok()) GTEST_SKIP() << "cannot mount a tmpfs (not root?)";
  bool existed = true;
  Result<MappedFile> f = MappedFile::Open(fs.Path("map"), 16 << 10, &existed);
  if (f.ok()) f->data()[8192] = 1;  // the SIGBUS, had Open left a hole
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), StatusCode::kResourceExhausted) << f.status().ToString();
}

}  // namespace
}  // namespace spd
