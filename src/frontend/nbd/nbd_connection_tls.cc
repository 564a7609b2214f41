// NbdConnection's TLS transport (NBD_OPT_STARTTLS): the handshake driven on the non-blocking
// socket, reads through the connection's read-ahead buffer, records sent from its reply queue.
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/log.h"
#include "frontend/nbd/nbd_connection.h"
#include "frontend/nbd/nbd_connection_internal.h"

namespace spd {

using namespace nbd_conn;  // NOLINT: the connection's own counters

bool NbdConnection::DriveTlsHandshake() {
  if (closing_) return false;
  // The ACK of STARTTLS (and whatever came before it) goes out in plaintext first.
  if (handshake_ && !handshake_->output().empty()) {
    FlushOut();
    if (closing_ || !handshake_->output().empty()) return false;  // writable will bring us back
  }
  if (tls_ == nullptr) {
    // The session's memory comes out of the NBD budget, leaving room for one request of the
    // advertised maximum as negotiated connections' slots do. No room: the connection closes
    // (a TLS client cannot go on without TLS).
    const uint64_t headroom = NbdBufferPool::ClassBytes(server_->options_.request_bytes_max);
    if (!pool()->Charge(TlsBytes(), headroom)) {
      SPD_LOG_WARN("nbd %s: no memory for a TLS session (--nbd-memory-max): closing",
                   peer_.c_str());
      tls_memory_refusals_total.Add();
      tls_handshake_failures_total.Add();
      handshake_failures_total.Add();
      BeginClose("no memory for a TLS session");
      return false;
    }
    charged_bytes_ += TlsBytes();
    auto s = server_->tls()->NewSession(fd_);
    if (!s.ok()) {
      SPD_LOG_WARN("nbd %s: %s", peer_.c_str(), s.status().ToString().c_str());
      tls_handshake_failures_total.Add();
      handshake_failures_total.Add();
      BeginClose("TLS session setup failed");
      return false;
    }
    tls_ = s.value();
    tls_sessions_gauge.Add(1);
    tls_in_.reset(new uint8_t[kTlsInBytes]);
    // Reads through our read-ahead buffer; writes straight to the socket (GnuTLS's own).
    gnutls_transport_set_ptr2(tls_, this, reinterpret_cast<void*>(static_cast<intptr_t>(fd_)));
    gnutls_transport_set_pull_function(tls_, &NbdConnection::TlsPull);
    gnutls_transport_set_pull_timeout_function(tls_, &NbdConnection::TlsPullTimeout);
  }
  for (;;) {
    const int rc = gnutls_handshake(tls_);
    if (rc == GNUTLS_E_SUCCESS) break;
    if (rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED) {
      // Waiting for the peer; reads are announced by the connection's poll, writes need one.
      if (gnutls_record_get_direction(tls_) == 1 && !tx_armed_ &&
          reactor_->engine() == ReactorEngine::kUring &&
          reactor_->ArmWritable(fd_, &tx_watch_).ok())
        tx_armed_ = true;
      return false;
    }
    if (!gnutls_error_is_fatal(rc)) continue;  // a warning alert: go on
    SPD_LOG_INFO("nbd %s: TLS handshake failed: %s", peer_.c_str(), gnutls_strerror(rc));
    gnutls_alert_send_appropriate(tls_, rc);  // tell the client why, if the socket takes it
    tls_handshake_failures_total.Add();
    handshake_failures_total.Add();
    send_failed_ = true;  // nothing more can be sent on this socket
    BeginClose("TLS handshake failed");
    return false;
  }
  tls_up_ = true;
  tls_sessions_total.Add();
  std::string identity = NbdTlsCredentials::Identity(tls_);
  if (GetLogLevel() <= LogLevel::kDebug) {
    char* desc = gnutls_session_get_desc(tls_);
    SPD_LOG_DEBUG("nbd %s: TLS up %s, identity '%s'", peer_.c_str(), desc ? desc : "",
                  identity.c_str());
    gnutls_free(desc);
  }
  handshake_->TlsStarted(std::move(identity));
  rx_state_ = RxState::kHandshake;
  return true;
}

ssize_t NbdConnection::TlsPull(void* p, void* buf, size_t n) {
  auto* self = static_cast<NbdConnection*>(p);
  if (self->tls_in_start_ == self->tls_in_end_) {
    if (const uint32_t ms = self->server_->options_.test_tls_handshake_read_delay_ms;
        ms > 0 && !self->tls_up_)
      usleep(ms * 1000);
    ssize_t k;
    do {
      k = recv(self->fd_, self->tls_in_.get(), kTlsInBytes, MSG_DONTWAIT);
    } while (k < 0 && errno == EINTR);
    if (k < 0) {
      gnutls_transport_set_errno(self->tls_, errno);
      return -1;
    }
    if (k == 0) return 0;
    self->rx_bytes_ += static_cast<uint64_t>(k);
    self->tls_in_start_ = 0;
    self->tls_in_end_ = static_cast<size_t>(k);
  }
  const size_t take = std::min(n, self->tls_in_end_ - self->tls_in_start_);
  std::memcpy(buf, self->tls_in_.get() + self->tls_in_start_, take);
  self->tls_in_start_ += take;
  return static_cast<ssize_t>(take);
}

int NbdConnection::TlsPullTimeout(void* p, unsigned ms) {
  auto* self = static_cast<NbdConnection*>(p);
  if (self->tls_in_start_ != self->tls_in_end_) return 1;
  // Only ever asked with 0 here (no GnuTLS timeouts are set): never blocks the reactor.
  pollfd pf{self->fd_, POLLIN, 0};
  return poll(&pf, 1, 0);
}

ssize_t NbdConnection::Receive(uint8_t* dst, size_t room) {
  if (!tls_up_) return recv(fd_, dst, room, MSG_DONTWAIT);
  for (;;) {
    const ssize_t n = gnutls_record_recv(tls_, dst, room);
    if (n >= 0) return n;  // 0: the client sent close_notify
    if (n == GNUTLS_E_INTERRUPTED) continue;
    if (n == GNUTLS_E_AGAIN) {
      errno = EAGAIN;
      return -1;
    }
    if (n == GNUTLS_E_PREMATURE_TERMINATION) return 0;  // closed without close_notify
    // A bad record, a renegotiation attempt (refused), an alert: the session is over.
    SPD_LOG_DEBUG("nbd %s: TLS receive: %s", peer_.c_str(), gnutls_strerror(static_cast<int>(n)));
    errno = EPROTO;
    return -1;
  }
}

ssize_t NbdConnection::Send(const uint8_t* p, size_t n) {
  if (!tls_up_) return send(fd_, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
  for (;;) {
    // After GNUTLS_E_AGAIN GnuTLS keeps the encrypted record and the next call sends it and
    // returns its size, whatever it is given: the caller offers the same bytes again (the
    // head of its queue, possibly longer by then), so the count matches what it offered first.
    const ssize_t k = gnutls_record_send(tls_, p, std::min(n, kTlsRecordBytes));
    if (k >= 0) return k;
    if (k == GNUTLS_E_INTERRUPTED) continue;
    if (k == GNUTLS_E_AGAIN) {
      errno = EAGAIN;
      return -1;
    }
    errno = EPIPE;
    return -1;
  }
}

ssize_t NbdConnection::SendQueuedTls() {
  // One record from the head of the queue: straight from a large iovec, else gathered.
  NbdSlot* head = send_head_;
  const iovec& first = head->iov[head->iov_sent];
  if (first.iov_len - head->iov_off >= kTlsRecordBytes)
    return Send(static_cast<const uint8_t*>(first.iov_base) + head->iov_off, kTlsRecordBytes);
  if (!tls_stage_) tls_stage_.reset(new uint8_t[kTlsRecordBytes]);
  size_t used = 0;
  for (NbdSlot* s = head; s && used < kTlsRecordBytes; s = s->next) {
    for (size_t i = (s == head ? s->iov_sent : 0); i < s->iov_count && used < kTlsRecordBytes;
         ++i) {
      const size_t off = (s == head && i == s->iov_sent) ? s->iov_off : 0;
      const size_t take = std::min(s->iov[i].iov_len - off, kTlsRecordBytes - used);
      std::memcpy(tls_stage_.get() + used, static_cast<const uint8_t*>(s->iov[i].iov_base) + off,
                  take);
      used += take;
    }
  }
  return Send(tls_stage_.get(), used);
}

}  // namespace spd
