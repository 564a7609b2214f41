// NBD server tests with a real client (libnbd) against an in-process server on a sim pool:
// the protocol served, volumes at run time, adoption, backpressure. Limits and timeouts are
// in nbd_limits_test.cc.
#include <gtest/gtest.h>

#include <unistd.h>

#include "common/counters.h"
#include "frontend/nbd/nbd_test_fixture.h"

namespace spd {
namespace {

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

// spd_nbd_connections{state}: a connection counts as negotiating until it has an export, then
// in transmission, and in no state once closed.
TEST_F(NbdServerTest, ConnectionsAreCountedByState) {
  auto state = [](const char* s) {
    const std::string text = RenderCountersPrometheus();
    const std::string key = std::string("\nspd_nbd_connections{state=\"") + s + "\"} ";
    const size_t at = text.find(key);
    EXPECT_NE(at, std::string::npos) << s;
    return at == std::string::npos ? -1L : std::stol(text.substr(at + key.size()));
  };
  auto wait_for = [&](const char* s, long want) {
    for (int i = 0; i < 500 && state(s) != want; ++i) usleep(10'000);
    return state(s);
  };
  const long neg0 = state("negotiating"), tx0 = state("transmission");
  nbd_handle* h = Connect();
  ASSERT_NE(h, nullptr);
  EXPECT_EQ(wait_for("transmission", tx0 + 1), tx0 + 1);
  int raw = RawConnect(sock_);  // connects, never negotiates
  ASSERT_GE(raw, 0);
  EXPECT_EQ(wait_for("negotiating", neg0 + 1), neg0 + 1);
  EXPECT_EQ(state("transmission"), tx0 + 1);
  close(raw);
  nbd_close(h);
  EXPECT_EQ(wait_for("negotiating", neg0), neg0);
  EXPECT_EQ(wait_for("transmission", tx0), tx0);
  EXPECT_EQ(wait_for("closing", 0), 0);
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

// And with volumes spread over the two reactors on a uring pool (channels on both): vol0 and
// "filler" are reactor 0's, vol1 and "doomed" reactor 1's, whose owner serves them and asks the
// pool's reactor by message for chunks while the delete closes its path and drains it.
class NbdServerSpreadTest : public NbdServerTest {
 protected:
  unsigned ConnReactors() override { return 2; }
  bool SpreadVolumes() override { return true; }
  void TweakBackend(BackendOptions* bo) override {
    path_ = "/dev/shm/spd-nbd-spread-test-" + std::to_string(getpid()) + ".img";
    unlink(path_.c_str());
    bo->kind = BackendKind::kUring;
    bo->path = path_;
    bo->create = true;
  }
  void TearDown() override {
    NbdServerTest::TearDown();
    if (!path_.empty()) unlink(path_.c_str());
  }
  std::string path_;
};

TEST_F(NbdServerSpreadTest, AForcedDeleteClosesTheVolumesConnectionsWhileIoRuns) {
  ASSERT_TRUE(ManagerCall([&](auto done) {
                volumes_->Create({"filler", 16 * kMiB, Durability::kFlush, false},
                                 [done](Result<std::shared_ptr<VolumeHandle>> r) {
                                   done(r.ok() ? Status::Ok() : r.status());
                                 });
              }).ok());
  const uint64_t msgs = CounterValue("spd_volume_owner_pool_messages_total");
  RunForcedDeleteWhileIoRuns({"vol0", "vol1", "filler"});
  EXPECT_GT(CounterValue("spd_volume_owner_pool_messages_total"), msgs)
      << "the doomed volume's owner never asked the pool for a chunk";
}

void NbdServerTest::RunForcedDeleteWhileIoRuns(const std::vector<std::string>& left) {
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
  EXPECT_EQ(ListExports(sock_), left);
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

}  // namespace
}  // namespace spd
