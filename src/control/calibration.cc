#include "control/calibration.h"

#include <chrono>
#include <deque>
#include <future>
#include <vector>

#include "common/log.h"
#include "dispatch/dispatcher.h"
#include "volume/volume_manager.h"

namespace spd {
namespace {

// An IoBackend over one volume, through the dispatcher: what calibration drives. Offsets are
// the volume's; requests go the way every frontend's go (fast path, owner, pool).
class VolumeBackend final : public IoBackend {
 public:
  static constexpr size_t kRequestsMax = 256;
  VolumeBackend(Dispatcher* d, DispatchPort* port, Volume* v, uint64_t size)
      : d_(d), port_(port), vol_(v), size_(size), reqs_(kRequestsMax) {
    for (auto& r : reqs_) free_.push_back(&r);
  }
  ~VolumeBackend() override { SPD_ASSERT(stats_.inflight == 0); }
  const char* name() const override { return "volume"; }
  uint64_t size_bytes() const override { return size_; }
  uint32_t alignment_bytes() const override { return d_->buffer_alignment_bytes(); }
  bool discard_zeroes() const override { return true; }
  void Submit(BackendIo* io) override {
    ++stats_.submitted;
    ++stats_.inflight;
    if (free_.empty()) {  // more in flight than requests: wait for one
      waiting_.push_back(io);
      return;
    }
    Start(io);
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
  struct Req : IoRequest {
    VolumeBackend* self = nullptr;
  };
  void Start(BackendIo* io) {
    Req* r = free_.back();
    free_.pop_back();
    *r = Req{};
    r->self = this;
    switch (io->op) {
      case IoOp::kRead:
        r->op = RequestOp::kRead;
        break;
      case IoOp::kWrite:
        r->op = RequestOp::kWrite;
        break;
      case IoOp::kFlush:
        r->op = RequestOp::kFlush;
        break;
      case IoOp::kDiscard:
        r->op = RequestOp::kDiscard;
        break;
      case IoOp::kWriteZeroes:
        r->op = RequestOp::kWriteZeroes;
        break;
    }
    if (io->flags & kIoFua) r->flags |= kReqFua;
    r->offset_bytes = io->offset_bytes;
    r->length_bytes = io->length_bytes;
    r->buf = io->buf;
    r->volume = vol_;
    r->ctx = io;
    r->done = &VolumeBackend::OnDone;
    d_->Submit(port_, r);
  }
  static void OnDone(IoRequest* req) {
    Req* r = static_cast<Req*>(req);
    auto* io = static_cast<BackendIo*>(r->ctx);
    VolumeBackend* self = r->self;
    io->result = r->result == 0 ? static_cast<int32_t>(io->length_bytes) : r->result;
    --self->stats_.inflight;
    ++self->stats_.completed;
    if (io->result < 0) ++self->stats_.errors;
    self->free_.push_back(r);
    if (!self->waiting_.empty()) {
      BackendIo* next = self->waiting_.front();
      self->waiting_.pop_front();
      self->Start(next);
    }
    io->done(io);
  }

  Dispatcher* d_;
  DispatchPort* port_;
  Volume* vol_;
  uint64_t size_;
  std::vector<Req> reqs_;
  std::vector<Req*> free_;
  std::deque<BackendIo*> waiting_;
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
      std::unique_ptr<DispatchPort> port = dispatcher->OpenPort(reactor.value().get());
      {
        VolumeBackend vb(dispatcher, port.get(), h->volume(), size);
        qos::CalibrateOptions o = options;
        o.offset_bytes = 0;
        o.length_bytes = size;
        model = qos::Calibrate(reactor.value().get(), &vb, o, report);
        // What a timeout left in flight completes before the adapter goes (bounded).
        for (int i = 0; i < 100000 && vb.stats().inflight > 0; ++i)
          reactor.value()->RunOnce(1'000'000);
      }
      port.reset();
    }
    h->RemoveUser();
  }
  if (Status s = DeleteScratch(volumes); !s.ok())
    SPD_LOG_WARN("calibration: %s (delete volume %s by hand)", s.ToString().c_str(),
                 kCalibrationVolume);
  return model;
}

}  // namespace spd
