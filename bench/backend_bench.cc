// backend_bench: drives one IoBackend with 4 KiB random reads or writes at a fixed queue depth
// on one reactor, and prints IOPS and CPU time per I/O (user+sys of this process).
//
//   backend_bench --backend uring --path /dev/shm/f --rw randread --qd 32 --seconds 5
#include <sys/resource.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "io/io_backend.h"

namespace {

double CpuSeconds() {
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

struct Job {
  spd::BackendIo io;
  void* buf;
};

}  // namespace

int main(int argc, char** argv) {
  std::string backend = "uring", path, rw = "randread";
  unsigned qd = 32;
  double seconds = 5;
  uint32_t bs = 4096;
  bool fixed = false;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--backend")
      backend = v;
    else if (k == "--path")
      path = v;
    else if (k == "--rw")
      rw = v;
    else if (k == "--qd")
      qd = static_cast<unsigned>(std::stoul(v));
    else if (k == "--seconds")
      seconds = std::stod(v);
    else if (k == "--bs")
      bs = static_cast<uint32_t>(std::stoul(v));
    else if (k == "--fixed")
      fixed = v == "1";
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  if (path.empty() || (rw != "randread" && rw != "randwrite") || qd == 0) {
    std::fprintf(stderr,
                 "usage: backend_bench --backend uring|posix --path FILE --rw randread|randwrite "
                 "[--qd N] [--seconds S] [--bs BYTES] [--fixed 1]\n");
    return 2;
  }
  auto kind = spd::ParseBackendKind(backend);
  if (!kind.ok()) {
    std::fprintf(stderr, "%s\n", kind.status().ToString().c_str());
    return 2;
  }
  spd::ReactorOptions ro;
  ro.force_epoll = kind.value() == spd::BackendKind::kPosix;
  auto reactor = spd::Reactor::Create(ro);
  if (!reactor.ok()) return 1;
  spd::BackendOptions bo;
  bo.kind = kind.value();
  bo.path = path;
  bo.queue_depth_max = qd;
  auto b = spd::OpenBackend(bo, reactor.value().get());
  if (!b.ok()) {
    std::fprintf(stderr, "%s\n", b.status().ToString().c_str());
    return 1;
  }
  spd::IoBackend* be = b.value().get();
  const uint64_t blocks = be->size_bytes() / bs;
  std::mt19937_64 rng(42);
  std::vector<Job> jobs(qd);
  struct Ctx {
    spd::IoBackend* be;
    std::mt19937_64* rng;
    uint64_t blocks;
    uint64_t done = 0;
    uint64_t errors = 0;
    bool stop = false;
  } ctx{be, &rng, blocks};
  for (auto& j : jobs) {
    if (posix_memalign(&j.buf, 4096, bs) != 0) return 1;
    std::memset(j.buf, 0xA5, bs);
    j.io.op = rw == "randread" ? spd::IoOp::kRead : spd::IoOp::kWrite;
    j.io.length_bytes = bs;
    j.io.buf = j.buf;
    j.io.ctx = &ctx;
    j.io.done = [](spd::BackendIo* io) {
      auto* c = static_cast<Ctx*>(io->ctx);
      c->done++;
      if (io->result < 0) c->errors++;
      if (!c->stop) {
        io->offset_bytes = ((*c->rng)() % c->blocks) * io->length_bytes;
        c->be->Submit(io);
      }
    };
  }
  if (fixed) {
    // Registered buffers: one per job.
    std::vector<iovec> iov;
    for (auto& j : jobs) iov.push_back({j.buf, bs});
    spd::Status rs = be->RegisterBuffers(iov.data(), static_cast<unsigned>(iov.size()));
    if (!rs.ok()) {
      std::fprintf(stderr, "%s\n", rs.ToString().c_str());
      return 1;
    }
    for (size_t i = 0; i < jobs.size(); ++i) jobs[i].io.buf_index = static_cast<int16_t>(i);
  }
  const uint64_t start = spd::MonotonicNs();
  const double cpu0 = CpuSeconds();
  for (auto& j : jobs) {
    j.io.offset_bytes = (rng() % blocks) * bs;
    be->Submit(&j.io);
  }
  const uint64_t end_ns = start + static_cast<uint64_t>(seconds * 1e9);
  while (spd::MonotonicNs() < end_ns) reactor.value()->RunOnce(1'000'000);
  ctx.stop = true;
  const uint64_t counted = ctx.done;
  const double elapsed = static_cast<double>(spd::MonotonicNs() - start) / 1e9;
  const double cpu = CpuSeconds() - cpu0;
  while (be->stats().inflight > 0) reactor.value()->RunOnce(1'000'000);
  std::printf("backend=%s rw=%s qd=%u iops=%.0f cpu_us_per_io=%.2f errors=%llu\n", backend.c_str(),
              rw.c_str(), qd, static_cast<double>(counted) / elapsed,
              cpu * 1e6 / static_cast<double>(counted ? counted : 1),
              static_cast<unsigned long long>(ctx.errors));
  for (auto& j : jobs) std::free(j.buf);
  return ctx.errors ? 1 : 0;
}
