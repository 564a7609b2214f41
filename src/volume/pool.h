// Pool: thin-provisioned volumes on one backend (a file, a block device or the sim device).
//
// The pool's on-disk format is in pool_format.h and docs/pool_format.md. In short: two
// checksummed superblocks, two checkpoint slots (volume table + chunk owner map) and a metadata
// log of checksummed records. Every metadata change (allocate, free, create, delete, grow) is a
// log record; a commit makes the data it covers durable first (backend flush), then the records
// (log write + flush). A crash at any point leaves each change wholly there or wholly absent.
//
// Space is handed out in chunks (default 1 MiB) on first write. Unwritten ranges read as zeros
// with no backend I/O. Chunks are only ever handed out when known to hold zeros, so a chunk that
// once belonged to another volume can never show that volume's data.
//
// Threading: the pool's shared state (allocator, chunk states, metadata log, group commit,
// control operations) belongs to one reactor, the pool's (the one passed to Open/Create); every
// Pool method is for that thread only. Each volume has an owning reactor (Volume::owner(), spread
// by SetVolumeReactors), which serves the volume's requests with Volume::SubmitOwned and reaches
// the pool's shared state by messages to the pool's reactor. Other reactors may read and write
// allocated chunks themselves (Volume::SubmitRemote, the fast path). Both are lock-free: atomic
// map loads and per-chunk pins that hold off the chunk's zeroing and reuse; map entries are
// stored only on the pool's reactor.
#pragma once

#include <atomic>
#include <cerrno>
#include <compare>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/status.h"
#include "io/io_backend.h"
#include "journal/group_commit.h"
#include "reactor/reactor.h"
#include "volume/pool_types.h"
#include "volume/replica_activity.h"
#include "volume/volume_stats.h"

namespace spd {

class Pool;
class Volume;

// One client request against a volume. Owned by the caller (preallocated), alive until `done`.
struct VolumeIo {
  IoOp op = IoOp::kRead;
  uint8_t flags = 0;  // IoFlags
  uint64_t offset_bytes = 0;
  uint32_t length_bytes = 0;
  void* buf = nullptr;  // aligned to the pool backend's alignment_bytes()
  // 0 on success, -errno on failure (-ENOSPC, -EIO, -EINVAL, -EPERM, -EOVERFLOW).
  int32_t result = 0;
  void (*done)(VolumeIo* io) = nullptr;
  void* ctx = nullptr;

  // Volume-private state.
  static constexpr int kSubIoMax = 8;  // backend I/Os one request keeps in flight at once
  BackendIo sub[kSubIoMax];
  uint32_t sub_pending = 0;
  uint64_t cursor_bytes = 0;  // how far the request has been issued
  int32_t first_error = 0;
  Volume* volume = nullptr;
  CommitWaiter waiter;
  Task task;  // deferred completion (never complete inside Submit)
  bool in_submit = false;
  bool needs_commit = false;  // allocated, freed, or FUA: commit before done
  bool fua = false;
  bool remote = false;  // started by SubmitRemote: completes on the channel's reactor
  // The owner's path (Volume::SubmitOwned): the owning reactor, and the one pool operation this
  // request waits for by message (kPoolAlloc, kPoolUnmap, kPoolCommit) with its answer.
  bool owned = false;
  uint8_t pool_op = 0;
  int32_t pool_result = 0;
  uint32_t pool_p1 = 0;
  uint64_t pool_vchunk = 0;
  Reactor* owner = nullptr;
  IoBackend* owner_channel = nullptr;
  VolumeIo* wait_next = nullptr;  // a queue of requests held while the volume is exclusive
  // Waiting for a chunk while space is being reclaimed (Pool::WaitForSpace).
  bool space_wait = false;
  uint64_t space_deadline_ns = 0;  // 0 until the request first waits
  VolumeIo* space_next = nullptr;
  // Sub-I/Os that zero in place (bit per sub) and the chunk's write count when each was issued.
  uint8_t zeroing_subs = 0;
  uint32_t sub_wseq[kSubIoMax] = {};
};

class Volume {
 public:
  ~Volume();
  const VolumeInfo& info() const { return info_; }
  // Bytes allocated to the volume now, from any thread (the control API reads it without the
  // pool's reactor). Safe on any Volume* the pool handed out: volumes are never freed while the
  // pool lives (deleted ones stay as tombstones).
  uint64_t allocated_bytes_now() const { return allocated_.load(std::memory_order_relaxed); }
  uint64_t size_bytes() const { return info_.size_bytes; }
  // What a request of `len` bytes at `off` gets for its range: 0 within the volume; -ENOSPC
  // for a write or write-zeroes (`writes`) that starts inside and runs past the end (what NBD
  // asks for); -EINVAL for any other range past the end or one that wraps around.
  int32_t RangeError(uint64_t off, uint64_t len, bool writes) const {
    const uint64_t end = off + len;
    if (off > info_.size_bytes || end < off) return -EINVAL;
    if (end > info_.size_bytes) return writes ? -ENOSPC : -EINVAL;
    return 0;
  }
  Pool* pool() const { return pool_; }
  // Replication: the durable generation (what the disk says; Pool::RecordGeneration raises it)
  // and the durable fence epoch; fence_epoch() is the highest fence asked for so far (durable or
  // on its way): a replica refuses writes of any lower epoch by it. Any thread.
  ReplicaGeneration generation() const {
    std::lock_guard<std::mutex> l(gen_mu_);
    return gen_durable_;
  }
  uint64_t fence_epoch_durable() const {
    std::lock_guard<std::mutex> l(gen_mu_);
    return fence_durable_;
  }
  uint64_t fence_epoch() const { return fence_seen_.load(std::memory_order_acquire); }
  // Which copy of the volume this is, wherever it is asked: a tag (never 0) of the pool's uuid
  // and the volume's id in it, never reused (replica_wire::HelloReplyBody::copy_id).
  uint64_t copy_id() const;

