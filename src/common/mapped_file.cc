#include "common/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

namespace spd {

MappedFile::~MappedFile() { Reset(); }

MappedFile::MappedFile(MappedFile&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)),
      size_(std::exchange(o.size_, 0)),
      path_(std::move(o.path_)) {}

MappedFile& MappedFile::operator=(MappedFile&& o) noexcept {
  if (this != &o) {
    Reset();
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
    path_ = std::move(o.path_);
  }
  return *this;
}

void MappedFile::Reset() {
  if (data_ != nullptr) munmap(data_, size_);
  data_ = nullptr;
  size_ = 0;
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

Status MappedFile::Sync() {
  if (data_ == nullptr) return Status::Ok();
  if (msync(data_, size_, MS_SYNC) != 0) return Status::FromErrno(errno, "msync " + path_);
  return Status::Ok();
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
