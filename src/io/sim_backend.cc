#include "io/sim_backend.h"

#include <algorithm>
#include <cstring>

#include "common/counters.h"
#include "io/file_util.h"
#include "io/forwarding_backend.h"

namespace spd {
namespace {

Counter sim_injected_errors_total("spd_io_sim_injected_errors_total",
                                  "EIO results injected by the sim backend's error model.");
Counter sim_destaged_total("spd_io_sim_destaged_total",
                           "Unflushed writes the sim cache destaged on its own (cache full).");

}  // namespace

SimBackend::SimBackend(Reactor* reactor, uint64_t size_bytes, const SimOptions& options)
    : reactor_(reactor), size_bytes_(size_bytes), options_(options), rng_(options.seed) {
  due_timer_.self = this;
  due_timer_.fn = &SimBackend::OnDue;
  immediate_task_.self = this;
  immediate_task_.fn = &SimBackend::OnImmediate;
  virtual_task_.self = this;
  virtual_task_.fn = &SimBackend::OnVirtual;
  due_.reserve(1024);
  immediate_.reserve(1024);
}

SimBackend::SimBackend(Reactor* reactor, Image image, const SimOptions& options)
    : SimBackend(reactor, image.size_bytes, options) {
  visible_ = image.pages;
  durable_ = std::move(image.pages);
}

SimBackend::~SimBackend() {
  // A posted task cannot be withdrawn: operations must have completed (they do, one per tick).
  SPD_ASSERT_MSG(!virtual_posted_, "sim backend destroyed with simulated operations in flight");
  if (due_timer_armed_) reactor_->CancelTimer(&due_timer_);
}

void SimBackend::Apply(PageMap* pages, uint64_t offset, const uint8_t* data, uint64_t length) {
  while (length > 0) {
    uint64_t pi = offset / kPageBytes;
    uint32_t in = static_cast<uint32_t>(offset % kPageBytes);
    uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(length, kPageBytes - in));
    auto fresh = std::make_shared<Page>();
    auto it = pages->find(pi);
    if (it != pages->end()) {
      *fresh = *it->second;
    } else {
      fresh->fill(0);
    }
    std::memcpy(fresh->data() + in, data, n);
    (*pages)[pi] = std::move(fresh);
    offset += n;
    data += n;
    length -= n;
  }
}

void SimBackend::ApplyZero(PageMap* pages, uint64_t offset, uint64_t length) {
  while (length > 0) {
    uint64_t pi = offset / kPageBytes;
    uint32_t in = static_cast<uint32_t>(offset % kPageBytes);
    uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(length, kPageBytes - in));
    auto it = pages->find(pi);
    if (it != pages->end()) {
      if (n == kPageBytes) {
        pages->erase(it);  // whole page: back to a hole
      } else {
        auto fresh = std::make_shared<Page>(*it->second);
        std::memset(fresh->data() + in, 0, n);
        it->second = std::move(fresh);
      }
    }
    offset += n;
    length -= n;
  }
}

void SimBackend::ReadFrom(const PageMap& pages, uint64_t offset, uint8_t* out, uint64_t length) {
  while (length > 0) {
    uint64_t pi = offset / kPageBytes;
    uint32_t in = static_cast<uint32_t>(offset % kPageBytes);
    uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(length, kPageBytes - in));
    auto it = pages.find(pi);
    if (it == pages.end()) {
      std::memset(out, 0, n);
    } else {
      std::memcpy(out, it->second->data() + in, n);
    }
    offset += n;
    out += n;
    length -= n;
  }
}

void SimBackend::WriteVisible(uint64_t offset, const uint8_t* data, uint64_t length, bool zero,
                              bool fua) {
  if (zero) {
    ApplyZero(&visible_, offset, length);
  } else {
    Apply(&visible_, offset, data, length);
    bytes_written_ += length;
  }
  if (fua) {
    // FUA: this write is durable at completion. Older cached writes go first so that they can
    // never land on top of it later (a real device may persist more than asked, never less).
    FlushCache();
    if (zero) {
      ApplyZero(&durable_, offset, length);
    } else {
      Apply(&durable_, offset, data, length);
    }
    return;
  }
  Pending p;
  p.offset = offset;
  p.length = static_cast<uint32_t>(length);
  p.zero = zero;
  if (!zero) p.data.assign(data, data + length);
  p.seq = ++pending_seq_;
  pending_bytes_ += zero ? 0 : length;
  pending_.push_back(std::move(p));
  if (pending_bytes_ > kCacheBytesMax) Destage();
}

