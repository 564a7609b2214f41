// Test fixture and helpers shared by the NBD server tests (nbd_server_test.cc,
// nbd_limits_test.cc): an in-process server on a sim pool, run on its own thread, reached
// with libnbd or with raw sockets.
#pragma once

#include "frontend/nbd/nbd_server.h"

#include <gtest/gtest.h>
#include <libnbd.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <future>
#include <random>
#include <thread>
#include <vector>

#include "common/counters.h"
#include "frontend/nbd/proto/nbd_format.h"
#include "reactor/reactor_group.h"

#if defined(__SANITIZE_ADDRESS__)
// From the sanitizer runtime (its header is not installed with every compiler).
extern "C" size_t __sanitizer_get_current_allocated_bytes();
#define SPD_HAVE_ALLOCATED_BYTES 1
#endif

#include "volume/volume_manager.h"

namespace spd {
// Anonymous: each test file gets its own copy; a helper one file does not use is fine.
namespace {

constexpr uint64_t kMiB = 1ull << 20;

class NbdServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> seq{0};
    sock_ = "/tmp/spd-nbd-test-" + std::to_string(getpid()) + "-" + std::to_string(seq++) + ".sock";
    std::promise<std::string> ready;
    auto ready_f = ready.get_future();
    thread_ = std::thread([this, &ready] { ServerThread(&ready); });
    std::string err = ready_f.get();
    ASSERT_EQ(err, "") << err;
  }

  void TearDown() override {
    if (reactor_ != nullptr) {
      struct StopTask : Task {
        NbdServerTest* t;
        Task done;
      };
      static StopTask stop;
      stop.t = this;
      stop.done.fn = [](Task*) { stop.t->reactor_->Stop(); };
      stop.fn = [](Task*) { stop.t->server_->Shutdown(&stop.done); };
      reactor_->Post(&stop);
      // Post() still reads the reactor (sleeping_, wake_fd_) after it has published the task, and
      // the task makes the server thread leave Run() and destroy the reactor: only now may it.
      posted_.set_value();
    }
    if (thread_.joinable()) thread_.join();
  }

  void ServerThread(std::promise<std::string>* ready) {
    ReactorOptions ro;
    TweakReactor(&ro);
    auto r = Reactor::Create(ro);
    if (!r.ok()) return ready->set_value(r.status().ToString());
    auto reactor = std::move(r).value();
    BackendOptions bo;
    bo.kind = BackendKind::kSim;
    bo.size_bytes = 256 * kMiB;
    TweakBackend(&bo);
    auto backend = OpenBackend(bo, reactor.get());
    if (!backend.ok()) return ready->set_value(backend.status().ToString());
    auto pool_or = Pool::Create(std::move(backend).value(), reactor.get(), PoolOptions{});
    if (!pool_or.ok()) return ready->set_value(pool_or.status().ToString());
    auto pool = std::move(pool_or).value();
    for (auto [name, size] : {std::pair<const char*, uint64_t>{"vol0", 64 * kMiB},
                              std::pair<const char*, uint64_t>{"vol1", 16 * kMiB}}) {
      auto v = pool->CreateVolume(name, size);
      if (!v.ok()) return ready->set_value(v.status().ToString());
    }
    NbdServerOptions no;
    no.unix_path = sock_;
    Tweak(&no);
    VolumeManager volumes(pool.get());
    // Connections on extra reactors reach the pool's by messages (the sim has no channels).
    auto group_or = ReactorGroup::Start(reactor.get(), ConnReactors(), ro);
    if (!group_or.ok()) return ready->set_value(group_or.status().ToString());
    auto group = std::move(group_or).value();
    std::vector<Reactor*> conn_reactors;
    for (unsigned i = 0; i < group->size(); ++i) conn_reactors.push_back(group->at(i));
    if (SpreadVolumes()) {
      if (Status s = pool->SetVolumeReactors(conn_reactors); !s.ok())
        return ready->set_value(s.ToString());
    }
    // After the group: the dispatcher's channels on owning reactors go before those reactors.
    Dispatcher dispatcher(pool.get(), DispatcherOptions{});
    NbdServer server(reactor.get(), &dispatcher, &volumes, no, conn_reactors);
    if (Status s = server.Start(); !s.ok()) return ready->set_value(s.ToString());
    reactor_ = reactor.get();
    server_ = &server;
    volumes_ = &volumes;
    auto posted_f = posted_.get_future();
    ready->set_value("");
    reactor->Run();
    posted_f.wait();  // TearDown's Post() has returned (see there)
    server_ = nullptr;
  }

