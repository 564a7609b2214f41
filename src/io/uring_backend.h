// UringBackend: the fast path. Submits reads, writes, flushes and fallocates as SQEs on the
// owning reactor's ring, so one io_uring_enter per reactor tick carries every backend I/O and
// socket event of that tick. O_DIRECT on files and block devices, a registered file, FUA as
// RWF_DSYNC, a queue_depth_max limit beyond which I/Os wait in a FIFO.
//
// Block devices: BLKDISCARD/BLKZEROOUT have no io_uring opcode on this kernel generation, so
// they run synchronously on the reactor thread (rare, control-path sized operations).
#pragma once

#include "io/file_util.h"
#include "io/io_backend.h"

namespace spd {

class UringBackend final : public FileBackend {
 public:
  // REQUIRES: reactor->engine() == kUring.
  static Result<std::unique_ptr<UringBackend>> Open(const BackendOptions& options,
                                                    Reactor* reactor);
  ~UringBackend() override;

  const char* name() const override { return "uring"; }
  void Submit(BackendIo* io) override;
  Status RegisterBuffers(const struct iovec* iov, unsigned count) override;
  Result<std::unique_ptr<IoBackend>> OpenChannel(Reactor* reactor) override;
  BackendStats stats() const override { return stats_; }

 private:
  UringBackend(Reactor* reactor, OpenedFile file, unsigned queue_depth_max, bool owns_file = true);
  void Issue(BackendIo* io);
  void Prep(BackendIo* io);
  static void OnCqe(Completion* c, int32_t res, uint32_t flags);
  static void OnDeferredDone(Task* t);
  void Finish(BackendIo* io);

  Reactor* reactor_;
  unsigned queue_depth_max_;
  bool fixed_file_ = false;
  bool buffers_registered_ = false;
  BackendStats stats_;
  uint64_t in_ring_ = 0;
  BackendIo* wait_head_ = nullptr;
  BackendIo* wait_tail_ = nullptr;
};

}  // namespace spd
