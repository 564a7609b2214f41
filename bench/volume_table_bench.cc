// volume_table_bench: what the size of a pool's volume table costs. Formats a pool on a file
// (sparse, the daemon's default geometry unless told otherwise), creates N volumes one after
// the other (each create commits one checkpoint, whose size grows with volumes_max), closes the
// pool, opens it again, and prints the times.
//
//   volume_table_bench --path /dev/shm/vt.img --volumes 1000 --volumes-max 4096
//
// Options: --backend uring|posix (uring falls back to posix on an epoll reactor), --size 16G
// (bytes, K/M/G suffixes), --chunk 1M, --volumes N, --volumes-max N, --deletes N (deleted after
// the reopen, timed too). The file is overwritten, and left behind for `spd2 check`.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "io/io_backend.h"
#include "volume/pool.h"
#include "volume/pool_format.h"

namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

uint64_t ParseBytes(const std::string& s) {
  char* end = nullptr;
  uint64_t v = std::strtoull(s.c_str(), &end, 10);
  switch (*end) {
    case 'K':
      return v << 10;
    case 'M':
      return v << 20;
    case 'G':
      return v << 30;
    case 'T':
      return v << 40;
    default:
      return v;
  }
}

void PrintLatencies(const char* what, std::vector<double> us, double total_s) {
  std::sort(us.begin(), us.end());
  double sum = 0;
  for (double u : us) sum += u;
  auto pct = [&](double p) {
    return us[std::min(us.size() - 1, static_cast<size_t>(p * us.size()))];
  };
  std::printf("%s: %zu in %.3f s; per call mean %.0f us, p50 %.0f, p99 %.0f, max %.0f\n", what,
              us.size(), total_s, sum / us.size(), pct(0.5), pct(0.99), us.back());
}

}  // namespace

int main(int argc, char** argv) {
  std::string path, backend = "uring";
  uint64_t size = 16ull << 30, chunk = 1 << 20;
  uint32_t volumes = 1000, volumes_max = spd::pool_format::kVolumesMaxDefault, deletes = 100;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--path") {
      path = v;
    } else if (k == "--backend") {
      backend = v;
    } else if (k == "--size") {
      size = ParseBytes(v);
    } else if (k == "--chunk") {
      chunk = ParseBytes(v);
    } else if (k == "--volumes") {
      volumes = static_cast<uint32_t>(std::stoul(v));
    } else if (k == "--volumes-max") {
      volumes_max = static_cast<uint32_t>(std::stoul(v));
    } else if (k == "--deletes") {
      deletes = static_cast<uint32_t>(std::stoul(v));
    } else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  if (path.empty()) {
    std::fprintf(stderr, "usage: volume_table_bench --path FILE [--volumes N] [--volumes-max N]\n");
    return 2;
  }
  auto r = spd::Reactor::Create(spd::ReactorOptions{});
  if (!r.ok()) {
    std::fprintf(stderr, "reactor: %s\n", r.status().ToString().c_str());
    return 1;
  }
  std::unique_ptr<spd::Reactor> reactor = std::move(r).value();
  auto kind = spd::ParseBackendKind(backend);
  if (!kind.ok()) {
    std::fprintf(stderr, "%s\n", kind.status().ToString().c_str());
    return 2;
  }
  spd::BackendOptions bo;
  bo.kind = spd::ChooseBackendKind(kind.value(), *reactor);
  bo.path = path;
  bo.size_bytes = size;
  bo.create = true;
  std::remove(path.c_str());
  auto b = spd::OpenBackend(bo, reactor.get());
  if (!b.ok()) {
    std::fprintf(stderr, "backend: %s\n", b.status().ToString().c_str());
    return 1;
  }
  spd::PoolOptions po;
  po.chunk_size_bytes = static_cast<uint32_t>(chunk);
  po.volumes_max = volumes_max;
  double t0 = Now();
  auto created = spd::Pool::Create(std::move(b).value(), reactor.get(), po);
  if (!created.ok()) {
    std::fprintf(stderr, "create: %s\n", created.status().ToString().c_str());
    return 1;
  }
  std::unique_ptr<spd::Pool> pool = std::move(created).value();
  spd::pool_format::Superblock sb;
  if (!pool->backend()->ReadSync(0, &sb, sizeof sb).ok()) return 1;
  std::printf(
      "pool %s (%s): %llu bytes, %llu chunks, volumes_max %u, checkpoint %llu bytes; "
      "format %.3f s\n",
      path.c_str(), spd::BackendKindName(bo.kind), static_cast<unsigned long long>(size),
      static_cast<unsigned long long>(pool->stats().chunks_total), pool->volumes_max(),
      static_cast<unsigned long long>(sb.ckpt_bytes), Now() - t0);

  std::vector<double> us;
  t0 = Now();
  for (uint32_t i = 0; i < volumes; ++i) {
    const double s = Now();
    auto v = pool->CreateVolume("vol-" + std::to_string(i), 1ull << 30);
    if (!v.ok()) {
      std::fprintf(stderr, "create volume %u: %s\n", i, v.status().ToString().c_str());
      return 1;
    }
    us.push_back((Now() - s) * 1e6);
  }
  PrintLatencies("create", us, Now() - t0);

  t0 = Now();
  pool.reset();
  const double close_s = Now() - t0;
  bo.create = false;
  b = spd::OpenBackend(bo, reactor.get());
  if (!b.ok()) return 1;
  t0 = Now();
  auto opened = spd::Pool::Open(std::move(b).value(), reactor.get());
  if (!opened.ok()) {
    std::fprintf(stderr, "open: %s\n", opened.status().ToString().c_str());
    return 1;
  }
  pool = std::move(opened).value();
  std::printf("close %.3f s; reopen %.3f s, %zu volumes\n", close_s, Now() - t0,
              pool->ListVolumes().size());

  us.clear();
  t0 = Now();
  for (uint32_t i = 0; i < deletes && i < volumes; ++i) {
    const double s = Now();
    spd::Status st = pool->DeleteVolume("vol-" + std::to_string(i));
    if (!st.ok()) {
      std::fprintf(stderr, "delete: %s\n", st.ToString().c_str());
      return 1;
    }
    us.push_back((Now() - s) * 1e6);
  }
  if (!us.empty()) PrintLatencies("delete", us, Now() - t0);
  return 0;
}
