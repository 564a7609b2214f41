// Opening pool files and block devices for the file-backed backends (uring, posix).
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"
#include "io/io_backend.h"

namespace spd {

struct OpenedFile {
  int fd = -1;
  bool direct = false;        // O_DIRECT in effect
  bool block_device = false;  // discard/zeroes via ioctl instead of fallocate
  uint64_t size_bytes = 0;
  uint32_t alignment_bytes = 1;  // for O_DIRECT: logical block size / DIO alignment
  // tmpfs/ramfs: a write is a memory copy that io_uring cannot do without blocking, so it would
  // hand every write to an io-wq worker thread (two context switches per write).
  bool memory_backed = false;
};

// Opens (and creates/extends, sparse) the file named in options. Tries O_DIRECT unless
// options.buffered; when the file system refuses O_DIRECT, reopens buffered, logs once and
// counts spd_io_odirect_fallback_total.
Result<OpenedFile> OpenPoolFile(const BackendOptions& options);

// Synchronous helpers shared by the file backends' *Sync methods and the posix workers.
// They loop over short transfers and return -errno or the byte count.
// Bytes one pread/pwrite call of PreadFull/PwriteFull asks for at most: larger transfers (a
// pool's checkpoint can be 512 MiB, pool_format::kChunksMax) are split into such calls.
constexpr size_t kSyncIoBytesMax = size_t{1} << 30;
int64_t PreadFull(int fd, void* buf, size_t len, uint64_t off);
int64_t PwriteFull(int fd, const void* buf, size_t len, uint64_t off, bool fua);
// Discard (punch) or write zeroes on a file or block device. Returns 0 or -errno.
int DiscardRange(const OpenedFile& f, uint64_t off, uint64_t len);
int ZeroRange(const OpenedFile& f, uint64_t off, uint64_t len, bool keep_allocated);

// spd_io_bytes_written_total: one counter for every file backend.
void CountBytesWritten(uint64_t bytes);

// What the file backends (uring, posix) share: the opened file, its geometry, and the blocking
// control-path helpers. Each subclass adds only its own way of running Submit().
class FileBackend : public IoBackend {
 public:
  // `owns_file`: close the file at destruction (false for a channel, which borrows it).
  explicit FileBackend(OpenedFile file, bool owns_file = true)
      : file_(file), owns_file_(owns_file) {}
  ~FileBackend() override;  // closes the file if it owns it

  uint64_t size_bytes() const override { return file_.size_bytes; }
  uint32_t alignment_bytes() const override { return file_.alignment_bytes; }
  bool discard_zeroes() const override { return !file_.block_device; }
  Status ReadSync(uint64_t offset_bytes, void* buf, size_t length_bytes) override;
  Status WriteSync(uint64_t offset_bytes, const void* buf, size_t length_bytes) override;
  Status FlushSync() override;
  Status DiscardSync(uint64_t offset_bytes, uint64_t length_bytes) override;

  bool direct() const { return file_.direct; }

 protected:
  // Which reads and writes are copies done on the reactor thread rather than handed off (to an
  // io-wq worker, or a worker thread): those BackendOptions::inline_memory_* ask for, and only on
  // a memory-backed file (tmpfs, ramfs), where I/O is a memory copy that cannot block on a disk.
  void SetInlineCopies(const BackendOptions& options) {
    inline_reads_ = options.inline_memory_reads && file_.memory_backed;
    inline_writes_ = options.inline_memory_writes && file_.memory_backed;
  }
  void SetFaultNoopFlush(const BackendOptions& options) {
    fault_noop_flush_ = options.fault_noop_flush;
  }
  // BackendOptions::fault_noop_flush (test only): flushes do nothing and FUA is dropped.
  bool fault_noop_flush() const { return fault_noop_flush_; }
  bool CopiesInline(const BackendIo& io) const {
    return (inline_reads_ && io.op == IoOp::kRead) || (inline_writes_ && io.op == IoOp::kWrite);
  }
  // pread or pwrite (FUA honoured) of a kRead/kWrite: bytes, or -errno.
  int64_t CopySync(const BackendIo& io) const;
  // Copies the inline-copy choice and the fault injection to a channel of this backend: a
  // channel's writes (the remote path) must make the same durability promises.
  void InheritRunChoices(FileBackend* channel) const {
    channel->inline_reads_ = inline_reads_;
    channel->inline_writes_ = inline_writes_;
    channel->fault_noop_flush_ = fault_noop_flush_;
  }

  OpenedFile file_;

 private:
  bool owns_file_ = true;
  bool inline_reads_ = false;
  bool inline_writes_ = false;
  bool fault_noop_flush_ = false;
};

}  // namespace spd
