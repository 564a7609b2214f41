// One metrics server serving the per-volume exposition of N volumes (default 1,000), for
// bench/exposer_compare, which starts this binary once per server and round, scrapes it and reads
// its CPU, threads and context switches from /proc:
//
//   exposer_compare --server ours|promcpp [--volumes 1000] [--threads 2]
//
//  ours     spd::MetricsServer on a spd::Reactor (on a thread of its own here; in spd2 it shares
//           the daemon's main reactor), the text from a spd::MetricsCollector that renders the
//           spd_volume_* families the way src/volume/volume_metrics.cc does (PromHeader,
//           PromSample, PromLabel), so the body is spd::RenderCountersPrometheus();
//  promcpp  prometheus-cpp's prometheus::Exposer (civetweb) with a prometheus::Collectable whose
//           Collect() builds the same families as prometheus::MetricFamily objects at every
//           scrape; the text is prometheus-cpp's TextSerializer. That is what adopting it means.
//           --threads: civetweb's worker threads (the Exposer's num_threads, default 2).
//
// Both read the same synthetic data (seeded, so every process has the same values): every volume
// has seen reads, writes, flushes and trims, so each carries four latency histograms, as in
// bench/metrics' scrape of 1,000 volumes (the largest scrape).
//
// Once listening it prints one line of JSON (port, threads of the process before and after the
// server started) and then serves until its standard input closes.
#include <dirent.h>
#include <signal.h>
#include <time.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <future>
#include <iostream>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/exposer.h>
#include <prometheus/metric_family.h>

#include "common/counters.h"
#include "reactor/reactor.h"
#include "telemetry/metrics_server.h"

namespace {

// The classes a volume of bench/metrics has seen (read, write, flush, trim) and the histogram
// bounds of spd_volume_request_duration_seconds (src/volume/volume_stats.h).
constexpr int kOps = 4;
const char* const kOpNames[kOps] = {"read", "write", "flush", "discard"};
constexpr int kBuckets = 10;  // finite ones; index kBuckets is +Inf
const double kBoundsSeconds[kBuckets] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                         0.005,  0.01,    0.025,  0.1,   1};

struct VolumeData {
  std::string name;
  std::string tenant;
  uint64_t ops[kOps];
  uint64_t hist[kOps][kBuckets + 1];  // per bucket, not cumulative
  uint64_t latency_ns[kOps];
  uint64_t read_bytes;
  uint64_t written_bytes;
  uint64_t inflight;
  uint64_t queue_ns;
  uint64_t size_bytes;
  uint64_t allocated_bytes;
};

