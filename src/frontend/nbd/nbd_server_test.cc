// NBD server tests with a real client (libnbd) against an in-process server on a sim pool.
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

namespace spd {
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
    auto r = Reactor::Create(ReactorOptions{});
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
    Dispatcher dispatcher(pool.get(), DispatcherOptions{});
    VolumeManager volumes(pool.get());
    // Connections on extra reactors reach the pool's by messages (the sim has no channels).
    auto group_or = ReactorGroup::Start(reactor.get(), ConnReactors(), ReactorOptions{});
    if (!group_or.ok()) return ready->set_value(group_or.status().ToString());
    auto group = std::move(group_or).value();
    std::vector<Reactor*> conn_reactors;
    for (unsigned i = 0; i < group->size(); ++i) conn_reactors.push_back(group->at(i));
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
  virtual unsigned ConnReactors() { return 1; }
  void RunForcedDeleteWhileIoRuns();

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

std::vector<std::string> ListExports(const std::string& sock) {
  std::vector<std::string> names;
  nbd_handle* h = nbd_create();
  nbd_set_opt_mode(h, true);
  std::string uri = "nbd+unix:///?socket=" + sock;
  if (nbd_connect_uri(h, uri.c_str()) == -1) {
    ADD_FAILURE() << nbd_get_error();
    nbd_close(h);
    return names;
  }
  nbd_list_callback cb = {.callback =
                              [](void* user, const char* name, const char*) {
                                static_cast<std::vector<std::string>*>(user)->push_back(name);
                                return 0;
                              },
                          .user_data = &names,
                          .free = nullptr};
  EXPECT_NE(nbd_opt_list(h, cb), -1) << nbd_get_error();
  nbd_opt_abort(h);
  nbd_close(h);
  return names;
}

std::vector<uint8_t> Pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937 rng(seed);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

TEST_F(NbdServerTest, AdvertisesCapabilities) {
  nbd_handle* h = Connect();
  ASSERT_NE(h, nullptr);
  EXPECT_EQ(nbd_get_size(h), static_cast<int64_t>(64 * kMiB));
  EXPECT_EQ(nbd_can_multi_conn(h), 1);
  EXPECT_EQ(nbd_can_flush(h), 1);
  EXPECT_EQ(nbd_can_fua(h), 1);
  EXPECT_EQ(nbd_can_trim(h), 1);
  EXPECT_EQ(nbd_can_zero(h), 1);
  EXPECT_EQ(nbd_is_read_only(h), 0);
  EXPECT_EQ(nbd_get_structured_replies_negotiated(h), 1);
  EXPECT_EQ(nbd_can_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION), 1);
  EXPECT_GE(nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM), static_cast<int64_t>(32 * kMiB));
  nbd_close(h);
}

TEST_F(NbdServerTest, WriteReadRoundTripAcrossChunks) {
  nbd_handle* h = Connect();
  ASSERT_NE(h, nullptr);
  // 3 MiB starting 4 KiB before a 1 MiB chunk boundary, plus small writes.
  struct Case {
    uint64_t off;
    size_t len;
  };
  for (Case c : {Case{kMiB - 4096, 3 * kMiB}, Case{0, 4096}, Case{40 * kMiB, 128 * 1024},
                 Case{64 * kMiB - 8192, 8192}}) {
    auto data = Pattern(c.len, static_cast<uint32_t>(c.off));
    ASSERT_EQ(nbd_pwrite(h, data.data(), c.len, c.off, 0), 0) << nbd_get_error();
    std::vector<uint8_t> back(c.len);
    ASSERT_EQ(nbd_pread(h, back.data(), c.len, c.off, 0), 0) << nbd_get_error();
    EXPECT_EQ(back, data) << "offset " << c.off;
  }
  EXPECT_EQ(nbd_flush(h, 0), 0);
  nbd_close(h);
}

TEST_F(NbdServerTest, UnwrittenRangesReadZeroAndReportHoles) {
  nbd_handle* h = Connect();
  ASSERT_NE(h, nullptr);
  std::vector<uint8_t> buf(256 * 1024, 0xAA);
  ASSERT_EQ(nbd_pread(h, buf.data(), buf.size(), 10 * kMiB, 0), 0);
  EXPECT_TRUE(std::all_of(buf.begin(), buf.end(), [](uint8_t b) { return b == 0; }));
  auto data = Pattern(4096, 7);
  ASSERT_EQ(nbd_pwrite(h, data.data(), data.size(), 2 * kMiB, 0), 0);
  struct Seen {
    std::vector<std::pair<uint32_t, uint32_t>> extents;
  } seen;
  nbd_extent_callback cb = {.callback = [](void* user, const char* ctx, uint64_t off,
                                           uint32_t* entries, size_t n, int* err) -> int {
                              auto* s = static_cast<Seen*>(user);
                              for (size_t i = 0; i + 1 < n; i += 2)
                                s->extents.emplace_back(entries[i], entries[i + 1]);
                              return 0;
                            },
                            .user_data = &seen,
                            .free = nullptr};
  ASSERT_EQ(nbd_block_status(h, 4 * kMiB, kMiB, cb, 0), 0) << nbd_get_error();
  ASSERT_FALSE(seen.extents.empty());
  // [1 MiB, 2 MiB) unallocated, [2 MiB, 3 MiB) holds data.
  EXPECT_EQ(seen.extents[0].first, kMiB);
  EXPECT_EQ(seen.extents[0].second, static_cast<uint32_t>(LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO));
  ASSERT_GE(seen.extents.size(), 2u);
  EXPECT_EQ(seen.extents[1].second & LIBNBD_STATE_HOLE, 0u);
  nbd_close(h);
}

