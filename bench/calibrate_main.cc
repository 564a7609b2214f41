// calibrate_bench: runs the QoS cost-model calibration (src/qos/calibrate.h) against one backend
// and prints the measured points and the fitted model's JSON (what DATA_DIR/<pool>.cost.json
// would hold).
//
//   calibrate_bench --backend uring --path /dev/shm/f --size 1G
//   calibrate_bench --backend sim --sim-iops 5000 --sim-bw 256M --sim-latency-us 50
//
// The region [--offset, --offset + --length) of the file is OVERWRITTEN: use a scratch file.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "io/io_backend.h"
#include "io/sim_backend.h"
#include "qos/calibrate.h"
#include "qos/cost_model.h"

namespace {

// "4096", "64K", "1M", "2G" -> bytes.
uint64_t ParseBytes(const std::string& v) {
  size_t end = 0;
  uint64_t n = std::stoull(v, &end);
  if (end < v.size()) {
    switch (v[end]) {
      case 'K':
      case 'k':
        n <<= 10;
        break;
      case 'M':
      case 'm':
        n <<= 20;
        break;
      case 'G':
      case 'g':
        n <<= 30;
        break;
      default:
        throw std::invalid_argument("bad size " + v);
    }
  }
  return n;
}

std::vector<uint32_t> ParseSizes(const std::string& v) {
  std::vector<uint32_t> out;
  size_t pos = 0;
  while (pos <= v.size()) {
    size_t comma = v.find(',', pos);
    if (comma == std::string::npos) comma = v.size();
    out.push_back(static_cast<uint32_t>(ParseBytes(v.substr(pos, comma - pos))));
    pos = comma + 1;
  }
  return out;
}

int Usage() {
  std::fprintf(
      stderr,
      "usage: calibrate_bench --backend uring|posix --path FILE [--size BYTES] [--buffered 1]\n"
      "       calibrate_bench --backend sim [--size BYTES] [--sim-iops N] [--sim-bw BYTES/s]\n"
      "           [--sim-latency-us N] [--sim-jitter-us N] [--sim-read-extra-us N]\n"
      "           [--sim-write-extra-us N] [--sim-flush-extra-us N]\n"
      "  common: [--offset BYTES] [--length BYTES] [--working-set BYTES] [--sizes 4K,64K,1M]\n"
      "          [--qd N] [--samples N] [--point-ms N] [--total-ms N] [--timeout-ms N]\n"
      "          [--save PATH]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string backend = "uring", path, save;
  uint64_t size = 0;
  bool buffered = false;
  spd::SimOptions so;
  spd::qos::CalibrateOptions co;
  try {
    for (int i = 1; i + 1 < argc; i += 2) {
      const std::string k = argv[i], v = argv[i + 1];
      const uint64_t us = 1000;
      if (k == "--backend")
        backend = v;
      else if (k == "--path")
        path = v;
      else if (k == "--size")
        size = ParseBytes(v);
      else if (k == "--buffered")
        buffered = v == "1";
      else if (k == "--save")
        save = v;
      else if (k == "--offset")
        co.offset_bytes = ParseBytes(v);
      else if (k == "--length")
        co.length_bytes = ParseBytes(v);
      else if (k == "--working-set")
        co.working_set_bytes = ParseBytes(v);
      else if (k == "--sizes")
        co.sizes = ParseSizes(v);
      else if (k == "--qd")
        co.queue_depth = static_cast<unsigned>(std::stoul(v));
      else if (k == "--samples")
        co.qd1_samples = static_cast<uint32_t>(std::stoul(v));
      else if (k == "--point-ms")
        co.point_ns = std::stoull(v) * 1'000'000;
      else if (k == "--total-ms")
        co.total_ns = std::stoull(v) * 1'000'000;
      else if (k == "--timeout-ms")
        co.io_timeout_ns = std::stoull(v) * 1'000'000;
      else if (k == "--sim-iops")
        so.iops_max = ParseBytes(v);
      else if (k == "--sim-bw")
        so.bandwidth_bytes_per_s = ParseBytes(v);
      else if (k == "--sim-latency-us")
        so.latency_base_ns = std::stoull(v) * us;
      else if (k == "--sim-jitter-us")
        so.latency_jitter_ns = std::stoull(v) * us;
      else if (k == "--sim-read-extra-us")
        so.read_extra_ns = std::stoull(v) * us;
      else if (k == "--sim-write-extra-us")
        so.write_extra_ns = std::stoull(v) * us;
      else if (k == "--sim-flush-extra-us")
        so.flush_extra_ns = std::stoull(v) * us;
      else if (k == "--sim-virtual")
        so.virtual_time = v == "1";
      else
        return Usage();
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return Usage();
  }
  auto kind = spd::ParseBackendKind(backend);
  if (!kind.ok() || kind.value() == spd::BackendKind::kNull) return Usage();
  const bool sim = kind.value() == spd::BackendKind::kSim;
  if (!sim && path.empty()) return Usage();

  spd::ReactorOptions ro;
  ro.force_epoll = kind.value() == spd::BackendKind::kPosix;
  auto reactor = spd::Reactor::Create(ro);
  if (!reactor.ok()) {
    std::fprintf(stderr, "%s\n", reactor.status().ToString().c_str());
    return 1;
  }
  spd::BackendOptions bo;
  bo.kind = sim ? kind.value() : spd::ChooseBackendKind(kind.value(), *reactor.value());
  bo.path = path;
  bo.size_bytes = size ? size : (sim ? 1ull << 30 : 0);
  bo.create = size > 0;
  bo.buffered = buffered;
  bo.sim = so;
  auto b = spd::OpenBackend(bo, reactor.value().get());
  if (!b.ok()) {
    std::fprintf(stderr, "%s\n", b.status().ToString().c_str());
    return 1;
  }
  spd::IoBackend* be = b.value().get();
  if (sim && so.virtual_time) {
    // Simulated time: measure on the sim's clock (point and total times are simulated too;
    // the wall-time cap stays --total-ms).
    auto* s = static_cast<spd::SimBackend*>(be);
    co.clock = [s] { return s->now_ns(); };
  }

  spd::qos::CalibrationReport rep;
  auto m = spd::qos::Calibrate(reactor.value().get(), be, co, &rep);
  // Whatever an abandoned calibration left in flight completes before the backend goes.
  for (int i = 0; i < 1000 && be->stats().inflight > 0; ++i) reactor.value()->RunOnce(10'000'000);

  std::printf("backend=%s size=%llu working_set=%llu elapsed_ms=%.0f\n", be->name(),
              static_cast<unsigned long long>(be->size_bytes()),
              static_cast<unsigned long long>(rep.working_set_bytes),
              static_cast<double>(rep.elapsed_ns) / 1e6);
  std::printf("%-8s %9s %6s %12s %4s %10s %12s %12s %4s %12s\n", "op", "bytes", "qd1_n",
              "qd1_med_us", "qd", "sat_ios", "sat_iops", "sat_lat_us", "sat", "model_iops");
  for (const auto& p : rep.points) {
    std::printf("%-8s %9u %6u %12.1f %4u %10llu %12.0f %12.1f %4s %12.0f\n", spd::IoOpName(p.op),
                p.bytes, p.qd1_samples, p.qd1_median_ns / 1e3, p.queue_depth,
                static_cast<unsigned long long>(p.saturated_ios), p.saturated_iops,
                p.saturated_latency_ns / 1e3, p.queue_depth ? (p.saturated ? "yes" : "NO") : "-",
                p.model_iops);
  }
  if (!m.ok()) {
    std::fprintf(stderr, "calibration failed: %s\n", m.status().ToString().c_str());
    return 1;
  }
  std::printf("max_capacity_error=%.3f\n", rep.max_capacity_error);
  std::printf("depth sweep (smallest read):");
  for (const auto& d : rep.depth_points) std::printf(" QD%u %.0f", d.queue_depth, d.iops);
  std::printf(" -> depth %.0f\n", m->depth);
  std::printf("%s", m->ToJson().c_str());
  if (sim) std::printf("ForSim (expected):\n%s", spd::qos::ForSim(so).ToJson().c_str());
  if (!save.empty()) {
    spd::Status s = m->Save(save);
    if (!s.ok()) {
      std::fprintf(stderr, "%s\n", s.ToString().c_str());
      return 1;
    }
  }
  return 0;
}
