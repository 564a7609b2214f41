// Reactor: one event loop per core, on io_uring when the kernel allows it and on epoll otherwise.
//
// A reactor owns its thread's work: sockets, timers, backend I/O of the volumes it owns. Other
// threads talk to it only through Post(), a lock-free multi-producer queue with an eventfd
// wake-up (the "message ring"). The loop sleeps in io_uring_enter (or epoll_pwait2) whenever it
// has nothing to do, so an idle daemon uses no CPU.
//
// One loop iteration ("tick"): run deferred tasks, submit every queued SQE and wait for at least
// one event in a single io_uring_enter, handle every ready completion, fire expired timers,
// drain posted messages. Everything a tick produces (backend SQEs, socket replies) is batched
// into the next single kernel crossing.
//
// Thread-safety: every method is for the owning thread only, except Post() and Stop().
#pragma once

#include <liburing.h>
#include <time.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace spd {

// The target of a ring event. The user_data of every SQE submitted through a reactor points at
// one; `fn` gets the CQE's res and flags. In epoll mode readiness events arrive the same way,
// with res = the poll mask (POLLIN, POLLOUT, ...).
struct Completion {
  void (*fn)(Completion* self, int32_t res, uint32_t cqe_flags) = nullptr;
};

// A unit of deferred or posted work. Intrusive, so queuing allocates nothing.
struct Task {
  void (*fn)(Task* self) = nullptr;
  Task* next = nullptr;
};

struct Timer {
  void (*fn)(Timer* self) = nullptr;
  uint64_t deadline_ns = 0;      // CLOCK_MONOTONIC
  size_t heap_index = SIZE_MAX;  // owned by the reactor; SIZE_MAX when not armed
};

enum class ReactorEngine { kUring, kEpoll };

struct ReactorOptions {
  // Submission queue entries; the completion queue is twice as large.
  unsigned ring_entries = 4096;
  // Never try io_uring (the kernel fallback; `--backend posix` implies it).
  bool force_epoll = false;
  // Timers a reactor can hold at once (a named limit; arming more is a programmer error).
  size_t timers_max = 65536;
  // Adaptive polling: for up to this long after the last completion, look for
  // new completions without sleeping, instead of blocking in io_uring_enter. A reactor that
  // sleeps between requests pays a wake-up per request (tens of µs when it is woken from another
  // core); one that polls while requests keep arriving does not. With no traffic the window
  // passes and the reactor sleeps, so an idle daemon stays idle. 0: never poll.
  uint64_t poll_ns = 0;
  // ReactorGroup: pin each extra reactor's thread to a core of its own.
  bool pin_threads = true;
  // The `reactor` label of its spd_reactor_* metric series ("0" the daemon's main reactor, "1"..
  // a ReactorGroup's others); empty: "unnamed-N" in creation order.
  std::string name;
};

uint64_t MonotonicNs();

class Reactor {
 public:
  // Creates a reactor for the calling thread. Tries io_uring first unless force_epoll; if ring
  // set-up fails (sysctl kernel.io_uring_disabled, seccomp, old kernel) it falls back to epoll,
  // logs the reason once and counts it in spd_reactor_uring_fallback_total.
  static Result<std::unique_ptr<Reactor>> Create(const ReactorOptions& options);
  ~Reactor();
  Reactor(const Reactor&) = delete;
  Reactor& operator=(const Reactor&) = delete;

  ReactorEngine engine() const { return engine_; }
  // Why io_uring is not in use ("" when it is).
  const std::string& fallback_reason() const { return fallback_reason_; }

  // io_uring access for modules that submit their own operations (the uring backend).
  // REQUIRES: engine() == kUring. The returned SQE must get user_data = a Completion*.
  // Never returns null: when the SQ is full it submits what is queued first.
  io_uring_sqe* GetSqe();
  io_uring* ring() { return &ring_; }

  // Edge-triggered readiness. `c->fn` runs with the poll mask each time fd becomes readable
  // (POLLIN, POLLRDHUP, POLLHUP, POLLERR) until Unwatch. The handler must read until EAGAIN.
  [[nodiscard]] Status Watch(int fd, Completion* c);
  // Like Watch, but in uring mode the poll fires once and the caller re-arms it (by calling
  // WatchOnce again) after handling the event. Such a poll needs no cancellation: shutting the
  // socket down makes it fire one last time. In epoll mode it is the same as Watch.
  [[nodiscard]] Status WatchOnce(int fd, Completion* c);
  // One notification when fd becomes writable (POLLOUT), delivered to the same kind of
  // Completion. Used after a send returned EAGAIN.
  [[nodiscard]] Status ArmWritable(int fd, Completion* c);
  // Stops notifications for fd. In uring mode the cancellation completes later: `c` gets a final
  // event with res = -ECANCELED (cqe_flags without IORING_CQE_F_MORE), and the caller must keep
  // `c` alive until then. In epoll mode the call is immediate and no further event arrives after
  // the current tick. Returns the number of final events the caller must still wait for.
  int Unwatch(int fd, Completion* c);

