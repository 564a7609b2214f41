// A tiny HTTP/1.1 endpoint for Prometheus: GET (or HEAD) /metrics returns every spd::Counter in
// the text exposition format; other paths get 404, other methods on /metrics 405. Connections
// persist (keep-alive) as HTTP/1.1 says, so a scraper can reuse one.
//
// It runs on a reactor like everything else and never blocks it: sockets are non-blocking, a
// reply that does not fit the socket buffer waits for POLLOUT, and every connection has one
// deadline (a reactor timer) for what it is doing now: receiving a request, sitting idle between
// requests, receiving its reply, or closing. No client can keep another from scraping:
//  - at most clients_max connections are kept; a new one evicts the oldest that is not being
//    answered (see Accept for why evicting beats refusing);
//  - a request must arrive whole within header_timeout_ns and within request_bytes_max (431);
//  - a reply must be taken within send_timeout_ns.
// Every drop is counted (spd_metrics_connections_dropped_<reason>_total). With no connection
// open no timer is armed, so an idle endpoint lets its reactor sleep.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "reactor/reactor.h"

namespace spd {

struct MetricsServerOptions {
  // Connections kept at once; the next one evicts the oldest waiting one.
  size_t clients_max = 64;
  // Bytes of a request head (request line and headers); more gets 431 and a close.
  size_t request_bytes_max = 8192;
  // From accept (or from the first byte of a later request on a kept-alive connection) to the
  // end of the request head. Slow senders (slowloris) and silent clients are dropped after it.
  uint64_t header_timeout_ns = 5'000'000'000ull;
  // A kept-alive connection with no new request for this long is closed.
  uint64_t idle_timeout_ns = 60'000'000'000ull;
  // A client has this long to take a whole reply; one that does not read is dropped.
  uint64_t send_timeout_ns = 10'000'000'000ull;
  // After a reply with "Connection: close", how long the client may take to close its end while
  // we discard what it still sends (closing with unread input would reset the connection and
  // could destroy the reply before the client reads it).
  uint64_t linger_ns = 2'000'000'000ull;
};

class MetricsServer {
 public:
  explicit MetricsServer(Reactor* reactor, const MetricsServerOptions& options = {});
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // host is an IPv4 address; port 0 picks a free port (see port()).
  [[nodiscard]] Status Start(const std::string& host, uint16_t port);
  uint16_t port() const { return port_; }
  // Connections open now (owning thread; for tests).
  size_t connections() const { return live_; }

 private:
  enum class State {
    kFree,       // no socket; reusable
    kReading,    // waiting for (the rest of) a request
    kSending,    // a reply is queued in `out`
    kLingering,  // reply sent, our side shut down; discarding input until the client closes
    kClosing,    // socket shut down; waiting for the final poll completions (io_uring)
  };
  // Why a connection was dropped; each reason has its own counter.
  enum class DropReason {
    kNone,
    kHeaderTimeout,
    kIdleTimeout,
    kSendTimeout,
    kEvicted,
    kOversize,
    kBadRequest
  };
  struct Conn;
  struct Watch : Completion {
    Conn* conn = nullptr;
  };
  struct DeadlineTimer : Timer {
    Conn* conn = nullptr;
  };
  struct Conn {
    MetricsServer* server = nullptr;
    int fd = -1;
    State state = State::kFree;
    std::string in;   // received, not yet answered
    std::string out;  // the reply being sent
    size_t out_off = 0;
    bool request_started = false;  // bytes of the next request have arrived
    bool close_after_send = false;
    bool peer_eof = false;
    bool rx_armed = false;        // io_uring: a one-shot readable poll is in flight
    bool tx_armed = false;        // io_uring: a one-shot writable poll is in flight
    uint64_t last_active_ns = 0;  // accept or last bytes received: eviction order
    Watch rx;
    Watch tx;
    DeadlineTimer timer;
  };
  struct Listener : Completion {
    MetricsServer* server = nullptr;
  };

  struct ResumeTimer : Timer {
    MetricsServer* server = nullptr;
  };

  static void OnAccept(Completion* c, int32_t res, uint32_t flags);
  static void OnAcceptResume(Timer* t);
  static void OnRx(Completion* c, int32_t res, uint32_t flags);
  static void OnTx(Completion* c, int32_t res, uint32_t flags);
  static void OnDeadline(Timer* t);

  // Accepts every queued connection, or as many as there are conn objects for.
  void AcceptPending();
  bool HasConnRoom() const;
  void Accept(int fd);
  Conn* NewConn();
  Conn* EvictionVictim() const;
  // Drives a connection as far as it goes without blocking: reads, answers, sends, closes.
  void Advance(Conn* c);
  // Receives into c->in up to the request limit. False when the connection was closed.
  bool Receive(Conn* c);
  // Answers the request head c->in[0, head_end) and queues the reply.
  void Answer(Conn* c, size_t head_end);
  void Refuse(Conn* c, int code, DropReason reason);
  void QueueReply(Conn* c, int code, std::string_view extra_headers, const std::string& body,
                  bool send_body);
  // Sends what the socket takes. True when the whole reply is out.
  bool Flush(Conn* c);
  void Linger(Conn* c);
  void SetDeadline(Conn* c, uint64_t deadline_ns);
  void Close(Conn* c, DropReason reason);
  void MaybeRelease(Conn* c);
  void RearmRx(Conn* c);

  Reactor* reactor_;
  MetricsServerOptions options_;
  int fd_ = -1;
  uint16_t port_ = 0;
  Listener listener_;
  ResumeTimer accept_resume_;  // armed only while accepting waits for conn objects
  // Every Conn ever made, live or free. Conns are reused, never deleted before the server: an
  // epoll batch may still hold an event for a conn closed earlier in the same batch, and a stale
  // event on a reused conn only makes it try a non-blocking read or send that finds nothing.
  std::vector<std::unique_ptr<Conn>> conns_;
  size_t live_ = 0;  // conns in kReading, kSending or kLingering
};

}  // namespace spd
