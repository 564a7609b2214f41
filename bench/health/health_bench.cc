// health_bench: the measuring half of bench/health/run.sh (which starts spd2 and prints the
// table). Each mode prints one line of key=value pairs.
//
//   health_bench cached CACHE NAME BATCHES     one sensor via spdr_sensor_read_cached: ns per
//                                              read, timed in batches of kBatch reads
//   health_bench snapshot CACHE N              spdr_snapshot of every sensor, each call timed
//   health_bench sysfs FILE N                  open + read + close of one file, each timed
//   health_bench readers CACHE THREADS SECONDS THREADS threads reading every sensor in a loop
//   health_bench redfish BASE USER PASS ROUNDS  HTTPS keep-alive (one libcurl handle, a session
//                                              token): per round, GET of every Sensor of the
//                                              collection; then ROUNDS GETs of one Sensor and of
//                                              ThermalMetrics, and 5 x ROUNDS of the collection
//                                              with $expand=. (every Sensor in line)
#include <curl/curl.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "spd/libspdr.h"

namespace {

constexpr int kBatch = 64;
std::string g_discarded;  // headers of the Redfish replies after the login (cleared per GET)

uint64_t NowNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1'000'000'000ull + uint64_t(ts.tv_nsec);
}

double Pct(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, size_t(q * double(v.size())))];
}

spdr_cache* Open(const char* where) {
  spdr_cache* c = nullptr;
  const int rc = std::strchr(where + 1, '/') != nullptr ? spdr_cache_open_path(where, &c)
                                                        : spdr_cache_open(where, &c);
  if (rc != SPDR_OK) {
    std::fprintf(stderr, "health_bench: %s: %s\n", where, spdr_strerror(rc));
    std::exit(1);
  }
  return c;
}

int Cached(const char* where, const char* name, long batches) {
  spdr_cache* c = Open(where);
  spdr_sensor* s = nullptr;
  if (spdr_sensor_open(c, name, &s) != SPDR_OK) return 1;
  std::vector<double> per_read;
  per_read.reserve(size_t(batches));
  spdr_reading r{};
  int64_t sink = 0;
  for (long b = 0; b < batches; ++b) {
    const uint64_t t0 = NowNs();
    for (int i = 0; i < kBatch; ++i) {
      spdr_sensor_read_cached(s, &r, 0);
      sink += r.value;
    }
    per_read.push_back(double(NowNs() - t0) / kBatch);
  }
  std::printf("mode=cached reads=%ld p50_ns=%.1f p99_ns=%.1f sink=%lld\n", batches * kBatch,
              Pct(per_read, 0.5), Pct(per_read, 0.99), static_cast<long long>(sink & 1));
  spdr_sensor_close(s);
  spdr_cache_close(c);
  return 0;
}

int Snapshot(const char* where, long n) {
  spdr_cache* c = Open(where);
  std::vector<spdr_reading> readings(spdr_sensor_count(c));
  std::vector<double> t;
  uint32_t count = 0;
  for (long i = 0; i < n; ++i) {
    const uint64_t t0 = NowNs();
    spdr_snapshot(c, readings.data(), uint32_t(readings.size()), &count, nullptr);
    t.push_back(double(NowNs() - t0));
  }
  std::printf("mode=snapshot sensors=%u p50_ns=%.0f p99_ns=%.0f\n", count, Pct(t, 0.5),
              Pct(t, 0.99));
  spdr_cache_close(c);
  return 0;
}

int Sysfs(const char* file, long n) {
  std::vector<double> t;
  char buf[64];
  for (long i = 0; i < n; ++i) {
    const uint64_t t0 = NowNs();
    const int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 1;
    if (read(fd, buf, sizeof buf) < 0) return 1;
    close(fd);
    t.push_back(double(NowNs() - t0));
  }
  std::printf("mode=sysfs file=%s p50_ns=%.0f p99_ns=%.0f\n", file, Pct(t, 0.5), Pct(t, 0.99));
  return 0;
}

