// ControlServer: the control API (api/spd/v1/*.proto) over gRPC, on DATA_DIR/control.sock.
//
// gRPC's callback API on gRPC's own threads, off the reactors: a handler validates its request,
// hands the work to the VolumeManager (which posts it to the pool's reactor) and finishes when
// the manager's callback runs; no handler blocks and nothing here runs on a data-path thread
// except those callbacks, which only copy a result and finish the call.
//
// Who calls. The server takes its unix-socket connections itself (ControlListener): it reads
// the caller's uid with SO_PEERCRED before handing the connection to gRPC, because gRPC C++
// does not expose it. Root and the daemon's own uid are admins; every other uid is refused
// (PERMISSION_DENIED) until a uid map gives it a role (docs/control.md). Health checks
// (grpc.health.v1) are open to everyone who can reach the socket.
//
// Limits (named, tested): request messages of at most kRequestBytesMax; at most
// kCallsInFlightMax calls in flight (more: RESOURCE_EXHAUSTED); at most
// kWatchersMax event watchers; at most kAuditQueueMax jobs waiting for the audit worker before a
// refused call's audit entry is dropped (counted; an admitted call's entry never is); the
// listener's own limits (control_listener.h).
//
// Thread-safety: Start and Stop from one thread (the daemon's main thread, Stop not on a
// reactor: it waits for calls in flight, whose completions need the pool's reactor running).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "volume/volume_manager.h"

namespace spd {
namespace qos {
class QosScheduler;
}

class ClusterNode;
class ReplicationManager;
class Dispatcher;
class EventHub;

inline constexpr size_t kCallsInFlightMax_ = 256;

struct ControlServerOptions {
  std::string socket_path;      // DATA_DIR/control.sock
  uint32_t socket_mode = 0600;  // --control-socket-mode
  int socket_group = -1;        // --control-socket-group (gid), -1: the daemon's
  // Fixed facts for NodeService.GetNodeInfo.
  std::string version;
  std::string data_dir;
  std::string engine;
  uint32_t reactors = 1;
  std::vector<std::string> nbd_endpoints;
  std::string metrics_endpoint;
  std::string pool_path;
  // The audit log's directory (DATA_DIR/audit): every mutating call is appended there, durably,
  // before it returns (docs/audit.md).
  std::string audit_dir;
  // The state store's directory (DATA_DIR): state.db, docs/state.md.
  std::string state_dir;
  // TCP with TLS (empty: off): HOST:PORT, and the server's certificate and key (PEM files).
  // Callers there are who their API token says (metadata "authorization: Bearer TOKEN").
  std::string tcp_listen;
  std::string tls_cert_file;
  std::string tls_key_file;
  // Calls admitted at once (--control-calls-max); more are refused with RESOURCE_EXHAUSTED.
  size_t calls_in_flight_max = kCallsInFlightMax_;
  // The control plane's threads run SCHED_BATCH, so that a call never preempts a reactor
  // (control_server.cc, Start). Off: they run as the caller's thread does.
  bool batch_threads = true;
  // The QoS scheduler the daemon runs (null: --qos off): volumes' effective intents and tenants'
  // intents go to it, reservations are admitted against its cost model, volumes report its
  // status.
  qos::QosScheduler* qos = nullptr;
  // The daemon's dispatcher: calibration drives its scratch volume through it.
  Dispatcher* dispatcher = nullptr;
  // Cluster membership (--cluster); null: the node runs alone. Outlives the server.
  ClusterNode* cluster = nullptr;
  // Replicated volumes (--cluster and --replication-listen); null: none. Outlives the server.
  ReplicationManager* replication = nullptr;
  // TEST ONLY, never set by the daemon: the audit worker calls this before each job it takes
  // (an audit append or a state-store change), so a test can keep the worker busy by blocking
  // in it and fill the queue (control_server_test.cc). Empty: nothing is called.
  std::function<void()> test_before_worker_job;
};

class ControlServer {
 public:
  static constexpr size_t kRequestBytesMax = 64 << 10;
  static constexpr size_t kCallsInFlightMax = kCallsInFlightMax_;  // calls_in_flight_max's default
  static constexpr size_t kWatchersMax = 64;
  static constexpr uint32_t kListPageMax = 1000;
  // Jobs waiting for the audit worker at which a refused call's entry is dropped (not queued;
  // spd_control_audit_dropped_total). An admitted call's entry is always queued, past it too.
  static constexpr size_t kAuditQueueMax = 1024;

  // `volumes` and the pool behind it outlive the server.
  ControlServer(VolumeManager* volumes, ControlServerOptions options);
  ~ControlServer();  // Stop()
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // Binds the socket and starts serving.
  [[nodiscard]] Status Start();
  // Stops taking connections, ends event watchers, waits (bounded, 5 s) for calls in flight.
  // REQUIRES: not on the pool's reactor thread, which must keep running until this returns.
  void Stop();

  // Events (any thread): the event stream's source. Volume changes arrive by themselves (the
  // server is a VolumeManager listener); the daemon adds what it knows (backend fallback, pool
  // read-only).
  EventHub* events() const { return events_.get(); }
  // The tenant a volume's policy names ("" for none). Any thread; cheap (a cached map): NBD
  // asks it while a TLS client negotiates.
  std::string VolumeTenant(const std::string& volume) const;
  // May local uid `uid` (a plaintext NBD client of the unix socket or of TCP over loopback) use
  // `volume`'s data? The uid is who it is on the control socket (root and the daemon's uid are
  // admins, others have the uid map's role) and may use the volumes it may change through the
  // API: an admin or operator every volume, a tenant its own tenant's; a viewer (whose "read"
  // is the control plane's metadata, not volume data) or a uid without a role none
  // (docs/nbd.md). Any thread; cheap (the cached uid map and placements): NBD asks it while a
  // client negotiates.
  bool UidMayUseVolume(uint32_t uid, const std::string& volume) const;

  // Events the daemon knows of (any thread).
  void ReportBackendFallback(const std::string& reason);
  void ReportPoolReadOnly(const std::string& reason);
  // Replication: this node became or stopped being `volume`'s primary (primary_changed true), or
  // its link to a copy changed state.
  void ReportReplication(bool primary_changed, const std::string& volume,
                         const std::string& message);
  // A volume's intent turned violated (the QoS scheduler's status; any thread, never blocks).
  void ReportIntentViolation(const std::string& volume, const std::string& reason);

  struct Impl;

 private:
  Status StartThreads();  // Start's work, on the thread whose policy the others inherit
  void StopWorker();
  int tcp_port_ = 0;  // the bound TCP port (0: none)
  std::unique_ptr<Impl> impl_;
  std::unique_ptr<EventHub> events_;
  std::shared_ptr<struct ControlServices> services_;  // outlive the gRPC server
};

}  // namespace spd
