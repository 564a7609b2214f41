// NbdConnection's send side: replies queued in order, sent with sendmsg (or as TLS records),
// the writable poll when the socket is full, and the stall timer for a peer that stops reading.
#include <sys/socket.h>

#include <cerrno>
#include <climits>

#include "frontend/nbd/nbd_connection.h"
#include "frontend/nbd/nbd_connection_internal.h"

namespace spd {

using namespace nbd_conn;  // NOLINT: the connection's own counters

void NbdConnection::AdvanceSent(size_t left) {
  tx_bytes_ += left;
  while (send_head_ && left > 0) {
    NbdSlot* s = send_head_;
    size_t rem = s->iov[s->iov_sent].iov_len - s->iov_off;
    if (left >= rem) {
      left -= rem;
      s->iov_sent++;
      s->iov_off = 0;
    } else {
      s->iov_off += left;
      left = 0;
    }
    if (s->iov_sent == s->iov_count) {
      send_head_ = s->next;
      if (!send_head_) send_tail_ = nullptr;
      ReleaseSlot(s);
    }
  }
}

void NbdConnection::FlushOut() {
  if (closed_ || send_failed_) return;
  // Negotiation bytes first.
  while (handshake_ && !handshake_->output().empty()) {
    const auto& out = handshake_->output();
    // Not while the TLS handshake runs: GnuTLS owns the socket then (nothing is queued).
    if (tls_ != nullptr && !tls_up_) break;
    ssize_t n = Send(out.data(), out.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) goto wait_writable;
      send_failed_ = true;
      send_errors_total.Add();
      BeginClose("send failed");
      return;
    }
    handshake_->ConsumeOutput(static_cast<size_t>(n));
  }
  while (send_head_) {
    if (tls_up_) {
      ssize_t n = SendQueuedTls();
      if (n < 0) {
        if (errno == EAGAIN) goto wait_writable;
        goto send_error;
      }
      AdvanceSent(static_cast<size_t>(n));
      continue;
    }
    iovec iov[IOV_MAX];
    int cnt = 0;
    for (NbdSlot* s = send_head_; s && cnt < IOV_MAX; s = s->next) {
      for (size_t i = (s == send_head_ ? s->iov_sent : 0); i < s->iov_count && cnt < IOV_MAX; ++i) {
        iov[cnt] = s->iov[i];
        if (s == send_head_ && i == s->iov_sent) {
          iov[cnt].iov_base = static_cast<uint8_t*>(iov[cnt].iov_base) + s->iov_off;
          iov[cnt].iov_len -= s->iov_off;
        }
        ++cnt;
      }
    }
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = static_cast<size_t>(cnt);
    ssize_t n = sendmsg(fd_, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) goto wait_writable;
      goto send_error;
    }
    AdvanceSent(static_cast<size_t>(n));
  }
  return;
send_error:
  send_failed_ = true;
  send_errors_total.Add();
  // The peer is gone: drop every queued reply.
  while (send_head_) {
    NbdSlot* s = send_head_;
    send_head_ = s->next;
    ReleaseSlot(s);
  }
  send_tail_ = nullptr;
  BeginClose("send failed");
  return;
wait_writable:
  if (!tx_armed_ && reactor_->engine() == ReactorEngine::kUring) {
    if (reactor_->ArmWritable(fd_, &tx_watch_).ok()) tx_armed_ = true;
  }
  MaybeArmStall(/*send_blocked=*/true);
}

void NbdConnection::MaybeArmStall(bool send_blocked) {
  const uint64_t ms = server_->options_.stall_timeout_ms;
  if (ms == 0 || closing_ || negotiating_ || stall_timer_.heap_index != SIZE_MAX) return;
  // Replies merely queued go out at the end of this tick: only a send that would block waits
  // for the peer (so the common path arms nothing).
  const bool rx_wait = rx_state_ == RxState::kPayload || rx_state_ == RxState::kDiscard;
  if (!rx_wait && !(send_blocked && send_head_ != nullptr)) return;
  stall_rx_mark_ = rx_bytes_;
  stall_tx_mark_ = tx_bytes_;
  reactor_->ArmTimer(&stall_timer_, MonotonicNs() + ms * 1'000'000);
}

void NbdConnection::OnStallTimer(Timer* t) {
  NbdConnection* self = static_cast<ConnTimer*>(t)->conn;
  if (self->closing_) return;
  const bool rx_wait = self->rx_state_ == RxState::kPayload || self->rx_state_ == RxState::kDiscard;
  const bool tx_wait = self->send_head_ != nullptr;
  if ((rx_wait && self->rx_bytes_ == self->stall_rx_mark_) ||
      (tx_wait && self->tx_bytes_ == self->stall_tx_mark_)) {
    // The peer has not moved for a whole stall timeout: a payload that stopped arriving, or
    // replies nobody reads. Its queued replies can never be delivered: drop them with it.
    stall_timeouts_total.Add();
    self->send_failed_ = true;
    self->BeginClose(rx_wait ? "write payload stalled" : "client stopped reading replies");
    self->MaybeFinishClose();
    return;
  }
  self->MaybeArmStall(tx_wait);  // still waiting, but it moved: look again a timeout later
}

}  // namespace spd