void SimBackend::FlushCache() { WriteBack(pending_.size()); }

void SimBackend::WriteBack(size_t n) {
  n = std::min(n, pending_.size());
  for (size_t i = 0; i < n; ++i) {
    const Pending& p = pending_[i];
    if (p.zero) {
      ApplyZero(&durable_, p.offset, p.length);
    } else {
      Apply(&durable_, p.offset, p.data.data(), p.length);
      pending_bytes_ -= p.length;
    }
  }
  pending_.erase(pending_.begin(), pending_.begin() + static_cast<long>(n));
}

void SimBackend::ForgetCached(size_t n) {
  n = std::min(n, pending_.size());
  for (size_t i = 0; i < n; ++i)
    if (!pending_[i].zero) pending_bytes_ -= pending_[i].length;
  pending_.erase(pending_.begin(), pending_.begin() + static_cast<long>(n));
}

void SimBackend::Destage() {
  // Write back the oldest half of the cache, as a device does when its cache fills.
  const size_t n = pending_.size() / 2 + 1;
  WriteBack(n);
  sim_destaged_total.Add(n);
}

bool SimBackend::InjectError(const BackendIo& io) {
  if (fail_next_ > 0 && io.op != IoOp::kFlush) {
    --fail_next_;
    return true;
  }
  if (io.op != IoOp::kRead && io.op != IoOp::kWrite) return false;
  for (const auto& [off, len] : options_.error_ranges) {
    if (io.offset_bytes < off + len && off < io.offset_bytes + io.length_bytes) return true;
  }
  if (options_.error_probability > 0 && ++data_ops_ > options_.error_after_ops) {
    std::uniform_real_distribution<double> u(0, 1);
    if (u(rng_) < options_.error_probability) return true;
  }
  return false;
}

uint64_t SimBackend::ServiceDelayNs(const BackendIo& io) {
  uint64_t lat = options_.latency_base_ns;
  if (options_.latency_jitter_ns) lat += rng_() % (options_.latency_jitter_ns + 1);
  switch (io.op) {
    case IoOp::kRead:
      lat += options_.read_extra_ns;
      break;
    case IoOp::kWrite:
      lat += options_.write_extra_ns;
      break;
    case IoOp::kFlush:
      lat += options_.flush_extra_ns;
      break;
    default:
      break;
  }
  if (options_.iops_max == 0 && options_.bandwidth_bytes_per_s == 0) return lat;
  // Capacity model: the device serves `units` operations at a time, each for `units` times its
  // share of the configured rates; a request waits for the first unit to be free (in arrival
  // order), then for its own service time.
  const uint64_t units = std::max<uint32_t>(1, options_.units);
  if (unit_free_ns_.size() != units) unit_free_ns_.assign(units, 0);
  uint64_t service = 0;
  if (options_.iops_max) service += units * 1000000000ull / options_.iops_max;
  if (options_.bandwidth_bytes_per_s && (io.op == IoOp::kRead || io.op == IoOp::kWrite))
    service += units * io.length_bytes * 1000000000ull / options_.bandwidth_bytes_per_s;
  const uint64_t now = NowNs();
  auto unit = std::min_element(unit_free_ns_.begin(), unit_free_ns_.end());
  const uint64_t start = std::max(now, *unit);
  *unit = start + service;
  return std::max(lat, *unit - now);
}

namespace {
// Forwards to the device: same cache, same flushes, same crash images.
class SimChannel final : public ForwardingBackend {
 public:
  explicit SimChannel(SimBackend* sim) : ForwardingBackend(sim) {}
  const char* name() const override { return "sim-channel"; }
};
}  // namespace

Result<std::unique_ptr<IoBackend>> SimBackend::OpenChannel(Reactor* reactor) {
  if (reactor != reactor_)
    return Unimplemented("sim backend: channels only on its own reactor (it is not thread-safe)");
  return std::unique_ptr<IoBackend>(new SimChannel(this));
}

