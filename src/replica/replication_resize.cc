// Growing a replicated volume on every copy (ReplicationManager::Resize; docs/replication.md,
// "Resizing a replicated volume").
//
// The call records the new size in the volume's spec in etcd (a transaction on the spec's mod
// revision). The primary, at its next reconciliation, grows its link's dirty maps and sends a
// kGrow to every replica in sync or resyncing, numbered among the writes; once each has grown
// (or failed and is marked out of sync), its own copy grows, and only then can a client write
// past the old end: no write past a replica's end ever reaches one. A replica that was away
// grows at its next hello, which names the primary's size; a node that becomes the primary
// with a smaller copy grows it before its set starts. Volumes only grow: a shrink would have
// to drop the data past the new end on every copy at once, and is refused.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <future>
#include <memory>
#include <thread>

#include "common/counters.h"
#include "common/log.h"
#include "replica/replica_set.h"
#include "replica/replication_manager.h"
#include "replica/replication_manager_internal.h"

namespace spd {
namespace {

Counter resizes_total("spd_replication_resizes_total",
                      "Replicated volumes this node recorded a new size of in the cluster "
                      "(spdctl volume resize)");
Counter copies_grown_total("spd_replication_copies_grown_total",
                           "Copies this node grew as a replicated volume's primary (its "
                           "replicas in sync grew first)");
Counter grow_failures_total("spd_replication_grow_failures_total",
                            "Attempts of this node's primary to grow a replicated volume that "
                            "failed (its replicas or its own copy); each is tried again");

Status ResizeLocal(VolumeManager* volumes, const std::string& name, uint64_t size_bytes) {
  return Await([&](std::function<void(Status)> cb) { volumes->Resize(name, size_bytes, cb); });
}

}  // namespace

Status ReplicationManager::Resize(const std::string& name, uint64_t size_bytes) {
  Result<Parsed::Spec> found = SpecToChange(mirror_->Get(), name);
  if (!found.ok()) return found.status();
  const Parsed::Spec& spec = *found;
  if (size_bytes < spec.size)
    return FailedPrecondition("'" + name + "' is " + std::to_string(spec.size) +
                              " bytes: a replicated volume does not shrink (the data past the "
                              "new end would have to go on every copy at once)");
  // Checked here as every copy's pool will (alike in chunk size): a size no pool takes would
  // stay recorded, every node failing to grow to it.
  if (const uint64_t chunk = volumes_->pool()->chunk_bytes();
      size_bytes % Pool::kVolumeSizeAlign != 0 || size_bytes / chunk >= UINT32_MAX)
    return InvalidArgument("volume size " + std::to_string(size_bytes) +
                           ": a positive multiple of 4096 bytes below " +
                           std::to_string(chunk * uint64_t{UINT32_MAX}) + " is needed");
  if (size_bytes > spec.size) {
    // The copy here must take it too: a size this node's bounds refuse is not recorded (every
    // node then failing to grow to it). Other nodes' bounds are theirs (docs/pool_format.md).
    if (std::shared_ptr<VolumeHandle> h = volumes_->Find(name); h && !IsLocalVolume(name, *h))
      SPD_RETURN_IF_ERROR(
          FitsPool(volumes_, h->info().size_bytes, size_bytes, "resize volume " + name));
    SPD_RETURN_IF_ERROR(PutSpecField(cluster_->client(), name, spec, "size", size_bytes));
    resizes_total.Add();
    SPD_LOG_INFO("replication: %s: grows to %llu bytes on every copy", name.c_str(),
                 static_cast<unsigned long long>(size_bytes));
  }
  Poke();
  if (std::find(spec.nodes.begin(), spec.nodes.end(), cluster_->name()) == spec.nodes.end())
    return Status::Ok();
  if (PollUntil(std::chrono::seconds(15), [&] {
        std::shared_ptr<VolumeHandle> h = volumes_->Find(name);
        return h && h->info().size_bytes >= size_bytes;
      }))
    return Status::Ok();
  return Status(StatusCode::kDeadlineExceeded,
                "recorded in the cluster, but the copy here did not grow within 15 s: the "
                "primary grows its replicas in sync first, then its own copy, and a copy that "
                "is away grows when it connects again (the daemons' logs, spdctl replica list)");
}

bool ReplicationManager::GrowCopy(const std::string& name, uint64_t size_bytes, bool running) {
  std::string& logged = failure_logged_[name + "/grow"];
  auto failed = [&](const std::string& why) {
    grow_failures_total.Add();
    if (logged != why)  // once per reason: it is tried every round
      SPD_LOG_WARN("replication: %s: cannot grow to %llu bytes: %s", name.c_str(),
                   static_cast<unsigned long long>(size_bytes), why.c_str());
    logged = why;
    return false;
  };
  if (running) {
    ReplicaSet* set = nullptr;
    Volume* v = nullptr;
    if (!ServingSet(name, &set, &v)) return false;
    // The answer may come after this call gave up waiting: the promise is shared.
    auto answer = std::make_shared<std::promise<int32_t>>();
    std::future<int32_t> f = answer->get_future();
    RunOnAndWait(v->owner(), [set, size_bytes, answer] {
      set->Grow(size_bytes, [answer](int32_t r) { answer->set_value(r); });
    });
    // The kGrow waits for the acks (ack_timeout_ms), and a replica that fails for its mark.
    if (f.wait_for(std::chrono::milliseconds(2 * o_.ack_timeout_ms)) != std::future_status::ready)
      return failed("the replicas did not answer the grow within " +
                    std::to_string(2 * o_.ack_timeout_ms) + " ms");
    if (const int32_t r = f.get(); r != 0)
      return failed(std::string("the replicas' grow failed: ") + std::strerror(-r));
  }
  if (Status s = ResizeLocal(volumes_, name, size_bytes); !s.ok())
    return failed("this node's copy: " + s.ToString());
  failure_logged_.erase(name + "/grow");
  copies_grown_total.Add();
  SPD_LOG_INFO("replication: %s: the copy here grew to %llu bytes%s", name.c_str(),
               static_cast<unsigned long long>(size_bytes),
               running ? " (after its replicas in sync)" : " (before it serves)");
  if (o_.on_event)
    o_.on_event(false, name,
                "volume grew to " + std::to_string(size_bytes) + " bytes on node " +
                    cluster_->name() + (running ? ", the primary" : ""));
  return true;
}

}  // namespace spd
