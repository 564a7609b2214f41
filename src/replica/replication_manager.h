// ReplicationManager: replicated volumes in a cluster (docs/replication.md, "Volumes in etcd").
//
// State in etcd, under /spd/v1/volumes/:
//   NAME                  {"size": B, "replicas": N, "nodes": [...]}  the spec and its placement
//   NAME/primary          {"node": X}, bound to X's lease; its create_revision is the epoch
//   NAME/replicas/NODE    {"state": "in_sync"|"out_of_sync", "epoch": E}, written by primaries
//
// A thread of its own reconciles this node with the state (every half second and at every
// change, from a mirror of the prefix): it creates the local volume of every replicated volume
// placed here; it guards the volumes this node is not the primary of (WriteGuard: local clients
// get EROFS); it campaigns for a volume's primary when there is none and this node may hold it
// (its copy is in_sync, or the volume is new and this node is first in the placement): a
// transaction that creates NAME/primary only if it does not exist; and it runs the primary of
// the volumes it won: the fence raised to the epoch on its own copy, then a ReplicaSet to every
// other placed node, whose failures are marked out_of_sync with a transaction that holds only
// while this node's epoch is still the primary's. A node whose primary key went (its lease
// expired, or another node holds the volume) stops being the primary: the set is closed and the
// guard goes back on.
//
// Thread-safety: Start/Stop from the daemon's main thread; Create and List from any thread
// (they block on etcd, bounded by its request timeout).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cluster/cluster_node.h"
#include "cluster/prefix_mirror.h"
#include "replica/cluster_recovery.h"
#include "replica/replica_set.h"
#include "replica/write_guard.h"
#include "volume/volume_manager.h"

namespace spd {

struct Parsed;  // the volumes' keys parsed (replication_manager_internal.h)

inline constexpr const char* kVolumesPrefix = "/spd/v1/volumes/";
// The copies node NODE is to delete, its copy having moved (ReplicationManager::Move): NAME.
inline std::string MovedPrefix(const std::string& node) { return "/spd/v1/moved/" + node + "/"; }

struct ReplicationManagerOptions {
  // The timeouts of every primary's ReplicaSet.
  uint64_t connect_timeout_ms = 2'000;
  uint64_t ack_timeout_ms = 5'000;
  uint64_t hold_timeout_ms = 30'000;
  // Every primary's resyncs (ReplicaSetOptions::resync_regions_inflight, resync_region_bytes).
  uint32_t resync_regions_inflight = 4;
  uint32_t resync_region_bytes = 1u << 20;
  // Every primary's activity log (ReplicaSetOptions::activity_log_units; 0: none).
  uint32_t activity_log_units = 1024;
  // When every primary barriers its replicas itself (ReplicaSetOptions::unbarriered_bytes).
  uint64_t unbarriered_bytes = 64ull << 20;
  // Fault injection on every primary's links (ReplicaSetOptions::inject_*; tests, benchmarks).
  uint64_t inject_rtt_us = 0;
  uint32_t inject_loss_ppm = 0;
  uint64_t inject_seed = 1;
  // Asynchronous volumes' lag bounds (ReplicaSetOptions::async_lag_*).
  uint64_t async_lag_bytes = 32ull << 20;
  uint64_t async_lag_ms = 1'000;
  // TLS on every primary's links (ReplicaSetOptions::tls); null: plaintext. Outlives the manager.
  const ReplicaTls* tls = nullptr;
  // Where activity records and dirty maps are kept (ReplicaSetOptions::state_dir); "": memory.
  std::string state_dir;
  // Told of replication events (any thread; must not block): this node became or stopped being
  // a volume's primary (primary_changed), or its link to a copy changed state.
  std::function<void(bool primary_changed, const std::string& volume, const std::string& message)>
      on_event;
};

struct ReplicaStatus {
  std::string node;
  // in_sync, out_of_sync, or unknown (nothing recorded yet); of a volume being deleted:
  // deleting or deleted
  std::string state;
  uint64_t epoch = 0;  // of the primary that recorded the state
  std::string detail;  // from this node's link, when it is the primary
  uint64_t acked = 0;
};

struct ReplicatedVolumeStatus {
  std::string name;
  uint64_t size_bytes = 0;
  uint32_t replicas = 0;
  std::string durability;  // flush, sync, none or async (as recorded in etcd)
  // On the primary of an asynchronous volume: what the replicas lag (ReplicaSet::lag_*).
  uint64_t lag_bytes = 0;
  uint64_t lag_ms = 0;
  std::vector<std::string> nodes;
  bool deleting = false;  // being deleted on every node (each copy "deleting" or "deleted")
  std::string primary;    // empty: none now
  uint64_t epoch = 0;
  std::vector<ReplicaStatus> states;
};

class ReplicationManager {
 public:
  ReplicationManager(ClusterNode* cluster, VolumeManager* volumes, Dispatcher* dispatcher,
                     ReplicationManagerOptions options);
  ~ReplicationManager();  // Stop()

