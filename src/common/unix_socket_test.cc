#include "common/unix_socket.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <string>

namespace spd {
namespace {

class UnixSocketTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/spd-unix-socket-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/s.sock";
  }
  void TearDown() override {
    unlink(path_.c_str());
    rmdir(dir_.c_str());
  }
  std::string dir_, path_;
};

TEST_F(UnixSocketTest, CreatedWithItsModeAndGroup) {
  // Under a umask that would open it further, the file still gets exactly the mode asked for.
  const mode_t old = umask(0);
  auto fd = BindUnixSocket(path_, 0640, static_cast<int>(getegid()), "test socket");
  umask(old);
  ASSERT_TRUE(fd.ok()) << fd.status().ToString();
  struct stat st {};
  ASSERT_EQ(lstat(path_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0640u);
  EXPECT_EQ(st.st_gid, getegid());
  EXPECT_EQ(listen(*fd, 4), 0);
  close(*fd);
}

TEST_F(UnixSocketTest, AStaleSocketIsReplacedAnythingElseIsNot) {
  auto first = BindUnixSocket(path_, 0600, -1, "test socket");
  ASSERT_TRUE(first.ok());
  close(*first);  // the file stays: a stale socket
  auto second = BindUnixSocket(path_, 0600, -1, "test socket");
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  close(*second);
  unlink(path_.c_str());
  std::ofstream(path_) << "not a socket";
  auto third = BindUnixSocket(path_, 0600, -1, "test socket");
  ASSERT_FALSE(third.ok());
  EXPECT_EQ(third.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(third.status().message().find("test socket"), std::string::npos);
  std::ifstream in(path_);
  std::string kept;
  std::getline(in, kept);
  EXPECT_EQ(kept, "not a socket");  // untouched
}

TEST_F(UnixSocketTest, APathTooLongIsRefused) {
  auto r = BindUnixSocket(dir_ + "/" + std::string(200, 'x'), 0600, -1, "test socket");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
}

TEST(SocketFlags, ModeIsOctalAtMost0777) {
  EXPECT_EQ(*ParseSocketMode("--m", "0660"), 0660u);
  EXPECT_EQ(*ParseSocketMode("--m", "600"), 0600u);
  for (const char* bad : {"", "0999", "1777", "rw", "06600"}) {
    auto r = ParseSocketMode("--nbd-unix-mode", bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.status().message().find("--nbd-unix-mode"), std::string::npos);
  }
}

TEST(SocketFlags, GroupByNumberOrName) {
  EXPECT_EQ(*ParseSocketGroup("--g", "0"), 0);
  EXPECT_EQ(*ParseSocketGroup("--g", "65534"), 65534);
  EXPECT_EQ(*ParseSocketGroup("--g", "root"), 0);
  auto r = ParseSocketGroup("--nbd-unix-group", "no-such-group-spd");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("no group 'no-such-group-spd'"), std::string::npos);
}

}  // namespace
}  // namespace spd