TEST_F(NbdServerTest, TrimAndWriteZeroesReadBackZeros) {
  nbd_handle* h = Connect();
  ASSERT_NE(h, nullptr);
  auto data = Pattern(2 * kMiB, 3);
  ASSERT_EQ(nbd_pwrite(h, data.data(), data.size(), 8 * kMiB, 0), 0);
  ASSERT_EQ(nbd_trim(h, kMiB, 8 * kMiB, 0), 0) << nbd_get_error();
  ASSERT_EQ(nbd_zero(h, 64 * 1024, 9 * kMiB + 4096, LIBNBD_CMD_FLAG_NO_HOLE), 0) << nbd_get_error();
  std::vector<uint8_t> back(2 * kMiB);
  ASSERT_EQ(nbd_pread(h, back.data(), back.size(), 8 * kMiB, 0), 0);
  for (size_t i = 0; i < back.size(); ++i) {
    bool zero = i < kMiB || (i >= kMiB + 4096 && i < kMiB + 4096 + 64 * 1024);
    ASSERT_EQ(back[i], zero ? 0 : data[i]) << "byte " << i;
  }
  nbd_close(h);
}

TEST_F(NbdServerTest, FlushOnOneConnectionCoversWritesOfAnother) {
  nbd_handle* a = Connect();
  nbd_handle* b = Connect();
  nbd_handle* c = Connect();
  ASSERT_TRUE(a && b && c);
  auto data = Pattern(64 * 1024, 11);
  ASSERT_EQ(nbd_pwrite(a, data.data(), data.size(), 5 * kMiB, 0), 0);
  ASSERT_EQ(nbd_flush(b, 0), 0);
  std::vector<uint8_t> back(data.size());
  ASSERT_EQ(nbd_pread(c, back.data(), back.size(), 5 * kMiB, 0), 0);
  EXPECT_EQ(back, data);
  nbd_close(a);
  nbd_close(b);
  nbd_close(c);
}

TEST_F(NbdServerTest, SixteenConnectionsWriteAndVerifyTheirRegions) {
  constexpr int kConns = 16;
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < kConns; ++i) {
    threads.emplace_back([&, i] {
      nbd_handle* h = Connect();
      if (!h) return;
      auto data = Pattern(256 * 1024, 100 + i);
      uint64_t off = static_cast<uint64_t>(i) * 3 * kMiB;
      bool good = nbd_pwrite(h, data.data(), data.size(), off, 0) == 0;
      std::vector<uint8_t> back(data.size());
      good = good && nbd_pread(h, back.data(), back.size(), off, 0) == 0 && back == data;
      if (good) ok++;
      nbd_close(h);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), kConns);
}

TEST_F(NbdServerTest, OutOfRangeRequestsGetTheSpecifiedErrors) {
  nbd_handle* h = nbd_create();
  ASSERT_NE(h, nullptr);
  nbd_set_strict_mode(h, 0);  // let the bad requests reach the server
  std::string uri = "nbd+unix:///vol1?socket=" + sock_;
  ASSERT_EQ(nbd_connect_uri(h, uri.c_str()), 0) << nbd_get_error();
  std::vector<uint8_t> buf(8192);
  EXPECT_EQ(nbd_pread(h, buf.data(), 4096, 16 * kMiB, 0), -1);
  EXPECT_EQ(nbd_get_errno(), EINVAL);
  EXPECT_EQ(nbd_pwrite(h, buf.data(), 8192, 16 * kMiB - 4096, 0), -1);
  EXPECT_EQ(nbd_get_errno(), ENOSPC);
  // The connection stays usable after errors.
  EXPECT_EQ(nbd_pread(h, buf.data(), 4096, 0, 0), 0);
  nbd_close(h);
}

TEST_F(NbdServerTest, VolumesAreIsolated) {
  nbd_handle* h0 = Connect("vol0");
  nbd_handle* h1 = Connect("vol1");
  ASSERT_TRUE(h0 && h1);
  auto data = Pattern(kMiB, 5);
  ASSERT_EQ(nbd_pwrite(h1, data.data(), data.size(), 0, 0), 0);
  std::vector<uint8_t> back(kMiB);
  ASSERT_EQ(nbd_pread(h0, back.data(), back.size(), 0, 0), 0);
  // vol0 never wrote offset 0 in this test: zeros, not vol1's bytes.
  EXPECT_TRUE(std::all_of(back.begin(), back.end(), [](uint8_t b) { return b == 0; }));
  nbd_close(h0);
  nbd_close(h1);
}