  virtual void Tweak(NbdServerOptions*) {}
  virtual void TweakBackend(BackendOptions*) {}
  virtual void TweakReactor(ReactorOptions*) {}
  virtual unsigned ConnReactors() { return 1; }
  // Volumes spread over the connection reactors (Pool::SetVolumeReactors), as spd2 does.
  virtual bool SpreadVolumes() { return false; }
  void RunForcedDeleteWhileIoRuns(const std::vector<std::string>& left = {"vol0", "vol1"});

  nbd_handle* Connect(const char* exp = "vol0") {
    nbd_handle* h = nbd_create();
    EXPECT_NE(h, nullptr);
    nbd_add_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION);
    std::string uri = std::string("nbd+unix:///") + exp + "?socket=" + sock_;
    if (nbd_connect_uri(h, uri.c_str()) == -1) {
      ADD_FAILURE() << "connect: " << nbd_get_error();
      nbd_close(h);
      return nullptr;
    }
    return h;
  }

  // Server::Adopt(fd) on the server's reactor; returns its status.
  Status Adopt(int fd) {
    struct AdoptTask : Task {
      NbdServer* server;
      int fd;
      std::promise<Status> result;
    } t;
    t.server = server_;
    t.fd = fd;
    t.fn = [](Task* task) {
      auto* a = static_cast<AdoptTask*>(task);
      a->result.set_value(a->server->Adopt(a->fd, "adopted"));
    };
    auto f = t.result.get_future();
    reactor_->Post(&t);
    return f.get();
  }

  std::string sock_;
  std::thread thread_;
  std::promise<void> posted_;
  Reactor* reactor_ = nullptr;
  NbdServer* server_ = nullptr;
  VolumeManager* volumes_ = nullptr;  // called from the test thread: any-thread API
};

// Runs a manager call from the test thread and waits for its `done` (on the pool's reactor).
template <typename Fn>
Status ManagerCall(Fn fn) {
  std::promise<Status> p;
  auto f = p.get_future();
  fn([&p](Status s) { p.set_value(s); });
  if (f.wait_for(std::chrono::seconds(30)) != std::future_status::ready)
    return Status(StatusCode::kDeadlineExceeded, "manager call did not finish");
  return f.get();
}

// NBD_OPT_LIST on `h` (connected in opt mode) into *names; then aborts and closes `h`. False
// when the server refused the list.
[[maybe_unused]] bool ListAndClose(nbd_handle* h, std::vector<std::string>* names) {
  nbd_list_callback cb = {.callback =
                              [](void* user, const char* name, const char*) {
                                static_cast<std::vector<std::string>*>(user)->push_back(name);
                                return 0;
                              },
                          .user_data = names,
                          .free = nullptr};
  const int rc = nbd_opt_list(h, cb);
  nbd_opt_abort(h);
  nbd_close(h);
  return rc != -1;
}

[[maybe_unused]] std::vector<std::string> ListExports(const std::string& sock) {
  std::vector<std::string> names;
  nbd_handle* h = nbd_create();
  nbd_set_opt_mode(h, true);
  std::string uri = "nbd+unix:///?socket=" + sock;
  if (nbd_connect_uri(h, uri.c_str()) == -1) {
    ADD_FAILURE() << nbd_get_error();
    nbd_close(h);
    return names;
  }
  EXPECT_TRUE(ListAndClose(h, &names)) << "NBD_OPT_LIST refused";
  return names;
}

[[maybe_unused]] std::vector<uint8_t> Pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937 rng(seed);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

