#include "io/file_util.h"

#include <fcntl.h>

#include <linux/falloc.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/vfs.h>
#include <unistd.h>
#include <algorithm>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "common/counters.h"
#include "common/log.h"

namespace spd {
namespace {
Counter pool_in_use_total("spd_io_pool_in_use_total",
                          "Opens refused because another process holds the pool file's lock.");
Counter bytes_written_total("spd_io_bytes_written_total",
                            "Bytes written to the pool by the file backends (uring, posix).");
Counter odirect_fallback_total("spd_io_odirect_fallback_total",
                               "Pool files opened buffered because O_DIRECT was refused.");
}  // namespace

void CountBytesWritten(uint64_t bytes) { bytes_written_total.Add(bytes); }

Result<OpenedFile> OpenPoolFile(const BackendOptions& options) {
  OpenedFile f;
  int flags = O_RDWR | O_CLOEXEC;
  if (options.create) flags |= O_CREAT;
  int fd = -1;
  if (!options.buffered) {
    fd = open(options.path.c_str(), flags | O_DIRECT, 0600);
    if (fd >= 0) {
      f.direct = true;
    } else if (errno == EINVAL) {
      static std::atomic<bool> logged{false};
      if (!logged.exchange(true))
        SPD_LOG_WARN("%s: the file system refuses O_DIRECT; using buffered I/O",
                     options.path.c_str());
      odirect_fallback_total.Add();
    } else {
      return Status::FromErrno(errno, "open " + options.path);
    }
  }
  if (fd < 0) {
    fd = open(options.path.c_str(), flags, 0600);
    if (fd < 0) return Status::FromErrno(errno, "open " + options.path);
  }
  f.fd = fd;
  struct stat mode_st {};
  if (fstat(fd, &mode_st) == 0 && S_ISREG(mode_st.st_mode) && (mode_st.st_mode & 0077) != 0)
    SPD_LOG_WARN(
        "%s is readable or writable by other users (mode %03o): any local user can read "
        "every volume's data from it; chmod 600 it",
        options.path.c_str(), static_cast<unsigned>(mode_st.st_mode & 0777));
  // One process at a time: a second daemon (or `spd2 check`) on a pool in use would corrupt it
  // or read a half-written state. A POSIX record lock belongs to the process and goes away when
  // it exits, even by SIGKILL with io_uring still holding the file (a flock would outlive the
  // process until the ring's teardown drops its reference).
  struct flock lk = {};
  lk.l_type = F_WRLCK;
  lk.l_whence = SEEK_SET;
  if (fcntl(fd, F_SETLK, &lk) < 0) {
    const int err = errno;
    struct flock holder = lk;
    const bool known = fcntl(fd, F_GETLK, &holder) == 0 && holder.l_type != F_UNLCK;
    close(fd);
    if (err == EACCES || err == EAGAIN) {
      pool_in_use_total.Add();
      return FailedPrecondition(
          options.path + " is in use by another process" +
          (known ? " (pid " + std::to_string(holder.l_pid) + ")" : std::string()) +
          ": is an spd2 already serving it?");
    }
    return Status::FromErrno(err, "lock " + options.path);
  }
  struct stat st;
  if (fstat(fd, &st) < 0) {
    Status s = Status::FromErrno(errno, "fstat " + options.path);
    close(fd);
    return s;
  }
  if (S_ISBLK(st.st_mode)) {
    f.block_device = true;
    uint64_t bytes = 0;
    if (ioctl(fd, BLKGETSIZE64, &bytes) < 0) {
      Status s = Status::FromErrno(errno, "BLKGETSIZE64 " + options.path);
      close(fd);
      return s;
    }
    f.size_bytes = bytes;
    int lbs = 512;
    if (ioctl(fd, BLKSSZGET, &lbs) == 0 && lbs > 0) f.alignment_bytes = static_cast<uint32_t>(lbs);
  } else if (S_ISREG(st.st_mode)) {
    f.size_bytes = static_cast<uint64_t>(st.st_size);
    if (options.size_bytes > f.size_bytes) {
      // Sparse: extending allocates nothing.
      if (ftruncate(fd, static_cast<off_t>(options.size_bytes)) < 0) {
        Status s = Status::FromErrno(errno, "ftruncate " + options.path);
        close(fd);
        return s;
      }
      f.size_bytes = options.size_bytes;
    }
    // O_DIRECT on files: 4 KiB satisfies every file system's DIO alignment we meet; the exact
    // value (statx STATX_DIOALIGN) may be smaller but never larger on common setups.
    f.alignment_bytes = f.direct ? 4096 : 1;
    struct statfs sfs;
    if (fstatfs(fd, &sfs) == 0)
      f.memory_backed = sfs.f_type == TMPFS_MAGIC || sfs.f_type == RAMFS_MAGIC;
  } else {
    close(fd);
    return InvalidArgument(options.path + " is neither a regular file nor a block device");
  }
  if (f.block_device && !f.direct) f.alignment_bytes = 1;
  return f;
}

int64_t PreadFull(int fd, void* buf, size_t len, uint64_t off) {
  size_t done = 0;
  while (done < len) {
    // At most kSyncIoBytesMax per call: the kernel moves at most 2 GiB - 4 KiB per call anyway
    // and says so with a short count; asking for less keeps every step far from that limit.
    ssize_t n = pread(fd, static_cast<uint8_t*>(buf) + done, std::min(len - done, kSyncIoBytesMax),
                      static_cast<off_t>(off + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (n == 0) {  // beyond EOF of a regular file: zeros
      std::memset(static_cast<uint8_t*>(buf) + done, 0, len - done);
      break;
    }
    done += static_cast<size_t>(n);
  }
  return static_cast<int64_t>(len);
}

int64_t PwriteFull(int fd, const void* buf, size_t len, uint64_t off, bool fua) {
  size_t done = 0;
  while (done < len) {
    iovec iov{const_cast<uint8_t*>(static_cast<const uint8_t*>(buf)) + done,
              std::min(len - done, kSyncIoBytesMax)};
    ssize_t n = pwritev2(fd, &iov, 1, static_cast<off_t>(off + done), fua ? RWF_DSYNC : 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (n == 0) return -EIO;
    done += static_cast<size_t>(n);
  }
  return static_cast<int64_t>(len);
}

int64_t FileBackend::CopySync(const BackendIo& io) const {
  return io.op == IoOp::kRead ? PreadFull(file_.fd, io.buf, io.length_bytes, io.offset_bytes)
                              : PwriteFull(file_.fd, io.buf, io.length_bytes, io.offset_bytes,
                                           (io.flags & kIoFua) && !fault_noop_flush_);
}

int DiscardRange(const OpenedFile& f, uint64_t off, uint64_t len) {
  if (f.block_device) {
    uint64_t range[2] = {off, len};
    return ioctl(f.fd, BLKDISCARD, range) < 0 ? -errno : 0;
  }
  if (fallocate(f.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(off),
                static_cast<off_t>(len)) < 0)
    return -errno;
  return 0;
}

int ZeroRange(const OpenedFile& f, uint64_t off, uint64_t len, bool keep_allocated) {
  if (f.block_device) {
    uint64_t range[2] = {off, len};
    return ioctl(f.fd, BLKZEROOUT, range) < 0 ? -errno : 0;
  }
  int mode = keep_allocated ? FALLOC_FL_ZERO_RANGE : (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE);
  if (fallocate(f.fd, mode, static_cast<off_t>(off), static_cast<off_t>(len)) == 0) return 0;
  if (keep_allocated && (errno == EOPNOTSUPP || errno == EINVAL)) {
    // tmpfs and some others lack ZERO_RANGE: punch, then allocate again.
    if (fallocate(f.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(off),
                  static_cast<off_t>(len)) < 0)
      return -errno;
    if (fallocate(f.fd, FALLOC_FL_KEEP_SIZE, static_cast<off_t>(off), static_cast<off_t>(len)) < 0)
      return errno == EOPNOTSUPP ? 0 : -errno;
    return 0;
  }
  return -errno;
}

FileBackend::~FileBackend() {
  if (owns_file_ && file_.fd >= 0) close(file_.fd);
}

Status FileBackend::ReadSync(uint64_t off, void* buf, size_t len) {
  int64_t r = PreadFull(file_.fd, buf, len, off);
  return r < 0 ? Status::FromErrno(static_cast<int>(-r), "pread") : Status::Ok();
}

Status FileBackend::WriteSync(uint64_t off, const void* buf, size_t len) {
  int64_t r = PwriteFull(file_.fd, buf, len, off, false);
  return r < 0 ? Status::FromErrno(static_cast<int>(-r), "pwrite") : Status::Ok();
}

Status FileBackend::FlushSync() {
  if (fault_noop_flush_) return Status::Ok();
  return fdatasync(file_.fd) < 0 ? Status::FromErrno(errno, "fdatasync") : Status::Ok();
}

Status FileBackend::DiscardSync(uint64_t off, uint64_t len) {
  int r = DiscardRange(file_, off, len);
  return r < 0 ? Status::FromErrno(-r, "discard") : Status::Ok();
}

}  // namespace spd
