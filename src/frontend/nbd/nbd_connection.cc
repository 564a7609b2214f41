#include "frontend/nbd/nbd_connection.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>

#include "common/counters.h"
#include "common/log.h"
#include "common/peer_uid.h"
#include "common/trace.h"
#include "dispatch/request_probes.h"
#include "frontend/nbd/nbd_connection_internal.h"
#include "frontend/nbd/proto/nbd_format.h"

namespace spd {
namespace {

IoClass ClassOf(uint16_t type) {
  switch (type) {
    case nbd::kCmdRead:
      return IoClass::kRead;
    case nbd::kCmdWrite:
      return IoClass::kWrite;
    case nbd::kCmdFlush:
      return IoClass::kFlush;
    case nbd::kCmdTrim:
    case nbd::kCmdWriteZeroes:
      return IoClass::kDiscard;
    case nbd::kCmdBlockStatus:
      return IoClass::kBlockStatus;
    default:
      return IoClass::kOther;
  }
}

// Payloads at least this large are received straight into the request buffer.
constexpr uint32_t kDirectRecvBytes = 64u << 10;
constexpr size_t kBlockStatusExtentsMax = 128;

}  // namespace

using namespace nbd_conn;  // NOLINT: this file's own counters

uint64_t NbdConnection::TransmissionBytes(const NbdServerOptions& o) {
  return o.recv_buffer_bytes +
         uint64_t{o.conn_inflight_max} *
             (sizeof(NbdSlot) + (kBlockStatusExtentsMax + 1) * sizeof(Extent));
}

uint64_t NbdConnection::TlsBytes() {
  return kTlsInBytes + kTlsRecordBytes + kTlsSessionEstimateBytes;
}

NbdBufferPool* NbdConnection::pool() const {
  return static_cast<NbdServer::Shard*>(shard)->pool.get();
}

NbdConnection::NbdConnection(NbdServer* server, Reactor* reactor, int fd, std::string peer,
                             bool tcp)
    : server_(server), reactor_(reactor), fd_(fd), peer_(std::move(peer)), tcp_(tcp) {
  start_task.conn = this;
  rx_watch_.conn = this;
  rx_watch_.fn = &NbdConnection::OnReadable;
  tx_watch_.conn = this;
  tx_watch_.fn = &NbdConnection::OnWritable;
  flush_task_.fn = &NbdConnection::OnFlushTask;
  flush_task_.conn = this;
  timer_.conn = this;
  timer_.fn = &NbdConnection::OnTimer;
  stall_timer_.conn = this;
  stall_timer_.fn = &NbdConnection::OnStallTimer;
  mem_waiter_.conn = this;
  mem_waiter_.fn = &NbdConnection::OnMemory;
  SetCountedState(CountedState::kNegotiating);
  const trace::SpanId id = trace::NewSpanId();
  std::memcpy(conn_id_, id.b, sizeof conn_id_);
}

NbdConnection::~NbdConnection() {
  if (stats_) volume_->io_stats.Detach(stats_);  // volumes outlive connections (tombstones)
  if (handle_) handle_->RemoveUser();
  reactor_->CancelTimer(&timer_);
  reactor_->CancelTimer(&stall_timer_);
  LeaveNegotiation();
  NbdBufferPool* p = shard ? pool() : nullptr;
  if (p) p->CancelWait(&mem_waiter_);
  if (slots_) {
    for (uint32_t i = 0; i < server_->options_.conn_inflight_max; ++i)
      if (slots_[i].buf) p->Give(slots_[i].buf, slots_[i].buf_bytes);
  }
  if (charged_bytes_ > 0) p->Uncharge(charged_bytes_);
  if (tls_) {
    gnutls_deinit(tls_);
    tls_sessions_gauge.Add(-1);
  }
  if (fd_ >= 0) close(fd_);
  SetCountedState(CountedState::kNone);
}

Status NbdConnection::Start() {
  const NbdServerOptions& o = server_->options_;
  // Only what negotiation needs: slots and the large receive buffer come with transmission, so
  // a socket that never negotiates costs a few KiB.
  rx_size_ = o.negotiation_buffer_bytes;
  rx_.reset(new uint8_t[rx_size_]);
  const nbd::TlsMode tls =
      (tcp_ || o.tls_unix) && server_->tls() != nullptr ? o.tls_mode : nbd::TlsMode::kOff;
  const nbd::ExportAuthorizer* authorize = &o.authorize;
  // A client on this host is who its uid says: on the unix socket, and on TCP over loopback.
  if (o.authorize_uid && (!tcp_ || PeerIsLoopback(fd_))) {
    uid_policy_ = true;
    Result<uint32_t> uid = PeerUid(fd_);
    if (uid.ok()) {
      uid_known_ = true;
      uid_ = *uid;
    } else {
      SPD_LOG_WARN("nbd %s: cannot tell the client's uid, it may open no volume: %s", peer_.c_str(),
                   uid.status().ToString().c_str());
    }
    authorize_ = [this](std::string_view identity, std::string_view export_name) {
      const NbdServerOptions& so = server_->options_;
      if (!UidDecides()) return !so.authorize || so.authorize(identity, export_name);
      return uid_known_ && so.authorize_uid(uid_, export_name);
    };
    authorize = &authorize_;
  }
  handshake_ =
      std::make_unique<nbd::Handshake>(server_->catalog(), nbd::HandshakeLimits{}, tls, authorize);
  auto* sh = static_cast<NbdServer::Shard*>(shard);
  if (negotiating_) {
    neg_prev = sh->neg_tail;
    if (sh->neg_tail) {
      sh->neg_tail->neg_next = this;
    } else {
      sh->neg_head = this;
    }
    sh->neg_tail = this;
  }
  if (o.handshake_timeout_ms > 0)
    reactor_->ArmTimer(&timer_, MonotonicNs() + o.handshake_timeout_ms * 1'000'000);
  SPD_RETURN_IF_ERROR(reactor_->WatchOnce(fd_, &rx_watch_));
  rx_poll_active_ = true;
  FlushOut();  // the greeting
  return Status::Ok();
}

void NbdConnection::Drain() { BeginClose("server shutting down"); }

void NbdConnection::CloseForDelete() {
  closed_for_delete_total.Add();
  BeginClose("volume deleted");
}

void NbdConnection::Evict() {
  if (!negotiating_ || closing_) return;
  handshake_evictions_total.Add();
  BeginClose("displaced by a newer connection while negotiating");
}

void NbdConnection::LeaveNegotiation() {
  if (!negotiating_) return;
  negotiating_ = false;
  auto* sh = static_cast<NbdServer::Shard*>(shard);
  if (sh == nullptr) return;
  // Linked only once Start ran; a connection evicted or closed before that is not in the list.
  if (neg_prev || sh->neg_head == this) {
    if (neg_prev) {
      neg_prev->neg_next = neg_next;
    } else {
      sh->neg_head = neg_next;
    }
    if (neg_next) {
      neg_next->neg_prev = neg_prev;
    } else {
      sh->neg_tail = neg_prev;
    }
  }
  neg_prev = neg_next = nullptr;
  sh->negotiating.fetch_sub(1, std::memory_order_relaxed);
  server_->negotiating_.fetch_sub(1, std::memory_order_relaxed);
}

void NbdConnection::OnTimer(Timer* t) {
  NbdConnection* self = static_cast<ConnTimer*>(t)->conn;
  if (self->closing_) return;
  const NbdServerOptions& o = self->server_->options_;
  const uint64_t now = MonotonicNs();
  if (self->negotiating_) {
    handshake_timeouts_total.Add();
    self->BeginClose("negotiation timed out");
    self->MaybeFinishClose();
    return;
  }
  if (o.idle_timeout_ms == 0) return;
  const uint64_t idle_ns = o.idle_timeout_ms * 1'000'000;
  // A request in flight (or a payload still arriving) is activity, however long it takes.
  if (self->inflight_ > 0 || self->rx_state_ == RxState::kSetup) self->last_request_ns_ = now;
  if (now - self->last_request_ns_ >= idle_ns) {
    idle_timeouts_total.Add();
    self->BeginClose("idle timeout");
    self->MaybeFinishClose();
    return;
  }
  self->reactor_->ArmTimer(&self->timer_, self->last_request_ns_ + idle_ns);
}

void NbdConnection::OnMemory(NbdMemoryWaiter* w) {
  NbdConnection* self = static_cast<MemWaiter*>(w)->conn;
  if (!self->closing_ && self->stalled_) self->Resume();
  self->MaybeFinishClose();
}

void NbdConnection::OnReadable(Completion* c, int32_t res, uint32_t flags) {
  NbdConnection* self = static_cast<Watcher*>(c)->conn;
  const bool uring = self->reactor_->engine() == ReactorEngine::kUring;
  if (uring) {
    // One-shot poll: re-armed after each event while the connection lives. Re-arming before
    // reading is safe: an event that arrives meanwhile fires the new poll.
    self->rx_poll_active_ = false;
    // Not while stalled on the in-flight limit: the unread bytes would fire the poll at once,
    // again and again, until a slot frees. Resume() re-arms it.
    if (!self->closing_ && res >= 0 && !self->stalled_) {
      if (self->reactor_->WatchOnce(self->fd_, &self->rx_watch_).ok()) {
        self->rx_poll_active_ = true;
      }
    }
  }
  if (res < 0) {
    if (res != -ECANCELED) self->BeginClose("poll failed");
    self->MaybeFinishClose();
    return;
  }
  if (res & POLLOUT) self->FlushOut();
  // The TLS handshake may wait for either direction: any event moves it.
  if ((res & (POLLIN | POLLRDHUP | POLLHUP | POLLERR)) || self->rx_state_ == RxState::kTlsHandshake)
    self->ReadAll();
  self->MaybeArmStall(/*send_blocked=*/false);
  self->MaybeFinishClose();
}

void NbdConnection::OnWritable(Completion* c, int32_t res, uint32_t flags) {
  NbdConnection* self = static_cast<Watcher*>(c)->conn;
  self->tx_armed_ = false;
  if (res >= 0) self->FlushOut();
  if (res >= 0 && self->rx_state_ == RxState::kTlsHandshake) self->ReadAll();
  self->MaybeFinishClose();
}

void NbdConnection::OnFlushTask(Task* t) {
  NbdConnection* self = static_cast<FlushTask*>(t)->conn;
  self->flush_scheduled_ = false;
  self->FlushOut();
  if (self->stalled_ && !self->closing_) self->Resume();
  self->MaybeFinishClose();
}

void NbdConnection::ScheduleFlush() {
  // After close the connection is about to be deleted at the end of this tick.
  if (flush_scheduled_ || closed_) return;
  flush_scheduled_ = true;
  reactor_->Defer(&flush_task_);
}

void NbdConnection::Resume() {
  stalled_ = false;
  if (!rx_poll_active_ && reactor_->engine() == ReactorEngine::kUring &&
      reactor_->WatchOnce(fd_, &rx_watch_).ok())
    rx_poll_active_ = true;
  if (ProcessRx()) ReadAll();
}

void NbdConnection::ReadAll() {
  if (rx_state_ == RxState::kTlsHandshake && !closing_) {
    // Once it is up, read on at once: what the client sent right after its handshake may
    // already sit in our read-ahead buffer or in GnuTLS, where no poll announces it.
    if (!DriveTlsHandshake() || !ProcessRx()) return;
  }
  while (!closing_ && !stalled_) {
    uint8_t* dst;
    size_t room;
    bool direct = false;
    if (rx_state_ == RxState::kPayload && rx_start_ == rx_end_ &&
        payload_slot_->req.length - payload_slot_->payload_have >= kDirectRecvBytes) {
      direct = true;
      dst = payload_slot_->buf + payload_slot_->payload_have;
      room = payload_slot_->req.length - payload_slot_->payload_have;
    } else {
      if (rx_start_ == rx_end_) {
        rx_start_ = rx_end_ = 0;
      } else if (rx_end_ == rx_size_ || rx_start_ > rx_size_ / 2) {
        std::memmove(rx_.get(), rx_.get() + rx_start_, rx_end_ - rx_start_);
        rx_end_ -= rx_start_;
        rx_start_ = 0;
      }
      dst = rx_.get() + rx_end_;
      room = rx_size_ - rx_end_;
      SPD_ASSERT(room > 0);
    }
    ssize_t n = Receive(dst, room);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) BeginClose(tls_up_ ? "TLS receive failed" : "recv failed");
      return;
    }
    if (n > 0) rx_bytes_ += static_cast<uint64_t>(n);
    if (n == 0) {
      eof_ = true;
      if (rx_state_ == RxState::kPayload || rx_state_ == RxState::kDiscard) truncated_total.Add();
      if (rx_state_ == RxState::kHandshake) handshake_failures_total.Add();
      BeginClose("client closed the connection");
      return;
    }
    // A short read drained the socket. On io_uring the one-shot poll was re-armed before this
    // loop and is evaluated when submitted, so it fires for bytes arriving later: skip the recv
    // that would only say EAGAIN (one syscall of about five per request at QD1). Edge-triggered
    // epoll needs that EAGAIN.
    // Under TLS a short read is one record: more may wait in GnuTLS, unannounced by any poll.
    bool drained = static_cast<size_t>(n) < room && rx_poll_active_ &&
                   reactor_->engine() == ReactorEngine::kUring && !TlsBuffered();
    if (direct) {
      payload_slot_->payload_have += static_cast<uint32_t>(n);
      if (payload_slot_->payload_have == payload_slot_->req.length) {
        NbdSlot* s = payload_slot_;
        payload_slot_ = nullptr;
        rx_state_ = RxState::kHeader;
        Dispatch(s);
      }
    } else {
      rx_end_ += static_cast<size_t>(n);
    }
    if (!ProcessRx()) return;
    // ProcessRx may have run a whole TLS handshake (a STARTTLS read in plaintext, then the
    // client's hello and finished already waiting): whatever the client sent after its
    // finished is in our read-ahead buffer now, which no poll announces.
    if (drained && !TlsBuffered()) return;
  }
}

