#include "qos/cost_model.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>

namespace spd::qos {
namespace {

using json = nlohmann::json;

// A sim whose latencies are below its service times: one op at a time, parallelism 1.
SimOptions SerialSim() {
  SimOptions o;
  o.iops_max = 5000;                      // 200 µs per op
  o.bandwidth_bytes_per_s = 256'000'000;  // 3.90625 ns per byte
  o.latency_base_ns = 50'000;
  o.read_extra_ns = 20'000;
  o.write_extra_ns = 60'000;
  o.flush_extra_ns = 300'000;
  return o;
}

TEST(ForSim, SerialDeviceCostsAreItsServiceTimes) {
  const CostModel m = ForSim(SerialSim());
  ASSERT_TRUE(m.Validate().ok()) << m.Validate().ToString();
  EXPECT_EQ(m.source, "sim");
  // 4 KiB: 200 µs + 4096 * 3.90625 ns = 216 µs of service; QD1 latency max(70 µs, 216 µs).
  EXPECT_DOUBLE_EQ(m.parallelism, 1.0);
  EXPECT_DOUBLE_EQ(m.read.base_ns, 200'000);
  EXPECT_DOUBLE_EQ(m.read.ns_per_byte, 3.90625);
  EXPECT_DOUBLE_EQ(m.write.base_ns, 200'000);
  EXPECT_DOUBLE_EQ(m.write.ns_per_byte, 3.90625);
  EXPECT_EQ(m.Cost(IoOp::kRead, 4096), 216'000u);
  EXPECT_EQ(m.Cost(IoOp::kWrite, 1 << 20), 200'000u + 4'096'000u);
  EXPECT_NEAR(m.CapacityIops(IoOp::kRead, 4096), 1e9 / 216'000, 1e-9);
  EXPECT_NEAR(m.CapacityIops(IoOp::kWrite, 1 << 20), 1e9 / 4'296'000, 1e-9);
  // Flush: max(50 µs + 300 µs, 200 µs); discard: max(50 µs, 200 µs).
  EXPECT_DOUBLE_EQ(m.flush_ns, 350'000);
  EXPECT_DOUBLE_EQ(m.discard_ns, 200'000);
  EXPECT_EQ(m.Cost(IoOp::kFlush, 12345), 350'000u);
  EXPECT_EQ(m.Cost(IoOp::kDiscard, 1 << 20), 200'000u);
  EXPECT_EQ(m.Cost(IoOp::kWriteZeroes, 4096), 200'000u);
}

TEST(ForSim, LatencyAboveServiceTimeIsParallelism) {
  SimOptions o;
  o.iops_max = 100'000;                     // 10 µs per op
  o.bandwidth_bytes_per_s = 1'000'000'000;  // 1 ns per byte
  o.latency_base_ns = 100'000;
  o.latency_jitter_ns = 20'000;  // median +10 µs
  const CostModel m = ForSim(o);
  ASSERT_TRUE(m.Validate().ok()) << m.Validate().ToString();
  // A 4 KiB read: 110 µs at QD1, 14.096 µs of the device at depth.
  const double p = 110'000.0 / 14'096.0;
  EXPECT_NEAR(m.parallelism, p, 1e-9);
  EXPECT_NEAR(m.read.base_ns, p * 10'000, 1e-6);
  EXPECT_NEAR(m.read.ns_per_byte, p * 1.0, 1e-9);
  EXPECT_EQ(m.Cost(IoOp::kRead, 4096), 110'000u);  // the anchor: its QD1 latency
  // The capacity is the sim's: one op at a time.
  EXPECT_NEAR(m.CapacityIops(IoOp::kRead, 4096), 1e9 / 14'096, 1e-6);
  EXPECT_NEAR(m.CapacityIops(IoOp::kWrite, 65536), 1e9 / (10'000 + 65'536), 1e-6);
  EXPECT_DOUBLE_EQ(m.flush_ns, 110'000);
  EXPECT_DOUBLE_EQ(m.discard_ns, 110'000);
}

TEST(ForSim, UnitsAreParallelism) {
  SimOptions o;
  o.iops_max = 4000;  // over 4 units: an operation alone takes 1 ms
  o.units = 4;
  const CostModel m = ForSim(o);
  ASSERT_TRUE(m.Validate().ok()) << m.Validate().ToString();
  EXPECT_DOUBLE_EQ(m.parallelism, 4.0);
  EXPECT_EQ(m.Cost(IoOp::kRead, 4096), 1'000'000u);            // its QD1 latency
  EXPECT_NEAR(m.CapacityIops(IoOp::kRead, 4096), 4000, 0.01);  // ns_per_byte at its minimum
  EXPECT_DOUBLE_EQ(m.flush_ns, 1'000'000);
}

TEST(ForSim, NoCapacityModelServesEverythingAtOnce) {
  SimOptions o;
  o.latency_base_ns = 30'000;
  o.write_extra_ns = 10'000;
  const CostModel m = ForSim(o);
  ASSERT_TRUE(m.Validate().ok()) << m.Validate().ToString();
  EXPECT_DOUBLE_EQ(m.parallelism, CostModel::kParallelismMax);
  EXPECT_DOUBLE_EQ(m.read.base_ns, 30'000);
  EXPECT_DOUBLE_EQ(m.write.base_ns, 40'000);
  // And a sim with no latency either is still a valid model.
  EXPECT_TRUE(ForSim(SimOptions{}).Validate().ok());
}

TEST(ForSim, BandwidthOnlyGetsTheSmallestBase) {
  SimOptions o;
  o.bandwidth_bytes_per_s = 500'000'000;
  const CostModel m = ForSim(o);
  ASSERT_TRUE(m.Validate().ok()) << m.Validate().ToString();
  EXPECT_DOUBLE_EQ(m.read.base_ns, CostModel::kNsMin);
  EXPECT_DOUBLE_EQ(m.read.ns_per_byte, 2.0);
  EXPECT_NEAR(m.CapacityIops(IoOp::kRead, 1 << 20) * (1 << 20), 500e6, 500);
}

TEST(CostModel, DefaultIsASataClassSsd) {
  const CostModel m = CostModel::Default();
  ASSERT_TRUE(m.Validate().ok()) << m.Validate().ToString();
  EXPECT_EQ(m.source, "default");
  EXPECT_NEAR(static_cast<double>(m.Cost(IoOp::kRead, 4096)), 100'000, 2'000);  // QD1 latency
  EXPECT_NEAR(m.CapacityIops(IoOp::kRead, 4096), 50'000, 1'000);
  EXPECT_NEAR(m.CapacityIops(IoOp::kRead, 1 << 20) * (1 << 20), 500e6, 10e6);
  EXPECT_NEAR(m.CapacityIops(IoOp::kWrite, 4096), 29'000, 1'000);
  EXPECT_NEAR(m.CapacityIops(IoOp::kWrite, 1 << 20) * (1 << 20), 400e6, 10e6);
}

TEST(CostModel, CostIsNeverZero) {
  CostModel m;  // all zero: invalid, but Cost still charges something
  EXPECT_FALSE(m.Validate().ok());
  EXPECT_EQ(m.Cost(IoOp::kRead, 4096), 1u);
}

// Every field, set to each kind of bad value, is refused with an error naming it.
TEST(CostModel, ValidateNamesTheBadField) {
  struct Field {
    const char* name;
    double CostModel::*top;
    double OpCost::*op;
    OpCost CostModel::*which;
  };
  const Field fields[] = {
      {"read.base_ns", nullptr, &OpCost::base_ns, &CostModel::read},
      {"read.ns_per_byte", nullptr, &OpCost::ns_per_byte, &CostModel::read},
      {"write.base_ns", nullptr, &OpCost::base_ns, &CostModel::write},
      {"write.ns_per_byte", nullptr, &OpCost::ns_per_byte, &CostModel::write},
      {"flush_ns", &CostModel::flush_ns, nullptr, nullptr},
      {"discard_ns", &CostModel::discard_ns, nullptr, nullptr},
      {"parallelism", &CostModel::parallelism, nullptr, nullptr},
  };
  const double bad[] = {-1, 0, 1e300, std::numeric_limits<double>::quiet_NaN(),
                        std::numeric_limits<double>::infinity()};
  for (const Field& f : fields) {
    for (double v : bad) {
      CostModel m = CostModel::Default();
      if (f.top) {
        m.*f.top = v;
      } else {
        (m.*f.which).*f.op = v;
      }
      const Status s = m.Validate();
      EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << f.name << " = " << v;
      EXPECT_NE(s.message().find(std::string(f.name) + " ="), std::string_view::npos)
          << s.ToString();
    }
  }
  CostModel m = CostModel::Default();
  m.parallelism = 0.5;  // below one: a device serves at least its QD1 rate
  EXPECT_FALSE(m.Validate().ok());
}

class CostModelFile : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/spd-cost-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = CostModelPath(dir_, "pool0");
  }
  void TearDown() override {
    unlink(path_.c_str());
    unlink((path_ + ".tmp").c_str());
    rmdir(dir_.c_str());
  }
  void Write(const std::string& text) {
    std::ofstream f(path_, std::ios::binary | std::ios::trunc);
    f << text;
  }
  // Loads path_, expects failure with `code` and `needle` in the message; returns the message.
  std::string LoadFails(StatusCode code, const std::string& needle) {
    auto r = CostModel::Load(path_);
    EXPECT_FALSE(r.ok());
    if (r.ok()) return "";
    EXPECT_EQ(r.status().code(), code) << r.status().ToString();
    const std::string msg(r.status().message());
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    EXPECT_NE(msg.find(path_), std::string::npos) << msg;  // which file
    return msg;
  }
  json Valid() {
    CostModel m = CostModel::Default();
    m.depth = 8;
    return json::parse(m.ToJson());
  }

  std::string dir_;
  std::string path_;
};

TEST_F(CostModelFile, PathIsBesideThePool) {
  EXPECT_EQ(CostModelPath("/var/lib/spd", "fast"), "/var/lib/spd/fast.cost.json");
  EXPECT_EQ(CostModelPath("/var/lib/spd/", "fast"), "/var/lib/spd/fast.cost.json");
}

TEST_F(CostModelFile, SaveLoadRoundTripIsExact) {
  SimOptions o;
  o.iops_max = 7;  // odd numbers: 1e9/7 and 1e9/3 have no short decimal form
  o.bandwidth_bytes_per_s = 3'000'007;
  o.latency_base_ns = 1'000'000'001;
  CostModel m = ForSim(o);
  m.source = "calibrated uring \"quoted\" \xc3\xa9";
  m.depth = 24;
  ASSERT_TRUE(m.Validate().ok()) << m.Validate().ToString();
  ASSERT_TRUE(m.Save(path_).ok());
  auto back = CostModel::Load(path_);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->read.base_ns, m.read.base_ns);
  EXPECT_EQ(back->read.ns_per_byte, m.read.ns_per_byte);
  EXPECT_EQ(back->write.base_ns, m.write.base_ns);
  EXPECT_EQ(back->write.ns_per_byte, m.write.ns_per_byte);
  EXPECT_EQ(back->flush_ns, m.flush_ns);
  EXPECT_EQ(back->discard_ns, m.discard_ns);
  EXPECT_EQ(back->parallelism, m.parallelism);
  EXPECT_EQ(back->depth, 24);
  EXPECT_EQ(back->source, m.source);
  EXPECT_NE(access((path_ + ".tmp").c_str(), F_OK), 0);  // the temporary is gone

  // Saving again replaces the file.
  CostModel d = CostModel::Default();
  ASSERT_TRUE(d.Save(path_).ok());
  auto again = CostModel::Load(path_);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->read.base_ns, d.read.base_ns);
  EXPECT_EQ(again->source, "default");
  EXPECT_EQ(again->depth, 0);  // not written when not measured
}

TEST_F(CostModelFile, SaveRefusesAnInvalidModelAndKeepsTheOldFile) {
  ASSERT_TRUE(CostModel::Default().Save(path_).ok());
  CostModel m = CostModel::Default();
  m.write.ns_per_byte = -2;
  const Status s = m.Save(path_);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("write.ns_per_byte"), std::string_view::npos) << s.ToString();
  auto back = CostModel::Load(path_);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->write.ns_per_byte, CostModel::Default().write.ns_per_byte);
}

TEST_F(CostModelFile, SaveIntoAMissingDirectoryFails) {
  const Status s = CostModel::Default().Save(dir_ + "/no/such/dir/x.cost.json");
  EXPECT_FALSE(s.ok());
}

TEST_F(CostModelFile, MissingFileIsNotFound) {
  auto r = CostModel::Load(path_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound) << r.status().ToString();
}

TEST_F(CostModelFile, CorruptFilesAreRefused) {
  Write(std::string("\x00\x01\x02garbage", 10));
  LoadFails(StatusCode::kDataLoss, "not JSON");
  const std::string text = CostModel::Default().ToJson();
  Write(text.substr(0, text.size() / 2));  // torn
  LoadFails(StatusCode::kDataLoss, "not JSON");
  Write("");
  LoadFails(StatusCode::kDataLoss, "not JSON");
  Write("[1, 2, 3]");
  LoadFails(StatusCode::kDataLoss, "not a JSON object");
  Write(std::string(100 << 10, ' '));
  LoadFails(StatusCode::kDataLoss, "larger than");
}

TEST_F(CostModelFile, ForeignFilesAreRefused) {
  Write(R"({"volumes": [], "version": 1})");
  LoadFails(StatusCode::kDataLoss, "foreign");
  json j = Valid();
  j["format"] = "spd-pool-superblock";
  Write(j.dump());
  LoadFails(StatusCode::kDataLoss, "format is 'spd-pool-superblock'");
}

TEST_F(CostModelFile, OtherVersionsAreRefused) {
  json j = Valid();
  j["version"] = 2;
  Write(j.dump());
  LoadFails(StatusCode::kDataLoss, "version 2 is not supported");
  j["version"] = "1";
  Write(j.dump());
  LoadFails(StatusCode::kDataLoss, "'version'");
  j.erase("version");
  Write(j.dump());
  LoadFails(StatusCode::kDataLoss, "'version'");
}

TEST_F(CostModelFile, EachMissingFieldIsNamed) {
  for (const char* field : {"parallelism", "read", "write", "flush_ns", "discard_ns"}) {
    json j = Valid();
    j.erase(field);
    Write(j.dump());
    LoadFails(StatusCode::kDataLoss, std::string("missing field '") + field + "'");
  }
  for (const char* op : {"read", "write"}) {
    for (const char* field : {"base_ns", "ns_per_byte"}) {
      json j = Valid();
      j[op].erase(field);
      Write(j.dump());
      LoadFails(StatusCode::kDataLoss, std::string("missing field '") + op + "." + field + "'");
    }
  }
  // "source" and "depth" are optional.
  json j = Valid();
  j.erase("source");
  j.erase("depth");
  Write(j.dump());
  auto r = CostModel::Load(path_);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->source, "");
  EXPECT_EQ(r->depth, 0);
  EXPECT_EQ(r->SaturationDepth(), r->parallelism);
}

TEST(CostModel, SaturationDepthIsTheMeasuredDepthOrTheParallelism) {
  CostModel m = CostModel::Default();  // parallelism 5
  EXPECT_EQ(m.SaturationDepth(), 5);
  m.depth = 32;
  EXPECT_EQ(m.SaturationDepth(), 32);
  m.depth = 2;  // below the parallelism: the parallelism stands
  EXPECT_EQ(m.SaturationDepth(), 5);
}

TEST_F(CostModelFile, MistypedAndUnknownFieldsAreNamed) {
  json j = Valid();
  j["flush_ns"] = "1000";
  Write(j.dump());
  LoadFails(StatusCode::kDataLoss, "'flush_ns' is not a number");
  j = Valid();
  j["read"] = 5;
  Write(j.dump());
  LoadFails(StatusCode::kDataLoss, "'read' is not an object");
  j = Valid();
  j["source"] = 5;
  Write(j.dump());
  LoadFails(StatusCode::kDataLoss, "'source' is not a string");
  j = Valid();
  j["read_ns"] = 5;  // a typo
  Write(j.dump());
  LoadFails(StatusCode::kDataLoss, "unknown field 'read_ns'");
  j = Valid();
  j["write"]["base"] = 5;
  Write(j.dump());
  LoadFails(StatusCode::kDataLoss, "unknown field 'write.base'");
}

TEST_F(CostModelFile, AbsurdNumbersAreRefusedByName) {
  json j = Valid();
  j["write"]["base_ns"] = -100;
  Write(j.dump());
  LoadFails(StatusCode::kInvalidArgument, "write.base_ns = -100");
  j = Valid();
  j["parallelism"] = 0;
  Write(j.dump());
  LoadFails(StatusCode::kInvalidArgument, "parallelism = 0");
  j = Valid();
  j["discard_ns"] = 1e15;
  Write(j.dump());
  LoadFails(StatusCode::kInvalidArgument, "discard_ns = 1000000000000000 is outside");
  j = Valid();
  j["depth"] = 0.5;
  Write(j.dump());
  LoadFails(StatusCode::kInvalidArgument, "depth = 0.5");
  j = Valid();
  j["depth"] = "16";
  Write(j.dump());
  LoadFails(StatusCode::kDataLoss, "'depth' is not a number");
}

}  // namespace
}  // namespace spd::qos
