// ReplicationManager's own: the volumes' keys in etcd parsed (replication_manager.cc), shared
// by its files (replication_manager_calls.cc, replication_recovery.cc).
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cluster/prefix_mirror.h"
#include "replica/cluster_recovery.h"
#include "replica/replication_manager.h"
#include "volume/pool.h"

namespace spd {

struct Parsed {
  struct Spec {
    uint64_t size = 0;
    uint32_t replicas = 0;
    std::vector<std::string> nodes;
    Durability durability = Durability::kFlush;
    bool async = false;      // "durability": "async": the copies get flush
    bool recovered = false;  // published again after etcd lost its data (cluster_recovery.h)
    bool deleting = false;   // being deleted on every node (ReplicationManager::Delete)
    // A live move (ReplicationManager::Move): `moving_from`, in sync, keeps counting until
    // `moving_to` (placed too, after it) is in sync; then it leaves. Empty: none.
    std::string moving_from, moving_to;
    // An asynchronous volume becoming synchronous (ReplicationManager::SetDurability): the
    // durability it gets once its primary's writes are all on every in-sync copy. Empty: none.
    std::string to_sync;
    std::string json;  // the value as in etcd
    int64_t rev = 0;   // its mod revision
  };
  struct Prim {
    std::string node;
    int64_t epoch = 0;  // EpochOf(the era it names, create_revision)
    int64_t rev = 0;    // create_revision
    int64_t lease = 0;
  };
  std::map<std::string, Spec> specs;
  std::map<std::string, Prim> primaries;
  std::map<std::string, std::map<std::string, std::pair<std::string, uint64_t>>> states;
  std::map<std::string, std::string> handovers;  // volume -> the node asked to take it
  // Asynchronous volumes with no primary: volume -> node -> the durable generation it stands with.
  std::map<std::string, std::map<std::string, ReplicaGeneration>> candidates;
  // Recovered volumes with no primary: volume -> node -> its rank (cluster_recovery.h).
  std::map<std::string, std::map<std::string, CandidateRank>> ranks;
  // Recovered volumes: the copies an admin gave up on (spdctl replica promote --without), and
  // the key's mod revision.
  std::map<std::string, std::vector<std::string>> given_up;
  std::map<std::string, int64_t> given_up_rev;
  // Volumes being deleted: the nodes that deleted their copies (NAME/deleted/NODE).
  std::map<std::string, std::set<std::string>> deleted;
  // Nodes that hold a local volume of a replicated volume's name (NAME/local/NODE, under the
  // node's lease; replication_local.cc).
  std::map<std::string, std::set<std::string>> locals;
};
// A transaction that holds only while volume `name`'s spec is at `spec_rev` and its primary key
// was created at `primary_rev` (the primary's epoch): a change of the record under the primary.
Txn UnderPrimary(const std::string& name, int64_t spec_rev, int64_t primary_rev);
// The nodes `p` says hold a local volume named `name` (replication_local.cc).
std::set<std::string> LocalHolders(const Parsed& p, const std::string& name);

// The node names of `j`'s "nodes" array (a spec's placement, a given-up list); none if absent.
inline std::vector<std::string> NodesOf(const nlohmann::json& j) {
  std::vector<std::string> out;
  if (j.is_object() && j.contains("nodes") && j["nodes"].is_array())
    for (const auto& n : j["nodes"])
      if (n.is_string()) out.push_back(n.get<std::string>());
  return out;
}

// A spec's placement generation ("placement"; 0 when absent, as at its creation): one more at
// each change of its "nodes" (a move, the end of a live one, its cancel: NextPlacement), so that
// when etcd lost its data the newest placement kept on the nodes' disks is the one published
// again (ReplicationManager::Republish), not the one of a node that was away when its copy
// moved.
inline uint64_t PlacementOf(const nlohmann::json& j) {
  if (!j.is_object()) return 0;
  auto it = j.find("placement");
  return it != j.end() && it->is_number_unsigned() ? it->get<uint64_t>() : 0;
}
inline void NextPlacement(nlohmann::json* j) { (*j)["placement"] = PlacementOf(*j) + 1; }

// What `from` leaving `name`'s placement adds to a transaction (replication_move.cc): its state
// and candidacy go, and its key of copies to delete, /spd/v1/moved/FROM/NAME, is written.
void LeaveOps(const std::string& name, const std::string& from, const std::string& to, Txn* txn);
// What `to` joining `name`'s placement adds (a move's new copy, one more copy): its state, out of
// sync under the primary's `epoch`, so that it never campaigns before it holds the volume; and
// its key of copies to delete goes (a copy it was to delete, having left the volume before, is
// placed again: the primary copies it whole anyway).
void JoinOps(const std::string& name, const std::string& to, int64_t epoch, Txn* txn);
// Whether `node`'s copy of `volume` is recorded in sync.
bool InSync(const Parsed& p, const std::string& volume, const std::string& node);

// A recovered volume's key of the copies given up on (Parsed::given_up).
inline std::string GivenUpKey(const std::string& volume) {
  return std::string(kVolumesPrefix) + volume + "/given_up";
}

// A volume this node is the primary of.
struct ReplicationManager::Primary {
  std::unique_ptr<ReplicaSet> set;
  Volume* volume = nullptr;
  std::shared_ptr<VolumeHandle> handle;
  bool states_recorded = false;
  std::vector<std::string> nodes;  // the placement its set follows (FollowPlacement)
  bool async = false;              // its set's mode (FollowMode; the reconciling thread's)
};

Parsed Parse(const PrefixMirror::Snapshot& s);
// Runs fn on `r` and waits for it (a posted task). REQUIRES: not on `r`'s thread.
void RunOnAndWait(Reactor* r, std::function<void()> fn);
// Whether this node's pool takes a copy of `old_size` bytes (0: a new one) grown to `new_size`
// (Pool::CheckGrowth: --pool-overcommit-max, --pool-map-memory-max), asked before a size every
// copy must take is recorded. REQUIRES: not on the pool's reactor.
Status FitsPool(VolumeManager* volumes, uint64_t old_size, uint64_t new_size,
                const std::string& what);
// `name`'s spec, for a call that changes it: kUnavailable while etcd's state is not known yet,
// kNotFound for no such volume, kFailedPrecondition while it is being deleted.
Result<Parsed::Spec> SpecToChange(const PrefixMirror::Snapshot& vols, const std::string& name);
// Sets `field` of `name`'s spec in etcd to `value` (null: takes it out), only while the spec is
// still at `spec.rev`
// (kAborted when it changed meanwhile: the caller's view is stale).
Status PutSpecField(EtcdClient* etcd, const std::string& name, const Parsed::Spec& spec,
                    const std::string& field, const nlohmann::json& value);
// Whether this node kept `volume`'s spec on disk (it held a copy), and the nodes it names
// (replication_delete.cc), then those of `also` it does not name. A state_dir of "": no.
bool SavedSpecExists(const std::string& dir, const std::string& volume);
std::vector<std::string> SavedSpecNodes(const std::string& dir, const std::string& volume,
                                        const std::vector<std::string>& also = {});
// Checks `done` every 50 ms until it holds (true) or `limit` passed (false): a call waiting for
// the reconciling thread to act on what it recorded.
bool PollUntil(std::chrono::milliseconds limit, const std::function<bool()>& done);
// Starts an asynchronous operation of the VolumeManager (`start` is given its callback) and
// waits for its status. REQUIRES: not on the thread that completes it.
Status Await(const std::function<void(std::function<void(Status)>)>& start);
// Whether volume's spec in `vols` places `node` (true when the spec is not there or unreadable).
bool PlacedInMirror(const PrefixMirror::Snapshot& vols, const std::string& volume,
                    const std::string& node);
// Node `node`'s replication address (HOST:PORT) from the nodes' mirror; "" if none.
std::string ReplicationAddress(const PrefixMirror::Snapshot& nodes, const std::string& node);
// Where a new replicated volume's `replicas` copies go: node `me` first, then the nodes that hold
// the fewest copies. Whether `me` serves replicas is read from its own registration value
// (`my_info`, a JSON object), not from the mirror, which may not hold it yet. kFailedPrecondition
// when `me` serves no replicas or too few nodes do.
Result<std::vector<std::string>> PlaceNew(const PrefixMirror::Snapshot& nodes, const Parsed& p,
                                          const std::string& me, const std::string& my_info,
                                          uint32_t replicas);
// A replicated volume's spec (its value under kVolumesPrefix).
std::string NewSpecJson(uint64_t size_bytes, uint32_t replicas,
                        const std::vector<std::string>& placed, const std::string& durability);
// The registered nodes that serve replicas, not in `exclude`, those holding the fewest copies of
// replicated volumes (by `p`'s specs) first: where new copies go.
std::vector<std::string> NodesByLoad(const PrefixMirror::Snapshot& nodes, const Parsed& p,
                                     const std::vector<std::string>& exclude);

}  // namespace spd
