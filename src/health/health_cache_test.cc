#include "health/health_cache.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include "health/fake_sysfs_testing.h"
#include "testing/full_tmpfs.h"

namespace spd::health {
namespace {

constexpr uint32_t kRecords = 16;

// Every field of round i's sample derives from i: a reader that mixes two writes sees it.
SensorSample SampleOf(uint64_t i, uint32_t record) {
  SensorSample s;
  s.value = int64_t(i);
  s.min = -int64_t(i);
  s.max = int64_t(i) * 3 + record;
  s.crit = int64_t(i) ^ 0x5a5a5a5a;
  s.lcrit = int64_t(i) + 7;
  s.updated_monotonic_ns = i * 2;
  s.updated_realtime_ns = i * 5;
  s.status = uint32_t(i % 5);
  s.threshold_mask = uint32_t(i & 15);
  s.update_count = uint32_t(i);
  return s;
}

bool Consistent(const SensorSample& s, uint32_t record) {
  const uint64_t i = uint64_t(s.value);
  const SensorSample want = SampleOf(i, record);
  return s.min == want.min && s.max == want.max && s.crit == want.crit && s.lcrit == want.lcrit &&
         s.updated_monotonic_ns == want.updated_monotonic_ns &&
         s.updated_realtime_ns == want.updated_realtime_ns && s.status == want.status &&
         s.threshold_mask == want.threshold_mask && s.update_count == want.update_count;
}

struct Mapped {
  const HealthHeader* header;
  const SensorRecord* records;
};

// The segment as a client sees it: a second, read-only mapping of the file.
Mapped MapReadOnly(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY);
  EXPECT_GE(fd, 0);
  void* p = mmap(nullptr, SegmentBytes(kRecords), PROT_READ, MAP_SHARED, fd, 0);
  close(fd);
  EXPECT_NE(p, MAP_FAILED);
  const auto* h = static_cast<const HealthHeader*>(p);
  return {h, reinterpret_cast<const SensorRecord*>(h + 1)};
}

std::unique_ptr<HealthCacheWriter> MakeCache(const FakeSysfs& fs) {
  CacheOptions o;
  o.path = fs.Path("cache");
  o.capacity = kRecords;
  auto w = HealthCacheWriter::Create(o);
  EXPECT_TRUE(w.ok()) << w.status().ToString();
  for (uint32_t i = 0; i < kRecords; ++i) {
    SensorIdentity id;
    id.name = "test/" + std::to_string(i);
    id.kind = SensorKind::kTemp;
    id.unit = SensorUnit::kMilliCelsius;
    EXPECT_TRUE((*w)->AddSensor(id).ok());
  }
  return std::move(*w);
}

// On a full file system (a full /dev/shm) the cache is an error at start, not a SIGBUS at its
// first store.
TEST(HealthCache, AFullFileSystemIsAnErrorNotASignal) {
  spd::testing::FullTmpfs fs;
  if (!fs.ok()) GTEST_SKIP() << "cannot mount a tmpfs (not root?)";
  CacheOptions o;
  o.path = fs.Path("cache");
  o.capacity = kRecords;
  auto w = HealthCacheWriter::Create(o);
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.status().ToString().find("allocate health cache"), std::string::npos)
      << w.status().ToString();
}

TEST(HealthCache, HeaderAndModeForReaders) {
  FakeSysfs fs;
  auto w = MakeCache(fs);
  struct stat st {};
  ASSERT_EQ(stat(fs.Path("cache").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);
  EXPECT_EQ(uint64_t(st.st_size), SegmentBytes(kRecords));
  Mapped m = MapReadOnly(fs.Path("cache"));
  EXPECT_EQ(m.header->magic.load(), kHealthMagic);
  EXPECT_EQ(m.header->version, kHealthFormatVersion);
  EXPECT_EQ(m.header->sensor_count.load(), kRecords);
  EXPECT_EQ(std::string(m.records[3].name), "test/3");
  EXPECT_EQ(m.records[3].status.load(), uint32_t(SensorStatus::kStale));
  SensorIdentity extra;
  EXPECT_EQ(w->AddSensor(extra).status().code(), StatusCode::kResourceExhausted);
  w.reset();
  EXPECT_NE(access(fs.Path("cache").c_str(), F_OK), 0);  // unlinked on close
}

// Two daemons on one cache name would replace each other's segment and, at exit, unlink the
// other's: while a writer lives, a second one of its name is refused and touches nothing.
TEST(HealthCache, ASecondWriterOfANameIsRefusedWhileTheFirstLives) {
  FakeSysfs fs;
  const std::string path = fs.Path("cache");
  {  // a lock left by a writer that is gone (its pid, no flock) does not count
    FILE* f = fopen((path + ".lock").c_str(), "w");
    ASSERT_NE(f, nullptr);
    fputs("999999\n", f);
    fclose(f);
  }
  auto first = MakeCache(fs);
  struct stat before {
  }, after{};
  ASSERT_EQ(stat(path.c_str(), &before), 0);
  CacheOptions o;
  o.path = path;
  o.capacity = kRecords;
  auto second = HealthCacheWriter::Create(o);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(second.status().ToString().find("pid " + std::to_string(getpid())), std::string::npos)
      << second.status().ToString();
  ASSERT_EQ(stat(path.c_str(), &after), 0);
  EXPECT_EQ(after.st_ino, before.st_ino);  // the first's segment, still under the name
  EXPECT_EQ(MapReadOnly(path).header->sensor_count.load(), kRecords);
  first.reset();
  EXPECT_NE(access(path.c_str(), F_OK), 0);
  EXPECT_NE(access((path + ".lock").c_str(), F_OK), 0);  // its lock went with it
  auto third = HealthCacheWriter::Create(o);
  EXPECT_TRUE(third.ok()) << third.status().ToString();
}

// The same with a shared-memory name, the daemon's default kind.
TEST(HealthCache, ASecondWriterOfAShmNameIsRefusedToo) {
  CacheOptions o;
  o.shm_name = "/spd-health-test-" + std::to_string(getpid());
  o.capacity = kRecords;
  auto made = HealthCacheWriter::Create(o);
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  std::unique_ptr<HealthCacheWriter> first = std::move(*made);
  auto second = HealthCacheWriter::Create(o);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kFailedPrecondition);
  const int fd = shm_open(o.shm_name.c_str(), O_RDONLY, 0);
  ASSERT_GE(fd, 0);  // the first's segment stays
  close(fd);
  first.reset();
  EXPECT_LT(shm_open(o.shm_name.c_str(), O_RDONLY, 0), 0);
  EXPECT_LT(shm_open((o.shm_name + ".lock").c_str(), O_RDONLY, 0), 0);
}

