#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "apply/apply_file.h"
#include "apply/plan.h"

namespace spd::apply {
namespace {

// The example of docs/apply.md. Line numbers matter: the tests below name them.
constexpr const char* kExample = R"(apiVersion: spd.v1
kind: Tenant
metadata:
  name: acme
---
apiVersion: spd.v1
kind: StorageClass
metadata:
  name: fast
spec:
  intent:
    latency: {percentile: 99, boundUs: 2000}
    reservation: {iops: 5000}
    limit: {iops: 20000, bytesPerSecond: 200M}
    weight: 200
    priority: critical      # standard | critical | background
    durability: sync        # flush | sync | none
---
apiVersion: spd.v1
kind: Volume
metadata:
  name: db1
  tenant: acme              # optional
spec:
  size: 10G                 # bytes or K/M/G/T/P, Ki..Pi; a multiple of 4096
  storageClass: fast        # optional
  intent: {weight: 300}     # optional; overrides the class per field
)";

// A volume document (lines 1-6) followed by `rest` from line 7 on.
std::string VolumeDoc(const std::string& rest) {
  return "apiVersion: spd.v1\n"
         "kind: Volume\n"
         "metadata:\n"
         "  name: db1\n"
         "spec:\n"
         "  size: 10G\n" +
         rest;
}

DesiredState MustParse(const std::string& text) {
  Result<DesiredState> r = ParseApplyFile(text, "f.yaml");
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? std::move(r).value() : DesiredState{};
}

// The file is refused with kInvalidArgument and a message starting with `prefix`
// ("f.yaml:LINE:COLUMN: FIELD: ").
void ExpectRefused(const std::string& text, const std::string& prefix) {
  Result<DesiredState> r = ParseApplyFile(text, "f.yaml");
  ASSERT_FALSE(r.ok()) << "accepted:\n" << text;
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();
  EXPECT_EQ(r.status().message().substr(0, prefix.size()), prefix)
      << "got: " << r.status().message() << "\nfor:\n"
      << text;
}

TEST(ApplyFile, TheFullExampleParsesToTheRightValues) {
  const DesiredState d = MustParse(kExample);
  ASSERT_EQ(d.tenants.size(), 1u);
  EXPECT_EQ(d.tenants[0].t.name, "acme");
  EXPECT_EQ(d.tenants[0].line, 1);

  ASSERT_EQ(d.classes.size(), 1u);
  const DesiredStorageClass& c = d.classes[0];
  EXPECT_EQ(c.line, 6);
  EXPECT_EQ(c.sc.name, "fast");
  policy::Intent want;
  want.latency = policy::LatencyTarget{99, 2000};
  want.reservation = policy::Rate{5000, 0};
  want.limit = policy::Rate{20000, 200ull << 20};
  want.weight = 200;
  want.priority = policy::PriorityClass::kCritical;
  want.durability = Durability::kSync;
  EXPECT_EQ(c.sc.defaults, want) << FormatIntent(c.sc.defaults);

  ASSERT_EQ(d.volumes.size(), 1u);
  const DesiredVolume& v = d.volumes[0];
  EXPECT_EQ(v.line, 19);
  EXPECT_EQ(v.name, "db1");
  EXPECT_EQ(v.tenant, "acme");
  EXPECT_EQ(v.storage_class, "fast");
  EXPECT_EQ(v.size_bytes, 10ull << 30);
  policy::Intent own;  // only what the volume writes: the class fills in the rest later
  own.weight = 300;
  EXPECT_EQ(v.intent, own) << FormatIntent(v.intent);
}

TEST(ApplyFile, OptionalPartsEmptyDocumentsNullsAndAnchors) {
  // Empty documents (nothing, a comment) are skipped; a class without spec has no defaults;
  // `key:` / `key: ~` mean "not set"; a quoted size is a size; anchors work within a document.
  const DesiredState d = MustParse(R"(---
---
# nothing here
---
apiVersion: spd.v1
kind: StorageClass
metadata: {name: plain}
---
apiVersion: spd.v1
kind: Volume
metadata: {name: &n v1, tenant: ~}
spec:
  size: "4096"
  storageClass:
  intent: {durability: none, reservation: {bytesPerSecond: 1Mi}, latency: {percentile: 99.9, boundUs: 1}}
---
apiVersion: spd.v1
kind: Tenant
metadata:
  name: t.1_x-y
...
)");
  ASSERT_EQ(d.classes.size(), 1u);
  EXPECT_EQ(d.classes[0].sc.defaults, policy::Intent{});
  EXPECT_EQ(d.classes[0].line, 5);
  ASSERT_EQ(d.volumes.size(), 1u);
  EXPECT_EQ(d.volumes[0].name, "v1");
  EXPECT_EQ(d.volumes[0].tenant, "");
  EXPECT_EQ(d.volumes[0].storage_class, "");
  EXPECT_EQ(d.volumes[0].size_bytes, 4096u);
  EXPECT_EQ(d.volumes[0].intent.durability, Durability::kNone);
  EXPECT_EQ(d.volumes[0].intent.reservation, (policy::Rate{0, 1u << 20}));
  EXPECT_EQ(d.volumes[0].intent.latency, (policy::LatencyTarget{99.9, 1}));
  ASSERT_EQ(d.tenants.size(), 1u);
  EXPECT_EQ(d.tenants[0].t.name, "t.1_x-y");

  EXPECT_TRUE(MustParse("").volumes.empty());
  EXPECT_TRUE(MustParse("# only a comment\n").volumes.empty());
  // An anchor's node is shared by its alias (within one document).
  const DesiredState b = MustParse(R"(apiVersion: spd.v1
kind: Volume
metadata: {name: &n same, tenant: *n}
spec: {size: 1G}
)");
  ASSERT_EQ(b.volumes.size(), 1u);
  EXPECT_EQ(b.volumes[0].tenant, "same");
}

TEST(ApplyFile, UnknownKeysAreRefusedAtTheirPosition) {
  ExpectRefused(VolumeDoc("  sise: 20G\n"), "f.yaml:7:3: spec.sise: unknown key");
  ExpectRefused(VolumeDoc("  intent: {weight: 3, wieght: 4}\n"),
                "f.yaml:7:23: spec.intent.wieght: unknown key");
  ExpectRefused(VolumeDoc("  intent:\n    limit: {iops: 5, bps: 4}\n"),
                "f.yaml:8:22: spec.intent.limit.bps: unknown key");
  ExpectRefused(VolumeDoc("status: {}\n"), "f.yaml:7:1: status: unknown key");
  ExpectRefused("apiVersion: spd.v1\nkind: Volume\nmetadata:\n  name: a\n  labels: {}\n",
                "f.yaml:5:3: metadata.labels: unknown key");
  // What one kind has is unknown to another: a tenant has no size, a class no tenant.
  ExpectRefused("apiVersion: spd.v1\nkind: Tenant\nmetadata: {name: a}\nspec: {size: 1G}\n",
                "f.yaml:4:8: spec.size: unknown key (allowed here: intent)");
  ExpectRefused("apiVersion: spd.v1\nkind: StorageClass\nmetadata: {name: a, tenant: b}\n",
                "f.yaml:3:21: metadata.tenant: unknown key");
  // yaml-cpp keeps a repeated key; the file may not.
  ExpectRefused(VolumeDoc("  size: 20G\n"), "f.yaml:7:3: spec.size: given twice (first at line 6)");
}

TEST(ApplyFile, AReplicaCountParsesInAClassAndAVolume) {
  const DesiredState d = MustParse(
      "apiVersion: spd.v1\nkind: StorageClass\nmetadata: {name: ha}\nspec:\n  intent:\n"
      "    replicas: 3\n---\napiVersion: spd.v1\nkind: Volume\nmetadata: {name: v}\n"
      "spec: {size: 1G, storageClass: ha, intent: {replicas: 2}}\n");
  ASSERT_EQ(d.classes.size(), 1u);
  EXPECT_EQ(d.classes[0].sc.defaults.replicas, 3u);
  ASSERT_EQ(d.volumes.size(), 1u);
  EXPECT_EQ(d.volumes[0].intent.replicas, 2u);
}

TEST(ApplyFile, WrongTypesAreRefused) {
  ExpectRefused(VolumeDoc("  intent: {weight: \"300\"}\n"),
                "f.yaml:7:20: spec.intent.weight: must be a number, got the string \"300\"");
  ExpectRefused(VolumeDoc("  intent: {weight: 1.5}\n"),
                "f.yaml:7:20: spec.intent.weight: must be a whole number");
  ExpectRefused(VolumeDoc("  intent: {weight: -5}\n"),
                "f.yaml:7:20: spec.intent.weight: must be a whole number");
  ExpectRefused(VolumeDoc("  intent: {weight: 010}\n"),
                "f.yaml:7:20: spec.intent.weight: must be a whole number");
  ExpectRefused(VolumeDoc("  intent: [weight]\n"), "f.yaml:7:11: spec.intent: must be a mapping");
  ExpectRefused(VolumeDoc("  intent: {limit: 5}\n"),
                "f.yaml:7:19: spec.intent.limit: must be a mapping, got '5'");
  ExpectRefused(VolumeDoc("  intent: {priority: {a: 1}}\n"),
                "f.yaml:7:22: spec.intent.priority: must be a string, got a mapping");
  ExpectRefused(VolumeDoc("  intent: {priority: urgent}\n"),
                "f.yaml:7:22: spec.intent.priority: must be standard, critical or background");
  ExpectRefused(VolumeDoc("  intent: {durability: fsync}\n"),
                "f.yaml:7:24: spec.intent.durability: must be flush, sync or none");
  ExpectRefused(VolumeDoc("  intent: {replicas: 0}\n"),
                "f.yaml:7:22: spec.intent.replicas: must be 1 to 9, got 0");
  ExpectRefused(VolumeDoc("  intent: {replicas: 10}\n"),
                "f.yaml:7:22: spec.intent.replicas: must be 1 to 9, got 10");
  ExpectRefused(VolumeDoc("  intent: {latency: {percentile: p99, boundUs: 5}}\n"),
                "f.yaml:7:34: spec.intent.latency.percentile: must be a decimal number");
  ExpectRefused(VolumeDoc("  storageClass: [a, b]\n"),
                "f.yaml:7:17: spec.storageClass: must be a string, got a sequence");
  ExpectRefused("apiVersion: spd.v1\nkind: Tenant\nmetadata: acme\n",
                "f.yaml:3:11: metadata: must be a mapping, got 'acme'");
  ExpectRefused("- a\n- b\n", "f.yaml:1:1: document: must be a mapping");
  ExpectRefused("just text\n", "f.yaml:1:1: document: must be a mapping");
  ExpectRefused(VolumeDoc("  storageClass: !!str fast\n"),
                "f.yaml:7:17: spec.storageClass: explicit YAML tags");
  ExpectRefused("apiVersion: spd.v1\nkind: Tenant\nmetadata: {name: a}\n[x]: 1\n",
                "f.yaml:4:1: document: keys must be strings, got a sequence");
  // An alias inside the node of its own anchor would be a cycle.
  ExpectRefused(
      "apiVersion: spd.v1\nkind: Volume\nmetadata: {name: a}\n"
      "spec: &s {size: 1G, intent: *s}\n",
      "f.yaml:4:29: spec.intent: an alias to its own enclosing node");
}

TEST(ApplyFile, RequiredFieldsAreNamed) {
  ExpectRefused("kind: Tenant\nmetadata: {name: a}\n", "f.yaml:1:1: apiVersion: required");
  ExpectRefused("apiVersion: spd.v1\nmetadata: {name: a}\n", "f.yaml:1:1: kind: required");
  ExpectRefused("apiVersion: spd.v1\nkind: Tenant\n", "f.yaml:1:1: metadata: required");
  ExpectRefused("apiVersion: spd.v1\nkind: Tenant\nmetadata:\n  tenant: x\n",
                "f.yaml:4:3: metadata.tenant: unknown key");
  ExpectRefused("apiVersion: spd.v1\nkind: Tenant\nmetadata: {}\n",
                "f.yaml:3:11: metadata.name: required");
  ExpectRefused("apiVersion: spd.v1\nkind: Volume\nmetadata: {name: a}\nspec:\n",
                "f.yaml:1:1: spec: required");
  ExpectRefused("apiVersion: spd.v1\nkind: Volume\nmetadata: {name: a}\nspec:\n  intent: {}\n",
                "f.yaml:5:3: spec.size: required");
  ExpectRefused(VolumeDoc("  intent:\n    latency: {percentile: 99}\n"),
                "f.yaml:8:14: spec.intent.latency.boundUs: required");
}

TEST(ApplyFile, BadNamesAreRefused) {
  ExpectRefused("apiVersion: spd.v1\nkind: Volume\nmetadata:\n  name: -db\nspec: {size: 1G}\n",
                "f.yaml:4:9: metadata.name: must not start with '-'");
  ExpectRefused("apiVersion: spd.v1\nkind: Volume\nmetadata:\n  name: \"a b\"\nspec: {size: 1G}\n",
                "f.yaml:4:9: metadata.name: only [A-Za-z0-9._-] allowed");
  ExpectRefused(
      "apiVersion: spd.v1\nkind: Tenant\nmetadata:\n  name: " + std::string(65, 'a') + "\n",
      "f.yaml:4:9: metadata.name: at most 64 characters");
  ExpectRefused(
      "apiVersion: spd.v1\nkind: Volume\nmetadata: {name: a, tenant: a/b}\nspec: {size: 1G}\n",
      "f.yaml:3:29: metadata.tenant: only [A-Za-z0-9._-] allowed");
  ExpectRefused(VolumeDoc("  storageClass: .hidden\n"),
                "f.yaml:7:17: spec.storageClass: must not start with '.'");
}

TEST(ApplyFile, SizesMustParseAndBeAPositiveMultipleOf4096) {
  const auto with_size = [](const std::string& size) {
    return "apiVersion: spd.v1\nkind: Volume\nmetadata: {name: v}\nspec:\n  size: " + size + "\n";
  };
  ExpectRefused(with_size("10X"), "f.yaml:5:9: spec.size: unknown unit 'X'");
  ExpectRefused(with_size("1.5T"), "f.yaml:5:9: spec.size: unknown unit '.5T'");
  ExpectRefused(with_size("ten"), "f.yaml:5:9: spec.size: not a size");
  ExpectRefused(with_size("99999999999999999999"), "f.yaml:5:9: spec.size: too large");
  ExpectRefused(with_size("10000"), "f.yaml:5:9: spec.size: must be a positive multiple of 4096");
  ExpectRefused(with_size("0"), "f.yaml:5:9: spec.size: must be a positive multiple of 4096");
  ExpectRefused(with_size("{}"), "f.yaml:5:9: spec.size: must be a size");
  EXPECT_EQ(MustParse(with_size("8192")).volumes.at(0).size_bytes, 8192u);
  EXPECT_EQ(MustParse(with_size("512Mi")).volumes.at(0).size_bytes, 512ull << 20);
  // bytesPerSecond takes sizes too.
  ExpectRefused(VolumeDoc("  intent: {limit: {bytesPerSecond: 2Q}}\n"),
                "f.yaml:7:36: spec.intent.limit.bytesPerSecond: unknown unit 'Q'");
}

TEST(ApplyFile, IntentRulesComeFromPolicyWithTheFilesFieldNames) {
  ExpectRefused(VolumeDoc("  intent:\n    reservation: {iops: 5000}\n    limit: {iops: 100}\n"),
                "f.yaml:9:19: spec.intent.limit.iops: must be at least "
                "spec.intent.reservation.iops (5000), got 100");
  // policy names it bytes_per_second; the file says bytesPerSecond, and so does the error.
  ExpectRefused(VolumeDoc("  intent:\n    reservation: {bytesPerSecond: 2G}\n"
                          "    limit: {bytesPerSecond: 1G}\n"),
                "f.yaml:9:29: spec.intent.limit.bytesPerSecond: must be at least "
                "spec.intent.reservation.bytesPerSecond");
  ExpectRefused(VolumeDoc("  intent: {limit: {}}\n"),
                "f.yaml:7:19: spec.intent.limit: set iops, bytesPerSecond or both");
  ExpectRefused(VolumeDoc("  intent: {reservation: {iops: 10000001}}\n"),
                "f.yaml:7:32: spec.intent.reservation.iops: at most 10000000");
  ExpectRefused(VolumeDoc("  intent: {latency: {percentile: 100, boundUs: 5}}\n"),
                "f.yaml:7:34: spec.intent.latency.percentile: must be above 0 and below 100");
  ExpectRefused(VolumeDoc("  intent: {latency: {percentile: 99, boundUs: 0}}\n"),
                "f.yaml:7:47: spec.intent.latency.boundUs: must be positive");
  ExpectRefused(VolumeDoc("  intent: {weight: 0}\n"),
                "f.yaml:7:20: spec.intent.weight: must be 1 to 10000, got 0");
  ExpectRefused(VolumeDoc("  intent: {weight: 4294967297}\n"),
                "f.yaml:7:20: spec.intent.weight: must be 1 to 10000, got 4294967297");
  // A class's intent goes through the same rules.
  ExpectRefused(
      "apiVersion: spd.v1\nkind: StorageClass\nmetadata: {name: c}\nspec:\n"
      "  intent: {reservation: {iops: 9}, limit: {iops: 8}}\n",
      "f.yaml:5:50: spec.intent.limit.iops: must be at least");
}

// A tenant with an intent (lines 1-8).
constexpr const char* kTenantWithIntent = R"(apiVersion: spd.v1
kind: Tenant
metadata:
  name: acme
spec:
  intent:
    limit: {iops: 600}
    weight: 300
)";

