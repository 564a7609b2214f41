#include "health/collector.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "health/fake_sysfs_testing.h"

namespace spd::health {
namespace {

constexpr uint64_t kSec = 1'000'000'000;
constexpr const char* kTemp = "class/hwmon/hwmon0/temp1_input";

void BuildChip(const FakeSysfs& fs) {
  const std::string h = "class/hwmon/hwmon0/";
  fs.Write(h + "name", "spdfake");
  fs.Write(h + "temp1_input", 42500);
  fs.Write(h + "temp1_label", "CPU");
  fs.Write(h + "temp1_max", 80000);
  fs.Write(h + "temp1_crit", 95000);
  fs.Write(h + "fan1_input", 1200);
  fs.Write(h + "fan1_min", 300);
  fs.Write("class/thermal/thermal_zone0/type", "acpitz");
  fs.Write("class/thermal/thermal_zone0/temp", 27800);
}

CollectorOptions Options(const FakeSysfs& fs) {
  CollectorOptions o;
  o.sysfs_root = fs.root();
  o.cache.path = fs.Path("health.cache");
  o.cache.capacity = 64;
  return o;
}

const SensorRecord& RecordOf(const Collector& c, const std::string& name) {
  for (uint32_t i = 0; i < c.cache().sensor_count(); ++i) {
    if (name == c.cache().record(i).name) return c.cache().record(i);
  }
  ADD_FAILURE() << "no sensor " << name;
  return c.cache().record(0);
}

// The record of `name`, read through its seqlock.
SensorSample Read(const Collector& c, const std::string& name) {
  SensorSample s;
  while (!TryReadSample(RecordOf(c, name), &s)) {
  }
  return s;
}

SensorStatus StatusOf(const Collector& c, const std::string& name) {
  return static_cast<SensorStatus>(Read(c, name).status);
}

TEST(Collector, PublishesValuesAndThresholdsAfterAPoll) {
  FakeSysfs fs;
  BuildChip(fs);
  auto c = Collector::Create(Options(fs));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ASSERT_EQ((*c)->cache().sensor_count(), 3u);
  EXPECT_EQ(StatusOf(**c, "hwmon/spdfake/CPU"), SensorStatus::kStale);  // never read yet
  (*c)->PollAll(kSec);
  SensorSample s = Read(**c, "hwmon/spdfake/CPU");
  EXPECT_EQ(s.value, 42500);
  EXPECT_EQ(s.threshold_mask, kHasMax | kHasCrit);
  EXPECT_EQ(s.max, 80000);
  EXPECT_EQ(s.crit, 95000);
  EXPECT_EQ(s.updated_monotonic_ns, kSec);
  EXPECT_GT(s.updated_realtime_ns, 0u);
  EXPECT_EQ(static_cast<SensorStatus>(s.status), SensorStatus::kOk);
  EXPECT_EQ(Read(**c, "hwmon/spdfake/fan1").value, 1200);
  EXPECT_EQ(Read(**c, "thermal/acpitz").value, 27800);
  const SensorRecord& r = RecordOf(**c, "hwmon/spdfake/CPU");
  EXPECT_EQ(std::string(r.channel), "temp1");
  EXPECT_EQ(std::string(r.label), "CPU");
  EXPECT_EQ(r.period_ns, kDefaultPeriodNs);
  EXPECT_EQ((*c)->cache().header().generation.load(), 2u);

  fs.Write(kTemp, 43750);
  (*c)->PollAll(2 * kSec);
  EXPECT_EQ(Read(**c, "hwmon/spdfake/CPU").value, 43750);
  EXPECT_EQ(Read(**c, "hwmon/spdfake/CPU").update_count, 2u);
}

TEST(Collector, StatusFollowsThresholds) {
  FakeSysfs fs;
  BuildChip(fs);
  auto c = Collector::Create(Options(fs));
  ASSERT_TRUE(c.ok());
  const std::string cpu = "hwmon/spdfake/CPU";
  const std::pair<long long, SensorStatus> steps[] = {
      {79999, SensorStatus::kOk},        {80000, SensorStatus::kWarning},
      {94999, SensorStatus::kWarning},   {95000, SensorStatus::kCritical},
      {120000, SensorStatus::kCritical}, {50000, SensorStatus::kOk},
  };
  uint64_t now = kSec;
  for (const auto& [value, status] : steps) {
    fs.Write(kTemp, value);
    (*c)->PollAll(now += kSec);
    EXPECT_EQ(StatusOf(**c, cpu), status) << value;
  }
  // A threshold changed by the driver counts from the next poll.
  fs.Write("class/hwmon/hwmon0/temp1_max", 40000);
  (*c)->PollAll(now += kSec);
  EXPECT_EQ(StatusOf(**c, cpu), SensorStatus::kWarning);
  // A fan below its minimum.
  fs.Write("class/hwmon/hwmon0/fan1_input", 299);
  (*c)->PollAll(now += kSec);
  EXPECT_EQ(StatusOf(**c, "hwmon/spdfake/fan1"), SensorStatus::kWarning);
}

TEST(Collector, AFailingFileIsFailedAndRecovers) {
  FakeSysfs fs;
  BuildChip(fs);
  auto c = Collector::Create(Options(fs));
  ASSERT_TRUE(c.ok());
  (*c)->PollAll(kSec);
  fs.Empty(kTemp);
  (*c)->PollAll(2 * kSec);
  SensorSample s = Read(**c, "hwmon/spdfake/CPU");
  EXPECT_EQ(static_cast<SensorStatus>(s.status), SensorStatus::kFailed);
  EXPECT_EQ(s.last_errno, ENODATA);
  EXPECT_EQ(s.value, 42500);  // the last good one
  EXPECT_EQ(s.updated_monotonic_ns, kSec);
  fs.Write(kTemp, "garbage");
  (*c)->PollAll(3 * kSec);
  EXPECT_EQ(Read(**c, "hwmon/spdfake/CPU").last_errno, EINVAL);
  EXPECT_EQ(StatusOf(**c, "thermal/acpitz"), SensorStatus::kOk);  // the others go on
  fs.Write(kTemp, 41000);
  (*c)->PollAll(4 * kSec);
  s = Read(**c, "hwmon/spdfake/CPU");
  EXPECT_EQ(static_cast<SensorStatus>(s.status), SensorStatus::kOk);
  EXPECT_EQ(s.value, 41000);
  EXPECT_EQ(s.last_errno, 0);
}

TEST(Collector, EachSourceHasItsPeriod) {
  FakeSysfs fs;
  BuildChip(fs);
  CollectorOptions o = Options(fs);
  o.periods = {{"thermal/", 5 * kSec}};
  auto c = Collector::Create(o);
  ASSERT_TRUE(c.ok());
  for (uint64_t t = 0; t <= 10 * kSec; t += kSec) (*c)->PollDue(t);
  EXPECT_EQ(Read(**c, "hwmon/spdfake/CPU").update_count, 11u);
  EXPECT_EQ(Read(**c, "thermal/acpitz").update_count, 3u);
  EXPECT_EQ((*c)->NextDueNs(), 11 * kSec);
  EXPECT_EQ((*c)->rounds(), 11u);
  // Kept-open files: one pread per value and threshold file per poll, nothing else.
  EXPECT_EQ((*c)->pread_calls(), 11u * 5 + 3u);
}

TEST(Collector, NvmeFixtureSmartLog) {
  FakeSysfs fs;
  auto drive = std::make_unique<NvmeFixtureSource>("S5GXNX0R123456", "0000:01:00.0");
  NvmeFixtureSource* fixture = drive.get();
  NvmeSmartLog log;
  log.composite_temp_k = 310;
  log.available_spare = 100;
  log.spare_threshold = 10;
  log.percent_used = 3;
  log.power_on_hours = 12345;
  log.unsafe_shutdowns = 7;
  fixture->Set(log);
  std::vector<std::unique_ptr<NvmeHealthSource>> drives;
  drives.push_back(std::move(drive));
  auto c = Collector::Create(Options(fs), std::move(drives));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ASSERT_EQ((*c)->cache().sensor_count(), 7u);
  (*c)->PollAll(kSec);
  const std::string n = "nvme/S5GXNX0R123456/";
  EXPECT_EQ(Read(**c, n + "temp").value, 36850);
  EXPECT_EQ(Read(**c, n + "power_on_hours").value, 12345);
  EXPECT_EQ(Read(**c, n + "unsafe_shutdowns").value, 7);
  EXPECT_EQ(StatusOf(**c, n + "available_spare"), SensorStatus::kOk);
  EXPECT_EQ(std::string((*c)->cache().record(0).pci_location), "0000:01:00.0");

  log.available_spare = 9;
  log.critical_warning = kNvmeWarnSpare | kNvmeWarnTemperature;
  fixture->Set(log);
  (*c)->PollAll(2 * kSec);
  EXPECT_EQ(StatusOf(**c, n + "available_spare"), SensorStatus::kCritical);
  EXPECT_EQ(StatusOf(**c, n + "critical_warning"), SensorStatus::kCritical);
  EXPECT_EQ(StatusOf(**c, n + "temp"), SensorStatus::kWarning);
  EXPECT_EQ(StatusOf(**c, n + "media_errors"), SensorStatus::kOk);

  // Busy: the values are kept, and go stale after kStalePeriods periods without a page.
  fixture->SetError(Status(StatusCode::kUnavailable, "busy", EBUSY));
  (*c)->PollAll(2 * kSec + kStalePeriods * kSec);
  EXPECT_EQ(StatusOf(**c, n + "temp"), SensorStatus::kWarning);
  (*c)->PollAll(2 * kSec + kStalePeriods * kSec + 1);
  EXPECT_EQ(StatusOf(**c, n + "temp"), SensorStatus::kStale);
  EXPECT_EQ(Read(**c, n + "temp").value, 36850);
  // A real error fails them.
  fixture->SetError(Status::FromErrno(EIO, "admin command"));
  (*c)->PollAll(10 * kSec);
  EXPECT_EQ(StatusOf(**c, n + "temp"), SensorStatus::kFailed);
  EXPECT_EQ(Read(**c, n + "temp").last_errno, EIO);
  fixture->SetError(Status::Ok());
  (*c)->PollAll(11 * kSec);
  EXPECT_EQ(StatusOf(**c, n + "power_on_hours"), SensorStatus::kOk);
}

TEST(Collector, SmartLogBytes) {
  NvmeLogPage page{};
  page[0] = 0x04;
  page[1] = 0x3b;  // 315 K = 0x013b, little-endian
  page[2] = 0x01;
  page[3] = 97;
  page[4] = 5;
  page[5] = 12;
  page[128] = 0x10;  // power-on hours 0x2710 = 10000
  page[129] = 0x27;
  page[160] = 2;
  NvmeSmartLog l = ParseSmartLog(page);
  EXPECT_EQ(l.critical_warning, kNvmeWarnReliability);
  EXPECT_EQ(l.composite_temp_k, 315);
  EXPECT_EQ(l.available_spare, 97);
  EXPECT_EQ(l.spare_threshold, 5);
  EXPECT_EQ(l.percent_used, 12);
  EXPECT_EQ(l.power_on_hours, 10000u);
  EXPECT_EQ(l.media_errors, 2u);
  EXPECT_EQ(EncodeSmartLog(l), page);
}

// The thread sleeps between periods: with a 50 ms period it polls about 20 times a second, and
// with the default 1 s period once a second; a thread that spun would count thousands. The
// bounds follow the time that really passed (a loaded machine may stretch it), and the change
// is waited for (bounded), not expected at a set time: no timing asserts.
TEST(Collector, ThreadSleepsUntilTheNextSourceIsDue) {
  FakeSysfs fs;
  BuildChip(fs);
  CollectorOptions o = Options(fs);
  o.periods = {{"hwmon/", 50'000'000}};
  auto c = Collector::Create(o);
  ASSERT_TRUE(c.ok());
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE((*c)->Start().ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  fs.Write(kTemp, 44000);
  for (int i = 0; i < 1000 && Read(**c, "hwmon/spdfake/CPU").value != 44000; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  (*c)->Stop();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const uint64_t most = static_cast<uint64_t>(secs / 0.05) + 3;
  EXPECT_EQ(Read(**c, "hwmon/spdfake/CPU").value, 44000);
  EXPECT_GE((*c)->rounds(), 2u);
  EXPECT_LE((*c)->rounds(), most) << secs << " s";
  EXPECT_LE((*c)->wakeups(), most) << secs << " s";
  EXPECT_GE(Read(**c, "thermal/acpitz").update_count, 1u);
  EXPECT_LE(Read(**c, "thermal/acpitz").update_count, static_cast<uint64_t>(secs) + 1);
}

TEST(Collector, RejectsAZeroPeriod) {
  FakeSysfs fs;
  CollectorOptions o = Options(fs);
  o.period_ns = 0;
  EXPECT_EQ(Collector::Create(o).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace spd::health
