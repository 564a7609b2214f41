// ReplicaSet: the primary side of replication for one volume (docs/replication.md, "Data
// path"). It is the volume's ReplicaHook: on the volume's owning reactor it numbers every write,
// write-zeroes, discard and flush, runs it on the local volume and sends it to every in-sync
// replica (replica/replica_wire.h; a flush becomes a barrier), and completes it only when the
// local part and every in-sync replica's ack are in.
//
// A replica that fails (no connection, an error, no ack within ack_timeout_ms, out of sync at
// the hello) stops counting: it is marked out of sync through `mark_out_of_sync` (the cluster
// layer writes it to etcd) and, until that mark is confirmed, no request of the volume is
// acknowledged (they wait, at most hold_timeout_ms, then fail with -EIO). A replica that
// answers -ESTALE (or refuses the hello with a newer fence) has a newer primary: this one is
// deposed, and every request fails with -EIO from then on.
//
// Links connect from threads of their own (connect and hello, each with a deadline), then run on
// the owner. Requests that arrive before every link has connected or failed wait for that.
// Limits: inflight_max requests numbered and not yet complete (more wait in a queue of the
// frontends' own requests), at most kReplicasMax replicas.
//
// Thread-safety: Start, Attach, Detach, Stop and the hook on the owner's thread; Links() from
// any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "dispatch/dispatcher.h"
#include "dispatch/replica_hook.h"
#include "replica/replica_wire.h"
#include "volume/replica_activity.h"