bool NbdConnection::ProcessRx() {
  for (;;) {
    if (closing_) return false;
    size_t avail = rx_end_ - rx_start_;
    switch (rx_state_) {
      case RxState::kHandshake:
        if (!ProcessHandshake()) return false;
        if (rx_state_ == RxState::kHandshake) return true;  // needs more bytes
        break;
      case RxState::kTlsHandshake:
        if (!DriveTlsHandshake()) return false;
        break;
      case RxState::kSetup:
        if (!EnterTransmission()) return false;
        break;
      case RxState::kHeader:
        if (avail < nbd::kRequestHeaderBytes) return true;
        if (!ProcessHeader()) return false;
        break;
      case RxState::kBuffer:
        if (!AttachBuffer(buffer_slot_)) return false;
        break;
      case RxState::kPayload: {
        NbdSlot* s = payload_slot_;
        uint32_t want = s->req.length - s->payload_have;
        uint32_t take = static_cast<uint32_t>(std::min<size_t>(want, avail));
        std::memcpy(s->buf + s->payload_have, rx_.get() + rx_start_, take);
        rx_start_ += take;
        s->payload_have += take;
        if (s->payload_have < s->req.length) return true;
        payload_slot_ = nullptr;
        rx_state_ = RxState::kHeader;
        Dispatch(s);
        break;
      }
      case RxState::kDiscard: {
        uint64_t take = std::min<uint64_t>(discard_left_, avail);
        rx_start_ += take;
        discard_left_ -= take;
        if (discard_left_ > 0) return true;
        NbdSlot* s = payload_slot_;
        payload_slot_ = nullptr;
        rx_state_ = RxState::kHeader;
        Complete(s);
        break;
      }
      case RxState::kClosing:
        return false;
    }
  }
}

