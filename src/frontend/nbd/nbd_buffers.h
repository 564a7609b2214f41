// Memory of the NBD server: one budget for every request buffer, request slot and receive buffer
// (NbdMemoryBudget, shared by all reactors), and per reactor a pool of request buffers
// (NbdBufferPool) that its connections share.
//
// A request buffer goes back to its reactor's pool when the reply has been sent and is reused by
// the next request of its size class, so steady-state I/O neither allocates nor frees. Cached
// buffers stay charged to the budget: the pool is bounded by it. When a connection cannot get
// memory it waits (the server stops reading its socket) until memory comes back; then pools stop
// caching (what is given back is freed, and the waiting reactors are woken) and every other pool
// is asked to free its cache, so memory idle on one reactor cannot starve another.
//
// Thread-safety: NbdMemoryBudget is thread-safe. An NbdBufferPool is used on its reactor's thread
// only; other threads reach it only through tasks posted to that reactor.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <vector>

#include "reactor/reactor.h"

namespace spd {

class NbdBufferPool;

class NbdMemoryBudget {
 public:
  explicit NbdMemoryBudget(uint64_t limit_bytes) : limit_(limit_bytes) {}
  ~NbdMemoryBudget();

  // Charges `bytes` if afterwards at least `headroom` bytes of the budget stay free.
  [[nodiscard]] bool TryCharge(uint64_t bytes, uint64_t headroom = 0);
  // Gives `bytes` back and wakes the pools that wait for memory.
  void Release(uint64_t bytes);

  uint64_t limit() const { return limit_; }
  uint64_t used() const { return used_.load(std::memory_order_relaxed); }
  uint64_t peak() const { return peak_.load(std::memory_order_relaxed); }
  // Some connection waits for memory: pools should free what is given back, not cache it.
  bool has_waiters() const { return waiting_pools_.load(std::memory_order_relaxed) > 0; }

 private:
  friend class NbdBufferPool;
  void WakeWaiters();
  void AskToTrim(const NbdBufferPool* except);

  const uint64_t limit_;
  std::atomic<uint64_t> used_{0};
  std::atomic<uint64_t> peak_{0};
  std::atomic<uint32_t> waiting_pools_{0};
  // Registered before the first connection, never changed after.
  std::vector<NbdBufferPool*> pools_;
};

// Something that waits for memory (a connection); `fn` runs on the pool's reactor.
struct NbdMemoryWaiter {
  void (*fn)(NbdMemoryWaiter* self) = nullptr;
  NbdMemoryWaiter* next = nullptr;
  bool queued = false;
};

class NbdBufferPool {
 public:
  NbdBufferPool(NbdMemoryBudget* budget, Reactor* reactor);
  // REQUIRES: no waiter queued, every buffer given back.
  ~NbdBufferPool();

  // Bytes the buffer of a `bytes` request takes (its size class: at most 25% more).
  static uint64_t ClassBytes(uint32_t bytes);

  // A buffer of at least `bytes` (aligned to 4096): cached, or allocated within the budget.
  // nullptr when the budget is spent (then Wait), or with *enomem set when the system refused.
  uint8_t* Take(uint32_t bytes, bool* enomem);
  // `bytes` as given to Take.
  void Give(uint8_t* buf, uint32_t bytes);
  // Memory the caller allocates itself (slots, receive buffers); see NbdMemoryBudget::TryCharge.
  [[nodiscard]] bool Charge(uint64_t bytes, uint64_t headroom);
  void Uncharge(uint64_t bytes);

  // Runs w->fn once memory may have come back (at once if it already has: `need` bytes fit).
  void Wait(NbdMemoryWaiter* w, uint64_t need);
  void CancelWait(NbdMemoryWaiter* w);
  // Frees every cached buffer.
  void Trim();
  uint64_t cached_bytes() const { return cached_bytes_; }

 private:
  friend class NbdMemoryBudget;
  static constexpr int kClasses = 81;  // 4 KiB, then four classes per power of two up to 2^32
  static int ClassOf(uint32_t bytes);
  static uint64_t SizeOf(int cls);
  struct PoolTask : Task {
    NbdBufferPool* pool = nullptr;
  };
  static void OnWake(Task* t);
  static void OnTrim(Task* t);
  void PostWake();

  NbdMemoryBudget* budget_;
  Reactor* reactor_;
  // Free lists, linked through each buffer's first word.
  std::array<void*, kClasses> free_{};
  uint64_t cached_bytes_ = 0;
  NbdMemoryWaiter* wait_head_ = nullptr;
  NbdMemoryWaiter* wait_tail_ = nullptr;
  std::atomic<bool> waiting_{false};  // counted in budget_->waiting_pools_
  std::atomic<bool> wake_posted_{false};
  std::atomic<bool> trim_posted_{false};
  PoolTask wake_task_;
  PoolTask trim_task_;
};

}  // namespace spd
