// The etcd client against a real etcd (started by the tests themselves; see etcd_test_util.h).
// Without etcd installed these tests fail and say to run scripts/setup.sh.
#include "cluster/etcd_client.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "cluster/etcd_codec.h"
#include "cluster/etcd_test_util.h"

namespace spd {
namespace {

using namespace std::chrono_literals;
using etcd_test::EtcdProcess;
using etcd_test::MakeClient;
using etcd_test::SharedEtcd;
using etcd_test::WaitFor;

using EtcdKvTest = etcd_test::SharedEtcdTest;

TEST(EtcdCodecTest, Base64RoundTripsAndRefusesGarbage) {
  using etcd_codec::Base64Decode;
  using etcd_codec::Base64Encode;
  EXPECT_EQ(Base64Encode(""), "");
  EXPECT_EQ(Base64Encode("f"), "Zg==");
  EXPECT_EQ(Base64Encode("fo"), "Zm8=");
  EXPECT_EQ(Base64Encode("foo"), "Zm9v");
  EXPECT_EQ(Base64Encode(std::string("\xff\x00\xfe", 3)), "/wD+");
  std::string all;
  for (int i = 0; i < 256; ++i) all.push_back(static_cast<char>(i));
  for (size_t n = 0; n <= all.size(); n += 37) {
    auto back = Base64Decode(Base64Encode(all.substr(0, n)));
    ASSERT_TRUE(back.has_value()) << n;
    EXPECT_EQ(*back, all.substr(0, n));
  }
  EXPECT_EQ(Base64Decode("Zm8").value_or("?"), "fo");  // padding optional
  for (const char* bad : {"Z", "Zm9v=", "Z===", "Zm 9", "Zm9*", "=Zm9"})
    EXPECT_FALSE(Base64Decode(bad).has_value()) << bad;
}

TEST(EtcdCodecTest, PrefixEndAndNumbers) {
  using etcd_codec::PrefixEnd;
  EXPECT_EQ(PrefixEnd("a/"), "a0");
  EXPECT_EQ(PrefixEnd(std::string("a\xff", 2)), "b");
  EXPECT_EQ(PrefixEnd(""), std::string(1, '\0'));
  EXPECT_EQ(PrefixEnd(std::string("\xff\xff", 2)), std::string(1, '\0'));
  const auto j = nlohmann::json::parse(R"({"a":"123","b":7,"c":"x1","d":{}})");
  EXPECT_EQ(etcd_codec::Int(j, "a").value_or(-1), 123);
  EXPECT_EQ(etcd_codec::Int(j, "b").value_or(-1), 7);
  EXPECT_EQ(etcd_codec::Int(j, "missing").value_or(-1), 0);
  EXPECT_FALSE(etcd_codec::Int(j, "c").has_value());
  EXPECT_FALSE(etcd_codec::Int(j, "d").has_value());
}

TEST(EtcdCodecTest, ErrorBodiesOfBothShapes) {
  const auto unary = nlohmann::json::parse(
      R"({"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5})");
  Status s = etcd_codec::ErrorStatus(unary, "etcd http://h:1/v3/kv/put");
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.message(),
            "etcd http://h:1/v3/kv/put: etcdserver: requested lease not found (gRPC code 5)");
  const auto stream = nlohmann::json::parse(
      R"({"error":{"grpc_code":14,"http_code":503,"message":"no leader","http_status":"x"}})");
  s = etcd_codec::ErrorStatus(stream, "w");
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_EQ(s.message(), "w: no leader (gRPC code 14)");
  EXPECT_EQ(
      etcd_codec::ErrorStatus(nlohmann::json::parse(R"({"error":"x","code":99})"), "w").code(),
      StatusCode::kUnknown);
  EXPECT_TRUE(etcd_codec::ErrorStatus(nlohmann::json::parse(R"({"header":{}})"), "w").ok());
}

