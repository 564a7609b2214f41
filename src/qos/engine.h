// The QoS tag engine: which queued request the device serves next, in the manner of mClock
// (Gulati, Merchant, Varman, OSDI 2010) and its distributed form dmClock, over a two-level
// hierarchy of flows: tenants, and inside each tenant its volumes.
//
// Every flow has a policy: a reservation (a rate it gets at least, while it has work), a limit
// (a rate it never exceeds), a weight (its share of what is left, in device time) and a priority
// class. Rates are in operations and/or bytes per second; each dimension set is enforced, one
// not set is ignored. A tenant's reservation, limit and weight apply to the sum of its volumes;
// inside a tenant, its volumes share by their own policies.
//
// The engine is pure: no reactor, no I/O, no clock, no allocation per request. The caller owns
// its request objects and embeds an Item in each; it passes the time (ns, any monotonic origin,
// never going back) to every call, so that tests and benchmarks run it on a virtual clock. The
// IoScheduler that wires it into the data path (qos/scheduler.h) calls Enqueue on Submit,
// Dequeue whenever the device can take more, and arms a timer for the wake time Dequeue reports.
//
// How it decides. Each flow keeps, per rate dimension, a reservation tag R and a limit tag L
// (the time its next request is due under the reservation schedule, and the earliest time the
// limit lets it start), and a proportional tag P (device time served divided by weight). A flow
// may run when its limit tag (the latest of its dimensions') is <= now and, for a volume, its
// tenant's too. Dequeue(now):
//   1. Constraint phase: among the volumes that may run, the one whose reservation tag (the
//      earliest of its dimensions') or whose tenant's is smallest, if <= now: reservations come
//      before weights, priorities and everything else. (Due by its tenant's reservation only:
//      the tenant's volume that the weight phase would pick.)
//   2. Weight phase: else, the most urgent priority class with a volume that may run (critical,
//      then standard, then background, which so gets only what the others leave); in it, the
//      tenant with the smallest P, then its volume of that class with the smallest P. Classes
//      are global (a critical volume goes before every tenant's standard ones); a volume's class
//      is background if its own or its tenant's is, else critical if either is.
//   3. Else nothing is released, and the caller learns when a limit next lets something run.
// A release advances the L and P tags of the volume and its tenant, and the R tags of those of
// the two whose reservation was due (R <= now): an item released in the weight phase does not
// count against a reservation (mClock's R-tag adjustment), so a reserving flow gets at least
// max(reservation, its weight share). Each dimension's tags advance by the item's own size:
// one operation at 1/iops, `bytes` at bytes/bytes_per_second, P by cost_ns/weight (weights are
// shares of device time, not of operations). The tags are start tags: an item may start when
// the previous one's cost is paid, so a flow idle under its limit has no added latency.
//
// A flow that becomes active (its first item after idling) gets no credit for the idle time: its
// R tags restart at max(previous, now), its L tags at max(previous, now - limit_burst_ns) (the
// limit's burst, Options::limit_burst_ns; 0 by default). A flow that joins the weight competition
// of a class at its level (after idling, after being held by a limit, or a tenant with its first
// runnable volume of that class) starts at P = max(its P, the smallest P competing there), so it
// neither bursts ahead nor is starved. A backlogged flow that is served late (the device was busy
// with another item when its tag came due) keeps its schedule, but its tags never lag behind now by
// more than Options::max_lag_ns: at most that much missed rate is made up later, at most
// max_lag_ns * rate items beyond a limit in any window (1 ms default: 0.1% of a 1-second window).
//
// A limit always wins over a reservation: a flow (or tenant) whose reservation exceeds its limit,
// or whose volumes reserve more than its limit, gets its limit. Reservations the device cannot
// meet together are served smallest R first, so roughly in proportion to their rates.
//
// Cost: O(log flows) per request (indexed 4-ary heaps at each level; no scan of the flows, no
// divide instruction). bench/qos_engine_bench.cc measures it: under 200 ns of CPU per request
// (Enqueue + Dequeue) with 1,000 volumes.
//
// Thread-safety: none; one engine belongs to one reactor. A flow served by several reactors has a
// flow in each reactor's engine, and Credit tells each what the others served (dmClock).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace spd::qos {