TEST(ApplyFile, ATenantMayCarryAnIntentOfRatesWeightAndPriority) {
  DesiredState d = MustParse(kTenantWithIntent);
  ASSERT_EQ(d.tenants.size(), 1u);
  policy::Intent want;
  want.limit = policy::Rate{600, 0};
  want.weight = 300;
  EXPECT_EQ(d.tenants[0].t, (policy::Tenant{"acme", want}));
  EXPECT_EQ(d.tenants[0].line, 1);
  d = MustParse(
      "apiVersion: spd.v1\nkind: Tenant\nmetadata: {name: a}\nspec:\n  intent:\n"
      "    reservation: {iops: 100, bytesPerSecond: 10M}\n    limit: {bytesPerSecond: 1G}\n"
      "    priority: background\n");
  ASSERT_EQ(d.tenants.size(), 1u);
  EXPECT_EQ(d.tenants[0].t.intent.reservation, (policy::Rate{100, 10ull << 20}));
  EXPECT_EQ(d.tenants[0].t.intent.limit, (policy::Rate{0, 1ull << 30}));
  EXPECT_EQ(d.tenants[0].t.intent.priority, policy::PriorityClass::kBackground);
  // spec and intent are optional; null is "not set".
  for (const char* spec :
       {"", "spec: {}\n", "spec: ~\n", "spec: {intent: ~}\n", "spec: {intent: {}}\n"}) {
    d = MustParse(std::string("apiVersion: spd.v1\nkind: Tenant\nmetadata: {name: a}\n") + spec);
    ASSERT_EQ(d.tenants.size(), 1u) << spec;
    EXPECT_EQ(d.tenants[0].t, (policy::Tenant{"a", {}})) << spec;
  }
}

