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
// Limits (each named, each enforced, each with a test): connections_max, handshakes_max,
// handshake_timeout_ms, idle_timeout_ms, per-connection requests in flight (conn_inflight_max),
// per-connection payload bytes in flight (conn_inflight_bytes_max), the advertised maximum
// request size (request_bytes_max), and memory_bytes_max, the budget of every request buffer,
// request slot and receive buffer of the server. A client that exceeds the in-flight limits or
// finds the budget spent is not refused: the server stops reading its socket until replies
// drain or memory comes back (backpressure).
//
// A connection costs little until it has negotiated: a small negotiation buffer and the
// handshake state. Its request slots and receive buffer are allocated (and charged to the
// budget) when transmission starts, request buffers when a request needs one.
//
// TLS (NBD_OPT_STARTTLS, nbd_tls.h): tls_mode applies to TCP connections (and to unix ones with
// tls_unix); the credentials are loaded by Start. A TCP listener on a non-loopback address
// needs tls_mode kRequire unless allow_insecure_tcp. The optional authorize callback decides
// which exports a client (its TLS PSK identity) may list and open (nbd_handshake.h);
// authorize_uid does the same for a plaintext client on this host by its uid.
//
// Thread-safety: every method on the reactor's thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "dispatch/dispatcher.h"
#include "frontend/nbd/nbd_buffers.h"
#include "frontend/nbd/nbd_tls.h"
#include "frontend/nbd/proto/nbd_handshake.h"
#include "reactor/reactor.h"
#include "volume/pool.h"
#include "volume/volume_manager.h"

namespace spd {

struct NbdServerOptions {
  std::string unix_path;  // "" = no unix listener
  // The unix socket file's permission bits and group (-1: the process's), from its creation on
  // (BindUnixSocket, common/unix_socket.h).
  uint32_t unix_mode = 0600;
  int unix_gid = -1;
  std::string tcp_host;  // "" = no TCP listener
  uint16_t tcp_port = 10809;
  uint32_t connections_max = 1024;
  uint32_t conn_inflight_max = 128;
  // Count each connection's requests in its volume's io_stats (volume_stats.h).
  bool volume_stats = true;
  uint64_t conn_inflight_bytes_max = 128ull << 20;
  uint32_t request_bytes_max = 32u << 20;
  uint32_t recv_buffer_bytes = 256u << 10;
  // Connections still negotiating, at most. A new connection beyond it (or beyond
  // connections_max) makes the server close the oldest negotiating connection, so sockets that
  // never negotiate cannot keep real clients out. At most connections_max (larger: clamped).
  uint32_t handshakes_max = 64;
  // A connection that has not finished negotiating this long after accept is closed. 0 = never.
  uint64_t handshake_timeout_ms = 10'000;
  // A negotiated connection with no request for this long (and none in flight) is closed.
  // 0 = never: NBD clients (a mounted nbd device) may legitimately sit idle for hours.
  uint64_t idle_timeout_ms = 0;
  // A negotiated connection whose peer does not move for this long while the server waits for
  // it (a write payload that stopped arriving, replies the client does not read) is closed and
  // its queued replies dropped. 0 = never.
  uint64_t stall_timeout_ms = 30'000;
  // Budget of request buffers, slots and receive buffers, all connections together.
  uint64_t memory_bytes_max = 1ull << 30;
  // Receive buffer of a connection that is still negotiating (the handshake buffers options
  // itself, so this only bounds one recv).
  uint32_t negotiation_buffer_bytes = 4096;
  // NBD's own TLS. kOn offers STARTTLS and serves plaintext clients too; kRequire refuses to
  // negotiate anything in plaintext (the spec's FORCEDTLS). TCP connections only, unless
  // tls_unix.
  nbd::TlsMode tls_mode = nbd::TlsMode::kOff;
  bool tls_unix = false;
  NbdTlsFiles tls_files;
  // The credentials of tls_files, already loaded (spd2 loads them before the pool opens, so that
  // a refused file changes nothing); null: Start loads them.
  std::shared_ptr<NbdTlsCredentials> tls_credentials;
  // A TCP listener on an address outside 127.0.0.0/8 without tls_mode kRequire is refused
  // unless this is set (--nbd-insecure).
  bool allow_insecure_tcp = false;
  // Which exports a client may list and open, by TLS identity ("" without one); empty: every
  // export for everyone. Thread-safe, non-blocking (called on connection reactors).
  nbd::ExportAuthorizer authorize;
  // Which exports a plaintext client on this host may list and open, by the uid at the other
  // end (common/peer_uid.h): a client of the unix socket (SO_PEERCRED), or a TCP client whose
  // connection runs over loopback (the owner of its socket, from inet_diag). It replaces
  // `authorize` for such a client until TLS gives it an identity (with TLS up but no identity,
  // x509 without a CA, the uid still decides); a client whose uid cannot be told may use no
  // export. TCP clients from elsewhere (--nbd-insecure) are not asked about. Empty: no uid
  // check. Thread-safe, non-blocking, like `authorize`.
  std::function<bool(uint32_t uid, std::string_view export_name)> authorize_uid;
  // TEST ONLY (nbd_tls_test.cc): while a TLS handshake runs, sleep this long before each read
  // of the socket, so that everything the client sends promptly has arrived: the whole
  // handshake then runs inside the read that brought STARTTLS, as on a loaded server.
  uint32_t test_tls_handshake_read_delay_ms = 0;
  // A request whose arrival -> reply time exceeds this logs a slow-request line
  // (dispatch/slow_request.h; its stage breakdown needs DispatcherOptions::stamp_stages).
  // 0 = never.
  uint64_t slow_request_ns = 0;
  // Trace I/O requests (common/trace.h): one in trace_sample_period of each connection's
  // requests (0: none) and each slower than trace_slow_ns (0: none). A traced request becomes a
  // span with a child per stage (its stage breakdown needs DispatcherOptions::stamp_stages).
  uint64_t trace_sample_period = 0;
  uint64_t trace_slow_ns = 0;
};

class NbdConnection;

// Exports are the volume manager's volumes, live: a volume created at run time can be exported
// at once, a deleted one disappears from LIST, a resized one is offered at its new size to new
// connections. Each connection in transmission is a user of its volume (VolumeHandle::AddUser);
// a forced delete closes the volume's connections (OnVolumeClosing) after their in-flight
// requests are answered.
class NbdServer : private VolumeManager::Listener {
 public:
  // `conn_reactors` empty means: every connection on `reactor`. `dispatcher` and `volumes` (and
  // their pool) must outlive the server; `reactor` must be the pool's (the manager calls its
  // listeners there).
  NbdServer(Reactor* reactor, Dispatcher* dispatcher, VolumeManager* volumes,
            NbdServerOptions options, std::vector<Reactor*> conn_reactors = {});
  ~NbdServer() override;

