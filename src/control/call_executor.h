// CallExecutor: runs control calls that block (on etcd, on other nodes: a replicated create
// waits up to 4 s, a promote or demote up to 15 s) one at a time on a thread of its own, never
// on gRPC's threads and never on a reactor. At most `queued_max` calls wait behind the one that
// runs; more are refused (Submit says so) rather than queued or given a thread each. At Stop the
// running call ends by its own deadline and every waiting one runs with a refusal (UNAVAILABLE),
// so each call is answered exactly once and nothing outlives the server.
//
// Thread-safety: Submit from any thread; Stop once, from the thread that owns the executor.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "common/os_util.h"
#include "common/status.h"

namespace spd {

class CallExecutor {
 public:
  // A call: run when `refused` is OK, else it must answer with `refused` and do nothing else.
  using Call = std::function<void(const Status& refused)>;

  explicit CallExecutor(size_t queued_max) : queued_max_(queued_max) {}
  ~CallExecutor() { Stop(); }
  CallExecutor(const CallExecutor&) = delete;
  CallExecutor& operator=(const CallExecutor&) = delete;

  // False (the call is not kept: the caller answers it) when `queued_max` calls already wait
  // or the executor stopped.
  [[nodiscard]] bool Submit(Call call) {
    std::lock_guard<std::mutex> l(mu_);
    if (stop_ || queue_.size() >= queued_max_) return false;
    queue_.push_back(std::move(call));
    if (!thread_.joinable())
      thread_ = std::thread([this] {
        NameThisThread("spd-ctl-calls");
        Loop();
      });
    cv_.notify_one();
    return true;
  }
  bool stopped() const {
    std::lock_guard<std::mutex> l(mu_);
    return stop_;
  }
  size_t waiting() const {
    std::lock_guard<std::mutex> l(mu_);
    return queue_.size();
  }
  void Stop() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
      cv_.notify_one();
    }
    if (thread_.joinable()) thread_.join();
  }

 private:
  void Loop() {
    for (;;) {
      Call call;
      bool stopping = false;
      {
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait(l, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;
        call = std::move(queue_.front());
        queue_.pop_front();
        stopping = stop_;
      }
      call(stopping ? Unavailable("the daemon is shutting down") : Status::Ok());
    }
  }

  const size_t queued_max_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Call> queue_;  // guarded by mu_
  bool stop_ = false;       // guarded by mu_
  std::thread thread_;
};

}  // namespace spd