// A writer rewrites every record as fast as it can, one round each time; readers (on their own
// read-only mapping) check that no record they accept mixes two writes and that no snapshot
// they accept mixes two rounds.
TEST(HealthCache, ReadersNeverSeeATornRecordOrSnapshot) {
  FakeSysfs fs;
  auto w = MakeCache(fs);
  Mapped m = MapReadOnly(fs.Path("cache"));
  std::atomic<bool> stop{false}, stop_readers{false};
  // Round 1 before any reader looks: a record never written is stale and zero, which is not
  // the SampleOf of its value (the readers, started first, used to count that as torn).
  w->BeginRound();
  for (uint32_t r = 0; r < kRecords; ++r) w->Write(r, SampleOf(1, r));
  w->EndRound(1, 1);
  std::thread writer([&] {
    for (uint64_t i = 2; !stop.load(std::memory_order_relaxed); ++i) {
      w->BeginRound();
      for (uint32_t r = 0; r < kRecords; ++r) w->Write(r, SampleOf(i, r));
      w->EndRound(i, i);
      // Rounds back to back, with a pause now and then so that some snapshots can succeed (long
      // enough for a reader to read every record under a sanitizer's slowdown).
      if (i % 64 == 0) std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
  });
  std::atomic<uint64_t> torn{0}, records_ok{0}, snapshots_ok{0}, mixed{0}, retries{0};
  auto reader = [&] {
    while (!stop_readers.load(std::memory_order_relaxed)) {
      const uint64_t g1 = m.header->generation.load(std::memory_order_acquire);
      SensorSample s[kRecords];
      for (uint32_t r = 0; r < kRecords; ++r) {
        while (!TryReadSample(m.records[r], &s[r])) retries.fetch_add(1, std::memory_order_relaxed);
        if (!Consistent(s[r], r)) torn.fetch_add(1);
        records_ok.fetch_add(1, std::memory_order_relaxed);
      }
      std::atomic_thread_fence(std::memory_order_acquire);
      if ((g1 & 1) || m.header->generation.load(std::memory_order_relaxed) != g1) continue;
      snapshots_ok.fetch_add(1, std::memory_order_relaxed);
      for (uint32_t r = 1; r < kRecords; ++r) {
        if (s[r].value != s[0].value) mixed.fetch_add(1);
      }
    }
  };
  std::vector<std::thread> readers;
  for (int i = 0; i < 2; ++i) readers.emplace_back(reader);
  // Until the readers have met the writer inside a record often enough (retries) and made a
  // whole snapshot, at most 10 s: on a loaded machine the threads may rarely run at the same
  // time. (Under TSan the 5,000 retries came within 16 ms, before any snapshot.)
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while ((retries.load() < 5000 || snapshots_ok.load() == 0) &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  stop_readers = true;
  for (auto& t : readers) t.join();
  stop = true;
  writer.join();
  std::printf("records %lu (retries %lu), snapshots %lu\n", records_ok.load(), retries.load(),
              snapshots_ok.load());
  EXPECT_EQ(torn.load(), 0u);
  EXPECT_EQ(mixed.load(), 0u);
  EXPECT_GT(retries.load(), 0u);  // the test met the writer at all
  EXPECT_GT(snapshots_ok.load(), 0u);
}

}  // namespace
}  // namespace spd::health