  // Starts a read, write, flush, discard or write-zeroes. `io->done` runs later on the pool's
  // reactor, never inside Submit. Out-of-range requests complete with -EINVAL (offset beyond the
  // end) or -ENOSPC (write that would extend past the end), as NBD asks.
  //
  // Any byte offset and length are accepted: a read or write not aligned to the backend's
  // alignment_bytes() (a client that did not negotiate block sizes, such as the kernel's NBD
  // client with 512-byte blocks over a 4 KiB O_DIRECT pool) is done through a bounce buffer,
  // a write as read-modify-write of the aligned blocks around it. Such requests run one at a
  // time with the volume exclusive: the fast path is paused, requests already started finish
  // first, and requests that arrive meanwhile wait, so no write to the same blocks can slip in
  // between the read and the write (volume_rmw.cc). Slow, and only for unaligned requests.
  void Submit(VolumeIo* io);
  // Requests of this volume inside the pool right now (from the pool's reactor).
  uint64_t inflight() const { return inflight_; }

  // The fast path for a connection on another reactor. Starts `io` on `channel` (that
  // reactor's IoBackend::OpenChannel of the pool's backend) when it needs nothing that only the
  // pool's reactor may touch: a read or a write inside the volume, over at most
  // VolumeIo::kSubIoMax chunks that are all allocated, and for a write that must be durable at
  // completion (FUA, durability=sync) allocated durably (no commit needed). Then `io->done` runs
  // later on the channel's reactor (never inside), and every chunk read holds data (no holes: a
  // reply needs no MapRange). Otherwise returns false having started nothing, and the caller hands
  // `io` to Submit on the pool's reactor. Thread-safe (lock-free): each chunk is pinned while its
  // I/O runs, so the pool's reactor cannot free it and give it to another volume under a remote
  // read or write.
  bool SubmitRemote(VolumeIo* io, IoBackend* channel);

  // The reactor that owns this volume: Dispatcher::OwnerOf sends every request of the volume
  // there, and there it runs SubmitOwned. The pool's reactor unless Pool::SetVolumeReactors
  // spread the volumes; fixed for the volume's life (set before it is published).
  Reactor* owner() const { return owner_; }
  // Its index in Pool::volume_reactors() (0 when they were never set).
  unsigned owner_index() const { return owner_index_; }

  // The owner's path (volume_owned.cc): runs `io` on its owning reactor, `owner`, on `channel`
  // (the owner's IoBackend::OpenChannel of the pool's backend). The owner splits the request,
  // reads and writes allocated chunks itself, answers holes, zeroes parts of chunks, and asks the
  // pool's reactor by message (never a lock) for what the pool shares: a chunk for a write into
  // a hole (kPoolAlloc), the unmapping of a whole chunk (kPoolUnmap), a commit for FLUSH, FUA and
  // durability=sync (kPoolCommit). `io->done` runs later on `owner`, never inside the call.
  // Returns false having started nothing when the owner's path is closed (a control operation
  // or the exclusive mode of an unaligned request runs), for an unaligned request, or without a
  // channel: the caller then hands `io` to Submit on the pool's reactor. Any reactor may call it
  // (the crash harness calls it on the pool's own); only that reactor must then run `owner`.
  bool SubmitOwned(VolumeIo* io, IoBackend* channel, Reactor* owner);

  // Describes [offset, offset+length) as extents, from memory (no backend I/O). Covers the
  // whole range, merging neighbours of the same kind; at most `extents_max` entries (the last one
  // then ends early, which is allowed). On the pool's reactor, or on another inside the remote
  // gate (MapRangeOwned).
  [[nodiscard]] Status MapRange(uint64_t offset_bytes, uint64_t length_bytes, size_t extents_max,
                                std::vector<Extent>* out) const;
  // MapRange from the owner (any reactor): false, having done nothing, while the owner's path is
  // closed (then ask the pool's reactor); else true with MapRange's status in `*status`.
  bool MapRangeOwned(uint64_t offset_bytes, uint64_t length_bytes, size_t extents_max,
                     std::vector<Extent>* out, Status* status) const;

