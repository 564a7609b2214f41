#include "control/calibration.h"

#include <chrono>
#include <deque>
#include <future>

#include "common/log.h"
#include "dispatch/dispatcher.h"
#include "frontend/inproc/inproc_frontend.h"
#include "volume/volume_manager.h"

namespace spd {
namespace {

// An IoBackend over one volume, through the dispatcher from an in-process frontend (the one
// every test and bench/pipeline drive the pipeline with): what calibration drives. Offsets are
// the volume's; requests go the way every frontend's go (fast path, owner, pool). More than
// kRequestsMax at once wait here (calibration keeps at most its queue depth in flight).
class VolumeBackend final : public IoBackend {
 public:
  static constexpr uint32_t kRequestsMax = 256;
  VolumeBackend(Dispatcher* d, Reactor* r, Volume* v, uint64_t size)
      : d_(d), reactor_(r), vol_(v), size_(size), fe_(d, r, {kRequestsMax, 0}) {
    drain_.self = this;
    drain_.fn = [](Task* t) {
      VolumeBackend* self = static_cast<Drain*>(t)->self;
      self->drain_posted_ = false;
      while (!self->waiting_.empty() && self->Start(self->waiting_.front()))
        self->waiting_.pop_front();
    };
  }
  ~VolumeBackend() override { SPD_ASSERT(stats_.inflight == 0 && !drain_posted_); }
  const char* name() const override { return "volume"; }
  uint64_t size_bytes() const override { return size_; }
  uint32_t alignment_bytes() const override { return d_->buffer_alignment_bytes(); }
  bool discard_zeroes() const override { return true; }
  void Submit(BackendIo* io) override {
    ++stats_.submitted;
    ++stats_.inflight;
    io->owner = this;
    if (!waiting_.empty() || !Start(io)) waiting_.push_back(io);
  }
  Status ReadSync(uint64_t, void*, size_t) override { return Unimplemented("volume: no sync I/O"); }
  Status WriteSync(uint64_t, const void*, size_t) override {
    return Unimplemented("volume: no sync I/O");
  }
  Status FlushSync() override { return Unimplemented("volume: no sync I/O"); }
  Status DiscardSync(uint64_t, uint64_t) override { return Unimplemented("volume: no sync I/O"); }
  BackendStats stats() const override { return stats_; }
  Result<std::unique_ptr<IoBackend>> OpenChannel(Reactor*) override {
    return Unimplemented("volume: no channels");
  }

 private:
  bool Start(BackendIo* io) {
    IoRequest* r = fe_.Take();
    if (r == nullptr) return false;
    r->op = ToRequestOp(io->op);
    if (io->flags & kIoFua) r->flags |= kReqFua;
    r->offset_bytes = io->offset_bytes;
    r->length_bytes = io->length_bytes;
    r->buf = io->buf;
    r->volume = vol_;
    fe_.Submit(r, &VolumeBackend::OnDone, io);
    return true;
  }
  static void OnDone(void* arg, IoRequest* r) {
    auto* io = static_cast<BackendIo*>(arg);
    auto* self = static_cast<VolumeBackend*>(io->owner);
    io->result = r->result == 0 ? static_cast<int32_t>(io->length_bytes) : r->result;
    --self->stats_.inflight;
    ++self->stats_.completed;
    if (io->result < 0) ++self->stats_.errors;
    // The request's slot is free once this returns: waiting ones start from a task.
    if (!self->waiting_.empty() && !self->drain_posted_) {
      self->drain_posted_ = true;
      self->reactor_->Defer(&self->drain_);
    }
    io->done(io);
  }

  Dispatcher* d_;
  Reactor* reactor_;
  Volume* vol_;
  uint64_t size_;
  InprocFrontend fe_;
  std::deque<BackendIo*> waiting_;
  struct Drain : Task {
    VolumeBackend* self;
  } drain_;
  bool drain_posted_ = false;
  BackendStats stats_;
};

template <typename T>
Result<T> Wait(std::future<Result<T>> f, const char* what) {
  if (f.wait_for(std::chrono::seconds(60)) != std::future_status::ready)
    return Status(StatusCode::kDeadlineExceeded,
                  std::string("calibration: ") + what + " did not finish in 60 s");
  return f.get();
}

Status DeleteScratch(VolumeManager* volumes) {
  auto p = std::make_shared<std::promise<Result<bool>>>();
  volumes->Delete(kCalibrationVolume, /*force=*/true,
                  [p](Status s) { p->set_value(s.ok() ? Result<bool>(true) : Result<bool>(s)); });
  Result<bool> r = Wait(p->get_future(), "deleting the scratch volume");
  return r.ok() ? Status::Ok() : r.status();
}

}  // namespace

Result<qos::CostModel> RunLiveCalibration(Dispatcher* dispatcher, VolumeManager* volumes,
                                          const qos::CalibrateOptions& options,
                                          qos::CalibrationReport* report) {
  // A scratch volume left by a calibration that died goes first.
  if (volumes->Find(kCalibrationVolume)) SPD_RETURN_IF_ERROR(DeleteScratch(volumes));
  const uint64_t chunk = 1 << 20;
  const uint64_t size = (options.working_set_bytes + 2 * chunk - 1) / chunk * chunk;
  auto made = std::make_shared<std::promise<Result<std::shared_ptr<VolumeHandle>>>>();
  VolumeSpec spec;
  spec.name = kCalibrationVolume;
  spec.size_bytes = size;
  volumes->Create(
      spec, [made](Result<std::shared_ptr<VolumeHandle>> h) { made->set_value(std::move(h)); });
  SPD_ASSIGN_OR_RETURN(std::shared_ptr<VolumeHandle> h,
                       Wait(made->get_future(), "creating the scratch volume"));
  Result<qos::CostModel> model = Unavailable("calibration: the scratch volume went away");
  if (h->AddUser()) {
    auto reactor = Reactor::Create(ReactorOptions{});
    if (!reactor.ok()) {
      model = reactor.status();
    } else {
      VolumeBackend vb(dispatcher, reactor.value().get(), h->volume(), size);
      qos::CalibrateOptions o = options;
      o.offset_bytes = 0;
      o.length_bytes = size;
      model = qos::Calibrate(reactor.value().get(), &vb, o, report);
      // What a timeout left in flight completes before the adapter goes (bounded).
      for (int i = 0; i < 100000 && vb.stats().inflight > 0; ++i)
        reactor.value()->RunOnce(1'000'000);
    }
    h->RemoveUser();
  }
  if (Status s = DeleteScratch(volumes); !s.ok())
    SPD_LOG_WARN("calibration: %s (delete volume %s by hand)", s.ToString().c_str(),
                 kCalibrationVolume);
  return model;
}

}  // namespace spd
