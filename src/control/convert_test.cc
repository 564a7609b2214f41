// The API's policy messages and the daemon's types: what goes out comes back, and what comes
// in is validated under the request's field names.
#include "control/convert.h"

#include <gtest/gtest.h>

#include "policy/intent_test_util.h"

namespace spd {
namespace {

using policy::test_util::FullIntent;

TEST(ControlConvert, IntentsRoundTripFieldByField) {
  for (const policy::Intent& in : {policy::Intent{}, FullIntent()}) {
    auto back = IntentFromProto("intent", IntentToProto(in));
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_EQ(back.value(), in);
  }
  v1::Intent bad = IntentToProto(FullIntent());
  bad.mutable_limit()->set_iops(10);
  auto r = IntentFromProto("policy.intent", bad);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message().rfind("policy.intent.limit.iops: ", 0), 0u)
      << r.status().ToString();
}

TEST(ControlConvert, TenantsCarryTheirIntentBothWays) {
  policy::Tenant t{"acme", {}};
  v1::Tenant p = TenantToProto(t);
  EXPECT_EQ(p.name(), "acme");
  EXPECT_TRUE(p.has_intent());  // always there, empty when nothing is set
  EXPECT_EQ(TenantFromProto("tenant", p).value(), t);

  t.intent.reservation = policy::Rate{100, 0};
  t.intent.limit = policy::Rate{600, 50ull << 20};
  t.intent.weight = 300;
  t.intent.priority = policy::PriorityClass::kBackground;
  p = TenantToProto(t);
  EXPECT_EQ(p.intent().limit().iops(), 600u);
  EXPECT_EQ(p.intent().weight(), 300u);
  EXPECT_EQ(p.intent().priority(), v1::PRIORITY_CLASS_BACKGROUND);
  EXPECT_FALSE(p.intent().has_latency());
  auto back = TenantFromProto("tenant", p);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back.value(), t);
  // A message without an intent is a tenant without one.
  v1::Tenant bare;
  bare.set_name("beta");
  EXPECT_EQ(TenantFromProto("tenant", bare).value(), (policy::Tenant{"beta", {}}));
}

TEST(ControlConvert, ATenantIntentIsValidatedUnderTheRequestsFieldNames) {
  auto expect = [](const v1::Tenant& p, const std::string& prefix) {
    auto r = TenantFromProto("tenant", p);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << prefix;
    EXPECT_EQ(r.status().message().rfind(prefix, 0), 0u) << r.status().ToString();
  };
  v1::Tenant p;
  p.set_name("acme");
  p.mutable_intent()->mutable_latency()->set_percentile(99);
  p.mutable_intent()->mutable_latency()->set_bound_us(2000);
  expect(p, "tenant.intent.latency: a tenant has no latency target; set it on its volumes");
  // Even a latency target that would be invalid on a volume is refused as a tenant's.
  p.mutable_intent()->mutable_latency()->set_percentile(100);
  expect(p, "tenant.intent.latency: a tenant has no latency target");
  p.mutable_intent()->clear_latency();
  p.mutable_intent()->set_durability(v1::DURABILITY_NONE);
  expect(p, "tenant.intent.durability: a tenant has no durability");
  p.mutable_intent()->set_durability(v1::DURABILITY_UNSPECIFIED);
  p.mutable_intent()->set_weight(0);
  expect(p, "tenant.intent.weight: ");
  p.mutable_intent()->clear_weight();
  p.mutable_intent()->set_priority(static_cast<v1::PriorityClass>(42));
  expect(p, "tenant.intent.priority: unknown value 42");
  p.mutable_intent()->set_priority(v1::PRIORITY_CLASS_STANDARD);
  p.set_name("a b");
  expect(p, "tenant.name: ");
}

}  // namespace
}  // namespace spd

namespace spd {
namespace {

TEST(PageToken, OnlyWhatNextPageTokenGives) {
  EXPECT_EQ(*PageTokenFromProto(""), 0u);
  EXPECT_EQ(*PageTokenFromProto("0"), 0u);
  EXPECT_EQ(*PageTokenFromProto("42"), 42u);
  EXPECT_EQ(*PageTokenFromProto("18446744073709551615"), UINT64_MAX);
  for (const char* bad : {"-1", "+1", " 1", "1 ", "01", "1a", "18446744073709551616",
                          "99999999999999999999", "123456789012345678901", "0x10"}) {
    auto r = PageTokenFromProto(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(r.status().message().rfind("page_token", 0), 0u) << bad;
  }
}

}  // namespace
}  // namespace spd