namespace spd {

class ActivityLog;
class InprocFrontend;
class ReplicaTls;

struct ReplicaTarget {
  std::string name;     // the replica's node name
  std::string address;  // HOST:PORT of its replication listener (IPv4)
};

// ReplicaSet::LinkState's name ("in-sync", "out-of-sync", ...), for on_link_state.
using LinkStateView = const char*;

struct ReplicaSetOptions {
  std::string volume;      // the volume's name on the replicas
  uint64_t epoch = 0;      // this primary's
  ReplicaGeneration base;  // the generation the primary started from
  std::vector<ReplicaTarget> replicas;
  uint64_t connect_timeout_ms = 2'000;  // connect and hello, each
  uint64_t ack_timeout_ms = 5'000;
  uint64_t hold_timeout_ms = 30'000;
  uint32_t inflight_max = 1024;  // a power of two
  uint32_t sndbuf_bytes = 0;     // each link's socket send buffer (as DRBD's sndbuf-size); 0: auto
  // TLS (replica_tls.h): every link connects over TLS with the file's first key; a replica
  // without TLS or another key fails the handshake (the link is out of sync). Null: plaintext.
  // Outlives the set.
  const ReplicaTls* tls = nullptr;
  // Marks replica `name` out of sync where promotion looks; calls done(true) once that is
  // durable (any thread). Null: nothing to mark (tests, a node without a cluster).
  std::function<void(const std::string& name, std::function<void(bool ok)> done)> mark_out_of_sync;
  // The lease-safety rule (docs/replication.md): while it answers false, nothing is
  // acknowledged (requests wait, at most hold_timeout_ms). Null: always valid. Any thread; it is
  // asked at every completion, so it must be cheap.
  std::function<bool()> lease_valid;
  // Resync: an out-of-sync replica whose mark is confirmed is connected again every
  // resync_retry_ms and, if it takes a resync, gets the whole volume copied over (allocated
  // regions as writes, unallocated ones as discards) while new writes go to it too; after a
  // final barrier it is in sync, and mark_in_sync records that (any thread; done(true) once
  // durable). Off: an out-of-sync replica stays so.
  bool resync = true;
  uint64_t resync_retry_ms = 2'000;
  uint32_t resync_region_bytes = 1u << 20;
  // Regions of a resync in flight at once (read here, on the wire, written there): the copy
  // keeps the link and both disks busy instead of waiting a round trip per region.
  uint32_t resync_regions_inflight = 4;
  // While clients wrote within the last window of this many ms, a resync keeps one region of a
  // quarter size in flight instead (their writes to the resyncing replica queue on the link
  // behind what the copy sent before them). 0: never.
  uint32_t resync_yield_window_ms = 10;
  // Told of every link state change (on the owner; must not block): name, new state, why.
  std::function<void(const std::string& name, LinkStateView state, const std::string& why)>
      on_link_state;
  // A replica's current address, asked before each reconnection (a node that restarted may
  // listen elsewhere); "" or null: the one it had.
  std::function<std::string(const std::string& name)> resolve_address;
  std::function<void(const std::string& name, std::function<void(bool ok)> done)> mark_in_sync;
  // After a failover (docs/replication.md, "Resync after a failover"): this copy's record of
  // what it applied in the previous primary's term (volume/replica_activity.h), and the
  // replicas that were in sync in that term as etcd says. Such a replica that answers out of
  // sync with a complete record of the same term is resynced only in the units either record
  // holds (the writes the dead primary may have had in flight), not the whole volume.
  ReplicaActivity::Snapshot prior;
  std::vector<std::string> prior_in_sync;
  // `prior` is this node's own record of a term it was the primary of (and etcd says this node
  // was in sync in it): a replica out of sync then whose dirty map that process persisted
  // resumes it (plus what was in flight then), instead of getting the whole volume.
  bool prior_own_term = false;
  // Where each replica's dirty map is kept (DIR/VOLUME.dirty.NODE, dirty_map.h): the next
  // process of this node may resume it. "": in memory only.
  std::string state_dir;
  // The primary's activity log (replica/activity_log.h), in DIR/VOLUME.alog under state_dir:
  // at most this many 64 KiB units (1..2032); a write to a unit not in it waits until the unit
  // is durably there. After a power loss of this node its units bound what the next primary
  // copies back to it. 0 (or no state_dir): no log (a power loss then copies the whole volume).
  uint32_t activity_log_units = 1024;
  // A replica that loses power loses what it acknowledged since its last barrier; the set keeps
  // that per link (Link::kUnbarrieredMax writes) and, once a link holds half as many or this
  // many bytes, flushes the volume itself (BarrierForRing). 0: never (past kUnbarrieredMax
  // writes, a replica's power loss copies the whole volume).
  uint64_t unbarriered_bytes = 64ull << 20;
  // Fault injection in our own transport (there is no netem here): every message leaves
  // inject_rtt_us after it was numbered (the round trip, put on the way out), and with
  // probability inject_loss_ppm / 1e6 a message is "lost" and leaves inject_rto_ms later, as
  // TCP's retransmission would send it; the stream keeps its order, so the messages behind a
  // lost one wait too. inject_seed makes a run repeatable.
  uint64_t inject_rtt_us = 0;
  uint32_t inject_loss_ppm = 0;
  uint64_t inject_rto_ms = 200;
  uint64_t inject_seed = 1;
  // An asynchronous volume (replica_set_async.cc): a request completes once done locally; its
  // message stays in flight to the replicas as a copy of its own (a shadow), in order with the
  // others, as long as what the replicas have not acknowledged stays within async_lag_bytes of
  // payload and its oldest message within async_lag_ms. Beyond either bound a completion waits
  // for the acks, as a synchronous one does. Overlapping writes still wait for each other's
  // acks (every copy applies them in one order).
  bool async = false;
  uint64_t async_lag_bytes = 32ull << 20;
  uint64_t async_lag_ms = 1'000;
};

class ReplicaSet final : public ReplicaHook {
 public:
  static constexpr size_t kReplicasMax = 8;
  // kResyncing: connected again after it fell out of sync; gets every new write (and is waited
  // for) while the set copies the whole volume to it, region by region; in sync after the
  // copy's final barrier.
  enum class LinkState { kConnecting, kInSync, kOutOfSync, kDeposedUs, kResyncing };
  static const char* LinkStateName(LinkState s);
  struct LinkInfo {
    std::string name;
    LinkState state = LinkState::kConnecting;
    std::string detail;           // why it is not in sync
    bool marked = false;          // its out-of-sync mark is confirmed
    uint64_t acked = 0;           // messages it acknowledged
    uint64_t resynced_bytes = 0;  // of the current or last resync
    uint64_t resyncs = 0;         // resyncs completed
  };

