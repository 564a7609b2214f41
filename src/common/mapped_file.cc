#include "common/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <random>
#include <utility>

#include "common/counters.h"
#include "common/log.h"

namespace spd {
namespace {

Counter unclosed_total("spd_state_files_unclosed_total",
                       "Persisted state files found open by a boot that ended without closing "
                       "them (power loss or a kernel crash): their contents were not trusted");

constexpr uint64_t kClaimMask = (uint64_t{1} << kClaimBits) - 1;
std::atomic<uint64_t> boot_tag_for_testing{0};
std::atomic<uint64_t> claims{0};

uint64_t ReadBootTag() {
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::string id;
  if (!(in >> id) || id.size() < 32) {
    SPD_LOG_WARN(
        "cannot read /proc/sys/kernel/random/boot_id: state files left open by a "
        "killed process will be taken as a power loss's");
    return (uint64_t{std::random_device{}()} << 32 | uint64_t{1} << 63) & ~kClaimMask;
  }
  uint64_t h = 14695981039346656037ull;  // FNV-1a
  for (char c : id) h = (h ^ static_cast<uint8_t>(c)) * 1099511628211ull;
  h &= ~kClaimMask;
  return h != 0 ? h : uint64_t{1} << 63;
}

}  // namespace

uint64_t BootTag() {
  const uint64_t t = boot_tag_for_testing.load(std::memory_order_relaxed) & ~kClaimMask;
  if (t != 0) return t;
  static const uint64_t tag = ReadBootTag();
  return tag;
}

void SetBootTagForTesting(uint64_t tag) {
  boot_tag_for_testing.store(tag, std::memory_order_relaxed);
}

MappedFile::~MappedFile() { Reset(); }

MappedFile::MappedFile(MappedFile&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)),
      size_(std::exchange(o.size_, 0)),
      path_(std::move(o.path_)),
      tag_offset_(std::exchange(o.tag_offset_, SIZE_MAX)),
      claim_(std::exchange(o.claim_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& o) noexcept {
  if (this != &o) {
    Reset();
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
    path_ = std::move(o.path_);
    tag_offset_ = std::exchange(o.tag_offset_, SIZE_MAX);
    claim_ = std::exchange(o.claim_, 0);
  }
  return *this;
}

void MappedFile::Reset() {
  if (data_ != nullptr && tag_offset_ < size_) {
    // Closed in order: the contents written back first, then the mark that says so (unless a
    // later mapping of the file claimed it: that one marks it when it closes).
    Status st = Sync();
    uint64_t now = 0;
    std::memcpy(&now, data_ + tag_offset_, sizeof now);
    if (st.ok() && now == claim_) {
      const uint64_t closed = 0;
      std::memcpy(data_ + tag_offset_, &closed, sizeof closed);
      st = Sync();
    }
    if (!st.ok())
      SPD_LOG_WARN("%s: not closed in order (%s): a reboot will not trust it", path_.c_str(),
                   st.ToString().c_str());
  }
  if (data_ != nullptr) munmap(data_, size_);
  data_ = nullptr;
  size_ = 0;
  tag_offset_ = SIZE_MAX;
  claim_ = 0;
}

Result<MappedFile> MappedFile::Open(const std::string& path, size_t bytes, bool* existed) {
  *existed = false;
  if (bytes == 0) return InvalidArgument("map " + path + ": zero bytes");
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return Status::FromErrno(errno, "open " + path);
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    const int e = errno;
    close(fd);
    return Status::FromErrno(e, "stat " + path);
  }
  *existed = static_cast<uint64_t>(st.st_size) >= bytes;
  if (!*existed && ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    const int e = errno;
    close(fd);
    return Status::FromErrno(e, "extend " + path);
  }
  // Every page backed by the file system now: a store into a hole of a shared mapping on a
  // full file system is a SIGBUS (the daemon's end), where this is an error its caller handles.
  // (A file found at its size may be sparse too: an older daemon's, or extended elsewhere.)
  if (const int rc = posix_fallocate(fd, 0, static_cast<off_t>(bytes)); rc != 0) {
    close(fd);
    return Status::FromErrno(rc, "allocate " + path);
  }
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int e = errno;
  close(fd);
  if (p == MAP_FAILED) return Status::FromErrno(e, "map " + path);
  MappedFile m;
  m.data_ = static_cast<uint8_t*>(p);
  m.size_ = bytes;
  m.path_ = path;
  return m;
}

Status MappedFile::Grow(size_t bytes) {
  if (data_ == nullptr) return FailedPrecondition("grow " + path_ + ": not mapped");
  if (bytes <= size_) return Status::Ok();
  const int fd = open(path_.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, "open " + path_);
  // As in Open: every page backed before a store can reach it.
  int rc = ftruncate(fd, static_cast<off_t>(bytes)) == 0 ? 0 : errno;
  if (rc == 0) rc = posix_fallocate(fd, 0, static_cast<off_t>(bytes));
  close(fd);
  if (rc != 0) return Status::FromErrno(rc, "extend " + path_);
  void* p = mremap(data_, size_, bytes, MREMAP_MAYMOVE);
  if (p == MAP_FAILED) return Status::FromErrno(errno, "remap " + path_);
  data_ = static_cast<uint8_t*>(p);
  size_ = bytes;
  return Status::Ok();
}

Status MappedFile::Sync() {
  if (data_ == nullptr) return Status::Ok();
  if (msync(data_, size_, MS_SYNC) != 0) return Status::FromErrno(errno, "msync " + path_);
  return Status::Ok();
}

Result<MappedFile::LastOpener> MappedFile::Claim(size_t tag_offset) {
  if (data_ == nullptr || tag_offset % 8 != 0 || tag_offset + 8 > size_)
    return InvalidArgument("claim " + path_ + ": tag offset out of the mapping");
  uint64_t was = 0;
  std::memcpy(&was, data_ + tag_offset, sizeof was);
  const uint64_t boot = BootTag();
  const LastOpener last = was == 0                      ? LastOpener::kNone
                          : (was & ~kClaimMask) == boot ? LastOpener::kThisBoot
                                                        : LastOpener::kAnotherBoot;
  const uint64_t claim = boot | (claims.fetch_add(1, std::memory_order_relaxed) & kClaimMask);
  std::memcpy(data_ + tag_offset, &claim, sizeof claim);
  Status st = Sync();
  if (!st.ok()) return st;
  tag_offset_ = tag_offset;
  claim_ = claim;
  if (last == LastOpener::kAnotherBoot) {
    unclosed_total.Add();
    SPD_LOG_WARN(
        "%s: left open by a boot that ended without closing it (a power loss or a "
        "kernel crash): its contents vouch for nothing",
        path_.c_str());
  }
  return last;
}

Status MakeDirectories(const std::string& dir) {
  if (dir.empty()) return InvalidArgument("empty directory name");
  for (size_t i = 1; i <= dir.size(); ++i) {
    if (i != dir.size() && dir[i] != '/') continue;
    const std::string part = dir.substr(0, i);
    if (mkdir(part.c_str(), 0700) != 0 && errno != EEXIST)
      return Status::FromErrno(errno, "mkdir " + part);
  }
  return Status::Ok();
}

}  // namespace spd
