#include "telemetry/metrics_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include <zlib.h>

#include "common/counters.h"

namespace spd {
namespace {

constexpr uint64_t kMs = 1'000'000;

// A reactor and a MetricsServer on a thread of their own, as in spd2; the test is the client.
// Parameter: force epoll (true) or io_uring (false).
class MetricsServerTest : public ::testing::TestWithParam<bool> {
 protected:
  void Start(const MetricsServerOptions& options) {
    std::promise<uint16_t> ready;
    std::future<uint16_t> port = ready.get_future();
    thread_ = std::thread([this, options, &ready] {
      ReactorOptions ro;
      ro.force_epoll = GetParam();
      auto r = Reactor::Create(ro);
      if (!r.ok()) {
        ready.set_value(0);
        return;
      }
      std::unique_ptr<Reactor> reactor = std::move(r).value();
      MetricsServer server(reactor.get(), options);
      if (!server.Start("127.0.0.1", 0).ok()) {
        ready.set_value(0);
        return;
      }
      reactor_ = reactor.get();
      server_ = &server;
      ready.set_value(server.port());
      reactor->Run();
      server_ = nullptr;
    });
    port_ = port.get();
    ASSERT_NE(port_, 0) << "server did not start";
  }

  void TearDown() override {
    for (int fd : fds_) close(fd);
    if (thread_.joinable()) {
      if (reactor_ != nullptr) reactor_->Stop();
      thread_.join();
    }
  }

  // Runs fn on the reactor's thread and returns its result.
  template <typename Fn>
  uint64_t OnReactor(Fn fn) {
    struct Call : Task {
      Fn* body;
      std::promise<uint64_t> done;
    } call;
    call.body = &fn;
    call.fn = [](Task* t) {
      auto* c = static_cast<Call*>(t);
      c->done.set_value((*c->body)());
    };
    std::future<uint64_t> result = call.done.get_future();
    reactor_->Post(&call);
    return result.get();
  }
  size_t Connections() {
    return OnReactor([this] { return static_cast<uint64_t>(server_->connections()); });
  }

  // A blocking client socket (reads time out after 5 s); closed by TearDown.
  int Connect() {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_GE(fd, 0);
    timeval tv{5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port_);
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0) << strerror(errno);
    fds_.push_back(fd);
    return fd;
  }

  static bool SendAll(int fd, const std::string& s) {
    size_t off = 0;
    while (off < s.size()) {
      ssize_t n = send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }

  // Reads one response (head and Content-Length body); "" when the connection ends first.
  static std::string ReadResponse(int fd, bool head_request = false) {
    std::string in;
    char buf[4096];
    size_t head_end = std::string::npos;
    size_t want = SIZE_MAX;
    while (in.size() < want) {
      ssize_t n = recv(fd, buf, sizeof buf, 0);
      if (n <= 0) return "";
      in.append(buf, static_cast<size_t>(n));
      if (head_end == std::string::npos && (head_end = in.find("\r\n\r\n")) != std::string::npos) {
        head_end += 4;
        size_t cl = in.find("Content-Length: ");
        if (cl == std::string::npos || cl > head_end) return "";
        want = head_end + (head_request ? 0 : std::stoul(in.substr(cl + 16)));
      }
    }
    return in;
  }

  // True when the server ends the connection (EOF or reset) within timeout_ns; input is
  // discarded.
  static bool ClosedWithin(int fd, uint64_t timeout_ns) {
    const uint64_t end = MonotonicNs() + timeout_ns;
    for (;;) {
      const uint64_t now = MonotonicNs();
      if (now >= end) return false;
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>((end - now) / kMs) + 1) <= 0) continue;
      char buf[4096];
      ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
        return true;
    }
  }

  std::thread thread_;
  Reactor* reactor_ = nullptr;
  MetricsServer* server_ = nullptr;
  uint16_t port_ = 0;
  std::vector<int> fds_;
};

constexpr char kScrape[] = "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n";

