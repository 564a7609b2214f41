// ReplicaServer against a test primary on a socket: the hello and its fence, writes applied
// and acknowledged, barriers recording the generation, and every refusal (stale epoch, out of
// sync, malformed or corrupt messages, a silent peer).
#include "replica/replica_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <fcntl.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <vector>

#include "common/counters.h"
#include "common/crc32c.h"
#include "io/sim_backend.h"
#include "replica/activity_log.h"
#include "replica/replica_server_metrics.h"
#include "replica/replica_test_util.h"
#include "replica/replica_wire.h"
#include "replica/write_guard.h"
#include "testing/volume_io_util.h"

namespace spd {
namespace {

namespace rw = replica_wire;

class ReplicaServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = Reactor::Create(ReactorOptions{});
    ASSERT_TRUE(r.ok());
    reactor_ = std::move(r).value();
    PoolOptions o;
    o.chunk_size_bytes = 64 << 10;
    o.log_size_bytes = 1 << 20;
    auto sim = std::make_unique<SimBackend>(reactor_.get(), 64ull << 20, SimOptions{});
    sim_ = sim.get();
    auto p = Pool::Create(std::move(sim), reactor_.get(), o);
    ASSERT_TRUE(p.ok());
    pool_ = std::move(p).value();
    ASSERT_TRUE(pool_->CreateVolume("v", 4 << 20).ok());
    ASSERT_TRUE(pool_->CreateVolume("used", 4 << 20).ok());
    volumes_ = std::make_unique<VolumeManager>(pool_.get());
    dispatcher_ = std::make_unique<Dispatcher>(pool_.get(), DispatcherOptions{});
    ReplicaServerOptions so;
    so.hello_timeout_ms = 300;
    so.stall_timeout_ms = 400;
    so.sessions_max = 4;
    so.queue_depth = 4;
    server_ =
        std::make_unique<ReplicaServer>(reactor_.get(), dispatcher_.get(), volumes_.get(), so);
    ASSERT_TRUE(server_->Start().ok());
  }
  void TearDown() override {
    for (int fd : fds_) close(fd);
    const bool done = replica_test::ShutdownServer(reactor_.get(), server_.get());
    EXPECT_TRUE(done) << "sessions did not end";
    server_.reset();
    dispatcher_.reset();
    volumes_.reset();
    pool_.reset();
  }
  int Connect() {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(server_->port());
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    fds_.push_back(fd);
    for (int i = 0; i < 20; ++i) reactor_->RunOnce(1'000'000);  // accepted
    return fd;
  }
  static void SendMsg(int fd, rw::Header h, const void* payload = nullptr) {
    const uint32_t n = rw::PayloadBytes(h);
    if (n > 0) h.crc = Crc32c(0, payload, n);
    uint8_t b[rw::kHeaderBytes];
    rw::EncodeHeader(h, b);
    ASSERT_EQ(send(fd, b, sizeof b, MSG_NOSIGNAL), static_cast<ssize_t>(sizeof b));
    if (n > 0) {
      ASSERT_EQ(send(fd, payload, n, MSG_NOSIGNAL), static_cast<ssize_t>(n));
    }
  }
  // Drives the reactor until `n` bytes arrived on fd (or it closed, or 5 s passed): how many.
  size_t RecvAll(int fd, void* buf, size_t n) {
    size_t got = 0;
    for (int i = 0; i < 5000 && got < n; ++i) {
      reactor_->RunOnce(1'000'000);
      const ssize_t r = recv(fd, static_cast<uint8_t*>(buf) + got, n - got, MSG_DONTWAIT);
      if (r == 0) break;
      if (r > 0) got += static_cast<size_t>(r);
    }
    return got;
  }
  // The next message: false when the connection closed first.
  bool Recv(int fd, rw::Header* h, std::vector<uint8_t>* payload = nullptr) {
    uint8_t b[rw::kHeaderBytes];
    if (RecvAll(fd, b, sizeof b) != sizeof b) return false;
    EXPECT_EQ(rw::DecodeHeader(b, rw::kPayloadMax, h), "");
    std::vector<uint8_t> p(rw::PayloadBytes(*h));
    if (!p.empty() && RecvAll(fd, p.data(), p.size()) != p.size()) return false;
    if (payload) *payload = std::move(p);
    return true;
  }
  // Whether the server closed fd (drives the reactor up to `ms`).
  bool Closed(int fd, int ms = 2000) {
    for (int i = 0; i < ms; ++i) {
      reactor_->RunOnce(1'000'000);
      uint8_t b[256];
      const ssize_t r = recv(fd, b, sizeof b, MSG_DONTWAIT);
      if (r == 0 || (r < 0 && errno != EAGAIN)) return true;
    }
    return false;
  }
  rw::HelloReplyBody Hello(int fd, const char* volume, uint64_t epoch, ReplicaGeneration base,
                           uint64_t size = 4 << 20, uint32_t flags = 0,
                           std::vector<rw::ActivityRange>* ranges = nullptr) {
    rw::HelloBody b;
    std::memcpy(b.volume, volume, std::min(std::strlen(volume), sizeof b.volume));
    b.size_bytes = size;
    b.base_epoch = base.epoch;
    b.base_seq = base.seq;
    b.write_bytes_max = 1 << 20;
    b.flags = flags;
    rw::Header h;
    h.type = static_cast<uint16_t>(rw::Type::kHello);
    h.epoch = epoch;
    h.length = sizeof b;
    SendMsg(fd, h, &b);
    rw::Header rh;
    std::vector<uint8_t> p;
    rw::HelloReplyBody r;
    r.status = 999;
    if (!Recv(fd, &rh, &p)) return r;
    EXPECT_EQ(rh.type, static_cast<uint16_t>(rw::Type::kHelloReply));
    if (p.size() < sizeof r) return r;
    std::memcpy(&r, p.data(), sizeof r);
    EXPECT_EQ(p.size(), sizeof r + r.activity_ranges * sizeof(rw::ActivityRange));
    if (ranges != nullptr) {
      ranges->resize((p.size() - sizeof r) / sizeof(rw::ActivityRange));
      std::memcpy(ranges->data(), p.data() + sizeof r, p.size() - sizeof r);
    }
    return r;
  }
  // A write of `len` bytes of `fill` at `off`; the ack's result (1 when none came).
  // `gap`: the watermark it carries (rw::Header::result).
  int32_t Write(int fd, uint64_t epoch, uint64_t seq, uint64_t off, uint32_t len, char fill,
                int32_t gap = 0) {
    std::vector<uint8_t> data(len, static_cast<uint8_t>(fill));
    rw::Header h;
    h.type = static_cast<uint16_t>(rw::Type::kWrite);
    h.epoch = epoch;
    h.seq = seq;
    h.result = gap;
    h.offset = off;
    h.length = len;
    SendMsg(fd, h, data.data());
    rw::Header a;
    if (!Recv(fd, &a)) return 1;
    EXPECT_EQ(a.seq, seq);
    return a.result;
  }
  int32_t Barrier(int fd, uint64_t epoch, uint64_t seq, uint16_t flags = 0) {
    rw::Header h;
    h.type = static_cast<uint16_t>(rw::Type::kBarrier);
    h.flags = flags;
    h.epoch = epoch;
    h.seq = seq;
    SendMsg(fd, h);
    rw::Header a;
    if (!Recv(fd, &a)) return 1;
    EXPECT_EQ(a.seq, seq);
    return a.result;
  }
  char ReadByte(const char* volume, uint64_t off) {
    alignas(4096) static char buf[4096];
    Volume* v = pool_->FindVolume(volume);
    EXPECT_EQ(
        testing::RunVolumeIo(reactor_.get(), v, IoOp::kRead, off & ~4095ull, 4096, buf).result, 0);
    return buf[off & 4095];
  }

