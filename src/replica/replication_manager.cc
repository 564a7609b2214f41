#include "replica/replication_manager.h"

#include <algorithm>
#include <chrono>
#include <future>
#include <set>

#include <nlohmann/json.hpp>

#include "common/counters.h"
#include "common/log.h"
#include "common/os_util.h"
#include "replica/dirty_map.h"
#include "replica/replication_manager_internal.h"

namespace spd {
namespace {

Counter campaigns_total("spd_replication_campaigns_total",
                        "Campaigns for a replicated volume's primary (won or lost)");
Counter yields_total("spd_replication_candidacies_yielded_total",
                     "Asynchronous volumes: elections this copy left to a candidate with a "
                     "higher durable generation (counted at each look)");
// How long an asynchronous volume's copies stand as candidates before the freshest campaigns.
constexpr int kCandidacyMs = 1500;
Counter read_only_step_downs_total("spd_replication_read_only_step_downs_total",
                                   "Primaries this node gave up because its pool turned "
                                   "read-only (a failed commit)");
Counter campaigns_won_total("spd_replication_campaigns_won_total",
                            "Campaigns this node won: it became a volume's primary");
Counter local_volumes_kept_total("spd_replication_local_volumes_kept_total",
                                 "Replicated volumes placed on this node while a local volume of "
                                 "the same name was here: the local one is kept, no copy served "
                                 "(counted once per volume until it goes)");
Counter step_downs_total("spd_replication_step_downs_total",
                         "Primaries this node gave up (its key gone or another node's)");

}  // namespace

void RunOnAndWait(Reactor* r, std::function<void()> fn) {
  struct T : Task {
    std::function<void()> work;
    std::promise<void> done;
  } t;
  t.work = std::move(fn);
  std::future<void> f = t.done.get_future();
  t.fn = [](Task* x) {
    auto* self = static_cast<T*>(x);
    self->work();
    self->done.set_value();
  };
  r->Post(&t);
  f.wait();
}

Status FitsPool(VolumeManager* volumes, uint64_t old_size, uint64_t new_size,
                const std::string& what) {
  Pool* pool = volumes->pool();
  Status s;
  RunOnAndWait(pool->reactor(), [&] { s = pool->CheckGrowth(old_size, new_size, what); });
  return s;
}

Parsed Parse(const PrefixMirror::Snapshot& s) {
  Parsed p;
  const std::string prefix = kVolumesPrefix;
  for (const auto& [key, kv] : s.kvs) {
    const std::string rest = key.substr(prefix.size());
    const size_t slash = rest.find('/');
    const nlohmann::json j = nlohmann::json::parse(kv.value, nullptr, false);
    if (!j.is_object()) continue;
    if (slash == std::string::npos) {
      Parsed::Spec sp;
      sp.size = j.value("size", uint64_t{0});
      sp.replicas = j.value("replicas", uint32_t{0});
      const std::string d = j.value("durability", std::string("flush"));
      sp.durability = d == "sync"   ? Durability::kSync
                      : d == "none" ? Durability::kNone
                                    : Durability::kFlush;
      sp.async = d == "async";
      if (sp.async) sp.to_sync = j.value("to_sync", std::string());
      sp.recovered = j.value("recovered", false);
      sp.deleting = j.value("deleting", false);
      if (j.contains("moving") && j["moving"].is_object()) {
        sp.moving_from = j["moving"].value("from", std::string());
        sp.moving_to = j["moving"].value("to", std::string());
      }
      sp.json = kv.value;
      sp.rev = kv.mod_revision;
      sp.nodes = NodesOf(j);
      p.specs[rest] = sp;
      continue;
    }
    const std::string name = rest.substr(0, slash);
    const std::string sub = rest.substr(slash + 1);
    if (sub == "primary") {
      p.primaries[name] = {
          j.value("node", std::string()),
          static_cast<int64_t>(EpochOf(j.value("era", uint64_t{0}), kv.create_revision)),
          kv.create_revision, kv.lease};
    } else if (sub == "handover") {
      p.handovers[name] = j.value("to", std::string());
    } else if (sub == "given_up") {
      p.given_up[name] = NodesOf(j);
      p.given_up_rev[name] = kv.mod_revision;
    } else if (sub.rfind("candidates/", 0) == 0) {
      p.candidates[name][sub.substr(11)] = {j.value("epoch", uint64_t{0}),
                                            j.value("seq", uint64_t{0})};
      if (std::optional<CandidateRank> r = CandidateRank::FromJson(kv.value))
        p.ranks[name][sub.substr(11)] = *r;
    } else if (sub.rfind("deleted/", 0) == 0) {
      p.deleted[name].insert(sub.substr(8));
    } else if (sub.rfind("local/", 0) == 0) {
      p.locals[name].insert(sub.substr(6));
    } else if (sub.rfind("replicas/", 0) == 0) {
      p.states[name][sub.substr(9)] = {j.value("state", std::string()),
                                       j.value("epoch", uint64_t{0})};
    }
  }
  return p;
}

std::string ReplicationAddress(const PrefixMirror::Snapshot& nodes, const std::string& node) {
  auto it = nodes.kvs.find(std::string(kNodesPrefix) + node);
  if (it == nodes.kvs.end()) return "";
  const nlohmann::json j = nlohmann::json::parse(it->second.value, nullptr, false);
  return j.is_object() ? j.value("replication", std::string()) : std::string();
}

ReplicationManager::ReplicationManager(ClusterNode* cluster, VolumeManager* volumes,
                                       Dispatcher* dispatcher, ReplicationManagerOptions options)
    : cluster_(cluster), volumes_(volumes), dispatcher_(dispatcher), o_(options) {}

ReplicationManager::~ReplicationManager() {
  Stop();
  Release();
}

void ReplicationManager::QueueMark(Mark m) {
  std::unique_lock<std::mutex> l(mark_mu_);
  if (mark_stop_) {
    l.unlock();
    return m.done(false);
  }
  marks_.push_back(std::move(m));
  mark_cv_.notify_all();
}

void ReplicationManager::MarkLoop() {
  std::unique_lock<std::mutex> l(mark_mu_);
  while (true) {
    mark_cv_.wait(l, [&] { return mark_stop_ || !marks_.empty(); });
    if (marks_.empty()) return;  // stopping, nothing left
    Mark m = std::move(marks_.front());
    marks_.pop_front();
    if (mark_stop_) {
      l.unlock();
      m.done(false);
      l.lock();
      continue;
    }
    l.unlock();
    if (!PlacedInMirror(mirror_->Get(), m.volume, m.node)) {
      // Moved away (ReplicationManager::Move): it no longer counts and never campaigns, and a
      // state recorded for it now would outlive its copy.
      m.done(true);
      l.lock();
      continue;
    }
    Txn txn;
    txn.compare.push_back(
        Compare::CreateRevision(std::string(kVolumesPrefix) + m.volume + "/primary",
                                Compare::Op::kEqual, RevisionOf(m.epoch)));
    txn.then.push_back(TxnOp::Put(std::string(kVolumesPrefix) + m.volume + "/replicas/" + m.node,
                                  nlohmann::json{{"state", m.state}, {"epoch", m.epoch}}.dump()));
    Result<TxnResult> r = cluster_->client()->Txn(txn);
    m.done(r.ok() && r->succeeded);
    l.lock();
  }
}

void ReplicationManager::Start() {
  mark_thread_ = std::thread([this] {
    NameThisThread("spd-repl-marks");
    MarkLoop();
  });
  mirror_ = PrefixMirror::Start(cluster_->client(),
                                {kVolumesPrefix, std::chrono::milliseconds(500)}, [this] {
                                  std::lock_guard<std::mutex> l(mu_);
                                  changed_ = true;
                                  cv_.notify_all();
                                });
  moved_mirror_ = PrefixMirror::Start(
      cluster_->client(), {MovedPrefix(cluster_->name()), std::chrono::milliseconds(500)}, [this] {
        std::lock_guard<std::mutex> l(mu_);
        changed_ = true;
        cv_.notify_all();
      });
  thread_ = std::thread([this] {
    NameThisThread("spd-replication");
    Loop();
  });
}

void ReplicationManager::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stop_ && !thread_.joinable()) return;
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (mirror_) mirror_->Stop();
  if (moved_mirror_) moved_mirror_->Stop();
  std::vector<std::string> names;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (auto& [n, p] : primaries_) names.push_back(n);
  }
  for (const std::string& n : names) StepDown(n);
  {
    std::lock_guard<std::mutex> l(mark_mu_);
    mark_stop_ = true;
  }
  mark_cv_.notify_all();
  if (mark_thread_.joinable()) mark_thread_.join();  // unanswered marks get done(false)
}