bool NbdConnection::UidDecides() const {
  // A TLS identity decides once TLS is up; TLS without one (x509 without a CA) leaves it to the
  // uid.
  return uid_policy_ && (!handshake_->tls() || handshake_->tls_identity().empty());
}

void NbdConnection::NoteDenials() {
  if (handshake_->denials() == denials_seen_) return;
  denials_seen_ = handshake_->denials();
  if (uid_refused_ || !UidDecides()) return;
  uid_refused_ = true;
  uid_refusals_total.Add();
  const std::string& name = handshake_->last_denied();
  const std::string uid = uid_known_ ? std::to_string(uid_) : "unknown";
  SPD_LOG_WARN("nbd %s: uid %s may not use export '%s' (docs/nbd.md, who may connect): refused",
               peer_.c_str(), uid.c_str(), name.empty() ? "(default)" : name.c_str());
}

bool NbdConnection::ProcessHandshake() {
  size_t avail = rx_end_ - rx_start_;
  size_t used = handshake_->Feed(rx_.get() + rx_start_, avail);
  rx_start_ += used;
  NoteDenials();
  FlushOut();
  switch (handshake_->state()) {
    case nbd::Handshake::State::kNegotiating:
      return true;
    case nbd::Handshake::State::kStartTls:
      // The client must wait for the ACK before it starts TLS: bytes already here were sent in
      // plaintext after STARTTLS, and taking them as TLS (or as options) would let a man in the
      // middle inject them.
      if (rx_end_ != rx_start_) {
        handshake_failures_total.Add();
        tls_handshake_failures_total.Add();
        BeginClose("bytes after NBD_OPT_STARTTLS before its reply");
        return false;
      }
      rx_state_ = RxState::kTlsHandshake;
      return true;
    case nbd::Handshake::State::kClose:
      handshake_failures_total.Add();
      BeginClose(handshake_->close_reason().empty() ? "negotiation ended"
                                                    : handshake_->close_reason().c_str());
      return false;
    case nbd::Handshake::State::kTransmission: {
      export_ = handshake_->selected();
      // The export may have been replaced (resized) or removed since the client chose it; a
      // volume being deleted takes no new users.
      std::shared_ptr<VolumeHandle> h = server_->HandleOf(export_);
      if (!h || !h->AddUser()) {
        handshake_failures_total.Add();
        BeginClose("the volume changed or is being deleted during negotiation");
        return false;
      }
      handle_ = std::move(h);
      volume_ = handle_->volume();
      if (volume_ == nullptr) {
        BeginClose("the volume was deleted during negotiation");
        return false;
      }
      if (server_->options_.volume_stats) stats_ = volume_->io_stats.Attach();
      SPD_LOG_DEBUG("nbd %s: export '%s' structured=%d", peer_.c_str(), export_->name.c_str(),
                    handshake_->structured_replies());
      LeaveNegotiation();
      SetCountedState(CountedState::kTransmission);
      reactor_->CancelTimer(&timer_);
      last_request_ns_ = MonotonicNs();
      if (server_->options_.idle_timeout_ms > 0)
        reactor_->ArmTimer(&timer_,
                           last_request_ns_ + server_->options_.idle_timeout_ms * 1'000'000);
      rx_state_ = RxState::kSetup;
      return true;
    }
  }
  return false;
}

