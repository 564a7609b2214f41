#include "control/event_hub.h"

#include <algorithm>

#include "reactor/reactor.h"

namespace spd {

void EventHub::Publish(v1::Event event) {
  std::vector<std::shared_ptr<Watcher>> ws;
  {
    std::lock_guard<std::mutex> l(mu_);
    event.set_seq(++last_seq_);
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    event.set_time_unix_ns(static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec);
    ring_.push_back(std::move(event));
    if (ring_.size() > kKeep) ring_.pop_front();
    ws = watchers_;
  }
  Wake(ws);
}

uint64_t EventHub::last_seq() const {
  std::lock_guard<std::mutex> l(mu_);
  return last_seq_;
}

std::optional<v1::Event> EventHub::Next(uint64_t* after) const {
  std::lock_guard<std::mutex> l(mu_);
  if (*after >= last_seq_) return std::nullopt;
  const uint64_t first = ring_.empty() ? last_seq_ + 1 : ring_.front().seq();
  if (*after + 1 < first) {
    v1::Event lost;
    lost.set_type(v1::EVENT_TYPE_EVENTS_LOST);
    lost.set_message(std::to_string(first - *after - 1) +
                     " event(s) were no longer kept: re-list what you track");
    *after = first - 1;
    return lost;
  }
  const v1::Event& e = ring_[*after + 1 - first];
  *after = e.seq();
  return e;
}

bool EventHub::Add(std::shared_ptr<Watcher> w, size_t max) {
  std::lock_guard<std::mutex> l(mu_);
  if (watchers_.size() >= max) return false;
  watchers_.push_back(std::move(w));
  return true;
}

void EventHub::Remove(const std::shared_ptr<Watcher>& w) {
  {
    std::lock_guard<std::mutex> l(mu_);
    watchers_.erase(std::remove(watchers_.begin(), watchers_.end(), w), watchers_.end());
  }
  std::lock_guard<std::recursive_mutex> l(w->mu);  // a wake running now ends first
  w->wake = nullptr;
}

size_t EventHub::watchers() const {
  std::lock_guard<std::mutex> l(mu_);
  return watchers_.size();
}

void EventHub::WakeAll() {
  std::vector<std::shared_ptr<Watcher>> ws;
  {
    std::lock_guard<std::mutex> l(mu_);
    ws = watchers_;
  }
  Wake(ws);
}

void EventHub::Wake(const std::vector<std::shared_ptr<Watcher>>& ws) {
  for (const auto& w : ws) {
    std::lock_guard<std::recursive_mutex> l(w->mu);
    if (w->wake) w->wake();
  }
}

}  // namespace spd
