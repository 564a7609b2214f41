#include "daemon/check.h"

#include <cstdio>
#include <cstring>
#include <string>

#include "volume/pool.h"

namespace spd {

int RunCheck(int argc, char** argv) {
  std::string path;
  bool repair = false;
  for (int i = 2; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--repair")) {
      repair = true;
    } else if (!std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h")) {
      std::printf(
          "spd2 check POOL [--repair]\n\n"
          "Verifies a pool offline: both superblock copies, the checkpoints, the metadata log\n"
          "and the allocation map. Writes nothing unless --repair; --repair only rewrites a\n"
          "corrupt superblock copy from the good one, which can never make a pool worse.\n"
          "Run it on a pool no spd2 is serving.\n\n"
          "Exit codes: 0 consistent, 1 problems found, 2 bad usage, 3 cannot read the pool.\n");
      return 0;
    } else if (path.empty()) {
      path = argv[i];
    } else {
      std::fprintf(stderr, "spd2 check: unexpected argument '%s'\n", argv[i]);
      return 2;
    }
  }
  if (path.empty()) {
    std::fprintf(stderr, "spd2 check: which pool? usage: spd2 check POOL [--repair]\n");
    return 2;
  }
  ReactorOptions ro;
  ro.force_epoll = true;  // a check needs no fast path
  auto reactor = Reactor::Create(ro);
  if (!reactor.ok()) {
    std::fprintf(stderr, "spd2 check: %s\n", reactor.status().ToString().c_str());
    return 3;
  }
  BackendOptions bo;
  bo.kind = BackendKind::kPosix;
  bo.path = path;
  bo.posix_threads = 1;
  auto backend = OpenBackend(bo, reactor.value().get());
  if (!backend.ok()) {
    std::fprintf(stderr, "spd2 check: %s\n", backend.status().ToString().c_str());
    return 3;
  }
  auto rep = Pool::Check(std::move(backend).value(), reactor.value().get(), repair);
  if (!rep.ok()) {
    std::fprintf(stderr, "spd2 check: %s\n", rep.status().ToString().c_str());
    return 3;
  }
  const PoolCheckReport& r = rep.value();
  std::printf("pool %s\n", path.c_str());
  std::printf("  superblock A: %s, B: %s\n", r.superblock_ok[0] ? "ok" : "BAD",
              r.superblock_ok[1] ? "ok" : "BAD");
  if (r.format_version != 0)
    std::printf("  format version %u, volume table of %u slots\n", r.format_version, r.volumes_max);
  std::printf("  checkpoint sequence %llu, %llu log block(s) replayed\n",
              static_cast<unsigned long long>(r.checkpoint_seq),
              static_cast<unsigned long long>(r.log_blocks_replayed));
  if (!r.log_end.empty()) std::printf("  log ends at %s\n", r.log_end.c_str());
  std::printf("  %llu volume(s), %llu of %llu chunks free\n",
              static_cast<unsigned long long>(r.volumes),
              static_cast<unsigned long long>(r.chunks_free),
              static_cast<unsigned long long>(r.chunks_total));
  for (const std::string& p : r.problems) std::printf("  PROBLEM: %s\n", p.c_str());
  for (const std::string& p : r.repaired) std::printf("  REPAIRED: %s\n", p.c_str());
  bool clean = r.problems.empty() || (r.repaired.size() == r.problems.size());
  std::printf("%s\n", clean ? "consistent" : "problems found");
  return clean ? 0 : 1;
}

}  // namespace spd
