// The crash-consistency oracle: what each 512-byte sector of each volume may hold after a crash.
//
// Every write of the crash workload fills each sector with a self-describing pattern (volume,
// sector, write id), so reading a sector back tells which write put it there. For every sector
// the oracle keeps the history of versions (write ids in completion order; 0 = zeros, from
// discard or write-zeroes) and the index of the newest version whose durability was
// acknowledged (a FLUSH that completed after it, or FUA). After a crash a sector must hold that
// version or a later one: never an older one, never another volume's data, never garbage.
//
// The workload never has two overlapping writes in flight, so the order of versions of one
// sector is well defined (Submitted/Finished track writes in flight together). Sectors are the
// atomic unit of the device (torn writes tear between sectors, never inside one).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace spd::testing {

constexpr uint32_t kSectorBytes = 512;

// Fills one sector with the pattern of (volume_tag, sector, write_id). write_id 0 = zeros.
void FillSector(uint8_t* dst, uint32_t volume_tag, uint64_t sector, uint64_t write_id);

// Decodes a sector: write id, 0 for all zeros, UINT64_MAX for anything that is not a pattern
// of this volume and sector (garbage, or another volume's data).
uint64_t DecodeSector(const uint8_t* src, uint32_t volume_tag, uint64_t sector);

class VolumeOracle {
 public:
  VolumeOracle(uint32_t volume_tag, uint64_t sectors);

  uint32_t tag() const { return tag_; }
  uint64_t sectors() const { return history_.size(); }

  // A write (write_id > 0) or a zeroing (write_id 0) of [first, first+count) completed.
  // `durable` for FUA writes.
  void Completed(uint64_t first, uint64_t count, uint64_t write_id, bool durable);
  // For requests in flight together (never overlapping each other): a write was submitted (it
  // may land from now on, but no FLUSH covers it yet) ...
  void Submitted(uint64_t first, uint64_t count, uint64_t write_id);
  // ... and completed: FLUSHes submitted from now on cover it; `durable` for FUA.
  void Finished(uint64_t first, uint64_t count, uint64_t write_id, bool durable);
  // A FUA write of [first, first+count) completed: its version is durable now.
  void MadeDurable(uint64_t first, uint64_t count, uint64_t write_id);
  // A FLUSH completed that started after `seen` completions had been recorded.
  // REQUIRES: `seen` was obtained with CompletionMark() when the flush was submitted.
  void FlushCompleted(uint64_t seen);
  uint64_t CompletionMark() const { return completions_; }

  // A compact copy of "what is durable now", for a crash state taken at this instant.
  std::vector<uint32_t> DurableSnapshot() const;

  // Checks one sector read after a crash against a snapshot. Returns "" or what is wrong.
  std::string Check(const std::vector<uint32_t>& snapshot, uint64_t sector,
                    uint64_t found_write_id) const;

  void Grow(uint64_t sectors);
  // The newest version of a sector (what a read of the live volume must show).
  uint64_t Latest(uint64_t sector) const { return history_[sector].back().write_id; }

 private:
  struct Version {
    uint64_t write_id;
    uint64_t completion;  // sequence number of its completion
  };
  uint32_t tag_;
  uint64_t completions_ = 0;
  // Per sector: versions in completion order; [0] is the initial zero version.
  std::vector<std::vector<Version>> history_;
  // Per sector: index into history_ of the newest version known durable.
  std::vector<uint32_t> durable_;
  // Sectors written since the last flush, to make FlushCompleted cheap.
  std::vector<uint64_t> dirty_;
};

}  // namespace spd::testing
