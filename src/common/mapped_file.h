// MappedFile: a small file mapped shared into memory, for state that must outlive the process
// from the moment it is stored: a store lands in the page cache, which a killed process leaves
// behind (kill -9 loses nothing stored). Power loss keeps only what Sync() wrote back.
//
// Thread-safety: none; the owner serializes. Moving is allowed, copying is not.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/status.h"

namespace spd {

class MappedFile {
 public:
  MappedFile() = default;
  ~MappedFile();
  MappedFile(MappedFile&& o) noexcept;
  MappedFile& operator=(MappedFile&& o) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  // Opens `path` (created with mode 0600 if absent) and maps its first `bytes` bytes, the file
  // extended with zeros when shorter. *existed: the file was there, at least `bytes` long.
  static Result<MappedFile> Open(const std::string& path, size_t bytes, bool* existed);

  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  bool mapped() const { return data_ != nullptr; }
  const std::string& path() const { return path_; }
  // Writes the mapping back and waits (msync MS_SYNC).
  Status Sync();

 private:
  void Reset();
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

// Creates `dir` and its parents (mode 0700 for the ones it makes).
Status MakeDirectories(const std::string& dir);

}  // namespace spd
