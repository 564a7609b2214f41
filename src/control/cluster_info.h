// The control API's view of cluster membership (NodeService: GetNodeInfo's cluster fields,
// ListClusterNodes), filled from a ClusterNode's state and its mirror of etcd's node list.
#pragma once

#include "cluster/cluster_node.h"
#include "spd/v1/node.pb.h"

namespace spd {

// node_name, cluster_state, cluster_detail (all empty when `node` is null).
void FillClusterInfo(const ClusterNode* node, v1::NodeInfo* out);
// Every registered node by name; what a registration's JSON does not hold stays unset.
void FillClusterNodes(const ClusterNode& node, v1::ListClusterNodesResponse* out);

}  // namespace spd