  void Start();
  // Ends the thread, closes every set on its owner (posted; waits for it) and removes the
  // guards. REQUIRES: the reactors still run.
  void Stop();
  // Destroys the closed sets. REQUIRES: their owners' reactors stopped.
  void Release();

  // Places and records a new replicated volume (this node first); returns once the local copy
  // exists (bounded: 4 s). kFailedPrecondition when fewer nodes serve replicas than asked.
  // Every copy gets `durability` (in the cluster's record of the volume).
  // `async`: an asynchronous volume (ReplicaSetOptions::async; its copies get `durability`).
  Status Create(const std::string& name, uint64_t size_bytes, uint32_t replicas,
                Durability durability = Durability::kFlush, bool async = false);
  // Every replicated volume the record holds, or only `only` (none if the record lacks it).
  std::vector<ReplicatedVolumeStatus> List(const std::string& only = "") const;
  // Whether `name` is a replicated volume this node knows of: in the cluster's record, or with
  // a copy's spec kept here (DATA_DIR/replication/NAME.spec). Its local copy is the
  // replication's: deleting or resizing it alone would leave the copies apart (the control
  // API refuses that). Not if the volume of the name here is a local volume and no copy
  // (IsLocalVolume): on this node the name is that volume's.
  bool Replicated(const std::string& name) const;
  // Whether the cluster's record (etcd, as last mirrored) holds a replicated volume `name`.
  bool InCluster(const std::string& name) const;
  // Deletes replicated volume `name` on every node (docs/replication.md, "Deleting a
  // replicated volume"): its spec in etcd is marked "deleting"; every placed node then steps
  // down if it is the primary, deletes its copy (forced: its users are closed) and the copy's
  // replication state on disk, and says so (NAME/deleted/NODE); once every placed node has,
  // the volume's keys go. Returns once this node's copy is gone (at most 15 s), or at once when
  // it holds none. Without `force`: kFailedPrecondition when the primary is another node (its
  // clients are there) or this node's copy has users. kNotFound: no such volume in etcd.
  Status Delete(const std::string& name, bool force);
  // Changes replicated volume `name`'s durability on every copy: recorded in its spec in etcd,
  // which every placed node's copy follows at its next reconciliation. Returns once the copy
  // here has it (at most 4 s). kFailedPrecondition for an asynchronous volume (its copies keep
  // flush) or one being deleted.
  Status SetDurability(const std::string& name, Durability durability);
  // Makes replicated volume `name` asynchronous (`async`), or synchronous with `durability`
  // (replication_mode.cc; docs/replication.md, "Synchronous or asynchronous at run time"); a
  // synchronous volume asked a durability changes it as SetDurability does. To asynchronous:
  // recorded, and its primary follows at its next round. To synchronous: recorded as wanted;
  // its primary completes writes with their acks again and records the durability once every
  // write it completed ahead of them is on every in-sync copy; returns then (15 s at most,
  // kDeadlineExceeded after: it goes on).
  Status SetReplicationMode(const std::string& name, bool async, Durability durability);
  // Grows replicated volume `name` on every copy (replication_resize.cc): the size is recorded
  // in its spec in etcd; the primary grows its replicas in sync first (a kGrow on the link:
  // no write past a replica's end ever reaches one), then its own copy; a copy that was away
  // grows at its next hello. Returns once the copy here has the size (at most 15 s), or at once
  // on a node that holds none. kFailedPrecondition: smaller than the volume (replicated volumes
  // do not shrink), or being deleted.
  Status Resize(const std::string& name, uint64_t size_bytes);
  // Makes this node `name`'s primary: only if its copy is in sync. The primary hands the volume
  // over (it steps down and deletes its key; writes in flight there fail, its clients must
  // reconnect here), and this node takes it. Blocks until it has (at most 15 s).
  // `without` (a recovered volume only: etcd lost its data, and its election waits for every
  // placed copy to stand): the copies on these nodes, which have not stood, are given up on;
  // the election goes on among the others (the best rank takes it, this copy or another).
  // Blocks until the volume has a primary (at most 15 s).
  Status Promote(const std::string& name, const std::vector<std::string>& without = {});
  // Asked of `name`'s primary: hands the volume over to `to` (empty: the first other copy in
  // sync), which must be in sync. Blocks until `to` is the primary (at most 15 s).
  Status Demote(const std::string& name, const std::string& to);
  // Moves the copy of `name` on node `from` to node `to` (replication_move.cc;
  // docs/replication.md, "Moving a copy"): `to` joins the placement in etcd, recorded out of
  // sync, and the primary copies the volume to it (whole, allocated space only). A `from` in
  // sync keeps counting until `to` is in sync, then leaves; one out of sync (down) leaves at
  // once. `from` deletes its copy once it left (now, or when it is back). Returns once the
  // change is recorded. kNotFound: no such volume, `from` holds no copy, `to` is not
  // a node of the cluster; kFailedPrecondition: `to` holds a copy or serves no replicas, the
  // volume has no primary or `from` is it, another move of it is under way, or it is being
  // deleted; kAborted: the record changed meanwhile.
  Status Move(const std::string& name, const std::string& from, const std::string& to);
  // Calls off the live move of `name` under way: its new copy leaves the placement (and
  // deletes itself, now or when its node is back), the old one stays. `from` and `to`, when
  // not empty, must name that move. kFailedPrecondition: no move under way, another one, the
  // new copy is the primary, or it is in sync and the old one is not (the move is finishing);
  // kAborted: the record changed meanwhile.
  Status CancelMove(const std::string& name, const std::string& from, const std::string& to);
  // Sets the number of copies of `name` to `replicas` (2..9; replication_count.cc;
  // docs/replication.md, "Changing the number of copies"), in one transaction under the
  // primary's epoch. More: new copies on the nodes holding the fewest, recorded out of sync,
  // which the primary copies whole (as a move's). Fewer: copies other than the primary's leave
  // (those out of sync first, then the last placed), at once, and delete themselves (now, or
  // when their node is back). Returns once the change is recorded. kInvalidArgument:
  // `replicas` out of range; kNotFound: no such volume; kFailedPrecondition: not enough nodes,
  // no primary, a move or a hand-over under way, or the volume is being deleted; kAborted: the
  // record changed meanwhile.
  // `remove`: with fewer copies, the nodes whose copies leave first (placed, not the primary).
  // On the node that holds a local volume `name` (no replicated volume of that name in the
  // cluster), it makes it replicated with `replicas` copies, this node its primary
  // (replication_convert.cc); `remove` must be empty then.
  Status SetReplicaCount(const std::string& name, uint32_t replicas,
                         const std::vector<std::string>& remove = {});
  // Whether node `node` is `volume`'s primary at `epoch` in this node's mirror of etcd (the
  // replica server's check of a hello, with TLS by certificates). kUnavailable: etcd's state is
  // not known yet; kFailedPrecondition: no primary, or another epoch; kPermissionDenied:
  // another node is the primary. Thread-safe; does not block on etcd.
  Status AuthorizePrimary(const std::string& volume, uint64_t epoch, const std::string& node);

