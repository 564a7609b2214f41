// CRC-32C (Castagnoli), the checksum of every on-disk record and metadata block.
#pragma once

#include <cstddef>
#include <cstdint>

namespace spd {

// Extends `crc` with `len` bytes of `data`. Start with crc = 0.
// Uses the SSE4.2 crc32 instruction when the CPU has it, a table otherwise.
uint32_t Crc32c(uint32_t crc, const void* data, size_t len);

// The same by table alone, whatever the CPU (what tests hold Crc32c to).
uint32_t Crc32cPortable(uint32_t crc, const void* data, size_t len);

}  // namespace spd
