// A replicated volume made asynchronous or synchronous at run time (`spdctl volume
// set-durability NAME async|flush|sync|none`; docs/replication.md, "Synchronous or
// asynchronous at run time").
//
// The two fail over differently: an asynchronous volume's election waits for its copies and the
// freshest takes it (they may lag one another); a synchronous one's in-sync copies all hold
// every acknowledged write, and any takes it at once. So the record never says synchronous while
// a write completed ahead of its acks may be missing on an in-sync copy:
//   - to asynchronous: the record says so first (its elections from then on pick the freshest),
//     then the primary, at its next round, completes writes ahead of their acks;
//   - to synchronous: the record keeps "async" and gets `to_sync` (the durability wanted); the
//     primary, at its next round, completes new writes only with their acks again, and once
//     every write it completed ahead of them is acknowledged by every in-sync copy (drained),
//     records the durability, under its epoch. A primary elected meanwhile starts synchronous
//     and records it once its set settled. The call waits for that (15 s at most).
#include <chrono>
#include <string>

#include <nlohmann/json.hpp>

#include "common/counters.h"
#include "common/log.h"
#include "replica/replication_manager.h"
#include "replica/replication_manager_internal.h"

namespace spd {
namespace {

Counter mode_changes_total("spd_replication_mode_changes_total",
                           "Replicated volumes whose primary here became asynchronous or "
                           "synchronous at run time (spdctl volume set-durability)");

}  // namespace

Status ReplicationManager::SetReplicationMode(const std::string& name, bool async,
                                              Durability durability) {
  Result<Parsed::Spec> found = SpecToChange(mirror_->Get(), name);
  if (!found.ok()) return found.status();
  const Parsed::Spec& spec = *found;
  if (!async && !spec.async) return SetDurability(name, durability);
  if (async) {
    if (spec.async && spec.to_sync.empty()) return Status::Ok();
    // Synchronous now, or on its way there (called off: the primary goes back at once).
    SPD_RETURN_IF_ERROR(spec.async ? PutSpecField(cluster_->client(), name, spec, "to_sync", {})
                                   : PutSpecField(cluster_->client(), name, spec, "durability",
                                                  std::string("async")));
    SPD_LOG_INFO("replication: %s: asynchronous from now on (asked here)", name.c_str());
    Poke();
    return Status::Ok();
  }
  const std::string want = DurabilityName(durability);
  if (spec.to_sync != want)
    SPD_RETURN_IF_ERROR(PutSpecField(cluster_->client(), name, spec, "to_sync", want));
  SPD_LOG_INFO("replication: %s: synchronous (%s) once its primary's lag is drained (asked here)",
               name.c_str(), want.c_str());
  Poke();
  if (PollUntil(std::chrono::seconds(15), [&] {
        const Parsed p = Parse(mirror_->Get());
        auto it = p.specs.find(name);
        return it == p.specs.end() || (!it->second.async && it->second.durability == durability);
      }))
    return Status::Ok();
  return Status(StatusCode::kDeadlineExceeded,
                "recorded: '" + name +
                    "' becomes synchronous once its primary's writes are on every in-sync copy; "
                    "not within 15 s (spdctl replica list shows the lag and the primary)");
}

void ReplicationManager::FollowMode(const std::string& name, const Parsed& p) {
  const Parsed::Spec& spec = p.specs.at(name);  // the caller's: placed, this node the primary
  const int64_t primary_rev = p.primaries.at(name).rev;
  const bool want_async = spec.async && spec.to_sync.empty();
  const bool draining = spec.async && !spec.to_sync.empty();
  ReplicaSet* set = nullptr;
  Volume* v = nullptr;
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = primaries_.find(name);
    if (it == primaries_.end()) return;
    // Nothing to do: no task for the set's reactor (an idle node stays idle).
    if (it->second->async == want_async && !draining) return;
    it->second->async = want_async;
    set = it->second->set.get();
    v = it->second->volume;
  }
  bool was = false;
  bool drained = false;
  bool settled = false;
  RunOnAndWait(v->owner(), [&] {
    was = set->async();
    if (was != want_async) set->SetAsync(want_async);
    drained = set->AsyncDrained();
    settled = set->settled();
  });
  if (was != want_async) {
    mode_changes_total.Add();
    SPD_LOG_INFO("replication: %s: the primary completes writes %s", name.c_str(),
                 want_async ? "ahead of their acks now (asynchronous)"
                            : "with their acks again (to synchronous, once the lag is drained)");
    if (o_.on_event)
      o_.on_event(false, name,
                  want_async ? "asynchronous now" : "becoming synchronous: the lag drains");
  }
  if (!draining || !drained || !settled) return;
  // Every write completed so far is on every in-sync copy, and new ones wait for their acks:
  // the record may say synchronous (under this primary's epoch).
  nlohmann::json j = nlohmann::json::parse(spec.json, nullptr, false);
  if (!j.is_object()) return;
  j["durability"] = spec.to_sync;
  j.erase("to_sync");
  const std::string key = std::string(kVolumesPrefix) + name;
  Txn txn = UnderPrimary(name, spec.rev, primary_rev);
  txn.then.push_back(TxnOp::Put(key, j.dump()));
  Result<TxnResult> r = cluster_->client()->Txn(txn);
  if (!r.ok() || !r->succeeded) return;  // again next round, from a newer view
  SPD_LOG_INFO(
      "replication: %s: synchronous now (durability %s): every write is on every "
      "in-sync copy",
      name.c_str(), spec.to_sync.c_str());
  if (o_.on_event) o_.on_event(false, name, "synchronous now (durability " + spec.to_sync + ")");
}

}  // namespace spd
