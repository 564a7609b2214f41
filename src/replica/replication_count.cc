// Changing the number of copies of a replicated volume at run time (ReplicationManager::
// SetReplicaCount; docs/replication.md, "Changing the number of copies").
//
// One transaction, which holds only while the spec and the primary are the ones the call read,
// records the new placement and count:
//   - more copies: the nodes holding the fewest copies join `nodes`, each recorded out of sync
//     under the primary's epoch (so that none campaigns before it holds the volume); the primary,
//     at its next reconciliation, adds a link to each and copies the volume to it whole
//     (allocated space only), then marks it in sync: a move's second half (replication_move.cc);
//   - fewer: copies other than the primary's leave at once (LeaveOps: their state and candidacy
//     go, their node's key of copies to delete is written), those out of sync first (they count
//     for nothing), then the last placed; the primary's links to them stop counting with no
//     failure, and each node deletes its copy by the key, now or when it is back.
// One change of a volume's placement at a time: refused while a move or a hand-over is under way.
#include <algorithm>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/counters.h"
#include "common/log.h"
#include "replica/replication_manager.h"
#include "replica/replication_manager_internal.h"

namespace spd {
namespace {

Counter copies_added_total("spd_replication_copies_added_total",
                           "Copies of replicated volumes this node added to the cluster's record "
                           "(spdctl volume set-replicas with more copies)");
Counter copies_removed_total("spd_replication_copies_removed_total",
                             "Copies of replicated volumes this node took out of the cluster's "
                             "record (spdctl volume set-replicas with fewer copies)");

std::string Joined(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& n : v) s += (s.empty() ? "" : ", ") + n;
  return s;
}

}  // namespace

Status ReplicationManager::SetReplicaCount(const std::string& name, uint32_t replicas,
                                           const std::vector<std::string>& remove) {
  constexpr uint32_t kMax = ReplicaSet::kReplicasMax + 1;
  if (replicas < 2 || replicas > kMax)
    return InvalidArgument("a replicated volume has 2.." + std::to_string(kMax) + " copies, not " +
                           std::to_string(replicas));
  const PrefixMirror::Snapshot vols = mirror_->Get();
  Result<Parsed::Spec> found = SpecToChange(vols, name);
  if (found.status().code() == StatusCode::kNotFound && volumes_->Find(name) != nullptr) {
    if (!remove.empty())
      return InvalidArgument("'" + name +
                             "' is a local volume: --remove goes with fewer copies "
                             "of a replicated one");
    return Convert(name, replicas);  // made replicated, this node its primary
  }
  if (!found.ok()) return found.status();
  const Parsed::Spec& spec = *found;
  if (!spec.moving_from.empty())
    return FailedPrecondition("a move of '" + name + "' is under way (" + spec.moving_from +
                              " to " + spec.moving_to +
                              "): one change at a time (spdctl replica move --cancel)");
  const Parsed p = Parse(vols);
  if (p.handovers.count(name))
    return FailedPrecondition("a hand-over of '" + name + "' is under way: one change at a time");
  auto prim = p.primaries.find(name);
  if (prim == p.primaries.end())
    return FailedPrecondition("'" + name +
                              "' has no primary now: new copies are copied from the primary, and "
                              "without one the copies to keep are not known");
  const size_t now = spec.nodes.size();
  if (!remove.empty() && replicas >= now)
    return InvalidArgument("'" + name + "' has " + std::to_string(now) + " copies: --remove " +
                           "goes with fewer");
  if (!remove.empty() && remove.size() > now - replicas)  // replicas < now here
    return InvalidArgument("--remove names " + std::to_string(remove.size()) + " nodes; " +
                           std::to_string(now - replicas) + " copies leave");
  for (const std::string& n : remove) {
    if (std::find(spec.nodes.begin(), spec.nodes.end(), n) == spec.nodes.end())
      return NotFound("node " + n + " holds no copy of '" + name + "'");
    if (n == prim->second.node)
      return FailedPrecondition("node " + n + " is the primary of '" + name +
                                "': hand the volume over first (spdctl replica demote)");
  }
  if (replicas == now) return Status::Ok();

  nlohmann::json j = nlohmann::json::parse(spec.json, nullptr, false);
  if (!j.is_object()) return Internal("the spec of '" + name + "' in etcd is not an object");
  const std::string key = std::string(kVolumesPrefix) + name;
  Txn txn = UnderPrimary(name, spec.rev, prim->second.rev);
  std::vector<std::string> nodes = spec.nodes;
  std::vector<std::string> changed;
  if (replicas > now) {
    // Not onto a node that holds a local volume of the name (replication_local.cc).
    std::vector<std::string> exclude = spec.nodes;
    for (const std::string& n : LocalHolders(p, name)) exclude.push_back(n);
    const std::vector<std::string> free = NodesByLoad(cluster_->Nodes(), p, exclude);
    if (free.size() < replicas - now)
      return FailedPrecondition("'" + name + "' has " + std::to_string(now) + " copies and " +
                                std::to_string(free.size()) + " more node(s) serve replicas; " +
                                std::to_string(replicas) + " asked");
    changed.assign(free.begin(), free.begin() + (replicas - now));
    for (const std::string& n : changed) {
      nodes.push_back(n);
      JoinOps(name, n, prim->second.epoch, &txn);
    }
  } else {
    // Those named first, then out of sync (they count for nothing), then the last placed;
    // never the primary.
    std::vector<std::string> order;
    for (const std::string& n : remove)
      if (std::find(order.begin(), order.end(), n) == order.end()) order.push_back(n);
    for (int pass = 0; pass < 2; ++pass)
      for (auto it = spec.nodes.rbegin(); it != spec.nodes.rend(); ++it)
        if (*it != prim->second.node && InSync(p, name, *it) == (pass == 1) &&
            std::find(order.begin(), order.end(), *it) == order.end())
          order.push_back(*it);
    changed.assign(order.begin(), order.begin() + (now - replicas));
    for (const std::string& n : changed) {
      nodes.erase(std::find(nodes.begin(), nodes.end(), n));
      LeaveOps(name, n, "", &txn);
    }
  }
  j["nodes"] = nodes;
  j["replicas"] = replicas;
  NextPlacement(&j);
  txn.then.push_back(TxnOp::Put(key, j.dump()));
  SPD_ASSIGN_OR_RETURN(TxnResult r, cluster_->client()->Txn(txn));
  if (!r.succeeded)
    return Status(StatusCode::kAborted,
                  "the record of '" + name + "' or its primary changed meanwhile: try again");
  (replicas > now ? copies_added_total : copies_removed_total).Add(changed.size());
  AwaitMirror(r.revision);
  const std::string what =
      replicas > now ? "new copies on " + Joined(changed) + " (copied whole from the primary)"
                     : "the copies on " + Joined(changed) + " leave";
  SPD_LOG_INFO("replication: %s: %zu copies now, %u asked: %s", name.c_str(), now, replicas,
               what.c_str());
  if (o_.on_event)
    o_.on_event(false, name,
                std::to_string(replicas) + " copies (were " + std::to_string(now) + "): " + what +
                    ", asked of node " + cluster_->name());
  Poke();
  return Status::Ok();
}

}  // namespace spd
