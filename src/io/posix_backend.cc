#include "io/posix_backend.h"

#include <unistd.h>

#include "common/counters.h"
#include "common/os_util.h"

namespace spd {
namespace {
Counter posix_errors_total("spd_io_posix_errors_total", "Failed posix backend operations.");
Counter posix_inline_ios_total(
    "spd_io_posix_inline_ios_total",
    "Reads and writes of a memory-backed pool file done on the reactor, not by a worker.");
Counter posix_queue_waits_total("spd_io_posix_queue_waits_total",
                                "posix backend I/Os that waited for queue_depth_max.");

void Push(BackendIo** head, BackendIo** tail, BackendIo* io) {
  io->next = nullptr;
  if (*tail) {
    (*tail)->next = io;
  } else {
    *head = io;
  }
  *tail = io;
}
BackendIo* Pop(BackendIo** head, BackendIo** tail) {
  BackendIo* io = *head;
  if (io) {
    *head = io->next;
    if (!*head) *tail = nullptr;
    io->next = nullptr;
  }
  return io;
}
}  // namespace

Result<std::unique_ptr<PosixBackend>> PosixBackend::Open(const BackendOptions& options,
                                                         Reactor* reactor) {
  SPD_ASSIGN_OR_RETURN(OpenedFile f, OpenPoolFile(options));
  unsigned threads = options.posix_threads ? options.posix_threads : 1;
  std::unique_ptr<PosixBackend> b(
      new PosixBackend(reactor, f, threads, options.queue_depth_max ? options.queue_depth_max : 1));
  b->SetInlineCopies(options);
  b->SetFaultNoopFlush(options);
  return b;
}

Result<std::unique_ptr<IoBackend>> PosixBackend::OpenChannel(Reactor* reactor) {
  std::unique_ptr<PosixBackend> c(
      new PosixBackend(reactor, file_, static_cast<unsigned>(workers_.size()), queue_depth_max_,
                       /*owns_file=*/false));
  InheritRunChoices(c.get());
  return std::unique_ptr<IoBackend>(std::move(c));
}

PosixBackend::PosixBackend(Reactor* reactor, OpenedFile file, unsigned threads,
                           unsigned queue_depth_max, bool owns_file)
    : FileBackend(file, owns_file), reactor_(reactor), queue_depth_max_(queue_depth_max) {
  for (unsigned i = 0; i < threads; ++i)
    workers_.emplace_back([this] {
      NameThisThread("spd-posix-io");
      Worker();
    });
}

PosixBackend::~PosixBackend() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void PosixBackend::Submit(BackendIo* io) {
  io->owner = this;
  ++stats_.submitted;
  ++stats_.inflight;
  if (worker_inflight_ >= queue_depth_max_) {
    posix_queue_waits_total.Add();
    Push(&wait_head_, &wait_tail_, io);
    return;
  }
  ++worker_inflight_;
  if (CopiesInline(*io)) {
    // Memory-backed file: a copy, done here rather than handed to a worker and posted back.
    posix_inline_ios_total.Add();
    io->result = static_cast<int32_t>(DoIo(io));
    io->task.fn = &PosixBackend::OnDone;
    reactor_->Defer(&io->task);  // never complete inside Submit
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    Push(&queue_head_, &queue_tail_, io);
  }
  cv_.notify_one();
}

void PosixBackend::Worker() {
  for (;;) {
    BackendIo* io;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stop_ || queue_head_ != nullptr; });
      if (queue_head_ == nullptr) return;  // stopping and drained
      io = Pop(&queue_head_, &queue_tail_);
    }
    io->result = static_cast<int32_t>(DoIo(io));
    io->task.fn = &PosixBackend::OnDone;
    reactor_->Post(&io->task);
  }
}

int64_t PosixBackend::DoIo(BackendIo* io) {
  int64_t r = 0;
  switch (io->op) {
    case IoOp::kRead:
    case IoOp::kWrite:
      r = CopySync(*io);
      break;
    case IoOp::kFlush:
      if (!fault_noop_flush()) r = fdatasync(file_.fd) < 0 ? -errno : 0;
      break;
    case IoOp::kDiscard:
      r = DiscardRange(file_, io->offset_bytes, io->length_bytes);
      if (r == 0) r = io->length_bytes;
      break;
    case IoOp::kWriteZeroes:
      r = ZeroRange(file_, io->offset_bytes, io->length_bytes, io->flags & kIoNoUnmap);
      if (r == 0) r = io->length_bytes;
      break;
  }
  if (r >= 0 && (io->flags & kIoFua) && io->op != IoOp::kWrite && io->op != IoOp::kRead &&
      !fault_noop_flush())
    r = fdatasync(file_.fd) < 0 ? -errno : r;
  return r;
}

void PosixBackend::OnDone(Task* t) {
  BackendIo* io =
      reinterpret_cast<BackendIo*>(reinterpret_cast<char*>(t) - offsetof(BackendIo, task));
  auto* self = static_cast<PosixBackend*>(io->owner);
  --self->worker_inflight_;
  --self->stats_.inflight;
  ++self->stats_.completed;
  if (io->result < 0) {
    ++self->stats_.errors;
    posix_errors_total.Add();
  } else if (io->op == IoOp::kWrite) {
    CountBytesWritten(io->length_bytes);
  }
  if (BackendIo* next = Pop(&self->wait_head_, &self->wait_tail_)) {
    --self->stats_.submitted;  // counted once already
    --self->stats_.inflight;
    self->Submit(next);
  }
  io->done(io);
}

BackendStats PosixBackend::stats() const { return stats_; }

}  // namespace spd