  // The QoS scheduler's state of this volume (qos/qos_scheduler.cc), made at its first
  // request; opaque here. Any thread.
  std::atomic<void*> qos_state{nullptr};
  // The replication hook (dispatch/replica_hook.h) while this volume is the primary of a
  // replicated volume; null otherwise. Set and cleared by the replication layer with no
  // request of the volume in flight; opaque here. Any thread.
  std::atomic<void*> replica_hook{nullptr};
  // Replication: whether anything was applied to this copy after its durable generation, as far
  // as this process knows. kUnknown at start (it cannot tell what a previous run applied);
  // kDirty once a replicated write is applied (by the primary's set or the replica server);
  // kClean once a generation is recorded with nothing applied or in flight after it. A copy is
  // in sync with a primary only if its generation is the primary's and it is clean. Any thread.
  enum class Applied : uint8_t { kUnknown, kClean, kDirty };
  std::atomic<Applied> applied_after_generation{Applied::kUnknown};
  void MarkApplied() {
    if (applied_after_generation.load(std::memory_order_relaxed) != Applied::kDirty)
      applied_after_generation.store(Applied::kDirty, std::memory_order_relaxed);
  }
  // Nothing applied after the durable generation: known for a copy this process saw a
  // generation recorded of; otherwise only a volume never written (generation zero, nothing
  // allocated).
  bool CleanAtGeneration() const {
    const Applied a = applied_after_generation.load();
    return a == Applied::kClean || (a == Applied::kUnknown && generation() == ReplicaGeneration{} &&
                                    allocated_bytes_now() == 0);
  }

  // Replication: the units this copy applied of its primary's writes that may still be in
  // flight there (replica_activity.h): what a new primary resyncs after a failover.
  ReplicaActivity replica_activity;

  // What its clients' requests did, for the metrics endpoint (volume_stats.h). Frontends record
  // into slots of their own; any thread.
  VolumeIoStats io_stats;

 private:
  friend class Pool;
  Volume(Pool* pool, VolumeInfo info, uint32_t slot)
      : pool_(pool), info_(std::move(info)), slot_(slot) {}
  void Issue(VolumeIo* io);
  void Start(VolumeIo* io);  // Submit without the exclusive check
  // Resets io's private state and checks the request (read-only, range, durability): 0 to go
  // on, 1 to complete at once with success (FLUSH of a durability=none volume), or -errno.
  int32_t Admit(VolumeIo* io);
  void Complete(VolumeIo* io, int32_t result);
  bool Unaligned(const VolumeIo* io) const;
  void Hold(VolumeIo* io);
  // volume_rmw.cc: unaligned requests and the exclusive mode they run in.
  void SubmitUnaligned(VolumeIo* io);
  void MaybeRunExclusive();
  void RunNextUnaligned();
  static void OnRmwReadDone(VolumeIo* inner);
  static void OnRmwWriteDone(VolumeIo* inner);
  static void OnExclusiveTimer(Timer* t);
  void FinishUnaligned(int32_t result);
  void LeaveExclusive();
  static void OnSubDone(BackendIo* sub);
  static void OnCommitted(CommitWaiter* w, int32_t result);
  static void OnDeferredDone(Task* t);
  static void OnRemoteSubDone(BackendIo* sub);
  // volume_owned.cc: the owner's path. On the owner: the issue loop, completions, the pool's
  // answers. On the pool's reactor: the pool operations asked for.
  bool EnterRemote() const;  // counts in remote_active_ when the path is open
  void OwnedIssue(VolumeIo* io);
  void OwnedFinish(VolumeIo* io, int32_t result);
  void AskPool(VolumeIo* io, uint8_t op);
  static void OnOwnedSubDone(BackendIo* sub);
  static void OnOwnedDeferredDone(Task* t);
  static void OnPoolReply(Task* t);
  static void OnPoolRequest(Task* t);
  void OwnedAlloc(VolumeIo* io);
  static void ReplyOwned(VolumeIo* io, int32_t result);
  static void OnOwnedCommitted(CommitWaiter* w, int32_t result);
  uint32_t MapLoad(uint64_t vchunk) const {
    return std::atomic_ref<uint32_t>(const_cast<uint32_t&>(map_[vchunk]))
        .load(std::memory_order_seq_cst);
  }
  // Closes the remote fast path (so that map_ may be reallocated and info_ change once no remote
  // request is left); RemoteDrained() tells when the last one has ended (a control operation
  // polls it from a timer). OpenRemote reopens it.
  void BeginCloseRemote() { remote_open_.store(false, std::memory_order_seq_cst); }
  bool RemoteDrained() const { return remote_active_.load(std::memory_order_seq_cst) == 0; }
  void OpenRemote() { remote_open_.store(true, std::memory_order_seq_cst); }

  Pool* pool_;
  VolumeInfo info_;
  uint32_t slot_;
  Reactor* owner_ = nullptr;
  unsigned owner_index_ = 0;
  std::atomic<uint64_t> allocated_{0};  // info_.allocated_bytes, for other threads
  uint64_t inflight_ = 0;
  // Being created: its checkpoint is not durable yet, so FindVolume and ListVolumes skip it.
  bool hidden_ = false;
  // Deleted: the object stays (Pool::graveyard_) so that a late caller holding the pointer
  // fails cleanly (-ESHUTDOWN) instead of touching freed memory; size 0, no map, remote closed.
  bool deleted_ = false;
  // volume chunk index -> pool chunk index + 1 (0 = unallocated). Written only on the pool's
  // reactor, with atomic stores; remote readers load atomically (MapLoad) and only while counted
  // in remote_active_ with remote_open_ set, so the vector is not reallocated under them.
  std::vector<uint32_t> map_;
  std::atomic<bool> remote_open_{true};
  // Requests of other reactors between SubmitRemote or SubmitOwned and done (mutable:
  // MapRangeOwned counts itself in too).
  mutable std::atomic<uint64_t> remote_active_{0};

