#include "qos/calibrate.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>

namespace spd::qos {
namespace {

// The longest single RunOnce: the loop re-checks its deadlines at least this often.
constexpr uint64_t kWaitSliceNs = 20'000'000;
// Completions at depth after the first round, at least, before a saturated point may end.
constexpr uint64_t kSaturatedIosMin = 8;
// A QD1 point's I/Os at least (if the time cap allows).
constexpr uint32_t kQd1SamplesMin = 3;
// Mean latency at depth over the QD1 median above which the queue is taken to have built up.
constexpr double kSaturatedLatencyRatio = 1.5;

std::string Bytes(uint64_t b) {
  if (b >= (1u << 20) && b % (1u << 20) == 0) return std::to_string(b >> 20) + " MiB";
  if (b >= 1024 && b % 1024 == 0) return std::to_string(b >> 10) + " KiB";
  return std::to_string(b) + " bytes";
}

// One measured stretch of I/O: which I/O, how many at once, when to stop; and what was seen.
struct Phase {
  std::string name;  // for messages: "read 4 KiB QD1"
  IoOp op = IoOp::kRead;
  uint32_t bytes = 0;
  unsigned qd = 1;
  bool flush_pairs = false;  // each I/O is an untimed write of pair_bytes, then the timed flush
  bool sequential = false;   // consecutive offsets from the region start up to seq_end (prefill)
  uint64_t seq_end = 0;
  uint64_t end_ns = 0;     // no new I/O after this ...
  uint64_t min_issue = 0;  // ... unless fewer were issued
  uint64_t max_issue = 0;  // 0: no limit
  uint64_t warmup = 0;     // completions before the measured window
  bool keep_latencies = false;

  uint64_t issued = 0;
  uint64_t completed = 0;
  std::vector<uint64_t> latencies;
  uint64_t window_start_ns = 0;
  uint64_t window_end_ns = 0;
  uint64_t window_ios = 0;
  double window_latency_sum_ns = 0;
  // Least squares of the completion count k against its time t (from window_start_ns): the
  // slope is the rate. A stall that delays a few completions moves the line little, where it
  // would move a rate taken from the first and last completion alone.
  double sum_t = 0, sum_tt = 0, sum_k = 0, sum_tk = 0;

  // Completions per second in the window.
  double Rate() const {
    const double n = static_cast<double>(window_ios);
    const double den = n * sum_tt - sum_t * sum_t;
    if (window_ios >= 3 && den > 0) return (n * sum_tk - sum_t * sum_k) / den * 1e9;
    if (window_ios > 0 && window_end_ns > window_start_ns)
      return n * 1e9 / static_cast<double>(window_end_ns - window_start_ns);
    return 0;
  }
  Status error;
};

class Runner;

struct Slot {
  BackendIo io;
  Runner* run = nullptr;
  uint32_t index = 0;
  uint64_t submit_ns = 0;
  bool pre = false;  // the write ahead of a timed flush
};

// Owns the I/O slots and data buffers. Heap-allocated: when calibration gives up with I/O in
// flight it is abandoned, and the last completion deletes it.
class Runner {
 public:
  Runner(Reactor* reactor, IoBackend* backend, const CalibrateOptions& o, unsigned slots,
         uint64_t arena_bytes, uint64_t hard_deadline_ns)
      : reactor_(reactor),
        backend_(backend),
        region_offset_(o.offset_bytes),
        io_timeout_ns_(o.io_timeout_ns),
        hard_deadline_ns_(hard_deadline_ns),
        clock_(o.clock),
        rng_(o.seed),
        slots_(new Slot[slots]),
        slot_count_(slots),
        arena_bytes_(arena_bytes) {
    for (unsigned i = 0; i < slots; ++i) {
      slots_[i].run = this;
      slots_[i].index = i;
      slots_[i].io.ctx = &slots_[i];
      slots_[i].io.done = &Runner::OnDone;
    }
  }
  ~Runner() { std::free(arena_); }

