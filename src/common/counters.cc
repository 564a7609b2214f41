#include "common/counters.h"

#include "common/assert.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <mutex>

namespace spd {
namespace {
std::mutex& RegistryMu() {
  static std::mutex mu;
  return mu;
}
std::vector<Counter*>& Registry() {
  static std::vector<Counter*> r;
  return r;
}
std::vector<Histogram*>& Histograms() {
  static std::vector<Histogram*> r;
  return r;
}
std::mutex& CollectorsMu() {  // held while collectors run: a destructor waits for them
  static std::mutex mu;
  return mu;
}
std::vector<MetricsCollector*>& Collectors() {
  static std::vector<MetricsCollector*> r;
  return r;
}
}  // namespace

MetricsCollector::MetricsCollector(std::function<void(std::string*)> fn) : fn_(std::move(fn)) {
  std::lock_guard<std::mutex> lock(CollectorsMu());
  Collectors().push_back(this);
}

MetricsCollector::~MetricsCollector() {
  std::lock_guard<std::mutex> lock(CollectorsMu());
  auto& c = Collectors();
  c.erase(std::remove(c.begin(), c.end(), this), c.end());
}

void PromHeader(std::string* out, std::string_view name, std::string_view help,
                std::string_view type) {
  *out += "# HELP ";
  *out += name;
  *out += ' ';
  *out += help;
  *out += "\n# TYPE ";
  *out += name;
  *out += ' ';
  *out += type;
  *out += '\n';
}

void PromSample(std::string* out, std::string_view name, std::string_view labels, double v) {
  char num[40];
  // Counts print whole (exact to 2^53); fractions (seconds) with 9 significant digits.
  if (v == std::floor(v) && std::fabs(v) < 9e18) {
    std::snprintf(num, sizeof num, "%.0f", v);
  } else {
    std::snprintf(num, sizeof num, "%.9g", v);
  }
  *out += name;
  if (!labels.empty()) {
    *out += '{';
    *out += labels;
    *out += '}';
  }
  *out += ' ';
  *out += num;
  *out += '\n';
}

std::string PromLabel(std::string_view v) {
  std::string out = "\"";
  for (char ch : v) {
    if (ch == '\\' || ch == '"') {
      out += '\\';
      out += ch;
    } else if (ch == '\n') {
      out += "\\n";
    } else {
      out += ch;
    }
  }
  out += '"';
  return out;
}

Histogram::Histogram(const char* name, const char* help) : name_(name), help_(help) {
  std::lock_guard<std::mutex> lock(RegistryMu());
  Histograms().push_back(this);
}

void Histogram::Observe(uint64_t ns) {
  // Bucket i holds (2^(i-1), 2^i] microseconds: i = ceil(log2(ceil(ns / 1000))).
  const uint64_t us = (ns + 999) / 1000;
  int i = us <= 1 ? 0 : 64 - __builtin_clzll(us - 1);
  if (i > kBuckets) i = kBuckets;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_ns_.fetch_add(ns, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
}

std::vector<uint64_t> HistogramBuckets(const std::string& name) {
  std::lock_guard<std::mutex> lock(RegistryMu());
  std::vector<uint64_t> out(Histogram::kBuckets + 1, 0);
  for (const Histogram* h : Histograms())
    if (name == h->name())
      for (int i = 0; i <= Histogram::kBuckets; ++i) out[i] += h->bucket(i);
  return out;
}

uint64_t HistogramQuantileNs(const std::vector<uint64_t>& before,
                             const std::vector<uint64_t>& after, double q) {
  uint64_t total = 0;
  for (size_t i = 0; i < after.size(); ++i) total += after[i] - (i < before.size() ? before[i] : 0);
  if (total == 0) return 0;
  const double want = q * static_cast<double>(total);
  uint64_t seen = 0;
  for (size_t i = 0; i < after.size(); ++i) {
    seen += after[i] - (i < before.size() ? before[i] : 0);
    if (static_cast<double>(seen) >= want && seen > 0)
      return static_cast<int>(i) < Histogram::kBuckets
                 ? Histogram::UpperBoundNs(static_cast<int>(i))
                 : UINT64_MAX;
  }
  return UINT64_MAX;
}

Counter::Counter(const char* name, const char* help, bool gauge)
    : name_(name), help_(help), gauge_(gauge) {
  std::lock_guard<std::mutex> lock(RegistryMu());
  Registry().push_back(this);
}

int64_t GaugeValue(const std::string& name) { return static_cast<int64_t>(CounterValue(name)); }

std::vector<std::pair<std::string, uint64_t>> SnapshotCounters() {
  std::lock_guard<std::mutex> lock(RegistryMu());
  std::vector<std::pair<std::string, uint64_t>> out;
  out.reserve(Registry().size());
  for (const Counter* c : Registry()) out.emplace_back(c->name(), c->value());
  return out;
}

uint64_t CounterValue(const std::string& name) {
  std::lock_guard<std::mutex> lock(RegistryMu());
  uint64_t v = 0;
  bool found = false;
  for (const Counter* c : Registry()) {
    if (name != c->name()) continue;
    v += c->value();
    found = true;
  }
  // Counters register at static initialisation, with the code that counts: a name that is
  // not there is a typo or a figure kept elsewhere (a collector's), and a check reading it
  // would compare 0 with 0 for ever (the crash sweep's commits did).
  SPD_ASSERT_MSG(found, ("CounterValue: no counter named " + name).c_str());
  return v;
}

std::string RenderCountersPrometheus() {
  // Sized from the last scrape: growing a text of megabytes (thousands of volumes) by doubling
  // would copy it a dozen times and leave the heap with twice its size.
  static std::atomic<size_t> last_size{0};
  std::unique_lock<std::mutex> lock(RegistryMu());
  std::string out;
  const size_t hint = last_size.load(std::memory_order_relaxed);
  out.reserve(hint + hint / 16);
  for (const Counter* c : Registry()) {
    out += "# HELP ";
    out += c->name();
    out += ' ';
    out += c->help();
    out += "\n# TYPE ";
    out += c->name();
    out += c->gauge() ? " gauge\n" : " counter\n";
    // A gauge's value is signed (Gauge::Add takes negative steps).
    if (c->per_unit() != 1) {
      const double v = c->gauge() ? static_cast<double>(static_cast<int64_t>(c->value()))
                                  : static_cast<double>(c->value());
      PromSample(&out, c->name(), "", v / static_cast<double>(c->per_unit()));
      continue;
    }
    out += c->name();
    out += ' ';
    out +=
        c->gauge() ? std::to_string(static_cast<int64_t>(c->value())) : std::to_string(c->value());
    out += '\n';
  }
  char le[32];
  for (const Histogram* h : Histograms()) {
    const std::string n = h->name();
    out += "# HELP " + n + ' ' + h->help() + "\n# TYPE " + n + " histogram\n";
    uint64_t cumulative = 0;
    for (int i = 0; i <= Histogram::kBuckets; ++i) {
      cumulative += h->bucket(i);
      if (i < Histogram::kBuckets) {
        std::snprintf(le, sizeof le, "%.6f", static_cast<double>(Histogram::UpperBoundNs(i)) / 1e9);
      } else {
        std::snprintf(le, sizeof le, "+Inf");
      }
      out += n + "_bucket{le=\"" + le + "\"} " + std::to_string(cumulative) + '\n';
    }
    std::snprintf(le, sizeof le, "%.9f", static_cast<double>(h->sum_ns()) / 1e9);
    out += n + "_sum " + le + '\n';
    out += n + "_count " + std::to_string(cumulative) + '\n';  // consistent with the buckets
  }
  lock.unlock();
  std::lock_guard<std::mutex> clock(CollectorsMu());
  for (MetricsCollector* c : Collectors()) c->fn_(&out);
  last_size.store(out.size(), std::memory_order_relaxed);
  return out;
}

}  // namespace spd