  // Whether the limits agree with each other (Start checks it too; the daemon calls it first to
  // report contradictory flags as a usage error).
  [[nodiscard]] static Status CheckOptions(const NbdServerOptions& o);

  // Publishes every volume as an export, follows the manager's changes, starts listening.
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
  // Loaded TLS credentials (null when TLS is off).
  const NbdTlsCredentials* tls() const { return tls_.get(); }
  // Bytes of the memory budget in use now, and the most ever in use (any thread).
  uint64_t buffer_bytes() const;
  uint64_t buffer_bytes_peak() const;

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
  void Place(int fd, std::string peer, bool tcp);
  // Called on the connection's reactor once it is closed for good.
  void ConnectionClosed(NbdConnection* conn);
  // VolumeManager::Listener (on the pool's reactor).
  void OnVolumeChanged(const VolumeInfo& info, VolumeManager::Change kind) override;
  void OnVolumeClosing(std::shared_ptr<VolumeHandle> handle, std::function<void()> done) override;
  [[nodiscard]] Status ExportVolume(const VolumeInfo& info);
  // The volume behind an export the catalog publishes now (null for a retired one). Any thread.
  std::shared_ptr<VolumeHandle> HandleOf(const nbd::Export* e) const;
  struct Shard;
  void Forget(Shard* shard);  // on reactor_: one connection fewer
  // On reactor_: asks the shard with the most negotiating connections to close its oldest one.
  // False when no connection is negotiating (none left to displace).
  bool EvictOneNegotiating();
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
    // Request buffers shared by this reactor's connections. Touched only on `reactor`.
    std::unique_ptr<NbdBufferPool> pool;
    // Connections still negotiating, oldest first (touched only on `reactor`), and how many
    // (counted from accept, on the server's reactor, to the end of negotiation here).
    NbdConnection* neg_head = nullptr;
    NbdConnection* neg_tail = nullptr;
    std::atomic<uint32_t> negotiating{0};
    // Evictions asked of this shard and not yet done; evict_task runs them on `reactor`.
    std::atomic<uint32_t> evict_requests{0};
    std::atomic<bool> evict_posted{false};
    DrainAll evict_task;
  };
  // Before shards_: their pools give their memory back when they go.
  NbdMemoryBudget budget_;
  std::vector<std::unique_ptr<Shard>> shards_;
  // Connections still negotiating, all shards (accept to end of negotiation).
  std::atomic<uint32_t> negotiating_{0};
  Dispatcher* dispatcher_;
  VolumeManager* volumes_;
  Pool* pool_;
  NbdServerOptions options_;
  // options_.slow_request_ns, UINT64_MAX when 0: a reply compares against it and nothing else.
  uint64_t slow_after_ns_ = UINT64_MAX;
  // Either trace option set: the one test a reply makes for tracing.
  bool trace_io_ = false;
  std::unique_ptr<Catalog> catalog_;
  std::shared_ptr<NbdTlsCredentials> tls_;
  Listener unix_listener_;
  Listener tcp_listener_;
  uint16_t bound_tcp_port_ = 0;
  size_t live_conns_ = 0;  // on reactor_
  bool shutting_down_ = false;
  size_t drains_pending_ = 0;  // shards on other reactors that have not run drain_all yet
  Task* shutdown_done_ = nullptr;
};

}  // namespace spd
