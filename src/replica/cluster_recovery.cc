#include "replica/cluster_recovery.h"

#include <dirent.h>

#include <algorithm>

#include <nlohmann/json.hpp>

#include "common/file_util.h"
#include "common/os_util.h"

namespace spd {
namespace {

constexpr const char* kIdentityFile = "/cluster.json";
constexpr const char* kSpecSuffix = ".spec";

std::string IdentityJson(const ClusterIdentity& c) {
  return nlohmann::json{{"id", c.id}, {"era", c.era}, {"nonce", c.nonce}}.dump();
}

std::optional<ClusterIdentity> ParseIdentity(const std::string& text) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_object() || !j.contains("id") || !j["id"].is_string()) return std::nullopt;
  ClusterIdentity c;
  c.id = j["id"].get<std::string>();
  c.era = j.value("era", uint64_t{0});
  c.nonce = j.value("nonce", std::string());
  if (c.id.empty() || c.era >= (uint64_t{1} << (64 - kEraShift))) return std::nullopt;
  return c;
}

}  // namespace

std::optional<ClusterIdentity> LoadIdentity(const std::string& state_dir) {
  Result<std::string> t = ReadFileText(state_dir + kIdentityFile);
  if (!t.ok()) return std::nullopt;
  return ParseIdentity(*t);
}

Status SaveIdentity(const std::string& state_dir, const ClusterIdentity& id) {
  return WriteFileAtomic(state_dir + kIdentityFile, IdentityJson(id) + "\n");
}

Result<IdentityCheck> CheckIdentity(EtcdClient* etcd, const std::string& state_dir,
                                    uint64_t max_fence_era) {
  const std::optional<ClusterIdentity> disk = LoadIdentity(state_dir);
  for (int attempt = 0; attempt < 8; ++attempt) {
    SPD_ASSIGN_OR_RETURN(GetResult g, etcd->Get(kClusterKey));
    IdentityCheck out;
    if (g.kv) {
      std::optional<ClusterIdentity> cur = ParseIdentity(g.kv->value);
      if (!cur) return DataLoss("etcd's " + std::string(kClusterKey) + " is not an identity");
      out.current = *cur;
      out.key_mod_revision = g.kv->mod_revision;
      if (disk && disk->id != cur->id) {
        out.foreign = true;
        return out;
      }
      // Known already, or this node's first look (nothing of the cluster on its disk yet):
      // nothing to publish again. Another nonce: etcd was re-created since this node looked.
      out.republish = disk && disk->nonce != cur->nonce;
      // After a republish the caller saves it (a crash before that publishes again).
      if (!out.republish && (!disk || *disk != *cur))
        SPD_RETURN_IF_ERROR(SaveIdentity(state_dir, *cur));
      return out;
    }
    // No key: a new cluster (nothing on this disk), or etcd lost its data (this node knew it).
    ClusterIdentity next;
    next.id = disk ? disk->id : RandomHex(16);
    // After a loss the era goes past every one this node knows; a new cluster starts at 0 (its
    // epochs are etcd's revisions), unless this disk holds fences of an era already.
    if (disk)
      next.era = std::max(disk->era, max_fence_era) + 1;
    else
      next.era = max_fence_era == 0 ? 0 : max_fence_era + 1;
    next.nonce = RandomHex(8);
    Txn txn;
    txn.compare.push_back(Compare::CreateRevision(kClusterKey, Compare::Op::kEqual, 0));
    txn.then.push_back(TxnOp::Put(kClusterKey, IdentityJson(next)));
    SPD_ASSIGN_OR_RETURN(TxnResult r, etcd->Txn(txn));
    if (!r.succeeded) continue;  // another node made it first: read theirs
    if (!disk) SPD_RETURN_IF_ERROR(SaveIdentity(state_dir, next));
    out.current = next;
    out.key_mod_revision = r.revision;
    out.created = true;
    out.republish = disk.has_value();
    return out;
  }
  return Unavailable("the cluster's identity key kept changing");
}

Result<IdentityCheck> RaiseEra(EtcdClient* etcd, const std::string& state_dir, uint64_t era) {
  for (int attempt = 0; attempt < 8; ++attempt) {
    SPD_ASSIGN_OR_RETURN(GetResult g, etcd->Get(kClusterKey));
    if (!g.kv) return Unavailable("no cluster identity in etcd");
    std::optional<ClusterIdentity> cur = ParseIdentity(g.kv->value);
    if (!cur) return DataLoss("etcd's " + std::string(kClusterKey) + " is not an identity");
    IdentityCheck out;
    out.current = *cur;
    out.key_mod_revision = g.kv->mod_revision;
    if (cur->era > era) {
      SPD_RETURN_IF_ERROR(SaveIdentity(state_dir, *cur));
      return out;
    }
    ClusterIdentity next = *cur;
    next.era = era + 1;
    Txn txn;
    txn.compare.push_back(
        Compare::ModRevision(kClusterKey, Compare::Op::kEqual, g.kv->mod_revision));
    txn.then.push_back(TxnOp::Put(kClusterKey, IdentityJson(next)));
    SPD_ASSIGN_OR_RETURN(TxnResult r, etcd->Txn(txn));
    if (!r.succeeded) continue;
    SPD_RETURN_IF_ERROR(SaveIdentity(state_dir, next));
    out.current = next;
    out.key_mod_revision = r.revision;
    return out;
  }
  return Unavailable("the cluster's identity key kept changing");
}