  Status Init(uint32_t alignment) {
    const size_t align = std::max<size_t>(alignment, 4096);
    void* p = nullptr;
    if (posix_memalign(&p, align, arena_bytes_) != 0)
      return ResourceExhausted("calibration: cannot allocate " + Bytes(arena_bytes_) +
                               " of buffers");
    arena_ = static_cast<uint8_t*>(p);
    // Random data: a device that compresses or deduplicates must not get an easy pattern.
    // splitmix64, not the Mersenne Twister: tens of MiB of it must take milliseconds (the time
    // counts against total_ns), also under ASan.
    uint64_t x = rng_();
    auto* words = reinterpret_cast<uint64_t*>(arena_);
    for (uint64_t i = 0; i < arena_bytes_ / 8; ++i) {
      uint64_t z = (x += 0x9e3779b97f4a7c15ull);
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      words[i] = z ^ (z >> 31);
    }
    return Status::Ok();
  }

  void set_working_set(uint64_t bytes) { working_set_ = bytes; }
  void set_pair_bytes(uint32_t bytes) { pair_bytes_ = bytes; }
  unsigned inflight() const { return inflight_; }
  void Abandon() { abandoned_ = true; }
  // The measuring clock (CalibrateOptions::clock).
  uint64_t Now() const { return clock_ ? clock_() : MonotonicNs(); }

  // Drives `ph` until its last I/O completed. kDeadlineExceeded when a deadline passes with
  // I/O still in flight (the caller then abandons this runner).
  Status Run(Phase* ph) {
    SPD_ASSERT(ph->qd >= 1 && ph->qd <= slot_count_);
    phase_ = ph;
    uint64_t now = MonotonicNs();
    if (now >= hard_deadline_ns_) return TimeCap(*ph);
    last_progress_ns_ = now;
    seq_next_ = region_offset_;
    const uint64_t t = Now();
    if (ph->warmup == 0) ph->window_start_ns = t;
    for (unsigned i = 0; i < ph->qd && MayIssue(*ph, t); ++i) Issue(&slots_[i]);
    while (inflight_ > 0) {
      now = MonotonicNs();
      if (now >= hard_deadline_ns_) return TimeCap(*ph);
      if (now - last_progress_ns_ >= io_timeout_ns_)
        return {StatusCode::kDeadlineExceeded,
                "calibration: " + ph->name + ": no I/O completed for " +
                    std::to_string(io_timeout_ns_ / 1000000) + " ms (device stuck?)"};
      const uint64_t wait = std::min(
          {hard_deadline_ns_ - now, last_progress_ns_ + io_timeout_ns_ - now, kWaitSliceNs});
      reactor_->RunOnce(wait);
    }
    phase_ = nullptr;
    return ph->error;
  }

 private:
  Status TimeCap(const Phase& ph) const {
    return {StatusCode::kDeadlineExceeded,
            "calibration: the time cap was reached during " + ph.name +
                " (a slow device: give more total time, fewer sizes or a smaller queue depth)"};
  }

  // `now` on the measuring clock.
  bool MayIssue(const Phase& ph, uint64_t now) const {
    if (!ph.error.ok() || MonotonicNs() >= hard_deadline_ns_) return false;
    if (ph.max_issue && ph.issued >= ph.max_issue) return false;
    if (ph.sequential && seq_next_ + ph.bytes > ph.seq_end) return false;
    return now < ph.end_ns || ph.issued < ph.min_issue;
  }

  uint64_t RandomOffset(uint32_t bytes) {
    const uint64_t blocks = std::max<uint64_t>(1, working_set_ / bytes);
    return region_offset_ + (rng_() % blocks) * bytes;
  }

