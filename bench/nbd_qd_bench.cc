// Random reads (or writes) at a fixed queue depth through libnbd against any NBD URI, TLS ones
// included (fio's nbd engine refuses tls-psk-file URIs: libnbd forbids local files unless the
// caller allows them, and fio does not). Prints IOPS, MiB/s and CPU time of this process.
//   nbd_qd_bench URI [--bs 4096] [--qd 32] [--seconds 10] [--write] [--span BYTES]
#include <libnbd.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

double CpuSeconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s URI [--bs N] [--qd N] [--seconds N] [--write] [--span BYTES]\n",
                 argv[0]);
    return 2;
  }
  const char* uri = argv[1];
  uint64_t bs = 4096, span = 0;
  int qd = 32, seconds = 10;
  bool write = false;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--write") {
      write = true;
    } else if (i + 1 < argc && a == "--bs") {
      bs = std::strtoull(argv[++i], nullptr, 10);
    } else if (i + 1 < argc && a == "--qd") {
      qd = std::atoi(argv[++i]);
    } else if (i + 1 < argc && a == "--seconds") {
      seconds = std::atoi(argv[++i]);
    } else if (i + 1 < argc && a == "--span") {
      span = std::strtoull(argv[++i], nullptr, 10);
    } else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  nbd_handle* h = nbd_create();
  nbd_set_uri_allow_local_file(h, true);
  if (nbd_connect_uri(h, uri) == -1) {
    std::fprintf(stderr, "connect: %s\n", nbd_get_error());
    return 1;
  }
  const int64_t size = nbd_get_size(h);
  if (span == 0 || span > static_cast<uint64_t>(size)) span = static_cast<uint64_t>(size);
  const uint64_t blocks = span / bs;
  std::vector<std::vector<char>> bufs(qd, std::vector<char>(bs, 'x'));
  std::vector<int64_t> cookies(qd, 0);
  std::mt19937_64 rng(42);
  uint64_t done = 0;
  const double cpu0 = CpuSeconds();
  const auto t0 = std::chrono::steady_clock::now();
  const auto end = t0 + std::chrono::seconds(seconds);
  auto submit = [&](int slot) {
    const uint64_t off = (rng() % blocks) * bs;
    cookies[slot] = write ? nbd_aio_pwrite(h, bufs[slot].data(), bs, off, NBD_NULL_COMPLETION, 0)
                          : nbd_aio_pread(h, bufs[slot].data(), bs, off, NBD_NULL_COMPLETION, 0);
    if (cookies[slot] == -1) {
      std::fprintf(stderr, "submit: %s\n", nbd_get_error());
      std::exit(1);
    }
  };
  for (int i = 0; i < qd; ++i) submit(i);
  bool stopping = false;
  int live = qd;
  while (live > 0) {
    if (nbd_poll(h, -1) == -1) {
      std::fprintf(stderr, "poll: %s\n", nbd_get_error());
      return 1;
    }
    if (!stopping && std::chrono::steady_clock::now() >= end) stopping = true;
    for (int i = 0; i < qd; ++i) {
      if (cookies[i] == 0) continue;
      const int r = nbd_aio_command_completed(h, cookies[i]);
      if (r == 0) continue;
      if (r == -1) {
        std::fprintf(stderr, "request: %s\n", nbd_get_error());
        return 1;
      }
      ++done;
      cookies[i] = 0;
      if (stopping) {
        --live;
      } else {
        submit(i);
      }
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double cpu = CpuSeconds() - cpu0;
  std::printf("%s bs=%llu qd=%d: %.0f IOPS, %.1f MiB/s, client CPU %.2f s/s (%s)\n",
              write ? "write" : "read", static_cast<unsigned long long>(bs), qd, done / secs,
              done * bs / secs / (1 << 20), cpu / secs,
              nbd_get_tls_negotiated(h) == 1 ? "TLS" : "plaintext");
  nbd_shutdown(h, 0);
  nbd_close(h);
  return 0;
}
