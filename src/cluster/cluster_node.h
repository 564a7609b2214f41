// ClusterNode: this spd2's membership of a cluster (--cluster, docs/replication.md).
//
// It registers the node under /spd/v1/nodes/NAME, bound to a lease kept alive by NodeLease, and
// mirrors every node's registration (PrefixMirror) so that listing nodes never waits on etcd.
// The name is exclusive: while another lease holds it (a second daemon with the same
// --node-name, or this node's previous life killed less than a TTL ago) the node waits and
// retries, reporting kNameTaken. A lease that etcd expired (the node was cut off for longer
// than its TTL) is replaced by a new registration. Nothing here stops the node serving its
// local volumes: without etcd it keeps retrying, in the background, every `retry`.
//
// Thread-safety: every method from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cluster/etcd_client.h"
#include "cluster/node_lease.h"
#include "cluster/prefix_mirror.h"
#include "common/counters.h"
#include "common/status.h"

namespace spd {

// Where cluster state lives in etcd (docs/replication.md, "Cluster state in etcd").
inline constexpr const char* kClusterPrefix = "/spd/v1/";
inline constexpr const char* kNodesPrefix = "/spd/v1/nodes/";

struct ClusterNodeOptions {
  std::vector<std::string> endpoints;  // http://HOST:PORT of each etcd member
  std::string name;                    // the node's name, unique in the cluster
  std::string info_json;               // the registration's value (a JSON object)
  int64_t ttl_seconds = 10;
  std::chrono::milliseconds retry{1000};  // between registration attempts
  std::chrono::milliseconds request_timeout{3000};
};

class ClusterNode {
 public:
  enum class State {
    kRegistering,  // no answer yet
    kRegistered,   // the key is ours and the lease valid by our own clock
    kUnconfirmed,  // registered, but the lease could not be renewed in time (etcd unreachable)
    kNameTaken,    // another lease holds the name
    kUnreachable,  // etcd did not answer the registration
  };
  static const char* StateName(State s);
  // A valid node name: 1-63 of [A-Za-z0-9._-], not starting with '.' or '-'.
  static Status CheckName(const std::string& name);

  // Checks the options and starts the registration thread; etcd need not answer yet.
  static Result<std::unique_ptr<ClusterNode>> Start(ClusterNodeOptions o);
  ~ClusterNode();  // Stop()
  ClusterNode(const ClusterNode&) = delete;
  ClusterNode& operator=(const ClusterNode&) = delete;

  // Revokes the lease (the registration goes at once, not after a TTL) and ends the threads.
  void Stop();

  const std::string& name() const { return o_.name; }
  // The registration's value as this node writes it (known before etcd holds it).
  const std::string& info_json() const { return o_.info_json; }
  State state() const;
  std::string detail() const;  // why not registered, or ""
  // The lease-safety rule (NodeLease::Valid) for what this node holds in etcd.
  bool LeaseValid() const;
  int64_t lease_id() const;
  EtcdClient* client() const { return client_.get(); }
  // Every registered node, from the mirror (no etcd call).
  PrefixMirror::Snapshot Nodes() const { return nodes_->Get(); }

 private:
  explicit ClusterNode(ClusterNodeOptions o) : o_(std::move(o)) {}
  void Loop();
  void Render(std::string* out) const;

  ClusterNodeOptions o_;
  std::unique_ptr<EtcdClient> client_;
  std::unique_ptr<PrefixMirror> nodes_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;                  // guarded by mu_
  std::unique_ptr<NodeLease> lease_;   // guarded by mu_
  State state_ = State::kRegistering;  // guarded by mu_
  std::string detail_;                 // guarded by mu_
  std::atomic<uint64_t> registrations_{0};
  std::atomic<uint64_t> register_failures_{0};
  std::atomic<uint64_t> leases_lost_{0};
  std::atomic<uint64_t> keepalive_failures_past_{0};  // of leases replaced since
  std::unique_ptr<MetricsCollector> metrics_;
  std::thread thread_;
};

}  // namespace spd
