// spd_crash: the crash-consistency sweep from the command line.
//   spd_crash [--seed N] [--seeds N] [--ops N] [--states N] [--states-min N]
// (--exhaustive D: also every sequence of up to D operations of 8 kinds, run first.
// --states: crash states taken at each device flush; --states-min: run more seeds until at
// least that many crash states were checked, the sequences' included — CI's two processes
// check 100000 between them.)
// A failure prints the seed; `spd_crash --seed N --seeds 1` replays it exactly.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "common/counters.h"
#include "testing/crash_harness.h"

int main(int argc, char** argv) {
  spd::testing::CrashSweepOptions o;
  o.verbose = true;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    uint64_t v = std::strtoull(argv[i + 1], nullptr, 10);
    if (k == "--seed")
      o.first_seed = v;
    else if (k == "--seeds")
      o.seeds = v;
    else if (k == "--ops")
      o.ops_per_seed = static_cast<int>(v);
    else if (k == "--states")
      o.states_per_boundary = static_cast<int>(v);
    else if (k == "--states-min")
      o.states_min = v;
    else if (k == "--exhaustive")
      o.exhaustive_depth = static_cast<int>(v);
    else {
      std::fprintf(stderr,
                   "usage: spd_crash [--seed N] [--seeds N] [--ops N] [--states N] [--states-min "
                   "N] [--exhaustive DEPTH]\n");
      return 2;
    }
  }
  auto r = spd::testing::RunCrashSweep(o);
  std::printf(
      "crash sweep: %llu seeds + %llu exhaustive sequences, %llu crash states in %.1f s (%.0f "
      "states/s), %llu failed\n",
      static_cast<unsigned long long>(r.seeds_run),
      static_cast<unsigned long long>(r.sequences_run),
      static_cast<unsigned long long>(r.crash_states), r.seconds,
      r.crash_states / (r.seconds > 0 ? r.seconds : 1),
      static_cast<unsigned long long>(r.failures));
  std::printf(
      "pool paths exercised: %llu commits, %llu overlapping flushes, %llu checkpoints, %llu "
      "remote-path writes, %llu owner-path messages to the pool\n",
      static_cast<unsigned long long>(r.commits),
      static_cast<unsigned long long>(spd::CounterValue("spd_pool_overlap_flushes_total")),
      static_cast<unsigned long long>(r.checkpoints),
      static_cast<unsigned long long>(spd::CounterValue("spd_volume_remote_requests_total")),
      static_cast<unsigned long long>(spd::CounterValue("spd_volume_owner_pool_messages_total")));
  if (r.failures) std::printf("first failure: %s\n", r.first_failure.c_str());
  return r.failures ? 1 : 0;
}
