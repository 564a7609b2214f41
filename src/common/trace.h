// Trace spans: what the daemon records for a traced control call or I/O request, queued here
// for an exporter (telemetry/otlp_exporter.h sends them as OTLP/HTTP JSON).
//
// Off (the default) costs a traced site one relaxed load. On, a site builds a Span (a few
// small allocations) and Record() queues it under a mutex; the queue is bounded
// (Options::queue_max): a span that finds it full is dropped and counted
// (spd_trace_spans_dropped_total), never waited for. Only sampled requests pay this: one in
// 1/io_sample_rate, plus every request slower than io_slow_ns.
//
// Ids follow W3C Trace Context: a 16-byte trace id and an 8-byte span id, neither all zeros.
// A control call continues the caller's trace when it sent a `traceparent`; an I/O request's
// trace id is its correlation id (IoRequest::correlation_id), so a slow-request log line and
// its trace carry the same id.
//
// Thread-safety: every function, from any thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace spd::trace {

struct TraceId {
  uint8_t b[16] = {};
  bool valid() const;
};
struct SpanId {
  uint8_t b[8] = {};
  bool valid() const;
};

struct Attr {
  const char* key = "";  // a string with static storage (a literal): attributes are named in code
  std::string str;       // a string value, unless is_int
  int64_t num = 0;
  bool is_int = false;
};

enum class SpanKind : uint8_t { kInternal = 1, kServer = 2 };
enum class SpanStatus : uint8_t { kUnset = 0, kOk = 1, kError = 2 };

struct Span {
  TraceId trace_id;
  SpanId span_id;
  SpanId parent;  // all zeros: a root span
  std::string name;
  SpanKind kind = SpanKind::kInternal;
  uint64_t start_unix_ns = 0;
  uint64_t end_unix_ns = 0;
  SpanStatus status = SpanStatus::kUnset;
  std::string status_message;
  std::vector<Attr> attrs;

  // `key`: a literal (kept as a pointer).
  void Add(const char* key, std::string value);
  void Add(const char* key, int64_t value);
};

struct Options {
  // Fraction of I/O requests traced, 0..1 (0.01: one in 100 of each connection's requests).
  double io_sample_rate = 0;
  // Also every I/O request whose arrival-to-reply time is over this (0: none).
  uint64_t io_slow_ns = 0;
  // Spans waiting for the exporter at most; more are dropped.
  size_t queue_max = 8192;
};

// Turns recording on with `o` (an exporter is about to take the spans) or off. Off drops what
// is queued.
void Enable(const Options& o);
void Disable();
bool Enabled();  // one relaxed load
// The I/O figures of the current options (0 when off).
uint64_t IoSamplePeriod();  // 1 / io_sample_rate rounded, 0: no sampling
uint64_t IoSlowNs();

// Queues a finished span. False when off or full (dropped, counted).
bool Record(Span&& s);
// Queues every span of *spans under one lock (a request's spans); those that do not fit are
// dropped and counted. Returns how many were queued; *spans is left empty.
size_t RecordAll(std::vector<Span>* spans);
// For the exporter: waits until at least `min_ready` spans are queued (1 at least),
// WakeTakers is called or `wait_ns` passes (0: do not wait; UINT64_MAX: no deadline), then
// moves up to `max` spans into *out. Returns how many. A recorder wakes the waiter only when the
// queue reaches `min_ready`: gathering a batch costs no wake-up per span.
size_t Take(std::vector<Span>* out, size_t max, uint64_t wait_ns, size_t min_ready = 1);
// Wakes a Take that waits (the exporter is stopping).
void WakeTakers();
size_t Queued();

TraceId NewTraceId();
SpanId NewSpanId();
// CLOCK_REALTIME nanoseconds of a MonotonicNs() reading (OTLP times are Unix times).
uint64_t UnixNsOf(uint64_t monotonic_ns);

// W3C traceparent "00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>". False (outputs
// untouched) for anything else, all-zero ids included.
bool ParseTraceparent(std::string_view v, TraceId* trace, SpanId* parent, uint8_t* flags);
std::string FormatTraceparent(const TraceId& trace, const SpanId& span, uint8_t flags);
std::string Hex(const uint8_t* b, size_t n);

}  // namespace spd::trace