void ReplicationManager::Release() {
  std::vector<std::unique_ptr<ReplicaSet>> sets;
  {
    std::lock_guard<std::mutex> l(mu_);
    sets.swap(closed_);
  }
  sets.clear();  // joins their connecting threads
}

void ReplicationManager::Loop() {
  std::unique_lock<std::mutex> l(mu_);
  while (!stop_) {
    changed_ = false;
    l.unlock();
    Reconcile();
    l.lock();
    cv_.wait_for(l, std::chrono::milliseconds(500), [&] { return stop_ || changed_; });
  }
  l.unlock();
  FailConversions();
}

bool ReplicationManager::IsLocalVolume(const std::string& name, const VolumeHandle& h) const {
  // A copy has its spec saved here (before it was created, or by an earlier process), or is
  // guarded or served as a copy by this process.
  Volume* v = h.volume();
  return !o_.state_dir.empty() && v != nullptr && v->replica_hook.load() == nullptr &&
         !SavedSpecExists(o_.state_dir, name);
}

bool ReplicationManager::LocalVolume(const std::string& name, const VolumeHandle& h) {
  if (!IsLocalVolume(name, h)) {
    if (!failure_logged_.empty()) failure_logged_.erase(name + "/local");
    return false;
  }
  std::string& logged = failure_logged_[name + "/local"];
  if (logged.empty()) {
    local_volumes_kept_total.Add();
    SPD_LOG_WARN(
        "replication: %s: a local volume of that name is here, not a copy of the "
        "replicated one: it is kept as it is and this node holds no copy (delete or "
        "rename the local volume, or move the copy elsewhere)",
        name.c_str());
    if (o_.on_event)
      o_.on_event(false, name,
                  "node " + cluster_->name() +
                      " holds a local volume of that name: no copy here until it goes");
  }
  logged = "local";
  return true;
}