  // Exclusive mode for unaligned requests (volume_rmw.cc). While remote_paused_ is set,
  // SubmitRemote takes nothing, so every request comes to Submit and waits in held_.
  struct Rmw;
  Rmw* rmw_ = nullptr;  // made at the first unaligned request; owned (deleted in ~Volume)
  std::atomic<bool> remote_paused_{false};

  // Replication generation (pool_generation.cc). gen_durable_ is on disk (a pair: read and
  // written under gen_mu_); gen_pending_ is what the records queued for the next commit say
  // (the checkpoint encodes it). Written on the pool's reactor only.
  mutable std::mutex gen_mu_;
  ReplicaGeneration gen_durable_;
  uint64_t fence_durable_ = 0;
  std::atomic<uint64_t> fence_seen_{0};
  ReplicaGeneration gen_pending_;
  uint64_t fence_pending_ = 0;
  // At open (checkpoint, then each kGeneration record in log order): raises all of the above.
  void LoadGeneration(ReplicaGeneration g, uint64_t fence);
};

// What `spd2 check` reports.
struct PoolCheckReport {
  bool superblock_ok[2] = {false, false};
  uint64_t checkpoint_seq = 0;
  uint64_t log_blocks_replayed = 0;
  // Where replay stopped and why (the first block that is not the valid next one: "bad magic"
  // for never-written space, "wrong lsn" for an older pass, "bad checksum" for a torn last
  // commit; none of these is damage).
  std::string log_end;
  uint32_t format_version = 0;
  uint32_t volumes_max = 0;  // volume table slots (256 for format 1 and 2)
  uint64_t volumes = 0;
  uint64_t chunks_total = 0;
  uint64_t chunks_free = 0;
  std::vector<std::string> problems;  // empty: the pool is consistent
  std::vector<std::string> repaired;
};

// Implements GroupCommit::Owner: the journal decides when a commit runs, the pool writes it.
class Pool : private GroupCommit::Owner {
 public:
  // Made at the pool's creation, kept in its superblock: which pool this is.
  const uint8_t* uuid() const { return uuid_; }
  // Offline check: verifies superblocks, checkpoints, the metadata log and the allocation map
  // without writing anything, unless `repair` (which only ever rewrites a corrupt superblock
  // copy from the good one: a repair that cannot make a pool worse).
  static Result<PoolCheckReport> Check(std::unique_ptr<IoBackend> backend, Reactor* reactor,
                                       bool repair);
  // Formats `backend` as an empty pool. Destroys whatever was there.
  static Result<std::unique_ptr<Pool>> Create(std::unique_ptr<IoBackend> backend, Reactor* reactor,
                                              const PoolOptions& options);
  // Opens an existing pool, replaying the metadata log. Fails with kDataLoss (and changes
  // nothing) when neither superblock verifies.
  static Result<std::unique_ptr<Pool>> Open(std::unique_ptr<IoBackend> backend, Reactor* reactor);
  // Open, or Create when the backend holds no pool (all-zero superblock area).
  static Result<std::unique_ptr<Pool>> OpenOrCreate(std::unique_ptr<IoBackend> backend,
                                                    Reactor* reactor, const PoolOptions& options);
  ~Pool();
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  // ---- control operations (asynchronous) ----
  // Each is queued (FIFO, at most kControlQueueMax waiting; a full queue answers
  // kResourceExhausted) and runs alone, as a state machine on the pool's reactor: it never
  // blocks and never drives the reactor. `done` runs later on the pool's reactor, never inside
  // the call, once the change is durable (a checkpoint) or has failed; on failure the pool is as
  // it was before the operation. Every wait (the remote path's drain, the commit, a deleted
  // volume's zeroing) is bounded (ControlTimeouts): past it the operation fails with
  // kDeadlineExceeded (kFailedPrecondition for a drain) and the state is restored.
  // Sizes must be a positive multiple of kVolumeSizeAlign (kInvalidArgument otherwise).
  // REQUIRES (all): on the pool's reactor thread.
  static constexpr size_t kControlQueueMax = 64;
  static constexpr uint64_t kVolumeSizeAlign = 4096;
  struct ControlTimeouts {
    uint64_t remote_drain_ns = 5'000'000'000;  // a volume's remote requests to end
    uint64_t commit_ns = 30'000'000'000;       // the commit of the change
    uint64_t punch_ns = 60'000'000'000;        // a deleted volume's chunks to be zeroed
  };
  using ControlCallback = std::function<void(Status)>;
  void CreateVolumeAsync(const std::string& name, uint64_t size_bytes, Durability durability,
                         bool read_only, std::function<void(Result<Volume*>)> done);
  // Refused (kFailedPrecondition) while a request of the volume is in the pool (inflight()).
  // Once the deleting checkpoint is durable the volume is gone even if zeroing its chunks or
  // the commit of their frees then fails (the status says so; FindVolume says it is gone).
  void DeleteVolumeAsync(const std::string& name, ControlCallback done);
  // Grows or shrinks; the current size is Ok with no commit. Shrinking is refused
  // (kFailedPrecondition) while any chunk beyond the new end is allocated or a request runs.
  void ResizeVolumeAsync(const std::string& name, uint64_t size_bytes, ControlCallback done);
  // The current durability is Ok with no commit.
  void SetDurabilityAsync(const std::string& name, Durability durability, ControlCallback done);
  // Makes everything completed so far durable (data flush + metadata commit).
  void SyncAllAsync(ControlCallback done);

