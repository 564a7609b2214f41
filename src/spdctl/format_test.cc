// spdctl's JSON and YAML shapes are a public interface: pinned by the golden files in
// tests/golden/spdctl/. A change that alters them fails here; change the files only together
// with apiVersion (and say so in docs/spdctl.md). SPD_UPDATE_GOLDEN=1 rewrites them.
#include "spdctl/format.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

namespace spd::ctl {
namespace {

std::string GoldenDir() {
  // Tests run from the build directory; the sources are one level up (scripts/build.sh).
  for (const char* d :
       {"../tests/golden/spdctl", "tests/golden/spdctl", "../../tests/golden/spdctl"}) {
    std::ifstream probe(std::string(d) + "/volume.json");
    if (probe) return d;
  }
  return "../tests/golden/spdctl";
}

void ExpectGolden(const std::string& name, const std::string& got) {
  const std::string path = GoldenDir() + "/" + name;
  if (std::getenv("SPD_UPDATE_GOLDEN")) {
    std::ofstream(path) << got;
    return;
  }
  std::ifstream f(path);
  ASSERT_TRUE(f) << "no golden file " << path;
  std::stringstream want;
  want << f.rdbuf();
  EXPECT_EQ(got, want.str()) << "output of " << name << " changed shape";
}

v1::Volume SampleVolume(const char* name, uint32_t id) {
  v1::Volume v;
  v.set_name(name);
  v.set_id(id);
  v.set_pool("default");
  v.set_size_bytes(10ull << 30);
  v.set_allocated_bytes(3ull << 20);
  v.set_durability(v1::DURABILITY_SYNC);
  v.set_read_only(false);
  v.set_users(2);
  v.set_tenant("acme");
  v.set_storage_class("fast");
  return v;
}

TEST(SpdctlFormat, VolumeShapesArePinned) {
  const v1::Volume v = SampleVolume("db1", 7);
  ExpectGolden("volume.json", Render(VolumeDoc(v), Output::kJson));
  ExpectGolden("volume.yaml", Render(VolumeDoc(v), Output::kYaml));
  ExpectGolden("volume.txt", Render(VolumeDoc(v), Output::kTable));
  const std::vector<v1::Volume> list = {SampleVolume("db1", 7), SampleVolume("true", 8)};
  ExpectGolden("volume_list.json", Render(VolumeListDoc(list), Output::kJson));
  ExpectGolden("volume_list.yaml", Render(VolumeListDoc(list), Output::kYaml));
  ExpectGolden("volume_list.txt", Render(VolumeListDoc(list), Output::kTable));
  ExpectGolden("volume_list_empty.json", Render(VolumeListDoc({}), Output::kJson));
  // With the QoS scheduler on, a volume carries its intent's status.
  v1::Volume q = SampleVolume("db1", 7);
  v1::IntentStatus* st = q.mutable_intent_status();
  st->set_state("violated");
  st->set_reason("latency p99 3.1 ms exceeds the target 2 ms");
  st->set_window_seconds(1);
  st->set_iops(5000);
  st->set_bytes_per_second(20480000);
  st->set_latency_percentile(99);
  st->set_latency_seconds(0.0031);
  st->set_queued_seconds_mean(0.0002);
  ExpectGolden("volume_status.json", Render(VolumeDoc(q), Output::kJson));
  ExpectGolden("volume_status.txt", Render(VolumeDoc(q), Output::kTable));
}

TEST(SpdctlFormat, PoolNodeAndEventShapesArePinned) {
  v1::Pool p;
  p.set_name("default");
  p.set_path("/var/lib/spd2/pool.img");
  p.set_backend("uring");
  p.set_size_bytes(16ull << 30);
  p.set_chunk_size_bytes(1 << 20);
  p.set_allocated_bytes(5ull << 30);
  p.set_free_bytes(11ull << 30);
  p.set_volumes(3);
  p.set_commits(42);
  p.set_provisioned_bytes(40ull << 30);  // thin: more than the pool's size
  ExpectGolden("pool_list.json", Render(PoolListDoc({p}), Output::kJson));
  ExpectGolden("pool_list.yaml", Render(PoolListDoc({p}), Output::kYaml));
  ExpectGolden("pool.json", Render(PoolDoc(p), Output::kJson));
  ExpectGolden("pool.yaml", Render(PoolDoc(p), Output::kYaml));
  ExpectGolden("pool_list.txt", Render(PoolListDoc({p}), Output::kTable));
  v1::NodeInfo n;
  n.set_hostname("node-a");
  n.set_version("0.1.0");
  n.set_pid(1234);
  n.set_uptime_seconds(99);
  n.set_reactors(2);
  n.set_engine("io_uring");
  n.set_data_dir("/var/lib/spd2");
  n.add_nbd_endpoints("unix:/var/lib/spd2/nbd.sock");
  n.add_nbd_endpoints("tcp:127.0.0.1:10809");
  n.set_metrics_endpoint("127.0.0.1:9465");
  ExpectGolden("node.json", Render(NodeDoc(n), Output::kJson));
  ExpectGolden("node.yaml", Render(NodeDoc(n), Output::kYaml));
  ExpectGolden("node.txt", Render(NodeDoc(n), Output::kTable));
  // A node of a cluster (--cluster) has three more fields; a lone node's document lacks them.
  n.set_node_name("n1");
  n.set_cluster_state("unconfirmed");
  n.set_cluster_detail("the lease could not be renewed in time");
  ExpectGolden("node_cluster.json", Render(NodeDoc(n), Output::kJson));
  ExpectGolden("node_cluster.yaml", Render(NodeDoc(n), Output::kYaml));
  v1::Event e;
  e.set_seq(5);
  e.set_time_unix_ns(1796000000000000000);
  e.set_type(v1::EVENT_TYPE_VOLUME_RESIZED);
  e.set_volume("db1");
  *e.mutable_volume_info() = SampleVolume("db1", 7);
  ExpectGolden("event.json", Render(EventDoc(e), Output::kJson));
  ExpectGolden("event.yaml", Render(EventDoc(e), Output::kYaml));
  ExpectGolden("event.txt", Render(EventDoc(e), Output::kTable));
  // An event about no volume (the pool, the backend): no volumeInfo.
  v1::Event ro;
  ro.set_seq(6);
  ro.set_time_unix_ns(1796000000000000000);
  ro.set_type(v1::EVENT_TYPE_POOL_READ_ONLY);
  ro.set_message(
      "log commit failed (Input/output error): the pool is read-only until spd2 restarts");
  ExpectGolden("event_pool.json", Render(EventDoc(ro), Output::kJson));
  ExpectGolden("event_pool.yaml", Render(EventDoc(ro), Output::kYaml));
  ExpectGolden("event_pool.txt", Render(EventDoc(ro), Output::kTable));
}

TEST(SpdctlFormat, TenantShapesArePinned) {
  // A tenant with an intent (rates of its volumes together, weight, priority) and one without:
  // its intent is {} then, as a storage class without defaults.
  v1::Tenant t;
  t.set_name("acme");
  t.mutable_intent()->mutable_reservation()->set_iops(100);
  t.mutable_intent()->mutable_limit()->set_iops(600);
  t.mutable_intent()->mutable_limit()->set_bytes_per_second(50ull << 20);
  t.mutable_intent()->set_weight(300);
  t.mutable_intent()->set_priority(v1::PRIORITY_CLASS_CRITICAL);
  v1::Tenant bare;
  bare.set_name("beta");
  ExpectGolden("tenant.json", Render(TenantDoc(t), Output::kJson));
  ExpectGolden("tenant.yaml", Render(TenantDoc(t), Output::kYaml));
  ExpectGolden("tenant.txt", Render(TenantDoc(t), Output::kTable));
  ExpectGolden("tenant_bare.json", Render(TenantDoc(bare), Output::kJson));
  ExpectGolden("tenant_list.json", Render(TenantListDoc({t, bare}), Output::kJson));
  ExpectGolden("tenant_list.yaml", Render(TenantListDoc({t, bare}), Output::kYaml));
  ExpectGolden("tenant_list.txt", Render(TenantListDoc({t, bare}), Output::kTable));
}

v1::Intent SampleIntent() {
  v1::Intent in;
  in.mutable_latency()->set_percentile(99);
  in.mutable_latency()->set_bound_us(2000);
  in.mutable_reservation()->set_iops(100);
  in.mutable_limit()->set_bytes_per_second(200ull << 20);
  in.set_weight(50);
  in.set_priority(v1::PRIORITY_CLASS_BACKGROUND);
  in.set_durability(v1::DURABILITY_NONE);
  return in;
}

TEST(SpdctlFormat, StorageClassAndPolicyShapesArePinned) {
  v1::StorageClass fast;
  fast.set_name("fast");
  *fast.mutable_defaults() = SampleIntent();
  v1::StorageClass bare;
  bare.set_name("plain");
  ExpectGolden("storage_class.json", Render(StorageClassDoc(fast), Output::kJson));
  ExpectGolden("storage_class.yaml", Render(StorageClassDoc(fast), Output::kYaml));
  ExpectGolden("storage_class.txt", Render(StorageClassDoc(fast), Output::kTable));
  ExpectGolden("storage_class_list.json", Render(StorageClassListDoc({fast, bare}), Output::kJson));
  ExpectGolden("storage_class_list.yaml", Render(StorageClassListDoc({fast, bare}), Output::kYaml));
  ExpectGolden("storage_class_list.txt", Render(StorageClassListDoc({fast, bare}), Output::kTable));
  // A volume's policy: its own intent, and the class's defaults overridden by it.
  v1::VolumePolicy p;
  p.set_volume("db1");
  p.set_tenant("acme");
  p.set_storage_class("fast");
  p.mutable_intent()->set_weight(300);
  *p.mutable_effective() = SampleIntent();
  p.mutable_effective()->set_weight(300);
  v1::VolumePolicy none;  // a volume without a policy of its own
  none.set_volume("scratch");
  ExpectGolden("volume_policy.json", Render(VolumePolicyDoc(p), Output::kJson));
  ExpectGolden("volume_policy.yaml", Render(VolumePolicyDoc(p), Output::kYaml));
  ExpectGolden("volume_policy.txt", Render(VolumePolicyDoc(p), Output::kTable));
  ExpectGolden("volume_policy_list.json", Render(VolumePolicyListDoc({p, none}), Output::kJson));
  ExpectGolden("volume_policy_list.yaml", Render(VolumePolicyListDoc({p, none}), Output::kYaml));
  ExpectGolden("volume_policy_list.txt", Render(VolumePolicyListDoc({p, none}), Output::kTable));
}

TEST(SpdctlFormat, AccessShapesArePinned) {
  std::vector<v1::UidRole> roles(2);
  roles[0].set_uid(1001);
  roles[0].set_role(v1::ROLE_VIEWER);
  roles[1].set_uid(1002);
  roles[1].set_role(v1::ROLE_TENANT);
  roles[1].set_tenant("acme");
  ExpectGolden("uid_role_list.json", Render(UidRoleListDoc(roles), Output::kJson));
  ExpectGolden("uid_role_list.yaml", Render(UidRoleListDoc(roles), Output::kYaml));
  ExpectGolden("uid_role_list.txt", Render(UidRoleListDoc(roles), Output::kTable));
  ExpectGolden("uid_role_list_empty.json", Render(UidRoleListDoc({}), Output::kJson));
  std::vector<v1::Token> tokens(2);
  tokens[0].set_id("0123456789abcdef");
  tokens[0].set_role(v1::ROLE_OPERATOR);
  tokens[0].set_description("ci");
  tokens[0].set_created_unix(1796000000);
  tokens[1].set_id("fedcba9876543210");
  tokens[1].set_role(v1::ROLE_TENANT);
  tokens[1].set_tenant("acme");
  tokens[1].set_description("acme's provisioner");
  tokens[1].set_created_unix(1796000100);
  tokens[1].set_expires_unix(1796086500);
  ExpectGolden("token_list.json", Render(TokenListDoc(tokens), Output::kJson));
  ExpectGolden("token_list.yaml", Render(TokenListDoc(tokens), Output::kYaml));
  ExpectGolden("token_list.txt", Render(TokenListDoc(tokens), Output::kTable));
}

TEST(SpdctlFormat, NewTokenAndPlanShapesArePinned) {
  v1::CreateTokenResponse r;
  r.mutable_token()->set_id("0123456789ab");
  r.mutable_token()->set_role(v1::ROLE_VIEWER);
  r.mutable_token()->set_description("dashboard");
  r.mutable_token()->set_created_unix(1796000000);
  r.mutable_token()->set_expires_unix(1796003600);
  r.set_secret("spd_0123456789ab_" + std::string(43, 'x'));
  ExpectGolden("new_token.json", Render(NewTokenDoc(r), Output::kJson));
  ExpectGolden("new_token.yaml", Render(NewTokenDoc(r), Output::kYaml));
  // The table is the secret alone, as before: TOKEN=$(spdctl token create ...).
  EXPECT_EQ(Render(NewTokenDoc(r), Output::kTable), r.secret() + "\n");
  apply::Plan p;
  using Op = apply::Change::Op;
  p.changes.push_back({Op::kCreate, "tenant", "acme", {}});
  p.changes.push_back({Op::kCreate, "volume", "db1", {"size 1G", "tenant acme", "class fast"}});
  p.changes.push_back({Op::kUpdate, "volume", "db2", {"size: 1G -> 2G"}});
  p.changes.push_back({Op::kDelete, "storageclass", "old", {}});
  p.unchanged = 2;
  ExpectGolden("plan.json", Render(PlanDoc(p, false, true), Output::kJson));
  ExpectGolden("plan.yaml", Render(PlanDoc(p, false, true), Output::kYaml));
  ExpectGolden("plan_dry_run.json", Render(PlanDoc(p, true, false), Output::kJson));
  ExpectGolden("plan_empty.yaml", Render(PlanDoc(apply::Plan{{}, 3}, true, false), Output::kYaml));
}

TEST(SpdctlFormat, AuditAndDeletedShapesArePinned) {
  v1::AuditHead h;
  h.set_seq(42);
  h.set_hash("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");
  ExpectGolden("audit_head.json", Render(AuditHeadDoc(h), Output::kJson));
  ExpectGolden("audit_head.yaml", Render(AuditHeadDoc(h), Output::kYaml));
  ExpectGolden("audit_head.txt", Render(AuditHeadDoc(h), Output::kTable));
  const Doc ok = AuditVerificationDoc(true, 42, 0, "");
  const Doc bad = AuditVerificationDoc(false, 1, 2, "entry 2: hash does not match its content");
  ExpectGolden("audit_verification.json", Render(ok, Output::kJson));
  ExpectGolden("audit_verification.yaml", Render(ok, Output::kYaml));
  ExpectGolden("audit_verification.txt", Render(ok, Output::kTable));
  ExpectGolden("audit_verification_damaged.json", Render(bad, Output::kJson));
  ExpectGolden("audit_verification_damaged.txt", Render(bad, Output::kTable));
  ExpectGolden("deleted.json", Render(DeletedDoc("db1"), Output::kJson));
  ExpectGolden("deleted.yaml", Render(DeletedDoc("db1"), Output::kYaml));
  ExpectGolden("deleted.txt", Render(DeletedDoc("db1"), Output::kTable));
}

TEST(SpdctlFormat, CalibrationShapeIsPinned) {
  v1::CalibrateResponse c;
  c.set_cost_model_json(R"({"version":1,"read_base_us":80.5,"write_base_us":20})");
  c.set_path("/var/lib/spd2/default.cost.json");
  c.set_max_capacity_error(0.125);
  c.set_elapsed_seconds(14.5);
  c.set_applied(true);
  v1::CalibrationPoint* r = c.add_points();
  r->set_op("read");
  r->set_bytes(4096);
  r->set_qd1_latency_seconds(0.0001);
  r->set_queue_depth(32);
  r->set_saturated_iops(50000);
  r->set_saturated(true);
  r->set_model_iops(48000);
  v1::CalibrationPoint* f = c.add_points();
  f->set_op("flush");
  f->set_bytes(0);
  f->set_qd1_latency_seconds(0.0005);
  ExpectGolden("calibration.json", Render(CalibrationDoc(c), Output::kJson));
  ExpectGolden("calibration.yaml", Render(CalibrationDoc(c), Output::kYaml));
  ExpectGolden("calibration.txt", Render(CalibrationDoc(c), Output::kTable));
}

TEST(SpdctlFormat, ClusterShapesArePinned) {
  v1::ListClusterNodesResponse nodes;
  nodes.set_listed(true);
  nodes.set_revision(17);
  for (int i = 0; i < 2; ++i) {
    v1::ClusterNode* n = nodes.add_nodes();
    n->set_name(i == 0 ? "n1" : "n2");
    n->set_hostname(i == 0 ? "host-a" : "host-b");
    n->set_pid(100 + i);
    n->set_version("0.1.0");
    n->add_nbd_endpoints(i == 0 ? "tcp:10.0.0.1:10809" : "tcp:10.0.0.2:10809");
    n->set_lease_id(7587000000 + i);
    n->set_self(i == 0);
  }
  ExpectGolden("cluster_node_list.json", Render(ClusterNodeListDoc(nodes), Output::kJson));
  ExpectGolden("cluster_node_list.yaml", Render(ClusterNodeListDoc(nodes), Output::kYaml));
  ExpectGolden("cluster_node_list.txt", Render(ClusterNodeListDoc(nodes), Output::kTable));
  // Not read from etcd yet, and a broken watch: the list may be behind.
  v1::ListClusterNodesResponse unknown;
  ExpectGolden("cluster_node_list_unknown.txt",
               Render(ClusterNodeListDoc(unknown), Output::kTable));
  nodes.set_watch_error("etcd: connection refused");
  ExpectGolden("cluster_node_list_behind.json", Render(ClusterNodeListDoc(nodes), Output::kJson));
  v1::ListReplicasResponse reps;
  v1::ReplicatedVolume* v = reps.add_volumes();
  v->set_name("db2");
  v->set_size_bytes(10ull << 30);
  v->set_replicas(2);
  v->add_nodes("n1");
  v->add_nodes("n2");
  v->set_primary("n1");
  v->set_epoch(12);
  v->set_durability(v1::DURABILITY_ASYNC);
  v->set_lag_bytes(1 << 20);
  v->set_lag_ms(35);
  v1::ReplicaState* s1 = v->add_states();
  s1->set_node("n1");
  s1->set_state("in_sync");
  s1->set_epoch(12);
  v1::ReplicaState* s2 = v->add_states();
  s2->set_node("n2");
  s2->set_state("out_of_sync");
  s2->set_epoch(12);
  s2->set_detail("resyncing: 40% copied");
  s2->set_acked(977);
  ExpectGolden("replica_list.json", Render(ReplicaListDoc(reps), Output::kJson));
  ExpectGolden("replica_list.yaml", Render(ReplicaListDoc(reps), Output::kYaml));
  ExpectGolden("replica_list.txt", Render(ReplicaListDoc(reps), Output::kTable));
  // GetVolume of a replicated volume: its set under the volume, one line under the table.
  v1::Volume rv = SampleVolume("db2", 9);
  *rv.mutable_replication() = reps.volumes(0);
  ExpectGolden("volume_replicated.json", Render(VolumeDoc(rv), Output::kJson));
  ExpectGolden("volume_replicated.txt", Render(VolumeDoc(rv), Output::kTable));
  rv.mutable_replication()->set_primary("");
  rv.mutable_replication()->set_lag_bytes(0);
  ExpectGolden("volume_replicated_no_primary.txt", Render(VolumeDoc(rv), Output::kTable));
  // ListVolumes: a column more when a volume of the list is replicated ("-" for a local one).
  rv.mutable_replication()->set_primary("n2");
  const std::vector<v1::Volume> mixed = {SampleVolume("db1", 7), rv};
  ExpectGolden("volume_list_replicated.json", Render(VolumeListDoc(mixed), Output::kJson));
  ExpectGolden("volume_list_replicated.txt", Render(VolumeListDoc(mixed), Output::kTable));
}

// Every kind spdctl prints has a JSON and a YAML golden file whose document is of that kind, and
// every golden file is of a known kind: a new kind without goldens fails here.
TEST(SpdctlFormat, EveryKindHasJsonAndYamlGoldens) {
  std::set<std::string> kinds(std::begin(kKinds), std::end(kKinds));
  std::map<std::string, std::set<std::string>> seen;  // kind -> extensions
  for (const auto& f : std::filesystem::directory_iterator(GoldenDir())) {
    const std::string ext = f.path().extension().string();
    if (ext != ".json" && ext != ".yaml") continue;
    std::ifstream in(f.path());
    std::stringstream text;
    text << in.rdbuf();
    std::string kind;
    if (ext == ".json") {
      kind = Doc::parse(text.str()).value("kind", "");
    } else {
      const std::string t = text.str();
      const size_t k = t.find("\nkind: \"");
      if (k != std::string::npos) kind = t.substr(k + 8, t.find('"', k + 8) - (k + 8));
    }
    EXPECT_TRUE(kinds.count(kind)) << f.path() << " is of kind '" << kind << "', not in kKinds";
    seen[kind].insert(ext);
  }
  for (const std::string& k : kinds) {
    EXPECT_TRUE(seen[k].count(".json")) << "no JSON golden file of kind " << k;
    EXPECT_TRUE(seen[k].count(".yaml")) << "no YAML golden file of kind " << k;
  }
}

TEST(SpdctlFormat, YamlQuotesStringsThatWouldReadAsOtherTypes) {
  // A volume named "true" or "10" must come back as a string from any YAML reader.
  v1::Volume v = SampleVolume("true", 1);
  const std::string y = Render(VolumeDoc(v), Output::kYaml);
  EXPECT_NE(y.find("name: \"true\""), std::string::npos) << y;
  v.set_name("10");
  EXPECT_NE(Render(VolumeDoc(v), Output::kYaml).find("name: \"10\""), std::string::npos);
}

}  // namespace
}  // namespace spd::ctl