void ReplicationManager::Guard(Volume* v) {
  void* want = static_cast<ReplicaHook*>(&guard_);
  void* cur = v->replica_hook.load();
  if (cur == nullptr) v->replica_hook.store(want);
}

void ReplicationManager::Reconcile() {
  const PrefixMirror::Snapshot snap = mirror_->Get();
  if (!snap.listed) return;
  if (!CheckCluster(snap)) return;
  const PrefixMirror::Snapshot nodes = cluster_->Nodes();
  const Parsed p = Parse(snap);
  SettleConversions(p);
  RunConversions();  // the next round acts on what they recorded (changed_)
  const std::string me = cluster_->name();
  // A primary whose volume is gone from etcd (etcd lost its data: the volume comes back, with
  // an election, once published again) stops.
  std::vector<std::string> gone;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& [name, prim] : primaries_)
      if (!p.specs.count(name)) gone.push_back(name);
  }
  for (const std::string& name : gone) {
    SPD_LOG_WARN("replication: %s: its record is gone from etcd: no longer the primary",
                 name.c_str());
    StepDown(name);
  }
  for (auto it = deleted_here_.begin(); it != deleted_here_.end();)  // the record is gone
    it = p.specs.count(it->first) ? std::next(it) : deleted_here_.erase(it);
  std::set<std::string> dropping;  // copies that moved away: deleted first
  DropMovedCopies(p, &dropping);
  for (const auto& [name, spec] : p.specs) {
    if (dropping.count(name)) continue;
    if (spec.deleting) {
      DeleteCopy(name, p);
      continue;
    }
    std::shared_ptr<VolumeHandle> h = volumes_->Find(name);
    const bool placed_here =
        std::find(spec.nodes.begin(), spec.nodes.end(), me) != spec.nodes.end();
    // A local volume of the name here, placed or not: the primaries place no copy here.
    const bool local = h && (placed_here ? LocalVolume(name, *h) : IsLocalVolume(name, *h));
    MarkLocal(name, p, local);
    if (!placed_here) continue;
    // An earlier copy here still being deleted (placed here again meanwhile): gone first.
    if (FinishingDelete(name, spec.nodes)) continue;
    if (local) continue;
    if (!o_.state_dir.empty() && saved_specs_[name] != spec.json) {
      // Kept on disk, to be published again if etcd loses its data.
      if (Status s = SaveSpec(o_.state_dir, name, spec.json); s.ok())
        saved_specs_[name] = spec.json;
      else
        SPD_LOG_WARN("replication: cannot keep the spec of %s: %s", name.c_str(),
                     s.ToString().c_str());
    }
    if (!h) {
      VolumeSpec vs;
      vs.name = name;
      vs.size_bytes = spec.size;
      vs.durability = spec.durability;
      const Status s = Await([&](std::function<void(Status)> cb) {
        volumes_->Create(vs, [cb = std::move(cb)](Result<std::shared_ptr<VolumeHandle>> r) {
          cb(r.ok() ? Status::Ok() : r.status());
        });
      });
      if (!s.ok()) {
        SPD_LOG_WARN("replication: cannot create the local copy of %s: %s", name.c_str(),
                     s.ToString().c_str());
        continue;
      }
      SPD_LOG_INFO("replication: created the local copy of %s (%llu bytes)", name.c_str(),
                   static_cast<unsigned long long>(spec.size));
      h = volumes_->Find(name);
      if (!h) continue;
    }
    Volume* v = h->volume();
    if (v == nullptr) continue;
    if (v->size_bytes() > spec.size) {  // the spec only grows: not a copy of this volume
      std::string& logged = failure_logged_[name + "/size"];
      if (logged.empty())
        SPD_LOG_WARN("replication: local volume %s is %llu bytes, the cluster's %llu: not served",
                     name.c_str(), static_cast<unsigned long long>(v->size_bytes()),
                     static_cast<unsigned long long>(spec.size));
      logged = "bigger";
      continue;
    }
    if (!failure_logged_.empty()) failure_logged_.erase(name + "/size");  // no string each round
    // Smaller: the volume grew (ReplicationManager::Resize). A replica grows on its primary's
    // word (a kGrow, or the hello of a bigger volume); the primary below.
    const bool smaller = v->size_bytes() < spec.size;
    // An asynchronous volume's copies are durable at FLUSH.
    if (const Durability want = spec.async ? Durability::kFlush : spec.durability;
        h->info().durability != want) {
      // Changed in the cluster (ReplicationManager::SetDurability): this copy follows.
      const std::string& vol = name;
      const Status s = Await([&](std::function<void(Status)> cb) {
        volumes_->SetDurability(vol, want, std::move(cb));
      });
      std::string& logged = failure_logged_[name + "/durability"];
      if (s.ok()) {
        SPD_LOG_INFO("replication: %s: the copy here is now of durability %s", name.c_str(),
                     DurabilityName(want));
        failure_logged_.erase(name + "/durability");
      } else if (logged != s.ToString()) {  // once per reason: it is tried every round
        SPD_LOG_WARN("replication: %s: cannot change the copy's durability to %s: %s", name.c_str(),
                     DurabilityName(want), s.ToString().c_str());
        logged = s.ToString();
      }
    }
    auto prim = p.primaries.find(name);
    const bool mine = prim != p.primaries.end() && prim->second.node == me &&
                      prim->second.lease == cluster_->lease_id();
    bool running = false;
    bool local_failed = false;
    bool read_only_checked = false;
    {
      std::lock_guard<std::mutex> l(mu_);
      auto it = primaries_.find(name);
      running = it != primaries_.end() &&
                it->second->set->epoch() == static_cast<uint64_t>(mine ? prim->second.epoch : 0);
      local_failed = running && it->second->set->local_failed();
      read_only_checked = running && it->second->set->read_only_checked();
    }
    const std::string candidacy = std::string(kVolumesPrefix) + name + "/candidates/" + me;
    if (prim != p.primaries.end()) {  // an election is over: this copy's candidacy goes
      candidacy_since_.erase(name);
      // Not while this node's lease ran out by its own clock: its view may be older than the
      // lease (a process stopped beyond it sees the primary of before and would delete what
      // stands for it now); its candidacy, bound to the lease, went with it anyway.
      if (auto c = p.candidates.find(name);
          c != p.candidates.end() && c->second.count(me) && cluster_->LeaseValid())
        (void)cluster_->client()->Delete(candidacy);
    }
    // A running set decides first whether its read-only pool lost what a replica in sync
    // holds (its next tick): until then this copy is not given up unmarked.
    const bool read_only = v->pool()->read_only() && (!running || read_only_checked);
    if (mine && (read_only || local_failed)) {
      // Its pool turned read-only (a commit failed: ENOSPC, EIO), or a write failed on its copy:
      // this copy can take no write, or no longer equals the replicas. It gives the volume up
      // (its key, under its epoch) so that an in-sync copy takes it; a copy that missed a
      // write, or whose pool will re-open without writes it acknowledged (local_failed), is
      // marked out of sync in the same transaction, so that it never campaigns before it is
      // resynced.
      if (read_only) read_only_step_downs_total.Add();
      SPD_LOG_ERROR("replication: %s: this node's %s: giving up the volume%s", name.c_str(),
                    read_only ? "pool is read-only" : "copy failed a write",
                    local_failed ? " (its copy marked out of sync)" : "");
      StepDown(name);
      Txn txn;
      const std::string key = std::string(kVolumesPrefix) + name + "/primary";
      txn.compare.push_back(Compare::CreateRevision(key, Compare::Op::kEqual, prim->second.rev));
      if (local_failed)
        txn.then.push_back(TxnOp::Put(
            std::string(kVolumesPrefix) + name + "/replicas/" + me,
            nlohmann::json{{"state", "out_of_sync"}, {"epoch", prim->second.epoch}}.dump()));
      txn.then.push_back(TxnOp::Delete(key));
      (void)cluster_->client()->Txn(txn);
      continue;
    }
    if (mine) {
      if (!running && smaller && !GrowCopy(name, spec.size, false)) continue;
      if (running && smaller) GrowCopy(name, spec.size, true);
      if (running) FollowPlacement(name, spec.nodes, nodes);
      if (running) FollowMode(name, p);
      if (running) ReplaceLocalHolders(name, p);
      if (running && !spec.moving_from.empty()) FinishMove(name, p);
      if (!running) {
        StepDown(name);
        auto st = p.states.find(name);
        CopyStates states = st != p.states.end() ? st->second : CopyStates{};
        if (states.empty() && spec.recovered && recovery_ranks_.count(name)) {
          // Won a recovered volume's election: the copies that held its term as this one did
          // count as in sync in it (cluster_recovery.h), so that they get the bounded resync.
          const uint64_t term = recovery_ranks_[name].at(me).epoch;
          std::string list;
          for (const std::string& n : InSyncByRank(recovery_ranks_[name], me)) {
            states[n] = {"in_sync", term};
            list += " " + n;
          }
          SPD_LOG_INFO("replication: %s: recovered volume: in sync in epoch %llu by their rank:%s",
                       name.c_str(), static_cast<unsigned long long>(term),
                       list.empty() ? " none" : list.c_str());
        }
        recovery_ranks_.erase(name);
        // Becoming synchronous (to_sync): its set starts so, and records it once settled.
        if (Status s = BecomePrimary(name, v, static_cast<uint64_t>(prim->second.epoch), spec.nodes,
                                     nodes, states, spec.async && spec.to_sync.empty());
            !s.ok())
          SPD_LOG_WARN("replication: %s: cannot serve as primary: %s", name.c_str(),
                       s.ToString().c_str());
      }
      {
        std::lock_guard<std::mutex> l(mu_);
        auto it = primaries_.find(name);
        if (it != primaries_.end() && !it->second->states_recorded && it->second->set->settled())
          RecordStates(name, it->second.get());
      }
      auto ho = p.handovers.find(name);
      if (ho != p.handovers.end() && ho->second == me) {
        // Done (it was handed to this node), but not from a view older than this node's lease
        // (see the candidacy above): a newer request to it would go unanswered.
        if (cluster_->LeaseValid())
          (void)cluster_->client()->Delete(std::string(kVolumesPrefix) + name + "/handover");
      } else if (ho != p.handovers.end()) {
        // Asked to hand the volume over: only to a copy that is in sync.
        auto st = p.states.find(name);
        const bool target_ok = st != p.states.end() && st->second.count(ho->second) &&
                               st->second.at(ho->second).first == "in_sync";
        if (target_ok) {
          SPD_LOG_INFO("replication: %s: handing the volume over to %s", name.c_str(),
                       ho->second.c_str());
          if (!Quiesce(name))
            SPD_LOG_WARN("replication: %s: no clean hand-over (the copies may need a resync)",
                         name.c_str());
          StepDown(name);
          Txn txn;
          const std::string key = std::string(kVolumesPrefix) + name + "/primary";
          txn.compare.push_back(
              Compare::CreateRevision(key, Compare::Op::kEqual, prim->second.rev));
          txn.then.push_back(TxnOp::Delete(key));
          (void)cluster_->client()->Txn(txn);
        }
      }
      continue;
    }
    StepDown(name);
    Guard(v);
    if (prim != p.primaries.end() || !cluster_->LeaseValid()) continue;
    // A handover to another node: leave the volume to it.
    if (auto ho = p.handovers.find(name); ho != p.handovers.end() && ho->second != me) continue;
    // No primary: campaign if this copy may hold the volume.
    auto st = p.states.find(name);
    bool eligible = false;
    if ((st == p.states.end() || st->second.empty()) && spec.recovered) {
      // Published again after etcd lost its data: the copies' disks decide.
      if (v->pool()->read_only()) continue;
      auto r = p.ranks.find(name);
      const std::map<std::string, CandidateRank> ranks =
          r != p.ranks.end() ? r->second : std::map<std::string, CandidateRank>{};
      auto g = p.given_up.find(name);
      const std::vector<std::string> voters = RecoveryVoters(
          spec.nodes, g != p.given_up.end() ? g->second : std::vector<std::string>{}, ranks);
      eligible = RecoveryCandidacy(name, v, voters, ranks);
      if (eligible) recovery_ranks_[name] = ranks;
    } else if (st == p.states.end() || st->second.empty()) {
      eligible = !spec.nodes.empty() && spec.nodes[0] == me;  // a new volume: its first node
    } else {
      auto mine_st = st->second.find(me);
      eligible = mine_st != st->second.end() && mine_st->second.first == "in_sync";
    }
    if (!eligible || v->pool()->read_only()) continue;
    // An asynchronous volume's in-sync copies may lag one another (within the lag bound): the
    // freshest takes it. Each stands with its durable generation (a key bound to its lease) for
    // kCandidacyMs; one that sees a candidate in sync with a higher generation leaves it the
    // volume.
    if (spec.async && p.states.count(name)) {
      const ReplicaGeneration g = v->generation();
      auto c = p.candidates.find(name);
      if (c == p.candidates.end() || !c->second.count(me)) {
        (void)cluster_->client()->Put(candidacy,
                                      nlohmann::json{{"epoch", g.epoch}, {"seq", g.seq}}.dump(),
                                      cluster_->lease_id());
        candidacy_since_[name] = std::chrono::steady_clock::now();
        continue;
      }
      auto since = candidacy_since_.try_emplace(name, std::chrono::steady_clock::now()).first;
      if (std::chrono::steady_clock::now() - since->second <
          std::chrono::milliseconds(kCandidacyMs))
        continue;
      // Every copy compares the generations the candidates published (its own too), so that
      // all decide alike; equal ones all campaign (the election's transaction picks one).
      const ReplicaGeneration mine_pub = c->second.at(me);
      bool fresher = false;
      for (const auto& [node, gen] : c->second) {
        auto ns = st->second.find(node);
        fresher |=
            node != me && gen > mine_pub && ns != st->second.end() && ns->second.first == "in_sync";
      }
      if (fresher) {
        yields_total.Add();
        continue;
      }
    }
    campaigns_total.Add();
    Result<TxnResult> r = cluster_->client()->Txn(CampaignTxn(name));
    if (r.ok() && r->succeeded) {
      campaigns_won_total.Add();
      SPD_LOG_INFO("replication: %s: this node is the primary now (epoch %lld)", name.c_str(),
                   static_cast<long long>(r->revision));
      std::lock_guard<std::mutex> l(mu_);
      changed_ = true;  // the mirror brings the key; act on it at once
    }
  }
}