TEST_P(MetricsServerTest, SilentClientsDoNotKeepAScraperOut) {
  MetricsServerOptions o;
  o.header_timeout_ns = 60'000 * kMs;  // the connection limit, not a timeout, must save the scrape
  Start(o);
  const uint64_t evicted0 = CounterValue("spd_metrics_connections_dropped_evicted_total");
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 200; ++i) Connect();
    const uint64_t start = MonotonicNs();
    int fd = Connect();
    ASSERT_TRUE(SendAll(fd, kScrape));
    std::string resp = ReadResponse(fd);
    const uint64_t took = MonotonicNs() - start;
    ASSERT_EQ(resp.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << "round " << round << ": " << resp;
    EXPECT_NE(resp.find("\nspd_metrics_scrapes_total "), std::string::npos);
    EXPECT_LT(took, 1000 * kMs) << "round " << round;
  }
  EXPECT_LE(Connections(), o.clients_max);
  EXPECT_GE(CounterValue("spd_metrics_connections_dropped_evicted_total") - evicted0,
            3 * 200 - o.clients_max);
  EXPECT_EQ(CounterValue("spd_metrics_connections_dropped_refused_total"), 0u);
}

TEST_P(MetricsServerTest, AcceptBurstIsNeverRefused) {
  // With io_uring, connections evicted in a tick stay allocated until the next kernel entry; a
  // burst much larger than clients_max must wait for them, not be refused.
  MetricsServerOptions o;
  o.clients_max = 2;
  Start(o);
  const uint64_t refused0 = CounterValue("spd_metrics_connections_dropped_refused_total");
  for (int i = 0; i < 100; ++i) Connect();
  int fd = Connect();
  ASSERT_TRUE(SendAll(fd, kScrape));
  EXPECT_EQ(ReadResponse(fd).rfind("HTTP/1.1 200 OK\r\n", 0), 0u);
  EXPECT_EQ(CounterValue("spd_metrics_connections_dropped_refused_total"), refused0);
  EXPECT_LE(Connections(), 2u);
}

TEST_P(MetricsServerTest, SlowlorisIsDroppedAfterTheHeaderTimeout) {
  MetricsServerOptions o;
  o.header_timeout_ns = 500 * kMs;
  Start(o);
  const uint64_t dropped0 = CounterValue("spd_metrics_connections_dropped_header_timeout_total");
  int fd = Connect();
  const std::string endless = "GET /metrics HTTP/1.1\r\nX-Slow: " + std::string(1000, 'a');
  const uint64_t start = MonotonicNs();
  uint64_t closed_after = 0;
  // One byte per 100 ms, for at most 5 s.
  for (size_t i = 0; i < 50 && closed_after == 0; ++i) {
    if (send(fd, &endless[i], 1, MSG_NOSIGNAL) != 1 || ClosedWithin(fd, 100 * kMs))
      closed_after = MonotonicNs() - start;
  }
  ASSERT_NE(closed_after, 0u) << "a slowloris was still connected after 5 s";
  EXPECT_GE(closed_after, 400 * kMs);
  EXPECT_LT(closed_after, 2000 * kMs);
  EXPECT_EQ(CounterValue("spd_metrics_connections_dropped_header_timeout_total") - dropped0, 1u);
  // Nothing is left open, so no timer is armed and the reactor sleeps.
  EXPECT_EQ(Connections(), 0u);
}

TEST_P(MetricsServerTest, SilentClientIsDroppedAfterTheHeaderTimeout) {
  MetricsServerOptions o;
  o.header_timeout_ns = 200 * kMs;
  Start(o);
  int fd = Connect();
  const uint64_t start = MonotonicNs();
  EXPECT_TRUE(ClosedWithin(fd, 2000 * kMs));
  EXPECT_GE(MonotonicNs() - start, 150 * kMs);
}