TEST(ApplyFile, ATenantIntentIsRefusedNamingTheFieldAndLine) {
  const std::string head =
      "apiVersion: spd.v1\nkind: Tenant\nmetadata: {name: acme}\nspec:\n  intent:\n";
  ExpectRefused(head + "    weight: 300\n    latency: {percentile: 99, boundUs: 2000}\n",
                "f.yaml:7:14: spec.intent.latency: a tenant has no latency target; set it on its "
                "volumes");
  // Refused as a tenant's whatever its value: not "boundUs: required".
  ExpectRefused(head + "    latency: {percentile: 99}\n",
                "f.yaml:6:14: spec.intent.latency: a tenant has no latency target");
  ExpectRefused(head + "    durability: sync\n",
                "f.yaml:6:17: spec.intent.durability: a tenant has no durability; set it on its "
                "volumes");
  ExpectRefused(head + "    replicas: 2\n",
                "f.yaml:6:15: spec.intent.replicas: a tenant has no replica count; set it on its "
                "volumes");
  // The rest is an intent's rules, as for a volume or a class.
  ExpectRefused(head + "    reservation: {iops: 700}\n    limit: {iops: 600}\n",
                "f.yaml:7:19: spec.intent.limit.iops: must be at least "
                "spec.intent.reservation.iops (700), got 600");
  ExpectRefused(head + "    weight: 0\n", "f.yaml:6:13: spec.intent.weight: must be 1 to 10000");
  ExpectRefused(head + "    limit: {iops: \"600\"}\n",
                "f.yaml:6:19: spec.intent.limit.iops: must be a number");
  ExpectRefused(head + "    priority: urgent\n",
                "f.yaml:6:15: spec.intent.priority: must be standard, critical or background");
}

