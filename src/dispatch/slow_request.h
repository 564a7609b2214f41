// The slow-request log line: one WARN line for a request whose arrival -> reply time went over
// its frontend's threshold (spd2 --slow-request-ms), with where the time went.
//
// The breakdown comes from IoRequest::stage_ns, which the dispatcher fills only when it stamps
// stages (DispatcherOptions::stamp_stages: the daemon turns it on with the threshold). Each
// duration runs from the previous stamp of this request to the next: queued_us (arrival to
// dispatcher), dispatched_us (the scheduler's queue), submit_us (the volume's own work up to
// the backend: a hop to the owner, allocation, a wait for a commit), backend_us (the device),
// reply_us (back to the frontend). A stage without a stamp of this request (not stamped, or
// never reached: a request refused before the dispatcher) has no duration; its time counts in
// the next stage that has one.
#pragma once

#include <cstdint>
#include <string_view>

#include "common/counters.h"

namespace spd {

struct SlowRequest {
  std::string_view volume;
  const char* op = "?";  // RequestOpName, or the frontend's own name of a request it answered
  uint64_t offset_bytes = 0;
  uint64_t length_bytes = 0;
  const uint8_t* correlation = nullptr;  // 16 bytes
  // Stage::kCount stamps (MonotonicNs); those outside [arrival_ns, reply_ns] belong to an
  // earlier request of the same slot and are ignored.
  const uint64_t* stage_ns = nullptr;
  uint64_t arrival_ns = 0;
  uint64_t reply_ns = 0;
};

// Counts the request in spd_slow_requests_total and logs it (rate-limited like every line:
// the counter counts every slow request, the log shows up to 20 a second after a burst of 100).
void LogSlowRequest(const SlowRequest& r);

// The durations of the breakdown above, in microseconds; -1 for a stage without a duration.
// (For tests; LogSlowRequest prints those >= 0.)
struct SlowRequestStages {
  int64_t us[5];
};
SlowRequestStages SlowRequestBreakdown(const SlowRequest& r);

}  // namespace spd