  std::unique_ptr<Reactor> reactor_;
  SimBackend* sim_ = nullptr;  // pool_'s
  std::unique_ptr<Pool> pool_;
  std::unique_ptr<VolumeManager> volumes_;
  std::unique_ptr<Dispatcher> dispatcher_;
  std::unique_ptr<ReplicaServer> server_;
  std::vector<int> fds_;
};

TEST_F(ReplicaServerTest, AppliesWritesAndRecordsGenerationsAtBarriers) {
  const int fd = Connect();
  const rw::HelloReplyBody r = Hello(fd, "v", 1, {0, 0});
  ASSERT_EQ(r.status, static_cast<uint32_t>(rw::HelloStatus::kInSync));
  EXPECT_EQ(r.fence_epoch, 1u) << "the fence is durable before the reply";
  Volume* v = pool_->FindVolume("v");
  EXPECT_EQ(v->fence_epoch_durable(), 1u);
  EXPECT_EQ(Write(fd, 1, 1, 0, 8192, 'x'), 0);
  EXPECT_EQ(Write(fd, 1, 2, 1 << 20, 4096, 'y'), 0);
  EXPECT_EQ(v->generation(), (ReplicaGeneration{0, 0}));
  EXPECT_EQ(Barrier(fd, 1, 3), 0);
  EXPECT_EQ(v->generation(), (ReplicaGeneration{1, 3}));
  EXPECT_EQ(ReadByte("v", 8191), 'x');
  EXPECT_EQ(ReadByte("v", 1 << 20), 'y');
  // The same primary again (a new connection, its base now 1:3): in sync, the old session goes.
  const int fd2 = Connect();
  EXPECT_EQ(Hello(fd2, "v", 1, {1, 3}).status, static_cast<uint32_t>(rw::HelloStatus::kInSync));
  EXPECT_TRUE(Closed(fd)) << "the displaced session stays open";
  EXPECT_EQ(Write(fd2, 1, 4, 0, 4096, 'z'), 0);
  // Written after its generation: a hello now is out of sync until the next barrier.
  const int fd3 = Connect();
  EXPECT_EQ(Hello(fd3, "v", 1, {1, 3}).status, static_cast<uint32_t>(rw::HelloStatus::kOutOfSync));
}

