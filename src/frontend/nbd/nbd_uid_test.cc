// The uid check (NbdServerOptions::authorize_uid): a plaintext client of the unix socket or of
// TCP over loopback is its uid. Clients of another uid come from a child process that becomes
// uid 65534, creates and connects the socket, and hands it over (SCM_RIGHTS): the socket stays
// that uid's, as a real client's would.
#include <arpa/inet.h>
#include <grp.h>
#include <sys/wait.h>

#include "frontend/nbd/nbd_test_fixture.h"

namespace spd {
namespace {

constexpr uint32_t kNobody = 65534;
const char* const kRefusals = "spd_nbd_uid_refusals_total";

// Sends `fd` over unix socket `via`.
bool SendFd(int via, int fd) {
  char byte = 0;
  iovec iov{&byte, 1};
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))] = {};
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = ctl;
  m.msg_controllen = sizeof ctl;
  cmsghdr* c = CMSG_FIRSTHDR(&m);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  return sendmsg(via, &m, 0) == 1;
}

int RecvFd(int via) {
  char byte = 0;
  iovec iov{&byte, 1};
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))] = {};
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = ctl;
  m.msg_controllen = sizeof ctl;
  if (recvmsg(via, &m, MSG_CMSG_CLOEXEC) != 1) return -1;
  cmsghdr* c = CMSG_FIRSTHDR(&m);
  if (c == nullptr || c->cmsg_type != SCM_RIGHTS) return -1;
  int fd = -1;
  std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
  return fd;
}

// The server allows the test's own uid vol0 and uid 65534 vol1; anyone else nothing.
class NbdUidTest : public NbdServerTest {
 protected:
  void Tweak(NbdServerOptions* o) override {
    o->tcp_host = "127.0.0.1";
    o->tcp_port = 0;
    o->authorize_uid = [self = geteuid()](uint32_t uid, std::string_view name) {
      return (uid == self && name == "vol0") || (uid == kNobody && name == "vol1");
    };
  }

  // A client socket connected to the server (TCP over loopback, or the unix socket), created
  // by the test's uid, or by uid 65534 in a child process (-1 when that fails).
  int Socket(bool tcp, bool nobody) {
    sockaddr_storage ss{};
    socklen_t len;
    if (tcp) {
      auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
      sin->sin_family = AF_INET;
      sin->sin_port = htons(server_->tcp_port());
      inet_pton(AF_INET, "127.0.0.1", &sin->sin_addr);
      len = sizeof *sin;
    } else {
      auto* sun = reinterpret_cast<sockaddr_un*>(&ss);
      sun->sun_family = AF_UNIX;
      std::memcpy(sun->sun_path, sock_.c_str(), sock_.size() + 1);
      len = sizeof *sun;
    }
    auto open = [&] {
      const int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd >= 0 && connect(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
        close(fd);
        return -1;
      }
      return fd;
    };
    if (!nobody) return open();
    // uid 65534 must reach the socket file (the server makes it 0600 by default).
    if (!tcp && chmod(sock_.c_str(), 0666) != 0) return -1;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return -1;
    const pid_t pid = fork();
    if (pid == 0) {  // only system calls from here: the parent has threads
      if (setgroups(0, nullptr) != 0 || setresgid(kNobody, kNobody, kNobody) != 0 ||
          setresuid(kNobody, kNobody, kNobody) != 0)
        _exit(2);
      const int fd = open();
      _exit(fd >= 0 && SendFd(sv[1], fd) ? 0 : 3);
    }
    close(sv[1]);
    const int fd = pid > 0 ? RecvFd(sv[0]) : -1;
    close(sv[0]);
    int st = 0;
    if (pid > 0) waitpid(pid, &st, 0);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "child status " << st;
    return fd;
  }

  nbd_handle* Handle(bool tcp, bool nobody, bool opt_mode, const char* exp = "") {
    const int fd = Socket(tcp, nobody);
    EXPECT_GE(fd, 0) << strerror(errno);
    if (fd < 0) return nullptr;
    nbd_handle* h = nbd_create();
    nbd_set_opt_mode(h, opt_mode);
    nbd_set_export_name(h, exp);
    if (nbd_connect_socket(h, fd) == -1) {  // takes fd
      nbd_close(h);
      return nullptr;
    }
    return h;
  }

  std::vector<std::string> List(bool tcp, bool nobody) {
    std::vector<std::string> names;
    nbd_handle* h = Handle(tcp, nobody, true);
    if (h == nullptr) {
      ADD_FAILURE() << "could not connect for LIST: " << nbd_get_error();
      return names;
    }
    EXPECT_TRUE(ListAndClose(h, &names)) << "NBD_OPT_LIST refused";
    return names;
  }

