#include "common/trace.h"

#include <sys/random.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <mutex>

#include "common/counters.h"

namespace spd::trace {
namespace {

Counter spans_recorded_total("spd_trace_spans_recorded_total",
                             "Trace spans recorded and queued for export.");
Counter spans_dropped_total("spd_trace_spans_dropped_total",
                            "Trace spans dropped because the export queue was full (the "
                            "collector is slow or unreachable).");

std::atomic<bool> enabled{false};
std::atomic<uint64_t> sample_period{0};
std::atomic<uint64_t> slow_ns{0};

struct Queue {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<Span> spans;    // guarded by mu
  size_t max = 0;             // guarded by mu
  bool wake = false;          // guarded by mu: WakeTakers
  size_t wake_at = SIZE_MAX;  // guarded by mu: a Take waits for this many spans
};
Queue& Q() {
  static Queue q;
  return q;
}

uint64_t ClockNs(clockid_t c) {
  timespec ts{};
  clock_gettime(c, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// Random ids: a per-thread xorshift seeded from getrandom (ids need to be unique, not secret).
uint64_t Next() {
  thread_local uint64_t s = [] {
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, 0) != sizeof seed) seed = ClockNs(CLOCK_MONOTONIC);
    return seed | 1;
  }();
  s ^= s << 13;
  s ^= s >> 7;
  s ^= s << 17;
  return s;
}

bool AllZero(const uint8_t* b, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (b[i] != 0) return false;
  return true;
}

int HexVal(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;  // W3C: lowercase only
}

bool ParseHex(std::string_view s, uint8_t* out, size_t n) {
  if (s.size() != 2 * n) return false;
  for (size_t i = 0; i < n; ++i) {
    const int hi = HexVal(s[2 * i]), lo = HexVal(s[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

}  // namespace

bool TraceId::valid() const { return !AllZero(b, sizeof b); }
bool SpanId::valid() const { return !AllZero(b, sizeof b); }

void Span::Add(const char* key, std::string value) {
  Attr a;
  a.key = key;
  a.str = std::move(value);
  attrs.push_back(std::move(a));
}

void Span::Add(const char* key, int64_t value) {
  Attr a;
  a.key = key;
  a.num = value;
  a.is_int = true;
  attrs.push_back(std::move(a));
}

void Enable(const Options& o) {
  Queue& q = Q();
  {
    std::lock_guard<std::mutex> l(q.mu);
    q.max = o.queue_max;
    q.wake = false;
  }
  const double r = o.io_sample_rate;
  sample_period.store(r > 0 ? static_cast<uint64_t>(std::max(1.0, std::round(1.0 / r))) : 0,
                      std::memory_order_relaxed);
  slow_ns.store(o.io_slow_ns, std::memory_order_relaxed);
  enabled.store(true, std::memory_order_release);
}

void Disable() {
  enabled.store(false, std::memory_order_release);
  sample_period.store(0, std::memory_order_relaxed);
  slow_ns.store(0, std::memory_order_relaxed);
  Queue& q = Q();
  std::lock_guard<std::mutex> l(q.mu);
  q.spans.clear();
}

bool Enabled() { return enabled.load(std::memory_order_relaxed); }
uint64_t IoSamplePeriod() { return sample_period.load(std::memory_order_relaxed); }
uint64_t IoSlowNs() { return slow_ns.load(std::memory_order_relaxed); }

bool Record(Span&& s) {
  std::vector<Span> one;
  one.push_back(std::move(s));
  return RecordAll(&one) == 1;
}

size_t RecordAll(std::vector<Span>* spans) {
  if (!Enabled()) {
    spans->clear();
    return 0;
  }
  Queue& q = Q();
  size_t queued = 0;
  bool wake = false;
  {
    std::lock_guard<std::mutex> l(q.mu);
    const size_t room = q.max > q.spans.size() ? q.max - q.spans.size() : 0;
    queued = std::min(room, spans->size());
    for (size_t i = 0; i < queued; ++i) q.spans.push_back(std::move((*spans)[i]));
    wake = q.spans.size() >= q.wake_at;
  }
  if (queued < spans->size()) spans_dropped_total.Add(spans->size() - queued);
  if (queued > 0) spans_recorded_total.Add(queued);
  spans->clear();
  if (wake) q.cv.notify_one();
  return queued;
}

size_t Take(std::vector<Span>* out, size_t max, uint64_t wait_ns, size_t min_ready) {
  Queue& q = Q();
  std::unique_lock<std::mutex> l(q.mu);
  const size_t want = std::max<size_t>(1, min_ready);
  auto ready = [&] { return q.spans.size() >= want || q.wake; };
  if (wait_ns > 0 && !ready()) {
    q.wake_at = want;
    if (wait_ns == UINT64_MAX) {
      q.cv.wait(l, ready);
    } else {
      q.cv.wait_for(l, std::chrono::nanoseconds(wait_ns), ready);
    }
    q.wake_at = SIZE_MAX;
  }
  q.wake = false;
  const size_t n = std::min(max, q.spans.size());
  for (size_t i = 0; i < n; ++i) out->push_back(std::move(q.spans[i]));
  q.spans.erase(q.spans.begin(), q.spans.begin() + static_cast<std::ptrdiff_t>(n));
  return n;
}

void WakeTakers() {
  Queue& q = Q();
  {
    std::lock_guard<std::mutex> l(q.mu);
    q.wake = true;
  }
  q.cv.notify_all();
}

size_t Queued() {
  Queue& q = Q();
  std::lock_guard<std::mutex> l(q.mu);
  return q.spans.size();
}

TraceId NewTraceId() {
  TraceId t;
  const uint64_t a = Next(), b = Next();
  std::memcpy(t.b, &a, 8);
  std::memcpy(t.b + 8, &b, 8);
  return t;  // xorshift never yields 0: valid
}

SpanId NewSpanId() {
  SpanId s;
  const uint64_t a = Next();
  std::memcpy(s.b, &a, 8);
  return s;
}

uint64_t UnixNsOf(uint64_t monotonic_ns) {
  // The offset between the clocks, read now (an NTP step moves it; a span's times stay within
  // one reading).
  const uint64_t mono = ClockNs(CLOCK_MONOTONIC);
  const uint64_t real = ClockNs(CLOCK_REALTIME);
  return real - (mono - monotonic_ns);
}

bool ParseTraceparent(std::string_view v, TraceId* trace, SpanId* parent, uint8_t* flags) {
  // version "00": exactly 55 characters. (A later version may be longer; only its first four
  // fields are read, as the spec asks.)
  if (v.size() < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-') return false;
  if (v.size() > 55 && (v.substr(0, 2) == "00" || v[55] != '-')) return false;
  uint8_t ver = 0;
  if (!ParseHex(v.substr(0, 2), &ver, 1) || ver == 0xff) return false;
  TraceId t;
  SpanId p;
  uint8_t f = 0;
  if (!ParseHex(v.substr(3, 32), t.b, 16) || !ParseHex(v.substr(36, 16), p.b, 8) ||
      !ParseHex(v.substr(53, 2), &f, 1) || !t.valid() || !p.valid())
    return false;
  *trace = t;
  *parent = p;
  *flags = f;
  return true;
}

std::string Hex(const uint8_t* b, size_t n) {
  static const char kDigits[] = "0123456789abcdef";
  std::string s(2 * n, '0');
  for (size_t i = 0; i < n; ++i) {
    s[2 * i] = kDigits[b[i] >> 4];
    s[2 * i + 1] = kDigits[b[i] & 15];
  }
  return s;
}

std::string FormatTraceparent(const TraceId& trace, const SpanId& span, uint8_t flags) {
  return "00-" + Hex(trace.b, 16) + "-" + Hex(span.b, 8) + "-" + Hex(&flags, 1);
}

}  // namespace spd::trace
