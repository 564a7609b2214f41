// VolumeManager: volumes created, deleted, resized and re-tuned at run time, from any thread.
//
// The pool and its volumes belong to one reactor (pool.h). The manager is the door other
// threads use: each call posts its work to the pool's reactor, where it runs as one of the
// pool's asynchronous control operations, and `done` runs later on the pool's reactor thread
// (never inside the call). Operations of the manager run one at a time, in call order; at most
// kQueueMax wait (more: kResourceExhausted).
//
// Names are the identity: Create of an existing name with the same spec returns the existing
// handle (a different spec: kAlreadyExists), Delete of a missing name is kNotFound, Resize to
// the current size and SetDurability to the current durability are Ok with no commit.
//
// Users. Whoever does I/O on a volume (an NBD connection, an API session) registers on its
// handle (AddUser / RemoveUser) for as long as it may touch the Volume*. Delete refuses a volume
// with users (kFailedPrecondition naming how many) unless forced; forced, it asks every Listener
// to close the volume (OnVolumeClosing), waits (bounded) until the handle has no users, every
// listener said done and the volume has no request in flight, then deletes. Once a delete has
// begun AddUser fails, so no new user can appear under it.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/status.h"
#include "volume/pool.h"

namespace spd {

// "flush", "sync", "none".
const char* DurabilityName(Durability d);

struct VolumeSpec {
  std::string name;
  uint64_t size_bytes = 0;  // a positive multiple of 4096
  Durability durability = Durability::kFlush;
  bool read_only = false;
};

class VolumeManager;

// One volume as the rest of the daemon holds it. Shared (std::shared_ptr); outlives the volume.
class VolumeHandle {
 public:
  // Any thread.
  const std::string& name() const { return name_; }
  // A snapshot of the volume's info as of the last change made through the manager (size,
  // durability; allocated_bytes as of then too). Any thread.
  VolumeInfo info() const;
  // Any thread. nullptr once the volume is deleted (or while a delete runs). Dereference the
  // pointer only on the pool's reactor, or from another thread while holding a user
  // registration (then the volume stays until RemoveUser: a delete waits for it).
  Volume* volume() const { return volume_.load(std::memory_order_acquire); }
  // Any thread. True once the volume is deleted for good.
  bool deleted() const { return deleted_.load(std::memory_order_acquire); }

  // Any thread. Registers a user; false (nothing registered) once a delete has begun or the
  // volume is gone.
  [[nodiscard]] bool AddUser();
  // Any thread. REQUIRES: a registration of the caller's (AddUser returned true).
  void RemoveUser();
  // Any thread.
  uint32_t users() const {
    return static_cast<uint32_t>(users_.load(std::memory_order_acquire) & kUsersMask);
  }

 private:
  friend class VolumeManager;
  static constexpr uint64_t kClosing = 1ull << 32;  // set while a delete runs: AddUser fails
  static constexpr uint64_t kUsersMask = kClosing - 1;
  VolumeHandle(Volume* v, const VolumeInfo& info) : name_(info.name), volume_(v), info_(info) {}
  void SetInfo(const VolumeInfo& info);
  uint32_t BeginClose();  // sets kClosing; returns the users
  void EndClose() { users_.fetch_and(~kClosing, std::memory_order_acq_rel); }

  const std::string name_;
  std::atomic<Volume*> volume_;
  std::atomic<bool> deleted_{false};
  std::atomic<uint64_t> users_{0};  // count | kClosing
  mutable std::mutex mu_;
  VolumeInfo info_;  // guarded by mu_
};

class VolumeManager {
 public:
  enum class Change { kCreated, kDeleted, kResized, kDurability };

