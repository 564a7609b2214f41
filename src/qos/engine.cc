// The QoS tag engine (engine.h has the model). The hot path, Enqueue and Dequeue, is a few
// indexed-heap updates at the volume's level (its tenant's heaps) and at the root, tag arithmetic
// by precomputed reciprocals, and no allocation (heaps are reserved when flows are added).
#include "qos/engine.h"

#include <algorithm>

#include "common/assert.h"

namespace spd::qos {

namespace {

constexpr uint64_t kNsPerSecond = 1'000'000'000;
constexpr uint64_t kIopsMax = 10'000'000;            // policy::kIopsMax
constexpr uint64_t kBytesPerSecondMax = 1ull << 40;  // policy::kBytesPerSecondMax
constexpr uint32_t kWeightMax = 10000;               // policy::kWeightMax
constexpr uint64_t kCostMax = 1ull << 60;

// A volume's heap class (0 critical, 1 standard, 2 background) under its tenant's: background if
// either is, else critical if either is.
int EffectiveClass(Priority tenant, Priority volume) {
  if (tenant == Priority::kBackground || volume == Priority::kBackground) return 2;
  if (tenant == Priority::kCritical || volume == Priority::kCritical) return 0;
  return 1;
}

void CheckRate(const Rate& r) {
  SPD_ASSERT(r.iops <= kIopsMax);
  SPD_ASSERT(r.bytes_per_second <= kBytesPerSecondMax);
}

void CheckPolicy(const FlowPolicy& p) {
  CheckRate(p.reservation);
  CheckRate(p.limit);
  SPD_ASSERT(p.weight >= 1 && p.weight <= kWeightMax);
  SPD_ASSERT(static_cast<uint8_t>(p.priority) <= static_cast<uint8_t>(Priority::kBackground));
}

}  // namespace

struct Engine::Node {
  // Hot: what Dequeue and Enqueue read and write.
  FlowPolicy policy;
  uint8_t cls = 1;  // a volume's heap class (EffectiveClass)
  bool in_use = false;
  bool is_tenant = false;
  FlowId parent = kNoFlow;  // a volume's tenant
  size_t queued = 0;        // items queued (a tenant: in all its volumes)
  Item* head = nullptr;     // a volume's FIFO
  Item* tail = nullptr;
  Tag r_ops, r_bytes, l_ops, l_bytes;
  uint64_t p = 0, p_rem = 0;  // P: ns of device time per unit of weight; remainder
  // The policy's divisors.
  Divider r_ops_div, r_bytes_div, l_ops_div, l_bytes_div, weight_div;
  std::unique_ptr<Level> level;  // a tenant's volumes

