// libFuzzer target: one whole NBD client session per input, against the real server stack
// (NbdServer, NbdConnection, Dispatcher, Pool, Volume) on an in-memory sim pool, through a
// socketpair and the reactor. nbd_fuzz covers the sans-I/O protocol engine; this one covers
// what wraps it: partial reads, payload reception (buffered and direct), discarded payloads,
// backpressure, replies that do not fit the socket, and every way a connection closes.
//
// Input layout. The session bytes are read from the front; control bytes are taken from the
// back, so that the protocol stream stays contiguous (mutations and dictionary insertions work
// on it as on a plain byte stream) and a seed is a recorded session plus a short trailer:
//   last byte: session config (kCfg* bits below), followed with kCfgShutdown by the index of
//   the piece before which the server shuts down;
//   then, per piece, one control byte, taken before the piece is sent:
//     bits 0-4  piece size: kPieceBytes[v] for v < 30, 30 = the rest of the stream,
//               31 = filler: (1 + next control byte) * 4 KiB of zeros, not taken from the input
//               (so that large write payloads are reachable with short inputs);
//     bit 5     leave the server's output unread after this piece (replies pile up);
//     bits 6-7  reactor ticks after the piece: 0, 1, 4 or 32 (0 lets pieces coalesce).
// fuzz/gen_nbd_conn_corpus.py writes seeds in this layout.
//
// Must never crash, assert, leak or hang. Each input must leave no state behind: the
// connection is gone (server connection count back to 0) and the pool holds no data.
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common/log.h"
#include "dispatch/dispatcher.h"
#include "frontend/nbd/nbd_server.h"
#include "io/io_backend.h"
#include "reactor/reactor.h"
#include "volume/pool.h"
#include "volume/volume_manager.h"

