// The scheduler stage: the one place between dispatch and the volume where requests may be held
// back and reordered (reservations, weights, limits, latency targets: the QoS issue fills it).
//
// The dispatcher hands every request to IoScheduler::Submit once, after routing it and before
// any volume or backend work, and the scheduler hands it back through Sink::Release (at once, or
// later from a timer or a completion) on the same reactor. A scheduler may release inline, in
// Submit's frame (the pass-through always does; the QoS scheduler when nothing waits), or later
// from a timer or from Completed.
//
// Thread-safety: Submit, Release and Completed of one request all run on one reactor (the one
// the request was submitted on); a scheduler shared by reactors keeps per-reactor state.
#pragma once

namespace spd {

class Reactor;
struct IoRequest;

class IoScheduler {
 public:
  class Sink {
   public:
    virtual void Release(IoRequest* req) = 0;

   protected:
    ~Sink() = default;
  };
  virtual ~IoScheduler() = default;
  virtual const char* name() const = 0;
  // Once per dispatcher port, on `reactor`'s thread: the scheduler's state for requests
  // submitted there (DispatchPort::sched_state()), e.g. that reactor's shard. Default: none.
  virtual void* PortState(Reactor* reactor) { return nullptr; }
  // Takes `req`; calls sink->Release(req) when it may run.
  virtual void Submit(IoRequest* req, Sink* sink) = 0;
  // `req` (released earlier) has completed: for schedulers that account for service time.
  virtual void Completed(IoRequest* req) = 0;
};

// Today's policy: release everything at once, in arrival order.
class PassThroughScheduler final : public IoScheduler {
 public:
  const char* name() const override { return "pass-through"; }
  void Submit(IoRequest* req, Sink* sink) override { sink->Release(req); }
  void Completed(IoRequest* req) override {}
};

}  // namespace spd