  // On the owner (v->owner()). Starts connecting; Attach to route the volume's requests here.
  static Result<std::unique_ptr<ReplicaSet>> Start(Dispatcher* d, Volume* v, ReplicaSetOptions o);
  ~ReplicaSet() override;  // Stop()

  // The volume's writes and flushes go through the set from now on (Volume::replica_hook).
  void Attach();
  // Back to the volume alone. REQUIRES: nothing of the volume in flight.
  void Detach();
  // Closes every link and joins the connecting threads, driving the owner's reactor until the
  // links' last events came back. REQUIRES: on the owner's thread, outside any of its callbacks,
  // detached.
  void Stop();
  // Stop in two halves for a set whose owner runs on a thread of its own: Close on the owner
  // (links shut down, timer cancelled; idempotent), then JoinThreads from any thread; destroy
  // the set once the owner's reactor has stopped.
  void Close();
  void JoinThreads();

  // A clean hand-over (ReplicationManager, promote). From now on every request fails with
  // -EROFS (the volume is being handed over); once everything admitted before has completed, a
  // barrier goes to every in-sync replica. done(seq) on the owner once they all acknowledged it
  // (seq: the barrier's number: the caller records the same generation on the local copy, so
  // that every in-sync copy then holds one generation with nothing after it and the next
  // primary finds them in sync), or done(0) when that could not be (closing, deposed).
  void Quiesce(std::function<void(uint64_t seq)> done);

  // The volume grows to size_bytes (ReplicationManager, a resize; replica_set_grow.cc): every
  // link's dirty map grows (its new units clean), then a kGrow goes to every in-sync and
  // resyncing replica. done(0) on the owner once each acknowledged it or failed and was marked
  // out of sync (it grows at its next hello, which names the new size from now on); <0: it
  // could not be (-EBUSY: one at a time; -EIO: closing or deposed; a map that could not grow).
  // The caller grows the local copy after done(0), so that no write past a replica's end is
  // ever sent to it. A size not above the volume's: done(0) at once.
  void Grow(uint64_t size_bytes, std::function<void(int32_t result)> done);
  // The replicas change (ReplicationManager, a copy moved to another node; replica_set_move.cc).
  // A link to a node not in `targets` stops counting at once, with no out-of-sync mark (the
  // placement in etcd, changed first, has dropped that copy already): it is closed, never
  // connected again and no longer listed, and its dirty map's file goes. A target new to the set
  // gets a link out of sync with no map (a stale file of that node is removed first), so its
  // copy is resynced whole (allocated space only; resumable from its checkpoints) from the next
  // tick on. 0: done; -EBUSY: no slot for a new link yet (kReplicasMax links, and a removed
  // one's slot is free only once its last event came back): call again later; -EIO: closing or
  // deposed.
  int SetReplicas(const std::vector<ReplicaTarget>& targets);
  // Links listed: those not removed by SetReplicas.
  std::vector<LinkInfo> Links() const;
  bool deposed() const { return deposed_.load(); }
  // A write or a flush failed on the local copy, or its pool turned read-only, while a replica
  // was in sync: this copy is no longer (or, restarted, will not be) the replicas' equal; the
  // volume must go to an in-sync replica. Any thread.
  bool local_failed() const { return local_failed_.load(); }
  // The set has seen its pool read-only and decided local_failed() by it (its next tick after
  // the pool turned). Any thread.
  bool read_only_checked() const { return read_only_checked_.load(); }
  // Every link has connected or failed (requests flow).
  bool settled() const { return settled_.load(); }
  // The tick is at its idle period (1 s, not 100 ms): nothing in flight, every copy in sync.
  // On the owner's thread (tests).
  bool tick_idle() const { return tick_idle_; }
  uint64_t epoch() const { return o_.epoch; }
  // Asynchronous volumes: payload bytes and age (ms) of what the replicas have not acknowledged
  // of the requests already complete. Any thread.
  uint64_t lag_bytes() const { return lag_bytes_.load(std::memory_order_relaxed); }
  uint64_t lag_ms() const;
  // Asynchronous from now on, or not (the volume's record changed: ReplicationManager; on the
  // set's reactor). Off: new completions wait for the acks again; the requests completed ahead
  // of theirs (shadows) retire as the acks come, until AsyncDrained().
  void SetAsync(bool on) { o_.async = on; }
  bool async() const { return o_.async; }  // on the set's reactor
  // No request completed ahead of its acks is still waiting for one (on the set's reactor):
  // every write completed so far is on every in-sync replica.
  bool AsyncDrained() const { return shadows_live_ == 0 && shadow_pending_.empty(); }

