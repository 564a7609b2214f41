// ReplicationManager's calls from the control API: create, promote, demote (a hand-over), list.
#include <unistd.h>
#include <algorithm>
#include <chrono>
#include <future>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/log.h"
#include "replica/replication_manager.h"
#include "replica/replication_manager_internal.h"

namespace spd {

Status ReplicationManager::Create(const std::string& name, uint64_t size_bytes, uint32_t replicas,
                                  Durability durability, bool async) {
  if (replicas < 2 || replicas > ReplicaSet::kReplicasMax + 1)
    return InvalidArgument("replicas must be 2.." + std::to_string(ReplicaSet::kReplicasMax + 1));
  const PrefixMirror::Snapshot nodes = cluster_->Nodes();
  const PrefixMirror::Snapshot vols = mirror_->Get();
  if (!nodes.listed || !vols.listed)
    return Status(StatusCode::kUnavailable, "the cluster's state is not known yet (etcd)");
  const std::string me = cluster_->name();
  if (auto h = volumes_->Find(name); h && IsLocalVolume(name, *h))
    return AlreadyExists("a local volume '" + name +
                         "' is on this node: a replicated volume of that name would take it "
                         "for its copy (delete it first, or choose another name)");
  // This node's pool takes the first copy: a size its bounds refuse is not recorded.
  SPD_RETURN_IF_ERROR(FitsPool(volumes_, 0, size_bytes, "create volume " + name));
  // This node first, then the nodes that hold the fewest replicated volumes.
  const Parsed p = Parse(vols);
  if (auto it = p.specs.find(name); it != p.specs.end() && it->second.deleting) {
    std::string waiting;
    for (const std::string& n : it->second.nodes)
      if (!p.deleted.count(name) || !p.deleted.at(name).count(n)) waiting += " " + n;
    return AlreadyExists("replicated volume '" + name +
                         "' is still being deleted; copies not deleted yet on:" + waiting);
  }
  SPD_ASSIGN_OR_RETURN(const std::vector<std::string> placed,
                       PlaceNew(nodes, p, me, cluster_->info_json(), replicas));
  const std::string key = std::string(kVolumesPrefix) + name;
  Txn txn;
  txn.compare.push_back(Compare::CreateRevision(key, Compare::Op::kEqual, 0));
  txn.then.push_back(
      TxnOp::Put(key, NewSpecJson(size_bytes, replicas, placed,
                                  async ? std::string("async") : DurabilityName(durability))));
  SPD_ASSIGN_OR_RETURN(TxnResult r, cluster_->client()->Txn(txn));
  if (!r.succeeded) return AlreadyExists("replicated volume '" + name + "' exists in the cluster");
  Poke();
  if (PollUntil(std::chrono::seconds(4), [&] { return volumes_->Find(name) != nullptr; }))
    return Status::Ok();
  return Status(StatusCode::kDeadlineExceeded,
                "recorded in the cluster, but the local copy did not appear within 4 s");
}

Result<std::vector<std::string>> PlaceNew(const PrefixMirror::Snapshot& nodes, const Parsed& p,
                                          const std::string& me, const std::string& my_info,
                                          uint32_t replicas) {
  const nlohmann::json info = nlohmann::json::parse(my_info, nullptr, false);
  if (!info.is_object() || info.value("replication", std::string()).empty())
    return FailedPrecondition("this node serves no replicas (--replication-listen)");
  const std::vector<std::string> others = NodesByLoad(nodes, p, {me});
  if (others.size() + 1 < replicas)
    return FailedPrecondition("only " + std::to_string(others.size() + 1) +
                              " node(s) serve replicas; " + std::to_string(replicas) + " asked");
  std::vector<std::string> placed{me};
  placed.insert(placed.end(), others.begin(), others.begin() + (replicas - 1));
  return placed;
}

Txn UnderPrimary(const std::string& name, int64_t spec_rev, int64_t primary_rev) {
  const std::string key = std::string(kVolumesPrefix) + name;
  Txn txn;
  txn.compare.push_back(Compare::ModRevision(key, Compare::Op::kEqual, spec_rev));
  txn.compare.push_back(
      Compare::CreateRevision(key + "/primary", Compare::Op::kEqual, primary_rev));
  return txn;
}

std::string NewSpecJson(uint64_t size_bytes, uint32_t replicas,
                        const std::vector<std::string>& placed, const std::string& durability) {
  return nlohmann::json{
      {"size", size_bytes}, {"replicas", replicas}, {"nodes", placed}, {"durability", durability}}
      .dump();
}

std::vector<std::string> NodesByLoad(const PrefixMirror::Snapshot& nodes, const Parsed& p,
                                     const std::vector<std::string>& exclude) {
  std::map<std::string, int> load;
  for (const auto& [n, spec] : p.specs)
    for (const std::string& node : spec.nodes) ++load[node];
  std::vector<std::pair<int, std::string>> by_load;
  for (const auto& [key, kv] : nodes.kvs) {
    const std::string n = key.substr(std::string(kNodesPrefix).size());
    if (std::find(exclude.begin(), exclude.end(), n) == exclude.end() &&
        !ReplicationAddress(nodes, n).empty())
      by_load.push_back({load[n], n});
  }
  std::sort(by_load.begin(), by_load.end());
  std::vector<std::string> out;
  for (auto& [l, n] : by_load) out.push_back(std::move(n));
  return out;
}

Status ReplicationManager::Promote(const std::string& name,
                                   const std::vector<std::string>& without) {
  const std::string me = cluster_->name();
  Parsed p = Parse(mirror_->Get());
  auto spec = p.specs.find(name);
  if (spec == p.specs.end()) return NotFound("no replicated volume '" + name + "'");
  if (std::find(spec->second.nodes.begin(), spec->second.nodes.end(), me) ==
      spec->second.nodes.end())
    return FailedPrecondition("'" + name + "' has no copy on this node (" + me + ")");
  if (!without.empty()) return PromoteWithout(name, without);
  auto prim = p.primaries.find(name);
  if (prim != p.primaries.end() && prim->second.node == me) return Status::Ok();
  auto st = p.states.find(name);
  const std::string mine =
      st != p.states.end() && st->second.count(me) ? st->second.at(me).first : "unknown";
  if (mine != "in_sync")
    return FailedPrecondition("the copy on this node is " + mine +
                              ": only an in-sync copy may become the primary");
  return HandOver(name, me);
}

Status ReplicationManager::Demote(const std::string& name, const std::string& to) {
  const std::string me = cluster_->name();
  Parsed p = Parse(mirror_->Get());
  auto spec = p.specs.find(name);
  if (spec == p.specs.end()) return NotFound("no replicated volume '" + name + "'");
  auto prim = p.primaries.find(name);
  if (prim == p.primaries.end() || prim->second.node != me)
    return FailedPrecondition(
        "this node (" + me + ") is not the primary of '" + name +
        "' (the primary: " + (prim != p.primaries.end() ? prim->second.node : std::string("none")) +
        "): ask the primary");
  const std::vector<std::string>& nodes = spec->second.nodes;
  if (!to.empty() && std::find(nodes.begin(), nodes.end(), to) == nodes.end())
    return NotFound("'" + name + "' has no copy on node '" + to + "'");
  if (to == me) return FailedPrecondition("node '" + to + "' is the primary already");
  auto st = p.states.find(name);
  auto state_of = [&](const std::string& n) {
    return st != p.states.end() && st->second.count(n) ? st->second.at(n).first
                                                       : std::string("unknown");
  };
  std::string target = to;
  if (target.empty()) {
    for (const std::string& n : nodes)
      if (n != me && state_of(n) == "in_sync") {
        target = n;
        break;
      }
    if (target.empty())
      return FailedPrecondition("no other copy of '" + name +
                                "' is in sync: none may take the volume");
  } else if (state_of(target) != "in_sync") {
    return FailedPrecondition("the copy on " + target + " is " + state_of(target) +
                              ": only an in-sync copy may become the primary");
  }
  return HandOver(name, target);
}

Status ReplicationManager::HandOver(const std::string& name, const std::string& to) {
  if (!cluster_->LeaseValid())
    return Status(StatusCode::kUnavailable, "this node's cluster lease is not valid");
  // The request lives with this node's lease: if this node dies, nobody waits for it.
  const std::string key = std::string(kVolumesPrefix) + name + "/handover";
  SPD_ASSIGN_OR_RETURN(int64_t rev, cluster_->client()->Put(key, nlohmann::json{{"to", to}}.dump(),
                                                            cluster_->lease_id()));
  (void)rev;
  Poke();
  Parsed p;
  if (WaitForPrimary(name, &p, [&] { return p.primaries.at(name).node == to; }))
    return Status::Ok();
  (void)cluster_->client()->Delete(key);
  auto prim = p.primaries.find(name);
  return Status(StatusCode::kDeadlineExceeded,
                "node " + to + " did not become the primary of '" + name +
                    "' within 15 s (primary: " +
                    (prim != p.primaries.end() ? prim->second.node : std::string("none")) + ")");
}

void ReplicationManager::Poke() {
  {
    std::lock_guard<std::mutex> l(mu_);
    changed_ = true;
  }
  cv_.notify_all();
}

bool PollUntil(std::chrono::milliseconds limit, const std::function<bool()>& done) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (true) {
    if (done()) return true;
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

Status Await(const std::function<void(std::function<void(Status)>)>& start) {
  std::promise<Status> done;
  start([&done](Status s) { done.set_value(std::move(s)); });
  return done.get_future().get();
}

bool ReplicationManager::WaitForPrimary(const std::string& name, Parsed* last,
                                        const std::function<bool()>& wanted) {
  return PollUntil(std::chrono::seconds(15), [&] {
    *last = Parse(mirror_->Get());
    return last->primaries.count(name) && wanted();
  });
}

Status PutSpecField(EtcdClient* etcd, const std::string& name, const Parsed::Spec& spec,
                    const std::string& field, const nlohmann::json& value) {
  nlohmann::json j = nlohmann::json::parse(spec.json, nullptr, false);
  if (!j.is_object()) return Internal("the spec of '" + name + "' in etcd is not an object");
  if (value.is_null()) {
    j.erase(field);
  } else {
    j[field] = value;
  }
  const std::string key = std::string(kVolumesPrefix) + name;
  Txn txn;
  txn.compare.push_back(Compare::ModRevision(key, Compare::Op::kEqual, spec.rev));
  txn.then.push_back(TxnOp::Put(key, j.dump()));
  SPD_ASSIGN_OR_RETURN(TxnResult r, etcd->Txn(txn));
  if (!r.succeeded)
    return Status(StatusCode::kAborted,
                  "the record of '" + name + "' changed meanwhile: try again");
  return Status::Ok();
}

Result<Parsed::Spec> SpecToChange(const PrefixMirror::Snapshot& vols, const std::string& name) {
  if (!vols.listed) return Unavailable("the cluster's state is not known yet (etcd)");
  const Parsed p = Parse(vols);
  auto it = p.specs.find(name);
  if (it == p.specs.end()) return NotFound("no replicated volume '" + name + "' in the cluster");
  if (it->second.deleting) return FailedPrecondition("'" + name + "' is being deleted");
  return it->second;
}

void ReplicationManager::AwaitMirror(int64_t revision) {
  (void)PollUntil(std::chrono::seconds(2), [&] { return mirror_->Get().revision >= revision; });
}

Status ReplicationManager::AuthorizePrimary(const std::string& volume, uint64_t epoch,
                                            const std::string& node) {
  const PrefixMirror::Snapshot vols = mirror_->Get();
  if (!vols.listed) return Unavailable("the cluster's state is not known here yet (etcd)");
  const Parsed p = Parse(vols);
  auto it = p.primaries.find(volume);
  if (it == p.primaries.end())
    return FailedPrecondition("etcd names no primary of '" + volume + "' (as this node sees it)");
  if (it->second.node != node)
    return PermissionDenied("etcd names node '" + it->second.node + "' the primary of '" + volume +
                            "'");
  if (static_cast<uint64_t>(it->second.epoch) != epoch)
    return FailedPrecondition("the primary's epoch in etcd is " + std::to_string(it->second.epoch));
  return Status::Ok();
}

Status ReplicationManager::SetDurability(const std::string& name, Durability durability) {
  Result<Parsed::Spec> found = SpecToChange(mirror_->Get(), name);
  if (!found.ok()) return found.status();
  const Parsed::Spec& spec = *found;
  if (spec.async)
    return FailedPrecondition("'" + name +
                              "' is an asynchronous replicated volume: its copies keep "
                              "durability flush");
  if (spec.durability != durability) {
    SPD_RETURN_IF_ERROR(
        PutSpecField(cluster_->client(), name, spec, "durability", DurabilityName(durability)));
    SPD_LOG_INFO("replication: %s: durability %s on every copy", name.c_str(),
                 DurabilityName(durability));
  }
  Poke();
  if (std::find(spec.nodes.begin(), spec.nodes.end(), cluster_->name()) == spec.nodes.end())
    return Status::Ok();
  if (PollUntil(std::chrono::seconds(4), [&] {
        std::shared_ptr<VolumeHandle> h = volumes_->Find(name);
        return h && h->info().durability == durability;
      }))
    return Status::Ok();
  return Status(StatusCode::kDeadlineExceeded,
                "recorded in the cluster, but the copy here did not change within 4 s (the "
                "daemon's log says why)");
}

bool ReplicationManager::InCluster(const std::string& name) const {
  return Parse(mirror_->Get()).specs.count(name) > 0;
}

bool ReplicationManager::Replicated(const std::string& name) const {
  // A local volume of the name here (no copy): on this node the name is that volume's.
  if (auto h = volumes_->Find(name); h && IsLocalVolume(name, *h)) return false;
  if (Parse(mirror_->Get()).specs.count(name) > 0) return true;
  return !o_.state_dir.empty() && access(SpecPath(o_.state_dir, name).c_str(), F_OK) == 0;
}

std::vector<ReplicatedVolumeStatus> ReplicationManager::List(const std::string& only) const {
  const Parsed p = Parse(mirror_->Get());
  std::vector<ReplicatedVolumeStatus> out;
  std::lock_guard<std::mutex> l(mu_);
  for (const auto& [name, spec] : p.specs) {
    if (!only.empty() && name != only) continue;
    ReplicatedVolumeStatus v;
    v.name = name;
    v.size_bytes = spec.size;
    v.replicas = spec.replicas;
    v.durability = spec.async ? std::string("async") : DurabilityName(spec.durability);
    v.nodes = spec.nodes;
    if (auto it = p.primaries.find(name); it != p.primaries.end()) {
      v.primary = it->second.node;
      v.epoch = static_cast<uint64_t>(it->second.epoch);
    }
    std::vector<ReplicaSet::LinkInfo> links;
    if (auto it = primaries_.find(name); it != primaries_.end()) {
      links = it->second->set->Links();
      v.lag_bytes = it->second->set->lag_bytes();
      v.lag_ms = it->second->set->lag_ms();
    }
    v.deleting = spec.deleting;
    auto st = p.states.find(name);
    auto del = p.deleted.find(name);
    for (const std::string& node : spec.nodes) {
      ReplicaStatus r;
      r.node = node;
      r.state = "unknown";
      if (spec.deleting) {  // no other state matters now
        r.state = del != p.deleted.end() && del->second.count(node) ? "deleted" : "deleting";
        v.states.push_back(r);
        continue;
      }
      if (st != p.states.end())
        if (auto s = st->second.find(node); s != st->second.end()) {
          r.state = s->second.first;
          r.epoch = s->second.second;
        }
      for (const auto& li : links)
        if (li.name == node) {
          r.detail = li.detail;
          r.acked = li.acked;
          if (li.state == ReplicaSet::LinkState::kResyncing)
            r.detail = "resyncing: at byte " + std::to_string(li.resynced_bytes) + " of " +
                       std::to_string(spec.size);
        }
      if (node == spec.moving_from && r.detail.empty())
        r.detail = "leaving: it counts until the copy on " + spec.moving_to + " is in sync";
      v.states.push_back(r);
    }
    out.push_back(std::move(v));
  }
  return out;
}

}  // namespace spd
