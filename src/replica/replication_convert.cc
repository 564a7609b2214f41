// A local volume made replicated while it serves (`spdctl volume set-replicas NAME N` on the node
// that holds it; docs/replication.md, "Making a local volume replicated").
//
// The call (the replication calls' thread) queues the change for the reconciling thread and
// waits. That thread checks the volume again, writes the new spec on disk first (below), then
// records in one transaction, only if the name is new to the cluster: the spec (this node
// first, then the N-1 nodes holding the fewest copies), this copy in sync, every other copy out
// of sync (none campaigns before it holds the volume), and this node's primary key, bound to
// its lease, as its election does (CampaignTxn: under the cluster's identity it read). So no
// election and no write guard come between the record and the primary: the volume's clients go on
// writing, to this copy only until the primary's set is on it, and the set then copies the
// volume whole (allocated space only) to every other copy and marks each in sync, as for a new
// copy of set-replicas.
//
// The spec is first written beside the copy's spec file (NAME.spec.converting; recovery does not
// publish it), and becomes NAME.spec only once the transaction succeeded: a crash in between
// must not leave a spec that a node would publish again as if etcd had lost it (the election
// of a recovered volume would then rank this volume's copy as the fresh, empty others, and a
// tie could go to one of them). At the first round after a start, a leftover file is settled:
// the conversion was recorded (the record places this node first): the spec is saved;
// else the file goes and the volume stays local. A failed transaction takes the file back.
#include <dirent.h>
#include <unistd.h>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <future>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/counters.h"
#include "common/file_util.h"
#include "common/log.h"
#include "replica/cluster_recovery.h"
#include "replica/replication_manager.h"
#include "replica/replication_manager_internal.h"

namespace spd {
namespace {

Counter conversions_total("spd_replication_conversions_total",
                          "Local volumes this node made replicated (spdctl volume set-replicas "
                          "on a local volume)");
Counter conversion_failures_total("spd_replication_conversion_failures_total",
                                  "Local volumes this node was asked to make replicated and did "
                                  "not (refused, or the record failed)");
constexpr size_t kConversionsQueuedMax = 16;
constexpr char kConvertingSuffix[] = ".converting";

std::string ConvertingPath(const std::string& dir, const std::string& volume) {
  return SpecPath(dir, volume) + kConvertingSuffix;
}

void RemoveConverting(const std::string& dir, const std::string& volume) {
  const std::string path = ConvertingPath(dir, volume);
  if (unlink(path.c_str()) != 0 && errno != ENOENT)
    SPD_LOG_WARN("replication: %s: cannot remove %s: %s", volume.c_str(), path.c_str(),
                 strerror(errno));
}

}  // namespace

void ReplicationManager::SettleConversions(const Parsed& p) {
  if (conversions_settled_ || o_.state_dir.empty()) return;
  conversions_settled_ = true;
  std::vector<std::string> names;
  if (DIR* d = opendir(o_.state_dir.c_str())) {
    const std::string suffix = std::string(".spec") + kConvertingSuffix;
    while (const dirent* e = readdir(d)) {
      const std::string n = e->d_name;
      if (n.size() > suffix.size() &&
          n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0)
        names.push_back(n.substr(0, n.size() - suffix.size()));
    }
    closedir(d);
  }
  const std::string me = cluster_->name();
  for (const std::string& name : names) {
    auto spec = p.specs.find(name);
    // Placed first by this node's conversion (a create here would have been refused: the
    // volume was local), whatever became of its copy since.
    const bool recorded =
        spec != p.specs.end() && !spec->second.nodes.empty() && spec->second.nodes[0] == me;
    if (recorded) {
      if (Status s = SaveSpec(o_.state_dir, name, spec->second.json); !s.ok()) {
        SPD_LOG_WARN("replication: %s: cannot keep the spec of a conversion: %s", name.c_str(),
                     s.ToString().c_str());
        continue;  // the file stays: settled at the next start
      }
    }
    RemoveConverting(o_.state_dir, name);
    SPD_LOG_INFO(
        "replication: %s: a conversion cut short by a stop was %s", name.c_str(),
        recorded ? "recorded: the volume is replicated" : "not recorded: the volume stays local");
  }
}

Status ReplicationManager::Convert(const std::string& name, uint32_t replicas) {
  auto c = std::make_shared<Conversion>();
  c->name = name;
  c->replicas = replicas;
  std::future<Status> answer = c->done.get_future();
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stop_) return Unavailable("the replication manager is stopping");
    if (conversions_.size() >= kConversionsQueuedMax)
      return ResourceExhausted("too many conversions queued; try again later");
    conversions_.push_back(c);
    changed_ = true;
  }
  cv_.notify_all();
  if (answer.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
    // Still queued (the thread waits for etcd's state): taken back, so that it is not done
    // later behind the caller's back.
    std::lock_guard<std::mutex> l(mu_);
    for (auto it = conversions_.begin(); it != conversions_.end(); ++it) {
      if (*it != c) continue;
      conversions_.erase(it);
      conversion_failures_total.Add();
      return Unavailable("the conversion of '" + name +
                         "' did not start within 10 s (the cluster's state is not known: etcd?); "
                         "nothing was done");
    }
    return Status(StatusCode::kDeadlineExceeded,
                  "the conversion of '" + name +
                      "' was not answered within 10 s (it may still be done: spdctl replica list)");
  }
  if (Status s = answer.get(); !s.ok()) {
    conversion_failures_total.Add();
    return s;
  }
  // Answered once the set is on the volume: its writes are replicated from then on.
  if (PollUntil(std::chrono::seconds(10), [&] {
        std::lock_guard<std::mutex> l(mu_);
        return primaries_.count(name) > 0;
      }))
    return Status::Ok();
  return Status(StatusCode::kDeadlineExceeded,
                "'" + name +
                    "' is recorded replicated, but this node did not serve it as the primary "
                    "within 10 s (see its log)");
}

