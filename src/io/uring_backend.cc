#include "io/uring_backend.h"

#include <linux/falloc.h>
#include <unistd.h>

#include <cstring>

#include "common/counters.h"
#include "common/log.h"

namespace spd {
namespace {
Counter uring_errors_total("spd_io_uring_errors_total", "Failed uring backend operations.");
Counter uring_short_total("spd_io_uring_short_transfers_total",
                          "Short reads/writes resubmitted for their remainder.");
Counter uring_fixed_ios_total("spd_io_uring_fixed_buffer_ios_total",
                              "uring reads and writes issued on registered buffers.");
Counter uring_inline_writes_total(
    "spd_io_uring_inline_writes_total",
    "Writes to a memory-backed pool file done with pwrite on the reactor (no io-wq punt).");
Counter uring_inline_reads_total(
    "spd_io_uring_inline_reads_total",
    "Reads of a memory-backed pool file done with pread on the reactor (no io-wq punt).");
Counter uring_queue_waits_total("spd_io_uring_queue_waits_total",
                                "uring backend I/Os that waited for queue_depth_max.");

BackendIo* FromCompletion(Completion* c) {
  return reinterpret_cast<BackendIo*>(reinterpret_cast<char*>(c) - offsetof(BackendIo, completion));
}
BackendIo* FromTask(Task* t) {
  return reinterpret_cast<BackendIo*>(reinterpret_cast<char*>(t) - offsetof(BackendIo, task));
}
}  // namespace

Result<std::unique_ptr<UringBackend>> UringBackend::Open(const BackendOptions& options,
                                                         Reactor* reactor) {
  if (reactor->engine() != ReactorEngine::kUring)
    return FailedPrecondition("uring backend needs an io_uring reactor");
  SPD_ASSIGN_OR_RETURN(OpenedFile f, OpenPoolFile(options));
  std::unique_ptr<UringBackend> b(
      new UringBackend(reactor, f, options.queue_depth_max ? options.queue_depth_max : 1));
  b->SetInlineCopies(options);
  b->SetFaultNoopFlush(options);
  return b;
}

Result<std::unique_ptr<IoBackend>> UringBackend::OpenChannel(Reactor* reactor) {
  if (reactor->engine() != ReactorEngine::kUring)
    return FailedPrecondition("uring backend channel needs an io_uring reactor");
  std::unique_ptr<UringBackend> c(
      new UringBackend(reactor, file_, queue_depth_max_, /*owns_file=*/false));
  InheritRunChoices(c.get());
  return std::unique_ptr<IoBackend>(std::move(c));
}

UringBackend::UringBackend(Reactor* reactor, OpenedFile file, unsigned queue_depth_max,
                           bool owns_file)
    : FileBackend(file, owns_file), reactor_(reactor), queue_depth_max_(queue_depth_max) {
  // A registered file saves an fget/fput per I/O; without it we use the plain fd.
  fixed_file_ = io_uring_register_files(reactor_->ring(), &file_.fd, 1) == 0;
}

UringBackend::~UringBackend() {
  SPD_ASSERT_MSG(in_ring_ == 0, "uring backend destroyed with I/O in flight");
  if (fixed_file_) io_uring_unregister_files(reactor_->ring());
  if (buffers_registered_) io_uring_unregister_buffers(reactor_->ring());
}

void UringBackend::Submit(BackendIo* io) {
  ++stats_.submitted;
  ++stats_.inflight;
  io->done_bytes = 0;
  io->phase = 0;
  io->owner = this;
  io->completion.fn = &UringBackend::OnCqe;
  if (in_ring_ >= queue_depth_max_) {
    uring_queue_waits_total.Add();
    io->next = nullptr;
    if (wait_tail_) {
      wait_tail_->next = io;
    } else {
      wait_head_ = io;
    }
    wait_tail_ = io;
    return;
  }
  Issue(io);
}

void UringBackend::Issue(BackendIo* io) {
  const bool ioctl_op =
      file_.block_device && (io->op == IoOp::kDiscard || io->op == IoOp::kWriteZeroes);
  if (ioctl_op || CopiesInline(*io)) {
    int64_t r;
    if (!ioctl_op) {
      (io->op == IoOp::kRead ? uring_inline_reads_total : uring_inline_writes_total).Add();
      r = CopySync(*io);
    } else {
      r = io->op == IoOp::kDiscard ? DiscardRange(file_, io->offset_bytes, io->length_bytes)
                                   : ZeroRange(file_, io->offset_bytes, io->length_bytes, true);
    }
    io->result = r < 0 ? static_cast<int32_t>(r) : static_cast<int32_t>(io->length_bytes);
    // Never complete inside Submit: the caller may still be setting up.
    io->task.fn = &UringBackend::OnDeferredDone;
    ++in_ring_;
    reactor_->Defer(&io->task);
    return;
  }
  ++in_ring_;
  Prep(io);
}

void UringBackend::Prep(BackendIo* io) {
  io_uring_sqe* sqe = reactor_->GetSqe();
  const int fd = fixed_file_ ? 0 : file_.fd;
  if (fault_noop_flush() && (io->phase == 1 || io->op == IoOp::kFlush)) {
    // Test-only fault: the flush completes, through the ring like a real one, having done nothing.
    io_uring_prep_nop(sqe);
    io_uring_sqe_set_data(sqe, &io->completion);
    return;
  }
  if (io->phase == 1) {  // the data sync that makes a FUA discard/zeroes durable
    io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
    if (fixed_file_) sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data(sqe, &io->completion);
    return;
  }
  const uint32_t done = io->done_bytes;
  auto* buf = static_cast<uint8_t*>(io->buf) + done;
  switch (io->op) {
    case IoOp::kRead:
      if (io->buf_index >= 0 && buffers_registered_) {
        uring_fixed_ios_total.Add();
        io_uring_prep_read_fixed(sqe, fd, buf, io->length_bytes - done, io->offset_bytes + done,
                                 io->buf_index);
      } else {
        io_uring_prep_read(sqe, fd, buf, io->length_bytes - done, io->offset_bytes + done);
      }
      break;
    case IoOp::kWrite:
      if (io->buf_index >= 0 && buffers_registered_) {
        uring_fixed_ios_total.Add();
        io_uring_prep_write_fixed(sqe, fd, buf, io->length_bytes - done, io->offset_bytes + done,
                                  io->buf_index);
      } else {
        io_uring_prep_write(sqe, fd, buf, io->length_bytes - done, io->offset_bytes + done);
      }
      if ((io->flags & kIoFua) && !fault_noop_flush()) sqe->rw_flags = RWF_DSYNC;
      break;
    case IoOp::kFlush:
      io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
      break;
    case IoOp::kDiscard:
      io_uring_prep_fallocate(sqe, fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, io->offset_bytes,
                              io->length_bytes);
      break;
    case IoOp::kWriteZeroes:
      io_uring_prep_fallocate(sqe, fd,
                              (io->flags & kIoNoUnmap)
                                  ? FALLOC_FL_ZERO_RANGE
                                  : (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE),
                              io->offset_bytes, io->length_bytes);
      break;
  }
  if (fixed_file_) sqe->flags |= IOSQE_FIXED_FILE;
  io_uring_sqe_set_data(sqe, &io->completion);
}

Status UringBackend::RegisterBuffers(const struct iovec* iov, unsigned count) {
  if (in_ring_ > 0) return FailedPrecondition("uring: buffers registered with I/O in flight");
  if (buffers_registered_) {
    io_uring_unregister_buffers(reactor_->ring());
    buffers_registered_ = false;
  }
  if (count == 0) return Status::Ok();
  int rc = io_uring_register_buffers(reactor_->ring(), iov, count);
  if (rc < 0) return Status::FromErrno(-rc, "io_uring_register_buffers");
  buffers_registered_ = true;
  return Status::Ok();
}

void UringBackend::OnDeferredDone(Task* t) {
  BackendIo* io = FromTask(t);
  static_cast<UringBackend*>(io->owner)->Finish(io);
}

void UringBackend::OnCqe(Completion* c, int32_t res, uint32_t flags) {
  BackendIo* io = FromCompletion(c);
  auto* self = static_cast<UringBackend*>(io->owner);
  if (res >= 0 && (io->op == IoOp::kRead || io->op == IoOp::kWrite)) {
    io->done_bytes += static_cast<uint32_t>(res);
    if (io->done_bytes < io->length_bytes) {
      if (res == 0 && io->op == IoOp::kRead) {
        // End of a regular file: the rest reads as zeros.
        std::memset(static_cast<uint8_t*>(io->buf) + io->done_bytes, 0,
                    io->length_bytes - io->done_bytes);
        io->done_bytes = io->length_bytes;
      } else if (res == 0) {
        io->result = -EIO;
        return self->Finish(io);
      } else {
        uring_short_total.Add();
        return self->Prep(io);
      }
    }
    io->result = static_cast<int32_t>(io->length_bytes);
  } else if (res >= 0) {
    io->result = io->op == IoOp::kFlush ? 0 : static_cast<int32_t>(io->length_bytes);
    if ((io->flags & kIoFua) && io->op != IoOp::kFlush && io->phase == 0) {
      // FUA on discard/zeroes: follow with a data sync before completing.
      io->phase = 1;
      return self->Prep(io);
    }
  } else if (res == -EOPNOTSUPP && io->op == IoOp::kWriteZeroes && (io->flags & kIoNoUnmap)) {
    // No ZERO_RANGE here (tmpfs): punch, keeping the request's promise of zeros.
    int r = ZeroRange(self->file_, io->offset_bytes, io->length_bytes, true);
    io->result = r < 0 ? r : static_cast<int32_t>(io->length_bytes);
  } else {
    io->result = res;
  }
  self->Finish(io);
}

void UringBackend::Finish(BackendIo* io) {
  --in_ring_;
  --stats_.inflight;
  ++stats_.completed;
  if (io->result < 0) {
    ++stats_.errors;
    uring_errors_total.Add();
  } else if (io->op == IoOp::kWrite) {
    CountBytesWritten(io->length_bytes);
  }
  while (wait_head_ && in_ring_ < queue_depth_max_) {
    BackendIo* next = wait_head_;
    wait_head_ = next->next;
    if (!wait_head_) wait_tail_ = nullptr;
    next->next = nullptr;
    Issue(next);
  }
  io->done(io);
}

}  // namespace spd