TEST(ApplyFile, ApiVersionAndKindAreChecked) {
  ExpectRefused("apiVersion: spd.v2\nkind: Tenant\nmetadata: {name: a}\n",
                "f.yaml:1:13: apiVersion: must be spd.v1, got 'spd.v2'");
  ExpectRefused("apiVersion: spd.v1\nkind: Volumes\nmetadata: {name: a}\n",
                "f.yaml:2:7: kind: must be Tenant, StorageClass or Volume, got 'Volumes'");
  ExpectRefused("apiVersion: spd.v1\nkind: volume\nmetadata: {name: a}\n",
                "f.yaml:2:7: kind: must be Tenant, StorageClass or Volume, got 'volume'");
  // In the third document: the position counts lines across documents.
  ExpectRefused(std::string(kExample) + "---\napiVersion: v1\nkind: Tenant\n",
                "f.yaml:29:13: apiVersion: must be spd.v1");
}

TEST(ApplyFile, DuplicatesAreRefusedPerKind) {
  ExpectRefused(std::string(kExample) +
                    "---\napiVersion: spd.v1\nkind: Volume\nmetadata:\n  name: db1\n"
                    "spec: {size: 1G}\n",
                "f.yaml:32:9: metadata.name: a second Volume named 'db1' (the first is at "
                "line 22)");
  ExpectRefused(std::string(kExample) +
                    "---\napiVersion: spd.v1\nkind: StorageClass\nmetadata: {name: fast}\n",
                "f.yaml:31:18: metadata.name: a second StorageClass named 'fast' (the first is "
                "at line 9)");
  // The same name in two kinds is fine.
  const DesiredState d = MustParse(std::string(kExample) +
                                   "---\napiVersion: spd.v1\nkind: Tenant\nmetadata:\n"
                                   "  name: db1\n");
  EXPECT_EQ(d.tenants.size(), 2u);
}

