#include "common/crc32c.h"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <cpuid.h>
#include <nmmintrin.h>
#endif

namespace spd {
namespace {

constexpr uint32_t kPoly = 0x82F63B78u;  // reflected Castagnoli polynomial

constexpr std::array<uint32_t, 256> MakeTable() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kPoly : c >> 1;
    t[i] = c;
  }
  return t;
}
constexpr std::array<uint32_t, 256> kTable = MakeTable();

uint32_t Crc32cTable(uint32_t crc, const uint8_t* p, size_t len) {
  crc = ~crc;
  while (len--) crc = kTable[(crc ^ *p++) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

#if defined(__x86_64__)
// One crc32 instruction takes 3 cycles to give its result and a new one can start each cycle, so
// a buffer of at least 3 * kStripe bytes is taken as three stripes at once, whose registers are
// then joined: the register after A then B is Shift(register after A) ^ (register of B from 0),
// Shift being what kStripe zero bytes do to a register (linear: a table per byte of it).
constexpr size_t kStripe = 256;

__attribute__((target("sse4.2"))) uint64_t Crc32cHwRun(uint64_t c, const uint8_t* p, size_t len) {
  for (; len >= 8; p += 8, len -= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    c = _mm_crc32_u64(c, v);
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  while (len--) c32 = _mm_crc32_u8(c32, *p++);
  return c32;
}

struct StripeShift {
  uint32_t t[4][256];
  StripeShift() {
    const uint8_t zeros[kStripe] = {};
    for (int k = 0; k < 4; ++k)
      for (uint32_t b = 0; b < 256; ++b)
        t[k][b] = static_cast<uint32_t>(Crc32cHwRun(b << (8 * k), zeros, kStripe));
  }
  uint32_t operator()(uint32_t c) const {
    return t[0][c & 0xFF] ^ t[1][(c >> 8) & 0xFF] ^ t[2][(c >> 16) & 0xFF] ^ t[3][c >> 24];
  }
};

__attribute__((target("sse4.2"))) uint32_t Crc32cHw(uint32_t crc, const uint8_t* p, size_t len) {
  uint64_t c = ~crc;
  if (len >= 3 * kStripe) {
    static const StripeShift shift;
    do {
      uint64_t c1 = 0, c2 = 0;
      for (size_t i = 0; i < kStripe; i += 8) {
        uint64_t v0, v1, v2;
        std::memcpy(&v0, p + i, 8);
        std::memcpy(&v1, p + kStripe + i, 8);
        std::memcpy(&v2, p + 2 * kStripe + i, 8);
        c = _mm_crc32_u64(c, v0);
        c1 = _mm_crc32_u64(c1, v1);
        c2 = _mm_crc32_u64(c2, v2);
      }
      c = shift(shift(static_cast<uint32_t>(c)) ^ static_cast<uint32_t>(c1)) ^
          static_cast<uint32_t>(c2);
      p += 3 * kStripe;
      len -= 3 * kStripe;
    } while (len >= 3 * kStripe);
  }
  return ~static_cast<uint32_t>(Crc32cHwRun(c, p, len));
}

bool HaveSse42() {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
  return (c & bit_SSE4_2) != 0;
}
const bool kHaveSse42 = HaveSse42();
#endif

}  // namespace

uint32_t Crc32cPortable(uint32_t crc, const void* data, size_t len) {
  return Crc32cTable(crc, static_cast<const uint8_t*>(data), len);
}

uint32_t Crc32c(uint32_t crc, const void* data, size_t len) {
  const auto* p = static_cast<const uint8_t*>(data);
#if defined(__x86_64__)
  if (kHaveSse42) return Crc32cHw(crc, p, len);
#endif
  return Crc32cTable(crc, p, len);
}

}  // namespace spd
