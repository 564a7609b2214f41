// ReplicaSet's insides, shared by replica_set.cc (links, requests) and replica_set_resync.cc.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "common/crc32c.h"
#include "frontend/inproc/inproc_frontend.h"
#include "replica/activity_log.h"
#include "replica/dirty_map.h"
#include "replica/replica_set.h"
#include "replica/replica_tls.h"
#include "replica/replica_wire.h"

namespace spd {
namespace replica_internal {

namespace rw = replica_wire;

inline bool SplitAddress(const std::string& a, sockaddr_in* sa) {
  const size_t colon = a.rfind(':');
  if (colon == std::string::npos) return false;
  *sa = {};
  sa->sin_family = AF_INET;
  const std::string port = a.substr(colon + 1);
  char* end = nullptr;
  const long p = std::strtol(port.c_str(), &end, 10);
  if (port.empty() || *end != '\0' || p <= 0 || p > 65535) return false;
  sa->sin_port = htons(static_cast<uint16_t>(p));
  return inet_pton(AF_INET, a.substr(0, colon).c_str(), &sa->sin_addr) == 1;
}

// Waits for fd to be ready for `events` until `deadline_ns`: whether it is.
inline bool WaitFd(int fd, short events, uint64_t deadline_ns) {
  for (;;) {
    const uint64_t now = MonotonicNs();
    if (now >= deadline_ns) return false;
    pollfd p{fd, events, 0};
    const int r = poll(&p, 1, static_cast<int>((deadline_ns - now) / 1'000'000 + 1));
    if (r > 0) return true;
    if (r < 0 && errno != EINTR) return false;
  }
}

inline bool IoAll(int fd, void* buf, size_t n, bool out, uint64_t deadline_ns) {
  auto* p = static_cast<uint8_t*>(buf);
  size_t done = 0;
  while (done < n) {
    if (!WaitFd(fd, out ? POLLOUT : POLLIN, deadline_ns)) return false;
    const ssize_t r = out ? send(fd, p + done, n - done, MSG_NOSIGNAL | MSG_DONTWAIT)
                          : recv(fd, p + done, n - done, MSG_DONTWAIT);
    if (r > 0) {
      done += static_cast<size_t>(r);
    } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
      return false;
    }
  }
  return true;
}

// The links' poll callbacks (replica_set_link.cc).
void OnLinkReadable(Completion* c, int32_t res, uint32_t flags);
void OnLinkWritable(Completion* c, int32_t res, uint32_t flags);

}  // namespace replica_internal

// An asynchronous volume's message in flight after its request completed (replica_set_async.cc).
struct ReplicaSet::Shadow : IoRequest {
  std::unique_ptr<uint8_t[]> data;
  size_t capacity = 0;
  uint64_t payload = 0;  // counted in the lag
};

struct ReplicaSet::Link {
  ReplicaSet* set = nullptr;
  size_t index = 0;
  ReplicaTarget target;
  ReplicaSet::LinkInfo info;  // guarded by set->info_mu_ for Links(); written on the owner
  int fd = -1;
  struct Watch : Completion {
    Link* link = nullptr;
  } rx, tx;
  bool rx_armed = false;
  bool tx_armed = false;
  bool closed = false;  // the socket is shut down; waiting for the final poll events
  // No longer placed (SetReplicas): out of sync for good, never connected again, not listed.
  bool removed = false;
  bool mark_inflight = false;      // its out-of-sync mark was asked for, no answer yet
  bool resync_attempt = false;     // the current connection asked for a resync
  bool resync_at_mark = false;     // it answered out of sync: resync once the mark is confirmed
  uint64_t retry_at_ns = 0;        // out of sync: when to connect again
  uint64_t acked_barrier_seq = 0;  // the newest barrier it acknowledged under this primary
  replica_wire::HelloBody hello;
  // Sending: the next seq to send and how much of its message went.
  uint64_t send_seq = 0;
  size_t send_off = 0;
  // Acks arrive in bulk: one recv takes up to kAckBufBytes of them.
  static constexpr size_t kAckBufBytes = replica_wire::kHeaderBytes * 64;
  uint8_t ack_buf[kAckBufBytes];
  size_t ack_got = 0;
  // The connecting thread's result, handed over by a posted task.
  std::thread connector;
  struct Connected : Task {
    Link* link = nullptr;
  } connected;
  bool connected_pending = false;  // posted, not yet run
  int conn_fd = -1;
  replica_wire::HelloReplyBody reply;
  std::vector<replica_wire::ActivityRange> reply_ranges;
  // TLS (ReplicaSetOptions::tls): the connecting thread's session, handed over with conn_fd;
  // the link's; records corked and handed to GnuTLS whose sending must be called again.
  gnutls_session_t conn_tls = nullptr;
  gnutls_session_t tls = nullptr;
  bool tls_flush_pending = false;
  std::string conn_error;

