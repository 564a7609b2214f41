// Recovery from the loss of etcd's data (docs/replication.md, "When etcd loses its data").
//
// etcd holds the cluster's state, but each node keeps on its own disk what it needs to rebuild
// that state when etcd comes back empty (every member's data wiped, or a new etcd put in its
// place), with no human:
//
//   - the cluster's identity, `/spd/v1/cluster` = {"id", "era", "nonce"}, remembered in
//     DATA_DIR/replication/cluster.json. A node that remembers an identity and finds no key
//     knows that etcd lost its data (not that the cluster is new): it creates the key again with
//     the same id, a new nonce and a higher era. A node that finds the same id with another
//     nonce knows that etcd was re-created since it last looked: it publishes its volumes again.
//   - each replicated volume's spec (DATA_DIR/replication/NAME.spec), published again with
//     "recovered": true only if the key does not exist.
//   - an era: a new etcd counts its revisions from 1 again, so the epochs it would hand out
//     (create revisions of the primary key) would fall below the fences on the copies' disks.
//     A volume's epoch is era << kEraShift | create revision, the era being the one the primary
//     key names. A copy whose fence's era reaches the cluster's raises the cluster's era before
//     it stands as a candidate.
//   - the election of a recovered volume: every placed copy stands with its rank (the term of
//     its activity record, whether it holds that term whole, the highest message of it applied,
//     whether it was that term's primary), and only once every placed copy stood does the best
//     one campaign. A copy that never comes back keeps the volume without a primary: safety over
//     availability (a missing copy may be the only one with the last acknowledged writes).
//
// Thread-safety: the functions are reentrant; ClusterIdentity values are plain data.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "cluster/etcd_client.h"
#include "common/status.h"
#include "volume/pool.h"
#include "volume/replica_activity.h"

namespace spd {

inline constexpr const char* kClusterKey = "/spd/v1/cluster";
inline constexpr int kEraShift = 40;
inline constexpr uint64_t kRevisionMask = (uint64_t{1} << kEraShift) - 1;

inline uint64_t EpochOf(uint64_t era, int64_t create_revision) {
  return (era << kEraShift) | (static_cast<uint64_t>(create_revision) & kRevisionMask);
}
inline int64_t RevisionOf(uint64_t epoch) { return static_cast<int64_t>(epoch & kRevisionMask); }
inline uint64_t EraOf(uint64_t epoch) { return epoch >> kEraShift; }

struct ClusterIdentity {
  std::string id;  // hex, made once by the cluster's first node
  uint64_t era = 0;
  std::string nonce;  // hex, new at every creation of the key
  bool operator==(const ClusterIdentity&) const = default;
};

// DATA_DIR/replication/cluster.json; nullopt when absent or unreadable.
std::optional<ClusterIdentity> LoadIdentity(const std::string& state_dir);
// Written whole (a temporary file, fsync, rename, fsync of the directory).
Status SaveIdentity(const std::string& state_dir, const ClusterIdentity& id);

// What CheckIdentity found.
struct IdentityCheck {
  ClusterIdentity current;  // as in etcd now (and on disk)
  int64_t key_mod_revision = 0;
  // etcd lost its data, or was re-created by another node since this one last looked: this
  // node must publish its volumes again.
  bool republish = false;
  bool created = false;  // this node created the key (a new cluster, or after the loss)
  // The key names another cluster: this node's volumes are not this etcd's (nothing is done).
  bool foreign = false;
};

// Compares etcd's identity with the one on disk and settles them (see above). `max_fence_era`:
// the highest era among this node's fences (a re-created key's era goes above it). With
// `republish` the identity is not saved: the caller saves `current` once it published.
Result<IdentityCheck> CheckIdentity(EtcdClient* etcd, const std::string& state_dir,
                                    uint64_t max_fence_era);
// Raises the cluster's era above `era` if it is not already (a transaction on the key's mod
// revision; retried on a race, at most 8 times). Returns the identity as it stands.
Result<IdentityCheck> RaiseEra(EtcdClient* etcd, const std::string& state_dir, uint64_t era);

// Where a replicated volume's spec is kept on disk (STATE_DIR/VOLUME.spec).
std::string SpecPath(const std::string& state_dir, const std::string& volume);
// A replicated volume's spec as kept on disk (the JSON value of volumes/NAME).
Status SaveSpec(const std::string& state_dir, const std::string& volume, const std::string& json);
// Every spec on disk: volume -> JSON.
std::map<std::string, std::string> LoadSpecs(const std::string& state_dir);

// How a copy stands in a recovered volume's election; the greatest wins.
struct CandidateRank {
  uint64_t epoch = 0;    // the term of its activity record (else of its durable generation)
  bool whole = false;    // it held that term whole: not resyncing, not spoiled
  uint64_t seq = 0;      // the highest message of the term it applied (else its generation's)
  bool primary = false;  // it was that term's primary
  // The lowest message its record still holds (0: none): it holds every one of the term from
  // there to `seq` (a primary's record keeps what may not be on every copy yet).
  uint64_t first = 0;
  // The order of ranks (`first` does not rank).
  auto Key() const { return std::tie(epoch, whole, seq, primary); }
  bool operator==(const CandidateRank&) const = default;
  std::string ToJson() const;
  static std::optional<CandidateRank> FromJson(const std::string& json);
};
CandidateRank RankOf(const ReplicaActivity::Snapshot& activity, ReplicaGeneration durable);

// The copies a recovered volume's election waits for: every node of `placed` but those an
// admin gave up on (`given_up`: spdctl replica promote --without) that have not stood; a copy
// given up on that stands after all counts again (it may hold the last acknowledged writes).
std::vector<std::string> RecoveryVoters(const std::vector<std::string>& placed,
                                        const std::vector<std::string>& given_up,
                                        const std::map<std::string, CandidateRank>& candidates);

// The node that should take a recovered volume: the best rank among `candidates` (ties: the
// first name), once every node of `placed` stood; "" before that.
std::string ChooseRecoveryWinner(const std::map<std::string, CandidateRank>& candidates,
                                 const std::vector<std::string>& placed);

// After a recovered volume's election: the copies that hold `winner`'s term as it does, but for
// messages the winner's record holds, to be taken as in sync in that term (their resync is then
// bounded by the activity records, as after a failover): only when the winner was the term's
// primary and holds it whole, and for copies of the same term, whole, whose last message is the
// winner's, or one below the first its record holds (messages reach a replica in order, and a
// failed one spoils its record, so such a copy lacks only messages in the winner's record).
// Empty when the winner is not such a primary. The winner itself is in the list.
std::vector<std::string> InSyncByRank(const std::map<std::string, CandidateRank>& candidates,
                                      const std::string& winner);

}  // namespace spd
