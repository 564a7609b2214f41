// A local volume that shares a replicated volume's name (docs/replication.md, "A local volume of
// the same name"): the node that holds it says so in etcd, and the primary places the copy
// elsewhere.
//
// A node with a local volume of a replicated volume's name writes /spd/v1/volumes/NAME/local/NODE
// under its lease (whether placed or not) and deletes it once the local volume is gone. The
// volume's primary, each round, takes a node that has the key out of the placement and puts the
// node holding the fewest copies without the key in its place (one transaction under its epoch:
// the new copy out of sync, then copied whole, as `spdctl volume set-replicas` adds one); a live
// move onto such a node is called off instead. Nodes with the key are never chosen for a new
// copy (set-replicas, the replacement) and a move onto one is refused.
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

Counter copies_replaced_total("spd_replication_copies_replaced_total",
                              "Copies of replicated volumes this node, their primary, placed on "
                              "another node because the one placed holds a local volume of the "
                              "name (or called the move onto it off)");

std::string LocalKey(const std::string& name, const std::string& node) {
  return std::string(kVolumesPrefix) + name + "/local/" + node;
}

}  // namespace

std::set<std::string> LocalHolders(const Parsed& p, const std::string& name) {
  auto it = p.locals.find(name);
  return it == p.locals.end() ? std::set<std::string>{} : it->second;
}

void ReplicationManager::MarkLocal(const std::string& name, const Parsed& p, bool local_here) {
  const std::string me = cluster_->name();
  const bool marked = LocalHolders(p, name).count(me) > 0;
  if (marked == local_here || !cluster_->LeaseValid()) return;
  Status s = Status::Ok();
  if (local_here) {
    Result<int64_t> r = cluster_->client()->Put(
        LocalKey(name, me), nlohmann::json{{"node", me}}.dump(), cluster_->lease_id());
    if (!r.ok()) s = r.status();
  } else {
    Result<DeleteResult> r = cluster_->client()->Delete(LocalKey(name, me));
    if (!r.ok()) s = r.status();
  }
  std::string& logged = failure_logged_[name + "/localkey"];
  if (!s.ok() && logged.empty())
    SPD_LOG_WARN("replication: %s: cannot %s this node's local volume in etcd: %s", name.c_str(),
                 local_here ? "record" : "clear", s.ToString().c_str());
  logged = s.ok() ? "" : "failed";
}

void ReplicationManager::ReplaceLocalHolders(const std::string& name, const Parsed& p) {
  const std::set<std::string> holders = LocalHolders(p, name);
  if (holders.empty()) return;
  const Parsed::Spec& spec = p.specs.at(name);
  const Parsed::Prim& prim = p.primaries.at(name);
  const std::string me = cluster_->name();
  if (spec.deleting || p.handovers.count(name)) return;
  for (const std::string& n : spec.nodes) {
    if (n == me || !holders.count(n)) continue;
    std::string& logged = failure_logged_[name + "/replace/" + n];
    if (!spec.moving_to.empty() && spec.moving_to == n) {
      // The move cannot finish there: called off (the copy moving away stays).
      if (Status s = CancelMove(name, spec.moving_from, n); !s.ok()) {
        if (logged.empty())
          SPD_LOG_WARN("replication: %s: cannot call off the move onto %s: %s", name.c_str(),
                       n.c_str(), s.ToString().c_str());
        logged = "cancel";
        return;
      }
      copies_replaced_total.Add();
      failure_logged_.erase(name + "/replace/" + n);
      SPD_LOG_INFO(
          "replication: %s: node %s holds a local volume of that name: the move onto it "
          "is called off",
          name.c_str(), n.c_str());
      return;
    }
    if (!spec.moving_from.empty()) return;  // one change at a time: after the move
    std::vector<std::string> exclude = spec.nodes;
    exclude.insert(exclude.end(), holders.begin(), holders.end());
    const std::vector<std::string> free = NodesByLoad(cluster_->Nodes(), p, exclude);
    if (free.empty()) {
      if (logged != "none")
        SPD_LOG_WARN(
            "replication: %s: node %s holds a local volume of that name and no other "
            "node can take its copy: it stays placed there, without a copy",
            name.c_str(), n.c_str());
      logged = "none";
      continue;
    }
    const std::string& to = free.front();
    nlohmann::json j = nlohmann::json::parse(spec.json, nullptr, false);
    if (!j.is_object()) return;
    std::vector<std::string> nodes = spec.nodes;
    std::replace(nodes.begin(), nodes.end(), n, to);
    j["nodes"] = nodes;
    NextPlacement(&j);
    const std::string key = std::string(kVolumesPrefix) + name;
    Txn txn = UnderPrimary(name, spec.rev, prim.rev);
    txn.then.push_back(TxnOp::Put(key, j.dump()));
    LeaveOps(name, n, to, &txn);
    JoinOps(name, to, prim.epoch, &txn);
    Result<TxnResult> r = cluster_->client()->Txn(txn);
    if (!r.ok() || !r->succeeded) return;  // again next round, from a newer view
    copies_replaced_total.Add();
    failure_logged_.erase(name + "/replace/" + n);
    SPD_LOG_INFO(
        "replication: %s: node %s holds a local volume of that name: its copy is placed "
        "on %s instead (copied whole from here)",
        name.c_str(), n.c_str(), to.c_str());
    if (o_.on_event)
      o_.on_event(false, name,
                  "node " + n + " holds a local volume of that name: the copy is placed on " + to +
                      " instead");
    Poke();
    return;  // one change a round
  }
}

}  // namespace spd