// What a copy applies is recorded (64 KiB units) until the primary's watermark passes it, and
// the next primary's hello gets what is left of the record: the writes the old primary may have
// had in flight (volume/replica_activity.h).
TEST_F(ReplicaServerTest, AppliedWritesAreRecordedUntilTheWatermarkPassesThem) {
  const int fd = Connect();
  ASSERT_EQ(Hello(fd, "v", 1, {0, 0}).status, static_cast<uint32_t>(rw::HelloStatus::kInSync));
  Volume* v = pool_->FindVolume("v");
  EXPECT_EQ(Write(fd, 1, 1, 0, 4096, 'a', 0), 0);
  EXPECT_EQ(Write(fd, 1, 2, 5 * 65536 + 4096, 65536, 'b', 1), 0);  // units 5 and 6
  EXPECT_EQ(Write(fd, 1, 3, 9 * 65536, 4096, 'c', 2), 0);          // 1 and 2 may be in flight: kept
  ReplicaActivity::Snapshot a = v->replica_activity.Take();
  EXPECT_TRUE(a.complete);
  EXPECT_EQ(a.epoch, 1u);
  ASSERT_EQ(a.ranges.size(), 3u);
  EXPECT_EQ(a.ranges[0].first, 0u);
  EXPECT_EQ(a.ranges[1].first, 5u);
  EXPECT_EQ(a.ranges[1].units, 2u);
  EXPECT_EQ(a.ranges[2].first, 9u);
  // Message 4 says everything below 3 is on every copy: the records of 1 and 2 go.
  EXPECT_EQ(Write(fd, 1, 4, 20 * 65536, 4096, 'd', 1), 0);
  a = v->replica_activity.Take();
  ASSERT_EQ(a.ranges.size(), 2u);
  EXPECT_EQ(a.ranges[0].first, 9u);
  EXPECT_EQ(a.ranges[1].first, 20u);
  // A watermark above the message's own number is a protocol error.
  EXPECT_EQ(Write(fd, 1, 5, 0, 4096, 'e', 6), 1);
  EXPECT_TRUE(Closed(fd));
  // The next primary (epoch 2) hears what is left: units 9 and 20, of epoch 1. Its first
  // reply is lost (the connection drops): at its next hello, with nothing of epoch 2 applied
  // here meanwhile, it hears the same, not the empty record its first hello began.
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::vector<rw::ActivityRange> ranges;
    const rw::HelloReplyBody r =
        Hello(Connect(), "v", 2, {0, 0}, 4 << 20, rw::kHelloResync, &ranges);
    EXPECT_EQ(r.status, static_cast<uint32_t>(rw::HelloStatus::kOutOfSync));
    EXPECT_EQ(r.activity_epoch, 1u) << "attempt " << attempt;
    EXPECT_EQ(r.activity_flags, static_cast<uint32_t>(rw::kActivityComplete));
    ASSERT_EQ(ranges.size(), 2u) << "attempt " << attempt;
    EXPECT_EQ(ranges[0].first_unit, 9u);
    EXPECT_EQ(ranges[0].units, 1u);
    EXPECT_EQ(ranges[1].first_unit, 20u);
  }
  const int fd2 = fds_.back();
  // Its session applies (a resync): the record starts afresh for epoch 2, marked resyncing.
  a = v->replica_activity.Take();
  EXPECT_EQ(a.epoch, 2u);
  EXPECT_TRUE(a.ranges.empty());
  EXPECT_TRUE(a.resyncing);
  EXPECT_EQ(Write(fd2, 2, 1, 0, 4096, 'f', 0), 0);
  EXPECT_EQ(v->replica_activity.Take().max_seq, 1u);
  // A write that fails here spoils the record: this copy no longer holds the term whole.
  sim_->FailNext(1);
  EXPECT_NE(Write(fd2, 2, 2, 0, 4096, 'g', 0), 0);
  EXPECT_TRUE(v->replica_activity.Take().spoiled);
  // A plain barrier leaves the marks; the resync's last one clears them (the copy is whole).
  EXPECT_EQ(Barrier(fd2, 2, 3), 0);
  a = v->replica_activity.Take();
  EXPECT_TRUE(a.resyncing && a.spoiled);
  EXPECT_EQ(Write(fd2, 2, 4, 0, 4096, 'h', 0), 0);
  EXPECT_EQ(Barrier(fd2, 2, 5, rw::kFlagResyncEnd), 0);
  a = v->replica_activity.Take();
  EXPECT_FALSE(a.resyncing || a.spoiled);
  EXPECT_EQ(a.max_seq, 4u);
}

