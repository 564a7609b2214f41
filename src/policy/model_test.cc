#include "policy/model.h"

#include <gtest/gtest.h>

namespace spd::policy {
namespace {

TEST(PolicyModel, NamesFollowOneRuleAndTheErrorNamesTheField) {
  EXPECT_TRUE(ValidateName("name", "db-1.prod_a").ok());
  for (const char* bad : {"", ".x", "-x", "a b", "a/b", "ä"}) {
    Status s = ValidateName("spec.tenant", bad);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(s.message().rfind("spec.tenant: ", 0), 0u) << s.ToString();
  }
  EXPECT_FALSE(ValidateName("n", std::string(65, 'a')).ok());
  EXPECT_TRUE(ValidateName("n", std::string(64, 'a')).ok());
}

TEST(PolicyModel, IntentsAreCheckedFieldByFieldAndAsAWhole) {
  Intent ok;
  ok.latency = LatencyTarget{99, 2000};
  ok.reservation = Rate{5000, 0};
  ok.limit = Rate{20000, 200ull << 20};
  ok.weight = 200;
  ok.priority = PriorityClass::kCritical;
  ok.durability = Durability::kSync;
  EXPECT_TRUE(ValidateIntent("intent", ok).ok());
  EXPECT_TRUE(ValidateIntent("intent", Intent{}).ok());

  auto expect_field = [](const Intent& in, const char* field) {
    Status s = ValidateIntent("spec.intent", in);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << field;
    EXPECT_EQ(s.message().rfind(std::string("spec.intent.") + field + ":", 0), 0u) << s.ToString();
  };
  Intent bad = ok;
  bad.limit = Rate{100, 0};
  expect_field(bad, "limit.iops");
  bad = ok;
  bad.latency = LatencyTarget{100, 2000};
  expect_field(bad, "latency.percentile");
  bad.latency = LatencyTarget{99, 0};
  expect_field(bad, "latency.bound_us");
  bad = ok;
  bad.weight = 0;
  expect_field(bad, "weight");
  bad.weight = kWeightMax + 1;
  expect_field(bad, "weight");
  bad = ok;
  bad.reservation = Rate{};
  expect_field(bad, "reservation");
  bad.reservation = Rate{kIopsMax + 1, 0};
  expect_field(bad, "reservation.iops");
  bad = ok;
  bad.limit = Rate{0, 1};
  bad.reservation = Rate{0, 2};
  expect_field(bad, "limit.bytes_per_second");
  bad = ok;
  bad.replicas = 0;
  expect_field(bad, "replicas");
  bad.replicas = kReplicasMax + 1;
  expect_field(bad, "replicas");
  bad.replicas = 1;
  EXPECT_TRUE(ValidateIntent("intent", bad).ok());
  bad.replicas = kReplicasMax;
  EXPECT_TRUE(ValidateIntent("intent", bad).ok());
}

TEST(PolicyModel, ATenantIntentHasRatesWeightAndPriorityButNoLatencyOrDurability) {
  Tenant t{"acme", {}};
  EXPECT_TRUE(ValidateTenant(t).ok());
  t.intent.reservation = Rate{1000, 0};
  t.intent.limit = Rate{5000, 100ull << 20};
  t.intent.weight = 300;
  t.intent.priority = PriorityClass::kBackground;
  EXPECT_TRUE(ValidateTenant(t).ok());

  Tenant bad = t;
  bad.intent.latency = LatencyTarget{99, 2000};
  Status s = ValidateTenant(bad);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            "tenant.intent.latency: a tenant has no latency target; set it on its volumes");
  bad = t;
  bad.intent.durability = Durability::kSync;
  s = ValidateTenant(bad, "spec");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message().rfind("spec.intent.durability: a tenant has no durability", 0), 0u)
      << s.ToString();
  bad = t;
  bad.intent.replicas = 2;
  s = ValidateTenant(bad);
  EXPECT_EQ(s.message().rfind("tenant.intent.replicas: a tenant has no replica count", 0), 0u)
      << s.ToString();
  // The rest is ValidateIntent's, under the tenant's names.
  bad = t;
  bad.intent.limit = Rate{10, 0};
  s = ValidateTenant(bad);
  EXPECT_EQ(s.message().rfind("tenant.intent.limit.iops: must be at least", 0), 0u) << s.ToString();
  bad = t;
  bad.intent.weight = 0;
  s = ValidateTenant(bad, "");
  EXPECT_EQ(s.message().rfind("intent.weight: ", 0), 0u) << s.ToString();
  EXPECT_EQ(ValidateTenantIntent("x", bad.intent).message().rfind("x.weight: ", 0), 0u);
  bad = t;
  bad.name = "a b";
  s = ValidateTenant(bad);
  EXPECT_EQ(s.message().rfind("tenant.name: ", 0), 0u) << s.ToString();
}

