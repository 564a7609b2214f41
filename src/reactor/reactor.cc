#include "reactor/reactor.h"

#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <pthread.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <mutex>

#include "common/counters.h"
#include "common/log.h"

namespace spd {
namespace {

Counter uring_fallback_total("spd_reactor_uring_fallback_total",
                             "Reactors that fell back to epoll because io_uring set-up failed.");
Counter posted_total("spd_reactor_posted_total", "Cross-reactor messages posted.");

// Adds to a counter only its owning thread writes: a plain load and store, no locked
// instruction (readers on other threads see a recent value).
inline void Bump(std::atomic<uint64_t>& a, uint64_t n = 1) {
  a.store(a.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

// Every live reactor, for the spd_reactor_* families.
std::mutex& LiveMu() {
  static std::mutex mu;
  return mu;
}
std::vector<Reactor*>& Live() {
  static std::vector<Reactor*> live;
  return live;
}
uint64_t unnamed_seq = 0;  // guarded by LiveMu()

void RenderReactors(std::string* out) {
  const std::vector<Reactor::Figures> all = Reactor::AllFigures();
  if (all.empty()) return;
  struct Family {
    const char* name;
    const char* help;
    const char* type;
    double (*get)(const Reactor::Figures&);
  };
  static const Family kFamilies[] = {
      {"spd_reactor_busy_seconds_total",
       "CPU time of the reactor's thread (handling events, polling; not sleeping).", "counter",
       [](const Reactor::Figures& f) { return f.busy_ns / 1e9; }},
      {"spd_reactor_polls_total",
       "Adaptive polls: times the reactor looked for work without sleeping.", "counter",
       [](const Reactor::Figures& f) { return static_cast<double>(f.polls); }},
      {"spd_reactor_poll_hits_total",
       "Adaptive polls that found work before their window ended (a sleep and wake-up saved).",
       "counter", [](const Reactor::Figures& f) { return static_cast<double>(f.poll_hits); }},
      {"spd_reactor_poll_seconds_total",
       "Time the reactor spent in adaptive polls (CPU spent so as not to sleep).", "counter",
       [](const Reactor::Figures& f) { return f.poll_ns / 1e9; }},
      {"spd_reactor_sleeps_total",
       "Waits for events that could block (io_uring_enter or epoll_pwait2 with a timeout).",
       "counter", [](const Reactor::Figures& f) { return static_cast<double>(f.sleeps); }},
      {"spd_reactor_wakeups_total",
       "Eventfd wake-ups: another thread posted work while the reactor slept.", "counter",
       [](const Reactor::Figures& f) { return static_cast<double>(f.wakeups); }},
  };
  for (const Family& fam : kFamilies) {
    PromHeader(out, fam.name, fam.help, fam.type);
    for (const Reactor::Figures& f : all)
      PromSample(out, fam.name, "reactor=" + PromLabel(f.name), fam.get(f));
  }
}
MetricsCollector reactor_collector(RenderReactors);

constexpr uint32_t kReadableMask = POLLIN | POLLRDHUP | POLLHUP | POLLERR;
// Marks the user_data of SQEs whose completion nobody waits for (cancellations).
constexpr uint64_t kIgnoreUserData = 0;

}  // namespace

uint64_t MonotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

Result<std::unique_ptr<Reactor>> Reactor::Create(const ReactorOptions& options) {
  std::unique_ptr<Reactor> r(new Reactor());
  r->timers_max_ = options.timers_max;
  r->timers_.reserve(options.timers_max);
  r->wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (r->wake_fd_ < 0) return Status::FromErrno(errno, "reactor: eventfd");
  r->wake_completion_.fn = &Reactor::OnWake;
  r->wake_completion_.reactor = r.get();
  bool uring = false;
  if (!options.force_epoll) {
    Status s = r->InitUring(options);
    if (s.ok()) {
      uring = true;
    } else {
      r->fallback_reason_ = s.ToString();
      uring_fallback_total.Add();
    }
  } else {
    r->fallback_reason_ = "epoll requested";
  }
  if (!uring) SPD_RETURN_IF_ERROR(r->InitEpoll());
  r->poll_ns_ = r->poll_window_ns_ = options.poll_ns;
  r->has_cpu_clock_ = pthread_getcpuclockid(pthread_self(), &r->cpu_clock_) == 0;
  std::lock_guard<std::mutex> l(LiveMu());
  r->name_ = options.name.empty() ? "unnamed-" + std::to_string(++unnamed_seq) : options.name;
  Live().push_back(r.get());
  return r;
}

std::vector<Reactor::Figures> Reactor::AllFigures() {
  std::vector<Figures> all;
  std::lock_guard<std::mutex> l(LiveMu());
  all.reserve(Live().size());
  for (Reactor* r : Live()) {
    Stats& s = r->stats_;
    if (r->has_cpu_clock_) {
      // The thread may have ended (a group's reactor lives on until the group is destroyed):
      // then its last reading stands. A counter never goes back.
      timespec ts{};
      if (clock_gettime(r->cpu_clock_, &ts) == 0) {
        const uint64_t ns =
            static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
        if (ns > s.busy_ns.load(std::memory_order_relaxed))
          s.busy_ns.store(ns, std::memory_order_relaxed);
      }
    }
    Figures f;
    f.name = r->name_;
    f.busy_ns = s.busy_ns.load(std::memory_order_relaxed);
    f.polls = s.polls.load(std::memory_order_relaxed);
    f.poll_hits = s.poll_hits.load(std::memory_order_relaxed);
    f.poll_ns = s.poll_ns.load(std::memory_order_relaxed);
    f.wakeups = s.wakeups.load(std::memory_order_relaxed);
    f.sleeps = s.sleeps.load(std::memory_order_relaxed);
    all.push_back(std::move(f));
  }
  return all;
}

Status Reactor::InitUring(const ReactorOptions& options) {
  io_uring_params p{};
  p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN |
            IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
  p.cq_entries = options.ring_entries * 2;
  int rc = io_uring_queue_init_params(options.ring_entries, &ring_, &p);
  if (rc == -EINVAL) {
    // Older kernels lack some of the flags: retry with the basic set.
    p = io_uring_params{};
    p.flags = IORING_SETUP_CQSIZE;
    p.cq_entries = options.ring_entries * 2;
    rc = io_uring_queue_init_params(options.ring_entries, &ring_, &p);
  }
  if (rc < 0) return Status::FromErrno(-rc, "io_uring_setup");
  ring_ready_ = true;
  engine_ = ReactorEngine::kUring;
  // Registering the ring fd saves an fdget per io_uring_enter; failure only costs speed.
  (void)io_uring_register_ring_fd(&ring_);
  ArmWakeRead();
  return Status::Ok();
}

Status Reactor::InitEpoll() {
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) return Status::FromErrno(errno, "epoll_create1");
  engine_ = ReactorEngine::kEpoll;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = &wake_completion_;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev) < 0)
    return Status::FromErrno(errno, "epoll_ctl(eventfd)");
  return Status::Ok();
}

