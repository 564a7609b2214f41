// ReplicationManager after etcd lost its data (replica/cluster_recovery.h, docs/replication.md
// "When etcd loses its data"): the identity check, the volumes published again, the election
// of a recovered volume by the copies' own disks.
#include <filesystem>

#include <nlohmann/json.hpp>

#include "common/counters.h"
#include "common/log.h"
#include "replica/dirty_map.h"
#include "replica/replication_manager.h"

namespace spd {
namespace {

Counter etcd_losses_total("spd_replication_etcd_losses_total",
                          "Times this node found etcd without the cluster it knew (its data "
                          "lost) and created the cluster's identity again");
Counter republished_total("spd_replication_volumes_republished_total",
                          "Replicated volumes this node published again from its disk after "
                          "etcd was re-created");
Counter identity_errors_total("spd_replication_identity_errors_total",
                              "Checks of the cluster's identity in etcd that failed, or found "
                              "another cluster's");
Counter era_raises_total("spd_replication_era_raises_total",
                         "Times this node raised the cluster's era above a fence of its own");
Counter recovery_candidacies_total("spd_replication_recovery_candidacies_total",
                                   "Candidacies this node published for a recovered volume");

constexpr auto kIdentityPeriod = std::chrono::seconds(2);

}  // namespace

uint64_t ReplicationManager::MaxFenceEra() {
  uint64_t era = 0;
  for (const auto& [name, v] : volumes_->Volumes())
    if (v != nullptr) era = std::max(era, EraOf(v->fence_epoch_durable()));
  return era;
}

bool ReplicationManager::CheckCluster(const PrefixMirror::Snapshot& snap) {
  if (o_.state_dir.empty()) return true;  // no disk to remember the cluster by
  const auto now = std::chrono::steady_clock::now();
  // etcd's revision went back: its data was replaced. Look now, not at the next period.
  const bool went_back = snap.revision < identity_snap_rev_;
  identity_snap_rev_ = snap.revision;
  if (identity_ && !identity_->foreign && !went_back && now - identity_checked_ < kIdentityPeriod)
    return true;
  std::error_code ec;
  std::filesystem::create_directories(o_.state_dir, ec);
  Result<IdentityCheck> c = CheckIdentity(cluster_->client(), o_.state_dir, MaxFenceEra());
  if (!c.ok()) {
    identity_errors_total.Add();
    SPD_LOG_WARN("replication: cannot check the cluster's identity in etcd: %s",
                 c.status().ToString().c_str());
    return identity_.has_value();  // acts on what it knew (its marks and elections need etcd)
  }
  identity_checked_ = now;
  if (c->foreign) {
    identity_errors_total.Add();
    if (!identity_ || !identity_->foreign)
      SPD_LOG_ERROR(
          "replication: etcd holds another cluster (id %s), not this node's: its "
          "replicated volumes are left alone",
          c->current.id.c_str());
    identity_ = *c;
    return false;
  }
  if (c->created && c->republish) {
    etcd_losses_total.Add();
    SPD_LOG_WARN(
        "replication: etcd lost the cluster's data: identity %s created again (era "
        "%llu); publishing this node's volumes again",
        c->current.id.c_str(), static_cast<unsigned long long>(c->current.era));
  }
  identity_ = *c;
  if (c->republish) {
    Republish();
    if (Status s = SaveIdentity(o_.state_dir, c->current); !s.ok())
      SPD_LOG_WARN("replication: cannot keep the cluster's identity: %s", s.ToString().c_str());
    identity_->republish = false;
  }
  return true;
}

void ReplicationManager::Republish() {
  for (const auto& [name, json] : LoadSpecs(o_.state_dir)) {
    nlohmann::json j = nlohmann::json::parse(json, nullptr, false);
    if (!j.is_object()) continue;
    j["recovered"] = true;
    const std::string key = std::string(kVolumesPrefix) + name;
    Txn txn;
    txn.compare.push_back(Compare::CreateRevision(key, Compare::Op::kEqual, 0));
    txn.then.push_back(TxnOp::Put(key, j.dump()));
    Result<TxnResult> r = cluster_->client()->Txn(txn);
    if (!r.ok()) {
      SPD_LOG_WARN("replication: cannot publish %s again: %s", name.c_str(),
                   r.status().ToString().c_str());
      continue;
    }
    if (r->succeeded) {
      republished_total.Add();
      SPD_LOG_INFO("replication: %s published again from this node's disk", name.c_str());
    }
  }
}

bool ReplicationManager::RecoveryCandidacy(const std::string& name, Volume* v,
                                           const std::vector<std::string>& nodes,
                                           const std::map<std::string, CandidateRank>& candidates) {
  if (!identity_) return false;
  const std::string me = cluster_->name();
  // The epoch this election hands out must be above this copy's fence.
  const uint64_t fence_era = EraOf(v->fence_epoch_durable());
  if (fence_era >= identity_->current.era) {
    Result<IdentityCheck> c = RaiseEra(cluster_->client(), o_.state_dir, fence_era);
    if (!c.ok()) {
      SPD_LOG_WARN("replication: %s: cannot raise the cluster's era: %s", name.c_str(),
                   c.status().ToString().c_str());
      return false;
    }
    era_raises_total.Add();
    identity_ = *c;
  }
  PersistActivity(v, o_.state_dir, name);  // a restarted node reads its record back
  const CandidateRank mine = RankOf(v->replica_activity.Take(), v->generation());
  auto it = candidates.find(me);
  if (it == candidates.end() || it->second != mine) {
    const std::string key = std::string(kVolumesPrefix) + name + "/candidates/" + me;
    if (cluster_->client()->Put(key, mine.ToJson(), cluster_->lease_id()).ok()) {
      recovery_candidacies_total.Add();
      SPD_LOG_INFO("replication: %s: recovered volume: this copy stands with %s", name.c_str(),
                   mine.ToJson().c_str());
    }
    return false;  // the next look sees it with the others'
  }
  const std::string winner = ChooseRecoveryWinner(candidates, nodes);
  std::string why;
  if (winner.empty()) {
    why = "waiting for every copy to stand:";
    for (const std::string& n : nodes)
      if (!candidates.count(n)) why += " " + n;
  } else if (winner != me) {
    why = "leaving it to " + winner + " (" + candidates.at(winner).ToJson() + ")";
  }
  if (recovery_logged_[name] != why && !why.empty())
    SPD_LOG_INFO("replication: %s: recovered volume: %s", name.c_str(), why.c_str());
  recovery_logged_[name] = why;
  return winner == me;
}

Txn ReplicationManager::CampaignTxn(const std::string& name) const {
  Txn txn;
  const std::string key = std::string(kVolumesPrefix) + name + "/primary";
  txn.compare.push_back(Compare::CreateRevision(key, Compare::Op::kEqual, 0));
  uint64_t era = 0;
  if (identity_) {
    // The epoch is EpochOf(era, the key's create revision): only under the era this node read.
    era = identity_->current.era;
    txn.compare.push_back(
        Compare::ModRevision(kClusterKey, Compare::Op::kEqual, identity_->key_mod_revision));
  }
  txn.then.push_back(TxnOp::Put(
      key, nlohmann::json{{"node", cluster_->name()}, {"era", era}}.dump(), cluster_->lease_id()));
  return txn;
}

}  // namespace spd