void SimBackend::Submit(BackendIo* io) {
  SPD_ASSERT(io->offset_bytes + io->length_bytes <= size_bytes_ || io->op == IoOp::kFlush);
  if (io->op == IoOp::kRead || io->op == IoOp::kWrite) {
    const uint32_t a = alignment_bytes();
    SPD_ASSERT_MSG(io->offset_bytes % a == 0 && io->length_bytes % a == 0 &&
                       reinterpret_cast<uintptr_t>(io->buf) % a == 0,
                   "sim: unaligned read or write (the device's alignment_bytes is not met)");
  }
  ++stats_.submitted;
  ++stats_.inflight;
  if (io->op == IoOp::kFlush) io->mark = pending_seq_;
  uint64_t delay = ServiceDelayNs(*io);
  if (options_.virtual_time) {
    due_.push_back({vclock_ns_ + delay, due_seq_++, io});
    std::push_heap(due_.begin(), due_.end(), std::greater<Scheduled>());
    if (!virtual_posted_) {
      virtual_posted_ = true;
      reactor_->Post(&virtual_task_);
    }
    return;
  }
  if (delay == 0) {
    immediate_.push_back(io);
    if (!immediate_scheduled_) {
      immediate_scheduled_ = true;
      reactor_->Defer(&immediate_task_);
    }
    return;
  }
  due_.push_back({MonotonicNs() + delay, due_seq_++, io});
  std::push_heap(due_.begin(), due_.end(), std::greater<Scheduled>());
  ArmDueTimer();
}

void SimBackend::ArmDueTimer() {
  if (due_.empty()) return;
  uint64_t first = due_.front().deadline_ns;
  if (due_timer_armed_) {
    if (due_timer_.deadline_ns <= first) return;
    reactor_->CancelTimer(&due_timer_);
  }
  reactor_->ArmTimer(&due_timer_, first);
  due_timer_armed_ = true;
}

void SimBackend::OnDue(Timer* t) {
  SimBackend* self = static_cast<DueTimer*>(t)->self;
  self->due_timer_armed_ = false;
  uint64_t now = MonotonicNs();
  while (!self->due_.empty() && self->due_.front().deadline_ns <= now) {
    std::pop_heap(self->due_.begin(), self->due_.end(), std::greater<Scheduled>());
    BackendIo* io = self->due_.back().io;
    self->due_.pop_back();
    self->Execute(io);
  }
  self->ArmDueTimer();
}

uint64_t SimBackend::NowNs() const { return options_.virtual_time ? vclock_ns_ : MonotonicNs(); }

void SimBackend::OnVirtual(Task* t) {
  SimBackend* self = static_cast<ImmediateTask*>(t)->self;
  self->virtual_posted_ = false;
  if (self->due_.empty()) return;
  std::pop_heap(self->due_.begin(), self->due_.end(), std::greater<Scheduled>());
  Scheduled next = self->due_.back();
  self->due_.pop_back();
  self->vclock_ns_ = std::max(self->vclock_ns_, next.deadline_ns);
  self->Execute(next.io);
  // Posted, not deferred: the next completion comes in the next tick, after whatever this one
  // set off, as on a device.
  if (!self->due_.empty() && !self->virtual_posted_) {
    self->virtual_posted_ = true;
    self->reactor_->Post(&self->virtual_task_);
  }
}

void SimBackend::OnImmediate(Task* t) {
  SimBackend* self = static_cast<ImmediateTask*>(t)->self;
  self->immediate_scheduled_ = false;
  std::vector<BackendIo*> batch;
  batch.swap(self->immediate_);
  for (BackendIo* io : batch) self->Execute(io);
  // Keep the reserved capacity for the next batch.
  if (self->immediate_.empty()) {
    batch.clear();
    self->immediate_.swap(batch);
  }
}

void SimBackend::Execute(BackendIo* io) {
  // The operation takes effect when it completes: that is when a real device's data is in its
  // cache, and the order the crash model sees.
  if (InjectError(*io)) {
    sim_injected_errors_total.Add();
    io->result = -EIO;
    return Finish(io);
  }
  if (io->op == IoOp::kFlush && fail_flushes_) {
    sim_injected_errors_total.Add();
    size_t n = 0;
    while (n < pending_.size() && pending_[n].seq <= io->mark) ++n;
    ForgetCached(n);
    io->result = -EIO;
    return Finish(io);
  }
  auto* data = static_cast<uint8_t*>(io->buf);
  switch (io->op) {
    case IoOp::kRead:
      ReadFrom(visible_, io->offset_bytes, data, io->length_bytes);
      break;
    case IoOp::kWrite:
      WriteVisible(io->offset_bytes, data, io->length_bytes, false, io->flags & kIoFua);
      CountBytesWritten(io->length_bytes);
      break;
    case IoOp::kFlush: {
      // Only what was cached when the flush was issued is covered: writes that completed while
      // it ran may stay volatile, as on a real device.
      size_t n = 0;
      while (n < pending_.size() && pending_[n].seq <= io->mark) ++n;
      WriteBack(n);
      break;
    }
    case IoOp::kDiscard:
    case IoOp::kWriteZeroes:
      WriteVisible(io->offset_bytes, nullptr, io->length_bytes, true, io->flags & kIoFua);
      break;
  }
  io->result = io->op == IoOp::kFlush ? 0 : static_cast<int32_t>(io->length_bytes);
  Finish(io);
}

