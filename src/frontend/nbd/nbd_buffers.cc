#include "frontend/nbd/nbd_buffers.h"

#include <cstdlib>

#include "common/assert.h"
#include "common/counters.h"

namespace spd {
namespace {

Gauge memory_bytes("spd_nbd_memory_bytes",
                   "Bytes of the NBD memory budget in use: request buffers (also cached ones), "
                   "request slots and receive buffers of negotiated connections.");
Counter buffer_allocs_total("spd_nbd_buffer_allocs_total",
                            "NBD request buffers allocated (a pool had none of the size cached).");
Counter buffer_alloc_failures_total("spd_nbd_buffer_alloc_failures_total",
                                    "Request buffers that could not be allocated (ENOMEM).");
Counter pool_trims_total("spd_nbd_buffer_pool_trims_total",
                         "Times a reactor's buffer pool freed its cached buffers.");

constexpr uint32_t kBufAlign = 4096;

}  // namespace

NbdMemoryBudget::~NbdMemoryBudget() = default;

bool NbdMemoryBudget::TryCharge(uint64_t bytes, uint64_t headroom) {
  uint64_t cur = used_.load(std::memory_order_relaxed);
  do {
    if (cur + bytes + headroom > limit_) return false;
  } while (!used_.compare_exchange_weak(cur, cur + bytes, std::memory_order_seq_cst));
  memory_bytes.Add(static_cast<int64_t>(bytes));
  const uint64_t now = cur + bytes;
  uint64_t peak = peak_.load(std::memory_order_relaxed);
  while (now > peak && !peak_.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
  return true;
}

void NbdMemoryBudget::Release(uint64_t bytes) {
  if (bytes == 0) return;
  SPD_ASSERT(used_.load(std::memory_order_relaxed) >= bytes);
  used_.fetch_sub(bytes, std::memory_order_seq_cst);
  memory_bytes.Add(-static_cast<int64_t>(bytes));
  // seq_cst on both sides (here and in NbdBufferPool::Wait): either we see the waiter, or the
  // waiter sees the memory we gave back.
  if (waiting_pools_.load(std::memory_order_seq_cst) > 0) WakeWaiters();
}

void NbdMemoryBudget::WakeWaiters() {
  for (NbdBufferPool* p : pools_)
    if (p->waiting_.load(std::memory_order_seq_cst)) p->PostWake();
}

void NbdMemoryBudget::AskToTrim(const NbdBufferPool* except) {
  for (NbdBufferPool* p : pools_) {
    if (p == except || p->trim_posted_.exchange(true)) continue;
    p->reactor_->Post(&p->trim_task_);
  }
}

NbdBufferPool::NbdBufferPool(NbdMemoryBudget* budget, Reactor* reactor)
    : budget_(budget), reactor_(reactor) {
  wake_task_.pool = this;
  wake_task_.fn = &NbdBufferPool::OnWake;
  trim_task_.pool = this;
  trim_task_.fn = &NbdBufferPool::OnTrim;
  budget_->pools_.push_back(this);
}

NbdBufferPool::~NbdBufferPool() {
  SPD_ASSERT(wait_head_ == nullptr);
  Trim();
}

int NbdBufferPool::ClassOf(uint32_t bytes) {
  if (bytes <= kBufAlign) return 0;
  // 2^k < bytes <= 2^(k+1); the range is cut in four classes of 2^(k-2).
  const int k = 63 - __builtin_clzll(static_cast<uint64_t>(bytes) - 1);
  const uint64_t step = 1ull << (k - 2);
  const int q = static_cast<int>((bytes - (1ull << k) + step - 1) / step);  // 1..4
  return (k - 12) * 4 + q;
}

uint64_t NbdBufferPool::SizeOf(int cls) {
  if (cls == 0) return kBufAlign;
  const int k = 12 + (cls - 1) / 4;
  const int q = (cls - 1) % 4 + 1;
  return (1ull << k) + static_cast<uint64_t>(q) * (1ull << (k - 2));
}

uint64_t NbdBufferPool::ClassBytes(uint32_t bytes) { return SizeOf(ClassOf(bytes)); }

uint8_t* NbdBufferPool::Take(uint32_t bytes, bool* enomem) {
  *enomem = false;
  const int cls = ClassOf(bytes);
  const uint64_t size = SizeOf(cls);
  if (void* b = free_[cls]) {
    free_[cls] = *static_cast<void**>(b);
    cached_bytes_ -= size;
    return static_cast<uint8_t*>(b);
  }
  if (!budget_->TryCharge(size)) {
    // Buffers of other sizes cached here are worth less than this request.
    if (cached_bytes_ == 0) return nullptr;
    Trim();
    if (!budget_->TryCharge(size)) return nullptr;
  }
  void* p = nullptr;
  if (posix_memalign(&p, kBufAlign, size) != 0) {
    buffer_alloc_failures_total.Add();
    budget_->Release(size);
    *enomem = true;
    return nullptr;
  }
  buffer_allocs_total.Add();
  return static_cast<uint8_t*>(p);
}

void NbdBufferPool::Give(uint8_t* buf, uint32_t bytes) {
  const int cls = ClassOf(bytes);
  const uint64_t size = SizeOf(cls);
  if (budget_->has_waiters()) {
    // Someone (on any reactor) waits for memory: give it back to the budget, not to the cache.
    std::free(buf);
    budget_->Release(size);
    return;
  }
  *reinterpret_cast<void**>(buf) = free_[cls];
  free_[cls] = buf;
  cached_bytes_ += size;
}

bool NbdBufferPool::Charge(uint64_t bytes, uint64_t headroom) {
  if (budget_->TryCharge(bytes, headroom)) return true;
  if (cached_bytes_ == 0) return false;
  Trim();
  return budget_->TryCharge(bytes, headroom);
}

void NbdBufferPool::Uncharge(uint64_t bytes) { budget_->Release(bytes); }

void NbdBufferPool::Wait(NbdMemoryWaiter* w, uint64_t need) {
  if (!w->queued) {
    w->queued = true;
    w->next = nullptr;
    if (wait_tail_) {
      wait_tail_->next = w;
    } else {
      wait_head_ = w;
    }
    wait_tail_ = w;
  }
  if (!waiting_.load(std::memory_order_relaxed)) {
    waiting_.store(true, std::memory_order_seq_cst);
    budget_->waiting_pools_.fetch_add(1, std::memory_order_seq_cst);
    budget_->AskToTrim(this);
  }
  // Memory given back before we were registered as waiting woke nobody.
  if (budget_->used_.load(std::memory_order_seq_cst) + need <= budget_->limit()) PostWake();
}

void NbdBufferPool::CancelWait(NbdMemoryWaiter* w) {
  if (!w->queued) return;
  NbdMemoryWaiter** pp = &wait_head_;
  NbdMemoryWaiter* prev = nullptr;
  while (*pp != w) {
    prev = *pp;
    pp = &(*pp)->next;
  }
  *pp = w->next;
  if (wait_tail_ == w) wait_tail_ = prev;
  w->queued = false;
  w->next = nullptr;
  // With nobody left waiting here, the pool stays registered until its wake task runs; that
  // only makes other pools free instead of cache meanwhile.
}

void NbdBufferPool::PostWake() {
  if (!wake_posted_.exchange(true)) reactor_->Post(&wake_task_);
}

void NbdBufferPool::OnWake(Task* t) {
  NbdBufferPool* self = static_cast<PoolTask*>(t)->pool;
  self->wake_posted_.store(false);
  NbdMemoryWaiter* list = self->wait_head_;
  self->wait_head_ = self->wait_tail_ = nullptr;
  if (self->waiting_.load(std::memory_order_relaxed)) {
    self->waiting_.store(false, std::memory_order_seq_cst);
    self->budget_->waiting_pools_.fetch_sub(1, std::memory_order_seq_cst);
  }
  // In arrival order; a waiter that still finds no memory queues itself again.
  while (list) {
    NbdMemoryWaiter* w = list;
    list = w->next;
    w->next = nullptr;
    w->queued = false;
    w->fn(w);
  }
}

void NbdBufferPool::OnTrim(Task* t) {
  NbdBufferPool* self = static_cast<PoolTask*>(t)->pool;
  self->trim_posted_.store(false);
  self->Trim();
}

void NbdBufferPool::Trim() {
  if (cached_bytes_ == 0) return;
  pool_trims_total.Add();
  uint64_t freed = 0;
  for (int cls = 0; cls < kClasses; ++cls) {
    while (void* b = free_[cls]) {
      free_[cls] = *static_cast<void**>(b);
      std::free(b);
      freed += SizeOf(cls);
    }
  }
  SPD_ASSERT(freed == cached_bytes_);
  cached_bytes_ = 0;
  budget_->Release(freed);
}

}  // namespace spd