  uint32_t bit() const { return 1u << index; }
  void CloseFd() {
    if (tls != nullptr) gnutls_deinit(tls);
    tls = nullptr;
    close(fd);
    fd = -1;
  }

  // Incremental resync: while `dirty` is valid, it has a bit per kDirtyUnitBytes of the
  // volume for every unit the replica may lack: what it missed since it fell out of sync from
  // in sync under this primary; after a failover, the units either copy applied of the old
  // primary's last writes (AdoptPriorActivity); what a whole-volume copy cut short had left
  // (CheckpointCopy); what a map persisted by this node's previous process held (Start).
  // Otherwise the whole volume is copied.
  static constexpr uint64_t kDirtyUnitBytes = DirtyMap::kUnitBytes;
  DirtyMap dirty;
  // In the previous term's in-sync set (ReplicaSetOptions::prior_in_sync), out of reach at the
  // start: `dirty` holds this copy's record of that term and what it missed since; the
  // replica's own record, at its first hello, decides whether that is all (AdoptPriorActivity).
  bool prior_pending = false;
  // Its record of that term was its durable activity log after a power loss
  // (rw::kActivityDurableLog): the map holds what the power loss took, no whole copy for it.
  bool prior_from_log = false;
  void MarkDirty(uint64_t off, uint64_t len) {
    if (dirty.valid()) dirty.Mark(off, len);
  }
  // What it acknowledged since its last barrier (writes, and a resync's copied regions):
  // applied there, durable only at the next barrier, so a replica that loses power loses them.
  // A ring of at most kUnbarrieredMax; past that, `unbarriered_lost` until a barrier covers the
  // write that did not fit. The set barriers the replicas itself before it fills
  // (BarrierForRing: half the entries, or ReplicaSetOptions::unbarriered_bytes). When the link
  // fails the ring stays as it was; the next hello the replica answers tells whether it lost power
  // since the last one (HelloReplyBody::losses): then the ring joins its dirty map (a ring that
  // overflowed: the whole volume), otherwise it goes (everything it acknowledged is still there).
  static constexpr size_t kUnbarrieredMax = 4096;
  struct Unbarriered {
    uint64_t seq;
    uint64_t off;
    uint64_t len;
  };
  std::vector<Unbarriered> unbarriered;
  size_t ub_head = 0, ub_count = 0;
  uint64_t ub_bytes = 0;
  uint64_t unbarriered_lost = 0;  // the newest seq that did not fit (0: none)
  void NoteUnbarriered(uint64_t seq, uint64_t off, uint64_t len) {
    if (ub_count == kUnbarrieredMax) {
      unbarriered_lost = seq;
      return;
    }
    if (unbarriered.empty()) unbarriered.resize(kUnbarrieredMax);
    unbarriered[(ub_head + ub_count) % kUnbarrieredMax] = {seq, off, len};
    ++ub_count;
    ub_bytes += len;
  }
  // A barrier numbered `seq` is durable there: what was numbered before it is too.
  void BarrierAcked(uint64_t seq) {
    while (ub_count > 0 && unbarriered[ub_head].seq < seq) {
      ub_bytes -= unbarriered[ub_head].len;
      ub_head = (ub_head + 1) % kUnbarrieredMax;
      --ub_count;
    }
    if (unbarriered_lost != 0 && unbarriered_lost < seq) unbarriered_lost = 0;
  }
  bool UnbarrieredFull(uint64_t bytes_max) const {
    return ub_count >= kUnbarrieredMax / 2 || ub_bytes >= bytes_max;
  }
  // Into the dirty map: it lost power (REQUIRES: dirty valid, or the whole volume is copied).
  void MarkUnbarriered() {
    if (unbarriered_lost != 0) dirty.Invalidate();
    for (size_t i = 0; i < ub_count; ++i) {
      const Unbarriered& u = unbarriered[(ub_head + i) % kUnbarrieredMax];
      MarkDirty(u.off, u.len);
    }
    DropUnbarriered();
  }
  uint64_t UnbarrieredUnits() const {  // an upper bound (units of entries that overlap count twice)
    uint64_t n = 0;
    for (size_t i = 0; i < ub_count; ++i) {
      const Unbarriered& u = unbarriered[(ub_head + i) % kUnbarrieredMax];
      n += (u.off + u.len + kDirtyUnitBytes - 1) / kDirtyUnitBytes - u.off / kDirtyUnitBytes;
    }
    return n;
  }
  void DropUnbarriered() {
    ub_head = ub_count = 0;
    ub_bytes = 0;
    unbarriered_lost = 0;
  }
  // The replica's count of power losses at its last hello answered to this set (none yet:
  // !losses_known; a left-open record then copies the whole volume, see LostCopyReason).
  bool losses_known = false;
  uint64_t losses_seen = 0;
  bool IsDirty(uint64_t unit) const { return dirty.valid() && dirty.IsDirty(unit); }
  void SetState(LinkState s, const std::string& detail) {
    {
      std::lock_guard<std::mutex> l(set->info_mu_);
      if (info.state == s) {
        info.detail = detail;
        return;
      }
      info.state = s;
      info.detail = detail;
    }
    if (set->o_.on_link_state) set->o_.on_link_state(target.name, LinkStateName(s), detail);
  }