  // Replication: records durably that `v` holds every write up to `r->generation`. Two commits:
  // the first makes every write completed before the call durable (its device flush), the
  // second writes the record (a kGeneration log record, or the checkpoint), so that the record
  // never lands on disk before the data it vouches for. A generation below the volume's
  // (pending or durable) is refused (-EINVAL); an equal one completes after the commits too.
  // Volume::epoch_seen() rises at the call, so fencing starts before the record is durable.
  // Not a control operation: no queue, no drain; any number may run at once.
  // `r->done` runs on the pool's reactor, never inside. REQUIRES: on the pool's reactor thread.
  void RecordGeneration(Volume* v, GenerationRecord* r);
  // Queued operations not yet finished, the running one included.
  size_t control_ops_pending() const { return control_queue_.size() + (control_active_ ? 1 : 0); }
  void set_control_timeouts(const ControlTimeouts& t) { control_timeouts_ = t; }

  // ---- the same, blocking ----
  // Thin wrappers for start-up and tests: submit the operation above and drive the reactor
  // until its callback ran.
  // REQUIRES: on the pool's reactor thread, not inside a reactor callback.
  [[nodiscard]] Result<Volume*> CreateVolume(const std::string& name, uint64_t size_bytes,
                                             Durability durability = Durability::kFlush,
                                             bool read_only = false);
  [[nodiscard]] Status DeleteVolume(const std::string& name);
  [[nodiscard]] Status ResizeVolume(const std::string& name, uint64_t size_bytes);
  [[nodiscard]] Status SetDurability(const std::string& name, Durability durability);
  [[nodiscard]] Status SyncAll();

  // A durable volume by name (not one whose creation is still committing), or nullptr.
  Volume* FindVolume(const std::string& name);
  std::vector<VolumeInfo> ListVolumes() const;

  // For tests: every free chunk the pool would hand out or claims on disk to hold zeros
  // (kFreeZero, kFreeKnownZero, kReserving) does hold zeros on the backend. Blocking reads.
  [[nodiscard]] Status CheckFreeChunksHoldZeros();
  // Chunks still waiting for or under background zeroing (kFreeDirty excluded: punch failures).
  uint64_t chunks_zeroing() const { return zero_queue_.size() + zeroing_inflight_; }

  PoolStats stats() const;
  // kResourceExhausted when a volume of `old_size` bytes (0: a new one) made `new_size` would
  // take the volumes' sizes summed beyond PoolOptions::overcommit_max times the data area, or
  // their chunk maps beyond PoolOptions::map_memory_max (`what`: the operation, for the
  // message). Creates and resizes check it themselves; replication asks it before it records a
  // size every copy must take. REQUIRES: on the pool's reactor.
  Status CheckGrowth(uint64_t old_size, uint64_t new_size, const std::string& what) const;
  IoBackend* backend() const { return backend_.get(); }
  Reactor* reactor() { return reactor_; }

  // Spreads the volumes over `reactors`: each volume, existing or created later, gets the one
  // that owns the fewest (ties: the lowest index) as Volume::owner(). Empty: every volume is the
  // pool reactor's (the default). At start-up, before any request and any other thread sees a
  // volume; at most kVolumeReactorsMax. REQUIRES: on the pool's reactor thread.
  static constexpr size_t kVolumeReactorsMax = 64;
  [[nodiscard]] Status SetVolumeReactors(const std::vector<Reactor*>& reactors);
  const std::vector<Reactor*>& volume_reactors() const { return volume_reactors_; }
  uint64_t chunk_bytes() const { return chunk_bytes_; }
  // The on-disk format version (1..pool_format::kVersion) and how many volumes the pool can
  // hold (its volume table: 256 for format 1 and 2), both fixed when the pool was formatted.
  uint32_t format_version() const { return format_version_; }
  uint32_t volumes_max() const { return volumes_max_; }
  // PoolOptions::space_wait_ns, for this run from now on.
  void set_space_wait_ns(uint64_t ns) { space_wait_ns_ = ns; }

  // Waits for a commit that starts after this call (group commit: one commit serves every
  // waiter that arrived before it started). `w->fn` runs on the reactor, never inside.
  // On a read-only pool it completes with -EIO (no device I/O).
  void WaitCommit(CommitWaiter* w);

