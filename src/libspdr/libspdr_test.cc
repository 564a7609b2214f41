#include "spd/libspdr.h"

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <string>
#include <thread>
#include <vector>

#include "health/collector.h"
#include "health/fake_sysfs_testing.h"
#include "spd/libspdr.hpp"

namespace spd::health {
namespace {

uint64_t Now() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1'000'000'000ull + uint64_t(ts.tv_nsec);
}

const char* kTemp = "class/hwmon/hwmon1/temp1_input";

class LibspdrTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs_.Write("class/hwmon/hwmon0/name", "spdfake");
    fs_.Write("class/hwmon/hwmon0/in0_input", 1100);
    fs_.Write("class/hwmon/hwmon0/power1_input", 12500000);
    const std::string pci = "devices/pci0000:00/0000:00:01.0/0000:01:00.0";
    fs_.Write(pci + "/nvme/nvme0/dev", "259:0");
    fs_.Symlink("../../../" + pci + "/nvme/nvme0", "class/hwmon/hwmon1/device");
    fs_.Write("class/hwmon/hwmon1/name", "nvme");
    fs_.Write(kTemp, 35850);
    fs_.Write("class/hwmon/hwmon1/temp1_label", "Composite");
    fs_.Write("class/hwmon/hwmon1/temp1_max", 80000);
    fs_.Write("class/hwmon/hwmon1/temp1_crit", 85000);
    CollectorOptions o;
    o.sysfs_root = fs_.root();
    o.cache.path = fs_.Path("cache");
    o.cache.capacity = 32;
    o.period_ns = period_ns_;
    auto c = Collector::Create(o);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    collector_ = std::move(*c);
    collector_->PollAll(Now());
    ASSERT_EQ(spdr_cache_open_path(fs_.Path("cache").c_str(), &cache_), SPDR_OK);
  }
  void TearDown() override { spdr_cache_close(cache_); }

  FakeSysfs fs_;
  uint64_t period_ns_ = 1'000'000'000;
  std::unique_ptr<Collector> collector_;
  spdr_cache* cache_ = nullptr;
};

TEST_F(LibspdrTest, OpenErrors) {
  spdr_cache* c = nullptr;
  EXPECT_EQ(spdr_cache_open_path(fs_.Path("nothing").c_str(), &c), SPDR_ENOENT);
  fs_.Write("junk", std::string(600, 'x'));
  EXPECT_EQ(spdr_cache_open_path(fs_.Path("junk").c_str(), &c), SPDR_EFORMAT);
  EXPECT_EQ(spdr_cache_open("/spd2-health-test-none", &c), SPDR_ENOENT);
  EXPECT_EQ(spdr_cache_open_path(nullptr, &c), SPDR_EINVAL);
  spdr_sensor* s = nullptr;
  EXPECT_EQ(spdr_sensor_open(cache_, "hwmon/none/temp1", &s), SPDR_ENOENT);
}

TEST_F(LibspdrTest, ListOpenByNameAndPciAliasAndRead) {
  ASSERT_EQ(spdr_sensor_count(cache_), 3u);
  std::vector<std::string> names;
  for (uint32_t i = 0; i < spdr_sensor_count(cache_); ++i) {
    spdr_sensor_info info;
    ASSERT_EQ(spdr_sensor_info_at(cache_, i, &info), SPDR_OK);
    names.push_back(info.name);
  }
  EXPECT_EQ(names, (std::vector<std::string>{"hwmon/spdfake/in0", "hwmon/spdfake/power1",
                                             "hwmon/nvme/Composite"}));
  spdr_sensor* by_name = nullptr;
  spdr_sensor* by_pci = nullptr;
  ASSERT_EQ(spdr_sensor_open(cache_, "hwmon/nvme/Composite", &by_name), SPDR_OK);
  ASSERT_EQ(spdr_sensor_open(cache_, "pcie/0000:01:00.0/Composite", &by_pci), SPDR_OK);
  spdr_reading r;
  ASSERT_EQ(spdr_sensor_read_cached(by_pci, &r, SPDR_READ_NO_BLOCK), SPDR_OK);
  EXPECT_EQ(r.value, 35850);
  EXPECT_DOUBLE_EQ(r.value_si, 35.85);
  EXPECT_EQ(r.status, SPDR_STATUS_OK);
  EXPECT_EQ(r.threshold_mask, SPDR_HAS_MAX | SPDR_HAS_CRIT);
  EXPECT_EQ(r.crit, 85000);
  spdr_sensor_info info;
  ASSERT_EQ(spdr_sensor_info_get(by_name, &info), SPDR_OK);
  EXPECT_STREQ(info.pci_location, "0000:01:00.0");
  EXPECT_EQ(info.unit, SPDR_UNIT_MILLI_CELSIUS);
  EXPECT_STREQ(spdr_unit_name(info.unit), "C");

  fs_.Write(kTemp, 86000);
  collector_->PollAll(Now());
  ASSERT_EQ(spdr_sensor_read_cached(by_name, &r, 0), SPDR_OK);
  EXPECT_EQ(r.value, 86000);
  EXPECT_EQ(r.status, SPDR_STATUS_CRITICAL);
  EXPECT_EQ(spdr_sensor_read_cached(by_name, &r, 0x80), SPDR_EINVAL);
  spdr_sensor_close(by_name);
  spdr_sensor_close(by_pci);

  spdr_sensor* power = nullptr;
  ASSERT_EQ(spdr_sensor_open(cache_, "hwmon/spdfake/power1", &power), SPDR_OK);
  ASSERT_EQ(spdr_sensor_read_cached(power, &r, SPDR_READ_NO_BLOCK), SPDR_OK);
  EXPECT_DOUBLE_EQ(r.value_si, 12.5);
  spdr_sensor_close(power);
}

