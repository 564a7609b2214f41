// NodeLease against a real etcd: the key lives with the lease; Valid() runs out by the node's
// own clock, before etcd can expire the lease, when etcd cannot be reached; a revoked or expired
// lease is reported lost.
#include "cluster/node_lease.h"

#include <gtest/gtest.h>
#include <atomic>

#include "cluster/etcd_test_util.h"

namespace spd {
namespace {

using namespace std::chrono_literals;
using etcd_test::EtcdProcess;
using etcd_test::MakeClient;
using etcd_test::SharedEtcd;
using etcd_test::WaitFor;

using NodeLeaseTest = etcd_test::SharedEtcdTest;

TEST_F(NodeLeaseTest, RegistersKeepsAliveAndRevokesOnStop) {
  EtcdClient* client = client_.get();
  NodeLeaseOptions o;
  o.key = "/spd/v1/nodes/lease-test";
  o.value = "{\"addr\":\"127.0.0.1:1\"}";
  o.ttl_seconds = 3;
  auto lease = NodeLease::Start(client, o);
  ASSERT_TRUE(lease.ok()) << lease.status().ToString();
  NodeLease& n = **lease;
  auto got = client->Get(o.key);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_TRUE(got->kv.has_value());
  EXPECT_EQ(got->kv->value, o.value);
  EXPECT_EQ(got->kv->lease, n.lease_id());
  EXPECT_TRUE(n.Valid());
  // Never counted on beyond TTL * (1 - margin) from now.
  EXPECT_LE(n.valid_until(), std::chrono::steady_clock::now() + 2400ms);
  // Kept alive past its TTL.
  std::this_thread::sleep_for(4s);
  EXPECT_TRUE(n.Valid());
  EXPECT_FALSE(n.lost());
  got = client->Get(o.key);
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(got->kv.has_value()) << "the key expired although the lease was kept alive";
  n.Stop();
  EXPECT_FALSE(n.Valid());
  got = client->Get(o.key);
  ASSERT_TRUE(got.ok());
  EXPECT_FALSE(got->kv.has_value()) << "the key outlived the revoked lease";
}

// Two holders of one exclusive key: the second is refused, named, and leaves no lease behind;
// once the first is gone the name is free again.
TEST_F(NodeLeaseTest, ExclusiveKeyRefusesASecondHolder) {
  EtcdClient* client = client_.get();
  NodeLeaseOptions o;
  o.key = "/spd/v1/nodes/exclusive-test";
  o.value = "first";
  o.ttl_seconds = 5;
  o.exclusive = true;
  auto first = NodeLease::Start(client, o);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  o.value = "second";
  auto second = NodeLease::Start(client, o);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kAlreadyExists);
  EXPECT_NE(second.status().message().find("first"), std::string::npos)
      << second.status().ToString();
  auto got = client->Get(o.key);
  ASSERT_TRUE(got.ok() && got->kv.has_value());
  EXPECT_EQ(got->kv->value, "first");
  EXPECT_EQ(got->kv->lease, (*first)->lease_id());
  (*first)->Stop();
  auto third = NodeLease::Start(client, o);
  ASSERT_TRUE(third.ok()) << third.status().ToString();
  got = client->Get(o.key);
  ASSERT_TRUE(got.ok() && got->kv.has_value());
  EXPECT_EQ(got->kv->value, "second");
}

// Cut off from etcd, the holder stops counting on its lease by its own clock, and does so
// before etcd could expire it (TTL from the last keepalive etcd handled).
TEST(NodeLeaseOwnEtcdTest, ValidRunsOutByItsOwnClockWhenEtcdIsGone) {
  EtcdProcess etcd;
  ASSERT_EQ(etcd.Start(), "");
  auto client = MakeClient({etcd.endpoint()}, 500ms);
  ASSERT_NE(client, nullptr);
  NodeLeaseOptions o;
  o.key = "/spd/v1/nodes/cut-off";
  o.ttl_seconds = 3;
  auto lease = NodeLease::Start(client.get(), o);
  ASSERT_TRUE(lease.ok()) << lease.status().ToString();
  NodeLease& n = **lease;
  ASSERT_TRUE(n.Valid());
  const auto cut = std::chrono::steady_clock::now();
  etcd.Stop();
  // The last keepalive etcd could have handled was sent before `cut`; etcd's own expiry is
  // at least TTL after it. Valid() must end before cut + TTL.
  ASSERT_TRUE(WaitFor([&] { return !n.Valid(); }, 10s)) << "still valid without etcd";
  EXPECT_LT(std::chrono::steady_clock::now(), cut + 3s);
  EXPECT_LT(n.valid_until(), cut + 3s);
  n.Stop();  // bounded: the revoke fails within the client's deadline
}

TEST_F(NodeLeaseTest, AnExpiredLeaseIsLost) {
  EtcdClient* client = client_.get();
  NodeLeaseOptions o;
  o.key = "/spd/v1/nodes/revoked-behind-its-back";
  o.ttl_seconds = 3;
  std::atomic<int> told{0};
  o.on_lost = [&] { told.fetch_add(1); };
  auto lease = NodeLease::Start(client, o);
  ASSERT_TRUE(lease.ok()) << lease.status().ToString();
  NodeLease& n = **lease;
  // Someone else (an operator, a bug) revokes it: the next keepalive finds it gone, and says so
  // (ClusterNode registers again on that, without polling lost()).
  ASSERT_TRUE(client->LeaseRevoke(n.lease_id()).ok());
  ASSERT_TRUE(WaitFor([&] { return n.lost(); }, 5s));
  EXPECT_FALSE(n.Valid());
  ASSERT_TRUE(WaitFor([&] { return told.load() == 1; }, 5s)) << "on_lost was not called";
}

TEST_F(NodeLeaseTest, BadOptionsAreRefused) {
  EtcdClient* client = client_.get();
  NodeLeaseOptions o;
  o.key = "k";
  o.ttl_seconds = 1;
  EXPECT_EQ(NodeLease::Start(client, o).status().code(), StatusCode::kInvalidArgument);
  o.ttl_seconds = 5;
  o.margin = 1.5;
  EXPECT_EQ(NodeLease::Start(client, o).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace spd
