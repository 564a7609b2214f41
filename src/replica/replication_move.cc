// Moving a copy of a replicated volume to another node (ReplicationManager::Move;
// docs/replication.md, "Moving a copy").
//
// The call records the change in one transaction, which holds only while the spec and the
// primary are the ones it read: TO joins `nodes`, recorded out of sync under the primary's epoch
// (it never campaigns before it holds the volume). FROM leaves:
//   - at once if it is out of sync (down, or behind: it counts for nothing): TO takes its place;
//   - if it is in sync (a live move), only once TO is: the spec names the move ("moving"), FROM
//     keeps counting meanwhile, and the primary, seeing TO in sync, takes FROM out of the
//     placement in a transaction of its own under its epoch (FinishMove).
// Leaving, FROM's recorded state goes and /spd/v1/moved/FROM/NAME is written (LeaveOps). Then:
//   - the primary, at its next reconciliation, follows the placement while it serves
//     (ReplicaSet::SetReplicas): a link added to TO, whose copy the resync copies whole
//     (allocated space only) and then marks in sync; the link to FROM, once it left, stops
//     counting at once (no longer placed, nothing it missed can be promoted);
//   - TO creates its (empty) copy and guards it, as for any volume placed there;
//   - FROM deletes its copy and the copy's state on disk by its key, whenever it is back (even
//     after the volume was deleted or created again); then the key goes. A node that never
//     comes back leaves its keys.
// FROM must not be the primary (demote it first), the volume must have one (the new copy is
// copied from it), and one move of a volume runs at a time. A live move can be called off
// (CancelMove) until it finishes: TO leaves as FROM would have (LeaveOps), FROM stays.
#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/counters.h"
#include "common/log.h"
#include "replica/replication_manager.h"
#include "replica/replication_manager_internal.h"