namespace spd {
namespace {

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * kKiB;

// Session config bits (the last input byte).
constexpr uint8_t kCfgEpoll = 1 << 0;      // the epoll reactor, else io_uring (when available)
constexpr uint8_t kCfgTight = 1 << 1;      // the server with tiny limits
constexpr uint8_t kCfgSmallBufs = 1 << 2;  // small socket buffers: sends hit EAGAIN early
// End with shutdown(SHUT_WR) and read every reply until the server closes; else close at once,
// replies still pending (the server's sends then fail).
constexpr uint8_t kCfgHalfClose = 1 << 3;
// A server of its own for this session, shut down (NbdServer::Shutdown) before the piece whose
// index is the next control byte: the connection is drained mid-session.
constexpr uint8_t kCfgShutdown = 1 << 4;

constexpr size_t kPieceBytes[30] = {1,  2,  3,  4,   5,   6,   7,   8,    9,    10,
                                    11, 12, 13, 14,  15,  16,  18,  20,   24,   28,
                                    32, 48, 64, 100, 128, 256, 512, 1024, 4096, 16384};
constexpr uint8_t kPieceRest = 30;
constexpr uint8_t kPieceFiller = 31;
constexpr uint8_t kCtlNoRead = 1 << 5;
constexpr int kTicks[4] = {0, 1, 4, 32};

// Reactor ticks without progress (no byte moved either way) after which the server counts as
// hung. The sim backend completes I/O within a tick or two; a healthy session never needs this.
constexpr int kIdleTicksMax = 20000;

// SPD_FUZZ_DEBUG=1: the server logs at debug level and the client says what it does.
bool debug_trace = false;
#define TRACE(...)                                      \
  do {                                                  \
    if (debug_trace) std::fprintf(stderr, __VA_ARGS__); \
  } while (0)

[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr, "nbd_conn_fuzz: %s\n", what);
  __builtin_trap();
}

// One server stack on one reactor. Two are built (io_uring and epoll), once per process.
struct Stack {
  std::unique_ptr<Reactor> reactor;
  std::unique_ptr<Pool> pool;
  std::unique_ptr<Dispatcher> dispatcher;
  std::unique_ptr<VolumeManager> volumes;  // the servers' export list (before them: outlives them)
  // Generous limits, and tiny ones (backpressure, TOO_BIG payloads, direct receive into the
  // request buffer with a small receive buffer).
  NbdServerOptions options[2];
  std::unique_ptr<NbdServer> servers[2];
  uint64_t chunks_free = 0;  // with every volume empty
};

void Check(const Status& s, const char* what) {
  if (s.ok()) return;
  std::fprintf(stderr, "nbd_conn_fuzz: %s: %s\n", what, s.ToString().c_str());
  std::abort();
}

std::unique_ptr<Stack> BuildStack(bool epoll) {
  auto st = std::make_unique<Stack>();
  ReactorOptions ro;
  ro.force_epoll = epoll;
  ro.ring_entries = 256;
  auto r = Reactor::Create(ro);
  Check(r.status(), "reactor");
  st->reactor = std::move(r).value();
  BackendOptions bo;
  bo.kind = BackendKind::kSim;
  // Small enough that a few dozen writes to distinct chunks fill it (ENOSPC replies).
  bo.size_bytes = 2 * kMiB;
  auto backend = OpenBackend(bo, st->reactor.get());
  Check(backend.status(), "sim backend");
  PoolOptions po;
  po.chunk_size_bytes = 64 * kKiB;  // chunk boundaries within reach of small requests
  po.log_size_bytes = 256 * kKiB;
  auto pool = Pool::Create(std::move(backend).value(), st->reactor.get(), po);
  Check(pool.status(), "pool");
  st->pool = std::move(pool).value();
  // vol0 is the default export. Every writable volume is thin beyond the pool.
  Check(st->pool->CreateVolume("vol0", 8 * kMiB).status(), "vol0");
  Check(st->pool->CreateVolume("ro", 1 * kMiB, Durability::kFlush, true).status(), "ro");
  Check(st->pool->CreateVolume("big", 1024 * kMiB).status(), "big");
  Check(st->pool->CreateVolume("sync", 2 * kMiB, Durability::kSync).status(), "sync");
  st->chunks_free = st->pool->stats().chunks_free;
  st->dispatcher = std::make_unique<Dispatcher>(st->pool.get(), DispatcherOptions{});
  st->volumes = std::make_unique<VolumeManager>(st->pool.get());

  NbdServerOptions& roomy = st->options[0];
  roomy.connections_max = 1;
  roomy.conn_inflight_max = 16;
  roomy.conn_inflight_bytes_max = 4 * kMiB;
  roomy.request_bytes_max = 2 * kMiB;
  roomy.recv_buffer_bytes = 64 * kKiB;
  NbdServerOptions& tight = st->options[1];
  tight.connections_max = 1;
  tight.conn_inflight_max = 2;
  tight.conn_inflight_bytes_max = 64 * kKiB;
  tight.request_bytes_max = 128 * kKiB;
  tight.recv_buffer_bytes = 4 * kKiB;
  for (int i = 0; i < 2; ++i) {
    st->servers[i] = std::make_unique<NbdServer>(st->reactor.get(), st->dispatcher.get(),
                                                 st->volumes.get(), st->options[i]);
    Check(st->servers[i]->Start(), "server");
  }
  return st;
}

// The client side of one session.
class Session {
 public:
  Session(Stack* st, NbdServer* server, int fd) : st_(st), server_(server), fd_(fd) {}
  ~Session() {
    if (fd_ >= 0) close(fd_);
  }

  void Tick() { st_->reactor->RunOnce(0); }

  // Reads (and discards) whatever the server sent; true when some bytes came.
  bool ReadOutput() {
    bool got = false;
    while (!eof_) {
      uint8_t buf[16 * 1024];
      ssize_t n = recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) {
        TRACE("client: received %zd bytes\n", n);
        got = true;
        // Light check: the session opens with the fixed newstyle greeting.
        for (ssize_t i = 0; i < n && seen_ < 8; ++i, ++seen_)
          if (buf[i] != "NBDMAGIC"[seen_]) Fail("the server's output does not start with NBDMAGIC");
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) break;
      TRACE("client: EOF\n");
      eof_ = true;  // 0, or ECONNRESET: the server closed its end
    }
    return got;
  }