TEST_F(ReplicaServerTest, ANewerPrimaryFencesTheOldOne) {
  const int old_fd = Connect();
  ASSERT_EQ(Hello(old_fd, "v", 3, {0, 0}).status, static_cast<uint32_t>(rw::HelloStatus::kInSync));
  ASSERT_EQ(Barrier(old_fd, 3, 1), 0);
  const int new_fd = Connect();
  ASSERT_EQ(Hello(new_fd, "v", 4, {3, 1}).status, static_cast<uint32_t>(rw::HelloStatus::kInSync));
  EXPECT_EQ(pool_->FindVolume("v")->fence_epoch_durable(), 4u);
  // The deposed primary's session is gone, and it cannot come back with its epoch.
  EXPECT_TRUE(Closed(old_fd));
  const int again = Connect();
  const rw::HelloReplyBody r = Hello(again, "v", 3, {3, 1});
  EXPECT_EQ(r.status, static_cast<uint32_t>(rw::HelloStatus::kStaleEpoch));
  EXPECT_EQ(r.fence_epoch, 4u);
  EXPECT_TRUE(Closed(again));
  EXPECT_EQ(Write(new_fd, 4, 2, 0, 4096, 'n'), 0);
  EXPECT_EQ(ReadByte("v", 0), 'n');
}