TEST_F(NbdServerTest, VolumesCreatedAndDeletedAtRunTimeAreExportedLive) {
  EXPECT_EQ(ListExports(sock_), (std::vector<std::string>{"vol0", "vol1"}));
  ASSERT_TRUE(ManagerCall([&](auto done) {
                volumes_->Create({"live", 8 * kMiB, Durability::kFlush, false},
                                 [done](Result<std::shared_ptr<VolumeHandle>> r) {
                                   done(r.ok() ? Status::Ok() : r.status());
                                 });
              }).ok());
  EXPECT_EQ(ListExports(sock_), (std::vector<std::string>{"vol0", "vol1", "live"}));
  nbd_handle* h = Connect("live");  // exportable at once
  ASSERT_NE(h, nullptr);
  EXPECT_EQ(nbd_get_size(h), static_cast<int64_t>(8 * kMiB));
  auto data = Pattern(4096, 9);
  ASSERT_EQ(nbd_pwrite(h, data.data(), data.size(), 0, 0), 0) << nbd_get_error();
  // Grown: new connections see the new size; the open one keeps working.
  ASSERT_TRUE(ManagerCall([&](auto done) { volumes_->Resize("live", 16 * kMiB, done); }).ok());
  nbd_handle* h2 = Connect("live");
  ASSERT_NE(h2, nullptr);
  EXPECT_EQ(nbd_get_size(h2), static_cast<int64_t>(16 * kMiB));
  std::vector<uint8_t> back(4096);
  ASSERT_EQ(nbd_pread(h2, back.data(), back.size(), 0, 0), 0) << nbd_get_error();
  EXPECT_EQ(back, data);
  ASSERT_EQ(nbd_pread(h, back.data(), back.size(), 0, 0), 0) << nbd_get_error();
  // In use by two connections: a delete is refused, with a reason.
  Status refused = ManagerCall([&](auto done) { volumes_->Delete("live", false, done); });
  EXPECT_EQ(refused.code(), StatusCode::kFailedPrecondition) << refused.ToString();
  nbd_close(h);
  nbd_close(h2);
  // Unused (the connections' users go when they close, on the server's reactors): deleted.
  Status deleted;
  for (int i = 0; i < 100; ++i) {
    deleted = ManagerCall([&](auto done) { volumes_->Delete("live", false, done); });
    if (deleted.code() != StatusCode::kFailedPrecondition) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(deleted.ok()) << deleted.ToString();
  EXPECT_EQ(ListExports(sock_), (std::vector<std::string>{"vol0", "vol1"}));
  nbd_handle* gone = nbd_create();
  std::string uri = "nbd+unix:///live?socket=" + sock_;
  EXPECT_EQ(nbd_connect_uri(gone, uri.c_str()), -1) << "a deleted volume is still exported";
  nbd_close(gone);
}

TEST_F(NbdServerTest, AForcedDeleteClosesTheVolumesConnectionsWhileIoRuns) {
  RunForcedDeleteWhileIoRuns();
}

// The same with connections spread over two reactors: requests hop to the pool's reactor and
// back while the delete closes connections on both (ASan in CI: nothing may touch freed memory).
class NbdServerTwoReactorsTest : public NbdServerTest {
 protected:
  unsigned ConnReactors() override { return 2; }
};

TEST_F(NbdServerTwoReactorsTest, AForcedDeleteClosesTheVolumesConnectionsWhileIoRuns) {
  RunForcedDeleteWhileIoRuns();
}

void NbdServerTest::RunForcedDeleteWhileIoRuns() {
  ASSERT_TRUE(ManagerCall([&](auto done) {
                volumes_->Create({"doomed", 16 * kMiB, Durability::kFlush, false},
                                 [done](Result<std::shared_ptr<VolumeHandle>> r) {
                                   done(r.ok() ? Status::Ok() : r.status());
                                 });
              }).ok());
  const uint64_t closed_before = CounterValue("spd_nbd_connections_closed_for_delete_total");
  // Two clients keep writes and reads in flight on the doomed volume; vol0's client too.
  std::atomic<bool> stop{false};
  std::atomic<int> doomed_errors{0};
  auto hammer = [&](const char* name, std::atomic<int>* errors) {
    nbd_handle* h = Connect(name);
    if (h == nullptr) return;
    auto data = Pattern(64 << 10, 3);
    std::vector<uint8_t> back(64 << 10);
    for (int i = 0; i < 100000 && !stop; ++i) {
      const uint64_t off = static_cast<uint64_t>(i % 200) * (64 << 10);
      int64_t c1 = nbd_aio_pwrite(h, data.data(), data.size(), off, NBD_NULL_COMPLETION, 0);
      int64_t c2 = nbd_aio_pread(h, back.data(), back.size(), off, NBD_NULL_COMPLETION, 0);
      if (c1 == -1 || c2 == -1) break;
      bool failed = false;
      while (nbd_aio_in_flight(h) > 0) {
        if (nbd_poll(h, -1) == -1) {
          failed = true;
          break;
        }
      }
      if (failed || nbd_aio_is_dead(h)) break;
    }
    if (errors) ++*errors;
    nbd_close(h);
  };
  std::thread t1(hammer, "doomed", &doomed_errors);
  std::thread t2(hammer, "doomed", &doomed_errors);
  std::atomic<int> vol0_ended{0};
  std::thread t3(hammer, "vol0", &vol0_ended);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  Status s = ManagerCall([&](auto done) { volumes_->Delete("doomed", true, done); });
  EXPECT_TRUE(s.ok()) << s.ToString();
  t1.join();
  t2.join();
  EXPECT_EQ(doomed_errors.load(), 2) << "the doomed volume's clients were not disconnected";
  EXPECT_GE(CounterValue("spd_nbd_connections_closed_for_delete_total"), closed_before + 2);
  EXPECT_EQ(vol0_ended.load(), 0) << "another volume's connection was closed";
  stop = true;
  t3.join();
  EXPECT_EQ(ListExports(sock_), (std::vector<std::string>{"vol0", "vol1"}));
}

TEST_F(NbdServerTest, AdoptedSocketIsServedLikeAnAcceptedOne) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  ASSERT_TRUE(Adopt(sv[1]).ok());
  nbd_handle* h = nbd_create();
  ASSERT_NE(h, nullptr);
  ASSERT_EQ(nbd_set_export_name(h, "vol1"), 0);
  ASSERT_EQ(nbd_connect_socket(h, sv[0]), 0) << nbd_get_error();  // h owns sv[0] now
  EXPECT_EQ(nbd_get_size(h), static_cast<int64_t>(16 * kMiB));
  auto data = Pattern(8192, 21);
  ASSERT_EQ(nbd_pwrite(h, data.data(), data.size(), kMiB, 0), 0) << nbd_get_error();
  std::vector<uint8_t> back(data.size());
  ASSERT_EQ(nbd_pread(h, back.data(), back.size(), kMiB, 0), 0) << nbd_get_error();
  EXPECT_EQ(back, data);
  nbd_close(h);
}