bool NbdConnection::EnterTransmission() {
  const NbdServerOptions& o = server_->options_;
  const uint64_t bytes = TransmissionBytes(o);
  // Leave room for one request of the advertised maximum, so that slots of idle connections
  // can never keep a request from ever getting its buffer.
  const uint64_t headroom = NbdBufferPool::ClassBytes(o.request_bytes_max);
  if (!pool()->Charge(bytes, headroom)) {
    if (!stalled_) memory_backpressure_total.Add();
    stalled_ = true;
    pool()->Wait(&mem_waiter_, bytes + headroom);
    return false;
  }
  charged_bytes_ += bytes;
  // Bytes the client sent right after negotiating move to the transmission buffer.
  const size_t left = rx_end_ - rx_start_;
  std::unique_ptr<uint8_t[]> rx(new uint8_t[o.recv_buffer_bytes]);
  SPD_ASSERT(left <= o.recv_buffer_bytes);
  std::memcpy(rx.get(), rx_.get() + rx_start_, left);
  rx_ = std::move(rx);
  rx_size_ = o.recv_buffer_bytes;
  rx_start_ = 0;
  rx_end_ = left;
  slots_.reset(new NbdSlot[o.conn_inflight_max]);
  for (uint32_t i = 0; i < o.conn_inflight_max; ++i) {
    slots_[i].conn = this;
    slots_[i].extents.reserve(kBlockStatusExtentsMax + 1);
    slots_[i].next = free_;
    free_ = &slots_[i];
  }
  rx_state_ = RxState::kHeader;
  return true;
}

