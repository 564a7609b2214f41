#include "telemetry/metrics_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/counters.h"

namespace spd {
namespace {
Counter scrapes_total("spd_metrics_scrapes_total", "Metrics requests served.");
Counter bad_requests_total("spd_metrics_bad_requests_total",
                           "Metrics requests refused (not GET /metrics, oversized, too many).");
}  // namespace

MetricsServer::~MetricsServer() {
  for (Client* c : clients_) {
    if (c->fd >= 0) close(c->fd);
    delete c;
  }
  if (fd_ >= 0) {
    // The ring's poll may keep the socket alive past close() and even past exit (io_uring tears
    // rings down asynchronously); shutdown() stops it listening now, so a restart can bind.
    shutdown(fd_, SHUT_RDWR);
    close(fd_);
  }
}

Status MetricsServer::Start(const std::string& host, uint16_t port) {
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
  if (listen(fd_, 64) < 0) return Status::FromErrno(errno, "metrics: listen");
  socklen_t len = sizeof sa;
  getsockname(fd_, reinterpret_cast<sockaddr*>(&sa), &len);
  port_ = ntohs(sa.sin_port);
  listener_.server = this;
  listener_.fn = &MetricsServer::OnAccept;
  for (size_t i = 0; i < kClientsMax; ++i) {
    auto* c = new Client();
    c->server = this;
    c->fn = &MetricsServer::OnClient;
    clients_.push_back(c);
  }
  return reactor_->Watch(fd_, &listener_);
}

void MetricsServer::OnAccept(Completion* c, int32_t res, uint32_t flags) {
  MetricsServer* self = static_cast<Listener*>(c)->server;
  if (self->reactor_->engine() == ReactorEngine::kUring && !(flags & IORING_CQE_F_MORE) &&
      res != -ECANCELED) {
    IgnoreError(self->reactor_->Watch(self->fd_, &self->listener_));
  }
  if (res <= 0) return;
  for (;;) {
    int fd = accept4(self->fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    Client* free_client = nullptr;
    for (Client* cl : self->clients_) {
      if (!cl->active && cl->fd < 0) {
        free_client = cl;
        break;
      }
    }
    if (free_client == nullptr) {
      bad_requests_total.Add();
      close(fd);
      continue;
    }
    free_client->fd = fd;
    free_client->active = true;
    free_client->in.clear();
    if (!self->reactor_->Watch(fd, free_client).ok()) self->Drop(free_client);
  }
}

void MetricsServer::OnClient(Completion* c, int32_t res, uint32_t flags) {
  auto* cl = static_cast<Client*>(c);
  MetricsServer* self = cl->server;
  const bool final_event =
      self->reactor_->engine() == ReactorEngine::kUring && !(flags & IORING_CQE_F_MORE);
  if (cl->active && res > 0) {
    char buf[2048];
    ssize_t n;
    while ((n = recv(cl->fd, buf, sizeof buf, MSG_DONTWAIT)) > 0) {
      cl->in.append(buf, static_cast<size_t>(n));
      if (cl->in.size() > kRequestBytesMax) break;
    }
    if (cl->in.size() > kRequestBytesMax) {
      bad_requests_total.Add();
      self->Drop(cl);
    } else if (cl->in.find("\r\n\r\n") != std::string::npos) {
      self->Serve(cl);
    } else if (n == 0) {
      self->Drop(cl);
    }
  }
  if (final_event && cl->fd >= 0) {
    // The poll is gone (cancelled by Drop, or ended by the kernel): free the slot.
    cl->active = false;
    close(cl->fd);
    cl->fd = -1;
  }
}

void MetricsServer::Serve(Client* cl) {
  std::string body;
  std::string status = "200 OK";
  if (cl->in.rfind("GET /metrics", 0) == 0) {
    scrapes_total.Add();
    body = RenderCountersPrometheus();
  } else {
    bad_requests_total.Add();
    status = "404 Not Found";
    body = "only GET /metrics is served here\n";
  }
  std::string resp = "HTTP/1.0 " + status +
                     "\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: " +
                     std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
  // Metrics pages are small and fit the socket buffer. A client that does not read gets a
  // truncated page rather than a stalled reactor.
  size_t off = 0;
  for (int tries = 0; off < resp.size() && tries < 4; ++tries) {
    ssize_t n = send(cl->fd, resp.data() + off, resp.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n <= 0) break;
    off += static_cast<size_t>(n);
  }
  Drop(cl);
}

void MetricsServer::Drop(Client* cl) {
  cl->active = false;
  ::shutdown(cl->fd, SHUT_RDWR);
  if (reactor_->Unwatch(cl->fd, cl) == 0) {
    close(cl->fd);
    cl->fd = -1;
  }
}

}  // namespace spd
