#include "dispatch/slow_request.h"

#include <cinttypes>

#include "common/log.h"
#include "dispatch/io_request.h"

namespace spd {
namespace {
Counter slow_requests_total("spd_slow_requests_total",
                            "Requests whose arrival-to-reply time exceeded --slow-request-ms "
                            "(each one, logged or not: the log is rate-limited).");
// The key of the duration that ends at stage i + 1.
constexpr const char* kStageKeys[5] = {"queued_us", "dispatched_us", "submit_us", "backend_us",
                                       "reply_us"};
}  // namespace

SlowRequestStages SlowRequestBreakdown(const SlowRequest& r) {
  static_assert(static_cast<int>(Stage::kCount) == 6);
  SlowRequestStages out;
  uint64_t last = r.arrival_ns;
  for (int i = 1; i < static_cast<int>(Stage::kCount); ++i) {
    // The reply is always known (the frontend's own stamp); the others only when stamped for
    // this request. Stamps are monotonic along one request, so one out of order is stale.
    const uint64_t t = i == static_cast<int>(Stage::kReply) ? r.reply_ns
                       : r.stage_ns != nullptr              ? r.stage_ns[i]
                                                            : 0;
    if (t < last || t > r.reply_ns) {
      out.us[i - 1] = -1;
      continue;
    }
    out.us[i - 1] = static_cast<int64_t>((t - last) / 1000);
    last = t;
  }
  return out;
}

void LogSlowRequest(const SlowRequest& r) {
  slow_requests_total.Add();
  const SlowRequestStages st = SlowRequestBreakdown(r);
  const uint64_t total_us = (r.reply_ns - r.arrival_ns) / 1000;
  LogKv kv[9] = {{"op", 0, r.op},
                 {"offset", r.offset_bytes},
                 {"length", r.length_bytes},
                 {"total_us", total_us}};
  size_t n = 4;
  for (int i = 0; i < 5; ++i)
    if (st.us[i] >= 0) kv[n++] = LogKv{kStageKeys[i], static_cast<uint64_t>(st.us[i])};
  LogFields f;
  f.volume = r.volume;
  f.correlation = r.correlation;
  f.extra = std::span<const LogKv>(kv, n);
  SPD_LOG_FIELDS(LogLevel::kWarn, f,
                 "slow request: %s of %" PRIu64 " bytes at %" PRIu64 " took %" PRIu64 " us", r.op,
                 r.length_bytes, r.offset_bytes, total_us);
}

}  // namespace spd
