// The request probes (common/probes.h; docs/observability.md): one per pipeline stage, each
// fired exactly once per request that reaches that stage, with the same first five arguments:
//
//   arg0  const char*     the volume's name (stable: a volume's name never changes and its
//                         Volume is never freed while the pool lives); "" without a volume
//   arg1  const uint8_t*  the request's 16-byte correlation id (NBD: the client's cookie in bytes
//                         0..7, zeros after). Its address, not its value: the address is unique
//                         among requests in flight (it lies inside the IoRequest), so tracers
//                         join a request's stages on it, and they read the id itself through it
//                         (bpftrace: *(uint64 *)arg1, buf(arg1, 16)). Reused once the request has
//                         been replied to.
//   arg2  int             RequestOp (0 read, 1 write, 2 flush, 3 discard, 4 write-zeroes,
//                         5 block-status)
//   arg3  uint64          offset in bytes
//   arg4  uint32          length in bytes
//
// and a sixth for two of them: backend__complete's result (int32: 0 or -errno) and
// request__reply's latency in ns since the frontend's arrival stamp (uint64; 0 when not stamped).
// Six at most, and no volume id: bpftrace 0.17 (Debian 12) reads only arg0..arg5 of a USDT probe
// on x86-64 ("x86_64 doesn't support arg6").
#pragma once

#include <cstdint>

#include "common/probes.h"
#include "dispatch/io_request.h"

namespace spd::probe {

inline const char* VolumeName(const IoRequest* req) {
  return req->volume ? req->volume->info().name.c_str() : "";
}

}  // namespace spd::probe

// SPD_REQUEST_PROBE(name, req[, extra]): fires spd2:name with the arguments above. Nothing is
// evaluated unless a tracer is attached to that probe.
#define SPD_REQUEST_PROBE(name, req, ...)                                                         \
  SPD_PROBE(name, ::spd::probe::VolumeName(req), static_cast<const void*>((req)->correlation_id), \
            static_cast<int>((req)->op), (req)->offset_bytes,                                     \
            (req)->length_bytes __VA_OPT__(, ) __VA_ARGS__)