  // The connecting thread: connect, hello, reply; each within connect_timeout_ms.
  void Connect(replica_wire::HelloBody hello, uint64_t epoch, uint64_t timeout_ms) {
    sockaddr_in sa;
    int fd = -1;
    std::string err;
    if (!replica_internal::SplitAddress(target.address, &sa)) {
      err = "bad address '" + target.address + "' (want IPv4 HOST:PORT)";
    } else if ((fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0) {
      err = std::string("socket: ") + std::strerror(errno);
    } else {
      const uint64_t deadline = MonotonicNs() + timeout_ms * 1'000'000;
      int rc = connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
      if (rc < 0 && errno == EINPROGRESS) {
        int soerr = ETIMEDOUT;
        if (replica_internal::WaitFd(fd, POLLOUT, deadline)) {
          socklen_t len = sizeof soerr;
          getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
        }
        rc = soerr == 0 ? 0 : -1;
        errno = soerr;
      }
      gnutls_session_t tls = nullptr;
      if (rc < 0) {
        err = std::string("connect: ") + std::strerror(errno);
      } else if (set->o_.tls != nullptr) {
        Result<gnutls_session_t> t = set->o_.tls->NewClientSession(fd, target.name);
        std::string why;
        if (!t.ok()) {
          err = t.status().ToString();
        } else if (tls = *t;
                   !TlsHandshakeUntil(tls, fd, MonotonicNs() + timeout_ms * 1'000'000, &why)) {
          err = "TLS handshake: " + why;
        }
      }
      conn_tls = tls;
      auto io = [&](void* buf, size_t n, bool out, uint64_t deadline) {
        return tls ? TlsIoAll(tls, fd, buf, n, out, deadline)
                   : replica_internal::IoAll(fd, buf, n, out, deadline);
      };
      if (err.empty()) {
        const int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
        if (set->o_.sndbuf_bytes != 0) {
          const int b = static_cast<int>(set->o_.sndbuf_bytes);
          setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &b, sizeof b);
        }
        replica_wire::Header h;
        h.type = static_cast<uint16_t>(replica_wire::Type::kHello);
        h.epoch = epoch;
        h.length = sizeof hello;
        h.crc = Crc32c(0, &hello, sizeof hello);
        uint8_t b[replica_wire::kHeaderBytes];
        replica_wire::EncodeHeader(h, b);
        const uint64_t hello_deadline = MonotonicNs() + timeout_ms * 1'000'000;
        replica_wire::Header rh;
        if (!io(b, sizeof b, true, hello_deadline) ||
            !io(&hello, sizeof hello, true, hello_deadline) ||
            !io(b, sizeof b, false, hello_deadline)) {
          err = "no hello reply within " + std::to_string(timeout_ms) + " ms";
        } else if (std::string bad = replica_wire::DecodeHeader(b, 0, &rh);
                   !bad.empty() ||
                   rh.type != static_cast<uint16_t>(replica_wire::Type::kHelloReply)) {
          err = "bad hello reply: " + (bad.empty() ? std::string("wrong type") : bad);
        } else {
          // The body, then the replica's activity ranges (the length was checked by Decode).
          reply_ranges.resize((rh.length - sizeof reply) / sizeof(replica_wire::ActivityRange));
          const size_t rb = reply_ranges.size() * sizeof(replica_wire::ActivityRange);
          if (!io(&reply, sizeof reply, false, hello_deadline) ||
              (rb > 0 && !io(reply_ranges.data(), rb, false, hello_deadline)) ||
              Crc32c(Crc32c(0, &reply, sizeof reply), reply_ranges.data(), rb) != rh.crc ||
              reply.activity_ranges != reply_ranges.size())
            err = "hello reply body lost or corrupt";
        }
      }
    }
    if (!err.empty() && fd >= 0) {
      if (conn_tls != nullptr) gnutls_deinit(conn_tls);
      conn_tls = nullptr;
      close(fd);
      fd = -1;
    }
    conn_fd = fd;
    conn_error = err;
    set->owner_->Post(&connected);
  }
};

}  // namespace spd