void ReplicationManager::RunConversions() {
  std::vector<std::shared_ptr<Conversion>> todo;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (conversions_.empty()) return;
    todo.swap(conversions_);
  }
  for (const std::shared_ptr<Conversion>& c : todo)
    c->done.set_value(DoConvert(c->name, c->replicas));
}

void ReplicationManager::FailConversions() {
  std::vector<std::shared_ptr<Conversion>> todo;
  {
    std::lock_guard<std::mutex> l(mu_);
    todo.swap(conversions_);
  }
  for (const std::shared_ptr<Conversion>& c : todo)
    c->done.set_value(Unavailable("the replication manager stopped"));
}

Status ReplicationManager::DoConvert(const std::string& name, uint32_t replicas) {
  const std::string me = cluster_->name();
  const Parsed p = Parse(mirror_->Get());  // with what conversions before it recorded
  if (p.specs.count(name))
    return AlreadyExists("'" + name + "' is a replicated volume of the cluster already");
  std::shared_ptr<VolumeHandle> h = volumes_->Find(name);
  if (!h || h->volume() == nullptr) return NotFound("no volume '" + name + "' on this node");
  if (o_.state_dir.empty()) return FailedPrecondition("this node keeps no replication state");
  if (!IsLocalVolume(name, *h))
    return FailedPrecondition("'" + name +
                              "' here is a copy of a replicated volume the cluster's record "
                              "does not hold now (etcd lost its data?): it is published again "
                              "first");
  const VolumeInfo info = h->info();
  if (info.read_only)
    return FailedPrecondition("'" + name +
                              "' is read-only: a replicated volume takes its primary's writes "
                              "on every copy");
  if (h->volume()->pool()->read_only()) return FailedPrecondition("this node's pool is read-only");
  if (!cluster_->LeaseValid()) return Unavailable("this node's lease is not valid now");
  const PrefixMirror::Snapshot nodes = cluster_->Nodes();
  SPD_ASSIGN_OR_RETURN(const std::vector<std::string> placed,
                       PlaceNew(nodes, p, me, cluster_->info_json(), replicas));
  const std::string spec =
      NewSpecJson(info.size_bytes, replicas, placed, DurabilityName(info.durability));
  // Kept first (not as a spec recovery publishes): settled after a crash (SettleConversions).
  if (Status s = WriteFileAtomic(ConvertingPath(o_.state_dir, name), spec + "\n"); !s.ok())
    return s;
  const std::string key = std::string(kVolumesPrefix) + name;
  Txn txn = CampaignTxn(name);
  txn.compare.push_back(Compare::CreateRevision(key, Compare::Op::kEqual, 0));
  txn.then.push_back(TxnOp::Put(key, spec));
  txn.then.push_back(TxnOp::Put(key + "/replicas/" + me,
                                nlohmann::json{{"state", "in_sync"}, {"epoch", 0}}.dump()));
  for (size_t i = 1; i < placed.size(); ++i) JoinOps(name, placed[i], 0, &txn);
  Result<TxnResult> r = cluster_->client()->Txn(txn);
  if (!r.ok() || !r->succeeded) {
    RemoveConverting(o_.state_dir, name);
    if (!r.ok()) return r.status();
    return Status(StatusCode::kAborted,
                  "the cluster's record changed meanwhile (the name taken, "
                  "or the cluster's identity): try again");
  }
  // The copy's spec now: from here on the volume is this node's copy (IsLocalVolume).
  if (Status s = SaveSpec(o_.state_dir, name, spec); !s.ok())
    SPD_LOG_WARN(
        "replication: %s: cannot keep the spec of the conversion (settled at the next "
        "start): %s",
        name.c_str(), s.ToString().c_str());
  else
    RemoveConverting(o_.state_dir, name);
  conversions_total.Add();
  std::string list;
  for (size_t i = 1; i < placed.size(); ++i) list += " " + placed[i];
  SPD_LOG_INFO(
      "replication: %s: the local volume is replicated now (%u copies): "
      "this node its primary, copied whole to:%s",
      name.c_str(), replicas, list.c_str());
  if (o_.on_event)
    o_.on_event(true, name,
                "the local volume of node " + me + " is replicated now (" +
                    std::to_string(replicas) + " copies): copied whole to" + list);
  AwaitMirror(r->revision);
  return Status::Ok();
}

}  // namespace spd
