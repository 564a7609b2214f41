#include "frontend/nbd/nbd_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/counters.h"
#include "common/log.h"
#include "frontend/nbd/nbd_connection.h"

namespace spd {
namespace {

Counter connections_total("spd_nbd_connections_total", "NBD connections accepted.");
Counter connections_refused_total("spd_nbd_connections_refused_total",
                                  "NBD connections closed at once: connections_max reached.");
Counter accept_errors_total("spd_nbd_accept_errors_total", "accept() failures.");

}  // namespace

class NbdServer::Catalog : public nbd::ExportCatalog {
 public:
  const nbd::Export* Find(std::string_view name) const override {
    if (exports_.empty()) return nullptr;
    if (name.empty()) return &exports_.front();
    for (const nbd::Export& e : exports_)
      if (e.name == name) return &e;
    return nullptr;
  }
  std::vector<const nbd::Export*> List() const override {
    std::vector<const nbd::Export*> out;
    for (const nbd::Export& e : exports_) out.push_back(&e);
    return out;
  }
  std::vector<nbd::Export> exports_;
};

const nbd::ExportCatalog* NbdServer::catalog() const { return catalog_.get(); }

NbdServer::NbdServer(Reactor* reactor, Dispatcher* dispatcher, NbdServerOptions options,
                     std::vector<Reactor*> conn_reactors)
    : reactor_(reactor),
      dispatcher_(dispatcher),
      pool_(dispatcher->pool()),
      options_(std::move(options)),
      catalog_(new Catalog()) {
  if (conn_reactors.empty()) conn_reactors.push_back(reactor_);
  for (Reactor* r : conn_reactors) {
    auto sh = std::make_unique<Shard>();
    sh->server = this;
    sh->reactor = r;
    sh->drain_all.shard = sh.get();
    sh->drain_all.fn = [](Task* t) {
      Shard* shard = static_cast<Shard::DrainAll*>(t)->shard;
      std::vector<NbdConnection*> conns = shard->conns;
      for (NbdConnection* c : conns) c->Drain();
      // The server (and this shard) may only go away once this task has run: say so.
      if (shard->reactor != shard->server->reactor_) shard->server->reactor_->Post(&shard->drained);
    };
    sh->drained.shard = sh.get();
    sh->drained.fn = [](Task* t) {
      NbdServer* server = static_cast<Shard::DrainAll*>(t)->shard->server;
      SPD_ASSERT(server->drains_pending_ > 0);
      --server->drains_pending_;
      server->MaybeFinishShutdown();
    };
    shards_.push_back(std::move(sh));
  }
  unix_listener_.server = this;
  unix_listener_.fn = &NbdServer::OnAcceptable;
  tcp_listener_.server = this;
  tcp_listener_.fn = &NbdServer::OnAcceptable;
}

NbdServer::~NbdServer() {
  // Connections still open here (a server torn down without Shutdown) belong to reactors that
  // have stopped; nothing else can reach them.
  for (auto& sh : shards_)
    for (NbdConnection* c : sh->conns) delete c;
  // shutdown() first: the ring's poll may still hold the socket after close() (even after the
  // process exits: io_uring tears a ring down asynchronously), and a listening socket that
  // lingers keeps the port, so a restarted daemon could not bind it.
  for (Listener* l : {&unix_listener_, &tcp_listener_}) {
    if (l->fd < 0) continue;
    shutdown(l->fd, SHUT_RDWR);
    close(l->fd);
  }
  if (!options_.unix_path.empty()) unlink(options_.unix_path.c_str());
}

Status NbdServer::Start() {
  const uint32_t align = pool_->backend()->alignment_bytes();
  for (const VolumeInfo& vi : pool_->ListVolumes()) {
    nbd::Export e;
    e.name = vi.name;
    e.description = "spd2 volume " + vi.name;
    e.size_bytes = vi.size_bytes;
    e.read_only = vi.read_only;
    e.block_min_bytes = align;
    e.block_pref_bytes = std::max<uint32_t>(4096, align);
    e.block_max_bytes = options_.request_bytes_max;
    e.cookie = pool_->FindVolume(vi.name);
    if (!nbd::BlockSizesValid(e))
      return InvalidArgument("nbd: export " + vi.name + ": block size constraints invalid (min " +
                             std::to_string(e.block_min_bytes) + ", max " +
                             std::to_string(e.block_max_bytes) + ")");
    catalog_->exports_.push_back(std::move(e));
  }
  if (catalog_->exports_.empty())
    return FailedPrecondition("nbd: the pool has no volume to export");

  if (!options_.unix_path.empty()) {
    if (options_.unix_path.size() >= sizeof(sockaddr_un::sun_path))
      return InvalidArgument("nbd: unix socket path too long: " + options_.unix_path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return Status::FromErrno(errno, "nbd: socket(AF_UNIX)");
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::memcpy(sa.sun_path, options_.unix_path.c_str(), options_.unix_path.size());
    unlink(options_.unix_path.c_str());  // a stale socket from a previous run
    if (bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0) {
      Status s = Status::FromErrno(errno, "nbd: bind " + options_.unix_path);
      close(fd);
      return s;
    }
    SPD_RETURN_IF_ERROR(Listen(&unix_listener_, fd));
  }
  if (!options_.tcp_host.empty()) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return Status::FromErrno(errno, "nbd: socket(AF_INET)");
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(options_.tcp_port);
    if (inet_pton(AF_INET, options_.tcp_host.c_str(), &sa.sin_addr) != 1) {
      close(fd);
      return InvalidArgument("nbd: not an IPv4 address: " + options_.tcp_host);
    }
    if (bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0) {
      Status s = Status::FromErrno(
          errno, "nbd: bind " + options_.tcp_host + ":" + std::to_string(options_.tcp_port));
      close(fd);
      return s;
    }
    socklen_t len = sizeof sa;
    getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
    bound_tcp_port_ = ntohs(sa.sin_port);
    SPD_RETURN_IF_ERROR(Listen(&tcp_listener_, fd));
  }
  return Status::Ok();
}

Status NbdServer::Listen(Listener* l, int fd) {
  if (listen(fd, 1024) < 0) {
    Status s = Status::FromErrno(errno, "nbd: listen");
    close(fd);
    return s;
  }
  l->fd = fd;
  SPD_RETURN_IF_ERROR(reactor_->Watch(fd, l));
  l->finals_pending = 1;
  return Status::Ok();
}

void NbdServer::OnAcceptable(Completion* c, int32_t res, uint32_t flags) {
  auto* l = static_cast<Listener*>(c);
  NbdServer* self = l->server;
  if (self->reactor_->engine() == ReactorEngine::kUring && !(flags & IORING_CQE_F_MORE)) {
    l->finals_pending = 0;
    if (!self->shutting_down_ && res != -ECANCELED) {
      // The multishot poll ended on its own: re-arm it.
      if (self->reactor_->Watch(l->fd, l).ok()) l->finals_pending = 1;
    }
  }
  if (res > 0 && !self->shutting_down_) self->AcceptAll(l);
  self->MaybeFinishShutdown();
}

void NbdServer::AcceptAll(Listener* l) {
  for (;;) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    int fd = accept4(l->fd, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) {
        accept_errors_total.Add();
        SPD_LOG_WARN("nbd: accept: %s", strerror(errno));
      }
      return;
    }
    if (live_conns_ >= options_.connections_max) {
      connections_refused_total.Add();
      close(fd);
      continue;
    }
    std::string peer = "unix";
    if (ss.ss_family == AF_INET) {
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      char buf[INET_ADDRSTRLEN] = {};
      auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
      inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof buf);
      peer = std::string(buf) + ":" + std::to_string(ntohs(sin->sin_port));
    }
    Place(fd, std::move(peer));
  }
}