// The reader judges age itself: a writer that stops polling makes its values stale.
TEST_F(LibspdrTest, StatusAndAge) {
  spdr_sensor* s = nullptr;
  ASSERT_EQ(spdr_sensor_open(cache_, "hwmon/spdfake/in0", &s), SPDR_OK);
  int status = -1;
  uint64_t age = 0;
  ASSERT_EQ(spdr_sensor_status(s, &status, &age), SPDR_OK);
  EXPECT_EQ(status, SPDR_STATUS_OK);
  EXPECT_LT(age, 1'000'000'000u);
  // 3 periods of 1 s have not passed; pretend they have by polling "in the past".
  collector_->PollAll(Now() - 4'000'000'000ull);
  ASSERT_EQ(spdr_sensor_status(s, &status, &age), SPDR_OK);
  EXPECT_EQ(status, SPDR_STATUS_STALE);
  EXPECT_GE(age, 4'000'000'000u);
  spdr_reading r;
  ASSERT_EQ(spdr_sensor_read_cached(s, &r, SPDR_READ_NO_BLOCK), SPDR_OK);
  EXPECT_EQ(r.status, SPDR_STATUS_OK);  // as the writer wrote it
  spdr_sensor_close(s);
}

TEST_F(LibspdrTest, SnapshotIsOneRound) {
  std::vector<spdr_reading> rs(2);
  uint32_t count = 0;
  uint64_t gen = 0;
  EXPECT_EQ(spdr_snapshot(cache_, rs.data(), 2, &count, &gen), SPDR_ERANGE);
  EXPECT_EQ(count, 3u);
  rs.resize(count);
  ASSERT_EQ(spdr_snapshot(cache_, rs.data(), count, &count, &gen), SPDR_OK);
  EXPECT_EQ(gen, 2u);
  EXPECT_EQ(rs[0].value, 1100);
  EXPECT_EQ(rs[2].value, 35850);
  spdr::Cache cxx = spdr::Cache::OpenPath(fs_.Path("cache").c_str());
  ASSERT_TRUE(cxx);
  std::vector<spdr_reading> all;
  ASSERT_EQ(cxx.Snapshot(&all, &gen), SPDR_OK);
  EXPECT_EQ(all.size(), 3u);
  EXPECT_EQ(cxx.List()[1].name, std::string("hwmon/spdfake/power1"));
  spdr::Sensor sensor = cxx.OpenSensor("hwmon/spdfake/in0");
  spdr_reading r;
  ASSERT_EQ(sensor.ReadCached(&r), SPDR_OK);
  EXPECT_DOUBLE_EQ(r.value_si, 1.1);
}

TEST_F(LibspdrTest, WatchFdReportsAThresholdCrossing) {
  spdr_watch_options o{};
  o.interval_ms = 5;
  spdr_watch* w = nullptr;
  ASSERT_EQ(spdr_watch_start(cache_, &o, &w), SPDR_OK);
  const int fd = spdr_watch_fd(w);
  ASSERT_GE(fd, 0);
  spdr_event e;
  EXPECT_EQ(spdr_watch_next(w, &e), SPDR_EAGAIN);
  pollfd p{fd, POLLIN, 0};
  EXPECT_EQ(poll(&p, 1, 50), 0);  // nothing changed
  fs_.Write(kTemp, 81000);
  collector_->PollAll(Now());
  ASSERT_EQ(poll(&p, 1, 5000), 1);
  ASSERT_EQ(spdr_watch_next(w, &e), SPDR_OK);
  EXPECT_EQ(e.type, SPDR_EVENT_STATUS);
  EXPECT_EQ(e.index, 2u);
  EXPECT_EQ(e.old_status, SPDR_STATUS_OK);
  EXPECT_EQ(e.new_status, SPDR_STATUS_WARNING);
  EXPECT_EQ(e.new_value, 81000);
  EXPECT_EQ(spdr_watch_next(w, &e), SPDR_EAGAIN);
  EXPECT_EQ(poll(&p, 1, 0), 0);  // drained: no longer readable
  spdr_watch_stop(w);
}

TEST_F(LibspdrTest, WatchCallbackReportsValueChanges) {
  struct Got {
    std::atomic<int> events{0};
    std::atomic<int64_t> last{0};
  } got;
  spdr_watch_options o{};
  o.interval_ms = 5;
  o.value_delta = 1000;
  o.user = &got;
  o.callback = [](const spdr_event* e, void* user) {
    auto* g = static_cast<Got*>(user);
    if (e->type == SPDR_EVENT_VALUE) g->last = e->new_value;
    g->events++;
  };
  spdr_watch* w = nullptr;
  ASSERT_EQ(spdr_watch_start(cache_, &o, &w), SPDR_OK);
  EXPECT_EQ(spdr_watch_fd(w), -1);
  fs_.Write(kTemp, 36000);  // moved 150: below the delta
  collector_->PollAll(Now());
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(got.events.load(), 0);
  fs_.Write(kTemp, 37000);
  collector_->PollAll(Now());
  for (int i = 0; i < 500 && got.events.load() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  spdr_watch_stop(w);
  EXPECT_EQ(got.events.load(), 1);
  EXPECT_EQ(got.last.load(), 37000);
}

// Installs a seccomp filter that kills the process on any system call but exit_group.
void AllowOnlyExit() {
  sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_exit_group, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
  };
  sock_fprog prog{sizeof(filter) / sizeof(filter[0]), filter};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) _exit(3);
  if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) _exit(4);
}

// Runs body in a child under AllowOnlyExit; its wait status.
template <typename F>
int InSeccompChild(F body) {
  const pid_t pid = fork();
  if (pid == 0) {
    AllowOnlyExit();
    const int rc = body();
    syscall(SYS_exit_group, rc);
  }
  int status = 0;
  EXPECT_EQ(waitpid(pid, &status, 0), pid);
  return status;
}

// The filter itself works: a child that makes one system call dies of SIGSYS.
TEST(LibspdrSeccomp, FilterKillsOnASystemCall) {
  const int status = InSeccompChild([] { return getppid() > 0 ? 0 : 1; });
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGSYS);
}