  // Runs t->fn on this reactor after the current batch of events, before the loop sleeps.
  void Defer(Task* t);
  // Thread-safe: queues t to run on this reactor's thread and wakes it if it sleeps.
  void Post(Task* t);

  // REQUIRES: t not armed.
  void ArmTimer(Timer* t, uint64_t deadline_ns);
  void CancelTimer(Timer* t);

  // Runs the loop until Stop(). REQUIRES: called on the thread that created the reactor.
  void Run();
  // Runs one tick; blocks at most `timeout_ns` waiting for events (0 = do not block).
  // For tests and for synchronous helpers that drive a reactor until a condition holds.
  void RunOnce(uint64_t timeout_ns);
  // Thread-safe.
  void Stop();
  bool stopping() const { return stop_.load(std::memory_order_acquire); }

  // Statistics for tests and metrics (owning thread).
  uint64_t ticks() const { return ticks_; }
  uint64_t enters() const { return enters_; }
  // Polls that found work before their window ended, and polls in all (any thread).
  uint64_t poll_hits() const { return stats_.poll_hits.load(std::memory_order_relaxed); }
  uint64_t polls() const { return stats_.polls.load(std::memory_order_relaxed); }
  uint64_t poll_window_ns() const { return poll_window_ns_; }
  const std::string& name() const { return name_; }

  // Every live reactor's figures, for the spd_reactor_* families (labelled `reactor`): they are
  // kept per reactor by its own thread (one writer: plain relaxed loads and stores, no locked
  // instruction) and read here, at a scrape, from any thread. Busy time is the reactor
  // thread's CPU time (its CPU clock), so measuring it costs the loop nothing.
  struct Figures {
    std::string name;
    uint64_t busy_ns = 0;
    uint64_t polls = 0;
    uint64_t poll_hits = 0;
    uint64_t poll_ns = 0;
    uint64_t wakeups = 0;
    uint64_t sleeps = 0;
  };
  static std::vector<Figures> AllFigures();

 private:
  Reactor() = default;
  Status InitUring(const ReactorOptions& options);
  Status InitEpoll();
  void Tick(uint64_t timeout_ns);
  void WaitUring(uint64_t timeout_ns, bool enter = true);
  int WaitEpoll(uint64_t timeout_ns);  // events handled
  // Spins (non-blocking io_uring_enter, or epoll_pwait2 that handles what it finds) until a
  // completion or posted task shows up or the poll window that started at the last completion ends;
  // at most `cap_ns`. True when work arrived.
  bool Poll(uint64_t cap_ns);
  // Adapts the poll window after a sleep that ended with completions.
  void AfterSleep(uint64_t last_event_before_ns);
  static constexpr uint64_t kPollWindowMinNs = 2'000;
  void RunDeferred();
  void RunTimers();
  void DrainPosted();
  void ArmWakeRead();
  void IssuePollRemoval(Completion* removal);
  uint64_t NextTimeoutNs(uint64_t cap_ns) const;
  void HeapUp(size_t i);
  void HeapDown(size_t i);
  void HeapRemove(size_t i);
  static void OnWake(Completion* c, int32_t res, uint32_t flags);

  ReactorEngine engine_ = ReactorEngine::kEpoll;
  std::string fallback_reason_;
  io_uring ring_{};
  bool ring_ready_ = false;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  uint64_t wake_buf_ = 0;
  struct WakeCompletion : Completion {
    Reactor* reactor;
  };
  WakeCompletion wake_completion_;
  bool wake_armed_ = false;

  Task* deferred_head_ = nullptr;
  Task* deferred_tail_ = nullptr;
  std::atomic<Task*> posted_{nullptr};
  std::atomic<bool> sleeping_{false};
  std::atomic<bool> stop_{false};

  std::vector<Timer*> timers_;
  size_t timers_max_ = 0;

  uint64_t ticks_ = 0;
  uint64_t enters_ = 0;
  uint64_t poll_ns_ = 0;         // the longest window (ReactorOptions::poll_ns)
  uint64_t poll_window_ns_ = 0;  // the current one: halved by a miss, grown by a near wake-up
  uint64_t last_event_ns_ = 0;   // when the last completion was seen (only kept when polling)
  // Single-writer (the owning thread), read by AllFigures from any thread.
  struct Stats {
    std::atomic<uint64_t> polls{0};
    std::atomic<uint64_t> poll_hits{0};
    std::atomic<uint64_t> poll_ns{0};
    std::atomic<uint64_t> wakeups{0};
    std::atomic<uint64_t> sleeps{
        0};  // blocking waits (io_uring_enter or epoll_pwait2 that may sleep)
    std::atomic<uint64_t> busy_ns{0};  // the last CPU clock reading (a finished thread has none)
  } stats_;
  std::string name_;
  clockid_t cpu_clock_ = 0;
  bool has_cpu_clock_ = false;
};

}  // namespace spd