  void Issue(Slot* s) {
    Phase& ph = *phase_;
    BackendIo& io = s->io;
    io.flags = 0;
    io.buf_index = -1;
    io.result = 0;
    if (ph.flush_pairs) {
      io.op = IoOp::kWrite;
      io.length_bytes = pair_bytes_;
      io.offset_bytes = RandomOffset(pair_bytes_);
      io.buf = arena_ + uint64_t{s->index} * pair_bytes_;
      s->pre = true;
    } else if (ph.op == IoOp::kFlush) {
      io.SetFlush();
    } else {
      io.op = ph.op;
      io.length_bytes = ph.bytes;
      if (ph.sequential) {
        io.offset_bytes = seq_next_;
        seq_next_ += ph.bytes;
      } else {
        io.offset_bytes = RandomOffset(ph.bytes);
      }
      const bool data = ph.op == IoOp::kRead || ph.op == IoOp::kWrite;
      io.buf = data ? arena_ + uint64_t{s->index} * ph.bytes : nullptr;
    }
    ++ph.issued;
    ++inflight_;
    s->submit_ns = Now();
    backend_->Submit(&io);
  }

  static void OnDone(BackendIo* io) {
    Slot* s = static_cast<Slot*>(io->ctx);
    Runner* r = s->run;
    --r->inflight_;
    if (r->abandoned_) {
      if (r->inflight_ == 0) delete r;
      return;
    }
    r->Completed(s);
  }

  void Completed(Slot* s) {
    last_progress_ns_ = MonotonicNs();
    const uint64_t now = Now();
    Phase& ph = *phase_;
    BackendIo& io = s->io;
    if (io.result < 0) {
      if (ph.error.ok())
        ph.error =
            Status::FromErrno(-io.result, "calibration: " + ph.name + ": " + IoOpName(io.op) +
                                              " of " + Bytes(io.length_bytes) + " at offset " +
                                              std::to_string(io.offset_bytes));
      return;
    }
    if (s->pre) {
      s->pre = false;
      io.SetFlush();
      io.result = 0;
      ++inflight_;
      s->submit_ns = Now();
      backend_->Submit(&io);
      return;
    }
    ++ph.completed;
    const uint64_t latency = now - s->submit_ns;
    if (ph.keep_latencies) ph.latencies.push_back(latency);
    if (ph.completed == ph.warmup) {
      ph.window_start_ns = now;
    } else if (ph.completed > ph.warmup) {
      ++ph.window_ios;
      ph.window_end_ns = now;
      ph.window_latency_sum_ns += static_cast<double>(latency);
      const double t = static_cast<double>(now - ph.window_start_ns);
      const double k = static_cast<double>(ph.window_ios);
      ph.sum_t += t;
      ph.sum_tt += t * t;
      ph.sum_k += k;
      ph.sum_tk += t * k;
    }
    if (MayIssue(ph, now)) Issue(s);
  }