  // True for good once a commit (log write or device flush) or a device flush failed: after a
  // failed flush the kernel may have dropped the unwritten pages, so no later flush could
  // vouch for them. Reads keep working; writes, trims and write-zeroes fail with -EROFS,
  // flushes with -EIO. A restart re-opens the pool from its last durable state. Any thread.
  bool read_only() const { return read_only_.load(std::memory_order_seq_cst); }
  // Called once, on the pool's reactor, when the pool turns read-only (with why): the control
  // plane's POOL_READ_ONLY event. Set before the reactor runs; must not block.
  // Background I/O (chunk zeroing and punching) goes through `gate` (the QoS scheduler's
  // background class) from now on; null: straight to the backend. On the pool's reactor thread
  // (or with it stopped); the gate must outlive the setting (clear it before destroying it).
  void SetBackgroundGate(IoGate* gate) { bg_gate_ = gate; }
  void set_read_only_listener(std::function<void(const std::string&)> fn) {
    read_only_listener_ = std::move(fn);
  }

 private:
  friend class Volume;
  enum ChunkState : uint8_t {
    kFreeZero = 0,   // free and known to hold zeros: may be handed out
    kFreeDirty = 1,  // free, contents unknown (after a crash): zeroed before use
    kAllocated = 2,
    kFreeing = 3,      // unmapped; zeroing in progress or waiting for in-flight I/O
    kFreePending = 4,  // zeroed; free record not yet durable
    // Format 2 (docs/pool_format.md, "Known-zero chunks"):
    kFreeKnownZero = 5,     // holds zeros and the metadata says so: handed out only after a
                            // durable kReserve record (state kReserving until then)
    kZeroing = 6,           // contents unknown (after open): background zeroing queued or running
    kZeroFlushPending = 7,  // background zeroing done; allocatable after the next device flush
    kReserving = 8,         // known zero; its kReserve record is not yet durable
  };
  struct CommitState;
  struct PunchIo;
  struct ControlOp;
  struct ZeroBuf;

  Pool(std::unique_ptr<IoBackend> backend, Reactor* reactor);
  Status Format(const PoolOptions& options);
  Status Load();
  Status ReadSuperblock();
  Status LoadMetadata();
  Status LoadCheckpoint();
  Status ReplayLog();
  Status ZeroFreeChunks();
  // After open: queues every kFreeDirty chunk for zeroing by the reactor (asynchronous, at most
  // kPunchIosMax in flight); lists the known-zero ones.
  void StartBackgroundZeroing();
  // A chunk whose zeroing a device flush has covered: allocatable (kFreeZero) while the
  // reserve is short, else known zero (kFreeKnownZero, a kZeroed record).
  void ReturnZeroedChunk(uint32_t pchunk);
  // Moves known-zero chunks to kReserving (kReserve records) when the reserve runs low.
  void RefillReserve();
  // Records or zeroed chunks pending whose commit would make chunks allocatable.
  bool CommitWouldFreeSpace() const;
  void RebuildVolumeMaps();
  // Control operations (pool.cc): queue, one at a time, each a state machine.
  void SubmitControl(std::unique_ptr<ControlOp> op);
  void StartNextControl();
  void ControlStart(ControlOp* op);
  void ControlAfterDrain(ControlOp* op);
  void ControlCommitted(ControlOp* op, int32_t result);
  void ControlCommit(ControlOp* op, bool checkpoint);
  void ControlPollTimer(ControlOp* op);
  void ControlRestore(ControlOp* op);
  void ControlFinish(ControlOp* op, Status status);
  void ControlMaybeFree(ControlOp* op);
  static void OnControlTimer(Timer* t);
  static void OnControlCommit(CommitWaiter* w, int32_t result);
  static void OnControlIo(BackendIo* io);
  static void OnControlDone(Task* t);
  // True when none of the pool's own I/O (a commit, chunk zeroing) is in flight.
  bool IoIdle() const;
  // Drives the reactor until IoIdle(), by completions; false if `timeout_ns` passed first.
  bool DrainIo(uint64_t timeout_ns);