void SimBackend::Finish(BackendIo* io) {
  --stats_.inflight;
  ++stats_.completed;
  if (io->result < 0) ++stats_.errors;
  const bool boundary = io->result >= 0 && (io->op == IoOp::kFlush || (io->flags & kIoFua));
  if (boundary) {
    ++flushes_;
    if (flush_hook_) flush_hook_();
  }
  io->done(io);
}

Status SimBackend::ReadSync(uint64_t offset_bytes, void* buf, size_t length_bytes) {
  if (offset_bytes + length_bytes > size_bytes_) return OutOfRange("sim: read beyond the end");
  ReadFrom(visible_, offset_bytes, static_cast<uint8_t*>(buf), length_bytes);
  return Status::Ok();
}

Status SimBackend::WriteSync(uint64_t offset_bytes, const void* buf, size_t length_bytes) {
  if (offset_bytes + length_bytes > size_bytes_) return OutOfRange("sim: write beyond the end");
  WriteVisible(offset_bytes, static_cast<const uint8_t*>(buf), length_bytes, false, false);
  return Status::Ok();
}

Status SimBackend::FlushSync() {
  if (fail_flushes_) {
    sim_injected_errors_total.Add();
    ForgetCached(pending_.size());
    return Status::FromErrno(EIO, "sim: injected flush error");
  }
  FlushCache();
  ++flushes_;
  if (flush_hook_) flush_hook_();
  return Status::Ok();
}

Status SimBackend::DiscardSync(uint64_t offset_bytes, uint64_t length_bytes) {
  if (offset_bytes + length_bytes > size_bytes_) return OutOfRange("sim: discard beyond the end");
  WriteVisible(offset_bytes, nullptr, length_bytes, true, false);
  return Status::Ok();
}

SimBackend::Image SimBackend::CrashImage(uint64_t seed, const CrashOptions& options) const {
  Image img;
  img.size_bytes = size_bytes_;
  img.pages = durable_;
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  // One unflushed write: lands whole, torn (a random subset of its sectors), or not at all.
  auto maybe_apply = [&](uint64_t offset, uint32_t length, bool zero, const uint8_t* data) {
    if (u(rng) >= options.keep_probability) return;
    const bool torn = u(rng) < options.torn_probability;
    for (uint64_t s = 0; s < length; s += kSectorBytes) {
      uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(kSectorBytes, length - s));
      if (torn && (rng() & 1)) continue;
      if (zero) {
        ApplyZero(&img.pages, offset + s, n);
      } else {
        Apply(&img.pages, offset + s, data + s, n);
      }
    }
  };
  // Completed but not flushed: in the device's volatile cache, in completion order.
  for (const Pending& p : pending_) maybe_apply(p.offset, p.length, p.zero, p.data.data());
  // Submitted and not yet completed: a device may land a write before it reports it done.
  auto in_flight = [&](const BackendIo* io) {
    if (io->op == IoOp::kWrite)
      maybe_apply(io->offset_bytes, io->length_bytes, false, static_cast<const uint8_t*>(io->buf));
    else if (io->op == IoOp::kDiscard || io->op == IoOp::kWriteZeroes)
      maybe_apply(io->offset_bytes, io->length_bytes, true, nullptr);
  };
  for (const BackendIo* io : immediate_) in_flight(io);
  for (const Scheduled& d : due_) in_flight(d.io);
  return img;
}

SimBackend::Image SimBackend::VisibleImage() const {
  Image img;
  img.size_bytes = size_bytes_;
  img.pages = visible_;
  return img;
}

}  // namespace spd