  void Start(IoRequest* req) override;
  void LocalDone(IoRequest* req) override;

  struct Link;

  // Internal: the links' (replica_set.cc, replica_set_resync.cc).
  void ReleaseFd(Link* l);
  // Shuts a connected link's socket down (its last poll events still to come back); false when
  // it has none or it was shut down already.
  bool ShutLink(Link* l);
  void Connected(Link* l);
  // A link that fails: what it may miss from now on goes into its map, the failure is counted,
  // it stops counting (StopCounting) and is marked out of sync before requests go on without it.
  void FailLink(Link* l, LinkState state, const std::string& why);
  // The link leaves `state`: its copy aborted, its socket shut, requests no longer wait for it.
  void StopCounting(Link* l, LinkState state, const std::string& why);
  void MaybeComplete(IoRequest* req);
  void WaitToSend(uint64_t at);  // a message waits until `at` for an injected delay
  // Empties a table slot and moves the watermark (low_seq_) past the slots that are empty.
  void ClearSlot(uint64_t seq);
  // What a message numbered `seq` tells the replicas of the watermark (replica_wire.h, result).
  int32_t Gap(uint64_t seq) const { return static_cast<int32_t>(seq - low_seq_); }
  // At the start: the link's dirty map from what this node knows (o_.prior, a persisted map).
  void SeedDirty(Link* l);
  // A hello's answer: a link's map waiting for the replica's record of the previous term
  // (prior_pending) gets it if it vouches, else the whole volume is copied.
  void AdoptPriorActivity(Link* l);
  // A hello's answer: why the copy may lack what the link's map counts as copied (it is then
  // copied whole); empty when the map holds.
  std::string LostCopyReason(const Link& k, bool resync) const;
  Reactor* owner_;
  std::vector<IoRequest*> table_;  // by seq & mask: numbered, not complete
  std::vector<uint64_t> send_at_;  // by seq & mask: an injected delay's end (0: none)
  uint64_t mask_ = 0;
  uint64_t next_seq_ = 1;
  uint64_t low_seq_ = 1;        // the lowest number still in the table (next_seq_ when none)
  mutable std::mutex info_mu_;  // guards the LinkInfo copies Links() reads

 private:
  ReplicaSet(Dispatcher* d, Volume* v, ReplicaSetOptions o);
  void Admit(IoRequest* req);
  // A link to `t` at `index` (its callbacks, hello and dirty map; not yet connecting).
  std::unique_ptr<Link> MakeLink(size_t index, const ReplicaTarget& t);
  void RemoveLink(Link* l);                     // replica_set_move.cc
  void RemoveMapFile(const std::string& node);  // a node's dirty map file (none: fine)
  bool SlotFree(const Link& l) const;           // a removed link nothing refers to any more
  replica_wire::HelloBody hello_;               // every link's hello, as Start made it
  void LocalWriteFailed(IoRequest* req);
  // This copy lost, or will lose at a restart, what the replicas hold (what: why, for the log).
  void LocalCopyLost(const char* what);
  void AdmitWaiting();
  // Writes that overlap one in flight (or one parked before them) wait until it is done: two
  // overlapping writes in flight together could land in different orders on different copies.
  bool ParkIfConflicting(IoRequest* req);
  void Retire(IoRequest* req);  // out of the table and the in-flight list; parked ones retry
  // The writes parked behind overlapping ones go back to the front of the wait queue, in order.
  void RequeueParked();
  // Every request not yet numbered (parked ones too) completes with `result`.
  void FailWaiting(int32_t result);
  void CompleteAll();  // after a mark settled: every request that waited for it
  void AskMark(Link* l);
  void Marked(Link* l, bool ok);
  void CheckSettled();
  void OnTick();
  // A request, a message or a failure that the tick watches (an ack's deadline, a reconnect):
  // the tick back at kTickNs if it was idle. On the owner's thread.
  void WakeTick();
  void PumpLinks();
  // Sends once the reactor's current batch of events is handled: the messages numbered in one
  // batch leave in one sendmsg per link.
  void SchedulePump();
  bool Holding() const { return marks_pending_ != 0; }
  uint32_t InSyncBits() const;

