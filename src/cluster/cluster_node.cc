#include "cluster/cluster_node.h"

#include <utility>

#include "common/log.h"
#include "common/os_util.h"

namespace spd {

const char* ClusterNode::StateName(State s) {
  switch (s) {
    case State::kRegistering:
      return "registering";
    case State::kRegistered:
      return "registered";
    case State::kUnconfirmed:
      return "unconfirmed";
    case State::kNameTaken:
      return "name-taken";
    case State::kUnreachable:
      return "unreachable";
  }
  return "unknown";
}

Status ClusterNode::CheckName(const std::string& name) {
  if (name.empty() || name.size() > 63)
    return InvalidArgument("node name must be 1-63 characters, got " + std::to_string(name.size()));
  if (name[0] == '.' || name[0] == '-')
    return InvalidArgument("node name must not start with '.' or '-': '" + name + "'");
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) return InvalidArgument("node name may hold only [A-Za-z0-9._-]: '" + name + "'");
  }
  return Status::Ok();
}

Result<std::unique_ptr<ClusterNode>> ClusterNode::Start(ClusterNodeOptions o) {
  SPD_RETURN_IF_ERROR(CheckName(o.name));
  if (o.ttl_seconds < 2) return InvalidArgument("cluster lease TTL must be at least 2 s");
  EtcdOptions eo;
  eo.endpoints = o.endpoints;
  eo.request_timeout = o.request_timeout;
  SPD_ASSIGN_OR_RETURN(std::unique_ptr<EtcdClient> client, EtcdClient::Create(eo));
  std::unique_ptr<ClusterNode> n(new ClusterNode(std::move(o)));
  n->client_ = std::move(client);
  n->nodes_ = PrefixMirror::Start(n->client_.get(), {kNodesPrefix, std::chrono::milliseconds(500)});
  n->metrics_ =
      std::make_unique<MetricsCollector>([p = n.get()](std::string* out) { p->Render(out); });
  n->thread_ = std::thread([p = n.get()] {
    NameThisThread("spd-cluster");
    p->Loop();
  });
  return n;
}

ClusterNode::~ClusterNode() { Stop(); }

void ClusterNode::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stop_ && !thread_.joinable()) return;
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  metrics_.reset();
  if (nodes_) nodes_->Stop();
  std::unique_ptr<NodeLease> lease;
  {
    std::lock_guard<std::mutex> l(mu_);
    lease = std::move(lease_);
  }
  if (lease) lease->Stop();  // revokes: the registration goes now
}

ClusterNode::State ClusterNode::state() const {
  std::lock_guard<std::mutex> l(mu_);
  if (state_ == State::kRegistered && lease_ && !lease_->Valid()) return State::kUnconfirmed;
  return state_;
}

std::string ClusterNode::detail() const {
  std::lock_guard<std::mutex> l(mu_);
  return detail_;
}

bool ClusterNode::LeaseValid() const {
  std::lock_guard<std::mutex> l(mu_);
  return lease_ != nullptr && lease_->Valid();
}

int64_t ClusterNode::lease_id() const {
  std::lock_guard<std::mutex> l(mu_);
  return lease_ != nullptr ? lease_->lease_id() : 0;
}

