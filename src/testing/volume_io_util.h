// Test helper: run one volume request to completion by driving the reactor. Control-path and
// test code only (it blocks the calling thread's reactor until the request is done).
#pragma once

#include <cerrno>
#include <cstdint>
#include <memory>
#include <string>

#include "volume/pool.h"

namespace spd::testing {

struct SyncVolumeResult {
  int32_t result = -ETIMEDOUT;
  bool completed_inside_submit = false;  // a contract violation the tests check for
};

// With `owner_channel`, the request takes the owner's path (Volume::SubmitOwned, with `reactor`
// as the owner) when that path takes it, else Submit.
inline SyncVolumeResult RunVolumeIo(Reactor* reactor, Volume* v, IoOp op, uint64_t off,
                                    uint32_t len, void* buf, uint8_t flags = 0,
                                    IoBackend* owner_channel = nullptr) {
  VolumeIo io;
  io.op = op;
  io.offset_bytes = off;
  io.length_bytes = len;
  io.buf = buf;
  io.flags = flags;
  bool done = false;
  io.ctx = &done;
  io.done = [](VolumeIo* d) { *static_cast<bool*>(d->ctx) = true; };
  if (owner_channel == nullptr || !v->SubmitOwned(&io, owner_channel, reactor)) v->Submit(&io);
  SyncVolumeResult r;
  r.completed_inside_submit = done;
  for (int i = 0; i < 1000000 && !done; ++i) reactor->RunOnce(1'000'000);
  if (done) r.result = io.result;
  return r;
}

// A pool for tests on the uring backend over a fresh file at `path` (in /dev/shm: O_DIRECT on
// tmpfs), with `chunk_bytes` chunks and a 1 MiB log. Reads and writes go through the ring (not
// the inline tmpfs copies), so that a remote request stays in flight until its reactor runs.
// REQUIRES: reactor->engine() == kUring.
inline Result<std::unique_ptr<Pool>> CreateShmUringPool(Reactor* reactor, const std::string& path,
                                                        uint64_t size_bytes, uint32_t chunk_bytes) {
  BackendOptions bo;
  bo.kind = BackendKind::kUring;
  bo.path = path;
  bo.size_bytes = size_bytes;
  bo.create = true;
  bo.inline_memory_reads = false;
  bo.inline_memory_writes = false;
  SPD_ASSIGN_OR_RETURN(std::unique_ptr<IoBackend> b, OpenBackend(bo, reactor));
  PoolOptions po;
  po.chunk_size_bytes = chunk_bytes;
  po.log_size_bytes = 1 << 20;
  return Pool::Create(std::move(b), reactor, po);
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
