// IoBackend: the one interface every storage backend fills (uring, posix, sim).
//
// A backend is bound to one reactor: Submit() is called on that reactor's thread and every
// completion (`io->done`) runs on that thread too, never inside Submit() itself. This is SPDK's
// "one owning thread, messages instead of locks" rule: backends need no locks on the data path.
//
// Adding a backend is "copy the sim one": fill the virtual functions below and add a case to
// OpenBackend() in backend_factory.cc.
#pragma once

#include <sys/uio.h>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "reactor/reactor.h"

namespace spd {

enum class IoOp : uint8_t {
  kRead = 0,
  kWrite = 1,
  kFlush = 2,        // make every completed write durable (offset/length ignored)
  kDiscard = 3,      // the range may read back as anything; backends free space where they can
  kWriteZeroes = 4,  // the range reads back as zeros; kIoNoUnmap asks to keep it allocated
};

const char* IoOpName(IoOp op);

enum IoFlags : uint8_t {
  kIoFua = 1 << 0,      // the write is durable when it completes
  kIoNoUnmap = 1 << 1,  // kWriteZeroes: keep the range allocated (no hole punching)
};

class IoBackend;

// One backend operation. Owned by the caller (preallocated, never allocated per I/O), which
// must keep it alive and untouched from Submit() until `done` runs.
struct BackendIo {
  IoOp op = IoOp::kRead;
  uint8_t flags = 0;
  uint64_t offset_bytes = 0;
  uint32_t length_bytes = 0;
  // kRead/kWrite data. Must be aligned to the backend's alignment_bytes() (O_DIRECT).
  void* buf = nullptr;
  // Index of a buffer registered with RegisterBuffers() that contains [buf, buf+length), or -1.
  // Backends without registered buffers ignore it.
  int16_t buf_index = -1;
  // Set by the backend before `done`: length_bytes on success, -errno on failure. A short read
  // or write never reaches the caller; the backend retries or turns it into -EIO.
  int32_t result = 0;
  void (*done)(BackendIo* io) = nullptr;
  void* ctx = nullptr;         // caller's
  void* gate_state = nullptr;  // an IoGate's, from its Submit to its Done (else null)

  // Backend-private state. Callers leave these alone.
  Completion completion;
  Task task;
  uint32_t done_bytes = 0;
  BackendIo* next = nullptr;
  IoBackend* owner = nullptr;
  uint8_t phase = 0;  // multi-step operations (FUA discard = fallocate, then fdatasync)
  uint64_t mark = 0;  // sim: for a flush, the last cached write it covers

  // Re-targets this (reused) operation as a device flush, keeping done/ctx.
  void SetFlush() {
    op = IoOp::kFlush;
    flags = 0;
    offset_bytes = 0;
    length_bytes = 0;
    buf = nullptr;
    buf_index = -1;
  }
};

// Admission of a caller's background I/O (a pool's chunk zeroing and punching) by a scheduler
// (qos::QosScheduler::BackgroundGate): Submit hands `io` to `backend` when the scheduler lets
// it, now or later; the caller calls Done from io's completion when io->gate_state is not null
// (and the gate still set), before it reuses or resubmits io. On the owning reactor's thread.
class IoGate {
 public:
  virtual void Submit(IoBackend* backend, BackendIo* io) = 0;
  virtual void Done(BackendIo* io) = 0;

 protected:
  ~IoGate() = default;
};

struct BackendStats {
  uint64_t submitted = 0;
  uint64_t completed = 0;
  uint64_t errors = 0;
  uint64_t inflight = 0;
};

class IoBackend {
 public:
  virtual ~IoBackend() = default;

  virtual const char* name() const = 0;
  virtual uint64_t size_bytes() const = 0;
  // Required alignment of offsets, lengths and buffers for kRead/kWrite (512 or 4096).
  virtual uint32_t alignment_bytes() const = 0;
  // True when discard/punch leaves zeros behind (files, sim); false for devices that do not
  // promise it. Callers that need zeros then use kWriteZeroes.
  virtual bool discard_zeroes() const = 0;

  // Starts `io`. REQUIRES: owning reactor's thread; offset + length <= size_bytes(); data ops
  // aligned. Requests beyond the backend's queue limit wait inside the backend, never fail.
  virtual void Submit(BackendIo* io) = 0;

  // Blocking helpers for control paths (format, open, check, tests): never on a data path.
  [[nodiscard]] virtual Status ReadSync(uint64_t offset_bytes, void* buf, size_t length_bytes) = 0;
  [[nodiscard]] virtual Status WriteSync(uint64_t offset_bytes, const void* buf,
                                         size_t length_bytes) = 0;
  [[nodiscard]] virtual Status FlushSync() = 0;
  [[nodiscard]] virtual Status DiscardSync(uint64_t offset_bytes, uint64_t length_bytes) = 0;

  virtual BackendStats stats() const = 0;

