// ReplicaSet::Grow (replica_set.h): a volume that grows under its primary. The replicas grow
// first, on a kGrow numbered among the writes (replica_wire.h); the caller grows the primary's
// own copy once they have, so that no write past a replica's end ever reaches one.
#include <cerrno>

#include "common/log.h"
#include "replica/replica_set.h"
#include "replica/replica_set_internal.h"
#include "replica/replica_wire.h"

namespace spd {

namespace rw = replica_wire;

uint64_t ReplicaSet::SizeTarget() const { return std::max(volume_->size_bytes(), grow_size_); }

void ReplicaSet::Grow(uint64_t size_bytes, std::function<void(int32_t)> done) {
  if (grow_done_ || grow_sent_) return done(-EBUSY);
  if (stopping_ || deposed_) return done(-EIO);
  if (size_bytes <= volume_->size_bytes()) return done(0);
  // Quiescing for a hand-over: the next primary grows the volume (its spec says how big).
  if (quiescing_) return done(-EROFS);
  // The maps first: a write past the old end that a replica misses from now on has its bit.
  for (auto& l : links_)
    if (Status st = l->dirty.Grow(size_bytes); !st.ok()) {
      SPD_LOG_WARN("replication: volume %s: the dirty map of %s cannot grow: %s", o_.volume.c_str(),
                   l->target.name.c_str(), st.ToString().c_str());
      return done(st.code() == StatusCode::kResourceExhausted ? -ENOSPC : -EIO);
    }
  grow_size_ = std::max(grow_size_, size_bytes);
  grow_done_ = std::move(done);
  MaybeSendGrow();
}

void ReplicaSet::MaybeSendGrow() {
  if (!grow_done_ || grow_sent_) return;
  if (stopping_ || deposed_) return FinishGrow(-EIO);
  if (table_[next_seq_ & mask_] != nullptr) return;  // a full table: again at a completion
  grow_sent_ = true;
  // No data and no barrier (a kFlush would count as one where acks are read): a range of none.
  SendOwnMessage(&grow_msg_, RequestOp::kBlockStatus, static_cast<uint16_t>(rw::Type::kGrow),
                 grow_size_, deposed_ ? 0 : InSyncBits());
}

void ReplicaSet::FinishGrow(int32_t result) {
  grow_sent_ = false;
  auto done = std::move(grow_done_);
  grow_done_ = nullptr;
  if (!done) return;
  if (result == 0)
    SPD_LOG_INFO("replication: volume %s: the replicas in sync grew to %llu bytes",
                 o_.volume.c_str(), static_cast<unsigned long long>(grow_size_));
  done(result);
}

}  // namespace spd