Status NbdServer::Adopt(int fd, std::string peer) {
  if (shutting_down_ || live_conns_ >= options_.connections_max) {
    close(fd);
    return shutting_down_ ? FailedPrecondition("nbd: adopt: the server is shutting down")
                          : ResourceExhausted("nbd: adopt: connections_max reached");
  }
  // What accept4 would have set; the connection never blocks on its socket.
  const int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
    Status s = Status::FromErrno(errno, "nbd: adopt: fcntl");
    close(fd);
    return s;
  }
  Place(fd, std::move(peer));
  return Status::Ok();
}

void NbdServer::Place(int fd, std::string peer) {
  // The least loaded reactor; ties go to the first, which is the pool's own reactor, where a
  // request needs no hop to reach the volume (the common single-connection client).
  Shard* shard = shards_[0].get();
  for (auto& sh : shards_)
    if (sh->placed < shard->placed) shard = sh.get();
  ++shard->placed;
  Reactor* r = shard->reactor;
  auto* conn = new NbdConnection(this, r, fd, std::move(peer));
  conn->shard = shard;
  ++live_conns_;
  connections_total.Add();
  conn->start_task.fn = [](Task* t) {
    NbdConnection* c = static_cast<NbdConnection::ConnTask*>(t)->conn;
    auto* sh = static_cast<Shard*>(c->shard);
    if (!sh->port) sh->port = sh->server->dispatcher_->OpenPort(sh->reactor);
    sh->conns.push_back(c);
    Status s = c->Start();
    if (!s.ok()) {
      SPD_LOG_WARN("nbd: connection start: %s", s.ToString().c_str());
      c->Drain();
    }
  };
  if (r == reactor_) {
    conn->start_task.fn(&conn->start_task);
  } else {
    r->Post(&conn->start_task);
  }
}

