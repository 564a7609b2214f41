// EventHub: the control API's event stream (api/spd/v1/events.proto) — the last kKeep events
// in a ring, numbered from 1, and the watchers that follow it.
//
// Each watcher is a cursor into the ring, not a queue of its own: a slow watcher costs nothing
// but its cursor, and one that falls more than kKeep behind gets one EVENTS_LOST (how many) and
// goes on from the oldest event kept. Publishing never waits for a watcher.
//
// Thread-safety: every method from any thread.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "spd/v1/events.pb.h"

namespace spd {

class EventHub {
 public:
  static constexpr size_t kKeep = 1024;

  // A watcher's way to be told that new events exist: `wake` runs on the publisher's thread,
  // without the hub's lock, until the watcher is removed (and never after Remove returned).
  struct Watcher {
    std::recursive_mutex mu;     // held around `wake` and by Remove: no wake after Remove
    std::function<void()> wake;  // cleared by Remove
  };

  // Sets seq and time; `type`, `volume`, `volume_info`, `message` from the caller.
  void Publish(v1::Event event);
  uint64_t last_seq() const;

  // The event after `after` (seq after+1), or EVENTS_LOST (seq 0, `message` says how many) when
  // that one is no longer kept; then `*after` moves to the last event returned or skipped.
  // Empty when nothing is newer.
  std::optional<v1::Event> Next(uint64_t* after) const;

  // At most `max` watchers; false when full.
  bool Add(std::shared_ptr<Watcher> w, size_t max);
  void Remove(const std::shared_ptr<Watcher>& w);
  size_t watchers() const;
  // Calls every watcher's wake (used at shutdown after setting their closing state).
  void WakeAll();

 private:
  void Wake(const std::vector<std::shared_ptr<Watcher>>& ws);
  mutable std::mutex mu_;
  std::deque<v1::Event> ring_;
  uint64_t last_seq_ = 0;
  std::vector<std::shared_ptr<Watcher>> watchers_;
};

}  // namespace spd