Reactor::~Reactor() {
  {
    std::lock_guard<std::mutex> l(LiveMu());
    auto& live = Live();
    live.erase(std::remove(live.begin(), live.end(), this), live.end());
  }
  if (ring_ready_) io_uring_queue_exit(&ring_);
  if (epoll_fd_ >= 0) close(epoll_fd_);
  if (wake_fd_ >= 0) close(wake_fd_);
}

io_uring_sqe* Reactor::GetSqe() {
  SPD_ASSERT(engine_ == ReactorEngine::kUring);
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  while (sqe == nullptr) {
    // SQ full: push what is queued to the kernel and take a fresh slot.
    int rc = io_uring_submit(&ring_);
    ++enters_;
    if (rc < 0 && rc != -EBUSY && rc != -EAGAIN && rc != -EINTR) {
      SPD_LOG_ERROR("io_uring_submit: %s", strerror(-rc));
    }
    sqe = io_uring_get_sqe(&ring_);
  }
  return sqe;
}

void Reactor::ArmWakeRead() {
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_read(sqe, wake_fd_, &wake_buf_, sizeof wake_buf_, 0);
  io_uring_sqe_set_data(sqe, &wake_completion_);
  wake_armed_ = true;
}

void Reactor::OnWake(Completion* c, int32_t res, uint32_t flags) {
  Reactor* self = static_cast<WakeCompletion*>(c)->reactor;
  Bump(self->stats_.wakeups);
  if (self->engine_ == ReactorEngine::kUring) {
    self->wake_armed_ = false;
    if (!self->stopping()) self->ArmWakeRead();
  } else {
    uint64_t v;
    while (read(self->wake_fd_, &v, sizeof v) > 0) {
    }
  }
  // Posted tasks are drained every tick; nothing else to do here.
}

Status Reactor::Watch(int fd, Completion* c) {
  if (engine_ == ReactorEngine::kUring) {
    io_uring_sqe* sqe = GetSqe();
    io_uring_prep_poll_multishot(sqe, fd, kReadableMask);
    io_uring_sqe_set_data(sqe, c);
    return Status::Ok();
  }
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP | EPOLLOUT | EPOLLET;
  ev.data.ptr = c;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) < 0)
    return Status::FromErrno(errno, "epoll_ctl(add)");
  return Status::Ok();
}