 private:
  struct Primary;
  // Asks for `name` to be handed over to `to` (a key bound to this node's lease) and waits until
  // `to` is its primary (15 s at most; the request is withdrawn then).
  Status HandOver(const std::string& name, const std::string& to);
  // Wakes the reconciling thread to act on what changed now.
  void Poke();
  // Waits (2 s at most) until this node's mirror of the volumes holds etcd's `revision`: a call
  // that changed the record answers from the mirror, and must answer the change.
  void AwaitMirror(int64_t revision);
  // Polls the volumes' mirror (every 50 ms, 15 s at most) into `last` until `name` has a
  // primary and `wanted()` (which may read `last`) holds. False: not within 15 s.
  bool WaitForPrimary(const std::string& name, Parsed* last, const std::function<bool()>& wanted);
  // Promote with `without` (replication_recovery.cc).
  Status PromoteWithout(const std::string& name, const std::vector<std::string>& without);
  void Loop();
  void Reconcile();
  // A local volume made replicated (replication_convert.cc): Convert, on the calling thread,
  // queues it for the reconciling thread (RunConversions: DoConvert each) and waits until this
  // node serves it as the primary (10 s at most each). FailConversions answers those left when
  // the thread ends.
  struct Conversion {
    std::string name;
    uint32_t replicas = 0;
    std::promise<Status> done;
  };
  Status Convert(const std::string& name, uint32_t replicas);
  void RunConversions();
  void FailConversions();
  Status DoConvert(const std::string& name, uint32_t replicas);
  // This node's primary of `name` follows its record's mode (replication_mode.cc): its set
  // asynchronous or not, and a volume becoming synchronous recorded so once drained.
  void FollowMode(const std::string& name, const Parsed& p);
  // At the first round: conversions a stop cut short (their spec file NAME.spec.converting)
  // kept if recorded, else undone (the volume stays local).
  void SettleConversions(const Parsed& p);
  bool conversions_settled_ = false;  // the reconciling thread's own
  void Guard(Volume* v);
  // Each copy's state in etcd: node -> (state, the epoch of the primary that wrote it).
  using CopyStates = std::map<std::string, std::pair<std::string, uint64_t>>;
  Status BecomePrimary(const std::string& name, Volume* v, uint64_t epoch,
                       const std::vector<std::string>& nodes,
                       const PrefixMirror::Snapshot& nodes_snap, const CopyStates& states,
                       bool async);
  void StepDown(const std::string& name);
  // A volume marked "deleting" (replication_delete.cc): this node's part of the delete, then,
  // once every copy is gone, the volume's keys.
  void DeleteCopy(const std::string& name, const Parsed& p);
  // Deletes this node's copy of `name` (forced) and its state on disk (the dirty maps of
  // `nodes`). True once both are gone; false while the copy's users close or after a failure
  // (counted, logged once per reason): asked again next round.
  bool DropCopy(const std::string& name, const std::vector<std::string>& nodes);
  // True if `h`, the volume here of a replicated volume's name, is a local volume and no copy
  // (any thread): no spec of it saved here and no replica hook. Kept as it is: never served,
  // written over or deleted as the copy.
  bool IsLocalVolume(const std::string& name, const VolumeHandle& h) const;
  // IsLocalVolume, on the reconciling thread: logged once, counted, an event.
  bool LocalVolume(const std::string& name, const VolumeHandle& h);
  // This node's NAME/local/NODE key in etcd follows `local_here` (replication_local.cc).
  void MarkLocal(const std::string& name, const Parsed& p, bool local_here);
  // As the primary of `name`: a placed node that holds a local volume of the name is replaced
  // by another (or the move onto it called off); at most one change a round.
  void ReplaceLocalHolders(const std::string& name, const Parsed& p);
  // A copy of `name` whose delete this node started and has not seen through (its moved/ key
  // went before the next round: the copy was placed here again): true while that delete runs,
  // and until it is finished (its state on disk gone) here; then false, and the volume's copy
  // may be created anew. `placed`: the nodes the volume's record names now.
  bool FinishingDelete(const std::string& name, const std::vector<std::string>& placed);
  // The copies this node was asked to drop (/spd/v1/moved/NODE/NAME, written by a move;
  // replication_move.cc): each is deleted with its state on disk, then its key goes. `dropping`
  // gets their names (the round leaves those volumes alone meanwhile).
  void DropMovedCopies(const Parsed& p, std::set<std::string>* dropping);
  // A live move whose new copy is in sync: the copy leaving goes from the placement (as the
  // primary, under its epoch; replication_move.cc).
  void FinishMove(const std::string& name, const Parsed& p);
  // This node's set of `name` follows a placement that changed (links added and removed).
  void FollowPlacement(const std::string& name, const std::vector<std::string>& nodes,
                       const PrefixMirror::Snapshot& nodes_snap);
  // The set and volume of `name` if this node serves it as the primary (only the reconciling
  // thread starts and stops sets: they stay while it uses them).
  bool ServingSet(const std::string& name, ReplicaSet** set, Volume** v);
  // Before a hand-over: the set's final barrier, and the same generation on the local copy.
  bool Quiesce(const std::string& name);
  // This node's copy of `name` is smaller than its spec (replication_resize.cc). The primary
  // (`running`: its set serves) grows the replicas in sync, then its copy; a node about to
  // serve grows its copy before its set starts. False: not now (logged; tried again).
  bool GrowCopy(const std::string& name, uint64_t size_bytes, bool running);
  void RecordStates(const std::string& name, Primary* p);
  void MarkLoop();
  // After etcd lost its data (replica/cluster_recovery.h; replication_recovery.cc): settles the
  // cluster's identity with etcd (at start, every 2 s, and when etcd's revision went back) and
  // publishes this node's volumes again when etcd was re-created. False: do not act now (no
  // identity known yet, or etcd names another cluster).
  bool CheckCluster(const PrefixMirror::Snapshot& snap);
  void Republish();
  // Republish's `name`, found published by another node: `ours` (its spec as kept here) replaces
  // that one if its placement is newer and no copy was elected yet.
  void ReplaceOlderPlacement(const std::string& name, const std::string& ours);
  uint64_t MaxFenceEra();
  // A recovered volume with no primary and no recorded states: this copy stands with its rank;
  // true when every placed copy stood and this one is the best (it campaigns).
  bool RecoveryCandidacy(const std::string& name, Volume* v, const std::vector<std::string>& nodes,
                         const std::map<std::string, CandidateRank>& candidates);
  // The campaign for `name`'s primary key: created only if absent, naming the cluster's era
  // (and only while the era is the one this node read).
  Txn CampaignTxn(const std::string& name) const;