Status ReplicationManager::BecomePrimary(const std::string& name, Volume* v, uint64_t epoch,
                                         const std::vector<std::string>& nodes,
                                         const PrefixMirror::Snapshot& nodes_snap,
                                         const CopyStates& states, bool async) {
  // The fence first, on this node's own copy: a deposed primary that still reaches it is refused.
  std::promise<int32_t> fenced;
  GenerationRecord rec;
  uint64_t fence_before = 0;  // the last term this copy took part in (PriorActivity)
  RunOnAndWait(v->pool()->reactor(), [&] {
    fence_before = v->fence_epoch();
    rec.generation = v->generation();
    rec.fence_epoch = epoch;
    rec.ctx = &fenced;
    rec.done = [](GenerationRecord* r) {
      static_cast<std::promise<int32_t>*>(r->ctx)->set_value(r->result);
    };
    v->pool()->RecordGeneration(v, &rec);
  });
  if (const int32_t rc = fenced.get_future().get(); rc != 0)
    return Status::FromErrno(-rc, "recording the fence");
  ReplicaSetOptions so;
  so.volume = name;
  so.epoch = epoch;
  so.base = v->generation();
  // After a failover: what this copy applied last in the previous term, and who else was in
  // sync then (only if this copy was too, in that same term).
  so.prior = PriorActivity(v, o_.state_dir, name, fence_before);
  auto in_term = [&](const std::string& n) {
    auto it = states.find(n);
    return it != states.end() && it->second.first == "in_sync" &&
           it->second.second == so.prior.epoch;
  };
  if (so.prior.complete && in_term(cluster_->name())) {
    for (const std::string& n : nodes)
      if (n != cluster_->name() && in_term(n)) so.prior_in_sync.push_back(n);
    so.prior_own_term = so.prior.primary;
  }
  so.state_dir = o_.state_dir;
  so.connect_timeout_ms = o_.connect_timeout_ms;
  so.ack_timeout_ms = o_.ack_timeout_ms;
  so.hold_timeout_ms = o_.hold_timeout_ms;
  so.resync_regions_inflight = o_.resync_regions_inflight;
  so.resync_region_bytes = o_.resync_region_bytes;
  so.activity_log_units = o_.activity_log_units;
  so.unbarriered_bytes = o_.unbarriered_bytes;
  so.inject_rtt_us = o_.inject_rtt_us;
  so.inject_loss_ppm = o_.inject_loss_ppm;
  so.inject_seed = o_.inject_seed ^ epoch;  // another stream for each primary term
  so.tls = o_.tls;
  so.async = async;
  so.async_lag_bytes = o_.async_lag_bytes;
  so.async_lag_ms = o_.async_lag_ms;
  for (const std::string& n : nodes)
    if (n != cluster_->name()) so.replicas.push_back({n, ReplicationAddress(nodes_snap, n)});
  ClusterNode* cluster = cluster_;
  so.lease_valid = [cluster] { return cluster->LeaseValid(); };
  // Off the reactor, on the marker thread: transactions under this epoch.
  so.mark_out_of_sync = [this, name, epoch](const std::string& node,
                                            std::function<void(bool)> done) {
    QueueMark({name, node, epoch, "out_of_sync", std::move(done)});
  };
  so.on_link_state = [this, name](const std::string& node, LinkStateView state,
                                  const std::string& why) {
    if (o_.on_event)
      o_.on_event(false, name,
                  "copy on " + node + ": " + state + (why.empty() ? "" : " (" + why + ")"));
  };
  so.resolve_address = [cluster](const std::string& node) {
    return ReplicationAddress(cluster->Nodes(), node);
  };
  so.mark_in_sync = [this, name, epoch](const std::string& node, std::function<void(bool)> done) {
    QueueMark({name, node, epoch, "in_sync", std::move(done)});
  };
  auto p = std::make_unique<Primary>();
  p->nodes = nodes;
  p->async = async;
  p->handle = volumes_->Find(name);
  p->volume = v;
  Status st;
  RunOnAndWait(v->owner(), [&] {
    Result<std::unique_ptr<ReplicaSet>> s = ReplicaSet::Start(dispatcher_, v, so);
    if (!s.ok()) {
      st = s.status();
      return;
    }
    p->set = std::move(*s);
    v->replica_hook.store(nullptr);  // the guard goes; the set takes over
    p->set->Attach();
  });
  if (!st.ok()) return st;
  if (o_.on_event)
    o_.on_event(
        true, name,
        "node " + cluster_->name() + " is the primary (epoch " + std::to_string(epoch) + ")");
  std::lock_guard<std::mutex> l(mu_);
  primaries_[name] = std::move(p);
  return Status::Ok();
}