Status Reactor::WatchOnce(int fd, Completion* c) {
  if (engine_ != ReactorEngine::kUring) return Watch(fd, c);
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_poll_add(sqe, fd, kReadableMask);
  io_uring_sqe_set_data(sqe, c);
  return Status::Ok();
}

Status Reactor::ArmWritable(int fd, Completion* c) {
  if (engine_ == ReactorEngine::kUring) {
    io_uring_sqe* sqe = GetSqe();
    io_uring_prep_poll_add(sqe, fd, POLLOUT);
    io_uring_sqe_set_data(sqe, c);
    return Status::Ok();
  }
  // epoll: the fd is registered edge-triggered for EPOLLOUT too; the event arrives by itself.
  return Status::Ok();
}

namespace {
// A poll removal in flight. The kernel answers -EALREADY when the poll is firing at that very
// moment (its task work is pending); then we ask again on the next tick until it is gone.
struct PollRemoval : Completion {
  Reactor* reactor;
  uint64_t target;
  int tries;
};
constexpr int kPollRemovalTriesMax = 1000;
}  // namespace

void Reactor::IssuePollRemoval(Completion* removal_base) {
  auto* removal = static_cast<PollRemoval*>(removal_base);
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_poll_remove(sqe, removal->target);
  io_uring_sqe_set_data(sqe, removal);
}

int Reactor::Unwatch(int fd, Completion* c) {
  if (engine_ == ReactorEngine::kUring) {
    auto* removal = new PollRemoval();
    removal->reactor = this;
    removal->target = reinterpret_cast<uint64_t>(c);
    removal->tries = 0;
    removal->fn = [](Completion* self, int32_t res, uint32_t) {
      auto* r = static_cast<PollRemoval*>(self);
      if (res == -EALREADY && ++r->tries < kPollRemovalTriesMax) {
        r->reactor->IssuePollRemoval(r);
        return;
      }
      // 0: removed (the poll posts its final -ECANCELED); -ENOENT: it had already ended.
      delete r;
    };
    IssuePollRemoval(removal);
    return 1;  // the multishot poll ends with one final CQE
  }
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
  return 0;
}

void Reactor::Defer(Task* t) {
  t->next = nullptr;
  if (deferred_tail_) {
    deferred_tail_->next = t;
  } else {
    deferred_head_ = t;
  }
  deferred_tail_ = t;
}

void Reactor::Post(Task* t) {
  posted_total.Add();
  Task* head = posted_.load(std::memory_order_relaxed);
  do {
    t->next = head;
  } while (!posted_.compare_exchange_weak(head, t, std::memory_order_release,
                                          std::memory_order_relaxed));
  // Pairs with the seq_cst store of sleeping_ in Tick(): either the reactor sees the task before
  // it sleeps, or we see it sleeping and wake it.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (sleeping_.load(std::memory_order_relaxed)) {
    uint64_t one = 1;
    ssize_t n = write(wake_fd_, &one, sizeof one);
    (void)n;  // EAGAIN means the counter is already non-zero: the reactor will wake anyway
  }
}

void Reactor::Stop() {
  stop_.store(true, std::memory_order_release);
  uint64_t one = 1;
  ssize_t n = write(wake_fd_, &one, sizeof one);
  (void)n;
}

void Reactor::ArmTimer(Timer* t, uint64_t deadline_ns) {
  SPD_ASSERT(t->heap_index == SIZE_MAX);
  SPD_ASSERT_MSG(timers_.size() < timers_max_, "timers_max exceeded");
  t->deadline_ns = deadline_ns;
  t->heap_index = timers_.size();
  timers_.push_back(t);
  HeapUp(t->heap_index);
}

void Reactor::CancelTimer(Timer* t) {
  if (t->heap_index == SIZE_MAX) return;
  HeapRemove(t->heap_index);
}

void Reactor::HeapUp(size_t i) {
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (timers_[parent]->deadline_ns <= timers_[i]->deadline_ns) break;
    std::swap(timers_[parent], timers_[i]);
    timers_[parent]->heap_index = parent;
    timers_[i]->heap_index = i;
    i = parent;
  }
}

void Reactor::HeapDown(size_t i) {
  const size_t n = timers_.size();
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < n && timers_[l]->deadline_ns < timers_[m]->deadline_ns) m = l;
    if (r < n && timers_[r]->deadline_ns < timers_[m]->deadline_ns) m = r;
    if (m == i) break;
    std::swap(timers_[m], timers_[i]);
    timers_[m]->heap_index = m;
    timers_[i]->heap_index = i;
    i = m;
  }
}