  uint64_t ChunkOffset(uint32_t pchunk) const;    // pchunk 0-based
  uint32_t ChunkAt(uint64_t offset_bytes) const;  // the inverse: the pchunk of a data offset
  void ResetChunkState();  // per-chunk arrays sized to chunks_total_, every chunk free-dirty
  uint32_t AllocChunk(Volume* v, uint64_t vchunk);  // pchunk + 1, or 0 when full
  void UnmapChunk(Volume* v, uint64_t vchunk);
  void ChunkIoStart(uint32_t pchunk) { ++chunk_inflight_[pchunk]; }
  void ChunkIoDone(uint32_t pchunk);
  // A chunk is zeroed (and later reused) once no I/O of the pool's reactor and no remote I/O
  // (pins_) runs on it; a chunk still pinned is retried from remote_wait_timer_.
  void MaybeStartPunch(uint32_t pchunk);
  static void OnRemoteWaitTimer(Timer* t);
  // Known-zero tracking of allocated chunks, per zero block (zero_block_bytes_: 64 KiB, or
  // chunk/64 for chunks over 4 MiB): bit i of zero_mask_[p] says zero block i of chunk p reads
  // as zeros. Any thread (atomic); remote writes clear bits on their own reactors.
  uint64_t ZeroMask(uint32_t pchunk) const {
    return zero_mask_[pchunk].load(std::memory_order_relaxed);
  }
  void SetZeroMask(uint32_t pchunk, uint64_t mask) {
    zero_mask_[pchunk].store(mask, std::memory_order_relaxed);
  }
  // A write to [in, in+len) of the chunk: the zero blocks it touches hold data now. Counted in
  // wseq_, so that a zeroing that completes later does not mark them zero again.
  void MarkData(uint32_t pchunk, uint64_t in_bytes, uint64_t len_bytes);
  uint32_t WriteSeq(uint32_t pchunk) const { return wseq_[pchunk].load(std::memory_order_seq_cst); }
  // A zeroing of [in, in+len) completed: the zero blocks it covers whole read as zeros, unless
  // a write to the chunk was issued since the zeroing was (wseq_ moved on from `wseq`).
  void MarkZeroIfUnwritten(uint32_t pchunk, uint64_t in_bytes, uint64_t len_bytes, uint32_t wseq);
  uint64_t ZeroBits(uint64_t in_bytes, uint64_t len_bytes, bool covered_only) const;
  void SetAllocPending(uint32_t pchunk, uint8_t v) {
    std::atomic_ref<uint8_t>(alloc_pending_[pchunk]).store(v, std::memory_order_release);
  }
  uint8_t AllocPending(uint32_t pchunk) const {
    return std::atomic_ref<uint8_t>(const_cast<uint8_t&>(alloc_pending_[pchunk]))
        .load(std::memory_order_acquire);
  }
  void StartPunch(uint32_t pchunk);
  static void OnPunchDone(BackendIo* io);
  // True while freed chunks are on their way back to kFreeZero (zeroing queued or running,
  // waiting for I/O or pins, free record pending or in the running commit).
  bool ReclaimPending() const;
  // Parks a write that found no free chunk while ReclaimPending(); it is issued again when a
  // commit returns chunks, and fails with ENOSPC when nothing is left to reclaim, after
  // space_wait_ns_, or when kSpaceWaitersMax requests wait already.
  void WaitForSpace(VolumeIo* io);
  // Retries the waiting writes soon (from space_timer_, never inside the caller).
  void WakeSpaceWaiters();
  void AppendSpaceWaiter(VolumeIo* io);
  static void OnSpaceTimer(Timer* t);

  void ApplyRunTimeOptions(const PoolOptions& options);
  void AssignOwner(Volume* v);  // the least-loaded of volume_reactors_
  // The least-loaded of volume_reactors_ by `count` (volumes per reactor, kVolumeReactorsMax
  // entries), ties to the lowest index; the pool's reactor when there are none.
  void SetOwner(Volume* v, const uint32_t* count);
  // A write of the owner's path waiting for space (WaitForSpace) is answered by message; any
  // other is completed.
  void FailSpaceWaiter(VolumeIo* io);
  static void OnGenerationCommit(CommitWaiter* w, int32_t result);
  void RunCommit() override;                  // GroupCommit::Owner
  bool CommitHasWork() const override;        // GroupCommit::Owner
  void FlushFailed(int32_t result) override;  // GroupCommit::Owner
  // Turns the pool read-only for good (read_only()), logs why once.
  void EnterReadOnly(int32_t result, const char* what);
  // Completes commits and waiters of a read-only pool with -EIO, from the reactor (never inside
  // the call that started them).
  void ScheduleReadOnlyFail();
  static void OnReadOnlyFail(Task* t);
  void CommitStep(int32_t result);
  static void OnCommitIo(BackendIo* io);
  size_t EncodeCheckpoint(uint8_t* buf);
  void FinishCommit(int32_t result);

  std::unique_ptr<IoBackend> backend_;
  Reactor* reactor_;
  uint8_t uuid_[16] = {};
  uint64_t pool_bytes_ = 0;
  uint32_t chunk_bytes_ = 0;
  uint64_t ckpt_offset_[2] = {0, 0};
  uint64_t ckpt_bytes_ = 0;
  uint64_t log_offset_ = 0;
  uint64_t log_bytes_ = 0;
  uint64_t data_offset_ = 0;
  uint64_t chunks_total_ = 0;
  // Volume table slots: pool_format::kVolumesMaxV2 for format 1 and 2, the superblock's
  // volumes_max for format 3. slots_ has this many entries.
  uint32_t volumes_max_ = 0;

  uint64_t ckpt_seq_ = 0;
  uint64_t next_lsn_ = 1;
  uint64_t log_pos_ = 0;
  uint32_t next_volume_id_ = 1;

