// NBD server: listeners (unix and TCP), connections, and the glue between the sans-I/O protocol
// engine (proto/) and volumes. Protocol-neutral pieces (volume I/O, pool) live below; nothing
// here decides policy.
//
// The server's reactor accepts connections. Connections are spread over the connection
// reactors (--cores): each does its own socket work (receive, parse, reply) and hands every
// request to the dispatcher (dispatch/dispatcher.h) through its reactor's DispatchPort as an
// IoRequest. Where a request runs (the volume's owner, a hop, the fast path) is the
// dispatcher's business, not this frontend's.
//
// Limits (each named, each enforced): connections_max, per-connection requests in flight
// (conn_inflight_max), per-connection payload bytes in flight (conn_inflight_bytes_max), the
// advertised maximum request size (request_bytes_max). A client that exceeds the in-flight
// limits is not refused: the server stops reading its socket until replies drain (backpressure).
//
// Thread-safety: every method on the reactor's thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "dispatch/dispatcher.h"
#include "frontend/nbd/proto/nbd_handshake.h"
#include "reactor/reactor.h"
#include "volume/pool.h"

namespace spd {

struct NbdServerOptions {
  std::string unix_path;  // "" = no unix listener
  std::string tcp_host;   // "" = no TCP listener
  uint16_t tcp_port = 10809;
  uint32_t connections_max = 1024;
  uint32_t conn_inflight_max = 128;
  uint64_t conn_inflight_bytes_max = 128ull << 20;
  uint32_t request_bytes_max = 32u << 20;
  uint32_t recv_buffer_bytes = 256u << 10;
};

class NbdConnection;

class NbdServer {
 public:
  // `conn_reactors` empty means: every connection on `reactor`.
  // `dispatcher` (and its pool) must outlive the server.
  NbdServer(Reactor* reactor, Dispatcher* dispatcher, NbdServerOptions options,
            std::vector<Reactor*> conn_reactors = {});
  ~NbdServer();

  // Publishes every volume of the pool as an export and starts listening.
  [[nodiscard]] Status Start();
  // Stops accepting, stops reading requests, lets in-flight requests finish and their replies
  // go out, closes every connection; then runs `done` on the reactor.
  void Shutdown(Task* done);
  // Serves `fd`, a connected stream socket, as if the server had just accepted it: one end of a
  // socketpair in tests and fuzzers, or a socket handed over by a supervisor (socket
  // activation). Takes ownership of `fd`, also on failure (closed). Fails when shutting down or
  // at connections_max. REQUIRES: on the server's reactor, after Start() succeeded.
  [[nodiscard]] Status Adopt(int fd, std::string peer);

  // The bound TCP port (useful with tcp_port = 0).
  uint16_t tcp_port() const { return bound_tcp_port_; }
  size_t connections() const { return live_conns_; }

 private:
  friend class NbdConnection;
  class Catalog;
  struct Listener : Completion {
    NbdServer* server = nullptr;
    int fd = -1;
    int finals_pending = 0;
  };

  [[nodiscard]] Status Listen(Listener* l, int fd);
  static void OnAcceptable(Completion* c, int32_t res, uint32_t flags);
  void AcceptAll(Listener* l);
  // Creates the connection for an accepted (or adopted) socket on the least loaded reactor.
  void Place(int fd, std::string peer);
  // Called on the connection's reactor once it is closed for good.
  void ConnectionClosed(NbdConnection* conn);
  struct Shard;
  void Forget(Shard* shard);  // on reactor_: one connection fewer
  const nbd::ExportCatalog* catalog() const;
  void MaybeFinishShutdown();

  Reactor* reactor_;
  // Per connection reactor: its live connections, touched only on that reactor.
  struct Shard {
    NbdServer* server = nullptr;
    Reactor* reactor = nullptr;
    std::vector<NbdConnection*> conns;
    // Connections placed here and not yet forgotten; touched only on the server's reactor.
    unsigned placed = 0;
    // This reactor's way into the dispatcher; opened with the first connection here, closed
    // (on this reactor) when the last one is gone. Touched only on `reactor`.
    std::unique_ptr<DispatchPort> port;
    struct DrainAll : Task {
      Shard* shard;
    } drain_all;       // posted to `reactor`
    DrainAll drained;  // posted back to the server's reactor once drain_all ran
  };
  std::vector<std::unique_ptr<Shard>> shards_;
  Dispatcher* dispatcher_;
  Pool* pool_;
  NbdServerOptions options_;
  std::unique_ptr<Catalog> catalog_;
  Listener unix_listener_;
  Listener tcp_listener_;
  uint16_t bound_tcp_port_ = 0;
  size_t live_conns_ = 0;  // on reactor_
  bool shutting_down_ = false;
  size_t drains_pending_ = 0;  // shards on other reactors that have not run drain_all yet
  Task* shutdown_done_ = nullptr;
};

}  // namespace spd