  // Sends `len` bytes; gives up when the server has closed. The server must keep reading while
  // we keep reading its replies: it stops only for backpressure, which our reading relieves.
  void Send(const uint8_t* p, size_t len) {
    TRACE("client: sending %zu bytes\n", len);
    int idle = 0;
    while (len > 0 && !peer_gone_) {
      ssize_t n = send(fd_, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        p += n;
        len -= static_cast<size_t>(n);
        idle = 0;
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno != EAGAIN) {
        TRACE("client: send: %s\n", strerror(errno));
        peer_gone_ = true;  // EPIPE, ECONNRESET: the server closed the connection
        return;
      }
      Tick();
      if (ReadOutput()) idle = 0;
      if (++idle > kIdleTicksMax) Fail("the server stopped reading a client that reads");
    }
  }

  // Half-close: the server must answer what it has and close.
  void FinishReading() {
    if (shutdown(fd_, SHUT_WR) < 0) return;
    int idle = 0;
    while (!eof_) {
      Tick();
      if (ReadOutput()) idle = 0;
      if (++idle > kIdleTicksMax) Fail("the server did not close after the client's EOF");
    }
  }

  // Closes our end; the server must drop the connection and free everything it held.
  void CloseAndWait() {
    close(fd_);
    fd_ = -1;
    for (int i = 0; server_->connections() > 0; ++i) {
      if (i > kIdleTicksMax) Fail("the connection outlived its client");
      Tick();
    }
  }

 private:
  Stack* st_;
  NbdServer* server_;
  int fd_;
  size_t seen_ = 0;  // greeting bytes checked
  bool eof_ = false;
  bool peer_gone_ = false;
};

// Runs `io` on `v` and drives the reactor until it is done.
void RunVolumeIo(Stack* st, Volume* v, VolumeIo* io) {
  bool done = false;
  io->ctx = &done;
  io->done = [](VolumeIo* vio) { *static_cast<bool*>(vio->ctx) = true; };
  v->Submit(io);
  int ticks = 0;
  while (!done) {  // `done` is set by the completion, inside RunOnce
    if (++ticks > kIdleTicksMax) Fail("a volume request of the reset did not complete");
    st->reactor->RunOnce(0);
  }
  if (io->result != 0) Fail("a volume request of the reset failed");
}

// Leaves the pool as BuildStack made it, so that an input behaves the same whatever ran before
// (reads see zeros, the pool has room). Only when the input allocated something.
void ResetPool(Stack* st) {
  if (st->pool->stats().chunks_free == st->chunks_free) return;
  for (const VolumeInfo& vi : st->pool->ListVolumes()) {
    if (vi.read_only || vi.allocated_bytes == 0) continue;
    VolumeIo io;
    io.op = IoOp::kDiscard;
    io.length_bytes = static_cast<uint32_t>(vi.size_bytes);
    RunVolumeIo(st, st->pool->FindVolume(vi.name), &io);
  }
  // Freed chunks are zeroed in the background and come back with the next commit; a flush
  // makes one.
  for (int round = 0; st->pool->stats().chunks_free != st->chunks_free; ++round) {
    if (round > 100) Fail("the pool did not get its chunks back");
    VolumeIo io;
    io.op = IoOp::kFlush;
    RunVolumeIo(st, st->pool->FindVolume("vol0"), &io);
    for (int t = 0; t < 8; ++t) st->reactor->RunOnce(0);
  }
}