  ClusterNode* cluster_;
  VolumeManager* volumes_;
  Dispatcher* dispatcher_;
  ReplicationManagerOptions o_;
  std::unique_ptr<PrefixMirror> mirror_;
  std::unique_ptr<PrefixMirror> moved_mirror_;  // MovedPrefix(this node)
  std::thread thread_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;                                          // guarded by mu_
  bool changed_ = false;                                       // guarded by mu_
  std::map<std::string, std::unique_ptr<Primary>> primaries_;  // guarded by mu_
  std::vector<std::unique_ptr<ReplicaSet>> closed_;            // guarded by mu_
  std::vector<std::shared_ptr<Conversion>> conversions_;       // guarded by mu_
  // Asynchronous volumes with no primary: since when this copy stands as a candidate (the
  // reconciling thread's own).
  std::map<std::string, std::chrono::steady_clock::time_point> candidacy_since_;
  WriteGuard guard_;
  // The reconciling thread's own: the cluster's identity as last settled (none without a
  // state_dir), when, at which revision of the volumes' mirror; specs saved on disk.
  std::optional<IdentityCheck> identity_;
  std::chrono::steady_clock::time_point identity_checked_;
  int64_t identity_snap_rev_ = 0;
  std::map<std::string, std::string> saved_specs_;
  std::map<std::string, std::string> recovery_logged_;  // volume -> what was logged last
  // "VOLUME/what" -> the failure of a change logged last (logged once per reason).
  std::map<std::string, std::string> failure_logged_;
  // Copies being deleted (the pool's reactor finishes each; the reconciling thread looks).
  // Each is of one handle: a copy placed here again and created anew under the name is another
  // volume, which a finished delete of the old one must not pass for deleted.
  struct CopyDelete {
    std::shared_ptr<VolumeHandle> handle;
    std::atomic<bool> done{false};
    Status status;  // written before `done`
  };
  std::map<std::string, std::shared_ptr<CopyDelete>> copy_deletes_;
  // Volumes whose copy this node deleted: the spec's mod revision it was deleted under.
  std::map<std::string, int64_t> deleted_here_;
  // Recovered volumes this node campaigned for: the ranks it saw (every placed copy's).
  std::map<std::string, std::map<std::string, CandidateRank>> recovery_ranks_;
  // Out-of-sync marks, made by a thread of their own (ReplicaSets ask from their reactors).
  struct Mark {
    std::string volume, node;
    uint64_t epoch;
    std::string state;  // in_sync, out_of_sync
    std::function<void(bool)> done;
  };
  void QueueMark(Mark m);
  std::mutex mark_mu_;
  std::condition_variable mark_cv_;
  std::deque<Mark> marks_;  // guarded by mark_mu_
  bool mark_stop_ = false;  // guarded by mark_mu_
  std::thread mark_thread_;
};

}  // namespace spd
