// The control API's replicated-volume calls (VolumeService.CreateVolume with replicas > 1,
// VolumeService.ListReplicas), on the ReplicationManager.
#include "control/replication_calls.h"

#include <functional>
#include <thread>
#include <unordered_map>
#include <vector>

#include "replica/replication_manager.h"

namespace spd {

bool IsReplicated(const ControlServer::Impl& impl, const std::string& volume) {
  return impl.options.replication != nullptr && impl.options.replication->Replicated(volume);
}

bool InCluster(const ControlServer::Impl& impl, const std::string& volume) {
  return impl.options.replication != nullptr && impl.options.replication->InCluster(volume);
}

namespace {

void FillOne(const ReplicatedVolumeStatus& v, v1::ReplicatedVolume* out) {
  out->set_name(v.name);
  out->set_size_bytes(v.size_bytes);
  out->set_replicas(v.replicas);
  for (const std::string& n : v.nodes) out->add_nodes(n);
  out->set_primary(v.primary);
  out->set_epoch(v.epoch);
  out->set_durability(v.durability == "async"  ? v1::DURABILITY_ASYNC
                      : v.durability == "sync" ? v1::DURABILITY_SYNC
                      : v.durability == "none" ? v1::DURABILITY_NONE
                                               : v1::DURABILITY_FLUSH);
  out->set_deleting(v.deleting);
  out->set_lag_bytes(v.lag_bytes);
  out->set_lag_ms(v.lag_ms);
  for (const ReplicaStatus& st : v.states) {
    v1::ReplicaState* x = out->add_states();
    x->set_node(st.node);
    x->set_state(st.state);
    x->set_epoch(st.epoch);
    x->set_detail(st.detail);
    x->set_acked(st.acked);
  }
}

// The replicated volumes (all, or `only`) as ListReplicas answers them; `visible` filters (a
// tenant caller's own).
void FillReplicated(ReplicationManager* rm, const std::string& only, v1::ListReplicasResponse* resp,
                    const std::function<bool(const std::string&)>& visible = nullptr) {
  for (const ReplicatedVolumeStatus& v : rm->List(only)) {
    if (!only.empty() && only != v.name) continue;
    if (visible && !visible(v.name)) continue;
    FillOne(v, resp->add_volumes());
  }
}

// An admitted call on a node without replication: refused like a refusal.
grpc::ServerUnaryReactor* RefuseNoReplication(ControlServer::Impl* impl,
                                              grpc::CallbackServerContext* ctx, AuditCall audit) {
  impl->in_flight.fetch_sub(1);
  return impl->RefuseAudited(
      ctx, std::move(audit),
      FailedPrecondition("replicated volumes need spd2 --cluster and --replication-listen"));
}

Status BusyReplicationCalls() {
  return ResourceExhausted("too many replication calls waiting (" +
                           std::to_string(ControlServer::Impl::kReplicationCallsQueuedMax) +
                           "; they run one at a time): try again later");
}

// The end of a replicated create (on the executor's thread).
void FinishReplicatedCreate(ControlServer::Impl* impl, grpc::ServerUnaryReactor* r,
                            v1::Volume* resp, const Caller& caller, bool placed,
                            const std::string& name, std::shared_ptr<AuditCall> audit, Status st) {
  if (!st.ok() && placed) impl->UnplaceNewVolume(name);
  if (st.ok()) {
    if (auto h = impl->volumes->Find(name)) impl->Fill(h->info(), resp);
  }
  if (!st.ok() || caller.role != policy::Role::kTenant)
    return impl->FinishAudited(r, std::move(*audit), st, true);
  // A tenant's volume is its tenant's from the start (on the worker, before the answer), as
  // a local volume's (control_server.cc, CreateVolume).
  impl->Enqueue(
      [impl, r, resp, caller, name, audit] {
        impl->FinishAudited(r, std::move(*audit), impl->OwnNewVolume(caller, name, resp), true);
      },
      false);
}

}  // namespace

void FillReplication(const ControlServer::Impl& impl, const std::string& volume, v1::Volume* out) {
  if (!IsReplicated(impl, volume)) return;  // not a local volume of the same name
  const std::vector<ReplicatedVolumeStatus> found = impl.options.replication->List(volume);
  if (!found.empty()) FillOne(found.front(), out->mutable_replication());
}

void FillReplication(const ControlServer::Impl& impl, v1::ListVolumesResponse* out) {
  std::vector<v1::Volume*> replicated;
  for (v1::Volume& v : *out->mutable_volumes())
    if (IsReplicated(impl, v.name())) replicated.push_back(&v);
  if (replicated.empty()) return;
  // One status of every replicated volume (one pass over the mirror), not one per volume.
  std::unordered_map<std::string, const ReplicatedVolumeStatus*> by_name;
  const std::vector<ReplicatedVolumeStatus> all = impl.options.replication->List();
  for (const ReplicatedVolumeStatus& s : all) by_name.emplace(s.name, &s);
  for (v1::Volume* v : replicated)
    if (auto it = by_name.find(v->name()); it != by_name.end())
      FillOne(*it->second, v->mutable_replication());
}

// Placed and recorded in etcd on the replication calls' thread (blocking, bounded by etcd's
// timeouts).
grpc::ServerUnaryReactor* CreateReplicatedVolume(ControlServer::Impl* impl_,
                                                 grpc::CallbackServerContext* ctx,
                                                 const v1::CreateVolumeRequest* req,
                                                 v1::Volume* resp, AuditCall audit,
                                                 const Caller& caller, bool placed) {
  ReplicationManager* rm = impl_->options.replication;
  if (rm == nullptr) {
    if (placed) impl_->UnplaceNewVolume(req->name());
    return RefuseNoReplication(impl_, ctx, std::move(audit));
  }
  // Before DefaultReactor: a call takes it once (RefuseAudited does). An asynchronous volume's
  // copies are durable at FLUSH.
  const bool async = req->durability() == v1::DURABILITY_ASYNC;
  auto dur = async ? Result<Durability>(Durability::kFlush) : FromProto(req->durability(), true);
  if (!dur.ok() || req->read_only()) {
    if (placed) impl_->UnplaceNewVolume(req->name());
    impl_->in_flight.fetch_sub(1);  // admitted, refused here: answered like a refusal
    return impl_->RefuseAudited(
        ctx, std::move(audit),
        !dur.ok() ? dur.status()
                  : InvalidArgument("a replicated volume cannot be created read-only (its "
                                    "replicas take the primary's writes)"));
  }
  auto* r = ctx->DefaultReactor();
  ControlServer::Impl* impl = impl_;
  auto a = std::make_shared<AuditCall>(std::move(audit));
  const bool kept = impl->replication_calls.Submit(
      [impl, rm, r, resp, caller, placed, name = req->name(), size = req->size_bytes(),
       replicas = req->replicas(), durability = dur.value(), async, a](const Status& refused) {
        Status st = refused.ok() ? rm->Create(name, size, replicas, durability, async) : refused;
        FinishReplicatedCreate(impl, r, resp, caller, placed, name, a, st);
      });
  if (!kept) {
    if (placed) impl->UnplaceNewVolume(req->name());
    impl->FinishAudited(r, std::move(*a), BusyReplicationCalls(), true);
  }
  return r;
}

namespace {

// Runs `call` on the replication calls' thread and answers with its status; `after` (if any)
// fills the answer first when it is OK. REQUIRES: admitted, `audit` described.
grpc::ServerUnaryReactor* OnReplicationThread(ControlServer::Impl* impl,
                                              grpc::CallbackServerContext* ctx, AuditCall audit,
                                              std::function<Status(ReplicationManager*)> call,
                                              std::function<void()> after = nullptr) {
  ReplicationManager* rm = impl->options.replication;
  auto* r = ctx->DefaultReactor();
  auto a = std::make_shared<AuditCall>(std::move(audit));
  if (!impl->replication_calls.Submit([impl, rm, r, call = std::move(call),
                                       after = std::move(after), a](const Status& refused) {
        const Status st = refused.ok() ? call(rm) : refused;
        if (st.ok() && after) after();
        impl->FinishAudited(r, std::move(*a), st, true);
      }))
    impl->FinishAudited(r, std::move(*a), BusyReplicationCalls(), true);
  return r;
}

}  // namespace

// The deletion recorded in etcd, then a wait (at most 15 s) for the copy here to go.
grpc::ServerUnaryReactor* DeleteReplicatedVolume(ControlServer::Impl* impl,
                                                 grpc::CallbackServerContext* ctx,
                                                 const v1::DeleteVolumeRequest* req,
                                                 AuditCall audit) {
  return OnReplicationThread(impl, ctx, std::move(audit),
                             [name = req->name(), force = req->force()](ReplicationManager* rm) {
                               return rm->Delete(name, force);
                             });
}

void RunReplicationCall(ControlServer::Impl* impl, std::function<Status(ReplicationManager*)> call,
                        std::function<void(Status)> done) {
  ReplicationManager* rm = impl->options.replication;
  if (!impl->replication_calls.Submit(
          [rm, call, done](const Status& refused) { done(refused.ok() ? call(rm) : refused); }))
    done(BusyReplicationCalls());
}

grpc::ServerUnaryReactor* SetReplicatedDurability(ControlServer::Impl* impl,
                                                  grpc::CallbackServerContext* ctx,
                                                  const v1::SetDurabilityRequest* req,
                                                  Durability durability, v1::Volume* resp,
                                                  AuditCall audit) {
  return OnReplicationThread(
      impl, ctx, std::move(audit),
      [name = req->name(), durability, async = req->durability() == v1::DURABILITY_ASYNC](
          ReplicationManager* rm) { return rm->SetReplicationMode(name, async, durability); },
      [impl, resp, name = req->name()] {
        if (auto h = impl->volumes->Find(name)) impl->Fill(h->info(), resp);
      });
}

grpc::ServerUnaryReactor* ResizeReplicatedVolume(ControlServer::Impl* impl,
                                                 grpc::CallbackServerContext* ctx,
                                                 const v1::ResizeVolumeRequest* req,
                                                 v1::Volume* resp, AuditCall audit) {
  return OnReplicationThread(
      impl, ctx, std::move(audit),
      [name = req->name(), size = req->size_bytes()](ReplicationManager* rm) {
        return rm->Resize(name, size);
      },
      [impl, resp, name = req->name()] {
        if (auto h = impl->volumes->Find(name)) impl->Fill(h->info(), resp);
      });
}

grpc::ServerUnaryReactor* ListReplicatedVolumes(ControlServer::Impl* impl_,
                                                grpc::CallbackServerContext* ctx,
                                                const v1::ListReplicasRequest* req,
                                                v1::ListReplicasResponse* resp) {
  Caller caller;
  if (Status a = impl_->Admit(ctx, Access::kRead, &caller); !a.ok())
    return ControlServer::Impl::Refuse(ctx, a);
  auto* r = ctx->DefaultReactor();
  ReplicationManager* rm = impl_->options.replication;
  if (rm == nullptr) {
    impl_->Done(r, FailedPrecondition(
                       "this node holds no replicated volumes: spd2 runs without --cluster and "
                       "--replication-listen"));
    return r;
  }
  ControlServer::Impl* impl = impl_;
  FillReplicated(rm, req->volume(), resp,
                 [impl, caller](const std::string& v) { return impl->Visible(caller, v); });
  if (!req->volume().empty() && resp->volumes_size() == 0) {
    impl_->Done(r, NotFound("no replicated volume '" + req->volume() + "'"));
    return r;
  }
  impl_->Done(r, Status::Ok());
  return r;
}

namespace {

// Promote, demote, move and the number of copies: admins only; `change` runs on the replication
// calls' thread (a hand-over waits up to 15 s), then the volume is answered as ListReplicas would.
template <typename Req>
grpc::ServerUnaryReactor* HandOverCall(ControlServer::Impl* impl_, grpc::CallbackServerContext* ctx,
                                       const char* method, const Req* req,
                                       v1::ListReplicasResponse* resp,
                                       std::function<Status(ReplicationManager*)> change) {
  AuditCall audit = impl_->Describe(ctx, method, *req);
  Caller caller;
  Status s = impl_->AdmitWrite(ctx, Access::kAdmin, &caller);
  if (!s.ok()) return impl_->RefuseAudited(ctx, std::move(audit), s);
  ReplicationManager* rm = impl_->options.replication;
  if (rm == nullptr) return RefuseNoReplication(impl_, ctx, std::move(audit));
  return OnReplicationThread(impl_, ctx, std::move(audit), std::move(change),
                             [rm, name = req->volume(), resp] { FillReplicated(rm, name, resp); });
}

}  // namespace

grpc::ServerUnaryReactor* PromoteReplicaVolume(ControlServer::Impl* impl_,
                                               grpc::CallbackServerContext* ctx,
                                               const v1::PromoteReplicaRequest* req,
                                               v1::ListReplicasResponse* resp) {
  return HandOverCall(impl_, ctx, "spd.v1.VolumeService/PromoteReplica", req, resp,
                      [name = req->volume(), without = std::vector<std::string>(
                                                 req->without().begin(), req->without().end())](
                          ReplicationManager* rm) { return rm->Promote(name, without); });
}

grpc::ServerUnaryReactor* DemoteReplicaVolume(ControlServer::Impl* impl_,
                                              grpc::CallbackServerContext* ctx,
                                              const v1::DemoteReplicaRequest* req,
                                              v1::ListReplicasResponse* resp) {
  return HandOverCall(impl_, ctx, "spd.v1.VolumeService/DemoteReplica", req, resp,
                      [name = req->volume(), to = req->to()](ReplicationManager* rm) {
                        return rm->Demote(name, to);
                      });
}

grpc::ServerUnaryReactor* MoveReplicaVolume(ControlServer::Impl* impl_,
                                            grpc::CallbackServerContext* ctx,
                                            const v1::MoveReplicaRequest* req,
                                            v1::ListReplicasResponse* resp) {
  return HandOverCall(impl_, ctx, "spd.v1.VolumeService/MoveReplica", req, resp,
                      [name = req->volume(), from = req->from(), to = req->to(),
                       cancel = req->cancel()](ReplicationManager* rm) {
                        return cancel ? rm->CancelMove(name, from, to) : rm->Move(name, from, to);
                      });
}

grpc::ServerUnaryReactor* SetReplicasVolume(ControlServer::Impl* impl_,
                                            grpc::CallbackServerContext* ctx,
                                            const v1::SetReplicasRequest* req,
                                            v1::ListReplicasResponse* resp) {
  return HandOverCall(
      impl_, ctx, "spd.v1.VolumeService/SetReplicas", req, resp,
      [name = req->volume(), n = req->replicas(),
       remove = std::vector<std::string>(req->remove().begin(), req->remove().end())](
          ReplicationManager* rm) { return rm->SetReplicaCount(name, n, remove); });
}

}  // namespace spd