TEST(ApplyFile, MalformedYamlIsRefusedWithItsPosition) {
  // An unclosed flow mapping: yaml-cpp notices at the end of the input.
  ExpectRefused(VolumeDoc("  intent: {weight: 3\n"), "f.yaml:8:1: yaml: end of map flow not found");
  // A key less indented than its siblings but more than its parent.
  ExpectRefused("apiVersion: spd.v1\nkind: Tenant\nmetadata:\n    name: a\n  x: 1\n",
                "f.yaml:5:3: yaml: end of map not found");
  ExpectRefused("a: b: c\n", "f.yaml:1:5: yaml: illegal map value");
  ExpectRefused("apiVersion: spd.v1\nkind: *nope\n", "f.yaml:2:7: yaml: the referenced anchor");
  ExpectRefused("x: \"unterminated", "f.yaml:1:17: yaml: illegal EOF in scalar");
  ExpectRefused("apiVersion: spd.v1\nkind: Tenant\nmetadata:\n\tname: a\n",
                "f.yaml:4:6: yaml: illegal map value");  // a tab is no indentation
  // The first error in the file wins: a bad second document after a good first one, and a
  // syntax error after a bad document.
  ExpectRefused(std::string("apiVersion: spd.v1\nkind: Tenant\nmetadata: {name: -a}\n---\n{"),
                "f.yaml:3:18: metadata.name: must not start with '-'");
}