  // Opens `exp` (NBD_OPT_GO); its size, or -1 when refused.
  int64_t Open(bool tcp, bool nobody, const char* exp) {
    nbd_handle* h = Handle(tcp, nobody, false, exp);
    if (h == nullptr) return -1;
    const int64_t size = nbd_get_size(h);
    nbd_close(h);
    return size;
  }
};

TEST_F(NbdUidTest, OwnUidOverUnixAndLoopbackTcp) {
  for (bool tcp : {false, true}) {
    SCOPED_TRACE(tcp ? "tcp" : "unix");
    EXPECT_EQ(List(tcp, false), std::vector<std::string>{"vol0"});
    EXPECT_EQ(Open(tcp, false, "vol0"), int64_t{64 * kMiB});
    // The default export is the first one this uid may use.
    EXPECT_EQ(Open(tcp, false, ""), int64_t{64 * kMiB});
    const uint64_t refusals = CounterValue(kRefusals);
    EXPECT_EQ(Open(tcp, false, "vol1"), -1) << "opened a volume the uid may not use";
    EXPECT_EQ(CounterValue(kRefusals), refusals + 1);
  }
}

TEST_F(NbdUidTest, AnotherUidIsThatUid) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to become uid " << kNobody;
  for (bool tcp : {false, true}) {
    SCOPED_TRACE(tcp ? "tcp" : "unix");
    EXPECT_EQ(List(tcp, true), std::vector<std::string>{"vol1"});
    EXPECT_EQ(Open(tcp, true, "vol1"), int64_t{16 * kMiB});
    EXPECT_EQ(Open(tcp, true, ""), int64_t{16 * kMiB});
    const uint64_t refusals = CounterValue(kRefusals);
    EXPECT_EQ(Open(tcp, true, "vol0"), -1) << "uid 65534 opened vol0";
    EXPECT_EQ(CounterValue(kRefusals), refusals + 1);
  }
}

// NBD_OPT_EXPORT_NAME has no error reply: a refused one closes, and counts.
TEST_F(NbdUidTest, ExportNameRefusedCloses) {
  const uint64_t refusals = CounterValue(kRefusals);
  const int fd = RawNegotiate(sock_, "vol1");
  EXPECT_EQ(fd, -1) << "EXPORT_NAME of a volume the uid may not use was served";
  if (fd >= 0) close(fd);
  // Counted on the server's thread once it read the option; the close says it did.
  EXPECT_EQ(CounterValue(kRefusals), refusals + 1);
  const int ok = RawNegotiate(sock_, "vol0");
  EXPECT_GE(ok, 0);
  if (ok >= 0) close(ok);
}

// A uid that may use nothing sees nothing, over either transport.
class NbdUidNoneTest : public NbdUidTest {
 protected:
  void Tweak(NbdServerOptions* o) override {
    NbdUidTest::Tweak(o);
    o->authorize_uid = [](uint32_t, std::string_view) { return false; };
  }
};

TEST_F(NbdUidNoneTest, ListsNothingOpensNothing) {
  for (bool tcp : {false, true}) {
    SCOPED_TRACE(tcp ? "tcp" : "unix");
    EXPECT_TRUE(List(tcp, false).empty());
    const uint64_t refusals = CounterValue(kRefusals);
    EXPECT_EQ(Open(tcp, false, "vol0"), -1);
    EXPECT_EQ(Open(tcp, false, ""), -1);
    EXPECT_EQ(CounterValue(kRefusals), refusals + 2);
  }
}

// Without authorize_uid nothing is checked (--nbd-local-any-user): every uid sees every volume.
class NbdUidOffTest : public NbdUidTest {
 protected:
  void Tweak(NbdServerOptions* o) override {
    NbdUidTest::Tweak(o);
    o->authorize_uid = nullptr;
  }
};

TEST_F(NbdUidOffTest, EveryoneSeesEverything) {
  const bool root = geteuid() == 0;
  for (bool tcp : {false, true}) {
    SCOPED_TRACE(tcp ? "tcp" : "unix");
    EXPECT_EQ(List(tcp, false), (std::vector<std::string>{"vol0", "vol1"}));
    if (root) {
      EXPECT_EQ(List(tcp, true), (std::vector<std::string>{"vol0", "vol1"}));
    }
  }
}

}  // namespace
}  // namespace spd
