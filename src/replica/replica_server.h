// ReplicaServer: the replica side of replication (docs/replication.md). A primary connects over
// TCP (--replication-listen), says hello for one volume with its epoch and the generation it
// started from, then streams writes and barriers (replica/replica_wire.h); the server applies
// them to the local volume through the dispatcher, like any frontend, and acknowledges each.
//
// Fencing. A hello whose epoch is below the volume's fence is refused (stale-epoch); an accepted
// one raises the fence to its epoch durably (Pool::RecordGeneration) before the reply, so a
// deposed primary's writes are refused from then on, after a restart too. Every message's epoch
// is checked against the fence again: a session whose primary was deposed meanwhile gets
// -ESTALE and is closed.
//
// In sync. The reply says in-sync only when the volume's durable generation is the primary's
// base and nothing was applied after it; otherwise out-of-sync (resync is a later step: the
// session then applies nothing). A volume this process has not seen a barrier for since it
// started counts as possibly written after its generation.
//
// Barriers. Reading stops at a barrier until every write received before it has completed;
// then its generation (epoch, seq) is recorded durably (the record's commit flushes the writes
// first) and it is acknowledged.
//
// Limits: sessions_max sessions (more are closed at accept); one session per volume (a newer
// hello displaces the older session); queue_depth writes in flight per session (reading pauses
// at the limit); writes of at most write_bytes_max; a hello within hello_timeout_ms; a message
// or a reply that stalls half-way for stall_timeout_ms closes the session.
//
// Thread-safety: everything on the server's reactor, which must be the pool's (generations are
// recorded there). Start, Stop and the destructor on it too.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "common/status.h"
#include "dispatch/dispatcher.h"
#include "volume/volume_manager.h"

namespace spd {

class ReplicaTls;

struct ReplicaServerOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 0;  // 0: any free port (port() says which)
  uint32_t sessions_max = 64;
  uint32_t queue_depth = 32;
  uint32_t write_bytes_max = 1u << 20;
  uint64_t hello_timeout_ms = 5'000;
  uint64_t stall_timeout_ms = 30'000;
  // TLS (replica_tls.h): every session must complete a TLS handshake with a key of the file
  // first (within hello_timeout_ms); plaintext peers fail it. Null: plaintext. Outlives the
  // server.
  const ReplicaTls* tls = nullptr;
  // With TLS by certificates: asked at each hello whether `node` (its certificate's CN) is the
  // volume's primary at `epoch` (ReplicationManager::AuthorizePrimary, from etcd); a refusal
  // answers the hello kError and closes the session. Runs on the server's reactor; must not
  // block. Empty: any peer that completed the handshake may be a primary (the epoch fences).
  std::function<Status(const std::string& volume, uint64_t epoch, const std::string& node)>
      authorize_primary;
  // Only copies of replicated volumes take a primary's session: a volume whose replica hook is
  // unset (dispatch/replica_hook.h; the ReplicationManager sets its write guard, or a primary's
  // set, on every copy it holds) is answered kNoVolume, so that a local volume that shares a
  // replicated volume's name is never written over by its primary. Off: any volume (tests of
  // the server alone).
  bool copies_only = false;
  // Where each volume's activity record is kept (DIR/VOLUME.activity; volume/replica_activity.h)
  // so that it outlives this process. "": in memory only.
  std::string state_dir;
};

class ReplicaServer {
 public:
  ReplicaServer(Reactor* reactor, Dispatcher* dispatcher, VolumeManager* volumes,
                ReplicaServerOptions options);
  ~ReplicaServer();  // Stop()
  ReplicaServer(const ReplicaServer&) = delete;
  ReplicaServer& operator=(const ReplicaServer&) = delete;

  [[nodiscard]] Status Start();
  uint16_t port() const { return port_; }
  // Closes the listener and every session; `done` runs on the reactor once every session is
  // gone (its requests completed). Stop() without a callback drives nothing: use it only after
  // the reactor stopped serving (tests drive it themselves).
  void Shutdown(Task* done);
  uint32_t sessions() const { return sessions_; }

  struct Session;
  struct Listener;

  // Internal: the session code's (replica_server.cc).
  void AcceptAll();
  void SessionGone(Session* s);
  void MaybeFinishShutdown();

  Reactor* reactor_;
  Dispatcher* dispatcher_;
  VolumeManager* volumes_;
  ReplicaServerOptions o_;
  std::unique_ptr<Listener> listener_;
  uint16_t port_ = 0;
  uint32_t sessions_ = 0;
  Session* head_ = nullptr;  // every live session
  // The session that holds each volume (one at a time).
  std::map<const Volume*, Session*> holders_;
  bool shutting_down_ = false;
  Task* shutdown_done_ = nullptr;

  // A forced delete of a volume (a replicated volume deleted in the cluster) closes the session
  // that holds it, so that its copy can go at once.
  struct VolumeWatch : VolumeManager::Listener {
    ReplicaServer* server = nullptr;
    void OnVolumeChanged(const VolumeInfo&, VolumeManager::Change) override {}
    void OnVolumeClosing(std::shared_ptr<VolumeHandle> handle, std::function<void()> done) override;
  };
  VolumeWatch volume_watch_;
  bool watching_volumes_ = false;
};

}  // namespace spd
