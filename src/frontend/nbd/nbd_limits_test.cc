// NBD server limits and timeouts, each hit by a test: handshake timeout, handshakes_max,
// connections_max, idle timeout, memory per silent socket, the memory budget, the request
// maximum, the stall timeout and conn_inflight_bytes_max.
#include <gtest/gtest.h>

#include "frontend/nbd/nbd_test_fixture.h"

namespace spd {
namespace {

// The defaults (a suite of its own: gtest wants one fixture class per suite, and each test file
// has its own copy of NbdServerTest).
class NbdDefaultLimitsTest : public NbdServerTest {};

// The timeout leaves room for libnbd's whole negotiation (several round trips) under TSan on a
// busy 2-core box: at 200 ms, CI once saw the client's own handshake cut off.
class NbdHandshakeTimeoutTest : public NbdServerTest {
 protected:
  void Tweak(NbdServerOptions* o) override { o->handshake_timeout_ms = 1000; }
};

TEST_F(NbdHandshakeTimeoutTest, SilentSocketsAreClosedAfterTheTimeout) {
  const uint64_t before = CounterValue("spd_nbd_handshake_timeouts_total");
  std::vector<int> fds;
  for (int i = 0; i < 5; ++i) fds.push_back(RawConnect(sock_));
  for (int fd : fds) {
    ASSERT_GE(fd, 0);
    EXPECT_TRUE(ClosedWithin(fd, 5000)) << "a silent socket stayed open";
    close(fd);
  }
  EXPECT_EQ(CounterValue("spd_nbd_handshake_timeouts_total") - before, 5u);
  // A client that negotiates is not affected, also when it then waits longer than the timeout.
  nbd_handle* h = Connect();
  ASSERT_NE(h, nullptr);
  usleep(1'500'000);
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

TEST_F(NbdDefaultLimitsTest, IdleClientsStayByDefault) {
  nbd_handle* h = Connect();
  ASSERT_NE(h, nullptr);
  usleep(1'200'000);
  std::vector<uint8_t> buf(4096);
  EXPECT_EQ(nbd_pread(h, buf.data(), buf.size(), 0, 0), 0) << nbd_get_error();
  nbd_close(h);
}

TEST_F(NbdDefaultLimitsTest, SilentSocketsCostLittleMemory) {
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