std::vector<VolumeData> MakeVolumes(int n) {
  std::mt19937_64 rng(42);
  std::vector<VolumeData> vols(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    VolumeData& v = vols[static_cast<size_t>(i)];
    char name[32];
    std::snprintf(name, sizeof name, "vol%04d", i);
    v.name = name;
    std::snprintf(name, sizeof name, "tenant-%02d", i % 20);
    v.tenant = name;
    for (int c = 0; c < kOps; ++c) {
      v.ops[c] = 0;
      v.latency_ns[c] = 0;
      for (int b = 0; b <= kBuckets; ++b) {
        // Mostly fast requests, a tail in the slower buckets: counts of varied digit lengths.
        const uint64_t n_b = rng() % (b < 4 ? 5'000'000 : b < 8 ? 50'000 : 500);
        v.hist[c][b] = n_b;
        v.ops[c] += n_b;
        const double bound = b < kBuckets ? kBoundsSeconds[b] : 2.0;
        v.latency_ns[c] += static_cast<uint64_t>(static_cast<double>(n_b) * bound * 0.7e9);
      }
    }
    v.read_bytes = v.ops[0] * 4096 + rng() % 4096;
    v.written_bytes = v.ops[1] * 4096 + rng() % 4096;
    v.inflight = rng() % 33;
    v.queue_ns = rng() % 10'000'000'000ull;
    v.size_bytes = (1 + rng() % 1024) << 30;
    v.allocated_bytes = v.size_bytes / 2 + (rng() % (v.size_bytes / 2)) / 4096 * 4096;
  }
  return vols;
}

// ---- ours: the text as src/volume/volume_metrics.cc renders it ----

std::string Seconds(double s) {
  char b[32];
  std::snprintf(b, sizeof b, "%.9g", s);
  return b;
}

void RenderOurs(const std::vector<VolumeData>& vols, std::string* out) {
  std::vector<std::string> labels;
  labels.reserve(vols.size());
  for (const VolumeData& v : vols)
    labels.push_back("volume=" + spd::PromLabel(v.name) + ",tenant=" + spd::PromLabel(v.tenant));
  std::string le[kBuckets + 1];
  for (int b = 0; b < kBuckets; ++b) le[b] = ",le=\"" + Seconds(kBoundsSeconds[b]) + "\"";
  le[kBuckets] = ",le=\"+Inf\"";
  std::string op[kOps];
  for (int c = 0; c < kOps; ++c) op[c] = ",op=\"" + std::string(kOpNames[c]) + "\"";

  auto per_volume = [&](const char* name, const char* help, const char* type, auto value) {
    spd::PromHeader(out, name, help, type);
    for (size_t i = 0; i < vols.size(); ++i) spd::PromSample(out, name, labels[i], value(vols[i]));
  };
  spd::PromHeader(out, "spd_volume_requests_total",
                  "Requests a volume's clients got an answer to, by operation.", "counter");
  for (size_t i = 0; i < vols.size(); ++i)
    for (int c = 0; c < kOps; ++c)
      spd::PromSample(out, "spd_volume_requests_total", labels[i] + op[c],
                      static_cast<double>(vols[i].ops[c]));
  per_volume("spd_volume_read_bytes_total", "Bytes read by a volume's clients.", "counter",
             [](const VolumeData& v) { return static_cast<double>(v.read_bytes); });
  per_volume("spd_volume_written_bytes_total", "Bytes written by a volume's clients.", "counter",
             [](const VolumeData& v) { return static_cast<double>(v.written_bytes); });
  spd::PromHeader(out, "spd_volume_request_duration_seconds",
                  "Time from a request's arrival at the frontend to its reply queued, by "
                  "operation.",
                  "histogram");
  for (size_t i = 0; i < vols.size(); ++i) {
    for (int c = 0; c < kOps; ++c) {
      const std::string l = labels[i] + op[c];
      uint64_t cum = 0;
      for (int b = 0; b <= kBuckets; ++b) {
        cum += vols[i].hist[c][b];
        spd::PromSample(out, "spd_volume_request_duration_seconds_bucket", l + le[b],
                        static_cast<double>(cum));
      }
      spd::PromSample(out, "spd_volume_request_duration_seconds_sum", l,
                      static_cast<double>(vols[i].latency_ns[c]) / 1e9);
      spd::PromSample(out, "spd_volume_request_duration_seconds_count", l,
                      static_cast<double>(cum));
    }
  }
  per_volume("spd_volume_inflight_requests", "Requests of a volume received and not yet answered.",
             "gauge", [](const VolumeData& v) { return static_cast<double>(v.inflight); });
  per_volume("spd_volume_scheduler_queue_seconds_total",
             "Time a volume's requests were held by the QoS scheduler.", "counter",
             [](const VolumeData& v) { return static_cast<double>(v.queue_ns) / 1e9; });
  per_volume("spd_volume_size_bytes", "A volume's size.", "gauge",
             [](const VolumeData& v) { return static_cast<double>(v.size_bytes); });
  per_volume("spd_volume_allocated_bytes", "Pool space a volume holds.", "gauge",
             [](const VolumeData& v) { return static_cast<double>(v.allocated_bytes); });
}

// ---- prometheus-cpp: the same families as MetricFamily objects ----

class VolumeCollectable : public prometheus::Collectable {
 public:
  explicit VolumeCollectable(const std::vector<VolumeData>* vols) : vols_(vols) {}

  std::vector<prometheus::MetricFamily> Collect() const override {
    using prometheus::ClientMetric;
    using prometheus::MetricFamily;
    using prometheus::MetricType;
    const std::vector<VolumeData>& vols = *vols_;
    std::vector<MetricFamily> out;
    auto base = [](const VolumeData& v) {
      ClientMetric m;
      m.label = {{"volume", v.name}, {"tenant", v.tenant}};
      return m;
    };
    auto per_volume = [&](const char* name, const char* help, MetricType type, auto value) {
      MetricFamily f{name, help, type, {}};
      f.metric.reserve(vols.size());
      for (const VolumeData& v : vols) {
        ClientMetric m = base(v);
        if (type == MetricType::Gauge) {
          m.gauge.value = value(v);
        } else {
          m.counter.value = value(v);
        }
        f.metric.push_back(std::move(m));
      }
      out.push_back(std::move(f));
    };

    MetricFamily requests{"spd_volume_requests_total",
                          "Requests a volume's clients got an answer to, by operation.",
                          MetricType::Counter,
                          {}};
    requests.metric.reserve(vols.size() * kOps);
    for (const VolumeData& v : vols) {
      for (int c = 0; c < kOps; ++c) {
        ClientMetric m = base(v);
        m.label.push_back({"op", kOpNames[c]});
        m.counter.value = static_cast<double>(v.ops[c]);
        requests.metric.push_back(std::move(m));
      }
    }
    out.push_back(std::move(requests));
    per_volume("spd_volume_read_bytes_total", "Bytes read by a volume's clients.",
               MetricType::Counter,
               [](const VolumeData& v) { return static_cast<double>(v.read_bytes); });
    per_volume("spd_volume_written_bytes_total", "Bytes written by a volume's clients.",
               MetricType::Counter,
               [](const VolumeData& v) { return static_cast<double>(v.written_bytes); });
    MetricFamily duration{"spd_volume_request_duration_seconds",
                          "Time from a request's arrival at the frontend to its reply queued, by "
                          "operation.",
                          MetricType::Histogram,
                          {}};
    duration.metric.reserve(vols.size() * kOps);
    for (const VolumeData& v : vols) {
      for (int c = 0; c < kOps; ++c) {
        ClientMetric m = base(v);
        m.label.push_back({"op", kOpNames[c]});
        m.histogram.bucket.reserve(kBuckets + 1);
        uint64_t cum = 0;
        for (int b = 0; b <= kBuckets; ++b) {
          cum += v.hist[c][b];
          m.histogram.bucket.push_back(
              {cum, b < kBuckets ? kBoundsSeconds[b] : std::numeric_limits<double>::infinity()});
        }
        m.histogram.sample_count = cum;
        m.histogram.sample_sum = static_cast<double>(v.latency_ns[c]) / 1e9;
        duration.metric.push_back(std::move(m));
      }
    }
    out.push_back(std::move(duration));
    per_volume("spd_volume_inflight_requests",
               "Requests of a volume received and not yet answered.", MetricType::Gauge,
               [](const VolumeData& v) { return static_cast<double>(v.inflight); });
    per_volume("spd_volume_scheduler_queue_seconds_total",
               "Time a volume's requests were held by the QoS scheduler.", MetricType::Counter,
               [](const VolumeData& v) { return static_cast<double>(v.queue_ns) / 1e9; });
    per_volume("spd_volume_size_bytes", "A volume's size.", MetricType::Gauge,
               [](const VolumeData& v) { return static_cast<double>(v.size_bytes); });
    per_volume("spd_volume_allocated_bytes", "Pool space a volume holds.", MetricType::Gauge,
               [](const VolumeData& v) { return static_cast<double>(v.allocated_bytes); });
    return out;
  }

 private:
  const std::vector<VolumeData>* vols_;
};

// ---- the process ----

int Threads() {
  int n = 0;
  DIR* d = opendir("/proc/self/task");
  if (d == nullptr) return -1;
  while (dirent* e = readdir(d))
    if (e->d_name[0] != '.') ++n;
  closedir(d);
  return n;
}

void WaitForStdinEof() {
  std::string line;
  while (std::getline(std::cin, line)) {
  }
}

int Usage() {
  std::fprintf(stderr,
               "usage: exposer_compare --server ours|promcpp [--volumes N] [--threads N]\n");
  return 2;
}

int RunOurs(const std::vector<VolumeData>& vols) {
  spd::MetricsCollector collector([&vols](std::string* out) { RenderOurs(vols, out); });
  const int threads_before = Threads();
  struct Ready {
    uint16_t port = 0;
    int threads_before_start = 0;
    int threads_after_start = 0;
    std::string engine;
    spd::Reactor* reactor = nullptr;
  };
  std::promise<Ready> ready;
  std::future<Ready> ready_f = ready.get_future();
  std::thread reactor_thread([&ready] {
    Ready r;
    auto created = spd::Reactor::Create(spd::ReactorOptions{});
    if (!created.ok()) {
      std::fprintf(stderr, "reactor: %s\n", created.status().ToString().c_str());
      ready.set_value(r);
      return;
    }
    std::unique_ptr<spd::Reactor> reactor = std::move(created).value();
    spd::MetricsServer server(reactor.get());
    r.threads_before_start = Threads();
    if (spd::Status s = server.Start("127.0.0.1", 0); !s.ok()) {
      std::fprintf(stderr, "%s\n", s.ToString().c_str());
      ready.set_value(r);
      return;
    }
    r.threads_after_start = Threads();
    r.port = server.port();
    r.engine = reactor->engine() == spd::ReactorEngine::kUring ? "io_uring" : "epoll";
    r.reactor = reactor.get();
    ready.set_value(r);
    reactor->Run();
  });
  Ready r = ready_f.get();
  if (r.port == 0) {
    reactor_thread.join();
    return 1;
  }
  std::printf(
      "{\"server\":\"ours\",\"port\":%u,\"threads_before\":%d,\"threads_after\":%d,"
      "\"threads_added_by_start\":%d,\"engine\":\"%s\"}\n",
      r.port, threads_before, Threads(), r.threads_after_start - r.threads_before_start,
      r.engine.c_str());
  std::fflush(stdout);
  WaitForStdinEof();
  r.reactor->Stop();
  reactor_thread.join();
  return 0;
}

int RunPromCpp(const std::vector<VolumeData>& vols, int threads) {
  auto collectable = std::make_shared<VolumeCollectable>(&vols);
  const int threads_before = Threads();
  // The Exposer as an adopter would write it; its default is 2 civetweb worker threads.
  prometheus::Exposer exposer("127.0.0.1:0", static_cast<size_t>(threads));
  exposer.RegisterCollectable(collectable);
  const int threads_after = Threads();
  const std::vector<int> ports = exposer.GetListeningPorts();
  if (ports.empty() || ports[0] == 0) {
    std::fprintf(stderr, "prometheus::Exposer: no listening port\n");
    return 1;
  }
  std::printf(
      "{\"server\":\"promcpp\",\"port\":%d,\"threads_before\":%d,\"threads_after\":%d,"
      "\"threads_added_by_start\":%d,\"engine\":\"civetweb\"}\n",
      ports[0], threads_before, threads_after, threads_after - threads_before);
  std::fflush(stdout);
  WaitForStdinEof();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string server;
  int volumes = 1000;
  int threads = 2;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--server") == 0 && i + 1 < argc) {
      server = argv[++i];
    } else if (std::strcmp(argv[i], "--volumes") == 0 && i + 1 < argc) {
      volumes = std::atoi(argv[++i]);
    } else if (std::strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
      threads = std::atoi(argv[++i]);
    } else {
      return Usage();
    }
  }
  if (volumes <= 0 || threads <= 0) return Usage();
  signal(SIGPIPE, SIG_IGN);  // a scraper that hangs up must not kill either server
  const std::vector<VolumeData> vols = MakeVolumes(volumes);
  if (server == "ours") return RunOurs(vols);
  if (server == "promcpp") return RunPromCpp(vols, threads);
  return Usage();
}
