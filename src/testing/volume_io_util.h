// Test helper: run one volume request to completion by driving the reactor. Control-path and
// test code only (it blocks the calling thread's reactor until the request is done).
#pragma once

#include <cerrno>
#include <cstdint>
#include <memory>

#include "volume/pool.h"

namespace spd::testing {

struct SyncVolumeResult {
  int32_t result = -ETIMEDOUT;
  bool completed_inside_submit = false;  // a contract violation the tests check for
};

inline SyncVolumeResult RunVolumeIo(Reactor* reactor, Volume* v, IoOp op, uint64_t off,
                                    uint32_t len, void* buf, uint8_t flags = 0) {
  VolumeIo io;
  io.op = op;
  io.offset_bytes = off;
  io.length_bytes = len;
  io.buf = buf;
  io.flags = flags;
  bool done = false;
  io.ctx = &done;
  io.done = [](VolumeIo* d) { *static_cast<bool*>(d->ctx) = true; };
  v->Submit(&io);
  SyncVolumeResult r;
  r.completed_inside_submit = done;
  for (int i = 0; i < 1000000 && !done; ++i) reactor->RunOnce(1'000'000);
  if (done) r.result = io.result;
  return r;
}

// A reactor for the calling thread and a channel of `pool`'s backend on it: what a second
// reactor needs to run the remote fast path (Volume::SubmitRemote) in a test thread.
struct ReactorWithChannel {
  std::unique_ptr<Reactor> reactor;
  std::unique_ptr<IoBackend> channel;
};
inline Result<ReactorWithChannel> OpenReactorWithChannel(Pool* pool) {
  ReactorWithChannel out;
  SPD_ASSIGN_OR_RETURN(out.reactor, Reactor::Create(ReactorOptions{}));
  SPD_ASSIGN_OR_RETURN(out.channel, pool->backend()->OpenChannel(out.reactor.get()));
  return out;
}

}  // namespace spd::testing