void ReplicationManager::RecordStates(const std::string& name, Primary* p) {
  // REQUIRES: mu_ held. Writes in_sync for this node and every replica in sync, under the epoch.
  const uint64_t epoch = p->set->epoch();
  Txn txn;
  txn.compare.push_back(Compare::CreateRevision(std::string(kVolumesPrefix) + name + "/primary",
                                                Compare::Op::kEqual, RevisionOf(epoch)));
  auto put = [&](const std::string& node, const char* state) {
    txn.then.push_back(TxnOp::Put(std::string(kVolumesPrefix) + name + "/replicas/" + node,
                                  nlohmann::json{{"state", state}, {"epoch", epoch}}.dump()));
  };
  put(cluster_->name(), "in_sync");
  for (const ReplicaSet::LinkInfo& li : p->set->Links())
    if (li.state == ReplicaSet::LinkState::kInSync) put(li.name, "in_sync");
  Result<TxnResult> r = cluster_->client()->Txn(txn);
  p->states_recorded = r.ok();
}

bool ReplicationManager::ServingSet(const std::string& name, ReplicaSet** set, Volume** v) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = primaries_.find(name);
  if (it == primaries_.end()) return false;
  *set = it->second->set.get();
  *v = it->second->volume;
  return true;
}

bool ReplicationManager::Quiesce(const std::string& name) {
  ReplicaSet* set = nullptr;
  Volume* v = nullptr;
  if (!ServingSet(name, &set, &v)) return false;
  // The answer may come after this call gave up waiting: the promise is shared.
  auto answer = std::make_shared<std::promise<uint64_t>>();
  std::future<uint64_t> f = answer->get_future();
  RunOnAndWait(v->owner(),
               [set, answer] { set->Quiesce([answer](uint64_t seq) { answer->set_value(seq); }); });
  // Within the ack timeout: a promote waits 15 s for the whole hand-over.
  if (f.wait_for(std::chrono::milliseconds(o_.ack_timeout_ms)) != std::future_status::ready) {
    SPD_LOG_WARN("replication: %s: the hand-over's final barrier got no answer within %llu ms",
                 name.c_str(), static_cast<unsigned long long>(o_.ack_timeout_ms));
    return false;
  }
  const uint64_t seq = f.get();
  if (seq == 0) {
    SPD_LOG_WARN("replication: %s: the hand-over's final barrier failed (closing or deposed)",
                 name.c_str());
    return false;
  }
  // Every in-sync replica recorded (epoch, seq) with nothing after it: so does this copy.
  std::promise<int32_t> recorded;
  GenerationRecord rec;
  RunOnAndWait(v->pool()->reactor(), [&] {
    rec.generation = {set->epoch(), seq};
    rec.fence_epoch = set->epoch();
    rec.ctx = &recorded;
    rec.done = [](GenerationRecord* r) {
      static_cast<std::promise<int32_t>*>(r->ctx)->set_value(r->result);
    };
    v->pool()->RecordGeneration(v, &rec);
  });
  if (recorded.get_future().get() != 0) return false;
  v->applied_after_generation.store(Volume::Applied::kClean);
  SPD_LOG_INFO("replication: %s: quiesced at generation (%llu, %llu) for the hand-over",
               name.c_str(), static_cast<unsigned long long>(set->epoch()),
               static_cast<unsigned long long>(seq));
  return true;
}

void ReplicationManager::StepDown(const std::string& name) {
  std::unique_ptr<Primary> p;
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = primaries_.find(name);
    if (it == primaries_.end()) return;
    p = std::move(it->second);
    primaries_.erase(it);
  }
  step_downs_total.Add();
  if (o_.on_event)
    o_.on_event(true, name,
                "node " + cluster_->name() + " is no longer the primary (epoch " +
                    std::to_string(p->set->epoch()) + ")");
  SPD_LOG_INFO("replication: %s: no longer the primary (epoch %llu)", name.c_str(),
               static_cast<unsigned long long>(p->set->epoch()));
  ReplicaSet* set = p->set.get();
  Volume* v = p->volume;
  WriteGuard* guard = &guard_;
  RunOnAndWait(v->owner(), [set, v, guard] {
    set->Detach();
    set->Close();
    v->replica_hook.store(static_cast<ReplicaHook*>(guard));
  });
  std::lock_guard<std::mutex> l(mu_);
  closed_.push_back(std::move(p->set));
}

}  // namespace spd
