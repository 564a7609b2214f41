// The cost per write of a copy's activity record (volume/replica_activity.h) on the data path:
// Record when a write is numbered, Trim when the watermark passes it, in memory and persisted
// (a file mapped shared), with a window of W writes in flight. Prints ns per write for each.
//
//   activity_bench [WRITES (default 20000000)] [WINDOW (default 32)] [DIR (default /tmp)]
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "volume/replica_activity.h"

namespace {

double NsPerWrite(spd::ReplicaActivity* a, uint64_t writes, uint64_t window) {
  a->Begin(1, true);
  const auto t0 = std::chrono::steady_clock::now();
  for (uint64_t seq = 1; seq <= writes; ++seq) {
    a->Record(1, seq, (seq * 7919 % 16384) << 16, 4096);
    if (seq > window) a->Trim(1, seq - window);
  }
  const auto t1 = std::chrono::steady_clock::now();
  return std::chrono::duration<double, std::nano>(t1 - t0).count() / static_cast<double>(writes);
}

}  // namespace

int main(int argc, char** argv) {
  const uint64_t writes = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 20'000'000;
  const uint64_t window = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 32;
  const std::string dir = argc > 3 ? argv[3] : "/tmp";
  spd::ReplicaActivity memory;
  spd::ReplicaActivity file;
  const std::string path = dir + "/activity_bench." + std::to_string(getpid());
  if (spd::Status s = file.Persist(path); !s.ok()) {
    std::fprintf(stderr, "persist: %s\n", s.ToString().c_str());
    return 1;
  }
  std::printf("writes %llu, window %llu\n", static_cast<unsigned long long>(writes),
              static_cast<unsigned long long>(window));
  for (int round = 0; round < 3; ++round) {
    const double m = NsPerWrite(&memory, writes, window);
    const double f = NsPerWrite(&file, writes, window);
    std::printf("round %d: in memory %.1f ns/write, persisted (%s) %.1f ns/write\n", round, m,
                path.c_str(), f);
  }
  unlink(path.c_str());
  return 0;
}
