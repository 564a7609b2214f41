#include "control/control_server.h"

#include <sched.h>

#include <cerrno>
#include <cstring>

#include <grpcpp/health_check_service_interface.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>

#include "common/os_util.h"
#include "control/audit_service.h"
#include "control/call_interceptor.h"
#include "control/control_internal.h"
#include "control/convert.h"
#include "control/node_services.h"
#include "control/policy_services.h"
#include "control/replication_calls.h"
#include "qos/qos_scheduler.h"
#include "spd/v1/audit.grpc.pb.h"
#include "spd/v1/events.grpc.pb.h"
#include "spd/v1/node.grpc.pb.h"
#include "spd/v1/pools.grpc.pb.h"
#include "spd/v1/volumes.grpc.pb.h"

namespace spd {

void ControlServer::Impl::ForgetDeleted(const std::string& name) {
  CachePlacement(name, nullptr);
  Enqueue(
      [this, name] {
        if (options.qos) options.qos->ForgetVolume(name);
        Status d = store->DeleteVolumeMeta(name);
        if (!d.ok() && d.code() != StatusCode::kNotFound)
          SPD_LOG_WARN("state store: policy of deleted volume %s: %s", name.c_str(),
                       d.ToString().c_str());
      },
      false);
}

namespace control_counters {
Counter denied_total("spd_control_calls_denied_total",
                     "Control API calls refused: the caller has no role that allows them.");
Counter tokens_expired_total("spd_control_tokens_expired_total",
                             "Control API calls refused with UNAUTHENTICATED because their API "
                             "token (right secret) had expired; also in "
                             "spd_control_calls_denied_total.");
Counter busy_total("spd_control_calls_busy_total",
                   "Control API calls refused with RESOURCE_EXHAUSTED: kCallsInFlightMax calls "
                   "were in flight.");
Counter audit_dropped_total(
    "spd_control_audit_dropped_total",
    "Refused mutating calls (denied, invalid) not written to the audit log because "
    "kAuditQueueMax entries were waiting already (a flood of refused calls). Calls that change "
    "something are always written before they return.");
Gauge audit_queue("spd_control_audit_queue",
                  "Jobs waiting for the control plane's audit worker (audit entries to append, "
                  "state-store changes). Refused calls' entries are dropped while kAuditQueueMax "
                  "wait.");
}  // namespace control_counters

bool Allowed(policy::Role role, Access need) {
  using R = policy::Role;
  switch (need) {
    case Access::kRead:
      return role != R::kNone;
    case Access::kWriteVolume:
      return role == R::kTenant || role == R::kOperator || role == R::kAdmin;
    case Access::kWritePolicy:
    case Access::kAudit:
      return role == R::kOperator || role == R::kAdmin;
    case Access::kAdmin:
      return role == R::kAdmin;
  }
  return false;
}

grpc::Status ToGrpc(const Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

v1::Durability ToProto(Durability d) { return DurabilityToProto(d); }

Result<Durability> FromProto(v1::Durability d, bool allow_unspecified) {
  return DurabilityFromProto(d, allow_unspecified);
}

Status CheckSize(uint64_t size_bytes) {
  if (size_bytes == 0 || size_bytes % Pool::kVolumeSizeAlign != 0)
    return InvalidArgument("size_bytes: must be a positive multiple of " +
                           std::to_string(Pool::kVolumeSizeAlign) + ", got " +
                           std::to_string(size_bytes));
  return Status::Ok();
}

// Runs `fn` on `reactor` (control-plane code: allocates).
void RunOn(Reactor* reactor, std::function<void()> fn) {
  struct T : Task {
    std::function<void()> f;
  };
  auto* t = new T;
  t->f = std::move(fn);
  t->fn = [](Task* task) {
    auto* self = static_cast<T*>(task);
    self->f();
    delete self;
  };
  reactor->Post(t);
}

namespace {

// What a tenant caller gets for another tenant's volume: the same as for a missing one.
Status NotVisible(const std::string& name) { return NotFound("no volume '" + name + "'"); }

class VolumeServiceImpl final : public v1::VolumeService::CallbackService {
 public:
  explicit VolumeServiceImpl(ControlServer::Impl* impl) : impl_(impl) {}

  grpc::ServerUnaryReactor* ListReplicas(grpc::CallbackServerContext* ctx,
                                         const v1::ListReplicasRequest* req,
                                         v1::ListReplicasResponse* resp) override {
    return ListReplicatedVolumes(impl_, ctx, req, resp);
  }

  grpc::ServerUnaryReactor* PromoteReplica(grpc::CallbackServerContext* ctx,
                                           const v1::PromoteReplicaRequest* req,
                                           v1::ListReplicasResponse* resp) override {
    return PromoteReplicaVolume(impl_, ctx, req, resp);
  }
  grpc::ServerUnaryReactor* DemoteReplica(grpc::CallbackServerContext* ctx,
                                          const v1::DemoteReplicaRequest* req,
                                          v1::ListReplicasResponse* resp) override {
    return DemoteReplicaVolume(impl_, ctx, req, resp);
  }
  grpc::ServerUnaryReactor* MoveReplica(grpc::CallbackServerContext* ctx,
                                        const v1::MoveReplicaRequest* req,
                                        v1::ListReplicasResponse* resp) override {
    return MoveReplicaVolume(impl_, ctx, req, resp);
  }
  grpc::ServerUnaryReactor* SetReplicas(grpc::CallbackServerContext* ctx,
                                        const v1::SetReplicasRequest* req,
                                        v1::ListReplicasResponse* resp) override {
    return SetReplicasVolume(impl_, ctx, req, resp);
  }

  grpc::ServerUnaryReactor* CreateVolume(grpc::CallbackServerContext* ctx,
                                         const v1::CreateVolumeRequest* req,
                                         v1::Volume* resp) override {
    AuditCall audit = impl_->Describe(ctx, "spd.v1.VolumeService/CreateVolume", *req);
    Status s = policy::ValidateName("name", req->name());
    if (s.ok()) s = CheckSize(req->size_bytes());
    // DURABILITY_ASYNC: replicated volumes only (CreateReplicatedVolume takes it).
    const bool async = req->durability() == v1::DURABILITY_ASYNC;
    auto dur = async ? Result<Durability>(Durability::kFlush) : FromProto(req->durability(), true);
    if (s.ok() && !dur.ok()) s = dur.status();
    if (s.ok() && async && req->replicas() < 2)
      s = InvalidArgument("durability: async is for replicated volumes (replicas 2 or more)");
    Caller caller;
    if (s.ok()) s = impl_->AdmitWrite(ctx, Access::kWriteVolume, &caller);
    if (!s.ok()) return impl_->RefuseAudited(ctx, std::move(audit), s);
    if (impl_->volumes->Find(req->name()) && !impl_->Visible(caller, req->name())) {
      impl_->in_flight.fetch_sub(1);  // admitted, refused here: answered like a refusal
      return impl_->RefuseAudited(ctx, std::move(audit),
                                  AlreadyExists("volume '" + req->name() + "' exists"));
    }
    // One name, one volume in the cluster: not a local volume of a replicated one's name.
    if (req->replicas() <= 1 && InCluster(*impl_, req->name())) {
      impl_->in_flight.fetch_sub(1);  // admitted, refused here: answered like a refusal
      return impl_->RefuseAudited(ctx, std::move(audit),
                                  AlreadyExists("'" + req->name() +
                                                "' is a replicated volume of the cluster: a local "
                                                "volume of that name is not created"));
    }
    const bool placed = impl_->PlaceNewVolume(caller, req->name());
    if (req->replicas() > 1)
      return CreateReplicatedVolume(impl_, ctx, req, resp, std::move(audit), caller, placed);
    auto* r = ctx->DefaultReactor();
    VolumeSpec spec{req->name(), req->size_bytes(), dur.value(), req->read_only()};
    ControlServer::Impl* impl = impl_;
    impl_->volumes->Create(
        spec, [impl, r, resp, caller, placed, name = req->name(),
               audit = std::move(audit)](Result<std::shared_ptr<VolumeHandle>> res) mutable {
          if (!res.ok()) {
            if (placed) impl->UnplaceNewVolume(name);
            return impl->FinishAudited(r, std::move(audit), res.status(), true);
          }
          impl->Fill(res.value()->info(), resp);
          if (caller.role != policy::Role::kTenant)
            return impl->FinishAudited(r, std::move(audit), Status::Ok(), true);
          // A tenant's volume is its tenant's from the start (on the worker, before the answer).
          auto a = std::make_shared<AuditCall>(std::move(audit));
          impl->Enqueue(
              [impl, r, resp, caller, name, a] {
                impl->FinishAudited(r, std::move(*a), impl->OwnNewVolume(caller, name, resp), true);
              },
              false);
        });
    return r;
  }

  grpc::ServerUnaryReactor* GetVolume(grpc::CallbackServerContext* ctx,
                                      const v1::GetVolumeRequest* req, v1::Volume* resp) override {
    if (Status s = policy::ValidateName("name", req->name()); !s.ok())
      return ControlServer::Impl::Refuse(ctx, s);
    Caller caller;
    if (Status a = impl_->Admit(ctx, Access::kRead, &caller); !a.ok())
      return ControlServer::Impl::Refuse(ctx, a);
    auto* r = ctx->DefaultReactor();
    if (!impl_->Visible(caller, req->name())) {
      impl_->Done(r, NotVisible(req->name()));
      return r;
    }
    ControlServer::Impl* impl = impl_;
    std::string name = req->name();
    // On the pool's reactor: its current allocation, not the last change's.
    // From the manager's snapshot and the volume's atomic allocation: no work for the pool's
    // reactor (bench/control: reads beside the data path).
    std::shared_ptr<VolumeHandle> h = impl->volumes->Find(name);
    if (!h) {
      impl->Done(r, NotFound("no volume '" + name + "'"));
      return r;
    }
    impl->Fill(impl->Current(*h), resp);
    FillReplication(*impl, name, resp);
    impl->Done(r, Status::Ok());
    return r;
  }

  grpc::ServerUnaryReactor* ListVolumes(grpc::CallbackServerContext* ctx,
                                        const v1::ListVolumesRequest* req,
                                        v1::ListVolumesResponse* resp) override {
    Result<uint64_t> token = PageTokenFromProto(req->page_token());
    if (!token.ok()) return ControlServer::Impl::Refuse(ctx, token.status());
    const uint64_t after = *token;
    const uint32_t page = req->page_size() == 0
                              ? ControlServer::kListPageMax
                              : std::min(req->page_size(), ControlServer::kListPageMax);
    Caller caller;
    if (Status a = impl_->Admit(ctx, Access::kRead, &caller); !a.ok())
      return ControlServer::Impl::Refuse(ctx, a);
    auto* r = ctx->DefaultReactor();
    ControlServer::Impl* impl = impl_;
    // The manager's snapshots (ordered by id) with each volume's atomic allocation: no work for
    // the pool's reactor.
    for (const VolumeInfo& snap : impl->volumes->List()) {
      if (snap.id <= after || !impl->Visible(caller, snap.name)) continue;
      if (static_cast<uint32_t>(resp->volumes_size()) == page) {
        resp->set_next_page_token(std::to_string(resp->volumes(page - 1).id()));
        break;
      }
      VolumeInfo vi = snap;
      if (auto h = impl->volumes->Find(snap.name)) vi = impl->Current(*h);
      impl->Fill(vi, resp->add_volumes());
    }
    FillReplication(*impl, resp);
    impl->Done(r, Status::Ok());
    return r;
  }

  grpc::ServerUnaryReactor* DeleteVolume(grpc::CallbackServerContext* ctx,
                                         const v1::DeleteVolumeRequest* req,
                                         v1::DeleteVolumeResponse*) override {
    AuditCall audit = impl_->Describe(ctx, "spd.v1.VolumeService/DeleteVolume", *req);
    Status s = policy::ValidateName("name", req->name());
    Caller caller;
    if (s.ok()) s = impl_->AdmitWrite(ctx, Access::kWriteVolume, &caller);
    if (!s.ok()) return impl_->RefuseAudited(ctx, std::move(audit), s);
    if (!impl_->Visible(caller, req->name())) {
      impl_->in_flight.fetch_sub(1);
      return impl_->RefuseAudited(ctx, std::move(audit), NotVisible(req->name()));
    }
    if (IsReplicated(*impl_, req->name()))
      return DeleteReplicatedVolume(impl_, ctx, req, std::move(audit));
    // The volume's policy goes with it: Impl::OnVolumeChanged.
    auto* r = ctx->DefaultReactor();
    ControlServer::Impl* impl = impl_;
    impl_->volumes->Delete(req->name(), req->force(),
                           [impl, r, audit = std::move(audit)](Status st) mutable {
                             impl->FinishAudited(r, std::move(audit), st, true);
                           });
    return r;
  }

  grpc::ServerUnaryReactor* ResizeVolume(grpc::CallbackServerContext* ctx,
                                         const v1::ResizeVolumeRequest* req,
                                         v1::Volume* resp) override {
    AuditCall audit = impl_->Describe(ctx, "spd.v1.VolumeService/ResizeVolume", *req);
    Status s = policy::ValidateName("name", req->name());
    if (s.ok()) s = CheckSize(req->size_bytes());
    Caller caller;
    if (s.ok()) s = impl_->AdmitWrite(ctx, Access::kWriteVolume, &caller);
    if (!s.ok()) return impl_->RefuseAudited(ctx, std::move(audit), s);
    if (!impl_->Visible(caller, req->name())) {
      impl_->in_flight.fetch_sub(1);
      return impl_->RefuseAudited(ctx, std::move(audit), NotVisible(req->name()));
    }
    if (IsReplicated(*impl_, req->name()))
      return ResizeReplicatedVolume(impl_, ctx, req, resp, std::move(audit));
    return AfterChange(ctx, req->name(), resp, std::move(audit), [&](auto done) {
      impl_->volumes->Resize(req->name(), req->size_bytes(), done);
    });
  }

  grpc::ServerUnaryReactor* SetDurability(grpc::CallbackServerContext* ctx,
                                          const v1::SetDurabilityRequest* req,
                                          v1::Volume* resp) override {
    AuditCall audit = impl_->Describe(ctx, "spd.v1.VolumeService/SetDurability", *req);
    Status s = policy::ValidateName("name", req->name());
    // DURABILITY_ASYNC: a replicated volume's mode (SetReplicatedDurability).
    const bool async = req->durability() == v1::DURABILITY_ASYNC;
    auto dur = async ? Result<Durability>(Durability::kFlush) : FromProto(req->durability(), false);
    if (s.ok() && !dur.ok()) s = dur.status();
    Caller caller;
    if (s.ok()) s = impl_->AdmitWrite(ctx, Access::kWriteVolume, &caller);
    if (!s.ok()) return impl_->RefuseAudited(ctx, std::move(audit), s);
    if (!impl_->Visible(caller, req->name())) {
      impl_->in_flight.fetch_sub(1);
      return impl_->RefuseAudited(ctx, std::move(audit), NotVisible(req->name()));
    }
    if (IsReplicated(*impl_, req->name()))
      return SetReplicatedDurability(impl_, ctx, req, dur.value(), resp, std::move(audit));
    if (async) {
      impl_->in_flight.fetch_sub(1);
      return impl_->RefuseAudited(
          ctx, std::move(audit),
          InvalidArgument("durability: async is for replicated volumes (replicas 2 or more)"));
    }
    return AfterChange(ctx, req->name(), resp, std::move(audit), [&](auto done) {
      impl_->volumes->SetDurability(req->name(), dur.value(), done);
    });
  }

 private:
  // Starts a manager call whose `done(Status)` then answers with the volume's new state.
  template <typename Start>
  grpc::ServerUnaryReactor* AfterChange(grpc::CallbackServerContext* ctx, const std::string& name,
                                        v1::Volume* resp, AuditCall audit, Start start) {
    auto* r = ctx->DefaultReactor();
    ControlServer::Impl* impl = impl_;
    auto a = std::make_shared<AuditCall>(std::move(audit));
    start([impl, r, resp, name, a](Status s) {
      if (s.ok()) {
        Volume* v = impl->pool->FindVolume(name);  // the callback runs on the pool's reactor
        if (v) impl->Fill(v->info(), resp);
      }
      impl->FinishAudited(r, std::move(*a), s, true);
    });
    return r;
  }
  ControlServer::Impl* impl_;
};

}  // namespace

struct ControlServices {
  VolumeServiceImpl volume;
  std::unique_ptr<v1::PoolService::CallbackService> pool;
  std::unique_ptr<v1::NodeService::CallbackService> node;
  std::unique_ptr<v1::EventService::CallbackService> events;
  std::unique_ptr<v1::AuditService::CallbackService> audit;
  std::unique_ptr<PolicyServices> policy;
  std::unique_ptr<PolicyServices> access;
  explicit ControlServices(ControlServer::Impl* i)
      : volume(i),
        pool(NewPoolService(i)),
        node(NewNodeService(i)),
        events(NewEventService(i)),
        audit(NewAuditService(i)) {}
};

ControlServer::ControlServer(VolumeManager* volumes, ControlServerOptions options)
    : impl_(std::make_unique<Impl>()), events_(std::make_unique<EventHub>()) {
  impl_->volumes = volumes;
  impl_->pool = volumes->pool();
  impl_->options = std::move(options);
  impl_->events = events_.get();
}

ControlServer::~ControlServer() {
  Stop();
  if (impl_->listening) impl_->volumes->RemoveListener(impl_.get());
}

Status ControlServer::Start() {
  // Every thread of the control plane (the worker, the socket listener, gRPC's pollers and
  // executors, which gRPC creates from the thread that starts it and from each other) inherits
  // the policy of the thread that makes it: start them from one that is SCHED_BATCH. A batch
  // thread that wakes does not preempt a running reactor (the kernel skips wakeup preemption
  // for it); it still gets its fair share of CPU, so calls are served, at most a scheduler
  // slice later when every core is busy with I/O. On the 2-core test VM a loop of 200 control
  // calls/s took 10% of 4 KiB QD32 IOPS without it (bench/control; docs/control.md).
  if (!impl_->options.batch_threads) return StartThreads();
  Status result;
  std::thread starter([this, &result] {
    NameThisThread("spd-ctl-start");
    sched_param p{};
    if (sched_setscheduler(0, SCHED_BATCH, &p) != 0)
      SPD_LOG_WARN("control: cannot make the control plane's threads SCHED_BATCH: %s",
                   std::strerror(errno));
    result = StartThreads();
  });
  starter.join();
  return result;
}

Status ControlServer::StartThreads() {
  auto audit = AuditLog::Open(impl_->options.audit_dir);
  if (audit.ok()) {
    impl_->audit = std::move(audit).value();
  } else if (audit.status().code() == StatusCode::kDataLoss) {
    // A damaged log must not be continued (the chain would vouch for it), but data must stay
    // reachable: serve, and refuse every mutating call until someone looks.
    SPD_LOG_ERROR("audit log %s is damaged, mutating control calls are refused: %s",
                  impl_->options.audit_dir.c_str(), audit.status().ToString().c_str());
    impl_->audit_broken.store(true);
  } else {
    return audit.status().WithContext("control: audit log " + impl_->options.audit_dir);
  }
  auto store = state::StateStore::Open(impl_->options.state_dir);
  if (!store.ok()) return store.status().WithContext("control: state store");
  impl_->store = std::move(store).value();
  if (Status s = impl_->Reconcile(); !s.ok()) return s.WithContext("control: state store");
  if (Status s = impl_->LoadRoles(); !s.ok()) return s.WithContext("control: state store");
  impl_->worker = std::thread([this] {
    NameThisThread("spd-ctl-worker");
    impl_->WorkerLoop();
  });
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  {
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> ic;
    ic.push_back(MakeCallInterceptorFactory());
    builder.experimental().SetInterceptorCreators(std::move(ic));
  }
  builder.SetMaxReceiveMessageSize(static_cast<int>(kRequestBytesMax));
  // Idle connections go after 10 minutes; a connection's streams are bounded.
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS, 600'000);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, 100);
  // A TCP client gets 5 s for its TLS handshake (gRPC's default is 120 s).
  builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, 5000);
  if (!impl_->options.tcp_listen.empty()) {
    auto read = [](const std::string& path, std::string* out) -> Status {
      std::ifstream f(path);
      if (!f) return InvalidArgument("cannot read " + path);
      std::stringstream ss;
      ss << f.rdbuf();
      *out = ss.str();
      return Status::Ok();
    };
    grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
    if (impl_->options.tls_cert_file.empty() || impl_->options.tls_key_file.empty()) {
      StopWorker();
      return InvalidArgument(
          "--control-listen needs --control-tls-cert and --control-tls-key: the API is never "
          "served on TCP without TLS");
    }
    Status rs = read(impl_->options.tls_cert_file, &pair.cert_chain);
    if (rs.ok()) rs = read(impl_->options.tls_key_file, &pair.private_key);
    if (!rs.ok()) {
      StopWorker();
      return rs.WithContext("control TLS");
    }
    grpc::SslServerCredentialsOptions so;
    so.pem_key_cert_pairs.push_back(pair);
    builder.AddListeningPort(impl_->options.tcp_listen, grpc::SslServerCredentials(so), &tcp_port_);
  }
  auto services = std::make_shared<ControlServices>(impl_.get());
  builder.RegisterService(&services->volume);
  builder.RegisterService(services->pool.get());
  builder.RegisterService(services->node.get());
  builder.RegisterService(services->events.get());
  builder.RegisterService(services->audit.get());
  services->policy = RegisterPolicyServices(&builder, impl_.get());
  services->access = RegisterAccessService(&builder, impl_.get());
  impl_->server = builder.BuildAndStart();
  if (!impl_->server) {
    StopWorker();
    return Internal("control: gRPC server did not start");
  }
  services_ = services;
  if (!impl_->options.tcp_listen.empty() && tcp_port_ == 0) {
    impl_->server->Shutdown();
    impl_->server.reset();
    StopWorker();
    return Unavailable("control: cannot listen on " + impl_->options.tcp_listen);
  }
  if (auto* h = impl_->server->GetHealthCheckService()) h->SetServingStatus(true);
  impl_->volumes->AddListener(impl_.get());
  impl_->listening = true;
  Status s = impl_->listener.Start(impl_->options.socket_path, impl_->options.socket_mode,
                                   impl_->options.socket_group, impl_->server.get());
  if (!s.ok()) {
    impl_->server->Shutdown();
    impl_->server.reset();
    StopWorker();
    return s;
  }
  SPD_LOG_INFO("control API on unix:%s", impl_->options.socket_path.c_str());
  return Status::Ok();
}

std::string ControlServer::VolumeTenant(const std::string& volume) const {
  return impl_->PlacementOf(volume).tenant;
}

bool ControlServer::UidMayUseVolume(uint32_t uid, const std::string& volume) const {
  const Caller c = impl_->CallerOfUid(uid);
  return Allowed(c.role, Access::kWriteVolume) && impl_->Visible(c, volume);
}

void ControlServer::ReportIntentViolation(const std::string& volume, const std::string& reason) {
  v1::Event e;
  e.set_type(v1::EVENT_TYPE_INTENT_VIOLATION);
  e.set_volume(volume);
  e.set_message(reason);
  events_->Publish(std::move(e));
}

void ControlServer::ReportBackendFallback(const std::string& reason) {
  v1::Event e;
  e.set_type(v1::EVENT_TYPE_BACKEND_FALLBACK);
  e.set_message(reason);
  events_->Publish(std::move(e));
}

void ControlServer::ReportPoolReadOnly(const std::string& reason) {
  v1::Event e;
  e.set_type(v1::EVENT_TYPE_POOL_READ_ONLY);
  e.set_message(reason);
  events_->Publish(std::move(e));
}

void ControlServer::ReportReplication(bool primary_changed, const std::string& volume,
                                      const std::string& message) {
  v1::Event e;
  e.set_type(primary_changed ? v1::EVENT_TYPE_PRIMARY_CHANGED : v1::EVENT_TYPE_REPLICA_STATE);
  e.set_volume(volume);
  e.set_message(message);
  events_->Publish(std::move(e));
}

void ControlServer::Stop() {
  if (!impl_->server) return;
  impl_->stopping.store(true);
  impl_->listener.Stop();
  if (auto* h = impl_->server->GetHealthCheckService()) h->SetServingStatus(false);
  events_->WakeAll();  // watchers see `stopping` and finish
  // A calibration runs to its end (at most its seconds_max) and answers first.
  if (impl_->calibrator.joinable()) impl_->calibrator.join();
  // The replication call running ends (its own deadline); those waiting are answered.
  impl_->replication_calls.Stop();
  impl_->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  impl_->server->Wait();
  impl_->server.reset();
  StopWorker();
}

void ControlServer::StopWorker() {
  if (!impl_->worker.joinable()) return;
  {
    std::lock_guard<std::mutex> l(impl_->wmu);
    impl_->wstop = true;
    impl_->wcv.notify_one();
  }
  impl_->worker.join();  // runs what is queued first
}

}  // namespace spd
