#include "common/os_util.h"

#include <pthread.h>
#include <sys/random.h>

#include <cerrno>
#include <cstring>

#include "common/assert.h"

namespace spd {

uint64_t ClockNs(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return uint64_t(ts.tv_sec) * 1'000'000'000ull + uint64_t(ts.tv_nsec);
}

std::string RandomHex(size_t bytes) {
  std::string raw(bytes, '\0');
  size_t got = 0;
  while (got < bytes) {
    const ssize_t n = getrandom(raw.data() + got, bytes - got, 0);
    if (n > 0) {
      got += static_cast<size_t>(n);
    } else {
      SPD_ASSERT(n < 0 && errno == EINTR);  // the blocking source fails only on a signal
    }
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * bytes);
  for (unsigned char c : raw) {
    out += kHex[c >> 4];
    out += kHex[c & 15];
  }
  return out;
}

void NameThisThread(const char* name) {
  char cut[16] = {};
  std::memcpy(cut, name, strnlen(name, sizeof cut - 1));
  (void)pthread_setname_np(pthread_self(), cut);
}

}  // namespace spd
