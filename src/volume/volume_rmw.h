// Private to src/volume: the state of a volume's exclusive mode (volume_rmw.cc).
#pragma once

#include "volume/pool.h"

namespace spd {

struct Volume::Rmw {
  // Set from the first unaligned request until the last one is done. While set, the fast path
  // is paused and every other request waits in `held` (in arrival order).
  bool exclusive = false;
  bool running = false;            // `cur` is being served
  VolumeIo* queue_head = nullptr;  // unaligned requests, in arrival order
  VolumeIo* queue_tail = nullptr;
  VolumeIo* held_head = nullptr;
  VolumeIo* held_tail = nullptr;
  VolumeIo* cur = nullptr;
  VolumeIo inner;            // the aligned read, then write, of `cur`
  uint64_t start_bytes = 0;  // the aligned range around `cur`
  uint64_t end_bytes = 0;
  uint8_t* bounce = nullptr;  // aligned; kept between requests up to kBounceKeepBytes
  size_t bounce_bytes = 0;
  struct ExclusiveTimer : Timer {
    Volume* volume = nullptr;
  } timer;  // looks again while the fast path still has requests out
  struct NextTask : Task {
    Volume* volume = nullptr;
  } next;
  bool next_pending = false;
};

}  // namespace spd