// A volume that grows (docs/replication.md, "Resizing a replicated volume"): a kGrow grows the
// copy before it is acknowledged, and a write past the old end is applied after it; a hello of a
// bigger volume grows a copy that was away, unless it comes from a deposed primary; a kGrow to
// a smaller size is refused, and a grow to no size is a malformed message.
TEST_F(ReplicaServerTest, ACopyGrowsOnItsPrimarysWord) {
  const uint64_t grows = CounterValue("spd_replica_grows_total");
  int fd = Connect();
  ASSERT_EQ(Hello(fd, "v", 2, {0, 0}).status, static_cast<uint32_t>(rw::HelloStatus::kInSync));
  EXPECT_EQ(Write(fd, 2, 1, 4096, 4096, 'a'), 0);
  rw::Header g;
  g.type = static_cast<uint16_t>(rw::Type::kGrow);
  g.epoch = 2;
  g.seq = 2;
  g.offset = 8 << 20;
  SendMsg(fd, g);
  rw::Header a;
  ASSERT_TRUE(Recv(fd, &a));
  EXPECT_EQ(a.seq, 2u);
  EXPECT_EQ(a.result, 0);
  EXPECT_EQ(pool_->FindVolume("v")->size_bytes(), uint64_t{8} << 20);
  EXPECT_EQ(volumes_->Find("v")->info().size_bytes, uint64_t{8} << 20) << "through the manager";
  EXPECT_EQ(Write(fd, 2, 3, (6 << 20) + 4096, 4096, 'b'), 0) << "past the old end";
  EXPECT_EQ(ReadByte("v", (6 << 20) + 4096), 'b');
  EXPECT_EQ(ReadByte("v", 4096), 'a');
  g.seq = 4;
  g.offset = 4 << 20;  // smaller: refused, nothing changes
  SendMsg(fd, g);
  ASSERT_TRUE(Recv(fd, &a));
  EXPECT_EQ(a.result, -EINVAL);
  EXPECT_EQ(pool_->FindVolume("v")->size_bytes(), uint64_t{8} << 20);
  EXPECT_EQ(Barrier(fd, 2, 5), 0) << "the session goes on";
  // The primary comes back after the volume grew again: its hello grows the copy first.
  fd = Connect();
  rw::HelloReplyBody r = Hello(fd, "v", 3, {2, 5}, 12 << 20);
  EXPECT_EQ(r.status, static_cast<uint32_t>(rw::HelloStatus::kInSync));
  EXPECT_EQ(r.size_bytes, uint64_t{12} << 20);
  EXPECT_EQ(pool_->FindVolume("v")->size_bytes(), uint64_t{12} << 20);
  EXPECT_EQ(CounterValue("spd_replica_grows_total") - grows, 2u);
  // A deposed primary's hello of a bigger volume grows nothing.
  const int old_fd = Connect();
  r = Hello(old_fd, "v", 2, {2, 5}, 16 << 20);
  EXPECT_EQ(r.status, static_cast<uint32_t>(rw::HelloStatus::kStaleEpoch));
  EXPECT_EQ(pool_->FindVolume("v")->size_bytes(), uint64_t{12} << 20);
  EXPECT_TRUE(Closed(old_fd));
  // A grow to no size.
  g.epoch = 3;
  g.seq = 1;
  g.offset = 0;
  SendMsg(fd, g);
  EXPECT_TRUE(Closed(fd));
  EXPECT_EQ(pool_->FindVolume("v")->size_bytes(), uint64_t{12} << 20);
}