std::string SpecPath(const std::string& state_dir, const std::string& volume) {
  return state_dir + "/" + volume + kSpecSuffix;
}

Status SaveSpec(const std::string& state_dir, const std::string& volume, const std::string& json) {
  const std::string path = SpecPath(state_dir, volume);
  Result<std::string> cur = ReadFileText(path);
  if (cur.ok() && *cur == json + "\n") return Status::Ok();
  return WriteFileAtomic(path, json + "\n");
}

std::map<std::string, std::string> LoadSpecs(const std::string& state_dir) {
  std::map<std::string, std::string> out;
  DIR* d = opendir(state_dir.c_str());
  if (d == nullptr) return out;
  const std::string suffix = kSpecSuffix;
  while (const dirent* e = readdir(d)) {
    const std::string n = e->d_name;
    if (n.size() <= suffix.size() || n.compare(n.size() - suffix.size(), suffix.size(), suffix))
      continue;
    Result<std::string> t = ReadFileText(state_dir + "/" + n);
    if (!t.ok()) continue;
    const nlohmann::json j = nlohmann::json::parse(*t, nullptr, false);
    if (j.is_object()) out[n.substr(0, n.size() - suffix.size())] = j.dump();
  }
  closedir(d);
  return out;
}

std::string CandidateRank::ToJson() const {
  return nlohmann::json{
      {"epoch", epoch}, {"seq", seq}, {"whole", whole}, {"primary", primary}, {"first", first}}
      .dump();
}

std::optional<CandidateRank> CandidateRank::FromJson(const std::string& json) {
  const nlohmann::json j = nlohmann::json::parse(json, nullptr, false);
  if (!j.is_object() || !j.contains("whole")) return std::nullopt;  // not a recovery candidacy
  CandidateRank r;
  r.epoch = j.value("epoch", uint64_t{0});
  r.seq = j.value("seq", uint64_t{0});
  r.whole = j.value("whole", false);
  r.primary = j.value("primary", false);
  r.first = j.value("first", uint64_t{0});
  return r;
}

CandidateRank RankOf(const ReplicaActivity::Snapshot& a, ReplicaGeneration durable) {
  CandidateRank r;
  if (a.epoch != 0 && a.epoch >= durable.epoch) {
    r.epoch = a.epoch;
    r.whole = !a.resyncing && !a.spoiled;
    r.seq = a.max_seq;
    if (durable.epoch == a.epoch) r.seq = std::max(r.seq, durable.seq);
    r.primary = a.primary;
    r.first = a.first_seq;
  } else {
    // No record of the term (lost, or from a version that kept none): only the durable
    // generation, which vouches for less than a whole term.
    r.epoch = durable.epoch;
    r.seq = durable.seq;
  }
  return r;
}

std::vector<std::string> RecoveryVoters(const std::vector<std::string>& placed,
                                        const std::vector<std::string>& given_up,
                                        const std::map<std::string, CandidateRank>& candidates) {
  std::vector<std::string> out;
  for (const std::string& n : placed)
    if (candidates.count(n) || std::find(given_up.begin(), given_up.end(), n) == given_up.end())
      out.push_back(n);
  return out;
}

std::string ChooseRecoveryWinner(const std::map<std::string, CandidateRank>& candidates,
                                 const std::vector<std::string>& placed) {
  std::string best;
  for (const std::string& n : placed) {
    auto it = candidates.find(n);
    if (it == candidates.end()) return "";
    if (best.empty() || it->second.Key() > candidates.at(best).Key() ||
        (it->second.Key() == candidates.at(best).Key() && n < best))
      best = n;
  }
  return best;
}

std::vector<std::string> InSyncByRank(const std::map<std::string, CandidateRank>& candidates,
                                      const std::string& winner) {
  std::vector<std::string> out;
  auto w = candidates.find(winner);
  if (w == candidates.end() || !w->second.primary || !w->second.whole || w->second.epoch == 0)
    return out;
  for (const auto& [node, r] : candidates)
    if (node == winner ||
        (r.epoch == w->second.epoch && r.whole && !r.primary &&
         (r.seq == w->second.seq ||
          (w->second.first != 0 && r.seq < w->second.seq && w->second.first <= r.seq + 1))))
      out.push_back(node);
  return out;
}

}  // namespace spd