void ClusterNode::Loop() {
  const std::string key = kNodesPrefix + o_.name;
  std::unique_lock<std::mutex> l(mu_);
  while (!stop_) {
    if (lease_ != nullptr && lease_->lost()) {
      // Expired in etcd (cut off for longer than the TTL): register again with a new lease.
      leases_lost_.fetch_add(1);
      keepalive_failures_past_.fetch_add(lease_->keepalive_failures());
      SPD_LOG_WARN("cluster: the lease of node %s expired in etcd; registering again",
                   o_.name.c_str());
      std::unique_ptr<NodeLease> old = std::move(lease_);
      l.unlock();
      old.reset();
      l.lock();
      state_ = State::kRegistering;
      continue;
    }
    if (lease_ == nullptr) {
      l.unlock();
      NodeLeaseOptions lo;
      lo.key = key;
      lo.value = o_.info_json;
      lo.ttl_seconds = o_.ttl_seconds;
      lo.exclusive = true;
      // Its expiry wakes this loop (which holds mu_ while it looks, so none is missed).
      lo.on_lost = [this] {
        { std::lock_guard<std::mutex> g(mu_); }
        cv_.notify_all();
      };
      Result<std::unique_ptr<NodeLease>> r = NodeLease::Start(client_.get(), lo);
      l.lock();
      const State before = state_;
      if (r.ok()) {
        lease_ = std::move(*r);
        state_ = State::kRegistered;
        detail_.clear();
        registrations_.fetch_add(1);
        SPD_LOG_INFO("cluster: node %s registered (lease %lld, TTL %lld s)", o_.name.c_str(),
                     static_cast<long long>(lease_->lease_id()),
                     static_cast<long long>(o_.ttl_seconds));
      } else {
        register_failures_.fetch_add(1);
        state_ = r.status().code() == StatusCode::kAlreadyExists ? State::kNameTaken
                                                                 : State::kUnreachable;
        detail_ = std::string(r.status().message());
        if (state_ != before)
          SPD_LOG_WARN("cluster: node %s not registered (%s): %s; retrying every %lld ms",
                       o_.name.c_str(), StateName(state_), detail_.c_str(),
                       static_cast<long long>(o_.retry.count()));
      }
      if (stop_) break;
    }
    // Registered: woken by Stop or the lease's expiry (on_lost); the 5 s bound is a backstop.
    cv_.wait_for(l, lease_ != nullptr ? std::chrono::milliseconds(5000) : o_.retry,
                 [&] { return stop_ || (lease_ != nullptr && lease_->lost()); });
  }
}

void ClusterNode::Render(std::string* out) const {
  const State s = state();
  PromHeader(out, "spd_cluster_node_registered",
             "1 while this node's registration in etcd is held and its lease valid by its own "
             "clock",
             "gauge");
  PromSample(out, "spd_cluster_node_registered", "", s == State::kRegistered ? 1 : 0);
  PromHeader(out, "spd_cluster_node_state",
             "1 for the registration state this node is in (registering, registered, "
             "unconfirmed, name-taken, unreachable)",
             "gauge");
  for (State x : {State::kRegistering, State::kRegistered, State::kUnconfirmed, State::kNameTaken,
                  State::kUnreachable})
    PromSample(out, "spd_cluster_node_state", std::string("state=") + PromLabel(StateName(x)),
               x == s ? 1 : 0);
  uint64_t keepalive_failures = keepalive_failures_past_.load();
  {
    std::lock_guard<std::mutex> l(mu_);
    if (lease_) keepalive_failures += lease_->keepalive_failures();
  }
  PromHeader(out, "spd_cluster_registrations_total",
             "Registrations of this node in etcd (a new lease each)", "counter");
  PromSample(out, "spd_cluster_registrations_total", "",
             static_cast<double>(registrations_.load()));
  PromHeader(out, "spd_cluster_register_failures_total",
             "Registration attempts that failed (etcd unreachable, or the name held)", "counter");
  PromSample(out, "spd_cluster_register_failures_total", "",
             static_cast<double>(register_failures_.load()));
  PromHeader(out, "spd_cluster_leases_lost_total",
             "Leases of this node that etcd expired (cut off for longer than the TTL)", "counter");
  PromSample(out, "spd_cluster_leases_lost_total", "", static_cast<double>(leases_lost_.load()));
  PromHeader(out, "spd_cluster_keepalive_failures_total",
             "Lease keepalives that etcd did not answer", "counter");
  PromSample(out, "spd_cluster_keepalive_failures_total", "",
             static_cast<double>(keepalive_failures));
  const PrefixMirror::Snapshot nodes = Nodes();
  PromHeader(out, "spd_cluster_nodes", "Nodes registered in the cluster, as last seen", "gauge");
  PromSample(out, "spd_cluster_nodes", "", static_cast<double>(nodes.kvs.size()));
  PromHeader(out, "spd_cluster_watch_reconnects_total",
             "Watch streams on the node list that broke and were opened again", "counter");
  PromSample(out, "spd_cluster_watch_reconnects_total", "", static_cast<double>(nodes.reconnects));
}

}  // namespace spd