bool NbdConnection::AttachBuffer(NbdSlot* s) {
  const uint32_t len = s->req.length;
  bool enomem = false;
  uint8_t* b = pool()->Take(len, &enomem);
  if (b == nullptr && !enomem) {
    // The budget is spent: stop reading until memory comes back (the request keeps its slot).
    if (!stalled_) memory_backpressure_total.Add();
    stalled_ = true;
    buffer_slot_ = s;
    rx_state_ = RxState::kBuffer;
    pool()->Wait(&mem_waiter_, NbdBufferPool::ClassBytes(len));
    return false;
  }
  buffer_slot_ = nullptr;
  rx_state_ = RxState::kHeader;
  if (b == nullptr) {
    s->reply_error = nbd::kENoMem;
    if (s->req.type == nbd::kCmdWrite) {
      payload_slot_ = s;
      discard_left_ = len;
      rx_state_ = RxState::kDiscard;
      return true;
    }
    Complete(s);
    return true;
  }
  s->buf = b;
  s->buf_bytes = len;
  inflight_bytes_ += len;
  if (s->req.type == nbd::kCmdWrite) {
    s->payload_have = 0;
    payload_slot_ = s;
    rx_state_ = RxState::kPayload;
    return true;
  }
  Dispatch(s);
  return true;
}