// A rate in operations and/or bytes per second; 0 = not set (the dimension is not enforced).
// At most 10 M IOPS and 1 TB/s (policy::kIopsMax, kBytesPerSecondMax; larger is asserted on).
struct Rate {
  uint64_t iops = 0;
  uint64_t bytes_per_second = 0;
  bool empty() const { return iops == 0 && bytes_per_second == 0; }
  bool operator==(const Rate&) const = default;
};

// The values match policy::PriorityClass, so that a static_cast converts.
enum class Priority : uint8_t {
  kStandard = 0,
  kCritical = 1,    // before standard in the weight phase
  kBackground = 2,  // only when no standard or critical flow can run
};

struct FlowPolicy {
  Rate reservation;
  Rate limit;             // a dimension set here and in `reservation` should not be lower
  uint32_t weight = 100;  // 1..10000 (policy::kWeightMax)
  Priority priority = Priority::kStandard;
  bool operator==(const FlowPolicy&) const = default;
};

// Which phase released an item (Item::phase), for the caller's accounting and for Credit on
// other engines (dmClock's rho: what was served by reservation).
enum class Phase : uint8_t { kNone = 0, kReservation = 1, kWeight = 2 };

// What a flow was served elsewhere (by another reactor's engine) since the last Credit.
struct Served {
  uint64_t ops = 0;           // all items released (dmClock's delta)
  uint64_t bytes = 0;         // their Item::bytes
  uint64_t reserved_ops = 0;  // of those, released in the constraint phase (dmClock's rho)
  uint64_t reserved_bytes = 0;
};

class Engine;

// Embedded in the caller's request. The caller sets cost_ns and bytes before Enqueue and must
// not change them, nor touch the item otherwise, until Dequeue returns it.
struct Item {
  uint64_t cost_ns = 0;  // estimated device time (the cost model's), > 0
  uint32_t bytes = 0;    // data bytes moved (0 for a flush: it then costs only an operation)
  Phase phase() const { return phase_; }  // set by Dequeue

 private:
  friend class Engine;
  Item* next_ = nullptr;
  Phase phase_ = Phase::kNone;
};

class Engine {
 public:
  using FlowId = uint32_t;
  static constexpr FlowId kNoFlow = UINT32_MAX;

  struct Options {
    // How far behind now a backlogged flow's R and L tags may fall (see above). 0: a late
    // release is never made up (a limit is then a hard cap over any window, but a flow served
    // late by a busy device loses rate).
    uint64_t max_lag_ns = 1'000'000;
    // A limit's burst: how far behind now a flow's limit tags may start, so that a flow that did
    // less than its limit may then release up to limit_burst_ns of its limit's rate at once (a
    // token bucket that deep) instead of spreading a burst of requests 1/limit apart. Any
    // window then sees at most limit * (window + limit_burst_ns); 0: a strict pace.
    uint64_t limit_burst_ns = 0;
  };