  // Told about changes. Both calls run on the pool's reactor thread; they must not block.
  class Listener {
   public:
    virtual ~Listener() = default;
    // After a change is durable. `info` is the volume's info after it (before, for kDeleted).
    virtual void OnVolumeChanged(const VolumeInfo& info, Change kind) = 0;
    // A forced delete asks the listener to close its users of `handle` cleanly (requests in
    // flight complete or fail first, then RemoveUser). Call `done` once, from any thread, when
    // this listener holds no more users of it (at once if it had none). The delete waits for
    // every listener's `done`, for the handle's users to reach 0 and for the volume's requests
    // to end, bounded by close_timeout_ns (then it fails with kDeadlineExceeded and the volume
    // stays).
    virtual void OnVolumeClosing(std::shared_ptr<VolumeHandle> handle,
                                 std::function<void()> done) = 0;
  };

  static constexpr size_t kQueueMax = 64;
  struct Options {
    uint64_t close_timeout_ns = 10'000'000'000;  // forced delete: users to leave
  };

  // REQUIRES: on the pool's reactor thread (or before it runs). Handles for the pool's volumes.
  explicit VolumeManager(Pool* pool) : VolumeManager(pool, Options()) {}
  VolumeManager(Pool* pool, Options options);
  // REQUIRES: on the pool's reactor thread, no operation pending, before the pool goes.
  ~VolumeManager();
  VolumeManager(const VolumeManager&) = delete;
  VolumeManager& operator=(const VolumeManager&) = delete;

  // Each call: any thread; posts to the pool's reactor; `done` runs there, later.
  void Create(VolumeSpec spec, std::function<void(Result<std::shared_ptr<VolumeHandle>>)> done);
  void Delete(std::string name, bool force, std::function<void(Status)> done);
  // Grows or shrinks (shrinking is refused while data lies beyond the new end).
  void Resize(std::string name, uint64_t size_bytes, std::function<void(Status)> done);
  void SetDurability(std::string name, Durability durability, std::function<void(Status)> done);

  // Any thread.
  std::shared_ptr<VolumeHandle> Find(const std::string& name) const;
  // Any thread. Snapshots (VolumeHandle::info), ordered by volume id.
  std::vector<VolumeInfo> List() const;
  // Any thread. Every volume's name and object (valid while the pool lives: deleted volumes
  // stay as tombstones), in name order.
  std::vector<std::pair<std::string, Volume*>> Volumes() const;

  // REQUIRES: on the pool's reactor thread (or before it runs); `l` stays alive until it is
  // removed or the manager goes.
  void AddListener(Listener* l);
  // REQUIRES: on the pool's reactor thread, or after it stopped; no operation of the manager
  // may be running (a running one may still call `l`).
  void RemoveListener(Listener* l);

  // Blocking forms for start-up and tests: the call above, then drive the pool's reactor until
  // its `done` ran. REQUIRES: on the pool's reactor thread, not inside a reactor callback.
  Result<std::shared_ptr<VolumeHandle>> CreateBlocking(VolumeSpec spec);
  Status DeleteBlocking(std::string name, bool force);
  Status ResizeBlocking(std::string name, uint64_t size_bytes);
  Status SetDurabilityBlocking(std::string name, Durability durability);

  Pool* pool() const { return pool_; }

 private:
  struct Op;
  void Submit(std::unique_ptr<Op> op);   // any thread
  void Enqueue(std::unique_ptr<Op> op);  // pool's reactor
  void StartNext();                      // pool's reactor
  void Run(Op* op);                      // pool's reactor
  void RunDelete(Op* op);                // pool's reactor
  void DeleteWhenClosed(Op* op);         // pool's reactor
  void Finish(Op* op, Status s);         // pool's reactor
  void Notify(const VolumeInfo& info, Change kind);
  void Drive(const bool* finished);

  Pool* const pool_;
  Reactor* const reactor_;
  const Options options_;
  std::atomic<size_t> queued_{0};  // submitted, not finished (bounds the queue)
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<VolumeHandle>> handles_;  // guarded by mu_
  // Pool's reactor only:
  std::deque<std::unique_ptr<Op>> queue_;
  std::unique_ptr<Op> active_;
  std::vector<Listener*> listeners_;
};

}  // namespace spd
