// A TLS session's memory is charged to the NBD memory budget (--nbd-memory-max): with room for
// two TLS connections the third is closed at STARTTLS and counted, and the memory comes back
// when a connection closes.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>

#include "frontend/nbd/nbd_buffers.h"
#include "frontend/nbd/nbd_connection.h"
#include "frontend/nbd/nbd_test_fixture.h"

namespace spd {
namespace {

class NbdTlsMemoryTest : public NbdServerTest {
 protected:
  // Room for one request of the advertised maximum (the headroom every charge leaves) and
  // kConns negotiated TLS connections, not one byte more.
  static constexpr int kConns = 2;

  static std::string PskFile() {
    static std::atomic<int> seq{0};
    const std::string path =
        "/tmp/spd-nbd-tls-mem-" + std::to_string(getpid()) + "-" + std::to_string(seq++) + ".psk";
    std::ofstream(path) << "alice:" << std::string(64, 'a') << "\n";
    chmod(path.c_str(), 0600);
    return path;
  }
  void Tweak(NbdServerOptions* o) override {
    o->tcp_host = "127.0.0.1";
    o->tcp_port = 0;
    o->tls_mode = nbd::TlsMode::kRequire;
    o->tls_files.psk_file = psk_;
    o->request_bytes_max = 64 * 1024;
    o->conn_inflight_max = 4;
    o->recv_buffer_bytes = 64 * 1024;
    per_conn_ = NbdConnection::TransmissionBytes(*o) + NbdConnection::TlsBytes();
    o->memory_bytes_max = NbdBufferPool::ClassBytes(o->request_bytes_max) + kConns * per_conn_;
  }
  void TearDown() override {
    NbdServerTest::TearDown();
    unlink(psk_.c_str());
  }
  nbd_handle* TlsConnect() {
    nbd_handle* h = nbd_create();
    EXPECT_NE(h, nullptr);
    EXPECT_EQ(nbd_set_tls(h, LIBNBD_TLS_REQUIRE), 0) << nbd_get_error();
    EXPECT_EQ(nbd_set_tls_username(h, "alice"), 0) << nbd_get_error();
    EXPECT_EQ(nbd_set_tls_psk_file(h, psk_.c_str()), 0) << nbd_get_error();
    nbd_set_export_name(h, "vol0");
    if (nbd_connect_tcp(h, "127.0.0.1", std::to_string(server_->tcp_port()).c_str()) != 0) {
      nbd_close(h);
      return nullptr;
    }
    return h;
  }
  // Waits (a few seconds at most) for the budget's use, which the server's thread changes.
  bool UsedReaches(uint64_t want) {
    for (int i = 0; i < 300 && server_->buffer_bytes() != want; ++i) usleep(10'000);
    return server_->buffer_bytes() == want;
  }

  std::string psk_ = PskFile();
  uint64_t per_conn_ = 0;
};

TEST_F(NbdTlsMemoryTest, TheConnectionPastTheBudgetIsRefusedAndTheMemoryComesBack) {
  const uint64_t refused = CounterValue("spd_nbd_tls_memory_refusals_total");
  ASSERT_GT(NbdConnection::TlsBytes(), 64u * 1024);  // read-ahead, record, session estimate
  std::vector<nbd_handle*> open;
  for (int i = 0; i < kConns; ++i) {
    nbd_handle* h = TlsConnect();
    ASSERT_NE(h, nullptr) << "connection " << i << ": " << nbd_get_error();
    EXPECT_EQ(nbd_get_tls_negotiated(h), 1);
    open.push_back(h);
  }
  // Each is charged its TLS session and its slots.
  EXPECT_TRUE(UsedReaches(kConns * per_conn_)) << server_->buffer_bytes();
  // The next has no room for its session: closed at STARTTLS, counted, nothing charged.
  nbd_handle* over = TlsConnect();
  EXPECT_EQ(over, nullptr);
  if (over) nbd_close(over);
  EXPECT_EQ(CounterValue("spd_nbd_tls_memory_refusals_total"), refused + 1);
  EXPECT_TRUE(UsedReaches(kConns * per_conn_)) << server_->buffer_bytes();
  // One closes: its memory comes back, and a new TLS client gets in and does I/O.
  nbd_shutdown(open[0], 0);
  nbd_close(open[0]);
  EXPECT_TRUE(UsedReaches((kConns - 1) * per_conn_)) << server_->buffer_bytes();
  open[0] = TlsConnect();
  ASSERT_NE(open[0], nullptr) << nbd_get_error();
  ExpectWriteReadBack(open[0], 4096, 0, 11);
  for (nbd_handle* h : open) {
    nbd_shutdown(h, 0);
    nbd_close(h);
  }
  // All closed: the sessions' and slots' memory is back (request buffers may stay cached).
  for (int i = 0; i < 300 && server_->buffer_bytes() >= per_conn_; ++i) usleep(10'000);
  EXPECT_LT(server_->buffer_bytes(), per_conn_);
  EXPECT_EQ(CounterValue("spd_nbd_tls_memory_refusals_total"), refused + 1);
}

// Start refuses a budget without room for one TLS connection when TLS is on.
TEST(NbdTlsMemoryOptions, ABudgetWithoutRoomForATlsSessionIsRefused) {
  NbdServerOptions o;
  o.tls_mode = nbd::TlsMode::kRequire;
  o.memory_bytes_max = NbdBufferPool::ClassBytes(o.request_bytes_max) +
                       NbdConnection::TransmissionBytes(o) + NbdConnection::TlsBytes() - 1;
  Status s = NbdServer::CheckOptions(o);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("TLS session"), std::string_view::npos) << s.ToString();
  o.memory_bytes_max += 1;
  s = NbdServer::CheckOptions(o);
  EXPECT_TRUE(s.ok() || s.message().find("memory budget") == std::string_view::npos)
      << s.ToString();
}

}  // namespace
}  // namespace spd
