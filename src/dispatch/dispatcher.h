// Dispatcher: everything between a frontend and a volume.
//
// A frontend submits IoRequests on its own reactor through a DispatchPort (one per frontend
// shard and reactor). The dispatcher
//   1. checks what needs no volume (empty ranges, unknown ops) and stamps the request;
//   2. hands it to the scheduler stage (qos/scheduler.h; a pass-through today);
//   3. routes it: a volume's requests are served by the volume's owning reactor
//      (OwnerOf: Volume::owner(), spread over reactors by Pool::SetVolumeReactors); a read or
//      write of allocated space that the owner allows on the fast path runs on the submitting
//      reactor itself, on the port's channel to the pool's storage (Volume::SubmitRemote);
//      everything else hops to the owner and back by posted messages;
//   4. on the owner: runs the volume stage (Volume::SubmitOwned on the owner's channel, which
//      asks the pool's reactor by message for chunks and commits), or answers block status from
//      the volume's map, and describes a read's holes when the frontend asked (kReqWantExtents).
//      What the owner's path does not take (an unaligned request, a volume closed by a control
//      operation, a backend without channels such as sim) hops on to the pool's reactor, which
//      runs Volume::Submit; a volume owned by the pool's reactor runs there directly;
//   5. completes the request on the submitting port's reactor (never inside Submit).
// No step allocates or takes a lock: hops are intrusive tasks in the request, channels are the
// port's and the owner's, extents go into the frontend's reserved scratch.
//
// Thread-safety: Submit on the port's reactor; OpenPort/ClosePort on the port's reactor. The
// Dispatcher itself is shared by every reactor; its only mutable state is one backend channel per
// owning reactor, opened and used on that reactor only. Destroy it while its reactors still
// exist (its channels are registered with their rings), after every port.
#pragma once

#include <cstdint>
#include <memory>

#include "dispatch/io_request.h"
#include "qos/scheduler.h"
#include "reactor/reactor.h"
#include "volume/pool.h"

namespace spd {

struct DispatcherOptions {
  // Reads and writes of allocated space from a reactor other than the owner's run on that
  // reactor's channel of the pool's backend (Volume::SubmitRemote) instead of hopping to the
  // owner and back. Off: every request hops.
  bool remote_io = true;
  // Stamp every request at each stage (IoRequest::stage_ns): what per-stage latency, traces and
  // probes read. Off, a request costs four clock reads less (0.128 us of CPU per I/O measured
  // with bench/pipeline on the test VM, where the whole pipeline costs 0.053 us without them).
  bool stamp_stages = false;
};

// A frontend's way into the dispatcher from one reactor: holds that reactor's backend channel.
// Created and destroyed on its reactor, with no request in flight at destruction.
class DispatchPort {
 public:
  ~DispatchPort();
  DispatchPort(const DispatchPort&) = delete;
  DispatchPort& operator=(const DispatchPort&) = delete;
  Reactor* reactor() const { return reactor_; }
  uint64_t inflight() const { return inflight_; }
  // The scheduler's state for this port's reactor (IoScheduler::PortState).
  void* sched_state() const { return sched_state_; }

 private:
  friend class Dispatcher;
  DispatchPort(Dispatcher* d, Reactor* r, void* sched_state)
      : dispatcher_(d), reactor_(r), sched_state_(sched_state) {}
  IoBackend* Channel();  // opened on first use; null when there is none

  Dispatcher* dispatcher_;
  Reactor* reactor_;
  void* sched_state_;
  std::unique_ptr<IoBackend> channel_;
  bool channel_refused_ = false;
  uint64_t inflight_ = 0;
};

class Dispatcher final : private IoScheduler::Sink {
 public:
  // `scheduler` null: the pass-through. Both must outlive every port.
  Dispatcher(Pool* pool, DispatcherOptions options, IoScheduler* scheduler = nullptr);

  // REQUIRES: on `reactor`'s thread.
  std::unique_ptr<DispatchPort> OpenPort(Reactor* reactor);

  // Starts `req`. REQUIRES: on port->reactor()'s thread; req->volume set (not needed for
  // nothing else); req not in flight. `req->done` runs later on the same reactor.
  void Submit(DispatchPort* port, IoRequest* req);

  // The reactor that serves `v`'s requests (splits them, runs their I/O, asks the pool).
  Reactor* OwnerOf(const Volume* v) const { return v->owner(); }
  // Buffers of reads and writes must be aligned to this.
  uint32_t buffer_alignment_bytes() const { return pool_->backend()->alignment_bytes(); }
  Pool* pool() const { return pool_; }
  IoScheduler* scheduler() const { return scheduler_; }

  // For a ReplicaHook (dispatch/replica_hook.h), on the volume's owner: runs the local part of
  // `req` on the volume; the hook's LocalDone follows, on the owner.
  void ExecuteLocal(IoRequest* req);
  // The hook is done with `req` (req->result final): back to its port. On the volume's owner.
  static void FinishReplicated(IoRequest* req);
  bool stamp_stages() const { return options_.stamp_stages; }

 private:
  void Release(IoRequest* req) override;  // IoScheduler::Sink
  void ExecuteOnOwner(IoRequest* req);
  void ExecuteOnPool(IoRequest* req);  // Volume::Submit, on the pool's reactor
  void HopToPool(IoRequest* req);
  static void FillVolumeIo(IoRequest* req);
  // Block status answered on `here` (the owner or the pool's reactor): back to the port.
  static void FinishBlockStatus(IoRequest* req, const Status& st, Reactor* here);
  // On `here`: back to the port's reactor.
  static void Finish(IoRequest* req, Reactor* here);
  static void Complete(IoRequest* req);  // on the port's reactor
  // A read that asked for extents gets its holes described from the map.
  static void DescribeHoles(IoRequest* req, int32_t result);
  static void OnVolumeDone(VolumeIo* vio);
  static void OnOwnedDone(VolumeIo* vio);
  static void OnRemoteDone(VolumeIo* vio);
  static void OnHopToOwner(Task* t);
  static void OnHopToPool(Task* t);
  static void OnHopBack(Task* t);
  static void OnHopToOwnerLocalDone(Task* t);
  // The local part of a request a hook holds ended on `here`: to the hook, on the owner.
  static void LocalPartDone(IoRequest* req, Reactor* here);
  IoBackend* OwnerChannel(const Volume* v);  // on v's owner: its channel, opened on first use

  Pool* pool_;
  DispatcherOptions options_;
  PassThroughScheduler pass_through_;
  IoScheduler* scheduler_;
  struct OwnerSide {
    std::unique_ptr<IoBackend> channel;
    bool refused = false;
  };
  OwnerSide owner_sides_[Pool::kVolumeReactorsMax];  // by Volume::owner_index()
};

}  // namespace spd