bool NbdConnection::ProcessHeader() {
  const NbdServerOptions& o = server_->options_;
  if (free_ == nullptr || inflight_bytes_ >= o.conn_inflight_bytes_max) {
    if (!stalled_) backpressure_total.Add();
    stalled_ = true;
    return false;
  }
  nbd::Request req;
  nbd::ParseResult pr = nbd::ParseRequest(rx_.get() + rx_start_, rx_end_ - rx_start_, &req);
  if (pr == nbd::ParseResult::kNeedMore) return true;
  if (pr == nbd::ParseResult::kBadMagic) {
    bad_magic_total.Add();
    BeginClose("bad request magic");
    return false;
  }
  rx_start_ += nbd::kRequestHeaderBytes;
  requests_total.Add();
  nbd::Verdict v = nbd::Validate(req, *handshake_);
  if (v.close && v.error == 0) {  // NBD_CMD_DISC
    BeginClose("client sent NBD_CMD_DISC");
    return false;
  }
  NbdSlot* s = TakeSlot();
  s->req = req;
  if (v.error != 0) {
    rejected_total.Add();
    s->reply_error = v.error;
    if (v.close) {
      Complete(s);
      BeginClose("request cannot be answered safely");
      return false;
    }
    if (v.payload_bytes > 0) {
      payload_slot_ = s;
      discard_left_ = v.payload_bytes;
      rx_state_ = RxState::kDiscard;
      return true;
    }
    Complete(s);
    return true;
  }
  if ((req.type == nbd::kCmdWrite || req.type == nbd::kCmdRead) && req.length > 0)
    return AttachBuffer(s);
  Dispatch(s);
  return true;
}