void NbdServer::ConnectionClosed(NbdConnection* conn) {
  // On the connection's reactor. It leaves its shard now and is deleted at the end of this tick
  // (events of the current batch may still name it); the server's count lives on reactor_ and
  // learns of it by message.
  auto* shard = static_cast<Shard*>(conn->shard);
  auto it = std::find(shard->conns.begin(), shard->conns.end(), conn);
  SPD_ASSERT(it != shard->conns.end());
  shard->conns.erase(it);
  struct Reaper : Task {
    NbdServer* server;
    NbdConnection* conn;
    Shard* shard;
  };
  auto* r = new Reaper();
  r->server = this;
  r->conn = conn;
  r->shard = shard;
  r->fn = [](Task* t) {
    auto* self = static_cast<Reaper*>(t);
    Reactor* own = self->conn->reactor();
    delete self->conn;
    self->conn = nullptr;
    // The last connection here is gone, and with it every request of the port: close it now,
    // at the end of a tick (no backend frame is on the stack), on its own reactor.
    if (self->shard->conns.empty()) self->shard->port.reset();
    self->fn = [](Task* t2) {
      auto* again = static_cast<Reaper*>(t2);
      again->server->Forget(again->shard);
      delete again;
    };
    if (own == self->server->reactor_) {
      self->fn(self);
    } else {
      self->server->reactor_->Post(self);
    }
  };
  conn->reactor()->Defer(r);
}

void NbdServer::Forget(Shard* shard) {
  SPD_ASSERT(live_conns_ > 0 && shard->placed > 0);
  --shard->placed;
  --live_conns_;
  MaybeFinishShutdown();
}

void NbdServer::Shutdown(Task* done) {
  shutting_down_ = true;
  shutdown_done_ = done;
  for (Listener* l : {&unix_listener_, &tcp_listener_}) {
    if (l->fd < 0) continue;
    if (reactor_->Unwatch(l->fd, l) == 0) l->finals_pending = 0;
  }
  for (auto& sh : shards_) {
    if (sh->reactor == reactor_) {
      sh->drain_all.fn(&sh->drain_all);
    } else {
      ++drains_pending_;
      sh->reactor->Post(&sh->drain_all);
    }
  }
  MaybeFinishShutdown();
}

void NbdServer::MaybeFinishShutdown() {
  if (!shutting_down_ || shutdown_done_ == nullptr) return;
  SPD_LOG_DEBUG("nbd shutdown: %zu connection(s), listener finals %d/%d", live_conns_,
                unix_listener_.finals_pending, tcp_listener_.finals_pending);
  if (live_conns_ > 0 || drains_pending_ > 0) return;
  if (unix_listener_.finals_pending > 0 || tcp_listener_.finals_pending > 0) return;
  Task* done = shutdown_done_;
  shutdown_done_ = nullptr;
  reactor_->Defer(done);
}

}  // namespace spd
