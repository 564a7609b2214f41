#include "health/health_cache.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <ctime>
#include <new>

#include "common/os_util.h"

namespace spd::health {
namespace {

// Opens a fresh, empty object to build the segment in; `publish` then makes it visible under
// its final name (a rename for files; shm objects are created under their final name, and
// readers wait for the magic).
Result<int> OpenFresh(const CacheOptions& o, std::string* build_path) {
  int fd;
  if (!o.path.empty()) {
    *build_path = o.path + ".tmp." + std::to_string(getpid());
    unlink(build_path->c_str());
    fd = open(build_path->c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, o.mode);
    if (fd < 0) return Status::FromErrno(errno, "create " + *build_path);
  } else {
    shm_unlink(o.shm_name.c_str());
    fd = shm_open(o.shm_name.c_str(), O_RDWR | O_CREAT | O_EXCL, o.mode);
    if (fd < 0) return Status::FromErrno(errno, "shm_open " + o.shm_name);
  }
  // The umask may have narrowed the mode; readers need it as asked.
  if (fchmod(fd, o.mode) != 0) {
    Status s = Status::FromErrno(errno, "fchmod health cache");
    close(fd);
    return s;
  }
  return fd;
}

// The writer's lock of the cache's name: NAME.lock beside it (a file, or a shared-memory object),
// held with flock for the writer's life and holding its pid. Held by another live writer:
// kFailedPrecondition naming it (two daemons on one name would replace each other's segment
// and, at exit, unlink the other's). The lock object is unlinked by its holder at close, so a
// lock is taken only once the name is seen to still be the object locked (else again).
Result<int> LockName(const CacheOptions& o, std::string* lock_name) {
  const bool file = !o.path.empty();
  *lock_name = (file ? o.path : o.shm_name) + ".lock";
  auto open_lock = [&](int flags) {
    return file ? open(lock_name->c_str(), flags | O_CLOEXEC, 0644)
                : shm_open(lock_name->c_str(), flags, 0644);
  };
  for (int attempt = 0; attempt < 8; ++attempt) {
    const int fd = open_lock(O_RDWR | O_CREAT);
    if (fd < 0) return Status::FromErrno(errno, "create the health cache's lock " + *lock_name);
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      char pid[32] = {};
      const ssize_t n = pread(fd, pid, sizeof(pid) - 1, 0);
      close(fd);
      if (err != EWOULDBLOCK) return Status::FromErrno(err, "lock " + *lock_name);
      std::string holder = n > 0 ? std::string(pid, size_t(n)) : "";
      while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
      return FailedPrecondition("the health cache " + (file ? o.path : o.shm_name) +
                                " is written by another process" +
                                (holder.empty() ? "" : " (pid " + holder + ")") +
                                ": give each spd2 a --health-shm of its own");
    }
    // Still the object under the name (a holder closing unlinks it before it unlocks)?
    struct stat mine {
    }, named{};
    const int again = open_lock(O_RDONLY);
    const bool same = again >= 0 && fstat(fd, &mine) == 0 && fstat(again, &named) == 0 &&
                      mine.st_dev == named.st_dev && mine.st_ino == named.st_ino;
    if (again >= 0) close(again);
    if (!same) {
      close(fd);
      continue;
    }
    const std::string pid = std::to_string(getpid()) + "\n";
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid.data(), pid.size(), 0) < 0) {
      // Best effort: the pid only names the holder in another writer's error.
    }
    return fd;
  }
  return Unavailable("cannot take the health cache's lock " + *lock_name +
                     ": it kept being replaced");
}

}  // namespace

void CopyField(char* dst, size_t capacity, std::string_view s) {
  const size_t n = std::min(s.size(), capacity - 1);
  std::memcpy(dst, s.data(), n);
  std::memset(dst + n, 0, capacity - n);
}