// spdr_sensor_read_cached makes no system call: 200,000 reads under the filter, while the
// collector's thread rewrites the record every millisecond in the parent.
TEST_F(LibspdrTest, ReadCachedMakesNoSystemCall) {
  collector_.reset();
  CollectorOptions o;
  o.sysfs_root = fs_.root();
  o.cache.path = fs_.Path("cache2");
  o.period_ns = 1'000'000;
  auto c = Collector::Create(o);
  ASSERT_TRUE(c.ok());
  spdr_cache* cache = nullptr;
  ASSERT_EQ(spdr_cache_open_path(fs_.Path("cache2").c_str(), &cache), SPDR_OK);
  spdr_sensor* s = nullptr;
  ASSERT_EQ(spdr_sensor_open(cache, "pcie/0000:01:00.0/Composite", &s), SPDR_OK);
  ASSERT_TRUE((*c)->Start().ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const int status = InSeccompChild([s] {
    int good = 0;
    for (int i = 0; i < 200000; ++i) {
      spdr_reading r;
      const int rc = spdr_sensor_read_cached(s, &r, SPDR_READ_NO_BLOCK);
      if (rc == SPDR_OK && r.value == 35850) ++good;
      if (rc != SPDR_OK && rc != SPDR_EAGAIN) return 2;
    }
    return good > 0 ? 0 : 1;
  });
  (*c)->Stop();
  EXPECT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_GT((*c)->rounds(), 5u);
  spdr_sensor_close(s);
  spdr_cache_close(cache);
}

}  // namespace
}  // namespace spd::health