  Dispatcher* dispatcher_;
  Volume* volume_;
  ReplicaSetOptions o_;
  std::vector<std::unique_ptr<Link>> links_;
  std::vector<IoRequest*> active_;  // numbered writes in flight (IoRequest::repl_active)
  // Their byte ranges [first, second), at the same indexes: the overlap check reads these
  // (one cache line per four) rather than every request.
  std::vector<std::pair<uint64_t, uint64_t>> active_ranges_;
  IoRequest* conflict_head_ = nullptr;  // parked behind an overlapping write, in order
  IoRequest* conflict_tail_ = nullptr;
  IoRequest* wait_head_ = nullptr;  // not yet numbered (table full, or links not settled)
  IoRequest* wait_tail_ = nullptr;
  uint32_t marks_pending_ = 0;  // links failed whose out-of-sync mark is not confirmed
  std::atomic<bool> settled_{false};
  std::atomic<bool> deposed_{false};
  std::atomic<bool> local_failed_{false};
  std::atomic<bool> read_only_checked_{false};
  bool stopping_ = false;
  static constexpr uint64_t kTickNs = 100'000'000;  // the tick's period (replica_set_tick.cc)
  struct TickTimer : Timer {
    ReplicaSet* set = nullptr;
  } tick_;
  bool tick_armed_ = false;
  // The tick is at its idle period (OnTick found nothing it could have to do): WakeTick
  // brings it back to kTickNs when something starts.
  bool tick_idle_ = false;
  struct PumpTask : Task {
    ReplicaSet* set = nullptr;
  } pump_task_;
  bool pump_deferred_ = false;
  // Quiesce: requests refused; the final barrier once nothing else is in flight.
  bool quiescing_ = false;
  bool quiesce_sent_ = false;
  std::function<void(uint64_t)> quiesce_done_;
  IoRequest quiesce_msg_;
  void MaybeSendQuiesce();
  void FinishQuiesce(uint64_t seq);
  // Grow (replica_set_grow.cc): the kGrow message, sent once a table slot is free; the size
  // the volume is growing to (a hello names it from the start of a grow on).
  IoRequest grow_msg_;
  std::function<void(int32_t)> grow_done_;
  bool grow_sent_ = false;
  uint64_t grow_size_ = 0;
  uint64_t SizeTarget() const;
  void MaybeSendGrow();
  void FinishGrow(int32_t result);
  // Numbers and sends one of the set's own messages (no payload; `offset` in its header) to the
  // links in `bits`, as if its local part were done.
  void SendOwnMessage(IoRequest* m, RequestOp op, uint16_t type, uint64_t offset, uint32_t bits);
  // The set's own messages that are no client's request (the quiesce's barrier, the grow).
  bool IsOwnMessage(const IoRequest* req) const {
    return req == &quiesce_msg_ || req == &grow_msg_;
  }
  // Injected delay (inject_*): when the next message may leave, at the earliest.
  uint64_t SendAt();
  struct DelayTimer : Timer {
    ReplicaSet* set = nullptr;
  } delay_timer_;
  bool delay_armed_ = false;
  uint64_t delay_deadline_ns_ = 0;
  uint64_t last_send_at_ns_ = 0;
  uint64_t inject_rng_ = 0;

  // Out-of-sync marks are answered from any thread, possibly after the set is gone: their tasks
  // reach the set through this, emptied by the destructor.
  struct MarkGate {
    std::mutex mu;
    ReplicaSet* set = nullptr;
  };
  std::shared_ptr<MarkGate> mark_gate_;