TEST(PolicyModel, AVolumeIntentOverridesItsClassFieldByField) {
  Intent cls;
  cls.limit = Rate{1000, 0};
  cls.weight = 50;
  cls.durability = Durability::kSync;
  cls.replicas = 3;
  Intent vol;
  vol.weight = 300;
  Intent m = MergeIntent(cls, vol);
  EXPECT_EQ(m.limit, cls.limit);
  EXPECT_EQ(m.weight, 300u);
  EXPECT_EQ(m.durability, Durability::kSync);
  EXPECT_EQ(m.replicas, 3u);
  vol.replicas = 2;
  EXPECT_EQ(MergeIntent(cls, vol).replicas, 2u);
  EXPECT_FALSE(m.reservation.has_value());
}

TEST(PolicyModel, EnumsRoundTripByName) {
  for (Role r : {Role::kNone, Role::kViewer, Role::kTenant, Role::kOperator, Role::kAdmin})
    EXPECT_EQ(ParseRole(RoleName(r)), r);
  for (PriorityClass p :
       {PriorityClass::kStandard, PriorityClass::kCritical, PriorityClass::kBackground})
    EXPECT_EQ(ParsePriorityClass(PriorityClassName(p)), p);
  for (Durability d : {Durability::kFlush, Durability::kSync, Durability::kNone})
    EXPECT_EQ(ParseDurability(DurabilityName(d)), d);
  EXPECT_FALSE(ParseRole("root").has_value());
  EXPECT_FALSE(ParseDurability("fsync").has_value());
}

TEST(PolicyModel, SizesParseInPowersOf1024AndRefuseWhatIsNotOne) {
  EXPECT_EQ(ParseSize("size", "4096").value(), 4096u);
  EXPECT_EQ(ParseSize("size", "10G").value(), 10ull << 30);
  EXPECT_EQ(ParseSize("size", "512Mi").value(), 512ull << 20);
  EXPECT_EQ(ParseSize("size", "1t").value(), 1ull << 40);
  EXPECT_EQ(ParseSize("size", "2KiB").value(), 2048u);
  for (const char* bad :
       {"", "G", "1.5G", "10X", "10 G", "-1", "99999999999999999999", "20000000P"}) {
    auto r = ParseSize("spec.size", bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_EQ(r.status().message().rfind("spec.size: ", 0), 0u) << bad;
    }
  }
  EXPECT_EQ(FormatSize(10ull << 30), "10G");
  EXPECT_EQ(FormatSize(4096), "4K");
  EXPECT_EQ(FormatSize(4097), "4097");
  EXPECT_EQ(FormatSize(0), "0");
}

TEST(PolicyModel, DurationsParseInSecondsMinutesHoursDaysAndRefuseTheRest) {
  EXPECT_EQ(ParseDuration("--ttl", "30s").value(), 30u);
  EXPECT_EQ(ParseDuration("--ttl", "15m").value(), 900u);
  EXPECT_EQ(ParseDuration("--ttl", "1h").value(), 3600u);
  EXPECT_EQ(ParseDuration("--ttl", "7d").value(), 7u * 86400);
  EXPECT_EQ(ParseDuration("--ttl", "12725829d").value(), 12725829ull * 86400);  // <= the max
  for (const char* bad : {"", "0s", "0", "30", "-1h", "+1h", "1.5h", "1w", "h", "1h ", " 1h", "1hh",
                          "12725830d", "99999999999999999999s", "1099511627777s"}) {
    auto r = ParseDuration("--ttl", bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_EQ(r.status().message().rfind("--ttl: ", 0), 0u) << bad;
    }
  }
  EXPECT_EQ(ParseDuration("--ttl", "1099511627776s").value(), kDurationSecondsMax);
}

}  // namespace
}  // namespace spd::policy
