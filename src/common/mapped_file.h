// MappedFile: a small file mapped shared into memory, for state that must outlive the process
// from the moment it is stored: a store lands in the page cache, which a killed process leaves
// behind (kill -9 loses nothing stored). Power loss keeps only what Sync() wrote back, and
// not in the order it was stored: after one, a file's contents vouch for nothing. Claim tells
// the two apart: a file claimed names the boot that has it open (synced at once) until it is
// closed in order (the destructor: synced, then marked closed, synced again), so a file found
// still claimed by another boot was left open by a power loss or a kernel crash.
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
  // The file extended (with zeros) to `bytes` and the whole of it mapped, the claim kept; the
  // mapping may move (data() changes). Smaller than size(): Ok, nothing done. On failure the
  // mapping stays as it was.
  Status Grow(size_t bytes);

  // Who had the file open before this Claim.
  enum class LastOpener {
    kNone,         // nobody, or closed in order: the contents are as its owner left them
    kThisBoot,     // a process of this boot that ended without closing it (killed): likewise
    kAnotherBoot,  // a boot that ended without closing it: the contents vouch for nothing
  };
  // The uint64_t at `tag_offset` (8-aligned, zero in a new file) names the boot that has the
  // file open and the claim: this one from now on, written back before Claim returns; 0 again
  // when the file is closed in order, unless another mapping claimed it since (the same file
  // opened again before this one closed). Logged and counted (spd_state_files_unclosed_total)
  // when kAnotherBoot. The owner keeps the rest of its contents as it judges from the answer.
  Result<LastOpener> Claim(size_t tag_offset);

 private:
  void Reset();
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
  size_t tag_offset_ = SIZE_MAX;  // claimed when < size_
  uint64_t claim_ = 0;            // the value this mapping wrote there
};

// The running kernel's boot, as a tag that is never 0 and whose low kClaimBits bits are 0
// (from /proc/sys/kernel/random/boot_id; when that cannot be read, a tag of this process:
// every file then counts as another boot's). A claim is the tag and a count in those bits.
inline constexpr int kClaimBits = 24;
uint64_t BootTag();
// Tests: the tag BootTag returns from now on, as if the machine had rebooted (0: the real one).
void SetBootTagForTesting(uint64_t tag);

// Creates `dir` and its parents (mode 0700 for the ones it makes).
Status MakeDirectories(const std::string& dir);

}  // namespace spd
