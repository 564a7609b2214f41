// Small wrappers of the kernel's clocks and random source shared by components.
//
// Thread-safety: reentrant (no shared state).
#pragma once

#include <time.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace spd {

// `clock`'s reading in nanoseconds (CLOCK_MONOTONIC, CLOCK_REALTIME, CLOCK_BOOTTIME...).
uint64_t ClockNs(clockid_t clock);

// `bytes` bytes from the kernel's cryptographic random source (getrandom(2), retried on
// EINTR and short reads), as 2 * `bytes` lower-case hex digits: tokens, ids, nonces.
std::string RandomHex(size_t bytes);

// Names the calling thread (what top -H, perf and gdb show; /proc/PID/task/TID/comm), cut to
// the kernel's 15 bytes: "spd-reactor1", "spd-replication". Best effort: a failure is ignored.
void NameThisThread(const char* name);

}  // namespace spd
