// Test helpers for the NBD protocol engine: a byte builder written
// independently of the engine's own encoders (so a wrong encoder cannot agree
// with itself), and a small catalog.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "frontend/nbd/proto/nbd_handshake.h"

namespace spd::nbd::testing {

class Bytes {
 public:
  Bytes& U8(uint8_t v) {
    b_.push_back(v);
    return *this;
  }
  Bytes& U16(uint16_t v) { return U8(static_cast<uint8_t>(v >> 8)).U8(static_cast<uint8_t>(v)); }
  Bytes& U32(uint32_t v) {
    return U16(static_cast<uint16_t>(v >> 16)).U16(static_cast<uint16_t>(v));
  }
  Bytes& U64(uint64_t v) {
    return U32(static_cast<uint32_t>(v >> 32)).U32(static_cast<uint32_t>(v));
  }
  Bytes& Str(std::string_view s) {
    b_.insert(b_.end(), s.begin(), s.end());
    return *this;
  }
  Bytes& Zeroes(size_t n) {
    b_.insert(b_.end(), n, 0);
    return *this;
  }
  Bytes& Append(const Bytes& o) {
    b_.insert(b_.end(), o.b_.begin(), o.b_.end());
    return *this;
  }
  // Client side: an option with its data.
  Bytes& Option(uint32_t opt, const Bytes& data = {}) {
    U64(0x49484156454F5054ull).U32(opt).U32(static_cast<uint32_t>(data.size()));
    return Append(data);
  }
  // Server side: an option reply with its data.
  Bytes& OptReply(uint32_t opt, uint32_t type, const Bytes& data = {}) {
    U64(0x3e889045565a9ull).U32(opt).U32(type).U32(static_cast<uint32_t>(data.size()));
    return Append(data);
  }
  Bytes& OptError(uint32_t opt, uint32_t type, std::string_view message) {
    return OptReply(opt, type, Bytes().Str(message));
  }
  size_t size() const { return b_.size(); }
  const uint8_t* data() const { return b_.data(); }
  const std::vector<uint8_t>& vec() const { return b_; }

 private:
  std::vector<uint8_t> b_;
};

// The greeting every session starts with: NBDMAGIC, IHAVEOPT, FIXED_NEWSTYLE |
// NO_ZEROES.
inline Bytes Greeting() {
  return Bytes().U64(0x4e42444d41474943ull).U64(0x49484156454F5054ull).U16(3);
}

// vol0: the default, read-write, default size constraints, a description.
// ro:   read-only, 8 KiB, 512-byte blocks, 1 MiB maximum payload, no
// description. al:   read-write, 1 MiB + 100 bytes, 512-byte blocks, 64 KiB
// maximum payload. bare: read-write, 1 MiB, no
// FUA/flush/trim/zeroes/cache/multi-conn, rotational.
class TestCatalog : public ExportCatalog {
 public:
  TestCatalog() {
    vol0.name = "vol0";
    vol0.description = "first volume";
    vol0.size_bytes = 1ull << 30;
    ro.name = "ro";
    ro.size_bytes = 8192;
    ro.read_only = true;
    ro.block_min_bytes = 512;
    ro.block_max_bytes = 1 << 20;
    al.name = "al";
    al.size_bytes = (1 << 20) + 100;
    al.block_min_bytes = 512;
    al.block_max_bytes = 64 * 1024;
    bare.name = "bare";
    bare.size_bytes = 1 << 20;
    bare.can_trim = bare.can_write_zeroes = bare.can_fast_zero = bare.can_cache = false;
    bare.can_multi_conn = bare.can_flush = bare.can_fua = false;
    bare.rotational = true;
  }
  const Export* Find(std::string_view name) const override {
    if (name.empty() || name == vol0.name) return &vol0;
    for (const Export* e : {&ro, &al, &bare})
      if (name == e->name) return e;
    return nullptr;
  }
  std::vector<const Export*> List() const override { return {&vol0, &ro, &al, &bare}; }

  Export vol0, ro, al, bare;
};

}  // namespace spd::nbd::testing
