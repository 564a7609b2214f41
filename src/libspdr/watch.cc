// libspdr's notifications: a thread per watch compares the cache with what it saw last.
// Events go to the caller's callback, or into a bounded queue whose eventfd is readable exactly
// while the queue is not empty (push and drain happen under the same mutex).
#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <ctime>
#include <new>

#include "libspdr/spdr_internal.h"

namespace {

constexpr uint32_t kQueueMax = 1024;
constexpr uint32_t kDefaultIntervalMs = 200;

}  // namespace

struct spdr_watch {
  struct Seen {
    int32_t status;
    int64_t value;  // last value reported (or the baseline)
  };
  spdr_cache* cache = nullptr;
  spdr_watch_options options{};
  int fd = -1;
  pthread_t thread{};
  pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
  pthread_cond_t cv{};
  bool stop = false;  // guarded by mu
  // Queue (guarded by mu).
  spdr_event queue[kQueueMax];
  uint32_t head = 0;
  uint32_t size = 0;
  uint32_t dropped = 0;
  // The watch thread's own state.
  Seen seen[spd::health::kSensorsMax];
  uint32_t seen_count = 0;
};

namespace {

using spdr_internal::Count;
using spdr_internal::JudgeStatus;
using spdr_internal::MonotonicNs;
using spdr_internal::ReadRecord;

void PushLocked(spdr_watch* w, const spdr_event& e) {
  if (w->size == 0) {
    const uint64_t one = 1;
    (void)!write(w->fd, &one, sizeof(one));
  }
  w->queue[(w->head + w->size) % kQueueMax] = e;
  ++w->size;
}

void Emit(spdr_watch* w, const spdr_event& e) {
  if (w->options.callback != nullptr) {
    w->options.callback(&e, w->options.user);
    return;
  }
  pthread_mutex_lock(&w->mu);
  if (w->dropped > 0 && w->size < kQueueMax) {
    spdr_event overflow{};
    overflow.type = SPDR_EVENT_OVERFLOW;
    overflow.index = w->dropped;
    PushLocked(w, overflow);
    w->dropped = 0;
  }
  if (w->size < kQueueMax) {
    PushLocked(w, e);
  } else {
    ++w->dropped;
  }
  pthread_mutex_unlock(&w->mu);
}

// Compares every sensor with what was seen; `report` false only records a baseline.
void Scan(spdr_watch* w, bool report) {
  const uint32_t n = Count(w->cache);
  const uint64_t now = MonotonicNs();
  for (uint32_t i = 0; i < n; ++i) {
    spdr_reading r;
    if (!ReadRecord(w->cache, i, &r, 1024)) continue;  // mid-write: next scan
    uint64_t age = 0;
    const int status = JudgeStatus(w->cache, r, now, &age);
    spdr_watch::Seen& s = w->seen[i];
    if (i >= w->seen_count || !report) {
      s = {status, r.value};
      continue;
    }
    const int64_t delta = w->options.value_delta;
    const int64_t moved = r.value > s.value ? r.value - s.value : s.value - r.value;
    if (status != s.status) {
      Emit(w, {SPDR_EVENT_STATUS, i, s.status, status, s.value, r.value});
    } else if (delta > 0 && moved >= delta) {
      Emit(w, {SPDR_EVENT_VALUE, i, s.status, status, s.value, r.value});
    } else {
      continue;
    }
    s = {status, r.value};
  }
  w->seen_count = n;
}

void* Run(void* arg) {
  auto* w = static_cast<spdr_watch*>(arg);
  const uint64_t interval_ns = uint64_t(w->options.interval_ms) * 1'000'000ull;
  pthread_mutex_lock(&w->mu);
  while (!w->stop) {
    pthread_mutex_unlock(&w->mu);
    Scan(w, true);
    pthread_mutex_lock(&w->mu);
    const uint64_t due = MonotonicNs() + interval_ns;
    timespec ts{time_t(due / 1'000'000'000ull), long(due % 1'000'000'000ull)};
    while (!w->stop && pthread_cond_timedwait(&w->cv, &w->mu, &ts) != ETIMEDOUT) {
    }
  }
  pthread_mutex_unlock(&w->mu);
  return nullptr;
}

}  // namespace

extern "C" {

int spdr_watch_start(spdr_cache* cache, const spdr_watch_options* options, spdr_watch** out) {
  if (cache == nullptr || out == nullptr) return SPDR_EINVAL;
  auto* w = new (std::nothrow) spdr_watch;
  if (w == nullptr) return SPDR_ENOMEM;
  w->cache = cache;
  if (options != nullptr) w->options = *options;
  if (w->options.interval_ms == 0) w->options.interval_ms = kDefaultIntervalMs;
  if (w->options.callback == nullptr) {
    w->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->fd < 0) {
      delete w;
      return SPDR_ESYS;
    }
  }
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_cond_init(&w->cv, &attr);
  pthread_condattr_destroy(&attr);
  Scan(w, false);  // what is there now is not news
  if (pthread_create(&w->thread, nullptr, Run, w) != 0) {
    if (w->fd >= 0) close(w->fd);
    pthread_cond_destroy(&w->cv);
    delete w;
    return SPDR_ESYS;
  }
  *out = w;
  return SPDR_OK;
}

int spdr_watch_fd(const spdr_watch* watch) { return watch ? watch->fd : -1; }

int spdr_watch_next(spdr_watch* w, spdr_event* out) {
  if (w == nullptr || out == nullptr || w->fd < 0) return SPDR_EINVAL;
  pthread_mutex_lock(&w->mu);
  if (w->size == 0) {
    pthread_mutex_unlock(&w->mu);
    return SPDR_EAGAIN;
  }
  *out = w->queue[w->head];
  w->head = (w->head + 1) % kQueueMax;
  if (--w->size == 0) {
    uint64_t drained;
    (void)!read(w->fd, &drained, sizeof(drained));
  }
  pthread_mutex_unlock(&w->mu);
  return SPDR_OK;
}

void spdr_watch_stop(spdr_watch* w) {
  if (w == nullptr) return;
  pthread_mutex_lock(&w->mu);
  w->stop = true;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
  pthread_join(w->thread, nullptr);
  if (w->fd >= 0) close(w->fd);
  pthread_cond_destroy(&w->cv);
  pthread_mutex_destroy(&w->mu);
  delete w;
}

}  // extern "C"
