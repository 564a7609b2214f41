// One HTTP POST to an etcd member with libcurl (internal to src/cluster).
//
// Each transfer runs in a curl multi handle (an HttpLoop), polled in slices, so that a thread
// that owns the loop can be woken (Wake, from any thread) and told to give up: a watcher's Stop
// interrupts its stream, its backoff and its re-list this way.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace spd::etcd_internal {

class HttpLoop {
 public:
  HttpLoop();
  ~HttpLoop();
  HttpLoop(const HttpLoop&) = delete;
  HttpLoop& operator=(const HttpLoop&) = delete;

  bool ok() const { return multi_ != nullptr; }
  void Wake();  // from any thread: the poll in progress returns now
  void* multi() const { return multi_; }

 private:
  void* multi_;  // CURLM*
};

struct HttpRequest {
  std::string url;  // endpoint + path
  std::string body;
  std::chrono::milliseconds connect_timeout{1000};
  std::chrono::milliseconds total_timeout{0};  // 0: none (a stream)
  size_t max_body = 0;                         // unary: cap of the answer; stream: cap of one line
  // A stream: every complete line of the answer is handed here (without its '\n') as it
  // arrives; returning false ends the transfer (Outcome::kAborted).
  std::function<bool(std::string_view line)> on_line;
  // Called between poll slices (and after a Wake); returning false ends the transfer
  // (Outcome::kAborted).
  std::function<bool()> keep_going;
  bool tcp_keepalive = false;
  std::chrono::seconds keepalive_idle{5};
  std::chrono::seconds keepalive_interval{2};
};

struct HttpResponse {
  enum class Outcome {
    kDone,       // an HTTP answer arrived whole (any status)
    kNoConnect,  // the endpoint could not be reached: nothing was sent
    kTimeout,    // connected, then the deadline passed
    kBroken,     // connected, then the transfer failed (connection reset, bad HTTP, ...)
    kTooLarge,   // the answer (or a stream line) was larger than max_body
    kAborted,    // on_line or keep_going said stop
  };
  Outcome outcome = Outcome::kBroken;
  long http_status = 0;
  std::string body;  // unary: the answer; stream: what followed the last '\n'

  std::string error;  // libcurl's reason when not kDone
};

// Runs `req` on `loop` to its end.
HttpResponse HttpPost(HttpLoop* loop, const HttpRequest& req);

// curl_global_init once per process; an error Status when it failed.
Status HttpGlobalInit();

}  // namespace spd::etcd_internal