// A client that sends many options and NBD_OPT_ABORT before reading any reply: the server's
// socket buffer fills, and the close must wait until every negotiation reply, ending with the
// ACK of the ABORT, has gone out (they were dropped).
TEST_F(NbdServerTest, NegotiationRepliesOutliveASlowReaderAbort) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  const int small = 4096;  // the kernel's minimum, a little more
  ASSERT_EQ(setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
  ASSERT_TRUE(Adopt(sv[1]).ok());
  auto option = [](std::vector<uint8_t>* out, uint32_t opt) {
    const uint8_t hdr[16] = {
        'I', 'H', 'A', 'V', 'E', 'O', 'P', 'T', 0, 0, 0, static_cast<uint8_t>(opt), 0, 0, 0, 0};
    out->insert(out->end(), hdr, hdr + sizeof hdr);
  };
  std::vector<uint8_t> req = {0, 0, 0, 1};        // client flags: fixed newstyle
  for (int i = 0; i < 100; ++i) option(&req, 3);  // NBD_OPT_LIST
  option(&req, 2);                                // NBD_OPT_ABORT
  ASSERT_EQ(send(sv[0], req.data(), req.size(), 0), static_cast<ssize_t>(req.size()));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the server blocks on its send
  std::vector<uint8_t> got;
  uint8_t buf[4096];
  for (ssize_t n; (n = recv(sv[0], buf, sizeof buf, 0)) > 0;) got.insert(got.end(), buf, buf + n);
  close(sv[0]);
  // Greeting, 100 x (2 export replies + ACK), then the ACK of the ABORT: 20 bytes, option 2,
  // reply type 1 (NBD_REP_ACK), no data.
  ASSERT_GE(got.size(), 18u + 100 * 3 * 20 + 20);
  const uint8_t ack[12] = {0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0};
  EXPECT_EQ(std::memcmp(got.data() + got.size() - 12, ack, sizeof ack), 0);
}

// Adopt obeys connections_max like accept does, and closes the socket it refuses.
class NbdOneConnectionTest : public NbdServerTest {
 protected:
  void Tweak(NbdServerOptions* o) override {
    o->connections_max = 1;
    o->handshakes_max = 1;
  }
};

TEST_F(NbdOneConnectionTest, AdoptBeyondTheLimitIsRefusedAndClosed) {
  int a[2], b[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a), 0);
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, b), 0);
  ASSERT_TRUE(Adopt(a[1]).ok());
  Status s = Adopt(b[1]);
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted) << s.ToString();
  uint8_t buf[64];
  EXPECT_EQ(recv(b[0], buf, sizeof buf, 0), 0);  // EOF: the server closed its end
  EXPECT_GT(recv(a[0], buf, sizeof buf, 0), 0);  // the first one got its greeting
  close(a[0]);
  close(b[0]);
}

// A client that keeps more requests in flight than the server's per-connection limit: the
// server stops reading (backpressure) and resumes as replies drain; nothing is lost or reordered
// wrongly and every request completes.
class NbdBackpressureTest : public NbdServerTest {
 protected:
  void Tweak(NbdServerOptions* o) override { o->conn_inflight_max = 2; }
};

