#include "telemetry/metrics_server.h"

#include <zlib.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/counters.h"

namespace spd {
namespace {
Counter scrapes_total("spd_metrics_scrapes_total", "Metrics requests served.");
Counter bad_requests_total("spd_metrics_bad_requests_total",
                           "Metrics requests answered with an error (400, 404, 405, 431).");
// One counter per reason a connection is dropped (counters have no labels).
Counter dropped_header_timeout_total(
    "spd_metrics_connections_dropped_header_timeout_total",
    "Metrics connections dropped for not sending a whole request within the header timeout.");
Counter dropped_idle_timeout_total("spd_metrics_connections_dropped_idle_timeout_total",
                                   "Kept-alive metrics connections closed after the idle timeout.");
Counter dropped_send_timeout_total(
    "spd_metrics_connections_dropped_send_timeout_total",
    "Metrics connections dropped for not taking their reply within the send timeout.");
Counter dropped_evicted_total(
    "spd_metrics_connections_dropped_evicted_total",
    "Metrics connections evicted by a newer one at the connection limit (oldest waiting first).");
Counter dropped_refused_total(
    "spd_metrics_connections_dropped_refused_total",
    "Metrics connections refused at accept: no connection slot (not expected; see AcceptPending).");
Counter dropped_oversize_total(
    "spd_metrics_connections_dropped_oversize_total",
    "Metrics connections closed after a request head over the size limit (answered 431).");
Counter dropped_bad_request_total(
    "spd_metrics_connections_dropped_bad_request_total",
    "Metrics connections closed after a malformed request (answered 400).");

// Conn objects kept per allowed connection: the live ones plus those evicted or closed in the
// current tick whose final io_uring poll completions are still due. At the bound, accepting
// pauses until the next kernel entry frees them, so even an accept flood holds bounded memory.
constexpr size_t kConnObjectsPerClient = 4;
// Connections the kernel completes for us before we accept them (capped by net.core.somaxconn).
// A flood of connects must not overflow it: an overflowing queue drops handshakes, the scraper's
// among them, which then waits a whole SYN retransmission (1 s) or more. Queued connections cost
// only kernel memory; we accept them all and evict as usual.
constexpr int kListenBacklog = 1024;
// recv calls per readiness event while discarding a lingering client's input (4 KiB each).
constexpr int kLingerReadsPerEvent = 16;

// The end of the request head (just past its empty line), or npos. Bare LF line ends are
// accepted too, as HTTP/1.1 allows.
size_t HeadEnd(const std::string& in) {
  for (size_t i = in.find('\n'); i != std::string::npos; i = in.find('\n', i + 1)) {
    if (i + 1 < in.size() && in[i + 1] == '\n') return i + 2;
    if (i + 2 < in.size() && in[i + 1] == '\r' && in[i + 2] == '\n') return i + 3;
  }
  return std::string::npos;
}

bool EqualsNoCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

// True when the comma-separated header value lists `token`.
bool HasToken(std::string_view value, std::string_view token) {
  while (!value.empty()) {
    size_t comma = value.find(',');
    if (EqualsNoCase(Trim(value.substr(0, comma)), token)) return true;
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
  return false;
}

// `in` as one gzip member (RFC 1952), at zlib's fastest level: a scrape of many volumes is
// mostly repeated label text, which that shrinks ~15x for a few ms of CPU. False on a zlib
// failure (then the text goes uncompressed).
bool Gzip(const std::string& in, std::string* out) {
  z_stream z{};
  if (deflateInit2(&z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) return false;
  out->resize(deflateBound(&z, in.size()));
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  z.next_out = reinterpret_cast<Bytef*>(out->data());
  z.avail_out = static_cast<uInt>(out->size());
  const int rc = deflate(&z, Z_FINISH);
  const size_t n = z.total_out;
  deflateEnd(&z);
  if (rc != Z_STREAM_END) return false;
  out->resize(n);
  return true;
}

const char* Phrase(int code) {
  switch (code) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 431:
      return "Request Header Fields Too Large";
    default:
      return "Error";
  }
}
}  // namespace

MetricsServer::MetricsServer(Reactor* reactor, const MetricsServerOptions& options)
    : reactor_(reactor), options_(options) {
  accept_resume_.server = this;
  accept_resume_.fn = &MetricsServer::OnAcceptResume;
}

MetricsServer::~MetricsServer() {
  reactor_->CancelTimer(&accept_resume_);
  for (auto& c : conns_) {
    reactor_->CancelTimer(&c->timer);
    if (c->fd >= 0) {
      ::shutdown(c->fd, SHUT_RDWR);
      close(c->fd);
    }
  }
  if (fd_ >= 0) {
    // The ring's poll may keep the socket alive past close() and even past exit (io_uring tears
    // rings down asynchronously); shutdown() stops it listening now, so a restart can bind.
    shutdown(fd_, SHUT_RDWR);
    close(fd_);
  }
}

Status MetricsServer::Start(const std::string& host, uint16_t port) {
  if (options_.clients_max == 0 || options_.request_bytes_max == 0)
    return InvalidArgument("metrics: clients_max and request_bytes_max must be positive");
  fd_ = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) return Status::FromErrno(errno, "metrics: socket");
  int one = 1;
  setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  if (inet_pton(AF_INET, host.c_str(), &sa.sin_addr) != 1)
    return InvalidArgument("metrics: not an IPv4 address: " + host);
  if (bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0)
    return Status::FromErrno(errno, "metrics: bind " + host + ":" + std::to_string(port));
  if (listen(fd_, kListenBacklog) < 0) return Status::FromErrno(errno, "metrics: listen");
  socklen_t len = sizeof sa;
  getsockname(fd_, reinterpret_cast<sockaddr*>(&sa), &len);
  port_ = ntohs(sa.sin_port);
  listener_.server = this;
  listener_.fn = &MetricsServer::OnAccept;
  return reactor_->Watch(fd_, &listener_);
}

void MetricsServer::OnAccept(Completion* c, int32_t res, uint32_t flags) {
  MetricsServer* self = static_cast<Listener*>(c)->server;
  if (self->reactor_->engine() == ReactorEngine::kUring && !(flags & IORING_CQE_F_MORE) &&
      res != -ECANCELED) {
    IgnoreError(self->reactor_->Watch(self->fd_, &self->listener_));
  }
  if (res <= 0) return;
  self->AcceptPending();
}

void MetricsServer::OnAcceptResume(Timer* t) {
  static_cast<ResumeTimer*>(t)->server->AcceptPending();
}

void MetricsServer::AcceptPending() {
  for (;;) {
    if (!HasConnRoom()) {
      // Only with io_uring, in a burst: the conns evicted in this tick wait for their final poll
      // completions, which the next kernel entry reaps. Accept the rest right after it (a timer
      // due now makes that entry not sleep) instead of refusing anyone.
      if (accept_resume_.heap_index == SIZE_MAX) reactor_->ArmTimer(&accept_resume_, MonotonicNs());
      return;
    }
    int fd = accept4(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return;  // EAGAIN: all taken
    }
    Accept(fd);
  }
}

bool MetricsServer::HasConnRoom() const {
  if (conns_.size() < options_.clients_max * kConnObjectsPerClient) return true;
  for (const auto& c : conns_)
    if (c->state == State::kFree) return true;
  return false;
}

void MetricsServer::Accept(int fd) {
  // At the limit the new connection evicts the one that has waited longest without completing a
  // request, rather than being refused. Refusing would let whoever holds the slots (silent or
  // slow clients, reconnecting as fast as the timeouts drop them) keep every scraper out. With
  // eviction a newcomer always gets in; a real scraper sends its request right after connecting,
  // so it is usually answered within this very call (Advance below) or else is the newest
  // connection, the last to be evicted. Connections being answered go last.
  if (live_ >= options_.clients_max) {
    if (Conn* victim = EvictionVictim()) Close(victim, DropReason::kEvicted);
  }
  Conn* c = NewConn();
  if (c == nullptr) {
    dropped_refused_total.Add();
    close(fd);
    return;
  }
  const uint64_t now = MonotonicNs();
  c->fd = fd;
  c->state = State::kReading;
  c->in.clear();
  c->out.clear();
  c->out_off = 0;
  c->request_started = true;  // the header clock runs from accept: silence counts
  c->close_after_send = false;
  c->peer_eof = false;
  c->last_active_ns = now;
  ++live_;
  SetDeadline(c, now + options_.header_timeout_ns);
  if (reactor_->engine() == ReactorEngine::kEpoll) {
    // Edge-triggered for the connection's whole life, POLLOUT included.
    if (!reactor_->Watch(fd, &c->rx).ok()) {
      Close(c, DropReason::kNone);
      return;
    }
  }
  Advance(c);  // arms the io_uring poll when it has to wait
}

MetricsServer::Conn* MetricsServer::NewConn() {
  for (auto& c : conns_)
    if (c->state == State::kFree) return c.get();
  if (conns_.size() >= options_.clients_max * kConnObjectsPerClient) return nullptr;
  auto c = std::make_unique<Conn>();
  c->server = this;
  c->rx.conn = c.get();
  c->rx.fn = &MetricsServer::OnRx;
  c->tx.conn = c.get();
  c->tx.fn = &MetricsServer::OnTx;
  c->timer.conn = c.get();
  c->timer.fn = &MetricsServer::OnDeadline;
  conns_.push_back(std::move(c));
  return conns_.back().get();
}

MetricsServer::Conn* MetricsServer::EvictionVictim() const {
  // Lingering connections have had their reply; waiting ones (silent, slow, idle) next; one
  // being answered only when nothing else is left. Oldest activity first within each.
  Conn* best = nullptr;
  int best_rank = 3;
  for (const auto& p : conns_) {
    Conn* c = p.get();
    int rank;
    switch (c->state) {
      case State::kLingering:
        rank = 0;
        break;
      case State::kReading:
        rank = 1;
        break;
      case State::kSending:
        rank = 2;
        break;
      default:
        continue;
    }
    if (rank < best_rank || (rank == best_rank && c->last_active_ns < best->last_active_ns)) {
      best = c;
      best_rank = rank;
    }
  }
  return best;
}

void MetricsServer::OnRx(Completion* base, int32_t res, uint32_t flags) {
  Conn* c = static_cast<Watch*>(base)->conn;
  MetricsServer* self = c->server;
  if (self->reactor_->engine() == ReactorEngine::kUring) c->rx_armed = false;
  if (c->state == State::kClosing) {
    self->MaybeRelease(c);
    return;
  }
  // kFree: a stale epoll event for a connection closed earlier in this batch.
  if (c->state == State::kFree) return;
  self->Advance(c);
}

void MetricsServer::OnTx(Completion* base, int32_t res, uint32_t flags) {
  Conn* c = static_cast<Watch*>(base)->conn;
  MetricsServer* self = c->server;
  c->tx_armed = false;
  if (c->state == State::kClosing) {
    self->MaybeRelease(c);
    return;
  }
  if (c->state == State::kFree) return;
  self->Advance(c);
}

void MetricsServer::OnDeadline(Timer* t) {
  Conn* c = static_cast<DeadlineTimer*>(t)->conn;
  MetricsServer* self = c->server;
  switch (c->state) {
    case State::kReading:
      self->Close(c, c->request_started ? DropReason::kHeaderTimeout : DropReason::kIdleTimeout);
      break;
    case State::kSending:
      self->Close(c, DropReason::kSendTimeout);
      break;
    case State::kLingering:
      self->Close(c, DropReason::kNone);  // the reply is out; the client just did not close
      break;
    default:
      break;
  }
}

void MetricsServer::Advance(Conn* c) {
  for (;;) {
    if (c->state == State::kSending) {
      if (!Flush(c)) return;   // waits for POLLOUT (or was closed)
      c->out = std::string();  // a page per idle connection would add up
      c->out_off = 0;
      if (c->close_after_send) {
        Linger(c);
        continue;
      }
      c->state = State::kReading;
      // Pipelined bytes already here start the next request's header clock; else it is idle.
      c->request_started = !c->in.empty();
      SetDeadline(c, MonotonicNs() + (c->request_started ? options_.header_timeout_ns
                                                         : options_.idle_timeout_ns));
      continue;  // a pipelined request may be waiting
    }
    if (c->state == State::kLingering) {
      // Discard a bounded amount per event: a client that keeps sending is ended by the linger
      // deadline, not served forever by this loop.
      char buf[4096];
      ssize_t n = 1;
      for (int i = 0; i < kLingerReadsPerEvent && n > 0; ++i)
        n = recv(c->fd, buf, sizeof buf, MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        Close(c, DropReason::kNone);
        return;
      }
      break;
    }
    if (c->state != State::kReading) return;
    if (!Receive(c)) return;
    const size_t end = HeadEnd(c->in);
    if (end == std::string::npos || end > options_.request_bytes_max) {
      if (end != std::string::npos || c->in.size() > options_.request_bytes_max) {
        Refuse(c, 431, DropReason::kOversize);
        continue;
      }
      if (c->peer_eof) {
        Close(c, DropReason::kNone);
        return;
      }
      break;  // wait for more
    }
    Answer(c, end);
  }
  // Waiting for input (a request, or the client's close while lingering).
  if (reactor_->engine() == ReactorEngine::kUring && !c->rx_armed) {
    if (reactor_->WatchOnce(c->fd, &c->rx).ok()) {
      c->rx_armed = true;
    } else {
      Close(c, DropReason::kNone);
    }
  }
}

bool MetricsServer::Receive(Conn* c) {
  // Never more than one byte over the limit: enough to know the head is too large.
  char buf[4096];
  while (!c->peer_eof && c->in.size() <= options_.request_bytes_max) {
    const size_t room = options_.request_bytes_max + 1 - c->in.size();
    ssize_t n = recv(c->fd, buf, std::min(sizeof buf, room), MSG_DONTWAIT);
    if (n > 0) {
      const uint64_t now = MonotonicNs();
      if (!c->request_started) {
        // The first byte after an idle spell starts the header clock of the next request.
        c->request_started = true;
        SetDeadline(c, now + options_.header_timeout_ns);
      }
      c->in.append(buf, static_cast<size_t>(n));
      c->last_active_ns = now;
      continue;
    }
    if (n == 0) {
      c->peer_eof = true;
      break;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
    Close(c, DropReason::kNone);  // reset by the peer
    return false;
  }
  return true;
}

void MetricsServer::Answer(Conn* c, size_t head_end) {
  const std::string head = c->in.substr(0, head_end);
  c->in.erase(0, head_end);
  std::string_view rest = head;
  size_t eol = rest.find('\n');
  std::string_view line = Trim(rest.substr(0, eol));
  rest.remove_prefix(eol + 1);
  const size_t sp1 = line.find(' ');
  const size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos ||
      sp1 == 0 || sp2 == sp1 + 1) {
    Refuse(c, 400, DropReason::kBadRequest);
    return;
  }
  const std::string_view method = line.substr(0, sp1);
  const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = line.substr(sp2 + 1);
  if (version != "HTTP/1.1" && version != "HTTP/1.0") {
    Refuse(c, 400, DropReason::kBadRequest);
    return;
  }
  bool keep_alive = version == "HTTP/1.1";
  bool has_body = false;
  bool gzip = false;
  while (!rest.empty()) {
    eol = rest.find('\n');
    std::string_view h = Trim(rest.substr(0, eol));
    rest.remove_prefix(eol == std::string_view::npos ? rest.size() : eol + 1);
    if (h.empty()) break;  // the empty line ending the head
    const size_t colon = h.find(':');
    if (colon == std::string_view::npos || colon == 0) {
      Refuse(c, 400, DropReason::kBadRequest);
      return;
    }
    const std::string_view name = h.substr(0, colon);
    const std::string_view value = Trim(h.substr(colon + 1));
    if (EqualsNoCase(name, "accept-encoding")) {
      gzip = gzip || HasToken(value, "gzip");  // Prometheus sends "gzip"; q-values are ignored
    } else if (EqualsNoCase(name, "connection")) {
      if (HasToken(value, "close")) keep_alive = false;
      if (HasToken(value, "keep-alive")) keep_alive = true;
    } else if (EqualsNoCase(name, "transfer-encoding") ||
               (EqualsNoCase(name, "content-length") && value != "0")) {
      has_body = true;
    }
  }
  // A body is never read: closing after the reply keeps it from being taken for a request.
  c->close_after_send = !keep_alive || has_body || c->peer_eof;
  const bool head_only = method == "HEAD";
  const std::string_view path = target.substr(0, target.find('?'));
  if (path != "/metrics") {
    bad_requests_total.Add();
    QueueReply(c, 404, "", "only GET /metrics is served here\n", !head_only);
  } else if (method != "GET" && !head_only) {
    bad_requests_total.Add();
    QueueReply(c, 405, "Allow: GET, HEAD\r\n", "only GET /metrics is served here\n", true);
  } else {
    scrapes_total.Add();
    std::string text = RenderCountersPrometheus();
    std::string packed;
    if (gzip && Gzip(text, &packed)) {
      text.clear();
      text.shrink_to_fit();
      QueueReply(c, 200, "Content-Encoding: gzip\r\nVary: Accept-Encoding\r\n", packed, !head_only);
    } else {
      QueueReply(c, 200, "Vary: Accept-Encoding\r\n", text, !head_only);
    }
  }
}

void MetricsServer::Refuse(Conn* c, int code, DropReason reason) {
  bad_requests_total.Add();
  if (reason == DropReason::kOversize) dropped_oversize_total.Add();
  if (reason == DropReason::kBadRequest) dropped_bad_request_total.Add();
  c->in.clear();
  c->close_after_send = true;
  QueueReply(c, code, "", std::string(Phrase(code)) + "\n", true);
}

void MetricsServer::QueueReply(Conn* c, int code, std::string_view extra_headers,
                               const std::string& body, bool send_body) {
  std::string& out = c->out;
  out.clear();
  out.reserve(192 + (send_body ? body.size() : 0));
  out += "HTTP/1.1 ";
  out += std::to_string(code);
  out += ' ';
  out += Phrase(code);
  out += code == 200 ? "\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8"
                     : "\r\nContent-Type: text/plain; charset=utf-8";
  out += "\r\nContent-Length: ";
  out += std::to_string(body.size());
  out += "\r\n";
  out += extra_headers;
  // Explicit either way: an HTTP/1.0 client keeps the connection only when told.
  out += c->close_after_send ? "Connection: close\r\n\r\n" : "Connection: keep-alive\r\n\r\n";
  if (send_body) out += body;
  c->out_off = 0;
  c->state = State::kSending;
  SetDeadline(c, MonotonicNs() + options_.send_timeout_ns);
}

bool MetricsServer::Flush(Conn* c) {
  while (c->out_off < c->out.size()) {
    ssize_t n = send(c->fd, c->out.data() + c->out_off, c->out.size() - c->out_off,
                     MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      c->out_off += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      // The rest goes out when the client reads; the send deadline bounds the wait. In epoll
      // mode the edge-triggered registration reports POLLOUT by itself.
      if (reactor_->engine() == ReactorEngine::kUring && !c->tx_armed) {
        if (!reactor_->ArmWritable(c->fd, &c->tx).ok()) {
          Close(c, DropReason::kNone);
          return false;
        }
        c->tx_armed = true;
      }
      return false;
    }
    Close(c, DropReason::kNone);  // the peer is gone
    return false;
  }
  return true;
}

void MetricsServer::Linger(Conn* c) {
  if (c->peer_eof) {
    Close(c, DropReason::kNone);
    return;
  }
  // Our FIN follows the reply; the client reads it all, then closes. Closing the socket now, with
  // input unread, would send a reset instead, which can discard the reply on its way.
  ::shutdown(c->fd, SHUT_WR);
  c->state = State::kLingering;
  c->in.clear();
  SetDeadline(c, MonotonicNs() + options_.linger_ns);
}

void MetricsServer::SetDeadline(Conn* c, uint64_t deadline_ns) {
  reactor_->CancelTimer(&c->timer);
  reactor_->ArmTimer(&c->timer, deadline_ns);
}

void MetricsServer::Close(Conn* c, DropReason reason) {
  if (c->state == State::kFree || c->state == State::kClosing) return;
  switch (reason) {
    case DropReason::kHeaderTimeout:
      dropped_header_timeout_total.Add();
      break;
    case DropReason::kIdleTimeout:
      dropped_idle_timeout_total.Add();
      break;
    case DropReason::kSendTimeout:
      dropped_send_timeout_total.Add();
      break;
    case DropReason::kEvicted:
      dropped_evicted_total.Add();
      break;
    default:
      break;  // oversize and bad requests were counted when refused; the rest are no drops
  }
  reactor_->CancelTimer(&c->timer);
  --live_;
  c->state = State::kClosing;
  c->in = std::string();
  c->out = std::string();
  // Shutting the socket down fires any armed io_uring one-shot poll one last time; epoll forgets
  // the fd at once.
  ::shutdown(c->fd, SHUT_RDWR);
  if (reactor_->engine() == ReactorEngine::kEpoll) reactor_->Unwatch(c->fd, &c->rx);
  MaybeRelease(c);
}

void MetricsServer::MaybeRelease(Conn* c) {
  if (c->state != State::kClosing || c->rx_armed || c->tx_armed) return;
  close(c->fd);
  c->fd = -1;
  c->state = State::kFree;
}

}  // namespace spd
