#include "common/peer_uid.h"

#include <arpa/inet.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <string>

namespace spd {
namespace {

constexpr uid_t kNobody = 65534;

// A listening TCP socket on `addr` (IPv4 or IPv6 literal), port chosen by the kernel; -1 when
// the address cannot be bound (no IPv6 here).
int ListenTcp(const char* addr, sockaddr_storage* bound) {
  sockaddr_storage ss{};
  socklen_t len;
  if (std::strchr(addr, ':') != nullptr) {
    auto* s6 = reinterpret_cast<sockaddr_in6*>(&ss);
    s6->sin6_family = AF_INET6;
    if (inet_pton(AF_INET6, addr, &s6->sin6_addr) != 1) return -1;
    len = sizeof *s6;
  } else {
    auto* s4 = reinterpret_cast<sockaddr_in*>(&ss);
    s4->sin_family = AF_INET;
    if (inet_pton(AF_INET, addr, &s4->sin_addr) != 1) return -1;
    len = sizeof *s4;
  }
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 || listen(fd, 8) != 0) {
    close(fd);
    return -1;
  }
  socklen_t bl = sizeof *bound;
  getsockname(fd, reinterpret_cast<sockaddr*>(bound), &bl);
  return fd;
}

int ConnectTo(const sockaddr_storage& to) {
  int fd = socket(to.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  const socklen_t len = to.ss_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&to), len) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Runs `connect_fn` (returns a connected fd, or -1) in a child process whose uids (and gids) are
// all `uid`, created before the socket is. The child holds the socket until told to go; `check`
// runs in the parent meanwhile (or after the child closed its socket, with close_first).
template <typename ConnectFn, typename CheckFn>
void AsUid(uid_t uid, ConnectFn connect_fn, CheckFn check, bool close_first = false) {
  int ready[2], go[2];
  ASSERT_EQ(pipe(ready), 0);
  ASSERT_EQ(pipe(go), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    char c = 0;
    if (setgroups(0, nullptr) != 0 || setresgid(uid, uid, uid) != 0 ||
        setresuid(uid, uid, uid) != 0)
      _exit(2);
    const int fd = connect_fn();
    if (fd < 0) _exit(3);
    if (close_first) close(fd);
    if (write(ready[1], &c, 1) != 1) _exit(4);
    if (read(go[0], &c, 1) < 0) _exit(5);
    _exit(0);
  }
  close(ready[1]);
  close(go[0]);
  char c = 0;
  ASSERT_EQ(read(ready[0], &c, 1), 1) << "the child did not connect";
  check();
  ASSERT_EQ(write(go[1], &c, 1), 1);
  int st = 0;
  waitpid(pid, &st, 0);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "child status " << st;
  close(ready[0]);
  close(go[1]);
}

TEST(PeerUid, LoopbackTcpIsTheClientsUid) {
  sockaddr_storage at{};
  const int l = ListenTcp("127.0.0.1", &at);
  ASSERT_GE(l, 0);
  const int c = ConnectTo(at);
  ASSERT_GE(c, 0);
  const int s = accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
  ASSERT_GE(s, 0);
  EXPECT_TRUE(PeerIsLoopback(s));
  auto uid = PeerUid(s);
  ASSERT_TRUE(uid.ok()) << uid.status().ToString();
  EXPECT_EQ(*uid, geteuid());
  // The client's end asks about the server's socket: ours too.
  auto back = PeerUid(c);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, geteuid());
  close(s);
  close(c);
  close(l);
}

TEST(PeerUid, LoopbackTcpIPv6) {
  sockaddr_storage at{};
  const int l = ListenTcp("::1", &at);
  if (l < 0) GTEST_SKIP() << "no IPv6 loopback here";
  const int c = ConnectTo(at);
  ASSERT_GE(c, 0);
  const int s = accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
  ASSERT_GE(s, 0);
  EXPECT_TRUE(PeerIsLoopback(s));
  auto uid = PeerUid(s);
  ASSERT_TRUE(uid.ok()) << uid.status().ToString();
  EXPECT_EQ(*uid, geteuid());
  close(s);
  close(c);
  close(l);
}

