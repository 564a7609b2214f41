// WriteGuard: the replica hook of a replicated volume on a node that is not its primary. Every
// write, write-zeroes, discard and flush from a local client fails with -EROFS (the primary's own
// messages, kReqFromPrimary, pass by it); reads are served. Without it a client of a replica
// could change the replica's copy behind the primary's back.
#pragma once

#include <cerrno>

#include "common/counters.h"
#include "dispatch/dispatcher.h"
#include "dispatch/replica_hook.h"

namespace spd {

class WriteGuard final : public ReplicaHook {
 public:
  void Start(IoRequest* req) override {
    refused_.Add();
    req->result = -EROFS;
    Dispatcher::FinishReplicated(req);
  }
  void LocalDone(IoRequest*) override {}

 private:
  static inline Counter refused_{"spd_replication_writes_refused_total",
                                 "Writes and flushes of a replicated volume refused (EROFS) on a "
                                 "node that is not its primary"};
};

}  // namespace spd
