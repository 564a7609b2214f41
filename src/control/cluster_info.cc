#include "control/cluster_info.h"

#include <nlohmann/json.hpp>

namespace spd {

void FillClusterInfo(const ClusterNode* node, v1::NodeInfo* out) {
  if (node == nullptr) return;
  out->set_node_name(node->name());
  out->set_cluster_state(ClusterNode::StateName(node->state()));
  out->set_cluster_detail(node->detail());
}

void FillClusterNodes(const ClusterNode& node, v1::ListClusterNodesResponse* out) {
  const PrefixMirror::Snapshot s = node.Nodes();
  out->set_listed(s.listed);
  out->set_revision(s.revision);
  if (!s.watch_error.ok()) out->set_watch_error(s.watch_error.ToString());
  const std::string prefix = kNodesPrefix;
  for (const auto& [key, kv] : s.kvs) {  // std::map: by key, hence by name
    if (key.size() <= prefix.size()) continue;
    v1::ClusterNode* n = out->add_nodes();
    n->set_name(key.substr(prefix.size()));
    n->set_lease_id(kv.lease);
    n->set_self(n->name() == node.name() && kv.lease == node.lease_id());
    const nlohmann::json j = nlohmann::json::parse(kv.value, nullptr, false);
    if (!j.is_object()) continue;  // another writer's value: the name is still listed
    if (auto it = j.find("hostname"); it != j.end() && it->is_string())
      n->set_hostname(it->get<std::string>());
    if (auto it = j.find("pid"); it != j.end() && it->is_number_unsigned())
      n->set_pid(it->get<uint32_t>());
    if (auto it = j.find("version"); it != j.end() && it->is_string())
      n->set_version(it->get<std::string>());
    if (auto it = j.find("nbd"); it != j.end() && it->is_array())
      for (const auto& e : *it)
        if (e.is_string()) n->add_nbd_endpoints(e.get<std::string>());
  }
}

}  // namespace spd
