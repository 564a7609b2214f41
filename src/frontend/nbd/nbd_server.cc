#include "frontend/nbd/nbd_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>

#include "common/counters.h"
#include "common/log.h"
#include "common/unix_socket.h"
#include "frontend/nbd/nbd_connection.h"

namespace spd {
namespace {

Counter connections_total("spd_nbd_connections_total", "NBD connections accepted.");
Counter connections_refused_total("spd_nbd_connections_refused_total",
                                  "NBD connections closed at once: connections_max reached.");
Counter accept_errors_total("spd_nbd_accept_errors_total", "accept() failures.");
Counter exports_changed_total("spd_nbd_export_changes_total",
                              "Exports added, replaced (resized) or removed at run time.");

}  // namespace

// The live export list. Handshakes read it on connection reactors while the manager's changes
// arrive on the pool's reactor, hence the mutex (negotiation only, never per request). An
// Export is immutable once published: a change publishes a new one, and the old one stays
// allocated (retired_) because a handshake or connection may still point at it. A retired
// Export is a few hundred bytes per volume change; they go with the server.
class NbdServer::Catalog : public nbd::ExportCatalog {
 public:
  struct Entry {
    std::unique_ptr<nbd::Export> exp;
    std::shared_ptr<VolumeHandle> handle;
  };
  const nbd::Export* Find(std::string_view name) const override {
    std::lock_guard<std::mutex> g(mu_);
    if (live_.empty()) return nullptr;
    if (name.empty()) return live_.front().exp.get();  // the default export: the oldest volume
    for (const Entry& e : live_)
      if (e.exp->name == name) return e.exp.get();
    return nullptr;
  }
  std::vector<const nbd::Export*> List() const override {
    std::lock_guard<std::mutex> g(mu_);
    std::vector<const nbd::Export*> out;
    for (const Entry& e : live_) out.push_back(e.exp.get());
    return out;
  }
  // Publishes `e` for `handle`, replacing an export of the same name.
  void Put(std::unique_ptr<nbd::Export> e, std::shared_ptr<VolumeHandle> handle) {
    std::lock_guard<std::mutex> g(mu_);
    e->cookie = handle.get();
    for (Entry& cur : live_) {
      if (cur.exp->name != e->name) continue;
      retired_.push_back(std::move(cur.exp));
      cur.exp = std::move(e);
      cur.handle = std::move(handle);
      return;
    }
    live_.push_back({std::move(e), std::move(handle)});
  }
  void Remove(const std::string& name) {
    std::lock_guard<std::mutex> g(mu_);
    for (auto it = live_.begin(); it != live_.end(); ++it) {
      if (it->exp->name != name) continue;
      retired_.push_back(std::move(it->exp));
      live_.erase(it);
      return;
    }
  }
  // The handle behind an export this catalog published (live or retired).
  std::shared_ptr<VolumeHandle> HandleOf(const nbd::Export* e) const {
    std::lock_guard<std::mutex> g(mu_);
    for (const Entry& cur : live_)
      if (cur.exp.get() == e) return cur.handle;
    return nullptr;  // retired: its volume changed or went away since the client chose it
  }
  size_t size() const {
    std::lock_guard<std::mutex> g(mu_);
    return live_.size();
  }

