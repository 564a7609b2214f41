// Test support for engine_test.cc: a modelled device on a virtual clock in front of a qos::Engine.
//
// The device serves one item at a time, for the item's cost_ns; it asks the engine for the next
// item whenever it is free, and when the engine holds everything back it sleeps until the wake
// time the engine reported (or the next arrival). Clients are closed-loop (a saturating client
// keeps `depth` items outstanding: each completes and is queued again at once) or open-loop
// (items arrive at given times). Every release is counted per client in windows of `window_ns`
// (ops, bytes, device time), and kept in a log for the invariant checks.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <queue>
#include <vector>

#include "qos/engine.h"

namespace spd::qos::testing {

struct Req : Item {
  int client = -1;
};

struct Release {
  uint64_t t_ns;
  int client;
  uint32_t bytes;
  Phase phase;
};

class DeviceSim {
 public:
  static constexpr uint64_t kSecond = 1'000'000'000;

  explicit DeviceSim(Engine::Options options = {}, uint64_t window_ns = kSecond)
      : engine_(options), window_ns_(window_ns) {}

  Engine& engine() { return engine_; }
  uint64_t now() const { return now_; }

  // A client of `volume` whose items cost `cost_ns` on the device and move `bytes`.
  int AddClient(Engine::FlowId volume, uint64_t cost_ns, uint32_t bytes = 4096) {
    Client c;
    c.volume = volume;
    c.cost_ns = cost_ns;
    c.bytes = bytes;
    clients_.push_back(std::move(c));
    return static_cast<int>(clients_.size() - 1);
  }
  // Starts keeping `depth` items of client `c` outstanding (queued or on the device).
  void Saturate(int c, int depth = 4) {
    Client& cl = clients_[c];
    cl.saturating = true;
    while (cl.outstanding < depth) Submit(c, now_);
  }
  // Stops refilling: outstanding items still complete.
  void Stop(int c) { clients_[c].saturating = false; }
  // One item of client `c` arrives at `t_ns` (>= now).
  void ArriveAt(int c, uint64_t t_ns) { arrivals_.push({t_ns, c}); }

  // Keep every release in log() (for the invariant checks; off: long runs).
  bool keep_log = false;
  // Called at every release (after the engine returned it, before the device runs it).
  std::function<void(const Req&, uint64_t now)> on_release;

  // Runs the device until `until_ns`.
  void Run(uint64_t until_ns) {
    for (;;) {
      if (!in_service_) {
        uint64_t wake = 0;
        Item* it = engine_.Dequeue(now_, &wake);
        if (it) {
          Req* r = static_cast<Req*>(it);
          Record(*r);
          if (on_release) on_release(*r, now_);
          in_service_ = r;
          free_at_ = now_ + r->cost_ns;
        } else {
          timer_ = wake;
          if (engine_.queued() > 0) held_++;
        }
      }
      uint64_t t_dev = in_service_ ? free_at_ : timer_;
      uint64_t t_arr = arrivals_.empty() ? UINT64_MAX : arrivals_.top().t_ns;
      uint64_t t = std::min(t_dev, t_arr);
      if (t > until_ns) {
        if (!in_service_ && engine_.queued() > 0) held_ns_ += until_ns - now_;
        now_ = until_ns;
        return;
      }
      if (!in_service_ && engine_.queued() > 0) held_ns_ += t - now_;
      now_ = t;
      if (in_service_ && free_at_ == now_) Complete();
      while (!arrivals_.empty() && arrivals_.top().t_ns <= now_) {
        int c = arrivals_.top().client;
        arrivals_.pop();
        Submit(c, now_);
      }
    }
  }

  // Per-client counts in window `w` ([w * window_ns, (w + 1) * window_ns)).
  uint64_t ops(int c, size_t w) const { return Get(clients_[c].ops, w); }
  uint64_t bytes(int c, size_t w) const { return Get(clients_[c].bytes_w, w); }
  uint64_t busy_ns(int c, size_t w) const { return Get(clients_[c].busy, w); }
  uint64_t total_ops(int c) const {
    uint64_t s = 0;
    for (uint64_t v : clients_[c].ops) s += v;
    return s;
  }
  // Dequeue calls that returned nothing while items were queued, and the device time so spent.
  uint64_t held() const { return held_; }
  uint64_t held_ns() const { return held_ns_; }
  const std::vector<Release>& log() const { return log_; }

 private:
  struct Client {
    Engine::FlowId volume = Engine::kNoFlow;
    uint64_t cost_ns = 0;
    uint32_t bytes = 0;
    bool saturating = false;
    int outstanding = 0;
    std::vector<std::unique_ptr<Req>> all;
    std::vector<Req*> spare;
    std::vector<uint64_t> ops, bytes_w, busy;
  };
  struct Arrival {
    uint64_t t_ns;
    int client;
    bool operator>(const Arrival& o) const { return t_ns > o.t_ns; }
  };

  static uint64_t Get(const std::vector<uint64_t>& v, size_t w) { return w < v.size() ? v[w] : 0; }
  static void Add(std::vector<uint64_t>& v, size_t w, uint64_t n) {
    if (v.size() <= w) v.resize(w + 1);
    v[w] += n;
  }

  void Submit(int c, uint64_t t) {
    Client& cl = clients_[c];
    Req* r;
    if (cl.spare.empty()) {
      cl.all.push_back(std::make_unique<Req>());
      r = cl.all.back().get();
    } else {
      r = cl.spare.back();
      cl.spare.pop_back();
    }
    r->client = c;
    r->cost_ns = cl.cost_ns;
    r->bytes = cl.bytes;
    cl.outstanding++;
    engine_.Enqueue(cl.volume, r, t);
  }

  void Record(const Req& r) {
    Client& cl = clients_[r.client];
    size_t w = now_ / window_ns_;
    Add(cl.ops, w, 1);
    Add(cl.bytes_w, w, r.bytes);
    Add(cl.busy, w, r.cost_ns);
    if (keep_log) log_.push_back({now_, r.client, r.bytes, r.phase()});
  }

  void Complete() {
    Req* r = in_service_;
    in_service_ = nullptr;
    Client& cl = clients_[r->client];
    cl.outstanding--;
    cl.spare.push_back(r);
    if (cl.saturating) Submit(r->client, now_);
  }

  Engine engine_;
  uint64_t window_ns_;
  uint64_t now_ = 0;
  Req* in_service_ = nullptr;
  uint64_t free_at_ = 0;
  uint64_t timer_ = UINT64_MAX;
  uint64_t held_ = 0;
  uint64_t held_ns_ = 0;
  std::vector<Client> clients_;
  std::priority_queue<Arrival, std::vector<Arrival>, std::greater<Arrival>> arrivals_;
  std::vector<Release> log_;
};

}  // namespace spd::qos::testing