Result<std::unique_ptr<HealthCacheWriter>> HealthCacheWriter::Create(const CacheOptions& o) {
  if (o.capacity == 0 || o.capacity > kSensorsMax) {
    return InvalidArgument("health cache capacity must be 1.." + std::to_string(kSensorsMax));
  }
  std::string lock_name;
  SPD_ASSIGN_OR_RETURN(const int lock_fd, LockName(o, &lock_name));
  std::unique_ptr<HealthCacheWriter> w(new HealthCacheWriter());
  w->options_ = o;
  w->lock_fd_ = lock_fd;
  w->lock_name_ = lock_name;
  std::string build_path;
  SPD_ASSIGN_OR_RETURN(int fd, OpenFresh(o, &build_path));
  const size_t bytes = SegmentBytes(o.capacity);
  if (ftruncate(fd, off_t(bytes)) != 0) {
    Status s = Status::FromErrno(errno, "size health cache");
    close(fd);
    return s;
  }
  // Every page allocated now: on a full /dev/shm the stores below would be a SIGBUS.
  if (const int rc = posix_fallocate(fd, 0, off_t(bytes)); rc != 0) {
    close(fd);
    return Status::FromErrno(rc, "allocate health cache");
  }
  void* base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int map_errno = errno;
  close(fd);
  if (base == MAP_FAILED) return Status::FromErrno(map_errno, "mmap health cache");

  w->base_ = base;
  w->bytes_ = bytes;
  w->location_ = o.path.empty() ? o.shm_name : o.path;
  // The object is new and zero-filled; placement-new gives the atomics their lifetime.
  w->header_ = new (base) HealthHeader{};
  w->records_ = reinterpret_cast<SensorRecord*>(static_cast<char*>(base) + sizeof(HealthHeader));
  for (uint32_t i = 0; i < o.capacity; ++i) new (&w->records_[i]) SensorRecord{};
  HealthHeader& h = *w->header_;
  h.version = kHealthFormatVersion;
  h.header_bytes = sizeof(HealthHeader);
  h.record_bytes = sizeof(SensorRecord);
  h.sensors_capacity = o.capacity;
  h.writer_pid = uint64_t(getpid());
  h.created_realtime_ns = ClockNs(CLOCK_REALTIME);
  h.total_bytes = bytes;
  h.magic.store(kHealthMagic, std::memory_order_release);
  if (!build_path.empty() && rename(build_path.c_str(), o.path.c_str()) != 0) {
    Status s = Status::FromErrno(errno, "rename " + build_path);
    unlink(build_path.c_str());
    return s;
  }
  return w;
}

HealthCacheWriter::~HealthCacheWriter() {
  if (base_ != nullptr) munmap(base_, bytes_);
  if (base_ != nullptr && options_.unlink_on_close) {
    if (!options_.path.empty()) {
      unlink(options_.path.c_str());
    } else {
      shm_unlink(options_.shm_name.c_str());
    }
  }
  if (lock_fd_ < 0) return;
  // Unlinked while still held: the next writer locks a new object (LockName).
  if (!options_.path.empty()) {
    unlink(lock_name_.c_str());
  } else {
    shm_unlink(lock_name_.c_str());
  }
  close(lock_fd_);
}

Result<uint32_t> HealthCacheWriter::AddSensor(const SensorIdentity& id) {
  const uint32_t index = header_->sensor_count.load(std::memory_order_relaxed);
  if (index >= header_->sensors_capacity) {
    return ResourceExhausted("health cache full (" + std::to_string(index) + " sensors)");
  }
  SensorRecord& r = records_[index];
  r.period_ns = id.period_ns;
  r.kind = static_cast<uint16_t>(id.kind);
  r.unit = static_cast<uint16_t>(id.unit);
  r.source_index = id.source_index;
  CopyField(r.name, sizeof(r.name), id.name);
  CopyField(r.pci_location, sizeof(r.pci_location), id.pci_location);
  CopyField(r.channel, sizeof(r.channel), id.channel);
  CopyField(r.label, sizeof(r.label), id.label);
  r.status.store(static_cast<uint32_t>(SensorStatus::kStale), std::memory_order_relaxed);
  header_->sensor_count.store(index + 1, std::memory_order_release);
  return index;
}

void HealthCacheWriter::Write(uint32_t index, const SensorSample& sample) {
  SPD_ASSERT(index < sensor_count());
  SPD_ASSERT(in_round_);
  WriteSample(records_[index], sample);
}

void HealthCacheWriter::BeginRound() {
  SPD_ASSERT(!in_round_);
  in_round_ = true;
  health::BeginRound(*header_);
}

void HealthCacheWriter::EndRound(uint64_t monotonic_ns, uint64_t realtime_ns) {
  SPD_ASSERT(in_round_);
  in_round_ = false;
  header_->heartbeat_monotonic_ns.store(monotonic_ns, std::memory_order_relaxed);
  header_->heartbeat_realtime_ns.store(realtime_ns, std::memory_order_relaxed);
  health::EndRound(*header_);
}

uint32_t HealthCacheWriter::sensor_count() const {
  return header_->sensor_count.load(std::memory_order_relaxed);
}

const SensorRecord& HealthCacheWriter::record(uint32_t index) const {
  SPD_ASSERT(index < sensor_count());
  return records_[index];
}

}  // namespace spd::health
