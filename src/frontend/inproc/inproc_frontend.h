// InprocFrontend: a frontend with no wire. Code on a reactor takes a preallocated request,
// fills it and submits it through the dispatcher, exactly as the NBD frontend does for a
// request read from a socket. Tests drive the whole pipeline with it, and bench/pipeline
// measures the cost of everything above the backend with no socket in the way. That it needs
// nothing from the dispatcher that NBD does not also use is the proof that the pipeline is
// protocol-neutral.
//
// Limits: queue_depth requests in flight at most (Take returns null beyond), each with a buffer
// of buffer_bytes.
//
// Thread-safety: construct, use and destroy on one reactor's thread; destroy with nothing in
// flight.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "dispatch/dispatcher.h"

namespace spd {

class InprocFrontend {
 public:
  struct Options {
    uint32_t queue_depth = 32;
    // Each request's own buffer; 0: none, the caller sets req->buf (aligned to
    // Dispatcher::buffer_alignment_bytes()) to memory it keeps until the callback.
    uint32_t buffer_bytes = 1u << 20;
  };
  // Runs on the reactor after the request completed; the request goes back to the free list
  // when it returns (read req->buf, req->result, req->extents inside).
  using Callback = void (*)(void* arg, IoRequest* req);

  // REQUIRES: on `reactor`'s thread.
  InprocFrontend(Dispatcher* dispatcher, Reactor* reactor, Options options);
  ~InprocFrontend();
  InprocFrontend(const InprocFrontend&) = delete;
  InprocFrontend& operator=(const InprocFrontend&) = delete;

  // A free request with its buffer (req->buf, buffer_bytes, aligned) and extent scratch set,
  // every other field reset; null when queue_depth requests are in flight.
  IoRequest* Take();
  // Submits a request from Take(); `cb(arg, req)` runs on this reactor once it completed.
  void Submit(IoRequest* req, Callback cb, void* arg);
  // Gives back a request from Take() that was never submitted.
  void Release(IoRequest* req);
  uint32_t inflight() const { return inflight_; }
  uint32_t buffer_bytes() const { return options_.buffer_bytes; }

  static constexpr uint32_t kExtentsMax = 64;

 private:
  struct Slot;
  static void OnDone(IoRequest* req);

  Dispatcher* dispatcher_;
  Options options_;
  std::unique_ptr<DispatchPort> port_;
  std::unique_ptr<Slot[]> slots_;
  Slot* free_ = nullptr;
  uint32_t inflight_ = 0;
};

}  // namespace spd