 private:
  mutable std::mutex mu_;
  std::vector<Entry> live_;  // in volume id order (creation order)
  std::vector<std::unique_ptr<nbd::Export>> retired_;
};

const nbd::ExportCatalog* NbdServer::catalog() const { return catalog_.get(); }
uint64_t NbdServer::buffer_bytes() const { return budget_.used(); }
uint64_t NbdServer::buffer_bytes_peak() const { return budget_.peak(); }

std::shared_ptr<VolumeHandle> NbdServer::HandleOf(const nbd::Export* e) const {
  return catalog_->HandleOf(e);
}

NbdServer::NbdServer(Reactor* reactor, Dispatcher* dispatcher, VolumeManager* volumes,
                     NbdServerOptions options, std::vector<Reactor*> conn_reactors)
    : reactor_(reactor),
      budget_(options.memory_bytes_max),
      dispatcher_(dispatcher),
      volumes_(volumes),
      pool_(dispatcher->pool()),
      options_(std::move(options)),
      catalog_(new Catalog()) {
  // More negotiating connections than connections could never be reached: the smaller wins.
  options_.handshakes_max = std::min(options_.handshakes_max, options_.connections_max);
  if (options_.slow_request_ns > 0) slow_after_ns_ = options_.slow_request_ns;
  trace_io_ = options_.trace_sample_period > 0 || options_.trace_slow_ns > 0;
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
    sh->pool = std::make_unique<NbdBufferPool>(&budget_, r);
    sh->evict_task.shard = sh.get();
    sh->evict_task.fn = [](Task* t) {
      Shard* shard = static_cast<Shard::DrainAll*>(t)->shard;
      shard->evict_posted.store(false);
      // Each request closes the oldest connection still negotiating here, if any is left.
      while (shard->evict_requests.load() > 0) {
        if (shard->neg_head != nullptr) shard->neg_head->Evict();
        shard->evict_requests.fetch_sub(1);
      }
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
  volumes_->RemoveListener(this);
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

Status NbdServer::CheckOptions(const NbdServerOptions& o) {
  // Every request up to the advertised maximum must be able to get its buffer: a budget below
  // one such buffer plus one connection's slots would make the advertised maximum a lie.
  // With TLS, one connection's session too (NbdConnection::TlsBytes).
  const uint64_t tls = o.tls_mode == nbd::TlsMode::kOff ? 0 : NbdConnection::TlsBytes();
  const uint64_t need =
      NbdBufferPool::ClassBytes(o.request_bytes_max) + NbdConnection::TransmissionBytes(o) + tls;
  if (o.memory_bytes_max < need)
    return InvalidArgument(
        "nbd: the memory budget (--nbd-memory-max, " + std::to_string(o.memory_bytes_max) +
        " bytes) is smaller than one request of the advertised maximum (--nbd-request-max, " +
        std::to_string(o.request_bytes_max) + " bytes, buffer " +
        std::to_string(NbdBufferPool::ClassBytes(o.request_bytes_max)) +
        ") plus one connection's slots and receive buffer (" +
        std::to_string(NbdConnection::TransmissionBytes(o)) + ")" +
        (tls ? " and TLS session (" + std::to_string(tls) + ")" : std::string()) +
        ": raise it to at least " + std::to_string(need));
  if (o.handshakes_max == 0) return InvalidArgument("nbd: --nbd-handshakes-max must be >= 1");
  const NbdTlsFiles& f = o.tls_files;
  const bool files =
      !f.psk_file.empty() || !f.cert_file.empty() || !f.key_file.empty() || !f.ca_file.empty();
  if (o.tls_mode == nbd::TlsMode::kOff && (files || o.tls_unix))
    return InvalidArgument(
        "nbd: TLS credentials or --nbd-tls-unix given with --nbd-tls off: say --nbd-tls on or "
        "require");
  if (o.tls_mode != nbd::TlsMode::kOff && f.psk_file.empty() && f.cert_file.empty())
    return InvalidArgument(
        "nbd: --nbd-tls on|require needs credentials: --nbd-tls-psk FILE, or --nbd-tls-cert "
        "FILE with --nbd-tls-key FILE");
  if (!o.tcp_host.empty() && !o.allow_insecure_tcp && o.tls_mode != nbd::TlsMode::kRequire) {
    in_addr a{};
    const bool loopback =
        inet_pton(AF_INET, o.tcp_host.c_str(), &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
    if (!loopback)
      return InvalidArgument(
          "nbd: refusing plaintext NBD on non-loopback address " + o.tcp_host +
          " (anyone who can reach it could read and write every volume): use --nbd-tls require "
          "with --nbd-tls-psk FILE (or --nbd-tls-cert/--nbd-tls-key), or pass --nbd-insecure");
  }
  return Status::Ok();
}

Status NbdServer::ExportVolume(const VolumeInfo& vi) {
  std::shared_ptr<VolumeHandle> handle = volumes_->Find(vi.name);
  if (!handle) return NotFound("nbd: no handle for volume " + vi.name);
  const uint32_t align = pool_->backend()->alignment_bytes();
  auto e = std::make_unique<nbd::Export>();
  e->name = vi.name;
  e->description = "spd2 volume " + vi.name;
  e->size_bytes = vi.size_bytes;
  e->read_only = vi.read_only;
  e->block_min_bytes = align;
  e->block_pref_bytes = std::max<uint32_t>(4096, align);
  e->block_max_bytes = options_.request_bytes_max;
  if (!nbd::BlockSizesValid(*e))
    return InvalidArgument("nbd: export " + vi.name + ": block size constraints invalid (min " +
                           std::to_string(e->block_min_bytes) + ", max " +
                           std::to_string(e->block_max_bytes) + ")");
  catalog_->Put(std::move(e), std::move(handle));
  return Status::Ok();
}

void NbdServer::OnVolumeChanged(const VolumeInfo& info, VolumeManager::Change kind) {
  if (kind == VolumeManager::Change::kDeleted) {
    catalog_->Remove(info.name);
    exports_changed_total.Add();
    return;
  }
  if (kind == VolumeManager::Change::kDurability) return;  // nothing NBD advertises
  // Created or resized: new connections see the volume as it is now.
  if (Status s = ExportVolume(info); !s.ok()) {
    SPD_LOG_WARN("%s", s.ToString().c_str());
    return;
  }
  exports_changed_total.Add();
}

void NbdServer::OnVolumeClosing(std::shared_ptr<VolumeHandle> handle, std::function<void()> done) {
  // Every shard closes its connections to the volume: they stop reading, answer what is in
  // flight, close, and give up their user registration. The manager waits for the handle's
  // users to reach zero; `done` only says every shard has started closing.
  struct Closing {
    std::shared_ptr<VolumeHandle> handle;
    std::function<void()> done;
    std::atomic<size_t> shards_left{0};
  };
  auto closing = std::make_shared<Closing>();
  closing->handle = std::move(handle);
  closing->done = std::move(done);
  closing->shards_left = shards_.size();
  struct CloseTask : Task {
    Shard* shard;
    std::shared_ptr<Closing> closing;
  };
  for (auto& sh : shards_) {
    auto* t = new CloseTask();
    t->shard = sh.get();
    t->closing = closing;
    t->fn = [](Task* task) {
      std::unique_ptr<CloseTask> self(static_cast<CloseTask*>(task));
      std::vector<NbdConnection*> conns = self->shard->conns;
      for (NbdConnection* c : conns)
        if (c->handle() == self->closing->handle.get()) c->CloseForDelete();
      if (self->closing->shards_left.fetch_sub(1) == 1) self->closing->done();
    };
    if (sh->reactor == reactor_) {
      t->fn(t);
    } else {
      sh->reactor->Post(t);
    }
  }
}

Status NbdServer::Start() {
  for (const VolumeInfo& vi : volumes_->List()) SPD_RETURN_IF_ERROR(ExportVolume(vi));
  if (catalog_->size() == 0) return FailedPrecondition("nbd: the pool has no volume to export");
  SPD_RETURN_IF_ERROR(CheckOptions(options_));
  if (options_.tls_mode != nbd::TlsMode::kOff && options_.tls_credentials) {
    tls_ = options_.tls_credentials;
  } else if (options_.tls_mode != nbd::TlsMode::kOff) {
    auto creds = NbdTlsCredentials::Load(options_.tls_files);
    if (!creds.ok()) return creds.status();
    tls_ = std::move(creds).value();
  }
  volumes_->AddListener(this);

  if (!options_.unix_path.empty()) {
    int fd = -1;
    SPD_ASSIGN_OR_RETURN(fd, BindUnixSocket(options_.unix_path, options_.unix_mode,
                                            options_.unix_gid, "nbd: unix socket"));
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
    // Connections still negotiating may be displaced (oldest first) by new ones: a flood of
    // sockets that never negotiate then costs the server handshakes_max small connections and
    // never keeps a real client out. Negotiated connections are never displaced: at
    // connections_max with none negotiating, the newcomer is refused. (Displacement finishes
    // on the victim's reactor, so the counts may exceed their limits by the evictions under way.)
    uint32_t evicting = 0;
    for (auto& sh : shards_) evicting += sh->evict_requests.load();
    const uint32_t negotiating = negotiating_.load();
    const uint32_t live_negotiating = negotiating > evicting ? negotiating - evicting : 0;
    if (live_negotiating >= options_.handshakes_max ||
        live_conns_ - std::min<size_t>(live_conns_, evicting) >= options_.connections_max) {
      if (!EvictOneNegotiating()) {
        connections_refused_total.Add();
        close(fd);
        continue;
      }
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
    Place(fd, std::move(peer), ss.ss_family == AF_INET);
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
  // A TCP socket gets the TCP listener's TLS policy, anything else the unix one's.
  int domain = AF_UNIX;
  socklen_t dl = sizeof domain;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &dl) != 0) domain = AF_UNIX;
  Place(fd, std::move(peer), domain == AF_INET || domain == AF_INET6);
  return Status::Ok();
}

void NbdServer::Place(int fd, std::string peer, bool tcp) {
  // The least loaded reactor; ties go to the first, which is the pool's own reactor, where a
  // request needs no hop to reach the volume (the common single-connection client).
  Shard* shard = shards_[0].get();
  for (auto& sh : shards_)
    if (sh->placed < shard->placed) shard = sh.get();
  ++shard->placed;
  shard->negotiating.fetch_add(1);
  negotiating_.fetch_add(1);
  Reactor* r = shard->reactor;
  auto* conn = new NbdConnection(this, r, fd, std::move(peer), tcp);
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
    if (self->shard->conns.empty()) {
      self->shard->port.reset();
      // Nobody here to reuse cached buffers: give their memory back.
      self->shard->pool->Trim();
    }
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

bool NbdServer::EvictOneNegotiating() {
  Shard* victim = nullptr;
  uint32_t most = 0;
  for (auto& sh : shards_) {
    const uint32_t n = sh->negotiating.load();
    const uint32_t asked = sh->evict_requests.load();
    if (n > asked && n - asked > most) {
      most = n - asked;
      victim = sh.get();
    }
  }
  if (victim == nullptr) return false;
  victim->evict_requests.fetch_add(1);
  if (victim->reactor == reactor_) {
    victim->evict_task.fn(&victim->evict_task);
  } else if (!victim->evict_posted.exchange(true)) {
    victim->reactor->Post(&victim->evict_task);
  }
  return true;
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