  Reactor* reactor_;
  IoBackend* backend_;
  uint64_t region_offset_;
  uint64_t io_timeout_ns_;
  uint64_t hard_deadline_ns_;  // MonotonicNs, like io_timeout_ns_ and last_progress_ns_
  std::function<uint64_t()> clock_;
  std::mt19937_64 rng_;
  std::unique_ptr<Slot[]> slots_;
  unsigned slot_count_;
  uint64_t arena_bytes_;
  uint8_t* arena_ = nullptr;
  uint64_t working_set_ = 0;
  uint32_t pair_bytes_ = 4096;
  Phase* phase_ = nullptr;
  unsigned inflight_ = 0;
  bool abandoned_ = false;
  uint64_t last_progress_ns_ = 0;
  uint64_t seq_next_ = 0;
};

double Median(std::vector<uint64_t> v) {
  if (v.empty()) return 0;
  const size_t mid = v.size() / 2;
  std::nth_element(v.begin(), v.begin() + static_cast<long>(mid), v.end());
  if (v.size() % 2 == 1) return static_cast<double>(v[mid]);
  const uint64_t hi = v[mid];
  const uint64_t lo = *std::max_element(v.begin(), v.begin() + static_cast<long>(mid));
  return (static_cast<double>(lo) + static_cast<double>(hi)) / 2;
}

struct Line {
  double a = 0;  // ns
  double b = 0;  // ns per byte
};

// Weighted least squares of y = a + b x with weights 1/y² (relative errors count equally).
// A negative intercept falls back to a line through the origin, a negative slope to a constant.
Line FitLine(const std::vector<std::pair<double, double>>& xy) {
  double s = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (const auto& [x, y] : xy) {
    const double w = 1 / (y * y);
    s += w;
    sx += w * x;
    sy += w * y;
    sxx += w * x * x;
    sxy += w * x * y;
  }
  Line l;
  const double det = s * sxx - sx * sx;
  l.b = det > 0 ? (s * sxy - sx * sy) / det : 0;
  l.a = (sy - l.b * sx) / s;
  if (l.a < 0) {
    l.a = 0;
    l.b = sxy / sxx;
  }
  if (l.b < 0) {
    l.b = 0;
    l.a = sy / s;
  }
  return l;
}

}  // namespace

double SaturationDepthOf(const std::vector<DepthPoint>& points) {
  if (points.size() < 2) return 0;
  const DepthPoint* deepest = &points.front();
  for (const DepthPoint& p : points)
    if (p.queue_depth > deepest->queue_depth) deepest = &p;
  if (!(deepest->iops > 0)) return 0;
  unsigned best = deepest->queue_depth;
  for (const DepthPoint& p : points)
    if (p.queue_depth > 0 && p.iops >= 0.9 * deepest->iops) best = std::min(best, p.queue_depth);
  return best;
}

Result<CostModel> FitCostModel(const std::vector<CalibrationPoint>& points) {
  auto line_for = [&](IoOp op) -> Result<Line> {
    std::vector<std::pair<double, double>> xy;
    std::vector<uint32_t> sizes;
    for (const CalibrationPoint& p : points) {
      if (p.op != op || !(p.saturated_iops > 0)) continue;
      xy.emplace_back(static_cast<double>(p.bytes), 1e9 / p.saturated_iops);
      sizes.push_back(p.bytes);
    }
    std::sort(sizes.begin(), sizes.end());
    const auto distinct = std::unique(sizes.begin(), sizes.end()) - sizes.begin();
    if (distinct < 2)
      return InvalidArgument(std::string("calibration: need saturated ") + IoOpName(op) +
                             " throughput at two or more sizes, have " + std::to_string(distinct));
    return FitLine(xy);
  };
  SPD_ASSIGN_OR_RETURN(const Line read, line_for(IoOp::kRead));
  SPD_ASSIGN_OR_RETURN(const Line write, line_for(IoOp::kWrite));

  const CalibrationPoint* ref = nullptr;
  for (const CalibrationPoint& p : points) {
    if (p.op == IoOp::kRead && p.qd1_median_ns > 0 && (!ref || p.bytes < ref->bytes)) ref = &p;
  }
  if (!ref) return InvalidArgument("calibration: need the QD1 latency of a read");
  const double s_ref = read.a + read.b * ref->bytes;
  CostModel m = CostModel::Default();
  m.parallelism = s_ref > 0
                      ? std::clamp(ref->qd1_median_ns / s_ref, 1.0, CostModel::kParallelismMax)
                      : CostModel::kParallelismMax;
  auto scaled = [&](const Line& l) {
    return OpCost{std::max(CostModel::kNsMin, m.parallelism * l.a),
                  std::max(CostModel::kNsPerByteMin, m.parallelism * l.b)};
  };
  m.read = scaled(read);
  m.write = scaled(write);
  for (const CalibrationPoint& p : points) {
    if (!(p.qd1_median_ns > 0)) continue;
    if (p.op == IoOp::kFlush) m.flush_ns = std::max(CostModel::kNsMin, p.qd1_median_ns);
    if (p.op == IoOp::kDiscard) m.discard_ns = std::max(CostModel::kNsMin, p.qd1_median_ns);
  }
  m.source = "calibrated";
  if (Status s = m.Validate(); !s.ok())
    return FailedPrecondition("calibration gave an implausible model: " + std::string(s.message()));
  return m;
}

namespace {

Status CheckOptions(const IoBackend& b, const CalibrateOptions& o, uint64_t region_bytes) {
  const uint32_t align = b.alignment_bytes();
  if (o.offset_bytes % align != 0)
    return InvalidArgument("calibration: region offset " + std::to_string(o.offset_bytes) +
                           " is not a multiple of the backend's alignment " +
                           std::to_string(align));
  if (o.offset_bytes > b.size_bytes() || region_bytes > b.size_bytes() - o.offset_bytes)
    return InvalidArgument("calibration: region beyond the end of the backend (" +
                           Bytes(b.size_bytes()) + ")");
  std::vector<uint32_t> sizes = o.sizes;
  std::sort(sizes.begin(), sizes.end());
  sizes.erase(std::unique(sizes.begin(), sizes.end()), sizes.end());
  if (sizes.size() < 2) return InvalidArgument("calibration: give two or more distinct sizes");
  for (uint32_t s : sizes) {
    if (s == 0 || s % align != 0)
      return InvalidArgument("calibration: size " + std::to_string(s) +
                             " is not a positive multiple of the alignment " +
                             std::to_string(align));
    if (s > (1u << 30)) return InvalidArgument("calibration: size " + Bytes(s) + " is too large");
  }
  const uint64_t need = std::max<uint64_t>(sizes.back(), o.measure_discard ? o.discard_bytes : 0);
  if (region_bytes < need || std::min(region_bytes, o.working_set_bytes) < need)
    return InvalidArgument("calibration: the region and working set must hold " + Bytes(need));
  if (o.measure_discard && (o.discard_bytes == 0 || o.discard_bytes % align != 0))
    return InvalidArgument("calibration: discard_bytes must be a positive multiple of " +
                           std::to_string(align));
  if (o.queue_depth == 0 || o.queue_depth > 4096)
    return InvalidArgument("calibration: queue_depth must be in [1, 4096]");
  if (o.qd1_samples == 0) return InvalidArgument("calibration: qd1_samples must be positive");
  if (o.point_ns == 0 || o.total_ns == 0 || o.io_timeout_ns == 0)
    return InvalidArgument("calibration: point_ns, total_ns and io_timeout_ns must be positive");
  return Status::Ok();
}

}  // namespace

Result<CostModel> Calibrate(Reactor* reactor, IoBackend* backend, const CalibrateOptions& o,
                            CalibrationReport* report) {
  SPD_ASSERT(reactor != nullptr && backend != nullptr);
  const uint64_t start = MonotonicNs();
  CalibrationReport local;
  CalibrationReport& rep = report ? *report : local;
  rep = CalibrationReport{};
  const uint64_t region_bytes =
      o.length_bytes
          ? o.length_bytes
          : (backend->size_bytes() > o.offset_bytes ? backend->size_bytes() - o.offset_bytes : 0);
  SPD_RETURN_IF_ERROR(CheckOptions(*backend, o, region_bytes));

  std::vector<uint32_t> sizes = o.sizes;
  std::sort(sizes.begin(), sizes.end());
  sizes.erase(std::unique(sizes.begin(), sizes.end()), sizes.end());
  const uint32_t largest = sizes.back();
  auto depth = [&](uint32_t bytes) {
    return static_cast<unsigned>(
        std::clamp<uint64_t>(o.inflight_bytes_max / bytes, 1, o.queue_depth));
  };
  const uint32_t pair_bytes = std::max<uint32_t>(4096, backend->alignment_bytes());
  unsigned slots = 1;
  uint64_t arena = pair_bytes;
  for (uint32_t s : sizes) {
    slots = std::max(slots, depth(s));
    arena = std::max(arena, uint64_t{depth(s)} * s);
  }
  auto owned = std::make_unique<Runner>(reactor, backend, o, slots, arena, start + o.total_ns);
  Runner* run = owned.get();
  SPD_RETURN_IF_ERROR(run->Init(backend->alignment_bytes()));
  run->set_pair_bytes(pair_bytes);

  // Each measured point gets a share of the time left (90% of total_ns: the rest is slack for
  // draining queues), at most point_ns; the prefill counts as two points.
  // The depth sweep: the smallest reads at 2, 4, 8, ... below their full depth.
  std::vector<unsigned> sweep;
  for (unsigned q = 2; q < depth(sizes.front()); q *= 2) sweep.push_back(q);
  unsigned points_left = 2 + 4 * static_cast<unsigned>(sizes.size()) +
                         static_cast<unsigned>(sweep.size()) + (o.measure_flush ? 1 : 0) +
                         (o.measure_discard ? 1 : 0);
  const uint64_t soft_deadline = run->Now() + o.total_ns / 10 * 9;
  auto budget_end = [&](unsigned weight) {
    const uint64_t now = run->Now();
    const uint64_t left = soft_deadline > now ? soft_deadline - now : 0;
    const uint64_t share = left / std::max(1u, points_left) * weight;
    points_left -= std::min(points_left, weight);
    return now + std::min(o.point_ns * weight, share);
  };
  auto finish = [&](Status s) -> Status {
    rep.elapsed_ns = MonotonicNs() - start;
    if (!s.ok() && run->inflight() > 0) {
      run->Abandon();  // the last completion deletes it
      (void)owned.release();
    }
    return s;
  };

  // A flush after every stretch of writes (not measured): the device's write cache starts each
  // point empty, so that one point's write-back does not slow the next one down.
  auto settle = [&](const std::string& after) -> Status {
    Phase f;
    f.name = "flush after " + after;
    f.op = IoOp::kFlush;
    f.max_issue = 1;
    f.min_issue = 1;
    return run->Run(&f);
  };

  // The working set: the region's first bytes, written once in `largest` blocks.
  const uint64_t ws_max = std::min(region_bytes, o.working_set_bytes) / largest * largest;
  const uint64_t ws_min = std::max<uint64_t>(largest, o.measure_discard ? o.discard_bytes : 0);
  if (o.prefill) {
    Phase ph;
    ph.name = "prefill";
    ph.op = IoOp::kWrite;
    ph.bytes = largest;
    ph.qd = depth(largest);
    ph.sequential = true;
    ph.seq_end = o.offset_bytes + ws_max;
    ph.end_ns = budget_end(2);
    ph.min_issue = (ws_min + largest - 1) / largest;
    if (Status s = run->Run(&ph); !s.ok()) return finish(s);
    if (Status s = settle(ph.name); !s.ok()) return finish(s);
    rep.working_set_bytes = ph.completed * largest;
  } else {
    rep.working_set_bytes = ws_max;
  }
  run->set_working_set(rep.working_set_bytes);

  for (IoOp op : {IoOp::kRead, IoOp::kWrite}) {
    for (uint32_t bytes : sizes) {
      CalibrationPoint pt;
      pt.op = op;
      pt.bytes = bytes;
      const std::string what = std::string(IoOpName(op)) + " " + Bytes(bytes);
      Phase q;
      q.name = what + " QD1";
      q.op = op;
      q.bytes = bytes;
      q.end_ns = budget_end(1);
      q.max_issue = o.qd1_samples;
      q.min_issue = std::min(kQd1SamplesMin, o.qd1_samples);
      q.keep_latencies = true;
      if (Status s = run->Run(&q); !s.ok()) return finish(s);
      if (op == IoOp::kWrite) {
        if (Status s = settle(q.name); !s.ok()) return finish(s);
      }
      pt.qd1_samples = static_cast<uint32_t>(q.latencies.size());
      pt.qd1_median_ns = Median(q.latencies);

      Phase d;
      d.qd = depth(bytes);
      d.name = what + " QD" + std::to_string(d.qd);
      d.op = op;
      d.bytes = bytes;
      d.end_ns = budget_end(1);
      d.warmup = d.qd;
      d.min_issue = d.warmup + std::max<uint64_t>(d.qd, kSaturatedIosMin);
      if (Status s = run->Run(&d); !s.ok()) return finish(s);
      if (op == IoOp::kWrite) {
        if (Status s = settle(d.name); !s.ok()) return finish(s);
      }
      pt.queue_depth = d.qd;
      pt.saturated_ios = d.window_ios;
      pt.saturated_iops = d.Rate();
      if (pt.saturated_iops > 0) {
        pt.saturated_latency_ns = d.window_latency_sum_ns / static_cast<double>(d.window_ios);
        pt.saturated = pt.saturated_latency_ns >= kSaturatedLatencyRatio * pt.qd1_median_ns;
      }
      rep.points.push_back(pt);
    }
  }

  // The depth sweep (reads only: nothing to settle). rep.points[0] is the smallest read.
  const CalibrationPoint& small = rep.points.front();
  if (small.qd1_median_ns > 0) rep.depth_points.push_back({1, 1e9 / small.qd1_median_ns});
  for (unsigned q : sweep) {
    Phase d;
    d.qd = q;
    d.name = "read " + Bytes(small.bytes) + " QD" + std::to_string(q);
    d.op = IoOp::kRead;
    d.bytes = small.bytes;
    d.end_ns = budget_end(1);
    d.warmup = q;
    d.min_issue = d.warmup + std::max<uint64_t>(q, kSaturatedIosMin);
    if (Status s = run->Run(&d); !s.ok()) return finish(s);
    rep.depth_points.push_back({q, d.Rate()});
  }
  rep.depth_points.push_back({small.queue_depth, small.saturated_iops});

  auto qd1_point = [&](Phase& ph, IoOp op, uint32_t bytes) -> Status {
    ph.op = op;
    ph.bytes = bytes;
    ph.end_ns = budget_end(1);
    ph.max_issue = o.qd1_samples;
    ph.min_issue = std::min(kQd1SamplesMin, o.qd1_samples);
    ph.keep_latencies = true;
    SPD_RETURN_IF_ERROR(run->Run(&ph));
    CalibrationPoint pt;
    pt.op = op;
    pt.bytes = bytes;
    pt.qd1_samples = static_cast<uint32_t>(ph.latencies.size());
    pt.qd1_median_ns = Median(ph.latencies);
    rep.points.push_back(pt);
    return Status::Ok();
  };
  if (o.measure_flush) {
    Phase ph;
    ph.name = "flush after a " + Bytes(pair_bytes) + " write";
    ph.flush_pairs = true;
    if (Status s = qd1_point(ph, IoOp::kFlush, 0); !s.ok()) return finish(s);
  }
  if (o.measure_discard) {  // last: it leaves holes in the working set
    Phase ph;
    ph.name = "discard " + Bytes(o.discard_bytes) + " QD1";
    if (Status s = qd1_point(ph, IoOp::kDiscard, o.discard_bytes); !s.ok()) return finish(s);
  }
  IgnoreError(finish(Status::Ok()));

  auto fitted = FitCostModel(rep.points);
  if (!fitted.ok()) return fitted.status();
  CostModel m = std::move(fitted).value();
  m.source = std::string("calibrated ") + backend->name();
  m.depth = SaturationDepthOf(rep.depth_points);
  for (CalibrationPoint& p : rep.points) {
    p.model_iops = m.CapacityIops(p.op, p.bytes);
    if (p.saturated_iops > 0)
      rep.max_capacity_error =
          std::max(rep.max_capacity_error, std::abs(p.model_iops / p.saturated_iops - 1));
  }
  return m;
}

}  // namespace spd::qos