// Writes `n` bytes of Pattern(n, seed) at `off` through `h` and reads them back, equal.
[[maybe_unused]] void ExpectWriteReadBack(nbd_handle* h, size_t n, uint64_t off, uint32_t seed) {
  auto data = Pattern(n, seed);
  ASSERT_EQ(nbd_pwrite(h, data.data(), data.size(), off, 0), 0) << nbd_get_error();
  std::vector<uint8_t> back(data.size());
  ASSERT_EQ(nbd_pread(h, back.data(), back.size(), off, 0), 0) << nbd_get_error();
  EXPECT_TRUE(back == data);
}

// ---- Connection limits, timeouts and the memory budget ----

// A raw client socket to the server's unix socket (blocking), or -1.
[[maybe_unused]] int RawConnect(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::memcpy(sa.sun_path, path.c_str(), path.size());
  if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// True when the server closes `fd` within `ms` (bytes it sends first, the greeting, are read and
// dropped).
[[maybe_unused]] bool ClosedWithin(int fd, int ms) {
  const uint64_t end = MonotonicNs() + static_cast<uint64_t>(ms) * 1'000'000;
  uint8_t scratch[256];
  for (;;) {
    const uint64_t now = MonotonicNs();
    if (now >= end) return false;
    pollfd p{fd, POLLIN, 0};
    int r = poll(&p, 1, static_cast<int>((end - now) / 1'000'000) + 1);
    if (r <= 0) continue;
    ssize_t n = recv(fd, scratch, sizeof scratch, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return true;
  }
}

[[maybe_unused]] bool SendAll(int fd, const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  while (n > 0) {
    ssize_t k = send(fd, b, n, MSG_NOSIGNAL);
    if (k <= 0) return false;
    b += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}

[[maybe_unused]] bool RecvAll(int fd, void* p, size_t n) {
  auto* b = static_cast<uint8_t*>(p);
  while (n > 0) {
    ssize_t k = recv(fd, b, n, 0);
    if (k <= 0) return false;
    b += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}

[[maybe_unused]] void Put32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (24 - 8 * i));
}
[[maybe_unused]] void Put64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (56 - 8 * i));
}
[[maybe_unused]] uint32_t Get32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

// Negotiates `exp` with NBD_OPT_EXPORT_NAME over a raw socket (simple replies only); -1 on
// failure.
[[maybe_unused]] int RawNegotiate(const std::string& path, const char* exp) {
  int fd = RawConnect(path);
  if (fd < 0) return -1;
  uint8_t greet[18];
  if (!RecvAll(fd, greet, sizeof greet)) return close(fd), -1;
  uint8_t out[4 + 16 + 64];
  Put32(out, nbd::kClientFlagFixedNewstyle | nbd::kClientFlagNoZeroes);
  Put64(out + 4, nbd::kIHaveOpt);
  Put32(out + 12, nbd::kOptExportName);
  const uint32_t len = static_cast<uint32_t>(std::strlen(exp));
  Put32(out + 16, len);
  std::memcpy(out + 20, exp, len);
  uint8_t info[10];
  if (!SendAll(fd, out, 20 + len) || !RecvAll(fd, info, sizeof info)) return close(fd), -1;
  return fd;
}

// Sends one request (and `payload_len` zero bytes of payload for a write) and returns the NBD
// error of its simple reply, or -1 when the connection ended instead.
[[maybe_unused]] int64_t RawRequest(int fd, uint16_t type, uint64_t cookie, uint64_t offset,
                                    uint32_t length, uint64_t payload_len) {
  uint8_t h[28] = {};
  Put32(h, nbd::kRequestMagic);
  h[6] = static_cast<uint8_t>(type >> 8);
  h[7] = static_cast<uint8_t>(type);
  Put64(h + 8, cookie);
  Put64(h + 16, offset);
  Put32(h + 24, length);
  if (!SendAll(fd, h, sizeof h)) return -1;
  static std::vector<uint8_t> zeros(1 << 20);
  while (payload_len > 0) {
    size_t n = std::min<uint64_t>(payload_len, zeros.size());
    if (!SendAll(fd, zeros.data(), n)) return -1;
    payload_len -= n;
  }
  uint8_t r[16];
  if (!RecvAll(fd, r, sizeof r) || Get32(r) != nbd::kSimpleReplyMagic) return -1;
  return Get32(r + 4);
}

}  // namespace
}  // namespace spd