int Readers(const char* where, int threads, double seconds) {
  spdr_cache* c = Open(where);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> reads{0};
  std::vector<std::thread> ts;
  for (int k = 0; k < threads; ++k) {
    ts.emplace_back([&] {
      std::vector<spdr_reading> readings(spdr_sensor_count(c));
      uint32_t count = 0;
      uint64_t mine = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        if (spdr_snapshot(c, readings.data(), uint32_t(readings.size()), &count, nullptr) == 0)
          mine += count;
      }
      reads.fetch_add(mine);
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& t : ts) t.join();
  std::printf("mode=readers threads=%d cached_reads_per_s=%.0f\n", threads,
              double(reads.load()) / seconds);
  spdr_cache_close(c);
  return 0;
}

size_t Collect(char* p, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(p, size * n);
  return size * n;
}

// One GET on the kept-alive handle; returns the body ("" on failure).
std::string Get(CURL* h, const std::string& url) {
  std::string body;
  g_discarded.clear();
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
  long code = 0;
  if (curl_easy_perform(h) != CURLE_OK) return "";
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
  return code == 200 ? body : "";
}

int Redfish(const std::string& base, const char* user, const char* pass, long rounds) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
  CURL* h = curl_easy_init();
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);  // the daemon's self-signed certificate
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &Collect);
  // A session: X-Auth-Token on every request (no password check per request).
  std::string hdrs, body;
  const std::string login = nlohmann::json{{"UserName", user}, {"Password", pass}}.dump();
  curl_easy_setopt(h, CURLOPT_URL, (base + "/redfish/v1/SessionService/Sessions").c_str());
  curl_easy_setopt(h, CURLOPT_POSTFIELDS, login.c_str());
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, &Collect);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, &hdrs);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
  curl_slist* list = curl_slist_append(nullptr, "Content-Type: application/json");
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, list);
  if (curl_easy_perform(h) != CURLE_OK) return 1;
  const size_t k = hdrs.find("X-Auth-Token: ");
  if (k == std::string::npos) return 1;
  const std::string token = hdrs.substr(k + 14, hdrs.find('\r', k) - k - 14);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, &g_discarded);  // later replies' headers
  curl_slist_free_all(list);
  list = curl_slist_append(nullptr, ("X-Auth-Token: " + token).c_str());
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, list);
  const std::string sensors = Get(h, base + "/redfish/v1/Chassis/1/Sensors");
  std::vector<std::string> uris;
  const nlohmann::json collection = nlohmann::json::parse(sensors, nullptr, false);
  if (collection.is_discarded() || !collection.contains("Members")) return 1;
  for (const auto& m : collection["Members"]) uris.push_back(m["@odata.id"].get<std::string>());
  if (uris.empty()) return 1;
  std::vector<double> round_ms, one_ms, thermal_ms, expand_ms;
  for (long r = 0; r < rounds; ++r) {
    const uint64_t t0 = NowNs();
    for (const std::string& u : uris) {
      if (Get(h, base + u).empty()) return 1;
    }
    round_ms.push_back(double(NowNs() - t0) / 1e6);
  }
  for (long r = 0; r < rounds * 20; ++r) {
    uint64_t t0 = NowNs();
    if (Get(h, base + uris[0]).empty()) return 1;
    one_ms.push_back(double(NowNs() - t0) / 1e6);
    t0 = NowNs();
    if (Get(h, base + "/redfish/v1/Chassis/1/ThermalSubsystem/ThermalMetrics").empty()) return 1;
    thermal_ms.push_back(double(NowNs() - t0) / 1e6);
  }
  // Every Sensor in one GET ($expand=. of the collection); the reply must hold them all.
  const std::string expand_url = base + "/redfish/v1/Chassis/1/Sensors?$expand=.";
  const nlohmann::json expanded = nlohmann::json::parse(Get(h, expand_url), nullptr, false);
  if (expanded.is_discarded() || expanded["Members"].size() != uris.size()) return 1;
  for (const auto& m : expanded["Members"]) {
    if (!m.contains("ReadingType")) return 1;
  }
  for (long r = 0; r < rounds * 5; ++r) {
    const uint64_t t0 = NowNs();
    if (Get(h, expand_url).empty()) return 1;
    expand_ms.push_back(double(NowNs() - t0) / 1e6);
  }
  std::printf(
      "mode=redfish sensors=%zu all_p50_ms=%.3f all_p99_ms=%.3f one_p50_ms=%.3f "
      "one_p99_ms=%.3f thermal_p50_ms=%.3f thermal_p99_ms=%.3f expand_p50_ms=%.3f "
      "expand_p99_ms=%.3f\n",
      uris.size(), Pct(round_ms, 0.5), Pct(round_ms, 0.99), Pct(one_ms, 0.5), Pct(one_ms, 0.99),
      Pct(thermal_ms, 0.5), Pct(thermal_ms, 0.99), Pct(expand_ms, 0.5), Pct(expand_ms, 0.99));
  curl_slist_free_all(list);
  curl_easy_cleanup(h);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "cached" && argc == 5) return Cached(argv[2], argv[3], std::atol(argv[4]));
  if (mode == "snapshot" && argc == 4) return Snapshot(argv[2], std::atol(argv[3]));
  if (mode == "sysfs" && argc == 4) return Sysfs(argv[2], std::atol(argv[3]));
  if (mode == "readers" && argc == 5)
    return Readers(argv[2], std::atoi(argv[3]), std::atof(argv[4]));
  if (mode == "redfish" && argc == 6) return Redfish(argv[2], argv[3], argv[4], std::atol(argv[5]));
  std::fprintf(stderr, "usage: see the comment at the top of bench/health/health_bench.cc\n");
  return 2;
}
