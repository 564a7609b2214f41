#include "telemetry/otlp_exporter.h"

#include <curl/curl.h>

#include <nlohmann/json.hpp>

#include "common/counters.h"
#include "common/log.h"

namespace spd {
namespace {

Counter exports_total("spd_trace_exports_total", "OTLP export requests sent (batches of spans).");
Counter export_errors_total("spd_trace_export_errors_total",
                            "OTLP export requests that failed (connection, timeout, non-2xx).");
Counter spans_exported_total("spd_trace_spans_exported_total",
                             "Spans the collector accepted (2xx).");
Counter spans_lost_total("spd_trace_spans_lost_total",
                         "Spans of export requests that failed (not retried).");

nlohmann::json AttrJson(const trace::Attr& a) {
  nlohmann::json v;
  // OTLP JSON: 64-bit integers are strings (the proto3 JSON mapping).
  if (a.is_int) {
    v["intValue"] = std::to_string(a.num);
  } else {
    v["stringValue"] = a.str;
  }
  return {{"key", a.key}, {"value", v}};
}

nlohmann::json StrAttr(const std::string& k, const std::string& v) {
  trace::Attr a;
  a.key = k;
  a.str = v;
  return AttrJson(a);
}

size_t Discard(char*, size_t size, size_t n, void*) { return size * n; }

}  // namespace

std::string OtlpJson(const std::vector<trace::Span>& spans, const OtlpOptions& o) {
  nlohmann::json list = nlohmann::json::array();
  for (const trace::Span& s : spans) {
    nlohmann::json j;
    j["traceId"] = trace::Hex(s.trace_id.b, 16);
    j["spanId"] = trace::Hex(s.span_id.b, 8);
    if (s.parent.valid()) j["parentSpanId"] = trace::Hex(s.parent.b, 8);
    j["name"] = s.name;
    j["kind"] = static_cast<int>(s.kind);
    j["startTimeUnixNano"] = std::to_string(s.start_unix_ns);
    j["endTimeUnixNano"] = std::to_string(s.end_unix_ns);
    nlohmann::json attrs = nlohmann::json::array();
    for (const trace::Attr& a : s.attrs) attrs.push_back(AttrJson(a));
    j["attributes"] = std::move(attrs);
    nlohmann::json st = {{"code", static_cast<int>(s.status)}};
    if (!s.status_message.empty()) st["message"] = s.status_message;
    j["status"] = std::move(st);
    list.push_back(std::move(j));
  }
  nlohmann::json res = nlohmann::json::array();
  res.push_back(StrAttr("service.name", o.service_name));
  if (!o.service_version.empty()) res.push_back(StrAttr("service.version", o.service_version));
  if (!o.service_instance.empty())
    res.push_back(StrAttr("service.instance.id", o.service_instance));
  nlohmann::json scope = {{"scope", {{"name", "spd2"}}}, {"spans", std::move(list)}};
  nlohmann::json rs = {{"resource", {{"attributes", std::move(res)}}},
                       {"scopeSpans", nlohmann::json::array({std::move(scope)})}};
  nlohmann::json body = {{"resourceSpans", nlohmann::json::array({std::move(rs)})}};
  // Attribute values come from clients (volume names are checked, but still): never throw on
  // invalid UTF-8, replace it.
  return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

OtlpExporter::OtlpExporter(OtlpOptions o) : o_(std::move(o)) {}

OtlpExporter::~OtlpExporter() { Stop(); }

Status OtlpExporter::Start() {
  if (o_.endpoint.rfind("http://", 0) != 0 && o_.endpoint.rfind("https://", 0) != 0)
    return InvalidArgument(
        "--trace-endpoint wants an http:// or https:// URL (the collector's "
        "OTLP/HTTP traces path, e.g. http://127.0.0.1:4318/v1/traces), got '" +
        o_.endpoint + "'");
  static const CURLcode init = curl_global_init(CURL_GLOBAL_DEFAULT);
  if (init != CURLE_OK)
    return Internal(std::string("libcurl initialisation failed: ") + curl_easy_strerror(init));
  stop_.store(false);
  thread_ = std::thread([this] { Loop(); });
  return Status::Ok();
}

void OtlpExporter::Stop() {
  if (!thread_.joinable()) return;
  stop_.store(true);
  trace::WakeTakers();
  thread_.join();
}

void OtlpExporter::Loop() {
  std::vector<trace::Span> batch;
  batch.reserve(o_.batch_max);
  while (true) {
    const bool stopping = stop_.load();
    // Asleep until the first span (no timeout: an idle exporter never wakes), then gather.
    if (!stopping && trace::Queued() == 0) trace::Take(&batch, o_.batch_max, UINT64_MAX);
    if (!stop_.load() && batch.size() < o_.batch_max) {
      const auto until =
          std::chrono::steady_clock::now() + std::chrono::nanoseconds(o_.batch_wait_ns);
      while (batch.size() < o_.batch_max && !stop_.load()) {
        const auto now = std::chrono::steady_clock::now();
        if (now >= until) break;
        trace::Take(&batch, o_.batch_max - batch.size(),
                    static_cast<uint64_t>(std::chrono::nanoseconds(until - now).count()));
      }
    }
    trace::Take(&batch, o_.batch_max - batch.size(), 0);
    if (batch.empty()) {
      if (stop_.load()) return;
      continue;
    }
    std::string error;
    exports_total.Add();
    if (Post(OtlpJson(batch, o_), &error)) {
      spans_exported_total.Add(batch.size());
    } else {
      export_errors_total.Add();
      spans_lost_total.Add(batch.size());
      SPD_LOG_WARN("trace export to %s failed: %s (%zu spans lost)", o_.endpoint.c_str(),
                   error.c_str(), batch.size());
    }
    batch.clear();
  }
}

bool OtlpExporter::Post(const std::string& body, std::string* error) {
  CURL* c = curl_easy_init();
  if (c == nullptr) {
    *error = "curl_easy_init failed";
    return false;
  }
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  curl_easy_setopt(c, CURLOPT_URL, o_.endpoint.c_str());
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.data());
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(o_.connect_timeout_ms));
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(o_.request_timeout_ms));
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);  // a thread of a daemon: no SIGALRM
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &Discard);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  const CURLcode rc = curl_easy_perform(c);
  long code = 0;
  if (rc == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
  curl_slist_free_all(headers);
  curl_easy_cleanup(c);
  if (rc != CURLE_OK) {
    *error = curl_easy_strerror(rc);
    return false;
  }
  if (code < 200 || code > 299) {
    *error = "HTTP " + std::to_string(code);
    return false;
  }
  return true;
}

}  // namespace spd
