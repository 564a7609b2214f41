// Deleting a replicated volume on every node (ReplicationManager::Delete; docs/replication.md,
// "Deleting a replicated volume").
//
// The call marks the volume's spec "deleting" (a transaction on the spec's mod revision). From
// then on no node creates, guards, campaigns for or serves the volume: each placed node, at its
// next reconciliation, steps down if it is the primary, deletes its copy (forced: the NBD
// connections and the replica session that use it are closed), removes the copy's replication
// state (DATA_DIR/replication/NAME.*: its spec, activity record and log, the dirty maps it kept
// as a primary) and records NAME/deleted/NODE. A node that is down does its part when it comes
// back. Once every placed node has, any node removes the volume's keys (a transaction on the
// spec's mod revision again); the name can then be used again. Until then a create of the name
// is refused and `spdctl replica list` shows the volume with each copy "deleting" or "deleted".
#include <sys/stat.h>
#include <unistd.h>
#include <algorithm>
#include <chrono>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/counters.h"
#include "common/file_util.h"
#include "common/log.h"
#include "replica/activity_log.h"
#include "replica/dirty_map.h"
#include "replica/replication_manager.h"
#include "replica/replication_manager_internal.h"

namespace spd {
namespace {

Counter deletes_total("spd_replication_deletes_total",
                      "Replicated volumes this node marked deleted in the cluster (spdctl volume "
                      "delete)");
Counter copies_deleted_total("spd_replication_copies_deleted_total",
                             "Copies of replicated volumes deleted here because the volume was "
                             "deleted in the cluster");
Counter copy_delete_failures_total("spd_replication_copy_delete_failures_total",
                                   "Attempts to delete a copy of a volume deleted in the cluster "
                                   "that failed (its users did not close, its pool refused, its "
                                   "state files or etcd failed); each is tried again");

// What this node keeps on disk for `volume`'s replication (names as their writers make them:
// cluster_recovery.cc, dirty_map.cc, activity_log.h, replica_set.h). Missing files are fine.
Status RemoveReplicationFiles(const std::string& dir, const std::string& volume,
                              const std::vector<std::string>& nodes) {
  if (dir.empty()) return Status::Ok();
  std::vector<std::string> paths = {SpecPath(dir, volume), ActivityRecordPath(dir, volume),
                                    ActivityLogPath(dir, volume)};
  for (const std::string& n : nodes) paths.push_back(DirtyMapPath(dir, volume, n));
  for (const std::string& path : paths)
    if (!path.empty() && unlink(path.c_str()) != 0 && errno != ENOENT)
      return Status::FromErrno(errno, "remove " + path);
  return Status::Ok();
}

}  // namespace

bool SavedSpecExists(const std::string& dir, const std::string& volume) {
  struct stat st;
  return !dir.empty() && stat(SpecPath(dir, volume).c_str(), &st) == 0;
}

std::vector<std::string> SavedSpecNodes(const std::string& dir, const std::string& volume,
                                        const std::vector<std::string>& also) {
  std::vector<std::string> nodes;
  if (!dir.empty())
    if (Result<std::string> text = ReadFileText(SpecPath(dir, volume)); text.ok())
      nodes = NodesOf(nlohmann::json::parse(*text, nullptr, false));
  for (const std::string& n : also)
    if (std::find(nodes.begin(), nodes.end(), n) == nodes.end()) nodes.push_back(n);
  return nodes;
}

Status ReplicationManager::Delete(const std::string& name, bool force) {
  const PrefixMirror::Snapshot vols = mirror_->Get();
  if (!vols.listed) return Unavailable("the cluster's state is not known yet (etcd)");
  const Parsed p = Parse(vols);
  auto it = p.specs.find(name);
  if (it == p.specs.end()) {
    if (Replicated(name))  // not in etcd: its spec on disk
      return FailedPrecondition("'" + name +
                                "' is a replicated volume known here only from its saved spec, "
                                "not in etcd (etcd lost its data?): it is published again first");
    return NotFound("no replicated volume '" + name + "' in the cluster");
  }
  const Parsed::Spec& spec = it->second;
  const std::string me = cluster_->name();
  if (!spec.deleting) {
    if (!force) {
      auto prim = p.primaries.find(name);
      if (prim != p.primaries.end() && prim->second.node != me)
        return FailedPrecondition("the primary of '" + name + "' is node " + prim->second.node +
                                  ", where its clients are: delete it there, or force (its "
                                  "clients are closed)");
      if (std::shared_ptr<VolumeHandle> h = volumes_->Find(name); h && h->users() > 0)
        return FailedPrecondition("volume '" + name + "' has " + std::to_string(h->users()) +
                                  " open user(s) (connections); use force to close them and "
                                  "delete it anyway");
    }
    SPD_RETURN_IF_ERROR(PutSpecField(cluster_->client(), name, spec, "deleting", true));
    deletes_total.Add();
    SPD_LOG_INFO("replication: %s: deleted in the cluster: every node deletes its copy",
                 name.c_str());
    if (o_.on_event) o_.on_event(false, name, "deleted in the cluster by node " + me);
  }
  Poke();
  if (std::find(spec.nodes.begin(), spec.nodes.end(), me) == spec.nodes.end()) return Status::Ok();
  if (PollUntil(std::chrono::seconds(15), [&] { return volumes_->Find(name) == nullptr; }))
    return Status::Ok();
  return Status(StatusCode::kDeadlineExceeded,
                "deleted in the cluster, but the copy here is not gone after 15 s (spdctl "
                "replica list " +
                    name + "; the daemon's log says why)");
}

bool ReplicationManager::DropCopy(const std::string& name, const std::vector<std::string>& nodes) {
  StepDown(name);
  candidacy_since_.erase(name);
  recovery_ranks_.erase(name);
  saved_specs_.erase(name);
  auto failed = [&](const Status& s) {
    copy_delete_failures_total.Add();
    if (failure_logged_[name + "/delete"] != s.ToString())
      SPD_LOG_WARN("replication: %s: cannot delete the copy here yet: %s", name.c_str(),
                   s.ToString().c_str());
    failure_logged_[name + "/delete"] = s.ToString();
    return false;
  };
  std::shared_ptr<VolumeHandle> h = volumes_->Find(name);
  if (h && IsLocalVolume(name, *h)) h = nullptr;  // a local volume of the name: never deleted
  if (h) {
    // Not waited for here: a forced delete may wait up to its close timeout (10 s) for the
    // copy's users, and this thread serves every other volume's elections meanwhile.
    std::shared_ptr<CopyDelete>& cd = copy_deletes_[name];
    // One of an earlier copy under the name, done: this one was created after it.
    if (cd && cd->handle != h && cd->done.load(std::memory_order_acquire)) cd.reset();
    if (!cd) {
      cd = std::make_shared<CopyDelete>();
      cd->handle = h;
      volumes_->Delete(name, true, [cd](Status s) {
        cd->status = std::move(s);
        cd->done.store(true, std::memory_order_release);
      });
      return false;
    }
    if (!cd->done.load(std::memory_order_acquire)) return false;  // its users are being closed
    const Status s = cd->status;
    copy_deletes_.erase(name);  // done: a failed one starts again next round
    if (!s.ok() && s.code() != StatusCode::kNotFound) return failed(s);
  }
  // A delete that ended before this round saw it (the copy is gone) is forgotten here, so that
  // a copy created again under the name later starts a delete of its own.
  copy_deletes_.erase(name);
  if (Status s = RemoveReplicationFiles(o_.state_dir, name, nodes); !s.ok()) return failed(s);
  failure_logged_.erase(name + "/delete");
  return true;
}

bool ReplicationManager::FinishingDelete(const std::string& name,
                                         const std::vector<std::string>& placed) {
  auto it = copy_deletes_.find(name);
  if (it == copy_deletes_.end()) return false;
  if (!it->second->done.load(std::memory_order_acquire)) return true;
  const std::vector<std::string> nodes = SavedSpecNodes(o_.state_dir, name, placed);
  if (!DropCopy(name, nodes)) return true;
  SPD_LOG_INFO(
      "replication: %s: the earlier copy here is deleted (it was placed here again "
      "while it was being deleted): a new one is made",
      name.c_str());
  return false;
}

void ReplicationManager::DeleteCopy(const std::string& name, const Parsed& p) {
  const Parsed::Spec& spec = p.specs.at(name);
  const std::string me = cluster_->name();
  auto d = p.deleted.find(name);
  const auto done = [&](const std::string& node) {
    return d != p.deleted.end() && d->second.count(node) > 0;
  };
  const bool placed = std::find(spec.nodes.begin(), spec.nodes.end(), me) != spec.nodes.end();
  // Done here but the mirror does not show it yet: not again.
  auto mine = deleted_here_.find(name);
  const bool done_here = done(me) || (mine != deleted_here_.end() && mine->second == spec.rev);
  if (placed && !done_here) {
    if (!DropCopy(name, spec.nodes)) return;  // its users are being closed, or it failed
    const Result<int64_t> put =
        cluster_->client()->Put(std::string(kVolumesPrefix) + name + "/deleted/" + me, "{}");
    if (!put.ok()) {
      copy_delete_failures_total.Add();
      SPD_LOG_WARN("replication: %s: cannot record the copy's delete: %s", name.c_str(),
                   put.status().ToString().c_str());
      return;
    }
    deleted_here_[name] = spec.rev;
    copies_deleted_total.Add();
    SPD_LOG_INFO("replication: %s: the copy here is deleted", name.c_str());
    if (o_.on_event) o_.on_event(false, name, "node " + me + " deleted its copy");
    return;  // the mirror brings the key; the next round looks at the others
  }
  // A node that is down does its part when it is back; but a copy that was leaving in a live
  // move (ReplicationManager::Move) is not waited for: it deletes itself by its key.
  for (const std::string& n : spec.nodes)
    if (!done(n) && n != spec.moving_from) return;
  // Every copy is gone: the volume's keys go (unless its record changed meanwhile).
  const std::string key = std::string(kVolumesPrefix) + name;
  Txn txn;
  txn.compare.push_back(Compare::ModRevision(key, Compare::Op::kEqual, spec.rev));
  txn.then.push_back(TxnOp::Delete(key));
  txn.then.push_back(TxnOp::DeletePrefix(key + "/"));
  if (!spec.moving_from.empty() && !done(spec.moving_from))
    txn.then.push_back(TxnOp::Put(MovedPrefix(spec.moving_from) + name, "{}"));
  if (Result<TxnResult> r = cluster_->client()->Txn(txn); r.ok() && r->succeeded)
    SPD_LOG_INFO("replication: %s: every copy is deleted; its record in etcd is gone",
                 name.c_str());
}

}  // namespace spd