void Reactor::HeapRemove(size_t i) {
  Timer* t = timers_[i];
  size_t last = timers_.size() - 1;
  if (i != last) {
    timers_[i] = timers_[last];
    timers_[i]->heap_index = i;
  }
  timers_.pop_back();
  if (i < timers_.size()) {
    HeapDown(i);
    HeapUp(i);
  }
  t->heap_index = SIZE_MAX;
}

uint64_t Reactor::NextTimeoutNs(uint64_t cap_ns) const {
  if (timers_.empty()) return cap_ns;
  uint64_t now = MonotonicNs();
  uint64_t d = timers_[0]->deadline_ns;
  uint64_t until = d > now ? d - now : 0;
  return until < cap_ns ? until : cap_ns;
}

void Reactor::RunDeferred() {
  // Tasks deferred while running these go to the next round of this same loop, so a tick never
  // sleeps with deferred work pending. The bound keeps a self-re-deferring task from starving
  // the ring.
  for (int round = 0; round < 64 && deferred_head_ != nullptr; ++round) {
    Task* t = deferred_head_;
    deferred_head_ = deferred_tail_ = nullptr;
    while (t) {
      Task* next = t->next;
      t->next = nullptr;
      t->fn(t);
      t = next;
    }
  }
}

void Reactor::RunTimers() {
  if (timers_.empty()) return;
  uint64_t now = MonotonicNs();
  while (!timers_.empty() && timers_[0]->deadline_ns <= now) {
    Timer* t = timers_[0];
    HeapRemove(0);
    t->fn(t);
  }
}

void Reactor::DrainPosted() {
  Task* list = posted_.exchange(nullptr, std::memory_order_acquire);
  if (!list) return;
  // The stack holds newest first; reverse to run in posting order.
  Task* rev = nullptr;
  while (list) {
    Task* next = list->next;
    list->next = rev;
    rev = list;
    list = next;
  }
  while (rev) {
    Task* next = rev->next;
    rev->next = nullptr;
    rev->fn(rev);
    rev = next;
  }
}

void Reactor::WaitUring(uint64_t timeout_ns, bool enter) {
  io_uring_cqe* cqe = nullptr;
  int rc = 0;
  if (enter) ++enters_;
  if (!enter) {
    // The caller entered the kernel just now and saw completions.
  } else if (timeout_ns == 0) {
    // With DEFER_TASKRUN completions appear only when we ask for events.
    rc = io_uring_submit_and_get_events(&ring_);
  } else if (timeout_ns == UINT64_MAX) {
    rc = io_uring_submit_and_wait(&ring_, 1);
  } else {
    __kernel_timespec ts{};
    ts.tv_sec = static_cast<int64_t>(timeout_ns / 1000000000ull);
    ts.tv_nsec = static_cast<int64_t>(timeout_ns % 1000000000ull);
    rc = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
  }
  if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
    SPD_LOG_ERROR("io_uring_enter: %s", strerror(-rc));
  }
  unsigned head;
  unsigned seen = 0;
  io_uring_for_each_cqe(&ring_, head, cqe) {
    ++seen;
    uint64_t ud = io_uring_cqe_get_data64(cqe);
    if (ud == kIgnoreUserData) continue;
    auto* c = reinterpret_cast<Completion*>(ud);
    // Copy out before advancing: the handler may submit and reuse the slot.
    int32_t res = cqe->res;
    uint32_t flags = cqe->flags;
    c->fn(c, res, flags);
  }
  io_uring_cq_advance(&ring_, seen);
  if (seen > 0 && poll_ns_ != 0) last_event_ns_ = MonotonicNs();
}