TEST_F(ReplicaServerTest, AVolumeWithOtherDataIsOutOfSyncAndTakesNoWrites) {
  alignas(4096) static char buf[4096];
  std::memset(buf, 'o', sizeof buf);
  ASSERT_EQ(
      testing::RunVolumeIo(reactor_.get(), pool_->FindVolume("used"), IoOp::kWrite, 0, 4096, buf)
          .result,
      0);
  const int fd = Connect();
  ASSERT_EQ(Hello(fd, "used", 1, {0, 0}).status,
            static_cast<uint32_t>(rw::HelloStatus::kOutOfSync));
  EXPECT_EQ(Write(fd, 1, 1, 0, 4096, 'w'), -ENOTCONN);
  EXPECT_EQ(ReadByte("used", 0), 'o');
}

// With copies_only (the daemon's), a local volume that shares a replicated volume's name takes no
// primary's session: only a copy (its replica hook set, as the ReplicationManager sets it) does.
TEST_F(ReplicaServerTest, WithCopiesOnlyALocalVolumeTakesNoPrimary) {
  ASSERT_TRUE(replica_test::ShutdownServer(reactor_.get(), server_.get()));
  ReplicaServerOptions so;
  so.hello_timeout_ms = 300;
  so.copies_only = true;
  server_ = std::make_unique<ReplicaServer>(reactor_.get(), dispatcher_.get(), volumes_.get(), so);
  ASSERT_TRUE(server_->Start().ok());
  const uint64_t refused = replica_server_metrics::local_volumes_refused_total.value();
  int fd = Connect();
  EXPECT_EQ(Hello(fd, "v", 1, {0, 0}).status, static_cast<uint32_t>(rw::HelloStatus::kNoVolume));
  EXPECT_TRUE(Closed(fd));
  EXPECT_EQ(replica_server_metrics::local_volumes_refused_total.value(), refused + 1);
  Volume* v = pool_->FindVolume("v");
  EXPECT_EQ(v->fence_epoch_durable(), 0u) << "the refused primary's fence was recorded";
  WriteGuard guard;
  v->replica_hook.store(static_cast<ReplicaHook*>(&guard));
  fd = Connect();
  EXPECT_EQ(Hello(fd, "v", 1, {0, 0}).status, static_cast<uint32_t>(rw::HelloStatus::kInSync));
  EXPECT_EQ(Write(fd, 1, 1, 0, 4096, 'c'), 0);
  EXPECT_EQ(ReadByte("v", 0), 'c');
  EXPECT_TRUE(replica_test::ShutdownServer(reactor_.get(), server_.get()));
  v->replica_hook.store(nullptr);
  server_ = std::make_unique<ReplicaServer>(reactor_.get(), dispatcher_.get(), volumes_.get(), so);
  ASSERT_TRUE(server_->Start().ok());
}

TEST_F(ReplicaServerTest, RefusesWhatItCannotServe) {
  int fd = Connect();
  EXPECT_EQ(Hello(fd, "nope", 1, {0, 0}).status, static_cast<uint32_t>(rw::HelloStatus::kNoVolume));
  EXPECT_TRUE(Closed(fd));
  fd = Connect();  // a primary of a smaller volume: volumes never shrink under one
  EXPECT_EQ(Hello(fd, "v", 1, {0, 0}, 2 << 20).status,
            static_cast<uint32_t>(rw::HelloStatus::kSizeMismatch));
  EXPECT_TRUE(Closed(fd));
  // A write before any hello.
  fd = Connect();
  rw::Header h;
  h.type = static_cast<uint16_t>(rw::Type::kBarrier);
  SendMsg(fd, h);
  EXPECT_TRUE(Closed(fd));
  // Garbage.
  fd = Connect();
  uint8_t junk[rw::kHeaderBytes];
  std::memset(junk, 0xab, sizeof junk);
  ASSERT_EQ(send(fd, junk, sizeof junk, MSG_NOSIGNAL), static_cast<ssize_t>(sizeof junk));
  EXPECT_TRUE(Closed(fd));
  // A write whose payload does not match its checksum is not applied.
  fd = Connect();
  ASSERT_EQ(Hello(fd, "v", 1, {0, 0}).status, static_cast<uint32_t>(rw::HelloStatus::kInSync));
  std::vector<uint8_t> data(4096, 'c');
  h = rw::Header();
  h.type = static_cast<uint16_t>(rw::Type::kWrite);
  h.epoch = 1;
  h.seq = 1;
  h.length = 4096;
  h.crc = 12345;
  uint8_t b[rw::kHeaderBytes];
  rw::EncodeHeader(h, b);
  ASSERT_EQ(send(fd, b, sizeof b, MSG_NOSIGNAL), static_cast<ssize_t>(sizeof b));
  ASSERT_EQ(send(fd, data.data(), data.size(), MSG_NOSIGNAL), 4096);
  EXPECT_TRUE(Closed(fd));
  EXPECT_EQ(ReadByte("v", 0), 0);
  // A peer that never says hello is closed after hello_timeout_ms.
  fd = Connect();
  EXPECT_TRUE(Closed(fd, 3000));
  // Every closed session is freed once its last poll completion came back.
  for (int i = 0; i < 1000 && server_->sessions() > 0; ++i) reactor_->RunOnce(1'000'000);
  EXPECT_EQ(server_->sessions(), 0u);
}