TEST(ApplyFile, LimitsAreEnforced) {
  // A file of exactly kFileBytesMax bytes is read; one byte more is refused unread.
  std::string big = std::string(kExample) + "#";
  big.resize(kFileBytesMax - 1, 'x');
  big += '\n';
  ASSERT_EQ(big.size(), kFileBytesMax);
  EXPECT_EQ(MustParse(big).volumes.size(), 1u);
  big.back() = 'x';
  big += '\n';
  ExpectRefused(big, "f.yaml:1:1: file: 4194305 bytes, more than the 4 MiB");

  // kDocumentsMax documents (empty ones count) are fine; the next one is refused where it
  // begins.
  std::string docs;
  for (size_t i = 0; i < kDocumentsMax; ++i) docs += "---\n";
  EXPECT_TRUE(MustParse(docs).volumes.empty());
  docs += "---\n";
  ExpectRefused(docs, "f.yaml:10001:1: document: more than 10000 documents in one file");
  std::string tenants;
  for (size_t i = 0; i <= kDocumentsMax; ++i)
    tenants +=
        "---\napiVersion: spd.v1\nkind: Tenant\nmetadata: {name: t" + std::to_string(i) + "}\n";
  ExpectRefused(tenants, "f.yaml:40001:1: document: more than 10000 documents");

  // Nesting: refused by the builder at kNestingMax, long before yaml-cpp's own limit or the
  // stack's end, even for a very deep input.
  const auto nested = [](size_t depth) {
    return VolumeDoc("  intent: " + std::string(depth, '[') + std::string(depth, ']') + "\n");
  };
  ExpectRefused(nested(10), "f.yaml:7:11: spec.intent: must be a mapping");
  ExpectRefused(nested(31), "f.yaml:7:41: spec.intent[0][0][0]");
  ExpectRefused(nested(100000), "f.yaml:7:41: spec.intent[0][0][0]");
  {
    Result<DesiredState> r = ParseApplyFile(nested(100000), "f.yaml");
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find(": nested more than 32 levels deep"), std::string::npos)
        << r.status().message();
  }
  // Nodes per document.
  std::string many = "[";
  for (size_t i = 0; i < kNodesMax; ++i) many += "1,";
  many += "1]";
  ExpectRefused(VolumeDoc("  intent: " + many + "\n"),
                "f.yaml:7:" + std::to_string(12 + 2 * (kNodesMax - 15)) +
                    ": document: more than 2000 YAML nodes");
}

// ---- The planner ----

