// spdctl's JSON and YAML shapes are a public interface: pinned by the golden files in
// tests/golden/spdctl/. A change that alters them fails here; change the files only together
// with apiVersion (and say so in docs/spdctl.md). SPD_UPDATE_GOLDEN=1 rewrites them.
#include "spdctl/format.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
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
  ExpectGolden("pool_list.json", Render(PoolListDoc({p}), Output::kJson));
  ExpectGolden("pool.yaml", Render(PoolDoc(p), Output::kYaml));
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
  ExpectGolden("node.txt", Render(NodeDoc(n), Output::kTable));
  v1::Event e;
  e.set_seq(5);
  e.set_time_unix_ns(1796000000000000000);
  e.set_type(v1::EVENT_TYPE_VOLUME_RESIZED);
  e.set_volume("db1");
  *e.mutable_volume_info() = SampleVolume("db1", 7);
  ExpectGolden("event.json", Render(EventDoc(e), Output::kJson));
  ExpectGolden("event.txt", Render(EventDoc(e), Output::kTable));
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