TEST_P(MetricsServerTest, OversizeHeaderIsRefusedWith431) {
  MetricsServerOptions o;
  Start(o);
  const uint64_t oversize0 = CounterValue("spd_metrics_connections_dropped_oversize_total");
  int fd = Connect();
  const std::string big =
      "GET /metrics HTTP/1.1\r\nX-Pad: " + std::string(2 * o.request_bytes_max, 'a') + "\r\n\r\n";
  SendAll(fd, big);  // the server may stop reading before the end
  std::string resp = ReadResponse(fd);
  EXPECT_EQ(resp.rfind("HTTP/1.1 431 Request Header Fields Too Large\r\n", 0), 0u) << resp;
  EXPECT_NE(resp.find("Connection: close\r\n"), std::string::npos);
  EXPECT_TRUE(ClosedWithin(fd, 2000 * kMs));
  EXPECT_EQ(CounterValue("spd_metrics_connections_dropped_oversize_total") - oversize0, 1u);
}

TEST_P(MetricsServerTest, HttpMethodsPathsAndKeepAlive) {
  Start(MetricsServerOptions{});
  int fd = Connect();
  // Two scrapes on one kept-alive connection, the second pipelined behind a HEAD.
  ASSERT_TRUE(SendAll(fd, kScrape));
  std::string r1 = ReadResponse(fd);
  EXPECT_EQ(r1.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << r1;
  EXPECT_NE(r1.find("Content-Type: text/plain; version=0.0.4"), std::string::npos);
  EXPECT_NE(r1.find("Connection: keep-alive\r\n"), std::string::npos);
  ASSERT_TRUE(SendAll(fd, std::string("HEAD /metrics HTTP/1.1\r\n\r\n") + kScrape));
  std::string r2 = ReadResponse(fd, /*head_request=*/true);
  EXPECT_EQ(r2.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << r2;
  std::string r3 = ReadResponse(fd);
  EXPECT_EQ(r3.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << r3;
  EXPECT_NE(r3.find("\nspd_metrics_scrapes_total "), std::string::npos);

  ASSERT_TRUE(SendAll(fd, "GET /nope HTTP/1.1\r\n\r\n"));
  EXPECT_EQ(ReadResponse(fd).rfind("HTTP/1.1 404 Not Found\r\n", 0), 0u);
  ASSERT_TRUE(SendAll(fd, "DELETE /metrics HTTP/1.1\r\n\r\n"));
  std::string r405 = ReadResponse(fd);
  EXPECT_EQ(r405.rfind("HTTP/1.1 405 Method Not Allowed\r\n", 0), 0u) << r405;
  EXPECT_NE(r405.find("Allow: GET, HEAD\r\n"), std::string::npos);

  // HTTP/1.0 without keep-alive: one reply, then the server closes.
  ASSERT_TRUE(SendAll(fd, "GET /metrics HTTP/1.0\r\n\r\n"));
  std::string r10 = ReadResponse(fd);
  EXPECT_EQ(r10.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << r10;
  EXPECT_NE(r10.find("Connection: close\r\n"), std::string::npos);
  EXPECT_TRUE(ClosedWithin(fd, 2000 * kMs));

  int bad = Connect();
  ASSERT_TRUE(SendAll(bad, "what is this\r\n\r\n"));
  EXPECT_EQ(ReadResponse(bad).rfind("HTTP/1.1 400 Bad Request\r\n", 0), 0u);
  EXPECT_TRUE(ClosedWithin(bad, 2000 * kMs));
}

// A scraper that accepts gzip (Prometheus does) gets the same text compressed.
TEST_P(MetricsServerTest, GzipWhenTheClientAcceptsIt) {
  Start(MetricsServerOptions{});
  int fd = Connect();
  ASSERT_TRUE(SendAll(fd, "GET /metrics HTTP/1.1\r\nAccept-Encoding: deflate, gzip\r\n\r\n"));
  const std::string r = ReadResponse(fd);
  ASSERT_EQ(r.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << r;
  ASSERT_NE(r.find("Content-Encoding: gzip\r\n"), std::string::npos) << r.substr(0, 300);
  const size_t body = r.find("\r\n\r\n") + 4;
  z_stream z{};
  ASSERT_EQ(inflateInit2(&z, 15 + 16), Z_OK);
  std::string text(4 << 20, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(r.data() + body));
  z.avail_in = static_cast<uInt>(r.size() - body);
  z.next_out = reinterpret_cast<Bytef*>(text.data());
  z.avail_out = static_cast<uInt>(text.size());
  EXPECT_EQ(inflate(&z, Z_FINISH), Z_STREAM_END);
  text.resize(z.total_out);
  inflateEnd(&z);
  EXPECT_NE(text.find("\nspd_metrics_scrapes_total "), std::string::npos) << text.substr(0, 200);
  // Without the header: plain text.
  ASSERT_TRUE(SendAll(fd, kScrape));
  const std::string plain = ReadResponse(fd);
  EXPECT_EQ(plain.find("Content-Encoding"), std::string::npos);
  EXPECT_NE(plain.find("\nspd_metrics_scrapes_total "), std::string::npos);
  close(fd);
}

TEST_P(MetricsServerTest, IdleKeepAliveIsClosedAndTheReactorSleeps) {
  MetricsServerOptions o;
  o.idle_timeout_ns = 300 * kMs;
  Start(o);
  const uint64_t idle0 = CounterValue("spd_metrics_connections_dropped_idle_timeout_total");
  int fd = Connect();
  ASSERT_TRUE(SendAll(fd, kScrape));
  ASSERT_EQ(ReadResponse(fd).rfind("HTTP/1.1 200 OK\r\n", 0), 0u);
  const uint64_t start = MonotonicNs();
  EXPECT_TRUE(ClosedWithin(fd, 3000 * kMs));
  EXPECT_GE(MonotonicNs() - start, 250 * kMs);
  EXPECT_EQ(CounterValue("spd_metrics_connections_dropped_idle_timeout_total") - idle0, 1u);
  EXPECT_EQ(Connections(), 0u);
  // No connection, no timer: the reactor enters the kernel a handful of times in 300 ms (the
  // posted tasks below), not once per timer period.
  const uint64_t enters0 = OnReactor([this] { return reactor_->enters(); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_LE(OnReactor([this] { return reactor_->enters(); }) - enters0, 6u);
}

TEST_P(MetricsServerTest, ClientThatNeverReadsIsDroppedAfterTheSendTimeout) {
  MetricsServerOptions o;
  o.send_timeout_ns = 300 * kMs;
  o.idle_timeout_ns = 60'000 * kMs;
  o.header_timeout_ns = 60'000 * kMs;
  Start(o);
  const uint64_t dropped0 = CounterValue("spd_metrics_connections_dropped_send_timeout_total");
  int fd = Connect();
  // Pipelined scrapes, never a read: replies fill both socket buffers, then the server's send
  // would block. Keep writing until ours does too (at most 3 s).
  std::string batch;
  for (int i = 0; i < 100; ++i) batch += kScrape;
  const uint64_t start = MonotonicNs();
  bool blocked = false;
  while (!blocked && MonotonicNs() - start < 3000 * kMs) {
    ssize_t n = send(fd, batch.data(), batch.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd p{fd, POLLOUT, 0};
      blocked = poll(&p, 1, 200) == 0;  // the server stopped reading
    } else if (n < 0) {
      break;  // dropped already
    }
  }
  const uint64_t end = MonotonicNs() + 3000 * kMs;
  while (CounterValue("spd_metrics_connections_dropped_send_timeout_total") == dropped0 &&
         MonotonicNs() < end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(CounterValue("spd_metrics_connections_dropped_send_timeout_total") - dropped0, 1u);
  // Other clients were served meanwhile.
  int other = Connect();
  ASSERT_TRUE(SendAll(other, kScrape));
  EXPECT_EQ(ReadResponse(other).rfind("HTTP/1.1 200 OK\r\n", 0), 0u);
}

INSTANTIATE_TEST_SUITE_P(Engines, MetricsServerTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& i) {
                           return i.param ? std::string("Epoll") : std::string("Uring");
                         });

}  // namespace
}  // namespace spd