void NbdConnection::Dispatch(NbdSlot* s) {
  const nbd::Request& r = s->req;
  IoRequest& io = s->io;
  io.flags = 0;
  io.offset_bytes = r.offset;
  io.length_bytes = r.length;
  io.buf = nullptr;
  io.volume = volume_;
  io.extents = &s->extents;
  io.extents_max = 0;
  io.done = &NbdConnection::OnRequestDone;
  io.ctx = s;
  // The NBD cookie is the client's own correlation id for this request.
  std::memcpy(io.correlation_id, &r.cookie, sizeof r.cookie);
  std::memcpy(io.correlation_id + 8, conn_id_, sizeof conn_id_);
  io.stage_ns[static_cast<int>(Stage::kArrival)] = s->t0_ns;
  if (r.flags & nbd::kCmdFlagFua) io.flags |= kReqFua;
  switch (r.type) {
    case nbd::kCmdRead:
      if (r.length == 0) return Complete(s);
      io.op = RequestOp::kRead;
      io.buf = s->buf;
      // Holes go out as OFFSET_HOLE chunks, without payload, unless the client asked for one
      // data chunk (DF).
      if (handshake_->structured_replies() && !(r.flags & nbd::kCmdFlagDf)) {
        io.flags |= kReqWantExtents;
        io.extents_max = (NbdSlot::kIovMax - 1) / 2;
      }
      break;
    case nbd::kCmdWrite:
      if (r.length == 0) return Complete(s);
      io.op = RequestOp::kWrite;
      io.buf = s->buf;
      break;
    case nbd::kCmdFlush:
      io.op = RequestOp::kFlush;
      io.offset_bytes = 0;
      io.length_bytes = 0;
      break;
    case nbd::kCmdTrim:
      if (r.length == 0) return Complete(s);
      io.op = RequestOp::kDiscard;
      break;
    case nbd::kCmdWriteZeroes:
      if (r.length == 0) return Complete(s);
      io.op = RequestOp::kWriteZeroes;
      if (r.flags & nbd::kCmdFlagNoHole) io.flags |= kReqNoHole;
      break;
    case nbd::kCmdCache:
      // Our data already sits behind the backend's own cache; a prefetch hint has nothing to do.
      return Complete(s);
    case nbd::kCmdBlockStatus:
      io.op = RequestOp::kBlockStatus;
      io.extents_max = (r.flags & nbd::kCmdFlagReqOne) ? 1 : kBlockStatusExtentsMax;
      break;
    default:
      s->reply_error = nbd::kEInval;
      return Complete(s);
  }
  // Here and not at the header: the payload is in, and requests answered without the pipeline
  // (CACHE, empty ranges, invalid ones) never fire a request probe.
  SPD_REQUEST_PROBE(request__arrival, &io);
  server_->dispatcher_->Submit(static_cast<NbdServer::Shard*>(shard)->port.get(), &io);
}

void NbdConnection::OnRequestDone(IoRequest* io) {
  auto* s = static_cast<NbdSlot*>(io->ctx);
  NbdConnection* c = s->conn;
  if (io->result < 0) s->reply_error = nbd::ErrnoToNbd(-io->result);
  c->BuildReply(s);
  c->QueueReply(s);
  // Here rather than in QueueReply, which also answers requests that never reached the
  // dispatcher: exactly one reply probe per arrival probe. The latency is the one the
  // request-duration histogram observes (from the header's arrival).
  SPD_REQUEST_PROBE(request__reply, io, io->StageNs(Stage::kReply) - io->StageNs(Stage::kArrival));
}

void NbdConnection::QueueReply(NbdSlot* s) {
  if (s->reply_error != 0) request_errors_total.Add();
  const uint64_t now = MonotonicNs();
  request_duration.Observe(now - s->t0_ns);
  if (stats_) {
    const IoClass c = ClassOf(s->req.type);
    const bool data = c == IoClass::kRead || c == IoClass::kWrite;
    // NBD's error values are Linux errno values.
    VolumeIoStats::Record(stats_, true, c, data && s->reply_error == 0 ? s->req.length : 0,
                          -static_cast<int32_t>(s->reply_error), now - s->t0_ns, s->io.queue_ns);
  }
  s->io.stage_ns[static_cast<int>(Stage::kReply)] = now;
  // The only cost of the slow-request log per request: UINT64_MAX when it is off.
  if (now - s->t0_ns > server_->slow_after_ns_) [[unlikely]]
    LogSlow(s, now);
  if (server_->trace_io_) [[unlikely]]
    MaybeTrace(s, now);
  // A structured reply that merged chunks may have settled on fewer iovecs than reserved.
  SPD_ASSERT(s->iov_count > 0);
  s->iov_sent = 0;
  s->iov_off = 0;
  s->next = nullptr;
  if (send_tail_) {
    send_tail_->next = s;
  } else {
    send_head_ = s;
  }
  send_tail_ = s;
  ScheduleFlush();
}