TEST(ApplyPlan, FormatIntentWritesTheFilesOwnSyntax) {
  // The plan shows intents as the file writes them, so that a line can be pasted back: fixed
  // notation (a tiny percentile is 0.00001, not 1e-05, which the file refuses), sizes in units.
  policy::Intent in;
  in.latency = policy::LatencyTarget{0.00001, 3'600'000'000};
  in.reservation = policy::Rate{1, 4096};
  in.limit = policy::Rate{policy::kIopsMax, policy::kBytesPerSecondMax};
  in.weight = policy::kWeightMax;
  in.priority = policy::PriorityClass::kBackground;
  in.durability = Durability::kFlush;
  in.replicas = policy::kReplicasMax;
  const std::string text = FormatIntent(in);
  EXPECT_EQ(text,
            "{latency: {percentile: 0.00001, boundUs: 3600000000}, reservation: {iops: 1, "
            "bytesPerSecond: 4K}, limit: {iops: 10000000, bytesPerSecond: 1T}, weight: 10000, "
            "priority: background, durability: flush, replicas: 9}");
  const DesiredState d = MustParse(
      "apiVersion: spd.v1\nkind: StorageClass\nmetadata: {name: c}\nspec: {intent: " + text +
      "}\n");
  ASSERT_EQ(d.classes.size(), 1u);
  EXPECT_EQ(d.classes[0].sc.defaults, in);
  EXPECT_EQ(FormatIntent(policy::Intent{}), "{}");
}

policy::Intent Weight(uint32_t w) {
  policy::Intent i;
  i.weight = w;
  return i;
}

TEST(ApplyPlan, CreatesEverythingOnAnEmptyServerInDependencyOrder) {
  const DesiredState d = MustParse(kExample);
  Result<Plan> p = MakePlan(d, CurrentState{}, /*prune=*/false);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  ASSERT_EQ(p->changes.size(), 3u);
  EXPECT_EQ(p->changes[0].op, Change::Op::kCreate);
  EXPECT_EQ(p->changes[0].kind, "tenant");
  EXPECT_EQ(p->changes[1].kind, "storageclass");
  EXPECT_EQ(p->changes[2].kind, "volume");
  EXPECT_EQ(
      p->changes[2].details,
      (std::vector<std::string>{"size 10G", "tenant acme", "class fast", "intent {weight: 300}"}));
  EXPECT_EQ(p->unchanged, 0u);
  EXPECT_EQ(RenderPlan(*p),
            "+ tenant acme\n"
            "+ storageclass fast (intent {latency: {percentile: 99, boundUs: 2000}, "
            "reservation: {iops: 5000}, limit: {iops: 20000, bytesPerSecond: 200M}, weight: "
            "200, priority: critical, durability: sync})\n"
            "+ volume db1 (size 10G, tenant acme, class fast, intent {weight: 300})\n"
            "3 to create, 0 to update, 0 to delete, 0 unchanged\n");
}

TEST(ApplyPlan, TheStateAFileProducedGivesAnEmptyPlan) {
  const DesiredState d = MustParse(kExample);
  CurrentState s = StateOf(d);
  for (bool prune : {false, true}) {
    Result<Plan> p = MakePlan(d, s, prune);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    EXPECT_TRUE(p->changes.empty()) << RenderPlan(*p);
    EXPECT_EQ(p->unchanged, 3u);
    EXPECT_EQ(RenderPlan(*p), "0 to create, 0 to update, 0 to delete, 3 unchanged\n");
  }
  // Whatever order the server lists things in.
  s.tenants.insert(s.tenants.begin(), policy::Tenant{"zeta"});
  s.volumes.insert(s.volumes.begin(), CurrentState::Volume{"aaa", "", "", 4096, {}});
  Result<Plan> p = MakePlan(d, s, false);
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(p->changes.empty());
  EXPECT_EQ(p->unchanged, 3u);
}

TEST(ApplyPlan, TenantIntentsAreCreatedUpdatedAndComparedAsDeclared) {
  const DesiredState d =
      MustParse(std::string(kTenantWithIntent) +
                "---\napiVersion: spd.v1\nkind: Tenant\nmetadata: {name: beta}\n");
  Result<Plan> p = MakePlan(d, CurrentState{}, false);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(RenderPlan(*p),
            "+ tenant acme (intent {limit: {iops: 600}, weight: 300})\n"
            "+ tenant beta\n"
            "2 to create, 0 to update, 0 to delete, 0 unchanged\n");
  // The same file against what it produced: nothing to do.
  CurrentState s = StateOf(d);
  for (bool prune : {false, true}) {
    p = MakePlan(d, s, prune);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    EXPECT_TRUE(p->changes.empty()) << RenderPlan(*p);
    EXPECT_EQ(p->unchanged, 2u);
  }
  // The server's acme has another limit and no weight, its beta an intent the file does not
  // declare (the file is the truth: it goes).
  s.tenants[0].intent.limit = policy::Rate{900, 0};
  s.tenants[0].intent.weight.reset();
  s.tenants[1].intent.reservation = policy::Rate{100, 0};
  p = MakePlan(d, s, false);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  ASSERT_EQ(p->changes.size(), 2u);
  EXPECT_EQ(p->changes[0].op, Change::Op::kUpdate);
  EXPECT_EQ(p->changes[0].details, (std::vector<std::string>{"intent.limit.iops: 900 -> 600",
                                                             "intent.weight: (none) -> 300"}));
  EXPECT_EQ(RenderPlan(*p),
            "~ tenant acme: intent.limit.iops 900 -> 600, intent.weight (none) -> 300\n"
            "~ tenant beta: intent.reservation {iops: 100} -> (none)\n"
            "0 to create, 2 to update, 0 to delete, 0 unchanged\n");
}

TEST(ApplyPlan, UpdatesNameEveryChangedField) {
  const DesiredState d = MustParse(kExample);
  CurrentState s = StateOf(d);
  s.tenants.push_back({"beta"});
  CurrentState::Volume& v = s.volumes[0];
  v.size_bytes = 20ull << 30;  // the file shrinks it: an update like any other
  v.tenant = "beta";
  v.storage_class = "";
  v.intent = Weight(100);
  v.intent.limit = policy::Rate{30000, 0};
  policy::StorageClass& c = s.classes[0];
  c.defaults.limit->iops = 30000;
  c.defaults.limit->bytes_per_second = 0;
  c.defaults.latency.reset();
  c.defaults.priority = policy::PriorityClass::kBackground;

  Result<Plan> p = MakePlan(d, s, false);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  ASSERT_EQ(p->changes.size(), 2u);
  EXPECT_EQ(p->changes[0].op, Change::Op::kUpdate);
  EXPECT_EQ(p->changes[0].kind, "storageclass");
  EXPECT_EQ(p->changes[0].details, (std::vector<std::string>{
                                       "intent.latency: (none) -> {percentile: 99, boundUs: 2000}",
                                       "intent.limit.iops: 30000 -> 20000",
                                       "intent.limit.bytesPerSecond: (none) -> 200M",
                                       "intent.priority: background -> critical",
                                   }));
  EXPECT_EQ(p->changes[1].kind, "volume");
  EXPECT_EQ(p->changes[1].details, (std::vector<std::string>{
                                       "size: 20G -> 10G",
                                       "tenant: beta -> acme",
                                       "storageClass: (none) -> fast",
                                       "intent.limit: {iops: 30000} -> (none)",
                                       "intent.weight: 100 -> 300",
                                   }));
  EXPECT_EQ(p->unchanged, 1u);  // the tenant acme
  EXPECT_EQ(RenderPlan(*p),
            "~ storageclass fast: intent.latency (none) -> {percentile: 99, boundUs: 2000}, "
            "intent.limit.iops 30000 -> 20000, intent.limit.bytesPerSecond (none) -> 200M, "
            "intent.priority background -> critical\n"
            "~ volume db1: size 20G -> 10G, tenant beta -> acme, storageClass (none) -> fast, "
            "intent.limit {iops: 30000} -> (none), intent.weight 100 -> 300\n"
            "0 to create, 2 to update, 0 to delete, 1 unchanged\n");
  // Without prune, the tenant beta (on the server only) stays and is not counted.
}

TEST(ApplyPlan, PruneDeletesWhatTheFileLacksVolumesFirst) {
  const DesiredState d = MustParse(kExample);
  CurrentState s = StateOf(d);
  s.tenants.push_back({"old-t"});
  s.classes.push_back({"old-c", Weight(5)});
  s.classes.push_back({"a-old-c", {}});
  s.volumes.push_back({"zz", "old-t", "old-c", 4096, {}});
  s.volumes.push_back({"aa", "", "", 8192, {}});
  s.volumes[0].size_bytes = 20ull << 30;  // and one update

  Result<Plan> off = MakePlan(d, s, /*prune=*/false);
  ASSERT_TRUE(off.ok()) << off.status().ToString();
  EXPECT_EQ(RenderPlan(*off),
            "~ volume db1: size 20G -> 10G\n0 to create, 1 to update, 0 to delete, 2 unchanged\n");

  Result<Plan> on = MakePlan(d, s, /*prune=*/true);
  ASSERT_TRUE(on.ok()) << on.status().ToString();
  EXPECT_EQ(RenderPlan(*on),
            "~ volume db1: size 20G -> 10G\n"
            "- volume aa\n"
            "- volume zz\n"
            "- storageclass a-old-c\n"
            "- storageclass old-c\n"
            "- tenant old-t\n"
            "0 to create, 1 to update, 5 to delete, 2 unchanged\n");
  EXPECT_EQ(on->changes.back().op, Change::Op::kDelete);
}

TEST(ApplyPlan, PruneIsRefusedWhenItWouldDeleteWhatAStayingVolumeUses) {
  // The file's volume names a class and a tenant that only the server has: fine without prune,
  // refused with it (the plan would delete them under the volume).
  const DesiredState d = MustParse(
      "apiVersion: spd.v1\nkind: Volume\nmetadata: {name: v, tenant: t}\n"
      "spec: {size: 1G, storageClass: c}\n---\n"
      "apiVersion: spd.v1\nkind: Tenant\nmetadata: {name: t}\n");
  CurrentState s;
  s.tenants.push_back({"t"});
  s.classes.push_back({"c", {}});
  Result<Plan> off = MakePlan(d, s, false);
  ASSERT_TRUE(off.ok()) << off.status().ToString();
  EXPECT_EQ(RenderPlan(*off),
            "+ volume v (size 1G, tenant t, class c)\n"
            "1 to create, 0 to update, 0 to delete, 1 unchanged\n");
  Result<Plan> on = MakePlan(d, s, true);
  ASSERT_FALSE(on.ok());
  EXPECT_EQ(on.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(on.status().message().rfind(
                "line 1: volume v: spec.storageClass: storage class 'c' is not in the file, so "
                "pruning would delete it",
                0),
            0u)
      << on.status().message();

  // A file that declares nothing would delete everything: refused.
  Result<Plan> empty = MakePlan(DesiredState{}, s, true);
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.status().code(), StatusCode::kFailedPrecondition);
  ASSERT_TRUE(MakePlan(DesiredState{}, s, false).ok());
}

TEST(ApplyPlan, ReferencesMustExistInTheFileOrOnTheServer) {
  DesiredState d = MustParse(kExample);
  d.tenants.clear();
  Result<Plan> p = MakePlan(d, CurrentState{}, false);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(p.status().message(),
            "line 19: volume db1: metadata.tenant: tenant 'acme' is neither in the file nor on "
            "the server");
  CurrentState s;
  s.tenants.push_back({"acme"});
  EXPECT_TRUE(MakePlan(d, s, false).ok());

  d.classes.clear();
  p = MakePlan(d, s, false);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().message(),
            "line 19: volume db1: spec.storageClass: storage class 'fast' is neither in the file "
            "nor on the server");
  // A DesiredState built by hand with a name twice.
  DesiredState twice = MustParse(kExample);
  twice.volumes.push_back(twice.volumes[0]);
  twice.volumes.back().line = 40;
  p = MakePlan(twice, CurrentState{}, false);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().message(), "line 40: volume 'db1' is declared twice (also at line 19)");
}