Stack* GetStack(bool epoll) {
  // Built once per process and never torn down: the fuzzer exits with them still alive, and
  // LeakSanitizer sees them through these pointers (reachable, not leaked).
  static Stack* uring = [] {
    // Quiet by default (a fuzzer runs thousands of sessions a second); SPD_FUZZ_DEBUG=1 shows
    // what the server makes of an input (negotiation, close reasons).
    const char* debug = std::getenv("SPD_FUZZ_DEBUG");
    debug_trace = debug != nullptr && debug[0] == '1';
    SetLogLevel(debug_trace ? LogLevel::kDebug : LogLevel::kError);
    return BuildStack(false).release();
  }();
  static Stack* epolled = BuildStack(true).release();
  return epoll ? epolled : uring;
}

}  // namespace
}  // namespace spd

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace spd;
  static const auto* zeros = new uint8_t[1 * kMiB]();
  size_t front = 0;
  size_t back = size;
  auto take_back = [&](uint8_t dflt) -> uint8_t { return back > front ? data[--back] : dflt; };

  const uint8_t cfg = take_back(0);
  Stack* st = GetStack(cfg & kCfgEpoll);
  const int kind = (cfg & kCfgTight) ? 1 : 0;
  NbdServer* server = st->servers[kind].get();
  std::unique_ptr<NbdServer> own;
  int shutdown_at = -1;
  bool shut = false;
  struct DoneTask : Task {
    bool ran = false;
  } shutdown_done;
  shutdown_done.fn = [](Task* t) { static_cast<DoneTask*>(t)->ran = true; };
  if (cfg & kCfgShutdown) {
    shutdown_at = take_back(0);
    // Cheap: no listener, the catalog only.
    own = std::make_unique<NbdServer>(st->reactor.get(), st->dispatcher.get(), st->volumes.get(),
                                      st->options[kind]);
    if (!own->Start().ok()) Fail("server start");
    server = own.get();
  }
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
    Fail("socketpair");
  if (cfg & kCfgSmallBufs) {
    // The kernel rounds these up to its minimum; replies of a few KiB already fill them.
    const int small = 4096;
    for (int fd : sv) {
      setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
      setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    }
  }
  if (!server->Adopt(sv[1], "fuzz").ok()) Fail("adopt");
  Session s(st, server, sv[0]);
  for (int piece_index = 0; front < back; ++piece_index) {
    if (piece_index == shutdown_at) {
      TRACE("client: server shutdown\n");
      server->Shutdown(&shutdown_done);
      shut = true;
    }
    const uint8_t ctl = data[--back];
    const uint8_t piece = ctl & 0x1f;
    if (piece == kPieceFiller) {
      s.Send(zeros, (1 + static_cast<size_t>(take_back(0))) * 4 * kKiB);
    } else {
      size_t n = piece == kPieceRest ? back - front : kPieceBytes[piece];
      n = std::min(n, back - front);
      s.Send(data + front, n);
      front += n;
    }
    for (int t = 0; t < kTicks[ctl >> 6]; ++t) s.Tick();
    if (!(ctl & kCtlNoRead)) s.ReadOutput();
  }
  // A shutdown planned past the last piece happens now, with the session still open.
  if (own && !shut) {
    TRACE("client: server shutdown\n");
    server->Shutdown(&shutdown_done);
  }
  // No tick here: the last piece's control byte decides whether the server sees it before the
  // client goes (0 ticks: requests and EOF arrive together, replies fail on a closed socket).
  if (cfg & kCfgHalfClose) s.FinishReading();
  s.CloseAndWait();
  if (own) {
    for (int t = 0; !shutdown_done.ran; ++t) {
      if (t > kIdleTicksMax) Fail("the server's shutdown did not finish");
      st->reactor->RunOnce(0);
    }
    own.reset();
  }
  // A connection closes only once its requests are answered: nothing of it is left in a volume.
  for (const VolumeInfo& vi : st->pool->ListVolumes())
    if (st->pool->FindVolume(vi.name)->inflight() != 0) Fail("a closed connection left volume I/O");
  ResetPool(st);
  return 0;
}
