#include "cluster/node_lease.h"

#include <utility>

#include "common/os_util.h"

namespace spd {

Result<std::unique_ptr<NodeLease>> NodeLease::Start(EtcdClient* client, NodeLeaseOptions o) {
  if (o.key.empty()) return InvalidArgument("node lease: empty key");
  if (o.ttl_seconds < 2) return InvalidArgument("node lease: ttl_seconds must be at least 2");
  if (!(o.margin > 0 && o.margin < 1)) return InvalidArgument("node lease: margin in (0, 1)");
  std::unique_ptr<NodeLease> n(new NodeLease(client, std::move(o)));
  const auto sent = std::chrono::steady_clock::now();
  SPD_ASSIGN_OR_RETURN(Lease lease, client->LeaseGrant(n->o_.ttl_seconds));
  n->lease_id_ = lease.id;
  if (Status put = n->PutKey(lease.id); !put.ok()) {
    (void)client->LeaseRevoke(lease.id);
    return put;
  }
  n->Extend(sent, lease.ttl);
  n->thread_ = std::thread([p = n.get()] {
    NameThisThread("spd-lease");
    p->Loop();
  });
  return n;
}

Status NodeLease::PutKey(int64_t lease) {
  if (!o_.exclusive) return client_->Put(o_.key, o_.value, lease).status();
  Txn txn;
  txn.compare.push_back(Compare::CreateRevision(o_.key, Compare::Op::kEqual, 0));
  txn.then.push_back(TxnOp::Put(o_.key, o_.value, lease));
  txn.otherwise.push_back(TxnOp::Get(o_.key));
  SPD_ASSIGN_OR_RETURN(TxnResult r, client_->Txn(txn));
  if (r.succeeded) return Status::Ok();
  std::string holder;
  if (!r.results.empty() && !r.results[0].kvs.empty()) holder = r.results[0].kvs[0].value;
  return AlreadyExists(o_.key + " is held by another lease: " + holder);
}

NodeLease::~NodeLease() { Stop(); }

void NodeLease::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stop_) return;
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  valid_until_ns_.store(0);
  if (!lost_.load()) (void)client_->LeaseRevoke(lease_id_);  // best effort: else it expires
}

bool NodeLease::Valid(std::chrono::steady_clock::time_point now) const {
  const int64_t until = valid_until_ns_.load();
  return until != 0 && now.time_since_epoch().count() < until;
}

std::chrono::steady_clock::time_point NodeLease::valid_until() const {
  return std::chrono::steady_clock::time_point(
      std::chrono::steady_clock::duration(valid_until_ns_.load()));
}

void NodeLease::Extend(std::chrono::steady_clock::time_point sent, int64_t ttl_seconds) {
  const auto usable =
      std::chrono::duration<double>(static_cast<double>(ttl_seconds) * (1.0 - o_.margin));
  const auto until = sent + std::chrono::duration_cast<std::chrono::steady_clock::duration>(usable);
  valid_until_ns_.store(until.time_since_epoch().count());
}

void NodeLease::Loop() {
  const auto period = std::chrono::milliseconds(o_.ttl_seconds * 1000 / 3);
  std::unique_lock<std::mutex> l(mu_);
  while (!stop_) {
    cv_.wait_for(l, period, [&] { return stop_; });
    if (stop_) break;
    l.unlock();
    const auto sent = std::chrono::steady_clock::now();
    Result<int64_t> ttl = client_->LeaseKeepAliveOnce(lease_id_);
    if (ttl.ok() && ttl.value() > 0) {
      Extend(sent, ttl.value());
    } else {
      failures_.fetch_add(1);
      if (!ttl.ok() && ttl.status().code() == StatusCode::kNotFound) {
        // Expired in etcd: nothing can bring it back.
        lost_.store(true);
        valid_until_ns_.store(0);
        if (o_.on_lost) o_.on_lost();
        return;
      }
      // Otherwise (etcd unreachable) Valid() runs out by itself at the deadline.
    }
    l.lock();
  }
}

}  // namespace spd
