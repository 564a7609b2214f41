// PosixBackend: the kernel fallback. A bounded pool of worker threads doing
// pread/pwritev2/fdatasync/fallocate; completions go back to the owning reactor with
// Reactor::Post. Used when io_uring cannot be set up (sysctl, seccomp) or with --backend posix.
#pragma once

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "io/file_util.h"
#include "io/io_backend.h"

namespace spd {

class PosixBackend final : public FileBackend {
 public:
  static Result<std::unique_ptr<PosixBackend>> Open(const BackendOptions& options,
                                                    Reactor* reactor);
  ~PosixBackend() override;

  const char* name() const override { return "posix"; }
  void Submit(BackendIo* io) override;
  BackendStats stats() const override;
  Result<std::unique_ptr<IoBackend>> OpenChannel(Reactor* reactor) override;

 private:
  PosixBackend(Reactor* reactor, OpenedFile file, unsigned threads, unsigned queue_depth_max,
               bool owns_file = true);
  void Worker();
  // Performs io synchronously (a worker, or the reactor for inline I/O); bytes or -errno.
  int64_t DoIo(BackendIo* io);
  static void OnDone(Task* t);

  Reactor* reactor_;
  unsigned queue_depth_max_;
  std::mutex mu_;
  std::condition_variable cv_;
  BackendIo* queue_head_ = nullptr;  // guarded by mu_
  BackendIo* queue_tail_ = nullptr;
  bool stop_ = false;
  std::vector<std::thread> workers_;
  // Reactor-thread state.
  BackendStats stats_;
  BackendIo* wait_head_ = nullptr;  // beyond queue_depth_max, waiting for a slot
  BackendIo* wait_tail_ = nullptr;
  uint64_t worker_inflight_ = 0;
};

}  // namespace spd