  // Resync (replica_set_resync.cc): one copy at a time.
  struct Copy;
  std::unique_ptr<Copy> copy_;
  bool copy_stalled_ = false;  // the copy waits for writes or a table slot: step at completions
  // Whether clients wrote in the last resync_yield_window_ms (CopyStepOnce).
  bool fg_wrote_ = false;
  bool fg_busy_ = false;
  uint64_t fg_window_ns_ = 0;
  std::vector<std::unique_ptr<Copy>> stale_copies_;  // aborted with a local read in flight
  void FreeStaleCopies();                            // those whose reads all came back (tick)
  void Reconnect(Link* l);
  void StartCopy(Link* l);
  void CopyStep();
  void CopyStepOnce();
  bool CopySend(IoRequest& m, uint64_t off, uint32_t len, void* buf, bool hole, bool barrier);
  void CopyAcked(IoRequest* req);
  void ReleaseParked();
  void AbortCopy(const std::string& why);
  // A whole-volume copy that stops keeps its progress as the link's dirty map.
  void CheckpointCopy();
  bool ParkIfCopying(IoRequest* req);
  bool IsCopyMessage(const IoRequest* req) const;
  static void OnCopyRead(void* arg, IoRequest* req);

  // The activity log (replica_set_log.cc): null when off.
  std::unique_ptr<ActivityLog> log_;
  IoRequest* log_wait_head_ = nullptr;  // waiting for a snapshot of the log (or room in it)
  IoRequest* log_wait_tail_ = nullptr;
  bool log_ready_ = false;                  // the term's first flush of this copy completed
  std::unique_ptr<InprocFrontend> log_fe_;  // this copy's own flushes (room in the log)
  bool log_flush_inflight_ = false;
  bool log_retry_ = false;  // requests wait for room: try again when the watermark moves
  uint64_t log_flush_cover_ = 0;
  // Every write numbered below it is durable on this copy (a local flush completed after it).
  uint64_t local_durable_ = 0;
  std::vector<uint64_t> cover_;  // by seq & mask: a flush's LocalCover when it was numbered
  void OpenLog();
  // Before Admit: whether `req` waits for the log (its units not yet durably in it).
  bool ParkForLog(IoRequest* req);
  void LogNumbered(const IoRequest* req);   // Admit numbered it
  void LogLocalDone(const IoRequest* req);  // its local part is done
  void PumpLog();
  static void OnLogWritten(void* ctx, bool ok);
  // This copy's own flush (not a barrier): the log's older units may go once it completes.
  void FlushForLog();
  static void OnFlushForLog(void* arg, IoRequest* req);
  // The lowest number whose local part has not completed (next_seq_ when none).
  uint64_t LocalCover() const;
  // The log's waiting requests back to the front of the wait queue, or failed.
  void RequeueLogWaiting();
  void FailLogWaiting(int32_t result);
  bool LogBusy() const;
  // A flush of the set's own through `*fe` (made on first use, one at a time), with `flags`.
  IoRequest* TakeOwnFlush(std::unique_ptr<InprocFrontend>* fe, uint8_t flags);

  // A barrier of the set's own (replica_set_link.cc): a flush through the volume, as a
  // client's, once a link keeps half of Link::kUnbarrieredMax writes no barrier covered, so
  // that a failure marks what they touched rather than the whole volume.
  std::unique_ptr<InprocFrontend> ring_fe_;
  bool ring_barrier_inflight_ = false;
  void BarrierForRing();
  static void OnBarrierForRing(void* arg, IoRequest* req);

  // Asynchronous volumes (replica_set_async.cc).
  struct Shadow;
  std::vector<std::unique_ptr<Shadow>> shadows_free_;
  std::atomic<uint64_t> lag_bytes_{0};
  std::atomic<uint64_t> lag_oldest_ns_{0};  // when the oldest message in flight was numbered
  uint32_t shadows_live_ = 0;
  // Completes `req` (done locally, replicas pending), leaving a shadow in its place, if the lag
  // allows; else it waits for the acks. A message not yet sent waits for the links' send of
  // this round (ShadowPending): once it left, its shadow needs no copy of the payload.
  void MaybeShadow(IoRequest* req);
  void ShadowPending();
  std::vector<std::pair<IoRequest*, uint64_t>> shadow_pending_, shadow_pending_run_;
  bool shadow_now_ = false;  // ShadowPending runs: no more waiting for the send
  bool SentToAll(const IoRequest* req) const;
  void RetireShadow(IoRequest* shadow);
  void NoteOldest();
  void FreeShadows();
};

}  // namespace spd
