// ReplicaHook: where replication enters the pipeline (docs/replication.md, "Data path"). A
// volume that is the primary of a replicated volume carries one (Volume::replica_hook); the
// dispatcher then hands every write, write-zeroes, discard and flush of it to the hook on the
// volume's owning reactor, instead of running it on the volume alone, and never sends its
// writes down the remote fast path. Reads are untouched.
//
// The hook runs the local part with Dispatcher::ExecuteLocal (which calls LocalDone when it is
// done, on the owner) and sends the request to the replicas; once both are done it calls
// Dispatcher::FinishReplicated. It may hold a request as long as it must (a replica's ack, the
// out-of-sync mark of a replica that failed), within its own deadlines.
#pragma once

#include <cstdint>

namespace spd {

struct IoRequest;

class ReplicaHook {
 public:
  virtual ~ReplicaHook() = default;
  // On the volume's owner. REQUIRES: req->op is a write, write-zeroes, discard or flush.
  virtual void Start(IoRequest* req) = 0;
  // The local part of `req` finished (req->result holds its result), on the volume's owner.
  virtual void LocalDone(IoRequest* req) = 0;
};

}  // namespace spd
