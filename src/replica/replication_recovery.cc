// ReplicationManager after etcd lost its data (replica/cluster_recovery.h, docs/replication.md
// "When etcd loses its data"): the identity check, the volumes published again, the election
// of a recovered volume by the copies' own disks.
#include <algorithm>
#include <chrono>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "common/counters.h"
#include "common/log.h"
#include "replica/dirty_map.h"
#include "replica/replication_manager.h"
#include "replica/replication_manager_internal.h"

namespace spd {
namespace {

Counter etcd_losses_total("spd_replication_etcd_losses_total",
                          "Times this node found etcd without the cluster it knew (its data "
                          "lost) and created the cluster's identity again");
Counter republished_total("spd_replication_volumes_republished_total",
                          "Replicated volumes this node published again from its disk after "
                          "etcd was re-created");
Counter placements_replaced_total(
    "spd_replication_placements_replaced_total",
    "Volumes this node published again after etcd lost its data over an older placement that "
    "another node had published (a node that was away when a copy moved)");
Counter identity_errors_total("spd_replication_identity_errors_total",
                              "Checks of the cluster's identity in etcd that failed, or found "
                              "another cluster's");
Counter era_raises_total("spd_replication_era_raises_total",
                         "Times this node raised the cluster's era above a fence of its own");
Counter recovery_candidacies_total("spd_replication_recovery_candidacies_total",
                                   "Candidacies this node published for a recovered volume");
Counter copies_given_up_total("spd_replication_copies_given_up_total",
                              "Copies of recovered volumes an admin gave up on through this "
                              "node (spdctl replica promote --without): the election went on "
                              "without them");

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
    } else {
      ReplaceOlderPlacement(name, j.dump());
    }
  }
}