// Hostile peers: more connections than sessions_max, a message that stops half-way, a write
// larger than the limit, and a primary that sends writes but never reads its acks.
TEST_F(ReplicaServerTest, HostilePeersAreBounded) {
  // sessions_max (4): the fifth connection is closed at once; the first four stay.
  std::vector<int> held;
  for (int i = 0; i < 4; ++i) held.push_back(Connect());
  EXPECT_EQ(server_->sessions(), 4u);
  const int fifth = Connect();
  EXPECT_TRUE(Closed(fifth, 200));
  EXPECT_EQ(server_->sessions(), 4u);
  for (int fd : held) EXPECT_TRUE(Closed(fd, 3000));  // and they never said hello
  for (int i = 0; i < 1000 && server_->sessions() > 0; ++i) reactor_->RunOnce(1'000'000);
  // Half a header, then silence: closed after stall_timeout_ms.
  int fd = Connect();
  ASSERT_EQ(Hello(fd, "v", 1, {0, 0}).status, static_cast<uint32_t>(rw::HelloStatus::kInSync));
  uint8_t half[20] = {};
  ASSERT_EQ(send(fd, half, sizeof half, MSG_NOSIGNAL), 20);
  EXPECT_TRUE(Closed(fd, 3000));
  // A write above write_bytes_max is a protocol error.
  fd = Connect();
  ASSERT_EQ(Hello(fd, "v", 1, {0, 0}).status, static_cast<uint32_t>(rw::HelloStatus::kInSync));
  rw::Header h;
  h.type = static_cast<uint16_t>(rw::Type::kWrite);
  h.epoch = 1;
  h.seq = 1;
  h.length = 2u << 20;
  uint8_t b[rw::kHeaderBytes];
  rw::EncodeHeader(h, b);
  ASSERT_EQ(send(fd, b, sizeof b, MSG_NOSIGNAL), static_cast<ssize_t>(sizeof b));
  EXPECT_TRUE(Closed(fd));
  // A primary that never reads: the server stops reading once its replies pile up (and the
  // socket buffers fill), and closes the session when they stay unread for stall_timeout_ms;
  // memory stays bounded meanwhile.
  fd = Connect();
  const int small = 4096;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  ASSERT_EQ(Hello(fd, "v", 1, {0, 0}).status, static_cast<uint32_t>(rw::HelloStatus::kInSync));
  std::vector<uint8_t> data(4096, 'f');
  h = rw::Header();
  h.type = static_cast<uint16_t>(rw::Type::kWriteZeroes);
  h.epoch = 1;
  h.length = 4096;
  size_t sent = 0;
  for (uint64_t seq = 1; seq <= 200000; ++seq) {
    h.seq = seq;
    rw::EncodeHeader(h, b);
    const ssize_t n = send(fd, b, sizeof b, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n != static_cast<ssize_t>(sizeof b)) break;
    sent += sizeof b;
    if (seq % 64 == 0) reactor_->RunOnce(0);
  }
  EXPECT_LT(sent, 200000u * sizeof b) << "the server kept reading with nobody taking its replies";
  EXPECT_TRUE(Closed(fd, 5000)) << "a primary that reads nothing keeps its session";
}

