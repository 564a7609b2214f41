#include "telemetry/otlp_exporter.h"

#include <curl/curl.h>

#include <chrono>
#include <cstdio>
#include <string_view>

#include "common/counters.h"
#include "common/log.h"
#include "common/os_util.h"

namespace spd {
namespace {

Counter exports_total("spd_trace_exports_total", "OTLP export requests sent (batches of spans).");
Counter export_errors_total("spd_trace_export_errors_total",
                            "OTLP export requests that failed (connection, timeout, non-2xx).");
Counter spans_exported_total("spd_trace_spans_exported_total",
                             "Spans the collector accepted (2xx).");
Counter spans_lost_total("spd_trace_spans_lost_total",
                         "Spans of export requests that failed (not retried).");

// JSON text of `v` (quotes included): escapes what JSON requires, and replaces bytes that are
// not valid UTF-8 with U+FFFD (attribute values may come from clients).
void JsonString(std::string* out, std::string_view v) {
  out->push_back('"');
  size_t i = 0;
  while (i < v.size()) {
    const auto c = static_cast<unsigned char>(v[i]);
    if (c == '"' || c == '\\') {
      out->push_back('\\');
      out->push_back(static_cast<char>(c));
      ++i;
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out->append(buf);
      ++i;
    } else if (c < 0x80) {
      out->push_back(static_cast<char>(c));
      ++i;
    } else {
      // A valid UTF-8 sequence is copied; anything else becomes U+FFFD.
      const size_t n = c >= 0xf0 && c < 0xf5 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c < 0xe0 ? 2 : 0;
      bool ok = n > 0 && i + n <= v.size();
      for (size_t k = 1; ok && k < n; ++k)
        ok = (static_cast<unsigned char>(v[i + k]) & 0xc0) == 0x80;
      if (ok) {
        out->append(v.substr(i, n));
        i += n;
      } else {
        out->append("\xef\xbf\xbd");
        ++i;
      }
    }
  }
  out->push_back('"');
}

void JsonAttr(std::string* out, const trace::Attr& a) {
  out->append("{\"key\":");
  JsonString(out, a.key);
  // OTLP JSON: 64-bit integers are strings (the proto3 JSON mapping).
  if (a.is_int) {
    out->append(",\"value\":{\"intValue\":\"");
    out->append(std::to_string(a.num));
    out->append("\"}}");
  } else {
    out->append(",\"value\":{\"stringValue\":");
    JsonString(out, a.str);
    out->append("}}");
  }
}

void JsonResourceAttr(std::string* out, bool* first, const char* key, const std::string& v) {
  if (!*first) out->push_back(',');
  *first = false;
  trace::Attr a;
  a.key = key;
  a.str = v;
  JsonAttr(out, a);
}

size_t Discard(char*, size_t size, size_t n, void*) { return size * n; }

}  // namespace

std::string OtlpJson(const std::vector<trace::Span>& spans, const OtlpOptions& o) {
  // Written by hand rather than through a JSON library's DOM: at a sample rate that makes
  // thousands of spans a second, building a document per span cost more than the spans.
  std::string out;
  out.reserve(256 + spans.size() * 600);
  out.append("{\"resourceSpans\":[{\"resource\":{\"attributes\":[");
  bool first = true;
  JsonResourceAttr(&out, &first, "service.name", o.service_name);
  if (!o.service_version.empty())
    JsonResourceAttr(&out, &first, "service.version", o.service_version);
  if (!o.service_instance.empty())
    JsonResourceAttr(&out, &first, "service.instance.id", o.service_instance);
  out.append("]},\"scopeSpans\":[{\"scope\":{\"name\":\"spd2\"},\"spans\":[");
  for (size_t i = 0; i < spans.size(); ++i) {
    const trace::Span& s = spans[i];
    if (i > 0) out.push_back(',');
    out.append("{\"traceId\":\"");
    out.append(trace::Hex(s.trace_id.b, 16));
    out.append("\",\"spanId\":\"");
    out.append(trace::Hex(s.span_id.b, 8));
    out.push_back('"');
    if (s.parent.valid()) {
      out.append(",\"parentSpanId\":\"");
      out.append(trace::Hex(s.parent.b, 8));
      out.push_back('"');
    }
    out.append(",\"name\":");
    JsonString(&out, s.name);
    out.append(",\"kind\":");
    out.append(std::to_string(static_cast<int>(s.kind)));
    out.append(",\"startTimeUnixNano\":\"");
    out.append(std::to_string(s.start_unix_ns));
    out.append("\",\"endTimeUnixNano\":\"");
    out.append(std::to_string(s.end_unix_ns));
    out.append("\",\"attributes\":[");
    for (size_t k = 0; k < s.attrs.size(); ++k) {
      if (k > 0) out.push_back(',');
      JsonAttr(&out, s.attrs[k]);
    }
    out.append("],\"status\":{\"code\":");
    out.append(std::to_string(static_cast<int>(s.status)));
    if (!s.status_message.empty()) {
      out.append(",\"message\":");
      JsonString(&out, s.status_message);
    }
    out.append("}}");
  }
  out.append("]}]}]}");
  return out;
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
  thread_ = std::thread([this] {
    NameThisThread("spd-traces");
    Loop();
  });
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
    if (!stopping && trace::Queued() == 0) trace::Take(&batch, o_.batch_max, UINT64_MAX, 1);
    if (!stop_.load() && batch.size() < o_.batch_max) {
      const auto until =
          std::chrono::steady_clock::now() + std::chrono::nanoseconds(o_.batch_wait_ns);
      while (batch.size() < o_.batch_max && !stop_.load()) {
        const auto now = std::chrono::steady_clock::now();
        if (now >= until) break;
        // Woken only by a full batch (or the deadline, or Stop): no wake-up per span.
        const size_t room = o_.batch_max - batch.size();
        trace::Take(&batch, room,
                    static_cast<uint64_t>(std::chrono::nanoseconds(until - now).count()), room);
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