// Another node published `name` again first. A node that was away when a copy of the volume
// moved kept the placement of before (its copy left it, but it could not know): ours, newer
// (a higher PlacementOf), takes its place while no copy has been elected yet, and the nodes it
// no longer names leave as after a move (their state goes, and each deletes its copy by its
// moved key).
void ReplicationManager::ReplaceOlderPlacement(const std::string& name,
                                               const std::string& ours_json) {
  const nlohmann::json ours = nlohmann::json::parse(ours_json, nullptr, false);
  const std::string key = std::string(kVolumesPrefix) + name;
  Result<GetResult> got = cluster_->client()->Get(key);
  if (!got.ok() || !got->kv) return;
  const nlohmann::json theirs = nlohmann::json::parse(got->kv->value, nullptr, false);
  if (!theirs.is_object() || PlacementOf(ours) <= PlacementOf(theirs)) return;
  // A volume being deleted stays deleted (the spec kept here must not bring it back).
  if (auto d = theirs.find("deleting"); d != theirs.end() && d->is_boolean() && d->get<bool>())
    return;
  const std::vector<std::string> now = NodesOf(ours);
  Txn txn;
  txn.compare.push_back(Compare::ModRevision(key, Compare::Op::kEqual, got->kv->mod_revision));
  txn.compare.push_back(Compare::CreateRevision(key + "/primary", Compare::Op::kEqual, 0));
  txn.then.push_back(TxnOp::Put(key, ours_json));
  std::string left;
  for (const std::string& n : NodesOf(theirs))
    if (std::find(now.begin(), now.end(), n) == now.end()) {
      LeaveOps(name, n, "", &txn);
      left += " " + n;
    }
  Result<TxnResult> r = cluster_->client()->Txn(txn);
  if (!r.ok() || !r->succeeded) {
    SPD_LOG_WARN(
        "replication: %s: another node published an older placement of it and it "
        "could not be replaced (%s): the copies' ranks decide among that one's",
        name.c_str(), r.ok() ? "elected meanwhile, or changed" : r.status().ToString().c_str());
    return;
  }
  placements_replaced_total.Add();
  SPD_LOG_INFO(
      "replication: %s published again from this node's disk over an older placement "
      "(%llu over %llu; leaving:%s)",
      name.c_str(), static_cast<unsigned long long>(PlacementOf(ours)),
      static_cast<unsigned long long>(PlacementOf(theirs)), left.c_str());
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
    why +=
        " (a copy that never comes back may hold the last writes; to go on without it: "
        "spdctl replica promote " +
        name + " --without NODE)";
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

Status ReplicationManager::PromoteWithout(const std::string& name,
                                          const std::vector<std::string>& without) {
  const std::string me = cluster_->name();
  const Parsed p = Parse(mirror_->Get());
  const Parsed::Spec& spec = p.specs.at(name);  // the caller checked
  if (auto prim = p.primaries.find(name); prim != p.primaries.end())
    return FailedPrecondition("'" + name + "' has a primary (" + prim->second.node +
                              "): --without is for a recovered volume whose election waits for "
                              "copies that do not come back");
  if (!spec.recovered || (p.states.count(name) && !p.states.at(name).empty()))
    return FailedPrecondition("'" + name +
                              "' is not a recovered volume waiting for its copies (etcd kept "
                              "its states): --without does not apply");
  auto r = p.ranks.find(name);
  const std::map<std::string, CandidateRank> ranks =
      r != p.ranks.end() ? r->second : std::map<std::string, CandidateRank>{};
  std::vector<std::string> given;
  if (auto g = p.given_up.find(name); g != p.given_up.end()) given = g->second;
  std::string list;  // the nodes given up on by this call
  uint64_t added = 0;
  for (const std::string& n : without) {
    if (n == me) return InvalidArgument("this node (" + me + ") cannot go on without its own copy");
    if (std::find(spec.nodes.begin(), spec.nodes.end(), n) == spec.nodes.end())
      return NotFound("'" + name + "' has no copy on node '" + n + "'");
    if (ranks.count(n))
      return FailedPrecondition("the copy on " + n +
                                " stands in the election: it is not gone (the election waits "
                                "only for the copies that have not stood)");
    if (std::find(given.begin(), given.end(), n) == given.end()) {
      given.push_back(n);
      list += " " + n;
      ++added;
    }
  }
  // Only while nothing moved: no primary yet, none of them stood, the list as read.
  Txn txn;
  txn.compare.push_back(Compare::CreateRevision(std::string(kVolumesPrefix) + name + "/primary",
                                                Compare::Op::kEqual, 0));
  for (const std::string& n : without)
    txn.compare.push_back(Compare::CreateRevision(
        std::string(kVolumesPrefix) + name + "/candidates/" + n, Compare::Op::kEqual, 0));
  auto rev = p.given_up_rev.find(name);
  txn.compare.push_back(Compare::ModRevision(GivenUpKey(name), Compare::Op::kEqual,
                                             rev != p.given_up_rev.end() ? rev->second : 0));
  txn.then.push_back(
      TxnOp::Put(GivenUpKey(name), nlohmann::json{{"nodes", given}, {"by", me}}.dump()));
  SPD_ASSIGN_OR_RETURN(TxnResult t, cluster_->client()->Txn(txn));
  if (!t.succeeded)
    return FailedPrecondition("the election of '" + name +
                              "' moved on meanwhile (a primary, or one of those copies stood): "
                              "look again (spdctl replica list)");
  if (!list.empty()) {
    copies_given_up_total.Add(added);
    SPD_LOG_WARN(
        "replication: %s: recovered volume: an admin gave up on the copies on%s: the election "
        "goes on without them (what only they held is lost)",
        name.c_str(), list.c_str());
  }
  Poke();
  Parsed q;
  if (WaitForPrimary(name, &q, [] { return true; })) return Status::Ok();
  // Who the election still waits for, as last seen.
  auto qr = q.ranks.find(name);
  const std::map<std::string, CandidateRank> now =
      qr != q.ranks.end() ? qr->second : std::map<std::string, CandidateRank>{};
  std::string w;
  for (const std::string& n : RecoveryVoters(spec.nodes, given, now))
    if (!now.count(n)) w += " " + n;
  return Status(StatusCode::kDeadlineExceeded,
                "no primary for '" + name + "' within 15 s" +
                    (w.empty() ? std::string(" (the election is under way)")
                               : "; it waits for the copies on" + w));
}

}  // namespace spd