NbdSlot* NbdConnection::TakeSlot() {
  NbdSlot* s = free_;
  SPD_ASSERT(s != nullptr);
  free_ = s->next;
  s->next = nullptr;
  s->reply_error = 0;
  s->payload_have = 0;
  s->t0_ns = MonotonicNs();
  last_request_ns_ = s->t0_ns;  // for the idle timeout: a store, no clock read of its own
  s->io.queue_ns = 0;           // set by the scheduler stage, for requests that reach it
  ++inflight_;
  if (stats_) VolumeIoStats::Begin(stats_, true);
  return s;
}

void NbdConnection::ReleaseSlot(NbdSlot* s) {
  if (s->buf != nullptr) {
    inflight_bytes_ -= s->buf_bytes;
    pool()->Give(s->buf, s->buf_bytes);
    s->buf = nullptr;
    s->buf_bytes = 0;
  }
  s->io.buf = nullptr;
  s->next = free_;
  free_ = s;
  SPD_ASSERT(inflight_ > 0);
  --inflight_;
  if (stalled_) ScheduleFlush();  // resumes reading from the flush task
}

void NbdConnection::BeginClose(const char* why) {
  if (closing_) return;
  closing_ = true;
  close_reason_ = why;
  rx_state_ = RxState::kClosing;
  SetCountedState(CountedState::kClosing);
  SPD_LOG_DEBUG("nbd %s: closing: %s", peer_.c_str(), why);
  LeaveNegotiation();
  reactor_->CancelTimer(&timer_);
  if (buffer_slot_) {
    ReleaseSlot(buffer_slot_);
    buffer_slot_ = nullptr;
  }
  if (payload_slot_) {
    // A write whose payload never fully arrived is dropped unanswered: the client is gone.
    ReleaseSlot(payload_slot_);
    payload_slot_ = nullptr;
  }
  ScheduleFlush();
}

void NbdConnection::MaybeFinishClose() {
  if (!closing_ || closed_) return;
  // Negotiation replies still queued (the ACK of NBD_OPT_ABORT, the replies before it) go out
  // first, as transmission replies do: a client that reads slowly must not lose them.
  if (!send_failed_ && handshake_ && !handshake_->output().empty()) return;
  if (inflight_ > 0) {
    // Replies still pending on a dead socket can never be sent.
    if (!send_failed_) return;
    while (send_head_) {
      NbdSlot* s = send_head_;
      send_head_ = s->next;
      ReleaseSlot(s);
    }
    send_tail_ = nullptr;
    if (inflight_ > 0) return;  // volume I/O still running; its completion calls us again
  }
  Reactor* r = server_->reactor_;
  if (!unwatched_) {
    unwatched_ = true;
    // A TLS session ends with close_notify (the spec's SHOULD), sent if the socket takes it
    // now: a client that does not read gets no second chance.
    if (tls_up_ && !send_failed_) gnutls_bye(tls_, GNUTLS_SHUT_WR);
    // Shutting the socket down fires any armed one-shot poll one last time; in epoll mode the
    // fd leaves the epoll set at once.
    ::shutdown(fd_, SHUT_RDWR);
    if (r->engine() == ReactorEngine::kEpoll) {
      r->Unwatch(fd_, &rx_watch_);
      rx_poll_active_ = false;
    }
  }
  if (rx_poll_active_ || tx_armed_) return;  // wait for the final poll completions
  closed_ = true;
  close(fd_);
  fd_ = -1;
  server_->ConnectionClosed(this);
}

}  // namespace spd
