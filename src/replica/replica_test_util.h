// Test helper for the replica tests: shuts a ReplicaServer down by driving its reactor until
// every session has gone (at most 5 s); whether it did.
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

}  // namespace spd::replica_test