TEST_F(NbdBackpressureTest, MoreInFlightThanTheLimitAllComplete) {
  nbd_handle* h = Connect();
  ASSERT_NE(h, nullptr);
  const uint64_t stalls_before = CounterValue("spd_nbd_backpressure_total");
  const auto durations_before = HistogramBuckets("spd_nbd_request_duration_seconds");
  constexpr int kIos = 256;
  constexpr size_t kLen = 4096;
  std::vector<std::vector<uint8_t>> data;
  for (int i = 0; i < kIos; ++i) data.push_back(Pattern(kLen, 1000 + i));
  for (int i = 0; i < kIos; ++i)
    ASSERT_NE(nbd_aio_pwrite(h, data[i].data(), kLen, static_cast<uint64_t>(i) * 3 * kLen,
                             NBD_NULL_COMPLETION, 0),
              -1)
        << nbd_get_error();
  while (nbd_aio_in_flight(h) > 0) ASSERT_NE(nbd_poll(h, -1), -1) << nbd_get_error();
  std::vector<std::vector<uint8_t>> back(kIos, std::vector<uint8_t>(kLen));
  for (int i = 0; i < kIos; ++i)
    ASSERT_NE(nbd_aio_pread(h, back[i].data(), kLen, static_cast<uint64_t>(i) * 3 * kLen,
                            NBD_NULL_COMPLETION, 0),
              -1)
        << nbd_get_error();
  while (nbd_aio_in_flight(h) > 0) ASSERT_NE(nbd_poll(h, -1), -1) << nbd_get_error();
  for (int i = 0; i < kIos; ++i) EXPECT_EQ(back[i], data[i]) << i;
  EXPECT_GT(CounterValue("spd_nbd_backpressure_total"), stalls_before);
  // Every reply was timed (server-side latency histogram).
  const auto durations_after = HistogramBuckets("spd_nbd_request_duration_seconds");
  uint64_t timed = 0;
  for (size_t i = 0; i < durations_after.size(); ++i)
    timed += durations_after[i] - durations_before[i];
  EXPECT_GE(timed, 2u * kIos);
  nbd_close(h);
}

// ---- Connection limits, timeouts and the memory budget ----

// A raw client socket to the server's unix socket (blocking), or -1.
int RawConnect(const std::string& path) {
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
bool ClosedWithin(int fd, int ms) {
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

bool SendAll(int fd, const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  while (n > 0) {
    ssize_t k = send(fd, b, n, MSG_NOSIGNAL);
    if (k <= 0) return false;
    b += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}

bool RecvAll(int fd, void* p, size_t n) {
  auto* b = static_cast<uint8_t*>(p);
  while (n > 0) {
    ssize_t k = recv(fd, b, n, 0);
    if (k <= 0) return false;
    b += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}

void Put32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (24 - 8 * i));
}
void Put64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (56 - 8 * i));
}
uint32_t Get32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