namespace spd {
namespace {

Counter moves_total("spd_replication_moves_total",
                    "Copies of replicated volumes this node moved to another node in the "
                    "cluster's record (spdctl replica move)");
Counter moves_finished_total("spd_replication_moves_finished_total",
                             "Live moves this node's primaries finished: the new copy in sync, "
                             "the copy that stayed counting until then left the placement");
Counter placement_changes_total("spd_replication_placement_changes_total",
                                "Placement changes this node's primaries followed (links added "
                                "and removed while serving)");
Counter placement_failures_total("spd_replication_placement_failures_total",
                                 "Attempts of this node's primaries to follow a placement change "
                                 "that could not be done yet; each is tried again");
Counter moves_cancelled_total("spd_replication_moves_cancelled_total",
                              "Live moves this node called off in the cluster's record (spdctl "
                              "replica move --cancel): the new copy left, the old one stayed");
Counter copies_dropped_total("spd_replication_copies_dropped_total",
                             "Copies deleted here because their volume's placement no longer "
                             "names this node (the copy moved to another node)");

}  // namespace

// What `from` leaving `name`'s placement adds to a transaction: its state and candidacy go, and
// its key of copies to delete is written, outside the volume's keys, so that a delete of the
// volume leaves it: `from` deletes its copy by it whenever it is back, even after the volume is
// gone or was created again.
void LeaveOps(const std::string& name, const std::string& from, const std::string& to, Txn* txn) {
  const std::string key = std::string(kVolumesPrefix) + name;
  txn->then.push_back(TxnOp::Delete(key + "/replicas/" + from));
  txn->then.push_back(TxnOp::Delete(key + "/candidates/" + from));
  txn->then.push_back(TxnOp::Put(MovedPrefix(from) + name, nlohmann::json{{"to", to}}.dump()));
}

void JoinOps(const std::string& name, const std::string& to, int64_t epoch, Txn* txn) {
  const std::string key = std::string(kVolumesPrefix) + name;
  txn->then.push_back(TxnOp::Put(
      key + "/replicas/" + to, nlohmann::json{{"state", "out_of_sync"}, {"epoch", epoch}}.dump()));
  txn->then.push_back(TxnOp::Delete(MovedPrefix(to) + name));
}

bool InSync(const Parsed& p, const std::string& volume, const std::string& node) {
  auto st = p.states.find(volume);
  return st != p.states.end() && st->second.count(node) && st->second.at(node).first == "in_sync";
}

bool PlacedInMirror(const PrefixMirror::Snapshot& vols, const std::string& volume,
                    const std::string& node) {
  auto it = vols.kvs.find(std::string(kVolumesPrefix) + volume);
  if (it == vols.kvs.end()) return true;  // not known here: as if placed
  const nlohmann::json j = nlohmann::json::parse(it->second.value, nullptr, false);
  if (!j.is_object() || !j.contains("nodes") || !j["nodes"].is_array()) return true;
  const std::vector<std::string> nodes = NodesOf(j);
  return std::find(nodes.begin(), nodes.end(), node) != nodes.end();
}

namespace {

// The transaction that ends the live move of `spec` with `leaving` out of the placement (the
// copy moving away once the new one is in sync, or the new one when the move is called off),
// `staying` in: only while the spec is the one read.
Result<Txn> EndMoveTxn(const std::string& name, const Parsed::Spec& spec,
                       const std::string& leaving, const std::string& staying) {
  nlohmann::json j = nlohmann::json::parse(spec.json, nullptr, false);
  if (!j.is_object()) return Internal("the spec of '" + name + "' in etcd is not an object");
  std::vector<std::string> nodes;
  for (const std::string& n : spec.nodes)
    if (n != leaving) nodes.push_back(n);
  j["nodes"] = nodes;
  j.erase("moving");
  NextPlacement(&j);
  const std::string key = std::string(kVolumesPrefix) + name;
  Txn txn;
  txn.compare.push_back(Compare::ModRevision(key, Compare::Op::kEqual, spec.rev));
  txn.then.push_back(TxnOp::Put(key, j.dump()));
  LeaveOps(name, leaving, staying, &txn);
  return txn;
}

}  // namespace

Status ReplicationManager::Move(const std::string& name, const std::string& from,
                                const std::string& to) {
  const PrefixMirror::Snapshot vols = mirror_->Get();
  Result<Parsed::Spec> found = SpecToChange(vols, name);
  if (!found.ok()) return found.status();
  const Parsed::Spec& spec = *found;
  if (from.empty() || to.empty()) return InvalidArgument("a move needs --from and --to");
  if (from == to) return InvalidArgument("--from and --to are the same node");
  if (!spec.moving_from.empty())
    return FailedPrecondition("a move of '" + name + "' is under way (" + spec.moving_from +
                              " to " + spec.moving_to + "): one at a time");

  const auto placed = [&](const std::string& n) {
    return std::find(spec.nodes.begin(), spec.nodes.end(), n) != spec.nodes.end();
  };
  if (!placed(from)) return NotFound("node " + from + " holds no copy of '" + name + "'");
  if (placed(to))
    return FailedPrecondition("node " + to + " holds a copy of '" + name + "' already");
  const PrefixMirror::Snapshot nodes = cluster_->Nodes();
  if (!nodes.kvs.count(std::string(kNodesPrefix) + to))
    return NotFound("no node " + to + " in the cluster now (spdctl node list)");
  if (ReplicationAddress(nodes, to).empty())
    return FailedPrecondition("node " + to + " serves no replicas (no --replication-listen)");
  const Parsed p = Parse(vols);
  if (LocalHolders(p, name).count(to))
    return FailedPrecondition("node " + to + " holds a local volume named '" + name +
                              "': it would hold no copy (delete or rename it there first)");
  auto prim = p.primaries.find(name);
  if (prim == p.primaries.end())
    return FailedPrecondition("'" + name +
                              "' has no primary now: the new copy is copied from the primary");
  if (prim->second.node == from)
    return FailedPrecondition("node " + from + " is the primary of '" + name +
                              "': hand the volume over first (spdctl replica demote)");
  nlohmann::json j = nlohmann::json::parse(spec.json, nullptr, false);
  if (!j.is_object()) return Internal("the spec of '" + name + "' in etcd is not an object");
  // A copy in sync keeps counting until the new one is (FinishMove); one out of sync, which
  // counts for nothing, leaves at once.
  const bool live = InSync(p, name, from);
  std::vector<std::string> moved = spec.nodes;
  if (live) {
    moved.push_back(to);
    j["moving"] = {{"from", from}, {"to", to}};
  } else {
    std::replace(moved.begin(), moved.end(), from, to);
  }
  j["nodes"] = moved;
  NextPlacement(&j);
  const std::string key = std::string(kVolumesPrefix) + name;
  Txn txn = UnderPrimary(name, spec.rev, prim->second.rev);
  txn.then.push_back(TxnOp::Put(key, j.dump()));
  JoinOps(name, to, prim->second.epoch, &txn);
  if (!live) LeaveOps(name, from, to, &txn);
  SPD_ASSIGN_OR_RETURN(TxnResult r, cluster_->client()->Txn(txn));
  if (!r.succeeded)
    return Status(StatusCode::kAborted,
                  "the record of '" + name + "' or its primary changed meanwhile: try again");
  moves_total.Add();
  AwaitMirror(r.revision);
  const std::string how =
      live ? " (it keeps counting until the new copy is in sync)" : " (it leaves at once)";
  SPD_LOG_INFO("replication: %s: its copy on %s moves to %s%s", name.c_str(), from.c_str(),
               to.c_str(), how.c_str());
  if (o_.on_event)
    o_.on_event(
        false, name,
        "the copy on " + from + " moves to " + to + how + ", asked of node " + cluster_->name());
  Poke();
  return Status::Ok();
}

Status ReplicationManager::CancelMove(const std::string& name, const std::string& from,
                                      const std::string& to) {
  const PrefixMirror::Snapshot vols = mirror_->Get();
  Result<Parsed::Spec> found = SpecToChange(vols, name);
  if (!found.ok()) return found.status();
  const Parsed::Spec& spec = *found;
  if (spec.moving_from.empty()) return FailedPrecondition("no move of '" + name + "' is under way");
  const std::string under_way = spec.moving_from + " to " + spec.moving_to;
  if ((!from.empty() && from != spec.moving_from) || (!to.empty() && to != spec.moving_to))
    return FailedPrecondition("the move of '" + name + "' under way is " + under_way);
  const Parsed p = Parse(vols);
  if (auto prim = p.primaries.find(name);
      prim != p.primaries.end() && prim->second.node == spec.moving_to)
    return FailedPrecondition("node " + spec.moving_to + ", the new copy's, is the primary of '" +
                              name + "' now: the move finishes instead");
  if (InSync(p, name, spec.moving_to) && !InSync(p, name, spec.moving_from))
    return FailedPrecondition("the copy on " + spec.moving_to + " is in sync and the one on " +
                              spec.moving_from + " is not: the move is finishing");
  SPD_ASSIGN_OR_RETURN(Txn txn, EndMoveTxn(name, spec, spec.moving_to, spec.moving_from));
  SPD_ASSIGN_OR_RETURN(TxnResult r, cluster_->client()->Txn(txn));
  if (!r.succeeded)
    return Status(StatusCode::kAborted,
                  "the record of '" + name + "' changed meanwhile: try again");
  moves_cancelled_total.Add();
  AwaitMirror(r.revision);
  SPD_LOG_INFO(
      "replication: %s: the move %s is called off: the copy on %s stays, the one on %s "
      "leaves",
      name.c_str(), under_way.c_str(), spec.moving_from.c_str(), spec.moving_to.c_str());
  if (o_.on_event)
    o_.on_event(false, name,
                "the move " + under_way + " is called off: the copy on " + spec.moving_from +
                    " stays, the one on " + spec.moving_to + " leaves, asked of node " +
                    cluster_->name());
  Poke();
  return Status::Ok();
}

void ReplicationManager::FinishMove(const std::string& name, const Parsed& p) {
  const Parsed::Spec& spec = p.specs.at(name);
  if (!InSync(p, name, spec.moving_to)) return;  // the new copy is not in sync yet
  std::string& logged = failure_logged_[name + "/move"];
  if (spec.moving_from == cluster_->name()) {  // it became the primary meanwhile
    if (logged.empty())
      SPD_LOG_WARN(
          "replication: %s: the copy leaving is the primary's: the move finishes once "
          "the volume is handed over (spdctl replica demote)",
          name.c_str());
    logged = "primary";
    return;
  }
  Result<Txn> txn = EndMoveTxn(name, spec, spec.moving_from, spec.moving_to);
  if (!txn.ok()) return;
  // Under this primary's epoch.
  txn->compare.push_back(Compare::CreateRevision(std::string(kVolumesPrefix) + name + "/primary",
                                                 Compare::Op::kEqual, p.primaries.at(name).rev));
  Result<TxnResult> r = cluster_->client()->Txn(*txn);
  if (!r.ok() || !r->succeeded) return;  // again next round, from a newer view
  failure_logged_.erase(name + "/move");
  moves_finished_total.Add();
  SPD_LOG_INFO("replication: %s: the copy on %s is in sync: the copy on %s leaves", name.c_str(),
               spec.moving_to.c_str(), spec.moving_from.c_str());
  if (o_.on_event)
    o_.on_event(false, name,
                "the move is done: the copy on " + spec.moving_to + " is in sync, the copy on " +
                    spec.moving_from + " leaves");
}

void ReplicationManager::FollowPlacement(const std::string& name,
                                         const std::vector<std::string>& nodes,
                                         const PrefixMirror::Snapshot& nodes_snap) {
  ReplicaSet* set = nullptr;
  Volume* v = nullptr;
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = primaries_.find(name);
    if (it == primaries_.end() || it->second->nodes == nodes) return;
    set = it->second->set.get();
    v = it->second->volume;
  }
  std::vector<ReplicaTarget> targets;
  for (const std::string& n : nodes)
    if (n != cluster_->name()) targets.push_back({n, ReplicationAddress(nodes_snap, n)});
  int rc = 0;
  RunOnAndWait(v->owner(), [&] { rc = set->SetReplicas(targets); });
  std::string& logged = failure_logged_[name + "/placement"];
  if (rc != 0) {
    placement_failures_total.Add();
    if (logged.empty())
      SPD_LOG_WARN("replication: %s: cannot follow the new placement yet (%s): tried again",
                   name.c_str(), rc == -EBUSY ? "no free link slot" : "closing or deposed");
    logged = "failed";
    return;
  }
  failure_logged_.erase(name + "/placement");
  placement_changes_total.Add();
  std::string list;
  for (const std::string& n : nodes) list += " " + n;
  SPD_LOG_INFO("replication: %s: the primary follows the placement:%s", name.c_str(), list.c_str());
  std::lock_guard<std::mutex> l(mu_);
  if (auto it = primaries_.find(name); it != primaries_.end() && it->second->set.get() == set)
    it->second->nodes = nodes;
}

