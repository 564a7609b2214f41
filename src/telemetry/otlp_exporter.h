// Sends the spans common/trace.h queues to an OpenTelemetry collector, as OTLP over HTTP with
// JSON bodies (POST ENDPOINT, Content-Type application/json, one ExportTraceServiceRequest per
// batch; ids hex-encoded as the OTLP JSON mapping wants). opentelemetry-cpp is not packaged for
// Debian 12; this is the part of it spd2 needs.
//
// One thread of its own, off the reactors. It sleeps until a span is queued (an idle daemon's
// exporter never wakes), then gathers for up to batch_wait_ns or batch_max spans and posts
// them with libcurl, with a deadline on connecting and on the whole request. A batch that
// fails (refused, timed out, a non-2xx answer) is dropped and counted: spans are diagnostics,
// and holding them would only let a dead collector take memory. Counters:
// spd_trace_exports_total, spd_trace_export_errors_total, spd_trace_spans_exported_total,
// spd_trace_spans_lost_total (in failed batches).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "common/trace.h"

namespace spd {

struct OtlpOptions {
  std::string endpoint;  // http(s)://HOST:PORT/v1/traces
  std::string service_name = "spd2";
  std::string service_version;
  std::string service_instance;  // service.instance.id: the host name, for one
  size_t batch_max = 512;
  uint64_t batch_wait_ns = 1'000'000'000ull;
  uint64_t connect_timeout_ms = 2000;
  uint64_t request_timeout_ms = 5000;
};

// The ExportTraceServiceRequest JSON of `spans` (for the exporter and tests).
std::string OtlpJson(const std::vector<trace::Span>& spans, const OtlpOptions& o);

class OtlpExporter {
 public:
  explicit OtlpExporter(OtlpOptions o);
  ~OtlpExporter();  // Stop()
  OtlpExporter(const OtlpExporter&) = delete;
  OtlpExporter& operator=(const OtlpExporter&) = delete;

  // Checks the endpoint (an http or https URL) and starts the thread. Tracing itself is turned
  // on by the caller (trace::Enable).
  [[nodiscard]] Status Start();
  // Sends what is queued (one last batch per batch_max spans, each within the timeouts) and
  // ends the thread.
  void Stop();

 private:
  void Loop();
  bool Post(const std::string& body, std::string* error);

  OtlpOptions o_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
};

}  // namespace spd
