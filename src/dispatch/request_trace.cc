#include "dispatch/request_trace.h"

#include <cstring>
#include <string>
#include <utility>

#include "common/trace.h"
#include "dispatch/io_request.h"

namespace spd {

bool TraceRequest(const SlowRequest& r, const char* frontend, const char* why, int error) {
  if (!trace::Enabled() || r.correlation == nullptr) return false;
  static const char* const kStageSpans[] = {"spd.queued", "spd.scheduler", "spd.volume",
                                            "spd.backend", "spd.reply"};
  static const char* const kStageAttrs[] = {"spd.queued_us", "spd.dispatched_us", "spd.submit_us",
                                            "spd.backend_us", "spd.reply_us"};
  std::vector<trace::Span> spans(1);
  spans.reserve(static_cast<size_t>(Stage::kCount));
  trace::Span& root = spans[0];
  root.attrs.reserve(13);
  std::memcpy(root.trace_id.b, r.correlation, sizeof root.trace_id.b);
  if (!root.trace_id.valid()) root.trace_id = trace::NewTraceId();
  root.span_id = trace::NewSpanId();
  root.name = "spd.request";
  root.kind = trace::SpanKind::kServer;
  root.start_unix_ns = trace::UnixNsOf(r.arrival_ns);
  root.end_unix_ns = root.start_unix_ns + (r.reply_ns - r.arrival_ns);
  root.status = error == 0 ? trace::SpanStatus::kOk : trace::SpanStatus::kError;
  if (error != 0) root.status_message = std::strerror(error);
  root.Add("spd.frontend", frontend);
  root.Add("spd.volume", std::string(r.volume));
  root.Add("spd.op", r.op);
  root.Add("spd.offset", static_cast<int64_t>(r.offset_bytes));
  root.Add("spd.length", static_cast<int64_t>(r.length_bytes));
  root.Add("spd.error", static_cast<int64_t>(error));
  root.Add("spd.trace_reason", why);
  root.Add("spd.total_us", static_cast<int64_t>((r.reply_ns - r.arrival_ns) / 1000));
  const SlowRequestStages st = SlowRequestBreakdown(r);
  for (int i = 0; i < 5; ++i)
    if (st.us[i] >= 0) root.Add(kStageAttrs[i], st.us[i]);

  // The children: the same walk over the stamps as the breakdown, with their times.
  const trace::TraceId trace_id = root.trace_id;
  const trace::SpanId parent = root.span_id;
  const uint64_t start_unix_ns = root.start_unix_ns;
  uint64_t last = r.arrival_ns;
  for (int i = 1; i < static_cast<int>(Stage::kCount); ++i) {
    const uint64_t t = i == static_cast<int>(Stage::kReply) ? r.reply_ns
                       : r.stage_ns != nullptr              ? r.stage_ns[i]
                                                            : 0;
    if (t < last || t > r.reply_ns) continue;
    trace::Span& c = spans.emplace_back();  // reserved: `root` stays valid
    c.trace_id = trace_id;
    c.span_id = trace::NewSpanId();
    c.parent = parent;
    c.name = kStageSpans[i - 1];
    c.start_unix_ns = start_unix_ns + (last - r.arrival_ns);
    c.end_unix_ns = start_unix_ns + (t - r.arrival_ns);
    last = t;
  }
  // One lock for the request's spans; the root first, so a full queue drops children first.
  return trace::RecordAll(&spans) > 0;
}

}  // namespace spd
