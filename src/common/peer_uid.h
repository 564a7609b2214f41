// Who is at the other end of a connected socket on this host, as identd tells it.
//
// - A unix stream socket: SO_PEERCRED, the credentials the client had when it connected.
// - A TCP socket whose connection runs over loopback (PeerIsLoopback): the kernel's socket table
//   (NETLINK_SOCK_DIAG, inet_diag's SOCK_DIAG_BY_FAMILY with the exact 4-tuple of the client's
//   socket: its local address and port are our peer's, its remote ones our own). The answer's
//   idiag_uid is the owner of the client's socket (the file-system uid of the process that
//   created it). An answer for a socket no process holds any more (idiag_inode 0: closed and
//   orphaned, or in TIME_WAIT) is refused: the kernel reports such sockets as uid 0 (root), and a
//   client that sent its requests and closed at once must not become root.
//
// Thread-safety: plain functions, any thread. PeerUid on TCP makes three syscalls on a netlink
// socket of its own and never blocks (the kernel answers inet_diag within the send).
#pragma once

#include <sys/types.h>

#include <cstdint>

#include "common/status.h"

namespace spd {

struct PeerCred {
  uid_t uid = 0;
  gid_t gid = 0;
  pid_t pid = 0;
};

// SO_PEERCRED of a connected unix socket (also one end of a socketpair: its creator's).
[[nodiscard]] Result<PeerCred> UnixPeerCred(int fd);

// True when `fd` is a connected TCP socket (IPv4 or IPv6) whose local or peer address is a
// loopback one (127.0.0.0/8, ::1, ::ffff:127.0.0.0/104). Either end suffices: a process on this
// host may bind its socket to one of the host's other addresses and connect to 127.0.0.1, and
// nothing but a process on this host can reach a loopback address.
bool PeerIsLoopback(int fd);

// The uid of the process at the other end of `fd`: SO_PEERCRED on a unix socket, inet_diag on a
// TCP connection over loopback (above). kFailedPrecondition for a TCP peer elsewhere (no process
// of this host to ask about) and for other kinds of socket; kNotFound when the kernel does not
// know the client's socket (it is gone) or no process holds it any more.
[[nodiscard]] Result<uint32_t> PeerUid(int fd);

}  // namespace spd