  std::vector<std::unique_ptr<Volume>> slots_;  // volumes_max_ entries, by volume table slot
  std::vector<uint64_t> owners_;                // per pool chunk: (slot+1) << 32 | vchunk
  std::vector<uint8_t> state_;                  // ChunkState per pool chunk
  std::vector<uint16_t> chunk_inflight_;
  // Remote (Volume::SubmitRemote) I/Os running on each pool chunk, from any reactor.
  std::unique_ptr<std::atomic<uint32_t>[]> pins_;
  std::vector<uint32_t> remote_wait_;  // freed chunks waiting for their pins to go
  struct RemoteWaitTimer : Timer {
    Pool* pool = nullptr;
  } remote_wait_timer_;
  // 1 while a chunk's allocation record is not yet durable: a FUA write into it must commit
  // (atomic access: SetAllocPending, AllocPending; remote FUA writes read it).
  std::vector<uint8_t> alloc_pending_;
  // Per allocated chunk: which zero blocks read as zeros (ZeroMask: a fresh chunk's all, less
  // what was written since; write-zeroes and in-place trims add back what they cover whole), and
  // a count of writes issued to it (WriteSeq). In memory only: after a restart every allocated
  // block reports as data, which is safe.
  std::unique_ptr<std::atomic<uint64_t>[]> zero_mask_;
  std::unique_ptr<std::atomic<uint32_t>[]> wseq_;
  uint32_t zero_block_bytes_ = 64u << 10;
  std::vector<uint32_t> free_zero_;  // stack of kFreeZero chunks
  // Format 2: free chunks' known-zero state is kept on disk (zero_map_); per chunk at load,
  // whether the metadata says free and zero.
  bool zero_map_ = false;
  uint32_t format_version_ = 0;
  std::vector<uint8_t> zero_claim_;
  std::vector<uint32_t> known_zero_free_;  // stack of kFreeKnownZero chunks
  std::vector<uint32_t> zero_queue_;       // kZeroing chunks waiting for a PunchIo
  std::vector<uint32_t> zeroed_pending_;   // kZeroFlushPending chunks
  uint64_t reserving_ = 0;                 // chunks in kReserving
  uint64_t zeroing_inflight_ = 0;          // background zeroings with a PunchIo
  uint64_t reserve_target_ = 8;            // kFreeZero chunks to keep (format 2)
  std::unique_ptr<ZeroBuf> zero_buf_;      // zeros for zeroing writes (block devices)
  uint64_t chunks_free_ = 0;               // kFreeZero + kFreeDirty

  std::vector<uint32_t> freed_pending_;  // chunks whose free record is pending
  std::vector<uint32_t> punch_queue_;    // waiting for a PunchIo
  std::vector<PunchIo*> punch_free_;
  std::vector<PunchIo*> zero_io_free_;  // background zeroing's own
  std::vector<std::unique_ptr<PunchIo>> punch_ios_;

  uint64_t anomalies_ = 0;  // records/owners that did not fit, seen at load
  uint64_t log_blocks_replayed_ = 0;
  std::string log_end_;  // where and why replay stopped (PoolCheckReport::log_end)
  std::unique_ptr<CommitState> commit_;
  std::unique_ptr<GroupCommit> group_;
  bool fault_skip_commit_flush_ = false;  // PoolOptions::fault_skip_commit_flush
  IoGate* bg_gate_ = nullptr;             // SetBackgroundGate
  void SubmitBackground(BackendIo* io);
  bool closing_ = false;  // in ~Pool: no new zeroing or background commit starts
  // Chunks kFreeing whose zeroing waits for the pool reactor's in-flight I/O to them.
  uint64_t freeing_busy_ = 0;
  // Writes waiting for a chunk (WaitForSpace), FIFO; space_timer_ retries them (space_wake_)
  // and fails those past their deadline.
  VolumeIo* space_head_ = nullptr;
  VolumeIo* space_tail_ = nullptr;
  size_t space_waiters_ = 0;
  bool space_wake_ = false;
  uint64_t space_wait_ns_ = PoolOptions{}.space_wait_ns;
  double overcommit_max_ = 0;    // PoolOptions::overcommit_max
  uint64_t map_memory_max_ = 0;  // PoolOptions::map_memory_max
  struct SpaceTimer : Timer {
    Pool* pool = nullptr;
  } space_timer_;
  std::atomic<bool> read_only_{false};
  std::function<void(const std::string&)> read_only_listener_;
  CommitWaiter* ro_head_ = nullptr;  // waiters of a read-only pool, failed by ro_task_
  CommitWaiter* ro_tail_ = nullptr;
  bool ro_commit_ = false;  // a commit started on a read-only pool: ro_task_ fails it
  bool ro_task_scheduled_ = false;
  struct RoTask : Task {
    Pool* pool = nullptr;
  } ro_task_;
  PoolStats stats_;

  // Control operations: every one alive (queued, running, finished but with its callback or a
  // late commit waiter or I/O still to come), the queue, and the one running.
  std::vector<std::unique_ptr<ControlOp>> control_ops_;
  std::deque<ControlOp*> control_queue_;
  ControlOp* control_active_ = nullptr;
  ControlTimeouts control_timeouts_;
  std::vector<Reactor*> volume_reactors_;
  std::vector<uint32_t> volumes_per_reactor_;
  // Deleted volumes (tombstones, Volume::deleted_), kept so that stale pointers fail cleanly.
  std::vector<std::unique_ptr<Volume>> graveyard_;
};

}  // namespace spd