TEST(ApplyPlan, OrderAndTextDoNotDependOnInputOrder) {
  std::string file;
  for (const char* t : {"t3", "t1", "t2"})
    file += std::string("---\napiVersion: spd.v1\nkind: Tenant\nmetadata: {name: ") + t + "}\n";
  for (const char* v : {"v2", "v9", "v1"})
    file += std::string("---\napiVersion: spd.v1\nkind: Volume\nmetadata: {name: ") + v +
            ", tenant: t2}\nspec: {size: 4096}\n";
  file += "---\napiVersion: spd.v1\nkind: StorageClass\nmetadata: {name: c}\n";
  const DesiredState d = MustParse(file);
  CurrentState s;
  s.volumes = {{"x2", "", "", 4096, {}}, {"v9", "t2", "", 8192, {}}, {"x1", "", "", 4096, {}}};
  s.classes = {{"k", {}}};
  const std::string want =
      "+ tenant t1\n+ tenant t2\n+ tenant t3\n"
      "+ storageclass c\n"
      "+ volume v1 (size 4K, tenant t2)\n+ volume v2 (size 4K, tenant t2)\n"
      "~ volume v9: size 8K -> 4K\n"
      "- volume x1\n- volume x2\n- storageclass k\n"
      "6 to create, 1 to update, 3 to delete, 0 unchanged\n";
  Result<Plan> p = MakePlan(d, s, true);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(RenderPlan(*p), want);
  // Reversed inputs: the same plan, the same text.
  DesiredState rd = d;
  std::reverse(rd.tenants.begin(), rd.tenants.end());
  std::reverse(rd.volumes.begin(), rd.volumes.end());
  CurrentState rs = s;
  std::reverse(rs.volumes.begin(), rs.volumes.end());
  Result<Plan> q = MakePlan(rd, rs, true);
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(RenderPlan(*q), want);
}

}  // namespace
}  // namespace spd::apply
