// ClusterNode and PrefixMirror against a real etcd: registration under an exclusive name, the
// mirror of every node, waiting for a taken name, registering again after the lease was lost,
// starting while etcd is down.
#include "cluster/cluster_node.h"

#include <gtest/gtest.h>

#include "cluster/etcd_test_util.h"

namespace spd {
namespace {

using namespace std::chrono_literals;
using etcd_test::EtcdProcess;
using etcd_test::WaitFor;

using ClusterNodeTest = etcd_test::SharedEtcdTest;

ClusterNodeOptions Options(const std::string& endpoint, const std::string& name,
                           const std::string& info) {
  ClusterNodeOptions o;
  o.endpoints = {endpoint};
  o.name = name;
  o.info_json = info;
  o.ttl_seconds = 3;
  o.retry = 100ms;
  o.request_timeout = 1000ms;
  return o;
}

bool Registered(const ClusterNode& n) { return n.state() == ClusterNode::State::kRegistered; }

TEST(ClusterNodeNameTest, ChecksNames) {
  EXPECT_TRUE(ClusterNode::CheckName("node-1.rack_2").ok());
  EXPECT_FALSE(ClusterNode::CheckName("").ok());
  EXPECT_FALSE(ClusterNode::CheckName("-x").ok());
  EXPECT_FALSE(ClusterNode::CheckName("a/b").ok());
  EXPECT_FALSE(ClusterNode::CheckName(std::string(64, 'a')).ok());
  EXPECT_FALSE(ClusterNode::Start(Options("http://127.0.0.1:1", "bad name", "{}")).ok());
}

TEST_F(ClusterNodeTest, RegistersMirrorsAndLeavesOnStop) {
  auto a = ClusterNode::Start(Options(etcd_->endpoint(), "mirror-a", "{\"n\":1}"));
  auto b = ClusterNode::Start(Options(etcd_->endpoint(), "mirror-b", "{\"n\":2}"));
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE(WaitFor([&] { return Registered(**a) && Registered(**b); }, 10s));
  EXPECT_TRUE((*a)->LeaseValid());
  // Each sees both, with the values they registered, through its mirror.
  ASSERT_TRUE(WaitFor(
      [&] {
        auto s = (*a)->Nodes();
        return s.listed && s.kvs.count("/spd/v1/nodes/mirror-a") == 1 &&
               s.kvs.count("/spd/v1/nodes/mirror-b") == 1;
      },
      10s));
  EXPECT_EQ((*a)->Nodes().kvs.at("/spd/v1/nodes/mirror-b").value, "{\"n\":2}");
  EXPECT_EQ((*a)->Nodes().kvs.at("/spd/v1/nodes/mirror-b").lease, (*b)->lease_id());
  // A stopped node's registration goes at once (revoked), and the other's mirror follows.
  (*b)->Stop();
  auto got = client_->Get("/spd/v1/nodes/mirror-b");
  ASSERT_TRUE(got.ok());
  EXPECT_FALSE(got->kv.has_value());
  EXPECT_TRUE(WaitFor([&] { return (*a)->Nodes().kvs.count("/spd/v1/nodes/mirror-b") == 0; }, 10s));
  EXPECT_NE(RenderCountersPrometheus().find("spd_cluster_node_registered 1"), std::string::npos);
}

TEST_F(ClusterNodeTest, ASecondNodeOfTheSameNameWaitsForTheFirstToGo) {
  auto a = ClusterNode::Start(Options(etcd_->endpoint(), "same", "{\"who\":\"a\"}"));
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(WaitFor([&] { return Registered(**a); }, 10s));
  auto b = ClusterNode::Start(Options(etcd_->endpoint(), "same", "{\"who\":\"b\"}"));
  ASSERT_TRUE(b.ok());
  ASSERT_TRUE(WaitFor([&] { return (*b)->state() == ClusterNode::State::kNameTaken; }, 10s));
  EXPECT_NE((*b)->detail().find("\"who\":\"a\""), std::string::npos) << (*b)->detail();
  EXPECT_FALSE((*b)->LeaseValid());
  std::this_thread::sleep_for(500ms);  // several retries: still a's
  auto got = client_->Get("/spd/v1/nodes/same");
  ASSERT_TRUE(got.ok() && got->kv.has_value());
  EXPECT_EQ(got->kv->value, "{\"who\":\"a\"}");
  (*a)->Stop();
  ASSERT_TRUE(WaitFor([&] { return Registered(**b); }, 10s));
  got = client_->Get("/spd/v1/nodes/same");
  ASSERT_TRUE(got.ok() && got->kv.has_value());
  EXPECT_EQ(got->kv->value, "{\"who\":\"b\"}");
}

TEST_F(ClusterNodeTest, RegistersAgainWhenItsLeaseIsGone) {
  auto a = ClusterNode::Start(Options(etcd_->endpoint(), "relost", "{}"));
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(WaitFor([&] { return Registered(**a); }, 10s));
  const int64_t first = (*a)->lease_id();
  ASSERT_TRUE(client_->LeaseRevoke(first).ok());  // as if etcd had expired it
  ASSERT_TRUE(WaitFor(
      [&] {
        const int64_t now = (*a)->lease_id();
        return now != 0 && now != first && Registered(**a);
      },
      10s));
  auto got = client_->Get("/spd/v1/nodes/relost");
  ASSERT_TRUE(got.ok() && got->kv.has_value());
  EXPECT_EQ(got->kv->lease, (*a)->lease_id());
}

// Started while etcd is down: serves on (Start succeeds), reports unreachable, and registers
// once etcd is up; the mirror lists then.
TEST(ClusterNodeOwnEtcdTest, RegistersOnceEtcdComesUp) {
  EtcdProcess etcd;
  auto a = ClusterNode::Start(Options(etcd.endpoint(), "late", "{}"));
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_TRUE(WaitFor([&] { return (*a)->state() == ClusterNode::State::kUnreachable; }, 10s));
  EXPECT_FALSE((*a)->Nodes().listed);
  ASSERT_EQ(etcd.Start(), "");
  ASSERT_TRUE(WaitFor([&] { return Registered(**a); }, 15s));
  ASSERT_TRUE(WaitFor(
      [&] {
        auto s = (*a)->Nodes();
        return s.listed && s.kvs.count("/spd/v1/nodes/late") == 1;
      },
      10s));
}

}  // namespace
}  // namespace spd