// Negotiates `exp` with NBD_OPT_EXPORT_NAME over a raw socket (simple replies only); -1 on
// failure.
int RawNegotiate(const std::string& path, const char* exp) {
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
int64_t RawRequest(int fd, uint16_t type, uint64_t cookie, uint64_t offset, uint32_t length,
                   uint64_t payload_len) {
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

class NbdHandshakeTimeoutTest : public NbdServerTest {
 protected:
  void Tweak(NbdServerOptions* o) override { o->handshake_timeout_ms = 200; }
};

TEST_F(NbdHandshakeTimeoutTest, SilentSocketsAreClosedAfterTheTimeout) {
  const uint64_t before = CounterValue("spd_nbd_handshake_timeouts_total");
  std::vector<int> fds;
  for (int i = 0; i < 5; ++i) fds.push_back(RawConnect(sock_));
  for (int fd : fds) {
    ASSERT_GE(fd, 0);
    EXPECT_TRUE(ClosedWithin(fd, 3000)) << "a silent socket stayed open";
    close(fd);
  }
  EXPECT_EQ(CounterValue("spd_nbd_handshake_timeouts_total") - before, 5u);
  // A client that negotiates is not affected, also when it then waits longer than the timeout.
  nbd_handle* h = Connect();
  ASSERT_NE(h, nullptr);
  usleep(400'000);
  std::vector<uint8_t> buf(4096);
  EXPECT_EQ(nbd_pread(h, buf.data(), buf.size(), 0, 0), 0) << nbd_get_error();
  nbd_close(h);
}

class NbdHandshakesMaxTest : public NbdServerTest {
 protected:
  void Tweak(NbdServerOptions* o) override {
    o->handshakes_max = 4;
    o->connections_max = 8;
  }
};

TEST_F(NbdHandshakesMaxTest, NewConnectionsDisplaceTheOldestNegotiating) {
  const uint64_t before = CounterValue("spd_nbd_handshake_evictions_total");
  // One real client first: negotiated connections are never displaced.
  nbd_handle* first = Connect();
  ASSERT_NE(first, nullptr);
  std::vector<int> fds;
  for (int i = 0; i < 20; ++i) {
    fds.push_back(RawConnect(sock_));
    ASSERT_GE(fds.back(), 0);
  }
  // The first 16 were displaced, oldest first; the newest 4 are still negotiating.
  for (int i = 0; i < 16; ++i) EXPECT_TRUE(ClosedWithin(fds[i], 3000)) << "socket " << i;
  for (int i = 16; i < 20; ++i) EXPECT_FALSE(ClosedWithin(fds[i], 50)) << "socket " << i;
  // More silent sockets than connections_max leave room for a real client at once: it
  // displaces a silent one (connections_max is 8: 1 client + 4 silent + this one fit anyway;
  // the point is that 20 silent sockets did not take the places).
  nbd_handle* h = Connect();
  ASSERT_NE(h, nullptr);
  auto data = Pattern(64 * 1024, 9);
  EXPECT_EQ(nbd_pwrite(h, data.data(), data.size(), 0, 0), 0) << nbd_get_error();
  std::vector<uint8_t> buf(4096);
  EXPECT_EQ(nbd_pread(first, buf.data(), buf.size(), 0, 0), 0) << nbd_get_error();
  EXPECT_GE(CounterValue("spd_nbd_handshake_evictions_total") - before, 16u);
  for (int fd : fds) close(fd);
  nbd_close(h);
  nbd_close(first);
}

class NbdConnectionsMaxTest : public NbdServerTest {
 protected:
  void Tweak(NbdServerOptions* o) override {
    o->connections_max = 3;
    o->handshakes_max = 2;
  }
};

TEST_F(NbdConnectionsMaxTest, SilentSocketsDoNotKeepClientsOutButNegotiatedOnesCount) {
  nbd_handle* a = Connect();
  ASSERT_NE(a, nullptr);
  std::vector<int> fds;
  for (int i = 0; i < 6; ++i) fds.push_back(RawConnect(sock_));
  usleep(100'000);
  // 1 negotiated + 2 negotiating = connections_max: the next real client displaces a silent
  // socket instead of being refused.
  nbd_handle* b = Connect();
  ASSERT_NE(b, nullptr);
  std::vector<uint8_t> buf(4096);
  EXPECT_EQ(nbd_pread(b, buf.data(), buf.size(), 0, 0), 0) << nbd_get_error();
  nbd_handle* c = Connect();
  ASSERT_NE(c, nullptr);
  for (int fd : fds) close(fd);
  // Three negotiated connections: the limit holds for real clients; a fourth is refused.
  const uint64_t refused = CounterValue("spd_nbd_connections_refused_total");
  nbd_handle* d = nbd_create();
  std::string uri = "nbd+unix:///vol0?socket=" + sock_;
  EXPECT_EQ(nbd_connect_uri(d, uri.c_str()), -1);
  nbd_close(d);
  EXPECT_EQ(CounterValue("spd_nbd_connections_refused_total") - refused, 1u);
  nbd_close(a);
  nbd_close(b);
  nbd_close(c);
}

class NbdIdleTimeoutTest : public NbdServerTest {
 protected:
  void Tweak(NbdServerOptions* o) override { o->idle_timeout_ms = 300; }
};

TEST_F(NbdIdleTimeoutTest, AnIdleClientIsClosedAnActiveOneIsNot) {
  const uint64_t before = CounterValue("spd_nbd_idle_timeouts_total");
  nbd_handle* h = Connect();
  ASSERT_NE(h, nullptr);
  std::vector<uint8_t> buf(4096);
  // Requests every 100 ms for 1 s: never idle for 300 ms.
  for (int i = 0; i < 10; ++i) {
    ASSERT_EQ(nbd_pread(h, buf.data(), buf.size(), 0, 0), 0) << nbd_get_error();
    usleep(100'000);
  }
  usleep(800'000);
  EXPECT_EQ(nbd_pread(h, buf.data(), buf.size(), 0, 0), -1) << "idle connection still open";
  EXPECT_EQ(CounterValue("spd_nbd_idle_timeouts_total") - before, 1u);
  nbd_close(h);
}

TEST_F(NbdServerTest, IdleClientsStayByDefault) {
  nbd_handle* h = Connect();
  ASSERT_NE(h, nullptr);
  usleep(1'200'000);
  std::vector<uint8_t> buf(4096);
  EXPECT_EQ(nbd_pread(h, buf.data(), buf.size(), 0, 0), 0) << nbd_get_error();
  nbd_close(h);
}

TEST_F(NbdServerTest, SilentSocketsCostLittleMemory) {
#ifndef SPD_HAVE_ALLOCATED_BYTES
  GTEST_SKIP() << "needs the sanitizer allocator's statistics";
#else
  // A connection that has only been accepted holds a negotiation buffer and the handshake
  // state; its request slots and receive buffer come after negotiation.
  constexpr int kSockets = 40;  // below the default handshakes_max
  const size_t before = __sanitizer_get_current_allocated_bytes();
  std::vector<int> fds;
  for (int i = 0; i < kSockets; ++i) {
    fds.push_back(RawConnect(sock_));
    ASSERT_GE(fds.back(), 0);
  }
  for (int i = 0; i < 200 && server_->connections() < kSockets; ++i) usleep(10'000);
  usleep(100'000);  // the last one's Start
  ASSERT_EQ(server_->connections(), static_cast<size_t>(kSockets));
  const size_t after = __sanitizer_get_current_allocated_bytes();
  const double per_socket = static_cast<double>(after - before) / kSockets;
  std::printf("bytes allocated per silent socket: %.0f\n", per_socket);
  EXPECT_LT(per_socket, 16 * 1024.0);
  for (int fd : fds) close(fd);
#endif
}

// A small budget and several clients writing large requests at once: every request succeeds,
// connections wait for memory instead of failing, and the budget is never exceeded.
class NbdMemoryBudgetTest : public NbdServerTest {
 protected:
  static constexpr uint64_t kBudget = 14 * kMiB;
  void Tweak(NbdServerOptions* o) override {
    o->request_bytes_max = 4 * kMiB;
    o->conn_inflight_max = 8;
    o->memory_bytes_max = kBudget;
  }
};

TEST_F(NbdMemoryBudgetTest, ConcurrentLargeWritesWaitForMemoryAndAllSucceed) {
  const uint64_t waits_before = CounterValue("spd_nbd_memory_backpressure_total");
  constexpr int kConns = 4;
  constexpr int kIos = 3;  // 4 x 3 x 4 MiB = 48 MiB in flight if the server let it
  constexpr size_t kLen = 4 * kMiB;
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int c = 0; c < kConns; ++c) {
    threads.emplace_back([&, c] {
      nbd_handle* h = Connect();
      if (!h) return;
      std::vector<std::vector<uint8_t>> data;
      for (int i = 0; i < kIos; ++i) data.push_back(Pattern(kLen, 300 + c * kIos + i));
      auto off = [&](int i) { return static_cast<uint64_t>(c * kIos + i) * kLen; };
      bool good = true;
      for (int i = 0; i < kIos; ++i)
        good =
            good && nbd_aio_pwrite(h, data[i].data(), kLen, off(i), NBD_NULL_COMPLETION, 0) != -1;
      while (good && nbd_aio_in_flight(h) > 0) good = nbd_poll(h, -1) != -1;
      // Every write succeeded (a failed aio command stays behind as failed).
      for (int64_t id; good && (id = nbd_aio_peek_command_completed(h)) > 0;)
        good = nbd_aio_command_completed(h, id) == 1;
      std::vector<std::vector<uint8_t>> back(kIos, std::vector<uint8_t>(kLen));
      for (int i = 0; i < kIos; ++i)
        good = good && nbd_aio_pread(h, back[i].data(), kLen, off(i), NBD_NULL_COMPLETION, 0) != -1;
      while (good && nbd_aio_in_flight(h) > 0) good = nbd_poll(h, -1) != -1;
      for (int64_t id; good && (id = nbd_aio_peek_command_completed(h)) > 0;)
        good = nbd_aio_command_completed(h, id) == 1;
      for (int i = 0; i < kIos; ++i) good = good && back[i] == data[i];
      if (good) ok++;
      nbd_close(h);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), kConns);
  EXPECT_GT(server_->buffer_bytes_peak(), 0u);
  EXPECT_LE(server_->buffer_bytes_peak(), kBudget);
  EXPECT_GT(CounterValue("spd_nbd_memory_backpressure_total"), waits_before);
}

// A budget too small for one request of the advertised maximum contradicts it: Start refuses.
TEST(NbdServerLimits, StartRefusesABudgetBelowTheAdvertisedMaximum) {
  auto reactor = std::move(Reactor::Create(ReactorOptions{})).value();
  BackendOptions bo;
  bo.kind = BackendKind::kSim;
  bo.size_bytes = 64 * kMiB;
  auto pool = std::move(Pool::Create(std::move(OpenBackend(bo, reactor.get())).value(),
                                     reactor.get(), PoolOptions{}))
                  .value();
  ASSERT_TRUE(pool->CreateVolume("v", 16 * kMiB).ok());
  Dispatcher dispatcher(pool.get(), DispatcherOptions{});
  NbdServerOptions no;
  no.unix_path = "/tmp/spd-nbd-limits-" + std::to_string(getpid()) + ".sock";
  no.request_bytes_max = 32 * kMiB;
  no.memory_bytes_max = 16 * kMiB;
  VolumeManager volumes(pool.get());
  NbdServer server(reactor.get(), &dispatcher, &volumes, no);
  Status s = server.Start();
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.ToString().find("memory"), std::string::npos) << s.ToString();
}

// The advertised maximum is the enforced one: libnbd (which stops at 64 MiB itself) writes and
// reads back exactly that much.
class NbdRequestMaxTest : public NbdServerTest {
 protected:
  void Tweak(NbdServerOptions* o) override { o->request_bytes_max = 64 * kMiB; }
};

TEST_F(NbdRequestMaxTest, ExactlyTheAdvertisedMaximumRoundTrips) {
  nbd_handle* h = Connect();
  ASSERT_NE(h, nullptr);
  ASSERT_EQ(nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM), static_cast<int64_t>(64 * kMiB));
  auto data = Pattern(64 * kMiB, 77);
  ASSERT_EQ(nbd_pwrite(h, data.data(), data.size(), 0, 0), 0) << nbd_get_error();
  std::vector<uint8_t> back(data.size());
  ASSERT_EQ(nbd_pread(h, back.data(), back.size(), 0, 0), 0) << nbd_get_error();
  EXPECT_TRUE(back == data);
  nbd_close(h);
}

// Above 256 MiB (the old fixed limit for reading and dropping a refused write): a write under the
// advertised maximum is validated like any other (here: past the end of the 64 MiB export, so
// ENOSPC with its payload read and dropped) and the connection stays up.
class NbdHugeRequestTest : public NbdServerTest {
 protected:
  void Tweak(NbdServerOptions* o) override { o->request_bytes_max = 512 * kMiB; }
};

TEST_F(NbdHugeRequestTest, WriteAboveTheOldDiscardLimitIsValidatedNotDropped) {
  int fd = RawNegotiate(sock_, "vol0");
  ASSERT_GE(fd, 0);
  constexpr uint32_t kLen = 300u << 20;
  EXPECT_EQ(RawRequest(fd, nbd::kCmdWrite, 1, 0, kLen, kLen), int64_t{nbd::kENoSpc});
  EXPECT_EQ(RawRequest(fd, nbd::kCmdWrite, 2, 0, 4096, 4096), 0) << "connection closed";
  close(fd);
}

}  // namespace
}  // namespace spd

namespace spd {
namespace {

// A peer that stops moving while the server waits for it is closed after stall_timeout_ms: a
// write whose payload stops halfway, and a client that sends reads but never reads the replies.
// One that keeps moving, however slowly, stays.
class NbdStallTimeoutTest : public NbdServerTest {
 protected:
  void Tweak(NbdServerOptions* o) override { o->stall_timeout_ms = 300; }
};

TEST_F(NbdStallTimeoutTest, AStalledPayloadIsClosedASlowOneIsNot) {
  const uint64_t before = CounterValue("spd_nbd_stall_timeouts_total");
  // Slow but moving: 8 KiB of a 16 KiB payload, then the rest in 1 KiB pieces every 100 ms.
  int slow = RawNegotiate(sock_, "vol0");
  ASSERT_GE(slow, 0);
  uint8_t h[28] = {};
  Put32(h, nbd::kRequestMagic);
  h[7] = static_cast<uint8_t>(nbd::kCmdWrite);
  Put32(h + 24, 16384);
  std::vector<uint8_t> payload(16384, 7);
  ASSERT_TRUE(SendAll(slow, h, sizeof h));
  ASSERT_TRUE(SendAll(slow, payload.data(), 8192));
  // Stalled: half a payload and nothing more.
  int stalled = RawNegotiate(sock_, "vol0");
  ASSERT_GE(stalled, 0);
  ASSERT_TRUE(SendAll(stalled, h, sizeof h));
  ASSERT_TRUE(SendAll(stalled, payload.data(), 4096));
  for (int i = 0; i < 8; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ASSERT_TRUE(SendAll(slow, payload.data() + 8192 + 1024 * i, 1024));
  }
  uint8_t r[16];
  ASSERT_TRUE(RecvAll(slow, r, sizeof r)) << "the slow writer was closed";
  EXPECT_EQ(Get32(r + 4), 0u);
  EXPECT_TRUE(ClosedWithin(stalled, 2000)) << "a stalled payload was not closed";
  EXPECT_EQ(CounterValue("spd_nbd_stall_timeouts_total"), before + 1);
  close(slow);
  close(stalled);
}

TEST_F(NbdStallTimeoutTest, AClientThatNeverReadsItsRepliesIsClosed) {
  const uint64_t before = CounterValue("spd_nbd_stall_timeouts_total");
  int fd = RawNegotiate(sock_, "vol0");
  ASSERT_GE(fd, 0);
  const int small = 4096;
  ASSERT_EQ(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
  // 64 reads of 1 MiB: far more reply than the sockets hold. The client reads none of it.
  for (uint64_t i = 0; i < 64; ++i) {
    uint8_t h[28] = {};
    Put32(h, nbd::kRequestMagic);
    h[7] = static_cast<uint8_t>(nbd::kCmdRead);
    Put64(h + 8, i);
    Put64(h + 16, i << 20);
    Put32(h + 24, 1 << 20);
    ASSERT_TRUE(SendAll(fd, h, sizeof h));
  }
  // Closed within about the timeout once the server's sends stop moving (its queued replies
  // dropped): then reading ends at EOF instead of blocking.
  bool closed = false;
  for (int i = 0; i < 50 && !closed; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    closed = CounterValue("spd_nbd_stall_timeouts_total") > before;
  }
  EXPECT_TRUE(closed) << "a client that never reads was not closed";
  EXPECT_TRUE(ClosedWithin(fd, 5000));
  close(fd);
}

}  // namespace
}  // namespace spd

namespace spd {
namespace {

// conn_inflight_bytes_max: a connection with more payload bytes in flight than the limit stops
// reading until replies drain (the slot limit is far away here), and every request completes.
class NbdInflightBytesTest : public NbdServerTest {
 protected:
  void Tweak(NbdServerOptions* o) override { o->conn_inflight_bytes_max = 256 << 10; }
  // Writes stay in flight long enough for the limit to be reached whatever the scheduling.
  void TweakBackend(BackendOptions* bo) override { bo->sim.latency_base_ns = 20'000'000; }
};

TEST_F(NbdInflightBytesTest, MorePayloadInFlightThanTheLimitStallsAndAllComplete) {
  nbd_handle* h = Connect();
  ASSERT_NE(h, nullptr);
  const uint64_t stalls_before = CounterValue("spd_nbd_backpressure_total");
  constexpr int kIos = 32;  // of 64 KiB: 2 MiB in flight at once, against a 256 KiB limit
  constexpr size_t kLen = 64 << 10;
  std::vector<std::vector<uint8_t>> data;
  for (int i = 0; i < kIos; ++i) data.push_back(Pattern(kLen, 500 + i));
  for (int i = 0; i < kIos; ++i)
    ASSERT_NE(nbd_aio_pwrite(h, data[i].data(), kLen, static_cast<uint64_t>(i) * kLen,
                             NBD_NULL_COMPLETION, 0),
              -1)
        << nbd_get_error();
  while (nbd_aio_in_flight(h) > 0) ASSERT_NE(nbd_poll(h, -1), -1) << nbd_get_error();
  EXPECT_GT(CounterValue("spd_nbd_backpressure_total"), stalls_before);
  std::vector<uint8_t> back(kLen);
  for (int i = 0; i < kIos; ++i) {
    ASSERT_EQ(nbd_pread(h, back.data(), kLen, static_cast<uint64_t>(i) * kLen, 0), 0);
    EXPECT_EQ(back, data[i]) << i;
  }
  nbd_close(h);
}

}  // namespace
}  // namespace spd
