// ReplicaSet::SetReplicas (replica_set.h): the set's replicas change while it serves, when a
// copy moves to another node (ReplicationManager::Move; docs/replication.md, "Moving a copy").
// The placement in etcd changes first, so a link removed here no longer counts anywhere: it
// stops counting at once, with no out-of-sync mark. A new link starts out of sync with no map:
// the resync copies the whole volume to it (allocated space only) as for any copy that lost its
// map, and marks it in sync once done.
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "common/counters.h"
#include "common/log.h"
#include "replica/replica_set.h"
#include "replica/replica_set_internal.h"

namespace spd {
namespace {

Counter links_added_total("spd_replication_links_added_total",
                          "Links a primary added while it served (a copy moved to a new node)");
Counter links_removed_total("spd_replication_links_removed_total",
                            "Links a primary removed while it served (a copy moved away)");

}  // namespace

void ReplicaSet::RemoveMapFile(const std::string& node) {
  const std::string path = DirtyMapPath(o_.state_dir, o_.volume, node);
  if (!o_.state_dir.empty() && !path.empty() && unlink(path.c_str()) != 0 && errno != ENOENT)
    SPD_LOG_WARN("replication: volume %s: cannot remove %s: %m", o_.volume.c_str(), path.c_str());
}

void ReplicaSet::RemoveLink(Link* l) {
  l->removed = true;
  // Nothing to mark: requests held for its mark are not any more.
  marks_pending_ &= ~l->bit();
  {
    std::lock_guard<std::mutex> g(info_mu_);
    l->info.marked = true;
  }
  l->resync_at_mark = false;
  // No failure and no mark: no longer placed, what it misses from now on counts nowhere.
  if (l->info.state != LinkState::kOutOfSync && l->info.state != LinkState::kDeposedUs)
    StopCounting(l, LinkState::kOutOfSync, "no longer placed here: the copy moved to another node");
  // Out of sync already, but a resync hello may have connected it.
  if (ShutLink(l)) ReleaseFd(l);
  l->retry_at_ns = 0;
  l->DropUnbarriered();
  l->dirty = DirtyMap();  // its file's mapping goes, then the file
  RemoveMapFile(l->target.name);
  links_removed_total.Add();
  SPD_LOG_INFO("replication: volume %s: the copy on %s is no longer placed: its link is gone",
               o_.volume.c_str(), l->target.name.c_str());
  CheckSettled();
  CompleteAll();
}

int ReplicaSet::SetReplicas(const std::vector<ReplicaTarget>& targets) {
  if (stopping_ || deposed_) return -EIO;
  auto wanted = [&](const std::string& name) {
    return std::any_of(targets.begin(), targets.end(),
                       [&](const ReplicaTarget& t) { return t.name == name; });
  };
  for (auto& l : links_)
    if (!l->removed && !wanted(l->target.name)) RemoveLink(l.get());
  for (const ReplicaTarget& t : targets) {
    if (std::any_of(links_.begin(), links_.end(), [&](const std::unique_ptr<Link>& l) {
          return !l->removed && l->target.name == t.name;
        }))
      continue;
    size_t index = links_.size();
    if (index >= kReplicasMax) {
      index = kReplicasMax;
      for (size_t i = 0; i < links_.size() && index == kReplicasMax; ++i)
        if (SlotFree(*links_[i])) index = i;
      if (index == kReplicasMax) return -EBUSY;
    }
    // A map file of this node left from an earlier copy there describes a copy that is gone.
    RemoveMapFile(t.name);
    std::unique_ptr<Link> l = MakeLink(index, t);
    l->dirty.Invalidate();  // a new copy: the whole volume
    {
      std::lock_guard<std::mutex> g(info_mu_);
      l->info.marked = true;  // it never counted (etcd records it out of sync)
    }
    l->SetState(LinkState::kOutOfSync, "a new copy: it is copied whole");
    l->retry_at_ns = MonotonicNs();  // the next tick connects it for its resync
    WakeTick();
    if (index < links_.size() && links_[index]->connector.joinable())
      links_[index]->connector.join();
    {
      std::lock_guard<std::mutex> g(info_mu_);  // Links() reads the vector from any thread
      if (index == links_.size()) {
        links_.push_back(std::move(l));
      } else {
        links_[index] = std::move(l);
      }
    }
    links_added_total.Add();
    SPD_LOG_INFO("replication: volume %s: a new copy on %s (%s): resynced whole", o_.volume.c_str(),
                 t.name.c_str(), t.address.c_str());
  }
  return 0;
}

}  // namespace spd