TEST(EtcdOptionsTest, BadOptionsAreRefused) {
  EtcdOptions o;
  EXPECT_EQ(EtcdClient::Create(o).status().code(), StatusCode::kInvalidArgument);
  o.endpoints = {"127.0.0.1:2379"};
  auto c = EtcdClient::Create(o);
  EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("127.0.0.1:2379"), std::string_view::npos);
  o.endpoints = {"http://127.0.0.1:2379/"};
  o.request_timeout = 0ms;
  EXPECT_EQ(EtcdClient::Create(o).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(EtcdKvTest, PutGetRangeDeleteWithRevisions) {
  auto r1 = client_->Put("/kv/a", "1");
  ASSERT_TRUE(r1.ok()) << r1.status().ToString();
  auto r2 = client_->Put("/kv/b", std::string("\0\xff binary", 9));
  ASSERT_TRUE(r2.ok()) << r2.status().ToString();
  EXPECT_EQ(*r2, *r1 + 1);
  auto r3 = client_->Put("/kv/a", "2");  // an update: create_revision stays
  ASSERT_TRUE(r3.ok());
  ASSERT_TRUE(client_->Put("/kv0", "outside the prefix").ok());

  auto g = client_->Get("/kv/a");
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  ASSERT_TRUE(g->kv.has_value());
  EXPECT_EQ(g->kv->value, "2");
  EXPECT_EQ(g->kv->create_revision, *r1);
  EXPECT_EQ(g->kv->mod_revision, *r3);
  EXPECT_EQ(g->kv->version, 2);
  EXPECT_GE(g->revision, *r3);
  auto missing = client_->Get("/kv/none");
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->kv.has_value());
  EXPECT_GE(missing->revision, *r3);

  auto range = client_->Range("/kv/");
  ASSERT_TRUE(range.ok()) << range.status().ToString();
  ASSERT_EQ(range->kvs.size(), 2u);
  EXPECT_EQ(range->kvs[0].key, "/kv/a");
  EXPECT_EQ(range->kvs[1].key, "/kv/b");
  EXPECT_EQ(range->kvs[1].value, std::string("\0\xff binary", 9));
  EXPECT_EQ(range->kvs[1].create_revision, *r2);

  auto d = client_->Delete("/kv/a");
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->deleted, 1);
  EXPECT_GT(d->revision, *r3);
  EXPECT_EQ(client_->Delete("/kv/a")->deleted, 0);
  auto dp = client_->DeletePrefix("/kv/");
  ASSERT_TRUE(dp.ok());
  EXPECT_EQ(dp->deleted, 1);
  EXPECT_TRUE(client_->Range("/kv/")->kvs.empty());
  EXPECT_TRUE(client_->Get("/kv0")->kv.has_value());
}

TEST_F(EtcdKvTest, RangeReadsPagesAtOneRevision) {
  EtcdOptions o = client_->options();
  o.range_page_keys = 3;
  auto c = EtcdClient::Create(o);
  ASSERT_TRUE(c.ok());
  for (int i = 0; i < 10; ++i)
    ASSERT_TRUE((*c)->Put("/page/" + std::to_string(i), std::to_string(i)).ok());
  auto r = (*c)->Range("/page/");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->kvs.size(), 10u);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(r->kvs[i].value, std::to_string(i));
}

TEST_F(EtcdKvTest, ResponsesAreCapped) {
  ASSERT_TRUE(client_->Put("/big/v", std::string(16384, 'x')).ok());
  EtcdOptions o = client_->options();
  o.max_response_bytes = 4096;
  auto c = EtcdClient::Create(o);
  ASSERT_TRUE(c.ok());
  auto g = (*c)->Get("/big/v");
  EXPECT_EQ(g.status().code(), StatusCode::kResourceExhausted) << g.status().ToString();
  EXPECT_NE(g.status().message().find(etcd_->endpoint()), std::string_view::npos);
}

TEST_F(EtcdKvTest, TxnCompareAndSwap) {
  const std::string key = "/txn/owner";
  // Create-if-absent: create_revision == 0.
  Txn create;
  create.compare = {Compare::CreateRevision(key, Compare::Op::kEqual, 0)};
  create.then = {TxnOp::Put(key, "node-a")};
  create.otherwise = {TxnOp::Get(key)};
  auto t1 = client_->Txn(create);
  ASSERT_TRUE(t1.ok()) << t1.status().ToString();
  EXPECT_TRUE(t1->succeeded);
  const int64_t epoch = t1->revision;  // the key's create revision: a fencing epoch
  // The same again fails, and the else branch reads the owner.
  auto t2 = client_->Txn(create);
  ASSERT_TRUE(t2.ok());
  EXPECT_FALSE(t2->succeeded);
  ASSERT_EQ(t2->results.size(), 1u);
  ASSERT_EQ(t2->results[0].kvs.size(), 1u);
  EXPECT_EQ(t2->results[0].kvs[0].value, "node-a");
  EXPECT_EQ(t2->results[0].kvs[0].create_revision, epoch);

  // Swap on mod_revision: the first writer wins, the stale one loses.
  Txn swap;
  swap.compare = {Compare::ModRevision(key, Compare::Op::kEqual, epoch)};
  swap.then = {TxnOp::Put(key, "node-b"), TxnOp::Put("/txn/log", "b took over")};
  auto t3 = client_->Txn(swap);
  ASSERT_TRUE(t3.ok());
  EXPECT_TRUE(t3->succeeded);
  EXPECT_EQ(t3->results.size(), 2u);
  auto t4 = client_->Txn(swap);
  ASSERT_TRUE(t4.ok());
  EXPECT_FALSE(t4->succeeded);
  EXPECT_TRUE(t4->results.empty());
  EXPECT_EQ(t4->revision, t3->revision);  // nothing changed
  auto g = client_->Get(key);
  EXPECT_EQ(g->kv->value, "node-b");
  EXPECT_EQ(g->kv->create_revision, epoch);

  // Compare on value, delete in the then branch.
  Txn del;
  del.compare = {Compare::Value(key, Compare::Op::kEqual, "node-a")};
  del.then = {TxnOp::DeletePrefix("/txn/")};
  auto t5 = client_->Txn(del);
  ASSERT_TRUE(t5.ok());
  EXPECT_FALSE(t5->succeeded);
  del.compare = {Compare::Value(key, Compare::Op::kEqual, "node-b"),
                 Compare::CreateRevision(key, Compare::Op::kEqual, epoch)};
  auto t6 = client_->Txn(del);
  ASSERT_TRUE(t6.ok());
  EXPECT_TRUE(t6->succeeded);
  ASSERT_EQ(t6->results.size(), 1u);
  EXPECT_EQ(t6->results[0].deleted, 2);
  EXPECT_FALSE(client_->Get(key)->kv.has_value());
}