void ReplicationManager::DropMovedCopies(const Parsed& p, std::set<std::string>* dropping) {
  const PrefixMirror::Snapshot moved = moved_mirror_->Get();
  const std::string prefix = MovedPrefix(cluster_->name());
  for (const auto& [key, kv] : moved.kvs) {
    if (key.size() <= prefix.size()) continue;
    const std::string name = key.substr(prefix.size());
    dropping->insert(name);
    // The maps it may have kept as a primary: of the nodes its saved spec and the record name.
    const auto spec = p.specs.find(name);
    const std::vector<std::string> nodes =
        SavedSpecNodes(o_.state_dir, name,
                       spec != p.specs.end() ? spec->second.nodes : std::vector<std::string>{});
    const std::shared_ptr<VolumeHandle> h = volumes_->Find(name);
    const bool had = (h && !IsLocalVolume(name, *h)) || SavedSpecExists(o_.state_dir, name);
    if (!DropCopy(name, nodes)) continue;  // again next round
    if (had) {
      copies_dropped_total.Add();
      SPD_LOG_INFO("replication: %s: the copy here moved to another node: deleted", name.c_str());
      if (o_.on_event)
        o_.on_event(false, name, "node " + cluster_->name() + " deleted its copy (it moved)");
    }
    // Done: the mark goes (unless a newer one replaced it meanwhile).
    Txn txn;
    txn.compare.push_back(Compare::ModRevision(key, Compare::Op::kEqual, kv.mod_revision));
    txn.then.push_back(TxnOp::Delete(key));
    (void)cluster_->client()->Txn(txn);
  }
}

}  // namespace spd
