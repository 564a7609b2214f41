// IoRequest: the one request type below every frontend.
//
// A frontend (NBD today; iSCSI, vhost-user-blk, the in-process one of tests and bench/pipeline)
// turns its wire request into an IoRequest it preallocated, hands it to the Dispatcher, and turns
// the completion into its wire reply. It knows nothing of reactors, channels, pools or chunks:
// routing, cross-reactor hops, the scheduler stage and the volume are the Dispatcher's.
//
// Ownership: the frontend owns the IoRequest (and its buffer and extent scratch) and must keep
// it alive and untouched from Dispatcher::Submit until `done` runs. Nothing in it is allocated
// per I/O.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "qos/engine.h"
#include "reactor/reactor.h"
#include "volume/pool.h"

namespace spd {

enum class RequestOp : uint8_t {
  kRead = 0,
  kWrite = 1,
  kFlush = 2,
  kDiscard = 3,      // TRIM
  kWriteZeroes = 4,  // kReqNoHole keeps the range allocated
  kBlockStatus = 5,  // describe [offset, offset+length) as extents (no data moves)
};

const char* RequestOpName(RequestOp op);

// The backend operation a request becomes, and back (block status has none: kRead).
inline IoOp ToIoOp(RequestOp op) {
  switch (op) {
    case RequestOp::kWrite:
      return IoOp::kWrite;
    case RequestOp::kFlush:
      return IoOp::kFlush;
    case RequestOp::kDiscard:
      return IoOp::kDiscard;
    case RequestOp::kWriteZeroes:
      return IoOp::kWriteZeroes;
    case RequestOp::kRead:
    case RequestOp::kBlockStatus:
      break;
  }
  return IoOp::kRead;
}
inline RequestOp ToRequestOp(IoOp op) {
  switch (op) {
    case IoOp::kWrite:
      return RequestOp::kWrite;
    case IoOp::kFlush:
      return RequestOp::kFlush;
    case IoOp::kDiscard:
      return RequestOp::kDiscard;
    case IoOp::kWriteZeroes:
      return RequestOp::kWriteZeroes;
    case IoOp::kRead:
      break;
  }
  return RequestOp::kRead;
}

enum RequestFlags : uint8_t {
  kReqFua = 1 << 0,     // write: durable when acknowledged
  kReqNoHole = 1 << 1,  // write-zeroes: keep the range allocated
  // read: also describe the range (extents: holes vs data), for replies that send holes
  // without payload (NBD structured reads). Block status always describes.
  kReqWantExtents = 1 << 2,
  // A replicated volume's write sent by its primary (the replica server): the volume's replica
  // hook, which refuses every other write on a node that is not the primary, lets it through.
  kReqFromPrimary = 1 << 3,
  // A replicated volume's resync or rebuild (the primary's reads of what it copies, the
  // replica's writes of it): the QoS scheduler serves it in a flow of its own in the
  // background class, so that the volumes' own requests keep their intents.
  kReqRebuild = 1 << 4,
  // An asynchronous replicated volume's message still in flight to its replicas after the
  // request it copies completed (replica/replica_set_async.cc): the replica set's own, never a
  // frontend's.
  kReqReplShadow = 1 << 5,
};

// The stages every request is stamped at (MonotonicNs), so that metrics, traces and probes all
// see the same numbers.
enum class Stage : uint8_t {
  kArrival = 0,          // the frontend has the whole request (header, and payload for a write)
  kQueued = 1,           // the dispatcher took it
  kDispatched = 2,       // the scheduler released it to the volume
  kBackendSubmit = 3,    // the volume started it (backend I/O issued, or none needed)
  kBackendComplete = 4,  // the volume finished it
  kReply = 5,            // the frontend queued its reply
  kCount = 6,
};

class Dispatcher;
class DispatchPort;

struct IoRequest {
  // ---- set by the frontend before Submit -------------------------------------------------
  RequestOp op = RequestOp::kRead;
  uint8_t flags = 0;  // RequestFlags
  uint64_t offset_bytes = 0;
  uint32_t length_bytes = 0;
  // Data of a read or write: aligned to Dispatcher::buffer_alignment_bytes().
  void* buf = nullptr;
  // The target volume. The frontend holds a user registration on it (its connection's) for as
  // long as requests may be in flight, so it cannot be deleted under them.
  Volume* volume = nullptr;
  uint32_t tenant = 0;              // who asked (QoS accounting); 0 = the default tenant
  uint8_t correlation_id[16] = {};  // carried to traces and logs; the frontend chooses it
  // Block status and kReqWantExtents: where the extents go, and how many at most. The vector's
  // capacity must be >= extents_max + 1 (reserved once by the frontend): filling it never
  // allocates.
  std::vector<Extent>* extents = nullptr;
  uint32_t extents_max = 0;
  void (*done)(IoRequest* req) = nullptr;  // on the submitting port's reactor, never in Submit
  void* ctx = nullptr;                     // the frontend's

  // ---- set by the dispatcher before `done` -------------------------------------------------
  // 0 on success, -errno on failure (-EINVAL, -ENOSPC, -EIO, -EPERM, -ENOMEM, ...).
  int32_t result = 0;
  // With kReqWantExtents: extents are valid (else the whole range is data: a read that took
  // the fast path covers allocated space only).
  bool extents_valid = false;
  // Stamped only when the dispatcher stamps stages (DispatcherOptions::stamp_stages; a clock
  // read costs ~20 ns on a VM, and nothing reads the inner stages yet); else zero, except what a
  // frontend records itself (NBD: arrival and reply, for its latency histogram).
  uint64_t stage_ns[static_cast<int>(Stage::kCount)] = {};
  bool stamp_stages = false;  // set by the dispatcher at Submit

  void Stamp(Stage s) {
    if (stamp_stages) stage_ns[static_cast<int>(s)] = MonotonicNs();
  }
  uint64_t StageNs(Stage s) const { return stage_ns[static_cast<int>(s)]; }

  // ---- the scheduler stage's (qos/qos_scheduler.cc) -------------------------------------
  struct QosItem : qos::Item {
    IoRequest* req;
    IoRequest* parked_next;    // in the shard's parked list (the latency controller's)
    bool loose;                // counted against the shard's loose cap while outstanding
    bool rebuild;              // kReqRebuild: in the shard's rebuild flow, no volume's figures
  } qos_item;                  // the engine's hook: cost and bytes
  uint64_t qos_submit_ns = 0;  // when the scheduler took it
  uint64_t queue_ns = 0;       // how long the scheduler held it (0 without one)
  void* qos_volume = nullptr;  // its per-reactor state of the volume; null: not scheduled

  // ---- dispatcher-private ---------------------------------------------------------------
  VolumeIo vio;
  struct Hop : Task {
    IoRequest* req;
  } hop;
  DispatchPort* port = nullptr;

  // ---- the replication hook's (dispatch/replica_hook.h; replica/replica_set.cc) --------------
  class ReplicaHook* repl_hook = nullptr;  // set while a hook holds the request
  uint64_t repl_seq = 0;                   // its number in the volume's replication stream
  uint32_t repl_waiting = 0;               // replicas whose ack it still waits for (a bit each)
  int32_t repl_result = 0;                 // the first failure of any part
  bool repl_local_pending = false;
  uint64_t repl_deadline_ns = 0;
  IoRequest* repl_next = nullptr;  // in the hook's queues
  uint32_t repl_active = 0;        // the hook's: its index among the requests in flight
  uint8_t repl_hdr[48];            // its replication message header, the same for every replica
};

}  // namespace spd