  // Registers long-lived data buffers with the kernel so that I/O naming them (buf_index) skips
  // the per-I/O page pinning. Replaces any earlier registration. REQUIRES: no I/O in flight.
  [[nodiscard]] virtual Status RegisterBuffers(const struct iovec* iov, unsigned count) {
    return Unimplemented(std::string(name()) + " backend has no registered buffers");
  }
  // A second way into the same storage for another reactor: reads and writes submitted to the
  // channel run on `reactor` (its ring or its workers) against the same file, so a connection on
  // that reactor needs no message to this backend's reactor for them. The channel shares this
  // backend's open file (never reopens or closes it: closing any descriptor of the pool file would
  // drop the process's lock on it) and must be destroyed first, on `reactor`'s thread, with no
  // I/O in flight. A device flush on this backend covers writes completed on its channels (same
  // file). REQUIRES: on `reactor`'s thread. Backends without shared storage (sim) refuse.
  [[nodiscard]] virtual Result<std::unique_ptr<IoBackend>> OpenChannel(Reactor* reactor) {
    return Unimplemented(std::string(name()) + " backend has no channels");
  }
};

enum class BackendKind { kUring, kPosix, kSim, kNull };

// The sim backend's models (dev mode and tests). Zero means "off" for every knob.
struct SimOptions {
  uint64_t seed = 1;  // every random choice derives from it; runs replay exactly
  // Alignment of offsets, lengths and buffers the sim demands of reads and writes, as O_DIRECT
  // does (asserted: a caller that breaks it has a bug). 1: none.
  uint32_t alignment_bytes = 1;
  // Latencies in simulated time: operations complete one per reactor tick in the order of their
  // simulated deadlines, without waiting in real time. Fast, and a seed replays exactly (the
  // crash harness); off, latencies are real time (dev mode, benchmarks).
  bool virtual_time = false;
  uint64_t latency_base_ns = 0;    // added to every operation
  uint64_t latency_jitter_ns = 0;  // uniform extra in [0, jitter]
  uint64_t read_extra_ns = 0;      // per-op additions
  uint64_t write_extra_ns = 0;
  uint64_t flush_extra_ns = 0;
  uint64_t iops_max = 0;               // capacity model: operations per second
  uint64_t bandwidth_bytes_per_s = 0;  // capacity model: data bytes per second
  // Capacity model: the device serves this many operations at once (an SSD's channels), each
  // for units * (1/iops_max + bytes/bandwidth): iops_max and bandwidth stay the totals, an
  // operation alone takes `units` times its share, and queueing starts once all are busy.
  uint32_t units = 1;
  double error_probability = 0;  // each data op fails with EIO with this probability
  uint64_t error_after_ops = 0;  // ... once this many data ops went by (0: from the start)
  // Byte ranges [offset, offset+length) on which reads and writes fail with EIO.
  std::vector<std::pair<uint64_t, uint64_t>> error_ranges;
};

struct BackendOptions {
  BackendKind kind = BackendKind::kUring;
  std::string path;                // file or block device (uring, posix)
  uint64_t size_bytes = 0;         // create/extend a regular file to this size if larger (sparse)
  bool create = false;             // create the file when missing
  bool buffered = false;           // skip O_DIRECT on purpose
  unsigned queue_depth_max = 256;  // backend I/Os in flight at once; more wait in a queue
  unsigned posix_threads = 4;      // posix backend worker threads
  // uring: on a memory-backed file (tmpfs, ramfs) do writes with pwrite on the reactor thread
  // instead of through the ring, which would punt each one to an io-wq worker.
  bool inline_memory_writes = true;
  // Same for reads: O_DIRECT reads of shmem cannot be done without blocking either, so the ring
  // punts every one of them to an io-wq worker too.
  bool inline_memory_reads = true;
  // TEST ONLY (tests/integration/test_powercut.sh, daemon flag --fault-noop-flush), uring and
  // posix: every flush (kFlush, FlushSync, the sync after a FUA discard) completes at once without
  // fdatasync and FUA writes go out as plain writes, so nothing is ever made durable. The
  // power-cut test runs with it to show that it catches a backend that skips durability.
  bool fault_noop_flush = false;
  SimOptions sim;  // kSim only
};

// Opens a backend bound to `reactor`. For kUring, REQUIRES reactor->engine() == kUring; callers
// pick kPosix when the reactor fell back to epoll (see ChooseBackendKind).
Result<std::unique_ptr<IoBackend>> OpenBackend(const BackendOptions& options, Reactor* reactor);

// The kind to use: the requested one, except that kUring becomes kPosix (logged once, counted in
// spd_io_backend_fallback_total) when the reactor runs on epoll.
BackendKind ChooseBackendKind(BackendKind requested, const Reactor& reactor);

const char* BackendKindName(BackendKind kind);
Result<BackendKind> ParseBackendKind(std::string_view name);

}  // namespace spd