// The point of it all: a socket another user created is that user's, not the server's.
TEST(PeerUid, LoopbackTcpFromAnotherUser) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to become uid " << kNobody;
  sockaddr_storage at{};
  const int l = ListenTcp("127.0.0.1", &at);
  ASSERT_GE(l, 0);
  AsUid(
      kNobody, [&] { return ConnectTo(at); },
      [&] {
        const int s = accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
        ASSERT_GE(s, 0);
        auto uid = PeerUid(s);
        ASSERT_TRUE(uid.ok()) << uid.status().ToString();
        EXPECT_EQ(*uid, kNobody);
        close(s);
      });
  close(l);
}

// A client that closed its socket before the server asked: the kernel reports such a socket as
// root's (no process holds it). It must be "unknown", never uid 0.
TEST(PeerUid, ClosedClientIsNotRoot) {
  sockaddr_storage at{};
  const int l = ListenTcp("127.0.0.1", &at);
  ASSERT_GE(l, 0);
  auto closed_then_ask = [&] {
    const int s = accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
    ASSERT_GE(s, 0);
    // The client's FIN has arrived (its socket is orphaned, then in TIME_WAIT's FIN_WAIT2).
    pollfd p{s, POLLIN | POLLRDHUP, 0};
    ASSERT_EQ(poll(&p, 1, 5000), 1);
    auto uid = PeerUid(s);
    EXPECT_FALSE(uid.ok()) << "a closed client's socket was said to be uid " << *uid;
    if (!uid.ok()) {
      EXPECT_EQ(uid.status().code(), StatusCode::kNotFound) << uid.status().ToString();
    }
    close(s);
  };
  if (geteuid() == 0) {
    AsUid(
        kNobody, [&] { return ConnectTo(at); }, closed_then_ask, /*close_first=*/true);
  } else {
    const int c = ConnectTo(at);
    ASSERT_GE(c, 0);
    close(c);
    closed_then_ask();
  }
  close(l);
}

TEST(PeerUid, UnixSocketIsSoPeerCred) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  EXPECT_FALSE(PeerIsLoopback(sv[0]));
  auto uid = PeerUid(sv[0]);
  ASSERT_TRUE(uid.ok()) << uid.status().ToString();
  EXPECT_EQ(*uid, geteuid());
  auto cred = UnixPeerCred(sv[0]);
  ASSERT_TRUE(cred.ok());
  EXPECT_EQ(cred->pid, getpid());
  close(sv[0]);
  close(sv[1]);
}

TEST(PeerUid, UnixSocketFromAnotherUser) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to become uid " << kNobody;
  const std::string path = "/tmp/spd-peer-uid-test-" + std::to_string(getpid()) + ".sock";
  unlink(path.c_str());
  const int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(l, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
  ASSERT_EQ(bind(l, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  ASSERT_EQ(chmod(path.c_str(), 0666), 0);
  ASSERT_EQ(listen(l, 8), 0);
  AsUid(
      kNobody,
      [&] {
        const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
          close(fd);
          return -1;
        }
        return fd;
      },
      [&] {
        const int s = accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
        ASSERT_GE(s, 0);
        auto uid = PeerUid(s);
        ASSERT_TRUE(uid.ok()) << uid.status().ToString();
        EXPECT_EQ(*uid, kNobody);
        close(s);
      });
  close(l);
  unlink(path.c_str());
}

TEST(PeerUid, OtherSocketsAreRefused) {
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  EXPECT_FALSE(PeerUid(p[0]).ok());
  EXPECT_FALSE(PeerIsLoopback(p[0]));
  close(p[0]);
  close(p[1]);
  const int unconnected = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(unconnected, 0);
  auto r = PeerUid(unconnected);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  close(unconnected);
  const int udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(udp, 0);
  EXPECT_FALSE(PeerUid(udp).ok());
  close(udp);
}

}  // namespace
}  // namespace spd
