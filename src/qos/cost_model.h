// CostModel: what one I/O costs a device, in device time (blk-iocost's idea), and how much device
// time the device serves per second.
//
// Units. A cost is in device-ns. The scale is fixed by one anchor: a small read (4 KiB,
// kReferenceBytes) costs its latency at queue depth 1. Every other read or write costs in
// proportion to the share of the device's capacity it takes when the device is saturated, so
//
//   Cost(op, bytes)         = base_ns[op] + bytes * ns_per_byte[op]        (kRead, kWrite)
//   CapacityIops(op, bytes) = parallelism * 1e9 / Cost(op, bytes)          (saturated rate)
//
// `parallelism` is the device-ns the device serves per ns of wall time when saturated: its
// internal parallelism. A device whose 4 KiB reads take 100 µs at QD1 and which does 400k IOPS
// at depth has parallelism 100 µs * 400k/s = 40. A device that serves one operation at a time
// and adds no latency of its own (a disk head; the sim backend when its latencies are below its
// service times) has parallelism 1 and costs equal to its service times.
//
// Large I/Os are charged by capacity, not by their QD1 latency: a 1 MiB read on an NVMe drive
// returns in ~2-4x the time of a 4 KiB read at QD1 but uses ~100x its share of the drive at
// depth; charging latency would let a tenant issuing 1 MiB reads take far more than its share.
//
// Flush and discard (and write-zeroes, charged as a discard) have fixed costs: their QD1 latency.
// That is a rough charge: how much of the device a flush really takes ranges from nothing (drives
// with power-loss protection) to all of it while a volatile cache drains.
//
// Stored with a pool as DATA_DIR/<pool>.cost.json (CostModelPath), a small versioned JSON file:
//
//   {"format": "spd-cost-model", "version": 1, "source": "calibrated uring",
//    "parallelism": 4.8, "depth": 16, "read": {"base_ns": 60000, "ns_per_byte": 10},
//    "write": {"base_ns": 120000, "ns_per_byte": 12.5}, "flush_ns": 1000000,
//    "discard_ns": 500000}
//
// "source" is optional free text (where the numbers came from) and "depth" optional (a model
// calibrated before it was measured, or one written by hand, lacks it); every other field is
// required, and a field this version does not know is an error (a newer file bumps "version").
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"
#include "io/io_backend.h"

namespace spd::qos {

// The cost of one read or write: base_ns + bytes * ns_per_byte (device-ns).
struct OpCost {
  double base_ns = 0;
  double ns_per_byte = 0;
};

struct CostModel {
  static constexpr const char* kFormat = "spd-cost-model";
  static constexpr int kVersion = 1;
  // The size whose read cost is its QD1 latency (the anchor of the device-ns scale).
  static constexpr uint32_t kReferenceBytes = 4096;

  // Validation bounds: anything outside them is a broken measurement or a broken file.
  static constexpr double kNsMin = 1;                // base_ns, flush_ns, discard_ns
  static constexpr double kNsMax = 10e9;             // 10 s for one I/O's fixed part
  static constexpr double kNsPerByteMin = 1e-4;      // 10 TB/s at parallelism 1
  static constexpr double kNsPerByteMax = 1e4;       // 100 KB/s at parallelism 1
  static constexpr double kParallelismMax = 100000;  // ≥ 1 always

  OpCost read;
  OpCost write;
  double flush_ns = 0;
  double discard_ns = 0;  // also kWriteZeroes
  double parallelism = 1;
  // The queue depth at which 4 KiB random reads reach 90% of their throughput at the
  // calibration's full depth (calibrate.h), when measured; 0: not measured. A device whose
  // latency grows with depth long before it saturates (a virtual disk, a network volume) needs
  // far more requests in flight than `parallelism` to deliver its capacity.
  double depth = 0;
  std::string source;  // free text: "default", "sim", "calibrated uring", ...

  // Device-ns charged for one I/O (at least 1). kWriteZeroes costs what kDiscard costs: on files
  // and on devices with a zeroing offload it is a metadata operation (a device that writes the
  // zeros itself is undercharged; calibration does not measure it).
  uint64_t Cost(IoOp op, uint32_t bytes) const;
  // The same, unrounded.
  double CostNs(IoOp op, uint32_t bytes) const;
  // I/Os of this kind per second the device serves when saturated with them alone.
  double CapacityIops(IoOp op, uint32_t bytes) const {
    return parallelism * 1e9 / CostNs(op, bytes);
  }

  // Requests (4 KiB reads) the device needs in flight to deliver its capacity: the measured
  // depth, or the parallelism when that was not measured (or is larger).
  double SaturationDepth() const { return std::max(parallelism, depth); }

  // OK, or InvalidArgument naming the first field that is not finite or out of its bounds.
  Status Validate() const;

  // The JSON text (one object, a trailing newline). REQUIRES: Validate().ok() for Load to
  // accept it back.
  std::string ToJson() const;
  // Parses and validates. kDataLoss for text that is not JSON, not a cost model ("format"), of
  // another version, or has missing, mistyped or unknown fields; kInvalidArgument when the
  // numbers fail Validate().
  static Result<CostModel> FromJson(std::string_view text);

  // Writes atomically: a temporary file beside `path`, fsync, rename over `path`, fsync of the
  // directory. Refuses a model that fails Validate().
  Status Save(const std::string& path) const;
  // kNotFound when the file does not exist; otherwise FromJson's errors, prefixed with the path.
  static Result<CostModel> Load(const std::string& path);

  // The model for a device nobody has calibrated: a SATA-class flash drive.
  //   reads:  100 µs at QD1 for 4 KiB; 50k IOPS (4 KiB) and 500 MB/s at depth
  //   writes: 29k IOPS (4 KiB) and 400 MB/s at depth
  //   flush 1 ms, discard 0.5 ms; parallelism 5 (= 100 µs * ~50k/s)
  // Why: it is the slowest common flash device, so a pool on NVMe is under-estimated (the
  // scheduler leaves capacity unused rather than overloading the device), while a pool on a
  // rotating disk (~200 random IOPS) is badly over-estimated: calibrate those. Numbers are
  // typical datasheet/benchmark values of mainstream SATA SSDs.
  static CostModel Default();
};

// The model the sim backend's modelled device implies, computed from its options exactly:
// at saturation the sim serves one operation at a time, each for
//   s(op, bytes) = 1e9 / iops_max + bytes * 1e9 / bandwidth_bytes_per_s   (bytes: reads/writes)
// and at QD1 an operation takes max(latency_base + median jitter + extra[op], s). So
//   parallelism = max(1, QD1 latency of a 4 KiB read / s(read, 4 KiB))  (1 unless latency > s)
//   read/write  = parallelism * s(op, .)
//   flush, discard = their QD1 latency.
// A sim without a capacity model (iops_max = bandwidth = 0) serves everything at once: it gets
// kParallelismMax and costs equal to its latencies. Coefficients below the validation minimums
// (no IOPS limit: base 0; no bandwidth limit: 0 ns/byte) are raised to them.
CostModel ForSim(const SimOptions& options);

// DATA_DIR/<pool>.cost.json
std::string CostModelPath(std::string_view data_dir, std::string_view pool);

}  // namespace spd::qos
