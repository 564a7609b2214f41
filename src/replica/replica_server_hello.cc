// A replica session's hello and its answer (replica_server_internal.h).
#include <cstring>
#include <string>
#include <vector>

#include "common/crc32c.h"
#include "common/log.h"
#include "replica/activity_log.h"
#include "replica/dirty_map.h"
#include "replica/replica_server_internal.h"
#include "replica/replica_server_metrics.h"
#include "replica/replica_tls.h"
#include "replica/replica_wire.h"

namespace spd::replica_session {

namespace rw = replica_wire;

using namespace replica_server_metrics;  // NOLINT: the counters of replica_server_metrics.cc

namespace {

void RefuseHello(Session* s, rw::HelloReplyBody body, rw::HelloStatus status) {
  hellos_refused_total.Add();
  body.status = static_cast<uint32_t>(status);
  rw::Header h;
  h.type = static_cast<uint16_t>(rw::Type::kHelloReply);
  h.epoch = s->epoch;
  h.length = sizeof body;
  h.crc = Crc32c(0, &body, sizeof body);
  Reply(s, h, &body, sizeof body);
  Close(s, rw::HelloStatusName(status));
}

// The volume is found: check the size and the fence, then record the new fence.
void CheckHello(Session* s);

}  // namespace

void HandleHello(Session* s) {
  const std::string name(s->hello.volume, strnlen(s->hello.volume, sizeof s->hello.volume));
  ReplicaServer* srv = s->server;
  // With certificates, only the node etcd names the volume's primary, at the hello's epoch.
  if (srv->o_.authorize_primary && s->tls != nullptr) {
    const std::string node = ReplicaTls::PeerNode(s->tls);
    if (Status st = srv->o_.authorize_primary(name, s->epoch, node); !st.ok()) {
      primaries_refused_total.Add();
      SPD_LOG_WARN("replica: %s: node '%s' refused as the primary of %s at epoch %llu: %s",
                   s->Peer().c_str(), node.c_str(), name.c_str(),
                   static_cast<unsigned long long>(s->epoch), std::string(st.message()).c_str());
      return RefuseHello(s, {}, rw::HelloStatus::kError);
    }
  }
  s->handle = srv->volumes_->Find(name);
  if (!s->handle || !(s->user = s->handle->AddUser()) || s->handle->volume() == nullptr)
    return RefuseHello(s, {}, rw::HelloStatus::kNoVolume);
  s->volume = s->handle->volume();
  if (srv->o_.copies_only && s->volume->replica_hook.load() == nullptr) {
    local_volumes_refused_total.Add();
    SPD_LOG_WARN(
        "replica: %s: volume %s here is a local volume, not a copy of the replicated "
        "one: hello refused",
        s->Peer().c_str(), name.c_str());
    return RefuseHello(s, {}, rw::HelloStatus::kNoVolume);
  }
  // The volume grew while this copy was away (or before the primary's grow reached it): it
  // grows first, unless the primary is a deposed one (the fence check below refuses it).
  if (s->volume->size_bytes() < s->hello.size_bytes && s->epoch >= s->volume->fence_epoch()) {
    SPD_LOG_INFO("replica: %s: volume %s grows to the primary's %llu bytes (it is %llu here)",
                 s->Peer().c_str(), name.c_str(),
                 static_cast<unsigned long long>(s->hello.size_bytes),
                 static_cast<unsigned long long>(s->volume->size_bytes()));
    s->grow = rw::Header{};
    s->grow.type = 0;  // the hello's
    s->grow.offset = s->hello.size_bytes;
    return StartGrow(s, s->hello.size_bytes);
  }
  CheckHello(s);
}

void HelloGrown(Session* s, const Status& status) {
  if (status.ok()) {
    grows_total.Add();
    return CheckHello(s);
  }
  grow_failures_total.Add();
  SPD_LOG_WARN("replica: %s: cannot grow volume %s to %llu bytes: %s", s->Peer().c_str(),
               s->handle->name().c_str(), static_cast<unsigned long long>(s->hello.size_bytes),
               status.ToString().c_str());
  rw::HelloReplyBody body;
  body.size_bytes = s->volume->size_bytes();
  RefuseHello(s, body, rw::HelloStatus::kSizeMismatch);
}

namespace {

void CheckHello(Session* s) {
  rw::HelloReplyBody body;
  rw::HelloStatus status = rw::HelloStatus::kError;
  const std::string& name = s->handle->name();
  ReplicaServer* srv = s->server;
  {
    PersistActivity(s->volume, srv->o_.state_dir, name);
    body.gen_epoch = s->volume->generation().epoch;
    body.gen_seq = s->volume->generation().seq;
    body.fence_epoch = s->volume->fence_epoch();
    body.size_bytes = s->volume->size_bytes();
    // A deposed primary learns that first, whatever it says of the size.
    if (s->epoch < s->volume->fence_epoch()) {
      status = rw::HelloStatus::kStaleEpoch;
      fenced_total.Add();
    } else if (s->volume->size_bytes() != s->hello.size_bytes) {
      status = rw::HelloStatus::kSizeMismatch;
    } else {
      // Accepted so far: displace an older session of the volume, then make the fence durable.
      auto it = srv->holders_.find(s->volume);
      if (it != srv->holders_.end() && it->second != s)
        Close(it->second, "displaced by a newer hello");
      srv->holders_[s->volume] = s;
      InprocFrontend::Options fo;
      fo.queue_depth = srv->o_.queue_depth;
      fo.buffer_bytes = srv->o_.write_bytes_max;
      s->fe = std::make_unique<InprocFrontend>(srv->dispatcher_, srv->reactor_, fo);
      s->record_pending = true;
      s->fence_before = s->volume->fence_epoch();
      s->record.generation = s->volume->generation();
      s->record.fence_epoch = s->epoch;
      s->record.ctx = s;
      s->record.done = &OnRecorded;
      s->volume->pool()->RecordGeneration(s->volume, &s->record);
      return;  // answered from OnRecorded
    }
  }
  RefuseHello(s, body, status);
}

}  // namespace

void AnswerHello(Session* s, int32_t result) {
  // The fence of an accepted hello is durable now: answer it.
  s->hello_done = true;
  rw::HelloReplyBody body;
  const ReplicaGeneration g = s->volume->generation();
  body.gen_epoch = g.epoch;
  body.gen_seq = g.seq;
  body.fence_epoch = s->volume->fence_epoch_durable();
  body.size_bytes = s->volume->size_bytes();
  body.write_bytes_max = s->server->o_.write_bytes_max;
  rw::Header h;
  h.type = static_cast<uint16_t>(rw::Type::kHelloReply);
  h.epoch = s->epoch;
  // What this copy applied of its previous primary's last writes, as it stands before this
  // session applies anything: a new primary resyncs only those units (and its own).
  const ReplicaActivity::Snapshot act = s->volume->replica_activity.TakeForHello(s->epoch);
  std::vector<rw::ActivityRange> ranges;
  if (act.complete && act.ranges.size() <= rw::kActivityRangesMax) {
    body.activity_epoch = act.epoch;
    body.activity_flags = rw::kActivityComplete;
    for (const ReplicaActivity::Range& x : act.ranges) ranges.push_back({x.first, x.units});
  }
  const std::string& dir = s->server->o_.state_dir;
  if (act.left_open && !act.complete && !dir.empty()) {
    // Power lost while open: the record says nothing, but a term this copy was the primary of
    // has its durable log, which bounds what the copy may lack or hold in excess.
    const ActivityLog::Contents log = ActivityLog::Read(ActivityLogPath(
        dir, std::string(s->hello.volume, strnlen(s->hello.volume, sizeof s->hello.volume))));
    // Only if that term is the last this copy took part in (no later primary's hello was
    // accepted here: what that one's writes changed is in no log and no record).
    ReplicaActivity::Snapshot rec;
    if (log.epoch == s->fence_before && ActivityLog::AsRecord(log, rw::kActivityRangesMax, &rec)) {
      body.activity_epoch = rec.epoch;
      body.activity_flags = rw::kActivityComplete | rw::kActivityDurableLog;
      for (const ReplicaActivity::Range& x : rec.ranges) ranges.push_back({x.first, x.units});
    }
  }
  body.activity_ranges = static_cast<uint32_t>(ranges.size());
  if (act.left_open) body.activity_flags |= rw::kActivityLeftOpen;
  body.copy_id = s->volume->copy_id();
  body.losses = act.losses;
  if (result != 0) {
    hellos_refused_total.Add();
    body.status = static_cast<uint32_t>(rw::HelloStatus::kError);
    h.result = result;
  } else {
    // In sync: the primary's base generation, nothing applied after it here or there.
    const bool in_sync = g == ReplicaGeneration{s->hello.base_epoch, s->hello.base_seq} &&
                         s->volume->CleanAtGeneration() &&
                         (s->hello.flags & rw::kHelloPrimaryDirty) == 0;
    body.status =
        static_cast<uint32_t>(in_sync ? rw::HelloStatus::kInSync : rw::HelloStatus::kOutOfSync);
    // Out of sync but resyncing: the primary copies everything over this session.
    s->applying = in_sync || (s->hello.flags & rw::kHelloResync) != 0;
    if (!in_sync && s->applying) s->volume->MarkApplied();
    if (s->applying)
      s->volume->replica_activity.Begin(s->epoch, /*primary=*/false, /*resyncing=*/!in_sync);
  }
  const size_t rb = ranges.size() * sizeof(rw::ActivityRange);
  h.length = static_cast<uint32_t>(sizeof body + rb);
  h.crc = Crc32c(Crc32c(0, &body, sizeof body), ranges.data(), rb);
  std::vector<uint8_t> payload(sizeof body + rb);
  std::memcpy(payload.data(), &body, sizeof body);
  if (rb > 0) std::memcpy(payload.data() + sizeof body, ranges.data(), rb);
  Reply(s, h, payload.data(), payload.size());
  if (result != 0) return Close(s, "the fence could not be recorded");
  return Pump(s);
}

}  // namespace spd::replica_session
