// Assertions for programmer errors. They stay on in release builds (TigerBeetle's habit): a
// broken invariant in a storage system must stop the process before it writes wrong data.
// Bad input from clients, files or the network is never asserted on; it is an operating error.
#pragma once

namespace spd {
[[noreturn]] void AssertFail(const char* expr, const char* file, int line, const char* msg);
}

#define SPD_ASSERT(cond)                                                                     \
  do {                                                                                       \
    if (__builtin_expect(!(cond), 0)) ::spd::AssertFail(#cond, __FILE__, __LINE__, nullptr); \
  } while (0)

#define SPD_ASSERT_MSG(cond, msg)                                                          \
  do {                                                                                     \
    if (__builtin_expect(!(cond), 0)) ::spd::AssertFail(#cond, __FILE__, __LINE__, (msg)); \
  } while (0)
