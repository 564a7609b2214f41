// Test helpers for the replica tests: a ReplicaServer shut down by driving its reactor until
// every session has gone (at most 5 s); a copy's fence recorded as a primary's term records it.
#pragma once

#include "replica/replica_server.h"

namespace spd::replica_test {

inline bool ShutdownServer(Reactor* reactor, ReplicaServer* server) {
  struct Done : Task {
    bool flag = false;
  } t;
  t.fn = [](Task* x) { static_cast<Done*>(x)->flag = true; };
  server->Shutdown(&t);
  for (int i = 0; i < 5000 && !t.flag; ++i) reactor->RunOnce(1'000'000);
  return t.flag;
}

// Records `epoch` as the fence of `v`'s copy (durable), as ReplicationManager::BecomePrimary
// does for its term: whether it was.
inline bool RecordFence(Reactor* reactor, Volume* v, uint64_t epoch) {
  GenerationRecord rec;
  bool done = false;
  rec.generation = v->generation();
  rec.fence_epoch = epoch;
  rec.ctx = &done;
  rec.done = [](GenerationRecord* r) { *static_cast<bool*>(r->ctx) = true; };
  v->pool()->RecordGeneration(v, &rec);
  for (int i = 0; i < 5000 && !done; ++i) reactor->RunOnce(1'000'000);
  return done && rec.result == 0;
}

}  // namespace spd::replica_test