// After a power loss, a copy that was a term's primary answers with its durable activity log
// as its record of that term (kActivityDurableLog), but only while that term is the last it took
// part in: once it accepted a later primary's hello (its fence rose), that primary's writes may
// be on it and are in no log, so the log no longer stands for anything.
TEST_F(ReplicaServerTest, ItsActivityLogStandsForItsRecordOnlyForTheLastTermItTookPartIn) {
  char tmpl[] = "/tmp/spd-replica-server-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  Volume* v = pool_->FindVolume("v");
  // The fence of the term it was the primary of (ReplicationManager::BecomePrimary records it).
  ASSERT_TRUE(replica_test::RecordFence(reactor_.get(), v, 1));
  {  // its log of that term: unit 5
    std::vector<uint8_t> slots(2 * ActivityLog::kSlotBytes, 0);
    ActivityLog::Encode(1, 1, {5}, slots.data());
    const int fd = open(ActivityLogPath(dir, "v").c_str(), O_WRONLY | O_CREAT, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(pwrite(fd, slots.data(), slots.size(), 0), static_cast<ssize_t>(slots.size()));
    close(fd);
  }
  {  // its record, left open by the boot the power ended
    const int fd = open((dir + "/v.activity").c_str(), O_WRONLY | O_CREAT, 0600);
    ASSERT_GE(fd, 0);
    const uint64_t tag = uint64_t{0xdead} << 40;
    ASSERT_EQ(pwrite(fd, &tag, sizeof tag, offsetof(ActivityFileHeader, open_tag)), 8);
    close(fd);
  }
  ASSERT_TRUE(replica_test::ShutdownServer(reactor_.get(), server_.get()));
  ReplicaServerOptions so;
  so.state_dir = dir;
  server_ = std::make_unique<ReplicaServer>(reactor_.get(), dispatcher_.get(), volumes_.get(), so);
  ASSERT_TRUE(server_->Start().ok());
  // Term 2's primary: the log (term 1, the last this copy took part in) answers for the record.
  // Its primary is dirty, so the copy is out of sync and applies nothing yet.
  std::vector<rw::ActivityRange> ranges;
  rw::HelloReplyBody r = Hello(Connect(), "v", 2, {0, 0}, 4 << 20, rw::kHelloPrimaryDirty, &ranges);
  ASSERT_EQ(r.status, static_cast<uint32_t>(rw::HelloStatus::kOutOfSync));
  EXPECT_EQ(r.losses, 1u);
  EXPECT_NE(r.activity_flags & rw::kActivityLeftOpen, 0u);
  ASSERT_NE(r.activity_flags & rw::kActivityDurableLog, 0u);
  EXPECT_EQ(r.activity_epoch, 1u);
  ASSERT_EQ(ranges.size(), 1u);
  EXPECT_EQ(ranges[0].first_unit, 5u);
  // Term 3's primary: the copy accepted term 2's hello, so its log says nothing any more.
  r = Hello(Connect(), "v", 3, {0, 0}, 4 << 20, rw::kHelloPrimaryDirty, &ranges);
  ASSERT_EQ(r.status, static_cast<uint32_t>(rw::HelloStatus::kOutOfSync));
  EXPECT_NE(r.activity_flags & rw::kActivityLeftOpen, 0u);
  EXPECT_EQ(r.activity_flags & rw::kActivityDurableLog, 0u);
  EXPECT_EQ(r.activity_flags & rw::kActivityComplete, 0u);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace spd
