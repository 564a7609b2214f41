#include "io/null_backend.h"

#include <cstring>

#include "common/assert.h"

namespace spd {

NullBackend::~NullBackend() {
  SPD_ASSERT_MSG(stats_.inflight == 0, "null backend destroyed with I/O in flight");
}

void NullBackend::Submit(BackendIo* io) {
  ++stats_.submitted;
  ++stats_.inflight;
  io->owner = this;
  io->task.fn = &NullBackend::OnDone;
  reactor_->Defer(&io->task);  // never complete inside Submit
}

void NullBackend::OnDone(Task* t) {
  BackendIo* io =
      reinterpret_cast<BackendIo*>(reinterpret_cast<char*>(t) - offsetof(BackendIo, task));
  auto* self = static_cast<NullBackend*>(io->owner);
  --self->stats_.inflight;
  ++self->stats_.completed;
  io->result = static_cast<int32_t>(io->length_bytes);
  io->done(io);
}

Status NullBackend::ReadSync(uint64_t offset_bytes, void* buf, size_t length_bytes) {
  std::memset(buf, 0, length_bytes);
  return Status::Ok();
}

Result<std::unique_ptr<IoBackend>> NullBackend::OpenChannel(Reactor* reactor) {
  return std::unique_ptr<IoBackend>(new NullBackend(reactor, size_bytes_));
}

}  // namespace spd