bool Reactor::Poll(uint64_t cap_ns) {
  if (poll_window_ns_ == 0 || last_event_ns_ == 0) return false;
  const uint64_t start = MonotonicNs();
  if (start >= last_event_ns_ + poll_window_ns_) return false;
  uint64_t end = last_event_ns_ + poll_window_ns_;
  if (cap_ns < end - start) end = start + cap_ns;  // cap_ns may be UINT64_MAX
  Bump(stats_.polls);
  bool hit = false;
  uint64_t now = start;
  while (now < end) {
    if (posted_.load(std::memory_order_acquire) != nullptr) {
      hit = true;
      break;
    }
    if (engine_ == ReactorEngine::kUring) {
      // With DEFER_TASKRUN this runs the ring's pending task work (poll wake-ups, I/O
      // completions), which is what posts CQEs; it never blocks.
      ++enters_;
      io_uring_submit_and_get_events(&ring_);
      if (io_uring_cq_ready(&ring_) > 0) {
        hit = true;
        break;
      }
    } else if (WaitEpoll(0) > 0) {  // handled here: the tick does not wait again
      hit = true;
      break;
    }
    now = MonotonicNs();
  }
  if (hit) {
    Bump(stats_.poll_hits);
  } else {
    // Traffic too sparse for this window: halve it, down to not polling at all. A wake-up that
    // comes soon after the last event grows it again (AfterSleep).
    poll_window_ns_ /= 2;
    if (poll_window_ns_ < kPollWindowMinNs) poll_window_ns_ = 0;
  }
  Bump(stats_.poll_ns, MonotonicNs() - start);
  return hit;
}

void Reactor::AfterSleep(uint64_t last_event_before_ns) {
  // Called when a real sleep ended with completions. Had the next event come within poll_ns of
  // the one before, a window of 1.5 times that gap would have caught it without the sleep.
  if (last_event_before_ns == 0 || last_event_ns_ <= last_event_before_ns) return;
  const uint64_t gap = last_event_ns_ - last_event_before_ns;
  if (gap > poll_ns_) return;
  poll_window_ns_ =
      std::min(poll_ns_, std::max({poll_window_ns_ * 2, gap + gap / 2, kPollWindowMinNs}));
}

int Reactor::WaitEpoll(uint64_t timeout_ns) {
  constexpr int kEventsMax = 256;
  epoll_event events[kEventsMax];
  timespec ts{};
  timespec* tsp = nullptr;
  if (timeout_ns != UINT64_MAX) {
    ts.tv_sec = static_cast<time_t>(timeout_ns / 1000000000ull);
    ts.tv_nsec = static_cast<long>(timeout_ns % 1000000000ull);
    tsp = &ts;
  }
  ++enters_;
  int n = epoll_pwait2(epoll_fd_, events, kEventsMax, tsp, nullptr);
  for (int i = 0; i < n; ++i) {
    auto* c = static_cast<Completion*>(events[i].data.ptr);
    uint32_t mask = 0;
    if (events[i].events & EPOLLIN) mask |= POLLIN;
    if (events[i].events & EPOLLOUT) mask |= POLLOUT;
    if (events[i].events & EPOLLRDHUP) mask |= POLLRDHUP;
    if (events[i].events & EPOLLHUP) mask |= POLLHUP;
    if (events[i].events & EPOLLERR) mask |= POLLERR;
    c->fn(c, static_cast<int32_t>(mask), IORING_CQE_F_MORE);
  }
  if (n > 0 && poll_ns_ != 0) last_event_ns_ = MonotonicNs();
  return n;
}

void Reactor::Tick(uint64_t timeout_ns) {
  ++ticks_;
  // Wait first (not at all when work is queued), then handle everything that is ready, so that
  // a caller driving RunOnce() sees the effects of this tick as soon as it returns.
  uint64_t wait_ns = timeout_ns;
  if (deferred_head_ != nullptr || stopping()) wait_ns = 0;
  wait_ns = NextTimeoutNs(wait_ns);
  // Adaptive poll: soon after a completion, look for the next one instead of sleeping.
  // A poll that found work has already entered the kernel: reap without entering again.
  bool enter = true;
  if (wait_ns != 0 && poll_ns_ != 0 && Poll(wait_ns)) {
    wait_ns = 0;
    enter = false;
  }
  const uint64_t last_event_before_ns = last_event_ns_;
  if (wait_ns != 0) {
    sleeping_.store(true, std::memory_order_seq_cst);
    if (posted_.load(std::memory_order_seq_cst) != nullptr) wait_ns = 0;
  }
  const bool sleeps = wait_ns != 0;  // may block: what AfterSleep learns from
  if (sleeps) Bump(stats_.sleeps);
  if (engine_ == ReactorEngine::kUring) {
    WaitUring(wait_ns, enter);
  } else {
    if (enter) WaitEpoll(wait_ns);
  }
  sleeping_.store(false, std::memory_order_relaxed);
  if (sleeps && poll_ns_ != 0) AfterSleep(last_event_before_ns);
  RunTimers();
  DrainPosted();
  RunDeferred();
}

void Reactor::RunOnce(uint64_t timeout_ns) { Tick(timeout_ns); }

void Reactor::Run() {
  while (!stopping()) Tick(UINT64_MAX);
  // Let work that is already queued finish its current step (replies, completions).
  Tick(0);
}

}  // namespace spd