  void SetPolicy(const FlowPolicy& p) {
    policy = p;
    if (p.reservation.iops) r_ops_div.Set(p.reservation.iops);
    if (p.reservation.bytes_per_second) r_bytes_div.Set(p.reservation.bytes_per_second);
    if (p.limit.iops) l_ops_div.Set(p.limit.iops);
    if (p.limit.bytes_per_second) l_bytes_div.Set(p.limit.bytes_per_second);
    weight_div.Set(p.weight);
  }
};

namespace {

// (Templates: Engine::Node and Engine::Tag are private; a deduced type is not named.)

// The reservation tag: the earliest of the set dimensions (UINT64_MAX: no reservation).
template <typename Node>
inline uint64_t RTag(const Node& n) {
  uint64_t t = UINT64_MAX;
  if (n.policy.reservation.iops) t = n.r_ops.ns;
  if (n.policy.reservation.bytes_per_second) t = std::min(t, n.r_bytes.ns);
  return t;
}

// The limit tag: the latest of the set dimensions (0: no limit).
template <typename Node>
inline uint64_t LTag(const Node& n) {
  uint64_t t = 0;
  if (n.policy.limit.iops) t = n.l_ops.ns;
  if (n.policy.limit.bytes_per_second) t = std::max(t, n.l_bytes.ns);
  return t;
}

// tag = max(tag, base) + units / rate seconds, exactly (the remainder carries over).
// units * 1e9 + rem must fit 64 bits: one item's bytes do (< 2^32 * 1e9 + 2^40).
template <typename Tag, typename Divider>
inline void Advance(Tag& tag, const Divider& rate, uint64_t units, uint64_t base) {
  if (tag.ns < base) tag = {base, 0};
  tag.ns += rate.DivMod(units * kNsPerSecond + tag.rem, &tag.rem);
}

// The same for any amount (Credit).
template <typename Tag>
void AdvanceWide(Tag& tag, uint64_t rate, uint64_t units, uint64_t base) {
  if (tag.ns < base) tag = {base, 0};
  unsigned __int128 num = static_cast<unsigned __int128>(units) * kNsPerSecond + tag.rem;
  unsigned __int128 add = num / rate;
  tag.ns = add >= UINT64_MAX - tag.ns ? UINT64_MAX : tag.ns + static_cast<uint64_t>(add);
  tag.rem = static_cast<uint64_t>(num % rate);
}

// A live rate change: a dimension newly set starts at now; a tag ahead of now (the debt of the
// last release, or the credit of a reservation served ahead) is converted to the new rate.
template <typename Tag>
void Rescale(Tag& tag, uint64_t old_rate, uint64_t new_rate, uint64_t now) {
  if (new_rate == 0 || old_rate == new_rate) return;
  if (old_rate == 0) {
    tag = {now, 0};
  } else if (tag.ns > now) {
    unsigned __int128 ahead = static_cast<unsigned __int128>(tag.ns - now) * old_rate / new_rate;
    tag = {now + static_cast<uint64_t>(std::min<unsigned __int128>(ahead, UINT64_MAX - now)), 0};
  }
}

// A flow becoming active restarts its reservation tags at now (no credit for idle time) and its
// limit tags no earlier than `limit_floor` (now - Options::limit_burst_ns: the burst an idle
// flow has saved up).
template <typename Node>
void Restart(Node& n, uint64_t now, uint64_t limit_floor) {
  auto restart = [](auto& tag, uint64_t rate, uint64_t floor) {
    if (rate && tag.ns < floor) tag = {floor, 0};
  };
  restart(n.r_ops, n.policy.reservation.iops, now);
  restart(n.r_bytes, n.policy.reservation.bytes_per_second, now);
  restart(n.l_ops, n.policy.limit.iops, limit_floor);
  restart(n.l_bytes, n.policy.limit.bytes_per_second, limit_floor);
}

}  // namespace

// ---- Heap ---------------------------------------------------------------------------------

void Engine::Divider::Set(uint64_t divisor) {
  d = divisor;
  m = UINT64_MAX / divisor;
}

uint64_t Engine::Divider::DivMod(uint64_t n, uint64_t* rem) const {
  // m = floor((2^64 - 1) / d) >= 2^64 / d - 2, so n * m / 2^64 > n / d - 2: q is short of the
  // quotient by at most 2.
  uint64_t q = static_cast<uint64_t>((static_cast<unsigned __int128>(n) * m) >> 64);
  uint64_t r = n - q * d;
  while (r >= d) {
    q++;
    r -= d;
  }
  *rem = r;
  return q;
}

void Engine::Heap::Set(uint32_t id, uint64_t key) {
  uint32_t* pos = pos_->data();
  uint32_t i = pos[id];
  if (i == kNoPos) {
    v_.push_back({key, id});
    Up(pos, v_.size() - 1);
    return;
  }
  uint64_t old = v_[i].key;
  if (key == old) return;
  v_[i].key = key;
  if (key < old) {
    Up(pos, i);
  } else {
    Down(pos, i);
  }
}

void Engine::Heap::Erase(uint32_t id) {
  uint32_t* pos = pos_->data();
  uint32_t i = pos[id];
  if (i == kNoPos) return;
  pos[id] = kNoPos;
  Entry last = v_.back();
  v_.pop_back();
  if (i == v_.size()) return;
  v_[i] = last;
  if (i > 0 && v_[(i - 1) / 4].key > last.key) {
    Up(pos, i);
  } else {
    Down(pos, i);
  }
}

void Engine::Heap::Up(uint32_t* pos, size_t i) {
  Entry e = v_[i];
  while (i > 0) {
    size_t parent = (i - 1) / 4;
    if (v_[parent].key <= e.key) break;
    v_[i] = v_[parent];
    pos[v_[i].id] = static_cast<uint32_t>(i);
    i = parent;
  }
  v_[i] = e;
  pos[e.id] = static_cast<uint32_t>(i);
}

void Engine::Heap::Down(uint32_t* pos, size_t i) {
  Entry e = v_[i];
  size_t n = v_.size();
  for (;;) {
    size_t first = 4 * i + 1;
    if (first >= n) break;
    size_t last = std::min(first + 4, n);
    size_t c = first;
    uint64_t min = v_[first].key;
    for (size_t k = first + 1; k < last; k++) {  // (selects, not branches: the order is random)
      uint64_t key = v_[k].key;
      bool less = key < min;
      min = less ? key : min;
      c = less ? k : c;
    }
    if (e.key <= min) break;
    v_[i] = v_[c];
    pos[v_[i].id] = static_cast<uint32_t>(i);
    i = c;
  }
  v_[i] = e;
  pos[e.id] = static_cast<uint32_t>(i);
}

void Engine::Level::reserve(size_t n) {
  wake.reserve(n);
  r.reserve(n);
  for (Heap& h : p) h.reserve(n);
}

// ---- Flows --------------------------------------------------------------------------------

Engine::Engine(Options options) : options_(options) {}
Engine::~Engine() = default;

Engine::Node& Engine::node(FlowId id) {
  SPD_ASSERT(id < nodes_.size() && nodes_[id].in_use);
  return nodes_[id];
}

const Engine::Node& Engine::node(FlowId id) const {
  SPD_ASSERT(id < nodes_.size() && nodes_[id].in_use);
  return nodes_[id];
}

Engine::FlowId Engine::NewNode() {
  FlowId id;
  if (!free_.empty()) {
    id = free_.back();
    free_.pop_back();
    nodes_[id] = Node();
  } else {
    SPD_ASSERT(nodes_.size() < kNoFlow);
    id = static_cast<FlowId>(nodes_.size());
    nodes_.emplace_back();
    for (auto& pos : pos_) pos.push_back(kNoPos);
  }
  nodes_[id].in_use = true;
  return id;
}

Engine::FlowId Engine::AddTenant(const FlowPolicy& policy) {
  CheckPolicy(policy);
  FlowId id = NewNode();
  Node& t = nodes_[id];
  t.SetPolicy(policy);
  t.is_tenant = true;
  t.level = std::make_unique<Level>(pos_);
  root_.children++;
  root_.reserve(root_.children);
  return id;
}

Engine::FlowId Engine::AddVolume(FlowId tenant, const FlowPolicy& policy) {
  CheckPolicy(policy);
  SPD_ASSERT(node(tenant).is_tenant);
  FlowId id = NewNode();  // may move nodes_: no reference across it
  Node& t = nodes_[tenant];
  Node& v = nodes_[id];
  v.SetPolicy(policy);
  v.parent = tenant;
  v.cls = static_cast<uint8_t>(EffectiveClass(t.policy.priority, policy.priority));
  t.level->children++;
  t.level->reserve(t.level->children);
  return id;
}

const FlowPolicy& Engine::policy(FlowId flow) const { return node(flow).policy; }

void Engine::RemoveVolume(FlowId volume) {
  Node& v = node(volume);
  SPD_ASSERT(!v.is_tenant);
  SPD_ASSERT(v.queued == 0);
  nodes_[v.parent].level->children--;
  v.in_use = false;
  free_.push_back(volume);
}

void Engine::RemoveTenant(FlowId tenant) {
  Node& t = node(tenant);
  SPD_ASSERT(t.is_tenant);
  SPD_ASSERT(t.level->children == 0 && t.queued == 0);
  root_.children--;
  t.in_use = false;
  t.level.reset();
  free_.push_back(tenant);
}

size_t Engine::queued(FlowId volume) const { return node(volume).queued; }

// ---- Placement ----------------------------------------------------------------------------

// Where a flow joining the weight competition of class `cls` at `lv` starts (at least): the
// smallest P competing there, or the P last released there when nobody competes. (Only its
// class: a starved background flow's small P must not let a standard one jump ahead.)
uint64_t Engine::Ref(const Level& lv, int cls) {
  const Heap& h = lv.p[cls];
  return h.empty() ? lv.vtime[cls] : h.top_key();
}

// Puts volume `v` in the heaps of its tenant's level `lv` its state calls for: none (empty),
// wake (held by its limit) or p (and r, with a reservation).
void Engine::Place(Node& v, Level& lv, uint64_t now) {
  Node* nn = nodes_.data();
  uint32_t id = static_cast<uint32_t>(&v - nn);
  Heap& ph = lv.p[v.cls];
  if (v.queued == 0) {
    lv.wake.Erase(id);
    lv.r.Erase(id);
    ph.Erase(id);
    return;
  }
  uint64_t l = LTag(v);
  if (l <= now) {
    lv.wake.Erase(id);
    if (!ph.contains(id)) {  // joining the weight competition
      uint64_t ref = Ref(lv, v.cls);
      if (v.p < ref) {
        v.p = ref;
        v.p_rem = 0;
      }
    }
    ph.Set(id, v.p);
    if (!v.policy.reservation.empty()) lv.r.Set(id, RTag(v));
  } else {
    lv.r.Erase(id);
    ph.Erase(id);
    lv.wake.Set(id, l);
  }
}

// Brings tenant `t`'s volumes held by a limit that may run at `now` into its runnable heaps,
// then puts `t` in the root's heaps its state calls for.
void Engine::Refresh(Node& t, uint64_t now) {
  Node* nn = nodes_.data();
  uint32_t id = static_cast<uint32_t>(&t - nn);
  Level& lv = *t.level;
  while (!lv.wake.empty() && lv.wake.top_key() <= now) Place(nn[lv.wake.top()], lv, now);
  if (t.queued == 0) {
    root_.wake.Erase(id);
    root_.r.Erase(id);
    for (Heap& h : root_.p) h.Erase(id);
    return;
  }
  bool runnable = !lv.p[0].empty() || !lv.p[1].empty() || !lv.p[2].empty();
  uint64_t l = LTag(t);
  if (runnable && l <= now) {
    // Joining the competition of a class (after idling, after its limit held it, or with its
    // first volume of that class): no lead over those already competing there.
    for (int c = 0; c < kClasses; c++) {
      if (!lv.p[c].empty() && !root_.p[c].contains(id)) {
        uint64_t ref = Ref(root_, c);
        if (t.p < ref) {
          t.p = ref;
          t.p_rem = 0;
        }
      }
    }
    for (int c = 0; c < kClasses; c++) {
      if (lv.p[c].empty()) {
        root_.p[c].Erase(id);
      } else {
        root_.p[c].Set(id, t.p);
      }
    }
    uint64_t r = lv.r.empty() ? UINT64_MAX : lv.r.top_key();
    if (!t.policy.reservation.empty()) r = std::min(r, RTag(t));
    if (r != UINT64_MAX) {
      root_.r.Set(id, r);
    } else {
      root_.r.Erase(id);
    }
    // Woken when its next held volume may run, to offer it at the root.
    if (lv.wake.empty()) {
      root_.wake.Erase(id);
    } else {
      root_.wake.Set(id, lv.wake.top_key());
    }
  } else {
    root_.r.Erase(id);
    for (Heap& h : root_.p) h.Erase(id);
    SPD_ASSERT(runnable || !lv.wake.empty());
    root_.wake.Set(id, runnable ? l : std::max(l, lv.wake.top_key()));
  }
}

// ---- Requests -----------------------------------------------------------------------------

void Engine::Enqueue(FlowId volume, Item* item, uint64_t now_ns) {
  Node& v = node(volume);
  SPD_ASSERT(!v.is_tenant);
  SPD_ASSERT(item->cost_ns > 0 && item->cost_ns < kCostMax);
  item->next_ = nullptr;
  item->phase_ = Phase::kNone;
  if (v.tail) {
    v.tail->next_ = item;
  } else {
    v.head = item;
  }
  v.tail = item;
  queued_++;
  Node& t = nodes_[v.parent];
  t.queued++;
  if (++v.queued == 1) {
    const uint64_t floor = now_ns > options_.limit_burst_ns ? now_ns - options_.limit_burst_ns : 0;
    Restart(v, now_ns, floor);
    if (t.queued == 1) Restart(t, now_ns, floor);
    Place(v, *t.level, now_ns);
    Refresh(t, now_ns);
  }
}

// Advances `n`'s tags for one released item: L and P always, R when its reservation was due.
uint64_t Engine::LimitBase(uint64_t now_ns) const {
  const uint64_t back = std::max(options_.max_lag_ns, options_.limit_burst_ns);
  return now_ns > back ? now_ns - back : 0;
}

void Engine::Charge(Node& n, const Item& item, bool r_due, uint64_t base, uint64_t l_base) {
  const FlowPolicy& p = n.policy;
  if (r_due) {
    if (p.reservation.iops) Advance(n.r_ops, n.r_ops_div, 1, base);
    if (p.reservation.bytes_per_second && item.bytes) {
      Advance(n.r_bytes, n.r_bytes_div, item.bytes, base);
    }
  }
  if (p.limit.iops) Advance(n.l_ops, n.l_ops_div, 1, l_base);
  if (p.limit.bytes_per_second && item.bytes) {
    Advance(n.l_bytes, n.l_bytes_div, item.bytes, l_base);
  }
  n.p += n.weight_div.DivMod(item.cost_ns + n.p_rem, &n.p_rem);
}

Item* Engine::Dequeue(uint64_t now_ns, uint64_t* wake_ns) {
  Node* nn = nodes_.data();
  while (!root_.wake.empty() && root_.wake.top_key() <= now_ns) {
    Refresh(nn[root_.wake.top()], now_ns);
  }
  Node* t;
  Node* v;
  Phase phase;
  if (!root_.r.empty() && root_.r.top_key() <= now_ns) {
    // Constraint phase: the volume's own reservation, else its tenant's (then the tenant's best).
    t = &nn[root_.r.top()];
    Level& lv = *t->level;
    if (!lv.r.empty() && lv.r.top_key() <= now_ns) {
      v = &nn[lv.r.top()];
    } else {
      int c = 0;
      while (lv.p[c].empty()) c++;
      v = &nn[lv.p[c].top()];
    }
    phase = Phase::kReservation;
  } else {
    int c = 0;
    while (c < kClasses && root_.p[c].empty()) c++;
    if (c == kClasses) {
      uint64_t wake = root_.wake.empty() ? UINT64_MAX : root_.wake.top_key();
      SPD_ASSERT(wake > now_ns);
      SPD_ASSERT(wake != UINT64_MAX || queued_ == 0);
      if (wake_ns) *wake_ns = wake;
      return nullptr;
    }
    t = &nn[root_.p[c].top()];
    v = &nn[t->level->p[c].top()];
    root_.vtime[c] = t->p;
    t->level->vtime[c] = v->p;
    phase = Phase::kWeight;
  }
  Item* item = v->head;
  v->head = item->next_;
  if (!v->head) v->tail = nullptr;
  item->next_ = nullptr;
  item->phase_ = phase;
  uint64_t base = now_ns > options_.max_lag_ns ? now_ns - options_.max_lag_ns : 0;
  const uint64_t l_base = LimitBase(now_ns);
  Charge(*v, *item, RTag(*v) <= now_ns, base, l_base);
  Charge(*t, *item, RTag(*t) <= now_ns, base, l_base);
  v->queued--;
  t->queued--;
  queued_--;
  Place(*v, *t->level, now_ns);
  Refresh(*t, now_ns);
  if (wake_ns) *wake_ns = now_ns;
  return item;
}

// ---- Live changes -------------------------------------------------------------------------

void Engine::SetPolicy(FlowId flow, const FlowPolicy& policy, uint64_t now_ns) {
  CheckPolicy(policy);
  Node& n = node(flow);
  Node* nn = nodes_.data();
  const FlowPolicy old = n.policy;
  Rescale(n.r_ops, old.reservation.iops, policy.reservation.iops, now_ns);
  Rescale(n.r_bytes, old.reservation.bytes_per_second, policy.reservation.bytes_per_second, now_ns);
  Rescale(n.l_ops, old.limit.iops, policy.limit.iops, now_ns);
  Rescale(n.l_bytes, old.limit.bytes_per_second, policy.limit.bytes_per_second, now_ns);
  // A new weight applies to the lead the flow has over the smallest P of its competitors.
  if (old.weight != policy.weight) {
    uint64_t ref = UINT64_MAX;
    uint32_t id = static_cast<uint32_t>(&n - nn);
    if (n.is_tenant) {
      for (int c = 0; c < kClasses; c++) {
        if (root_.p[c].contains(id)) ref = std::min(ref, Ref(root_, c));
      }
    } else {
      ref = Ref(*nodes_[n.parent].level, n.cls);
    }
    if (n.p > ref) {
      unsigned __int128 lead = static_cast<unsigned __int128>(n.p - ref) * old.weight;
      n.p = ref + static_cast<uint64_t>(lead / policy.weight);
      n.p_rem = 0;
    }
  }
  n.SetPolicy(policy);
  // A volume whose class changed leaves its weight heap; Place puts it in the new class's, as a
  // flow joining that competition.
  auto reclass = [&](Node& v, Level& vl) {
    int cls = EffectiveClass(nodes_[v.parent].policy.priority, v.policy.priority);
    if (cls == v.cls) return;
    vl.p[v.cls].Erase(static_cast<uint32_t>(&v - nn));
    v.cls = static_cast<uint8_t>(cls);
    Place(v, vl, now_ns);
  };
  if (n.is_tenant) {
    if (old.priority != policy.priority) {
      for (Node& v : nodes_) {
        if (v.in_use && !v.is_tenant && v.parent == flow) reclass(v, *n.level);
      }
    }
    // Its volumes' heap keys did not change; the tenant's at the root may have.
    Refresh(n, now_ns);
  } else {
    Node& t = nodes_[n.parent];
    reclass(n, *t.level);
    Place(n, *t.level, now_ns);  // its tags, hence keys, may have changed
    Refresh(t, now_ns);
  }
}

void Engine::Credit(FlowId flow, const Served& elsewhere, uint64_t now_ns) {
  Node& n = node(flow);
  auto credit = [&](Node& f) {
    // The service happened since the previous Credit, not at now_ns: the tags may lag now by
    // max_lag as a release here would leave them (an idle flow's restart at now anyway). Based
    // at now_ns, an engine whose flow was idle would take a lead over the one serving it (its
    // tags ahead by the credit's delivery delay) and never serve it once both have work.
    const uint64_t base = now_ns > options_.max_lag_ns ? now_ns - options_.max_lag_ns : 0;
    const uint64_t l_base = LimitBase(now_ns);
    const FlowPolicy& p = f.policy;
    if (p.reservation.iops && elsewhere.reserved_ops) {
      AdvanceWide(f.r_ops, p.reservation.iops, elsewhere.reserved_ops, base);
    }
    if (p.reservation.bytes_per_second && elsewhere.reserved_bytes) {
      AdvanceWide(f.r_bytes, p.reservation.bytes_per_second, elsewhere.reserved_bytes, base);
    }
    if (p.limit.iops && elsewhere.ops) AdvanceWide(f.l_ops, p.limit.iops, elsewhere.ops, l_base);
    if (p.limit.bytes_per_second && elsewhere.bytes) {
      AdvanceWide(f.l_bytes, p.limit.bytes_per_second, elsewhere.bytes, l_base);
    }
  };
  credit(n);
  if (n.is_tenant) {
    Refresh(n, now_ns);
  } else {
    Node& t = nodes_[n.parent];
    credit(t);
    Place(n, *t.level, now_ns);
    Refresh(t, now_ns);
  }
}

}  // namespace spd::qos