  Engine() : Engine(Options{}) {}
  explicit Engine(Options options);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Flows. Ids are small integers, reused after removal. A policy must be valid (weight
  // 1..10000, rates within the maxima): violations are asserted on (the control plane validates
  // intents with policy::ValidateIntent first). These allocate; the per-request calls do not.
  FlowId AddTenant(const FlowPolicy& policy);
  FlowId AddVolume(FlowId tenant, const FlowPolicy& policy);
  // Changes a tenant's or volume's policy at `now_ns`; it applies to items already queued. Tags
  // ahead of now are rescaled to the new rate (the debt of the last release is repaid at the new
  // rate, so a lowered limit holds from the next item on and a raised one from now), and a new
  // weight applies to the P lead the flow has over its level's competitors.
  void SetPolicy(FlowId flow, const FlowPolicy& policy, uint64_t now_ns);
  const FlowPolicy& policy(FlowId flow) const;
  // The volume must have no queued item.
  void RemoveVolume(FlowId volume);
  // The tenant must have no volume.
  void RemoveTenant(FlowId tenant);

  // Queues `item` (not queued already) at the tail of `volume`'s FIFO.
  void Enqueue(FlowId volume, Item* item, uint64_t now_ns);
  // The item to release at `now_ns` (removed from its queue, phase() set), or nullptr. On
  // nullptr, *wake_ns (if wake_ns is not null) is when a limit next lets a queued item run
  // (> now_ns), or UINT64_MAX when nothing is queued; the caller calls again then (or on the
  // next Enqueue). On an item, *wake_ns = now_ns: call again while the device can take more.
  // Work-conserving: returns nullptr only when every queued item is held by a limit.
  Item* Dequeue(uint64_t now_ns, uint64_t* wake_ns);

  // Items queued in the engine, or in one volume.
  size_t queued() const { return queued_; }
  size_t queued(FlowId volume) const;

  // dmClock: `flow` was served `elsewhere` (by other engines) since the previous Credit. Its
  // limit tags advance by everything served, its reservation tags by what was served there by
  // reservation, as if those items had been released here lately: from no earlier than
  // now_ns - max_lag_ns, as a release here leaves them. Crediting a volume credits its tenant
  // too (as a release here would); credit a tenant directly only for service elsewhere by volumes
  // not registered here. P tags (shares of this engine's device) stay local. Call it often
  // (every 100 us or so): between two calls each engine may use the whole rate.
  void Credit(FlowId flow, const Served& elsewhere, uint64_t now_ns);

 private:
  static constexpr uint32_t kNoPos = UINT32_MAX;
  static constexpr int kClasses = 3;  // heap index: 0 critical, 1 standard, 2 background
  // The heaps of a level that may hold a child; a child is in at most one heap per slot (its
  // parent's), so one array per slot, indexed by FlowId, holds every node's positions.
  enum Slot : uint8_t { kSlotWake = 0, kSlotR = 1, kSlotP = 2, kSlots = 2 + kClasses };

  struct Node;
  // A 4-ary min-heap of FlowIds by a 64-bit key, indexed: (*pos)[id] is id's index or kNoPos.
  class Heap {
   public:
    explicit Heap(std::vector<uint32_t>* pos) : pos_(pos) {}
    bool empty() const { return v_.empty(); }
    uint32_t top() const { return v_[0].id; }
    uint64_t top_key() const { return v_[0].key; }
    bool contains(uint32_t id) const { return (*pos_)[id] != kNoPos; }
    void reserve(size_t n) { v_.reserve(n); }
    void Set(uint32_t id, uint64_t key);  // inserts, or changes the key
    void Erase(uint32_t id);              // if present

   private:
    struct Entry {
      uint64_t key;
      uint32_t id;
    };
    void Up(uint32_t* pos, size_t i);
    void Down(uint32_t* pos, size_t i);
    std::vector<uint32_t>* pos_;
    std::vector<Entry> v_;
  };

  // The children of the root (tenants) or of a tenant (volumes), by state: held by a limit
  // (wake: by the time they may run), and runnable (r: by R, those with a reservation; p[c]: by
  // P, per priority class).
  struct Level {
    explicit Level(std::vector<uint32_t>* pos)
        : wake(&pos[kSlotWake]),
          r(&pos[kSlotR]),
          p{Heap(&pos[kSlotP]), Heap(&pos[kSlotP + 1]), Heap(&pos[kSlotP + 2])} {}
    Heap wake;
    Heap r;
    Heap p[kClasses];
    uint64_t vtime[kClasses] = {};  // P of the last weight-phase release here, per class
    uint32_t children = 0;
    void reserve(size_t n);
  };

  // One rate dimension's tag: ns, and the remainder (of units * 1e9 / rate) below one ns.
  struct Tag {
    uint64_t ns = 0;
    uint64_t rem = 0;
  };
  // Division by a divisor fixed per policy without a divide instruction (the hot path's tags
  // and P): a 64-bit reciprocal, then at most a few corrections.
  struct Divider {
    uint64_t d = 1;
    uint64_t m = UINT64_MAX;  // floor((2^64 - 1) / d)
    void Set(uint64_t divisor);
    uint64_t DivMod(uint64_t n, uint64_t* rem) const;  // n / d; *rem = n % d
  };

  Node& node(FlowId id);
  const Node& node(FlowId id) const;
  FlowId NewNode();
  static uint64_t Ref(const Level& lv, int cls);
  void Place(Node& volume, Level& lv, uint64_t now);
  void Refresh(Node& tenant, uint64_t now);
  void Charge(Node& n, const Item& item, bool r_due, uint64_t base, uint64_t l_base);
  // The earliest a backlogged flow's limit tag may be: now - max(max_lag_ns, limit_burst_ns).
  uint64_t LimitBase(uint64_t now_ns) const;

  Options options_;
  std::vector<Node> nodes_;
  std::vector<FlowId> free_;
  std::vector<uint32_t> pos_[kSlots];
  Level root_{pos_};
  size_t queued_ = 0;
};

}  // namespace spd::qos
