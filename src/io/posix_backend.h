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

class PosixBackend final : public IoBackend {
 public:
  static Result<std::unique_ptr<PosixBackend>> Open(const BackendOptions& options,
                                                    Reactor* reactor);
  ~PosixBackend() override;

  const char* name() const override { return "posix"; }
  uint64_t size_bytes() const override { return file_.size_bytes; }
  uint32_t alignment_bytes() const override { return file_.alignment_bytes; }
  bool discard_zeroes() const override { return !file_.block_device; }
  void Submit(BackendIo* io) override;
  Status ReadSync(uint64_t offset_bytes, void* buf, size_t length_bytes) override;
  Status WriteSync(uint64_t offset_bytes, const void* buf, size_t length_bytes) override;
  Status FlushSync() override;
  Status DiscardSync(uint64_t offset_bytes, uint64_t length_bytes) override;
  BackendStats stats() const override;

 private:
  PosixBackend(Reactor* reactor, OpenedFile file, unsigned threads, unsigned queue_depth_max);
  void Worker();
  static void OnDone(Task* t);

  Reactor* reactor_;
  OpenedFile file_;
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
