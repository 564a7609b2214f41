#include "replica/replica_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "common/counters.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "frontend/inproc/inproc_frontend.h"
#include "replica/dirty_map.h"
#include "replica/replica_server_internal.h"
#include "replica/replica_server_metrics.h"
#include "replica/replica_tls.h"
#include "replica/replica_wire.h"

namespace spd {
namespace {

namespace rw = replica_wire;

using namespace replica_server_metrics;  // NOLINT: the counters of replica_server_metrics.cc

constexpr uint64_t kTickNs = 200'000'000;
// A session past its hello with nothing half-way has only a stall to notice when one starts:
// its tick slows to an eighth of stall_timeout_ms, between kTickNs and 1 s (a replica of many
// volumes wakes once a second per session rather than five times; a stall is found at most
// that much late, 1 s in the default 30 s).
uint64_t IdleTickNs(const ReplicaServerOptions& o) {
  return std::clamp<uint64_t>(o.stall_timeout_ms * 1'000'000 / 8, kTickNs, 1'000'000'000);
}
constexpr size_t kOutMax = 64u << 10;  // unsent replies beyond which reading pauses

}  // namespace

struct ReplicaServer::Listener : Completion {
  ReplicaServer* server = nullptr;
  int fd = -1;
  bool armed = false;
};

namespace replica_session {

void Send(Session* s);

void Reply(Session* s, const rw::Header& h, const void* payload, size_t n) {
  uint8_t b[rw::kHeaderBytes];
  rw::EncodeHeader(h, b);
  s->out.insert(s->out.end(), b, b + sizeof b);
  if (n > 0) {
    const auto* p = static_cast<const uint8_t*>(payload);
    s->out.insert(s->out.end(), p, p + n);
  }
  if (!s->flush_pending) {
    s->flush_pending = true;
    s->server->reactor_->Defer(&s->flush);
  }
}

void Ack(Session* s, uint64_t seq, int32_t result) {
  rw::Header h;
  h.type = static_cast<uint16_t>(rw::Type::kAck);
  h.epoch = s->epoch;
  h.seq = seq;
  h.result = result;
  Reply(s, h);
}

void MaybeFree(Session* s);

void Send(Session* s) {
  while (s->out_off < s->out.size()) {
    const ssize_t n = s->tls ? TlsSend(s->tls, s->out.data() + s->out_off,
                                       s->out.size() - s->out_off, &s->tls_send_pending)
                             : send(s->fd, s->out.data() + s->out_off, s->out.size() - s->out_off,
                                    MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      s->out_off += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      if (!s->tx_armed && s->server->reactor_->engine() == ReactorEngine::kUring &&
          s->server->reactor_->ArmWritable(s->fd, &s->tx).ok())
        s->tx_armed = true;
      if (s->partial_since_ns == 0) s->partial_since_ns = MonotonicNs();
      return;
    }
    s->out.clear();
    s->out_off = 0;
    return Close(s, "send failed");
  }
  s->out.clear();
  s->out_off = 0;
}

// The TLS handshake, a step at a time as the socket allows.
void Handshake(Session* s) {
  std::string why;
  const int rc = TlsHandshakeStep(s->tls, &why);
  if (rc < 0) {
    tls_failures_total.Add();
    SPD_LOG_WARN("replica: %s: TLS handshake failed: %s", s->Peer().c_str(), why.c_str());
    return Close(s, "TLS handshake failed");
  }
  if (rc == 0) {
    s->handshaking = false;
    return Pump(s);
  }
  Reactor* r = s->server->reactor_;
  if (r->engine() != ReactorEngine::kUring) return;  // epoll: both directions are watched
  if (TlsWantsWrite(s->tls)) {
    if (!s->tx_armed && r->ArmWritable(s->fd, &s->tx).ok()) s->tx_armed = true;
  } else if (!s->rx_armed) {
    if (r->WatchOnce(s->fd, &s->rx).ok()) s->rx_armed = true;
  }
  if (!s->tx_armed && !s->rx_armed) Close(s, "cannot watch the socket");
}

void OnWritable(Completion* c, int32_t, uint32_t) {
  Session* s = static_cast<Session::Watch*>(c)->s;
  s->tx_armed = false;
  if (s->closing) return MaybeFree(s);
  if (s->handshaking) return Handshake(s);
  s->partial_since_ns = 0;
  Send(s);
  if (s->out.empty()) Pump(s);  // reading may have paused on a full reply buffer
}

void ReplicaSessionRead(Session* s);

void OnReadable(Completion* c, int32_t, uint32_t flags) {
  Session* s = static_cast<Session::Watch*>(c)->s;
  if (s->server->reactor_->engine() == ReactorEngine::kUring) s->rx_armed = false;
  (void)flags;
  if (s->closing) return MaybeFree(s);
  if (s->handshaking) return Handshake(s);
  // epoll: the socket's writability arrives here too (the fd is registered for both).
  if (s->out_off < s->out.size()) Send(s);
  Pump(s);
}

void OnWriteDone(void* arg, IoRequest* req) {
  auto* s = static_cast<Session*>(arg);
  uint64_t msg_seq = 0;
  std::memcpy(&msg_seq, req->correlation_id + 8, sizeof msg_seq);
  if (req->result != 0) {
    write_errors_total.Add();
    // This copy lacks a write of the term now: its record vouches for nothing (a failover
    // copies it whole) and it does not hold the term whole (cluster_recovery.h) until a resync
    // ends.
    s->volume->replica_activity.Spoil();
  }
  if (!s->closing) Ack(s, msg_seq, req->result);
  // A slot is free again, or the barrier may go: once this request is back in the free list.
  if (!s->pump_pending) {
    s->pump_pending = true;
    s->server->reactor_->Defer(&s->pump);
  }
}

void OnRecorded(GenerationRecord* r) {
  auto* s = static_cast<Session*>(r->ctx);
  s->record_pending = false;
  if (s->closing) return MaybeFree(s);
  if (!s->hello_done) return AnswerHello(s, r->result);
  // A barrier.
  if (r->result == 0) {
    barriers_total.Add();
    // Reading was paused: nothing after it yet.
    s->volume->applied_after_generation.store(Volume::Applied::kClean);
    // A resync's last barrier: this copy holds the term now (what ranks it after etcd's loss).
    if (s->barrier.flags & rw::kFlagResyncEnd) s->volume->replica_activity.ResyncEnded(s->epoch);
  }
  Ack(s, s->barrier.seq, r->result);
  Pump(s);
}

void OnGrown(Task* t) {
  Session* s = static_cast<Session::GrowTask*>(t)->s;
  s->grow_pending = false;
  const Status st = std::move(s->grow_task.status);
  if (s->closing) return MaybeFree(s);
  if (s->grow.type == 0) return HelloGrown(s, st);
  if (st.ok()) {
    grows_total.Add();
  } else {
    grow_failures_total.Add();
    SPD_LOG_WARN("replica: %s: volume %s: cannot grow to %llu bytes: %s", s->Peer().c_str(),
                 s->handle->name().c_str(), static_cast<unsigned long long>(s->grow.offset),
                 st.ToString().c_str());
  }
  Ack(s, s->grow.seq, st.ok() ? 0 : -EIO);
  Pump(s);
}

void StartGrow(Session* s, uint64_t size_bytes) {
  s->grow_pending = true;
  s->grow_task.s = s;
  s->grow_task.fn = &OnGrown;
  ReplicaServer* srv = s->server;
  // Through the manager (its listeners hear of it): its answer comes on the pool's reactor.
  srv->volumes_->Resize(s->handle->name(), size_bytes, [s, srv](Status st) {
    s->grow_task.status = std::move(st);
    srv->reactor_->Post(&s->grow_task);
  });
}

void StartBarrierIfReady(Session* s) {
  if (!s->barrier_waiting || s->record_pending || s->fe->inflight() > 0) return;
  s->barrier_waiting = false;
  s->record_pending = true;
  s->record.generation = {s->epoch, s->barrier.seq};
  s->record.fence_epoch = s->epoch;
  s->record.ctx = s;
  s->record.done = &OnRecorded;
  s->volume->pool()->RecordGeneration(s->volume, &s->record);
}

// A whole message (header, and payload for a write) is in: act on it. False: stop reading.
bool HandleMessage(Session* s) {
  const rw::Header& h = s->hdr;
  const auto type = static_cast<rw::Type>(h.type);
  if (!s->hello_done && !s->record_pending) {
    if (type != rw::Type::kHello) {
      protocol_errors_total.Add();
      Close(s, "first message is not a hello");
      return false;
    }
    s->epoch = h.epoch;
    HandleHello(s);
    return false;  // nothing more until the hello is answered
  }
  if (h.epoch != s->epoch) {
    protocol_errors_total.Add();
    Close(s, "message of another epoch");
    return false;
  }
  if (s->epoch < s->volume->fence_epoch()) {
    // A newer primary took the volume: this one is deposed.
    fenced_total.Add();
    if (s->req) s->fe->Release(s->req);
    s->req = nullptr;
    Ack(s, h.seq, -ESTALE);
    Close(s, "fenced by a newer primary's epoch");
    return false;
  }
  // Every message below the watermark is on every in-sync copy: its activity records go.
  if (s->applying)
    s->volume->replica_activity.Trim(s->epoch, h.seq - static_cast<uint64_t>(h.result));
  switch (type) {
    case rw::Type::kWrite:
    case rw::Type::kWriteZeroes:
    case rw::Type::kDiscard: {
      if (!s->applying) {
        Ack(s, h.seq, -ENOTCONN);  // out of sync: nothing is applied before a resync
        if (s->req) s->fe->Release(s->req);
        s->req = nullptr;
        return true;
      }
      IoRequest* req = s->req;
      s->req = nullptr;
      if (req == nullptr) req = s->fe->Take();  // write-zeroes, discard: no payload
      req->volume = s->volume;
      req->offset_bytes = h.offset;
      req->length_bytes = h.length;
      req->flags = kReqFromPrimary | ((h.flags & rw::kFlagFua) ? kReqFua : 0);
      if (h.flags & rw::kFlagNoHole) req->flags |= kReqNoHole;
      if (h.flags & rw::kFlagRebuild) req->flags |= kReqRebuild;
      req->op = type == rw::Type::kWrite         ? RequestOp::kWrite
                : type == rw::Type::kWriteZeroes ? RequestOp::kWriteZeroes
                                                 : RequestOp::kDiscard;
      std::memcpy(req->correlation_id + 8, &h.seq, sizeof h.seq);
      s->volume->MarkApplied();
      s->volume->replica_activity.Record(s->epoch, h.seq, h.offset, h.length);
      writes_total.Add();
      if (type == rw::Type::kWrite) {
        bytes_total.Add(h.length);
        if (Crc32c(0, req->buf, h.length) != h.crc) {
          protocol_errors_total.Add();
          s->fe->Release(req);  // nothing applied
          Close(s, "write payload checksum mismatch");
          return false;
        }
      }
      s->fe->Submit(req, &OnWriteDone, s);
      return true;
    }
    case rw::Type::kGrow:
      // Before the primary's own copy grows: no write past this copy's end comes before it.
      s->grow = h;
      if (h.offset < s->volume->size_bytes()) {  // volumes never shrink under a primary
        protocol_errors_total.Add();
        Ack(s, h.seq, -EINVAL);
        return true;
      }
      StartGrow(s, h.offset);
      return false;  // reading resumes once it is acknowledged
    case rw::Type::kBarrier:
      s->barrier = h;
      s->barrier_waiting = true;
      StartBarrierIfReady(s);
      return false;  // reading resumes once it is acknowledged
    default:
      protocol_errors_total.Add();
      Close(s, "unexpected message type");
      return false;
  }
}

// Reads more of the socket into the session's buffer. >0: bytes read; 0: nothing there now
// (EAGAIN); <0: the session was closed.
ssize_t FillIn(Session* s) {
  if (s->in_beg == s->in_end) {
    s->in_beg = s->in_end = 0;
  } else if (s->in_beg > 0) {
    std::memmove(s->in.get(), s->in.get() + s->in_beg, s->in_end - s->in_beg);
    s->in_end -= s->in_beg;
    s->in_beg = 0;
  }
  for (;;) {
    const ssize_t n =
        s->tls ? TlsRecv(s->tls, s->in.get() + s->in_end, kInBytes - s->in_end)
               : recv(s->fd, s->in.get() + s->in_end, kInBytes - s->in_end, MSG_DONTWAIT);
    if (n > 0) {
      s->in_end += static_cast<size_t>(n);
      return n;
    }
    if (n == 0) {
      Close(s, "the primary closed the connection");
      return -1;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN) return 0;
    Close(s, "recv failed");
    return -1;
  }
}

// Reads and handles messages until the socket is empty or reading must pause.
void ReplicaSessionRead(Session* s) {
  ReplicaServer* srv = s->server;
  for (;;) {
    if (s->closing) return;
    // Resumes from OnRecorded, a write, or OnGrown.
    if (s->record_pending || s->barrier_waiting || s->grow_pending) return;
    if (s->out.size() - s->out_off > kOutMax) return;  // resumes from the reply flush
    if (!s->in_payload) {
      if (!s->hdr_ready) {
        if (s->in_end - s->in_beg < rw::kHeaderBytes) {
          const ssize_t n = FillIn(s);
          if (n < 0) return;
          if (n == 0) break;
          continue;
        }
        const std::string bad =
            rw::DecodeHeader(s->in.get() + s->in_beg, srv->o_.write_bytes_max, &s->hdr);
        s->in_beg += rw::kHeaderBytes;
        if (!bad.empty()) {
          protocol_errors_total.Add();
          SPD_LOG_WARN("replica: %s: %s", s->Peer().c_str(), bad.c_str());
          return Close(s, "malformed message");
        }
        s->hdr_ready = true;
      }
      const auto type = static_cast<rw::Type>(s->hdr.type);
      const uint32_t want = rw::PayloadBytes(s->hdr);
      if (type == rw::Type::kHello) {
        s->payload = reinterpret_cast<uint8_t*>(&s->hello);
      } else if (type == rw::Type::kWrite) {
        if (!s->hello_done) {
          protocol_errors_total.Add();
          return Close(s, "write before the hello");
        }
        s->req = s->fe->Take();
        // Every slot busy: keep the header, read its payload once a write completes.
        if (s->req == nullptr) return;
        s->payload = static_cast<uint8_t*>(s->req->buf);
      } else if (type == rw::Type::kWriteZeroes || type == rw::Type::kDiscard) {
        if (s->hello_done && s->fe->inflight() >= srv->o_.queue_depth) return;
      }
      s->hdr_ready = false;
      if (want > 0) {
        s->in_payload = true;
        s->payload_got = 0;
        continue;
      }
    } else {
      const uint32_t need = rw::PayloadBytes(s->hdr) - s->payload_got;
      if (s->in_end > s->in_beg) {  // what the buffer holds first
        const size_t n = std::min<size_t>(need, s->in_end - s->in_beg);
        std::memcpy(s->payload + s->payload_got, s->in.get() + s->in_beg, n);
        s->in_beg += n;
        s->payload_got += static_cast<uint32_t>(n);
      } else if (need > kInBytes / 2) {  // a big rest: straight into the request
        const ssize_t n = s->tls ? TlsRecv(s->tls, s->payload + s->payload_got, need)
                                 : recv(s->fd, s->payload + s->payload_got, need, MSG_DONTWAIT);
        if (n == 0) return Close(s, "the primary closed the connection");
        if (n < 0) {
          if (errno == EINTR) continue;
          if (errno != EAGAIN) return Close(s, "recv failed");
          break;
        }
        s->payload_got += static_cast<uint32_t>(n);
      } else {
        const ssize_t n = FillIn(s);
        if (n < 0) return;
        if (n == 0) break;
        continue;
      }
      if (s->payload_got < rw::PayloadBytes(s->hdr)) continue;
      s->in_payload = false;
      if (static_cast<rw::Type>(s->hdr.type) == rw::Type::kHello &&
          Crc32c(0, &s->hello, sizeof s->hello) != s->hdr.crc) {
        protocol_errors_total.Add();
        return Close(s, "hello checksum mismatch");
      }
    }
    s->partial_since_ns = 0;
    if (!HandleMessage(s)) return;
  }
  // Part of a message came and the rest did not: the stall timeout runs from now.
  if ((s->in_end > s->in_beg || s->in_payload) && s->partial_since_ns == 0)
    s->partial_since_ns = MonotonicNs();
  // The socket is empty: wait for more.
  if (srv->reactor_->engine() == ReactorEngine::kUring && !s->rx_armed && !s->closing) {
    if (srv->reactor_->WatchOnce(s->fd, &s->rx).ok()) {
      s->rx_armed = true;
    } else {
      Close(s, "cannot watch the socket");
    }
  }
}

void Pump(Session* s) {
  if (s->closing) return MaybeFree(s);
  if (s->handshaking) return;
  if (s->barrier_waiting) StartBarrierIfReady(s);
  ReplicaSessionRead(s);
}

void OnTick(Timer* t) {
  Session* s = static_cast<Session::Tick*>(t)->s;
  s->tick_armed = false;
  if (s->closing) return MaybeFree(s);
  const uint64_t now = MonotonicNs();
  const ReplicaServerOptions& o = s->server->o_;
  if (!s->hello_done && !s->record_pending && !s->grow_pending && now >= s->hello_deadline_ns) {
    timeouts_total.Add();
    return Close(s, "no hello in time");
  }
  if (s->partial_since_ns != 0 && now - s->partial_since_ns >= o.stall_timeout_ms * 1'000'000) {
    timeouts_total.Add();
    // Abortive: a peer that does not read would never get a FIN queued behind unread replies.
    const linger abort{1, 0};
    setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &abort, sizeof abort);
    return Close(s, "a message or reply stalled half-way");
  }
  const bool idle =
      s->hello_done && s->partial_since_ns == 0 && !s->record_pending && !s->grow_pending;
  s->tick_armed = true;
  s->server->reactor_->ArmTimer(&s->tick, now + (idle ? IdleTickNs(o) : kTickNs));
}

void Close(Session* s, const char* why) {
  if (s->closing) return;
  s->closing = true;
  SPD_LOG_INFO("replica: %s closed: %s", s->Peer().c_str(), why);
  // Replies made in this batch (a refusal, the last acks) go out before the socket shuts.
  if (s->out_off < s->out.size()) Send(s);
  ReplicaServer* srv = s->server;
  Reactor* r = srv->reactor_;
  shutdown(s->fd, SHUT_RDWR);  // a pending one-shot poll fires once more
  if (r->engine() != ReactorEngine::kUring) {
    r->Unwatch(s->fd, &s->rx);
    s->rx_armed = false;
    s->tx_armed = false;
  }
  if (s->tick_armed) {
    r->CancelTimer(&s->tick);
    s->tick_armed = false;
  }
  if (s->req) {
    s->fe->Release(s->req);  // a write whose payload never came
    s->req = nullptr;
  }
  MaybeFree(s);
}

void MaybeFree(Session* s) {
  if (!s->closing || s->rx_armed || s->tx_armed || s->record_pending || s->grow_pending ||
      s->pump_pending || s->flush_pending || (s->fe && s->fe->inflight() > 0))
    return;
  s->server->SessionGone(s);
}

}  // namespace replica_session

using namespace replica_session;  // NOLINT: the session code above

ReplicaServer::ReplicaServer(Reactor* reactor, Dispatcher* dispatcher, VolumeManager* volumes,
                             ReplicaServerOptions options)
    : reactor_(reactor), dispatcher_(dispatcher), volumes_(volumes), o_(std::move(options)) {}

ReplicaServer::~ReplicaServer() {
  if (watching_volumes_) volumes_->RemoveListener(&volume_watch_);
  if (listener_ && listener_->fd >= 0) {
    if (listener_->armed) reactor_->Unwatch(listener_->fd, listener_.get());
    close(listener_->fd);
  }
}

Status ReplicaServer::Start() {
  if (o_.queue_depth == 0 || o_.write_bytes_max < 4096 ||
      o_.write_bytes_max > replica_wire::kPayloadMax)
    return InvalidArgument("replica server: queue_depth >= 1 and write_bytes_max in 4K..4M");
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::FromErrno(errno, "replica: socket");
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(o_.port);
  if (inet_pton(AF_INET, o_.host.c_str(), &sa.sin_addr) != 1) {
    close(fd);
    return InvalidArgument("replica: listen address must be an IPv4 address, got '" + o_.host +
                           "'");
  }
  if (bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0 || listen(fd, 64) < 0) {
    Status s =
        Status::FromErrno(errno, "replica: bind/listen " + o_.host + ":" + std::to_string(o_.port));
    close(fd);
    return s;
  }
  socklen_t len = sizeof sa;
  getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
  port_ = ntohs(sa.sin_port);
  listener_ = std::make_unique<Listener>();
  listener_->server = this;
  listener_->fd = fd;
  listener_->fn = [](Completion* c, int32_t res, uint32_t flags) {
    auto* l = static_cast<Listener*>(c);
    ReplicaServer* self = l->server;
    if (self->reactor_->engine() == ReactorEngine::kUring && !(flags & IORING_CQE_F_MORE)) {
      l->armed = false;
      if (!self->shutting_down_ && res != -ECANCELED && self->reactor_->Watch(l->fd, l).ok())
        l->armed = true;
    }
    if (res > 0 && !self->shutting_down_) self->AcceptAll();
    self->MaybeFinishShutdown();
  };
  SPD_RETURN_IF_ERROR(reactor_->Watch(fd, listener_.get()));
  listener_->armed = true;
  if (volumes_ != nullptr && !watching_volumes_) {
    volume_watch_.server = this;
    volumes_->AddListener(&volume_watch_);
    watching_volumes_ = true;
  }
  return Status::Ok();
}

void ReplicaServer::AcceptAll() {
  for (;;) {
    const int fd = accept4(listener_->fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (sessions_ >= o_.sessions_max) {
      sessions_refused_total.Add();
      close(fd);
      continue;
    }
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    gnutls_session_t tls = nullptr;
    if (o_.tls != nullptr) {
      Result<gnutls_session_t> t = o_.tls->NewServerSession(fd);
      if (!t.ok()) {
        tls_failures_total.Add();
        SPD_LOG_WARN("replica: %s", t.status().ToString().c_str());
        close(fd);
        continue;
      }
      tls = *t;
    }
    auto* s = new Session();
    s->server = this;
    s->fd = fd;
    s->tls = tls;
    s->handshaking = tls != nullptr;
    s->rx.s = s;
    s->rx.fn = &OnReadable;
    s->tx.s = s;
    s->tx.fn = &OnWritable;
    s->tick.s = s;
    s->tick.fn = &OnTick;
    s->pump.s = s;
    s->pump.fn = [](Task* t) {
      Session* x = static_cast<Session::PumpTask*>(t)->s;
      x->pump_pending = false;
      Pump(x);  // frees a closing session once nothing is left
    };
    s->flush.s = s;
    s->flush.fn = [](Task* t) {
      Session* x = static_cast<Session::FlushTask*>(t)->s;
      x->flush_pending = false;
      if (x->closing) return MaybeFree(x);
      const bool paused = x->out.size() - x->out_off > kOutMax;
      Send(x);
      if (paused && x->out.empty()) Pump(x);  // reading paused on a full reply buffer
    };
    s->hello_deadline_ns = MonotonicNs() + o_.hello_timeout_ms * 1'000'000;
    s->next = head_;
    if (head_) head_->prev = s;
    head_ = s;
    ++sessions_;
    sessions_gauge.Add(1);
    s->tick_armed = true;
    reactor_->ArmTimer(&s->tick, MonotonicNs() + kTickNs);
    if (!reactor_->WatchOnce(fd, &s->rx).ok()) {
      Close(s, "cannot watch the socket");
      continue;
    }
    s->rx_armed = reactor_->engine() == ReactorEngine::kUring;
  }
}

void ReplicaServer::SessionGone(Session* s) {
  if (s->volume) {
    auto it = holders_.find(s->volume);
    if (it != holders_.end() && it->second == s) holders_.erase(it);
  }
  s->fe.reset();
  if (s->user) s->handle->RemoveUser();
  if (s->tls) gnutls_deinit(s->tls);
  close(s->fd);
  if (s->prev) s->prev->next = s->next;
  if (s->next) s->next->prev = s->prev;
  if (head_ == s) head_ = s->next;
  --sessions_;
  sessions_gauge.Add(-1);
  delete s;
  MaybeFinishShutdown();
}

void ReplicaServer::VolumeWatch::OnVolumeClosing(std::shared_ptr<VolumeHandle> handle,
                                                 std::function<void()> done) {
  for (Session* s = server->head_; s != nullptr;) {
    Session* next = s->next;
    if (s->handle == handle) Close(s, "its volume is being deleted");
    s = next;
  }
  done();  // the delete waits for the session's requests and its user to go
}

void ReplicaServer::Shutdown(Task* done) {
  shutting_down_ = true;
  shutdown_done_ = done;
  if (listener_ && listener_->armed) {
    if (reactor_->Unwatch(listener_->fd, listener_.get()) == 0) listener_->armed = false;
  }
  for (Session* s = head_; s != nullptr;) {
    Session* next = s->next;
    Close(s, "the server is shutting down");
    s = next;
  }
  MaybeFinishShutdown();
}

void ReplicaServer::MaybeFinishShutdown() {
  if (!shutting_down_ || head_ != nullptr || (listener_ && listener_->armed) ||
      shutdown_done_ == nullptr)
    return;
  Task* t = shutdown_done_;
  shutdown_done_ = nullptr;
  reactor_->Defer(t);
}

}  // namespace spd
