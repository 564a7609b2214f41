// NullBackend: a device that does nothing, at once. Reads leave the buffer as it is, writes are
// dropped, every operation succeeds on the next reactor tick. It measures everything above the
// backend (bench/pipeline), and it is the smallest complete IoBackend: a new backend starts as a
// copy of this one.
//
// Thread-safety: owning reactor's thread only (like every backend); its channels are null
// backends of their own reactors.
#pragma once

#include "io/io_backend.h"

namespace spd {

class NullBackend final : public IoBackend {
 public:
  NullBackend(Reactor* reactor, uint64_t size_bytes) : reactor_(reactor), size_bytes_(size_bytes) {}
  ~NullBackend() override;

  const char* name() const override { return "null"; }
  uint64_t size_bytes() const override { return size_bytes_; }
  uint32_t alignment_bytes() const override { return 512; }
  bool discard_zeroes() const override { return true; }
  void Submit(BackendIo* io) override;
  // Reads fill zeros so that a pool can be formatted on it (a blank superblock area).
  Status ReadSync(uint64_t offset_bytes, void* buf, size_t length_bytes) override;
  Status WriteSync(uint64_t, const void*, size_t) override { return Status::Ok(); }
  Status FlushSync() override { return Status::Ok(); }
  Status DiscardSync(uint64_t, uint64_t) override { return Status::Ok(); }
  BackendStats stats() const override { return stats_; }
  Result<std::unique_ptr<IoBackend>> OpenChannel(Reactor* reactor) override;

 private:
  static void OnDone(Task* t);

  Reactor* reactor_;
  uint64_t size_bytes_;
  BackendStats stats_;
};

}  // namespace spd
