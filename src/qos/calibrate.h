// Calibration: measures a backend and fits a CostModel (cost_model.h) to it.
//
// For reads and writes at each size it measures
//   - the latency at queue depth 1 (median of up to qd1_samples I/Os), and
//   - the throughput at depth (queue_depth I/Os kept in flight; fewer for large sizes, see
//     inflight_bytes_max): the slope of a least-squares line through the completions' times,
//     after the first round of them;
// then the throughput of the smallest reads at depths 2, 4, 8, ... below their full depth (the
// model's `depth`: the first that reaches 90% of the full depth's throughput), then the flush
// latency (each flush after a 4 KiB write) and the discard latency at QD1. A flush
// (not measured) follows every stretch of writes, so that each point starts with the device's
// write cache empty.
//
// The fit (FitCostModel): per op, a weighted least-squares line through the saturated service
// times 1e9 / IOPS against the size (weights 1/y², so that the 4 KiB point counts as much as the
// 1 MiB one) gives what each I/O takes of the device's capacity; the parallelism is the QD1
// latency of the smallest read over that line's value at the same size (at least 1); costs are
// the lines times the parallelism. So the model's CapacityIops reproduces the measured
// throughputs (to the extent that they are linear in the size) and the smallest read costs its
// QD1 latency. Flush and discard cost their QD1 medians.
//
// Calibration OVERWRITES the region it is given (it writes random data there and discards
// ranges of it): the caller gives free space, a scratch file, or a pool that is not in use yet.
// It first writes the working set once (so that reads read data rather than holes, and writes
// overwrite) and then keeps every I/O inside it, at random aligned offsets.
//
// It runs the reactor itself (Reactor::RunOnce) until done: call it on the reactor's thread and
// not from inside one of its callbacks, with no other I/O on the backend (that would be measured
// too). It never blocks for long: every wait is bounded by options.total_ns (the whole run) and
// io_timeout_ns (no completion for that long: the device is stuck), and each point gets a
// share of the time left so that the run fits total_ns. An I/O error ends it with that error.
//
// If it gives up while I/Os are still in flight (a timeout), their memory stays allocated until
// they complete (the last completion frees it): destroy the backend only when
// backend->stats().inflight is 0.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "common/status.h"
#include "io/io_backend.h"
#include "qos/cost_model.h"
#include "reactor/reactor.h"

namespace spd::qos {

struct CalibrateOptions {
  // The region calibration may overwrite: [offset_bytes, offset_bytes + length_bytes), offset
  // aligned to the backend's alignment. length_bytes 0: to the end of the backend.
  uint64_t offset_bytes = 0;
  uint64_t length_bytes = 0;
  // The part of the region I/Os go to (from its start): written once before measuring when
  // `prefill`, less if the time for that runs out (at least the largest size and discard_bytes).
  uint64_t working_set_bytes = 256ull << 20;
  bool prefill = true;
  // Read and write sizes: two or more distinct ones, multiples of the backend's alignment. The
  // smallest read anchors the cost scale (4 KiB: CostModel::kReferenceBytes).
  std::vector<uint32_t> sizes = {4096, 64 << 10, 1 << 20};
  unsigned queue_depth = 32;                  // the saturated points
  uint64_t inflight_bytes_max = 32ull << 20;  // a size runs at depth min(queue_depth, this/size)
  uint32_t qd1_samples = 101;                 // a QD1 point's I/Os at most (fewer if time is up)
  uint64_t point_ns = 250'000'000;            // one measured point at most
  uint64_t total_ns = 15'000'000'000;         // the whole calibration
  uint64_t io_timeout_ns = 5'000'000'000;     // no completion for this long while I/O in flight
  bool measure_flush = true;                  // else CostModel::Default()'s flush_ns
  bool measure_discard = true;                // else CostModel::Default()'s discard_ns
  uint32_t discard_bytes = 1 << 20;
  uint64_t seed = 1;  // offsets and data
  // The clock latencies, throughputs and point budgets are measured on; empty: MonotonicNs().
  // A sim backend in virtual time (SimOptions::virtual_time) passes its own clock
  // (SimBackend::now_ns). total_ns and io_timeout_ns are always wall time.
  std::function<uint64_t()> clock;
};

// One measured (op, size). Flush and discard points have only the QD1 part.
struct CalibrationPoint {
  IoOp op = IoOp::kRead;
  uint32_t bytes = 0;
  uint32_t qd1_samples = 0;
  double qd1_median_ns = 0;
  unsigned queue_depth = 0;    // 0: no saturated measurement
  uint64_t saturated_ios = 0;  // completions in the measured window
  double saturated_iops = 0;
  double saturated_latency_ns = 0;  // mean, in the window
  // The queue built up: mean latency at depth ≥ 1.5x the QD1 median. When false the device
  // was not saturated at this depth, and its capacity here is under-estimated.
  bool saturated = false;
  double model_iops = 0;  // the fitted model's CapacityIops(op, bytes)
};

// Throughput of 4 KiB (the smallest size's) random reads at one queue depth.
struct DepthPoint {
  unsigned queue_depth = 0;
  double iops = 0;
};

struct CalibrationReport {
  std::vector<CalibrationPoint> points;
  // The smallest read size at QD1, 2, 4, ... up to its full depth (the last point): where the
  // model's `depth` comes from (SaturationDepthOf).
  std::vector<DepthPoint> depth_points;
  uint64_t working_set_bytes = 0;
  uint64_t elapsed_ns = 0;
  // max |model_iops / saturated_iops - 1| over the saturated points: how linear the device is.
  double max_capacity_error = 0;
};

// Measures `backend` and returns the fitted model (source "calibrated <backend name>"). Errors:
// kInvalidArgument (options), kDeadlineExceeded (total_ns or io_timeout_ns), the I/O's error,
// kFailedPrecondition (the measurements give a model that fails Validate()). `report`, when
// given, receives the measured points (also on most errors: what was measured so far).
Result<CostModel> Calibrate(Reactor* reactor, IoBackend* backend, const CalibrateOptions& options,
                            CalibrationReport* report = nullptr);

// The smallest measured depth whose throughput is at least 90% of the deepest point's; 0 with
// fewer than two points or no throughput at the deepest.
double SaturationDepthOf(const std::vector<DepthPoint>& points);

// The fit alone, from measured points (see the top of this file): needs saturated read and
// write throughput at two or more distinct sizes each and the QD1 latency of the smallest read.
Result<CostModel> FitCostModel(const std::vector<CalibrationPoint>& points);

}  // namespace spd::qos
