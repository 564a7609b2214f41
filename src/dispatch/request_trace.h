// A traced request (sampled, or slower than the trace threshold) as spans (common/trace.h):
// one server span "spd.request" from the frontend's arrival to its reply, with the volume, op,
// offset, length, result and the stage breakdown of the slow-request line as attributes, and a
// child span per stage that has a duration (dispatch/slow_request.h): spd.queued (arrival to
// the dispatcher), spd.scheduler (the QoS queue), spd.volume (the volume's own work up to the
// backend), spd.backend (the device), spd.reply (back to the frontend). The trace id is the
// request's correlation id, so a trace and the request's log lines carry the same id.
#pragma once

#include <cstdint>

#include "dispatch/slow_request.h"

namespace spd {

// `why`: "sampled" or "slow"; `error`: the errno the request was answered with (0: success).
// False when tracing is off or the export queue is full (the spans are dropped, counted).
bool TraceRequest(const SlowRequest& r, const char* frontend, const char* why, int error);

}  // namespace spd
