#include "common/peer_uid.h"

#include <arpa/inet.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>

namespace spd {
namespace {

bool IsLoopback(const sockaddr_storage& ss) {
  if (ss.ss_family == AF_INET) {
    const auto* sin = reinterpret_cast<const sockaddr_in*>(&ss);
    return (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
  }
  if (ss.ss_family == AF_INET6) {
    const in6_addr& a = reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_addr;
    if (IN6_IS_ADDR_LOOPBACK(&a)) return true;
    return IN6_IS_ADDR_V4MAPPED(&a) && a.s6_addr[12] == 127;
  }
  return false;
}

uint16_t PortOf(const sockaddr_storage& ss) {  // network byte order
  return ss.ss_family == AF_INET ? reinterpret_cast<const sockaddr_in*>(&ss)->sin_port
                                 : reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_port;
}

void AddrOf(const sockaddr_storage& ss, uint32_t out[4]) {
  std::memset(out, 0, 16);
  if (ss.ss_family == AF_INET) {
    out[0] = reinterpret_cast<const sockaddr_in*>(&ss)->sin_addr.s_addr;
  } else {
    std::memcpy(out, &reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_addr, 16);
  }
}

// The two ends of a connected TCP socket; false for anything else.
bool TcpEnds(int fd, sockaddr_storage* local, sockaddr_storage* peer) {
  int type = 0, proto = 0;
  socklen_t tl = sizeof type, pl = sizeof proto;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) != 0 || type != SOCK_STREAM) return false;
  if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &pl) != 0 || proto != IPPROTO_TCP)
    return false;
  socklen_t ll = sizeof *local, rl = sizeof *peer;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(local), &ll) != 0 ||
      getpeername(fd, reinterpret_cast<sockaddr*>(peer), &rl) != 0)
    return false;
  return (local->ss_family == AF_INET || local->ss_family == AF_INET6) &&
         local->ss_family == peer->ss_family;
}

// inet_diag: the owner of the TCP socket whose local end is `client` and remote end `server`.
Result<uint32_t> DiagUid(const sockaddr_storage& client, const sockaddr_storage& server) {
  const int nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (nl < 0) return Status::FromErrno(errno, "peer uid: socket(NETLINK_SOCK_DIAG)");
  struct Closer {
    int fd;
    ~Closer() { close(fd); }
  } closer{nl};
  static std::atomic<uint32_t> seq{1};
  struct {
    nlmsghdr nlh;
    inet_diag_req_v2 req;
  } msg{};
  msg.nlh.nlmsg_len = sizeof msg;
  msg.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  // No NLM_F_DUMP: the exact lookup of one socket by its 4-tuple (inet_diag_find_one_icsk).
  msg.nlh.nlmsg_flags = NLM_F_REQUEST;
  msg.nlh.nlmsg_seq = seq.fetch_add(1, std::memory_order_relaxed);
  msg.req.sdiag_family = static_cast<uint8_t>(client.ss_family);
  msg.req.sdiag_protocol = IPPROTO_TCP;
  msg.req.idiag_states = ~0u;
  // The socket found has local end src:sport and remote end dst:dport: the client's socket.
  msg.req.id.idiag_sport = PortOf(client);
  msg.req.id.idiag_dport = PortOf(server);
  AddrOf(client, msg.req.id.idiag_src);
  AddrOf(server, msg.req.id.idiag_dst);
  msg.req.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
  msg.req.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (sendto(nl, &msg, sizeof msg, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) < 0)
    return Status::FromErrno(errno, "peer uid: send to NETLINK_SOCK_DIAG");
  // The kernel answers an exact lookup inside sendto: the reply is queued already.
  alignas(nlmsghdr) uint8_t buf[8192];
  const ssize_t n = recv(nl, buf, sizeof buf, MSG_DONTWAIT);
  if (n < 0) return Status::FromErrno(errno, "peer uid: receive from NETLINK_SOCK_DIAG");
  // The messages one by one (NLMSG_OK/NLMSG_NEXT by hand: the macros compare signed with
  // unsigned, which clang's -Wsign-compare rejects).
  const size_t total = static_cast<size_t>(n);
  size_t step = 0;
  for (size_t off = 0; off + sizeof(nlmsghdr) <= total; off += step) {
    auto* h = reinterpret_cast<nlmsghdr*>(buf + off);
    if (h->nlmsg_len < sizeof(nlmsghdr) || h->nlmsg_len > total - off) break;
    step = NLMSG_ALIGN(h->nlmsg_len);
    if (h->nlmsg_seq != msg.nlh.nlmsg_seq) continue;
    if (h->nlmsg_type == NLMSG_ERROR) {
      const auto* e = static_cast<const nlmsgerr*>(NLMSG_DATA(h));
      if (h->nlmsg_len < NLMSG_LENGTH(sizeof *e)) break;
      if (e->error == -ENOENT)
        return NotFound("peer uid: the kernel knows no TCP socket of the client (it is gone)");
      return Status::FromErrno(-e->error, "peer uid: inet_diag lookup");
    }
    if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY || h->nlmsg_len < NLMSG_LENGTH(sizeof(inet_diag_msg)))
      continue;
    const auto* m = static_cast<const inet_diag_msg*>(NLMSG_DATA(h));
    // The socket asked for, not another one.
    if (m->idiag_family != client.ss_family || m->id.idiag_sport != msg.req.id.idiag_sport ||
        m->id.idiag_dport != msg.req.id.idiag_dport ||
        std::memcmp(m->id.idiag_src, msg.req.id.idiag_src, 16) != 0 ||
        std::memcmp(m->id.idiag_dst, msg.req.id.idiag_dst, 16) != 0)
      return Internal("peer uid: inet_diag answered about another socket");
    // No inode: no process holds the socket (closed and orphaned, TIME_WAIT), and the kernel
    // reports it as root's. Its owner cannot be told.
    if (m->idiag_inode == 0 || m->idiag_state == TCP_TIME_WAIT)
      return NotFound("peer uid: the client's socket is closed (no process holds it)");
    return static_cast<uint32_t>(m->idiag_uid);
  }
  return Internal("peer uid: no answer from NETLINK_SOCK_DIAG");
}

}  // namespace

Result<PeerCred> UnixPeerCred(int fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
    return Status::FromErrno(errno, "SO_PEERCRED");
  return PeerCred{cred.uid, cred.gid, cred.pid};
}

bool PeerIsLoopback(int fd) {
  sockaddr_storage local{}, peer{};
  return TcpEnds(fd, &local, &peer) && (IsLoopback(local) || IsLoopback(peer));
}

Result<uint32_t> PeerUid(int fd) {
  int domain = 0;
  socklen_t dl = sizeof domain;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &dl) != 0)
    return Status::FromErrno(errno, "peer uid: SO_DOMAIN");
  if (domain == AF_UNIX) {
    SPD_ASSIGN_OR_RETURN(PeerCred c, UnixPeerCred(fd));
    return static_cast<uint32_t>(c.uid);
  }
  sockaddr_storage local{}, peer{};
  if (!TcpEnds(fd, &local, &peer))
    return FailedPrecondition("peer uid: not a connected unix or TCP socket");
  if (!IsLoopback(local) && !IsLoopback(peer))
    return FailedPrecondition("peer uid: the TCP peer is not on loopback");
  return DiagUid(peer, local);
}

}  // namespace spd