TEST_F(EtcdKvTest, LeaseKeptAliveThenExpires) {
  auto lease = client_->LeaseGrant(2);
  ASSERT_TRUE(lease.ok()) << lease.status().ToString();
  EXPECT_GE(lease->ttl, 2);
  ASSERT_TRUE(client_->Put("/lease/k", "v", lease->id).ok());
  EXPECT_EQ(client_->Get("/lease/k")->kv->lease, lease->id);
  // Kept alive for twice its TTL: the key stays.
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2 * lease->ttl);
  while (std::chrono::steady_clock::now() < until) {
    auto ttl = client_->LeaseKeepAliveOnce(lease->id);
    ASSERT_TRUE(ttl.ok()) << ttl.status().ToString();
    EXPECT_GT(*ttl, 0);
    EXPECT_LE(*ttl, lease->ttl);
    ASSERT_TRUE(client_->Get("/lease/k")->kv.has_value());
    std::this_thread::sleep_for(400ms);
  }
  // Left alone, it expires and takes the key with it.
  EXPECT_TRUE(WaitFor([&] { return !client_->Get("/lease/k")->kv.has_value(); }, 20s));
  auto after = client_->LeaseKeepAliveOnce(lease->id);
  EXPECT_EQ(after.status().code(), StatusCode::kNotFound) << after.status().ToString();

  // Revoked: the key goes at once; a second revoke is refused by etcd, and says so.
  auto l2 = client_->LeaseGrant(60);
  ASSERT_TRUE(l2.ok());
  ASSERT_TRUE(client_->Put("/lease/k2", "v", l2->id).ok());
  ASSERT_TRUE(client_->LeaseRevoke(l2->id).ok());
  EXPECT_FALSE(client_->Get("/lease/k2")->kv.has_value());
  Status again = client_->LeaseRevoke(l2->id);
  EXPECT_EQ(again.code(), StatusCode::kNotFound);
  EXPECT_NE(again.message().find("lease not found"), std::string_view::npos) << again.ToString();
}

TEST_F(EtcdKvTest, EtcdErrorsBecomeStatuses) {
  Status s = client_->Put("/err/k", "v", /*lease=*/123456789).status();
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_NE(s.message().find(etcd_->endpoint() + "/v3/kv/put"), std::string_view::npos);
  EXPECT_NE(s.message().find("requested lease not found"), std::string_view::npos) << s.ToString();
  s = client_->Compact(1'000'000'000);
  EXPECT_EQ(s.code(), StatusCode::kOutOfRange);
  EXPECT_NE(s.message().find("future revision"), std::string_view::npos) << s.ToString();
}

TEST_F(EtcdKvTest, FailsOverFromADeadEndpoint) {
  const std::string dead = "http://127.0.0.1:" + std::to_string(etcd_test::FreePort());
  auto c = MakeClient({dead, etcd_->endpoint()});
  ASSERT_NE(c, nullptr);
  for (int i = 0; i < 3; ++i) {
    auto p = c->Put("/failover/k", std::to_string(i));
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    auto g = c->Get("/failover/k");
    ASSERT_TRUE(g.ok()) << g.status().ToString();
    EXPECT_EQ(g->kv->value, std::to_string(i));
  }
  // The dead one alone: the call fails, saying which endpoint and what failed.
  auto only_dead = MakeClient({dead});
  auto g = only_dead->Get("/failover/k");
  EXPECT_EQ(g.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(g.status().message().find(dead + ": cannot connect"), std::string_view::npos)
      << g.status().ToString();
}

TEST(EtcdDeadlineTest, SilentServerFailsWithinTheDeadline) {
  etcd_test::SilentServer silent;
  ASSERT_GT(silent.port(), 0);
  auto c = MakeClient({silent.endpoint()}, 700ms);
  ASSERT_NE(c, nullptr);
  auto t0 = std::chrono::steady_clock::now();
  auto g = c->Get("/k");
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(g.status().code(), StatusCode::kDeadlineExceeded) << g.status().ToString();
  EXPECT_NE(g.status().message().find(silent.endpoint() + ": no answer within"),
            std::string_view::npos)
      << g.status().ToString();
  EXPECT_LT(took, 700ms + 1s);  // the deadline, plus slack for a busy machine
  // A write that was sent says its outcome is unknown.
  t0 = std::chrono::steady_clock::now();
  Status p = c->Put("/k", "v").status();
  took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(p.code(), StatusCode::kDeadlineExceeded) << p.ToString();
  EXPECT_NE(p.message().find("may or may not have been applied"), std::string_view::npos)
      << p.ToString();
  EXPECT_LT(took, 700ms + 1s);
}

}  // namespace
}  // namespace spd
