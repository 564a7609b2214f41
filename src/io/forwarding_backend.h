// ForwardingBackend: an IoBackend that hands every call to another one. Subclasses override
// what they change (a channel's name, a test's recording Submit) and inherit the rest.
#pragma once

#include "io/io_backend.h"

namespace spd {

class ForwardingBackend : public IoBackend {
 public:
  explicit ForwardingBackend(IoBackend* inner) : inner_(inner) {}
  uint64_t size_bytes() const override { return inner_->size_bytes(); }
  uint32_t alignment_bytes() const override { return inner_->alignment_bytes(); }
  bool discard_zeroes() const override { return inner_->discard_zeroes(); }
  void Submit(BackendIo* io) override { inner_->Submit(io); }
  Status ReadSync(uint64_t off, void* buf, size_t len) override {
    return inner_->ReadSync(off, buf, len);
  }
  Status WriteSync(uint64_t off, const void* buf, size_t len) override {
    return inner_->WriteSync(off, buf, len);
  }
  Status FlushSync() override { return inner_->FlushSync(); }
  Status DiscardSync(uint64_t off, uint64_t len) override { return inner_->DiscardSync(off, len); }
  BackendStats stats() const override { return inner_->stats(); }

 protected:
  IoBackend* inner_;
};

}  // namespace spd
