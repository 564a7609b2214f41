// A node's registration in etcd, and the lease-safety rule (docs/replication.md): a lease
// granted with a TTL, a key bound to it (for a node, /spd/v1/nodes/NAME), and a thread of its
// own that keeps the lease alive every TTL/3.
//
// Valid() is what every holder of a lease in spd2 asks before it acts on it (a primary before
// it acknowledges a write): true only while its own monotonic clock says etcd cannot have
// expired the lease yet. The deadline counts from when the last answered keepalive was SENT
// (etcd restarts the TTL when it handles it, which is later), minus a margin for clock rate
// differences. A node cut off from etcd thus stops acting before etcd can give its role to
// another, without hearing from anyone.
//
// A lease that etcd says has expired (NotFound) is gone for good: Valid() stays false and
// lost() true; the owner decides what to do (a node registers again with a new lease).
//
// Thread-safety: every method from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "cluster/etcd_client.h"
#include "common/status.h"

namespace spd {

struct NodeLeaseOptions {
  std::string key;  // bound to the lease: deleted by etcd when it expires
  std::string value;
  int64_t ttl_seconds = 10;
  // The share of the TTL not counted on: Valid() ends at sent + TTL * (1 - margin).
  double margin = 0.2;
  // Put the key only if it does not exist (a node name two daemons must not share): Start
  // fails with kAlreadyExists, naming the holder's value, and revokes its new lease.
  bool exclusive = false;
  // Called once, on the keepalive thread (holding no lock of the lease), when etcd says the
  // lease expired (lost() turned true): the owner need not poll lost(). May be empty.
  std::function<void()> on_lost;
};

class NodeLease {
 public:
  // Grants the lease, puts the key and starts the keepalive thread. `client` outlives it.
  static Result<std::unique_ptr<NodeLease>> Start(EtcdClient* client, NodeLeaseOptions o);
  ~NodeLease();  // Stop()
  NodeLease(const NodeLease&) = delete;
  NodeLease& operator=(const NodeLease&) = delete;

  // Ends the keepalives and revokes the lease (its key goes with it); bounded by the client's
  // request timeout. Valid() is false after it.
  void Stop();

  int64_t lease_id() const { return lease_id_; }
  bool Valid() const { return Valid(std::chrono::steady_clock::now()); }
  bool Valid(std::chrono::steady_clock::time_point now) const;
  std::chrono::steady_clock::time_point valid_until() const;
  bool lost() const { return lost_.load(); }
  uint64_t keepalive_failures() const { return failures_.load(); }

 private:
  NodeLease(EtcdClient* client, NodeLeaseOptions o) : client_(client), o_(std::move(o)) {}
  void Loop();
  Status PutKey(int64_t lease);
  void Extend(std::chrono::steady_clock::time_point sent, int64_t ttl_seconds);

  EtcdClient* client_;
  NodeLeaseOptions o_;
  int64_t lease_id_ = 0;
  std::atomic<int64_t> valid_until_ns_{0};  // steady_clock since epoch; 0: not valid
  std::atomic<bool> lost_{false};
  std::atomic<uint64_t> failures_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // guarded by mu_
  std::thread thread_;
};

}  // namespace spd
