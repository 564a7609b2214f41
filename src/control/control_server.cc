#include "control/control_server.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>

#include "common/counters.h"
#include "common/log.h"
#include "control/control_listener.h"
#include "control/event_hub.h"
#include "policy/model.h"
#include "spd/v1/events.grpc.pb.h"
#include "spd/v1/node.grpc.pb.h"
#include "spd/v1/pools.grpc.pb.h"
#include "spd/v1/volumes.grpc.pb.h"

namespace spd {
namespace {

Counter calls_total("spd_control_calls_total", "Control API calls received.");
Counter calls_failed_total("spd_control_calls_failed_total",
                           "Control API calls that ended with an error (any code).");
Counter denied_total("spd_control_calls_denied_total",
                     "Control API calls refused: the caller has no role that allows them.");
Counter busy_total("spd_control_calls_busy_total",
                   "Control API calls refused with RESOURCE_EXHAUSTED: kCallsInFlightMax calls "
                   "were in flight.");

grpc::Status ToGrpc(const Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

v1::Durability ToProto(Durability d) {
  switch (d) {
    case Durability::kFlush:
      return v1::DURABILITY_FLUSH;
    case Durability::kSync:
      return v1::DURABILITY_SYNC;
    case Durability::kNone:
      return v1::DURABILITY_NONE;
  }
  return v1::DURABILITY_UNSPECIFIED;
}

// UNSPECIFIED is the default (flush) where `allow_unspecified`.
Result<Durability> FromProto(v1::Durability d, bool allow_unspecified) {
  switch (d) {
    case v1::DURABILITY_UNSPECIFIED:
      if (allow_unspecified) return Durability::kFlush;
      return InvalidArgument("durability: must be set (flush, sync or none)");
    case v1::DURABILITY_FLUSH:
      return Durability::kFlush;
    case v1::DURABILITY_SYNC:
      return Durability::kSync;
    case v1::DURABILITY_NONE:
      return Durability::kNone;
    default:
      return InvalidArgument("durability: unknown value " + std::to_string(static_cast<int>(d)));
  }
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

enum class Access { kRead, kWrite };

}  // namespace

struct ControlServer::Impl : VolumeManager::Listener {
  VolumeManager* volumes;
  Pool* pool;
  ControlServerOptions options;
  EventHub* events;
  ControlListener listener;
  std::unique_ptr<grpc::Server> server;
  uid_t daemon_uid = geteuid();
  uint64_t started_ns = MonotonicNs();
  std::atomic<size_t> in_flight{0};
  std::atomic<bool> stopping{false};
  bool listening = false;

  // Admission: a slot among kCallsInFlightMax and the caller's right to the call.
  Status Admit(grpc::CallbackServerContext* ctx, Access access) {
    calls_total.Add();
    if (in_flight.fetch_add(1) >= kCallsInFlightMax) {
      in_flight.fetch_sub(1);
      busy_total.Add();
      return ResourceExhausted(std::to_string(kCallsInFlightMax) +
                               " control calls are in flight already; retry");
    }
    std::optional<PeerCred> peer = listener.PeerOf(ctx->peer());
    if (!peer) {
      in_flight.fetch_sub(1);
      denied_total.Add();
      return PermissionDenied("caller unknown (not on the control socket)");
    }
    if (peer->uid == 0 || peer->uid == daemon_uid) return Status::Ok();
    (void)access;
    in_flight.fetch_sub(1);
    denied_total.Add();
    return PermissionDenied("uid " + std::to_string(peer->uid) +
                            " has no role on this daemon (root and the daemon's user are "
                            "admins; docs/control.md)");
  }
  // Ends an admitted call.
  void Done(grpc::ServerUnaryReactor* r, const Status& s) {
    if (!s.ok()) calls_failed_total.Add();
    in_flight.fetch_sub(1);
    r->Finish(ToGrpc(s));
  }
  // Ends a call refused before admission counted it.
  static grpc::ServerUnaryReactor* Refuse(grpc::CallbackServerContext* ctx, const Status& s) {
    calls_failed_total.Add();
    auto* r = ctx->DefaultReactor();
    r->Finish(ToGrpc(s));
    return r;
  }

  void Fill(const VolumeInfo& info, v1::Volume* out) {
    out->set_name(info.name);
    out->set_id(info.id);
    out->set_size_bytes(info.size_bytes);
    out->set_allocated_bytes(info.allocated_bytes);
    out->set_durability(ToProto(info.durability));
    out->set_read_only(info.read_only);
    out->set_pool("default");
    if (auto h = volumes->Find(info.name)) out->set_users(h->users());
  }

  // VolumeManager::Listener (pool's reactor).
  void OnVolumeChanged(const VolumeInfo& info, VolumeManager::Change kind) override {
    v1::Event e;
    switch (kind) {
      case VolumeManager::Change::kCreated:
        e.set_type(v1::EVENT_TYPE_VOLUME_CREATED);
        break;
      case VolumeManager::Change::kDeleted:
        e.set_type(v1::EVENT_TYPE_VOLUME_DELETED);
        break;
      case VolumeManager::Change::kResized:
        e.set_type(v1::EVENT_TYPE_VOLUME_RESIZED);
        break;
      case VolumeManager::Change::kDurability:
        e.set_type(v1::EVENT_TYPE_VOLUME_DURABILITY_CHANGED);
        break;
    }
    e.set_volume(info.name);
    Fill(info, e.mutable_volume_info());
    events->Publish(std::move(e));
  }
  void OnVolumeClosing(std::shared_ptr<VolumeHandle>, std::function<void()> done) override {
    done();  // the control plane holds no users of a volume
  }
};

namespace {

class VolumeServiceImpl final : public v1::VolumeService::CallbackService {
 public:
  explicit VolumeServiceImpl(ControlServer::Impl* impl) : impl_(impl) {}

  grpc::ServerUnaryReactor* CreateVolume(grpc::CallbackServerContext* ctx,
                                         const v1::CreateVolumeRequest* req,
                                         v1::Volume* resp) override {
    Status s = policy::ValidateName("name", req->name());
    if (s.ok()) s = CheckSize(req->size_bytes());
    auto dur = FromProto(req->durability(), true);
    if (s.ok() && !dur.ok()) s = dur.status();
    if (!s.ok()) return ControlServer::Impl::Refuse(ctx, s);
    if (Status a = impl_->Admit(ctx, Access::kWrite); !a.ok())
      return ControlServer::Impl::Refuse(ctx, a);
    auto* r = ctx->DefaultReactor();
    VolumeSpec spec{req->name(), req->size_bytes(), dur.value(), req->read_only()};
    ControlServer::Impl* impl = impl_;
    impl_->volumes->Create(spec, [impl, r, resp](Result<std::shared_ptr<VolumeHandle>> res) {
      if (res.ok()) impl->Fill(res.value()->info(), resp);
      impl->Done(r, res.ok() ? Status::Ok() : res.status());
    });
    return r;
  }

  grpc::ServerUnaryReactor* GetVolume(grpc::CallbackServerContext* ctx,
                                      const v1::GetVolumeRequest* req, v1::Volume* resp) override {
    if (Status s = policy::ValidateName("name", req->name()); !s.ok())
      return ControlServer::Impl::Refuse(ctx, s);
    if (Status a = impl_->Admit(ctx, Access::kRead); !a.ok())
      return ControlServer::Impl::Refuse(ctx, a);
    auto* r = ctx->DefaultReactor();
    ControlServer::Impl* impl = impl_;
    std::string name = req->name();
    // On the pool's reactor: its current allocation, not the last change's.
    RunOn(impl_->pool->reactor(), [impl, r, resp, name] {
      Volume* v = impl->pool->FindVolume(name);
      if (v == nullptr) return impl->Done(r, NotFound("no volume '" + name + "'"));
      impl->Fill(v->info(), resp);
      impl->Done(r, Status::Ok());
    });
    return r;
  }

  grpc::ServerUnaryReactor* ListVolumes(grpc::CallbackServerContext* ctx,
                                        const v1::ListVolumesRequest* req,
                                        v1::ListVolumesResponse* resp) override {
    uint64_t after = 0;
    if (!req->page_token().empty()) {
      try {
        size_t used = 0;
        after = std::stoull(req->page_token(), &used);
        if (used != req->page_token().size()) throw std::invalid_argument("trailing");
      } catch (...) {
        return ControlServer::Impl::Refuse(
            ctx, InvalidArgument("page_token: not a token from ListVolumes"));
      }
    }
    const uint32_t page = req->page_size() == 0
                              ? ControlServer::kListPageMax
                              : std::min(req->page_size(), ControlServer::kListPageMax);
    if (Status a = impl_->Admit(ctx, Access::kRead); !a.ok())
      return ControlServer::Impl::Refuse(ctx, a);
    auto* r = ctx->DefaultReactor();
    ControlServer::Impl* impl = impl_;
    RunOn(impl_->pool->reactor(), [impl, r, resp, after, page] {
      std::vector<VolumeInfo> all = impl->pool->ListVolumes();
      std::sort(all.begin(), all.end(),
                [](const VolumeInfo& a, const VolumeInfo& b) { return a.id < b.id; });
      for (const VolumeInfo& vi : all) {
        if (vi.id <= after) continue;
        if (static_cast<uint32_t>(resp->volumes_size()) == page) {
          resp->set_next_page_token(std::to_string(resp->volumes(page - 1).id()));
          break;
        }
        impl->Fill(vi, resp->add_volumes());
      }
      impl->Done(r, Status::Ok());
    });
    return r;
  }

  grpc::ServerUnaryReactor* DeleteVolume(grpc::CallbackServerContext* ctx,
                                         const v1::DeleteVolumeRequest* req,
                                         v1::DeleteVolumeResponse*) override {
    if (Status s = policy::ValidateName("name", req->name()); !s.ok())
      return ControlServer::Impl::Refuse(ctx, s);
    if (Status a = impl_->Admit(ctx, Access::kWrite); !a.ok())
      return ControlServer::Impl::Refuse(ctx, a);
    auto* r = ctx->DefaultReactor();
    ControlServer::Impl* impl = impl_;
    impl_->volumes->Delete(req->name(), req->force(), [impl, r](Status s) { impl->Done(r, s); });
    return r;
  }

  grpc::ServerUnaryReactor* ResizeVolume(grpc::CallbackServerContext* ctx,
                                         const v1::ResizeVolumeRequest* req,
                                         v1::Volume* resp) override {
    Status s = policy::ValidateName("name", req->name());
    if (s.ok()) s = CheckSize(req->size_bytes());
    if (!s.ok()) return ControlServer::Impl::Refuse(ctx, s);
    if (Status a = impl_->Admit(ctx, Access::kWrite); !a.ok())
      return ControlServer::Impl::Refuse(ctx, a);
    return AfterChange(ctx, req->name(), resp, [&](auto done) {
      impl_->volumes->Resize(req->name(), req->size_bytes(), done);
    });
  }

  grpc::ServerUnaryReactor* SetDurability(grpc::CallbackServerContext* ctx,
                                          const v1::SetDurabilityRequest* req,
                                          v1::Volume* resp) override {
    Status s = policy::ValidateName("name", req->name());
    auto dur = FromProto(req->durability(), false);
    if (s.ok() && !dur.ok()) s = dur.status();
    if (!s.ok()) return ControlServer::Impl::Refuse(ctx, s);
    if (Status a = impl_->Admit(ctx, Access::kWrite); !a.ok())
      return ControlServer::Impl::Refuse(ctx, a);
    return AfterChange(ctx, req->name(), resp, [&](auto done) {
      impl_->volumes->SetDurability(req->name(), dur.value(), done);
    });
  }

 private:
  // Starts a manager call whose `done(Status)` then answers with the volume's new state.
  template <typename Start>
  grpc::ServerUnaryReactor* AfterChange(grpc::CallbackServerContext* ctx, const std::string& name,
                                        v1::Volume* resp, Start start) {
    auto* r = ctx->DefaultReactor();
    ControlServer::Impl* impl = impl_;
    start([impl, r, resp, name](Status s) {
      if (s.ok()) {
        Volume* v = impl->pool->FindVolume(name);  // the callback runs on the pool's reactor
        if (v) impl->Fill(v->info(), resp);
      }
      impl->Done(r, s);
    });
    return r;
  }
  ControlServer::Impl* impl_;
};

class PoolServiceImpl final : public v1::PoolService::CallbackService {
 public:
  explicit PoolServiceImpl(ControlServer::Impl* impl) : impl_(impl) {}

  grpc::ServerUnaryReactor* GetPool(grpc::CallbackServerContext* ctx, const v1::GetPoolRequest* req,
                                    v1::Pool* resp) override {
    if (!req->name().empty() && req->name() != "default")
      return ControlServer::Impl::Refuse(ctx, NotFound("no pool '" + req->name() + "'"));
    return Snapshot(ctx, resp);
  }
  grpc::ServerUnaryReactor* ListPools(grpc::CallbackServerContext* ctx, const v1::ListPoolsRequest*,
                                      v1::ListPoolsResponse* resp) override {
    return Snapshot(ctx, resp->add_pools());
  }

 private:
  grpc::ServerUnaryReactor* Snapshot(grpc::CallbackServerContext* ctx, v1::Pool* out) {
    if (Status a = impl_->Admit(ctx, Access::kRead); !a.ok())
      return ControlServer::Impl::Refuse(ctx, a);
    auto* r = ctx->DefaultReactor();
    ControlServer::Impl* impl = impl_;
    RunOn(impl_->pool->reactor(), [impl, r, out] {
      Pool* p = impl->pool;
      const PoolStats st = p->stats();
      out->set_name("default");
      out->set_path(impl->options.pool_path);
      out->set_backend(p->backend()->name());
      out->set_size_bytes(st.chunks_total * st.chunk_size_bytes);
      out->set_chunk_size_bytes(st.chunk_size_bytes);
      out->set_free_bytes(st.chunks_free * st.chunk_size_bytes);
      out->set_allocated_bytes((st.chunks_total - st.chunks_free) * st.chunk_size_bytes);
      out->set_read_only(p->read_only());
      out->set_volumes(static_cast<uint32_t>(p->ListVolumes().size()));
      out->set_commits(st.commits);
      impl->Done(r, Status::Ok());
    });
    return r;
  }
  ControlServer::Impl* impl_;
};

class NodeServiceImpl final : public v1::NodeService::CallbackService {
 public:
  explicit NodeServiceImpl(ControlServer::Impl* impl) : impl_(impl) {}
  grpc::ServerUnaryReactor* GetNodeInfo(grpc::CallbackServerContext* ctx,
                                        const v1::GetNodeInfoRequest*,
                                        v1::NodeInfo* resp) override {
    if (Status a = impl_->Admit(ctx, Access::kRead); !a.ok())
      return ControlServer::Impl::Refuse(ctx, a);
    char host[256] = {};
    gethostname(host, sizeof host - 1);
    const ControlServerOptions& o = impl_->options;
    resp->set_hostname(host);
    resp->set_version(o.version);
    resp->set_pid(static_cast<uint32_t>(getpid()));
    resp->set_uptime_seconds((MonotonicNs() - impl_->started_ns) / 1'000'000'000ull);
    resp->set_reactors(o.reactors);
    resp->set_engine(o.engine);
    resp->set_data_dir(o.data_dir);
    for (const std::string& e : o.nbd_endpoints) resp->add_nbd_endpoints(e);
    resp->set_metrics_endpoint(o.metrics_endpoint);
    auto* r = ctx->DefaultReactor();
    impl_->Done(r, Status::Ok());
    return r;
  }

 private:
  ControlServer::Impl* impl_;
};

// One WatchEvents stream: a cursor into the hub, one write in flight at a time.
class EventWatcher final : public grpc::ServerWriteReactor<v1::Event> {
 public:
  EventWatcher(ControlServer::Impl* impl, uint64_t since) : impl_(impl) {
    slot_ = std::make_shared<EventHub::Watcher>();
    const uint64_t last = impl_->events->last_seq();
    next_ = since == 0 ? last : since - 1;  // since_seq is the first event wanted
    if (next_ > last) next_ = last;
    slot_->wake = [this] { TryWrite(); };
    if (impl_->stopping.load() || !impl_->events->Add(slot_, ControlServer::kWatchersMax)) {
      slot_->wake = nullptr;
      added_ = false;
      finished_ = true;
      Finish(grpc::Status(
          grpc::StatusCode::RESOURCE_EXHAUSTED,
          std::to_string(ControlServer::kWatchersMax) + " event watchers are connected already"));
      return;
    }
    std::lock_guard<std::recursive_mutex> l(slot_->mu);
    TryWrite();
  }
  void OnWriteDone(bool ok) override {
    std::lock_guard<std::recursive_mutex> l(slot_->mu);
    writing_ = false;
    if (!ok) return End(grpc::Status::CANCELLED);
    TryWrite();
  }
  void OnCancel() override {
    std::lock_guard<std::recursive_mutex> l(slot_->mu);
    cancelled_ = true;
    if (!writing_) End(grpc::Status::CANCELLED);
  }
  void OnDone() override {
    if (added_) impl_->events->Remove(slot_);
    delete this;
  }

 private:
  // REQUIRES: slot_->mu held.
  void TryWrite() {
    if (writing_ || finished_) return;
    if (cancelled_ || impl_->stopping.load()) return End(grpc::Status::OK);
    std::optional<v1::Event> e = impl_->events->Next(&next_);
    if (!e) return;
    ev_ = std::move(*e);
    writing_ = true;
    StartWrite(&ev_);
  }
  void End(const grpc::Status& s) {
    if (finished_) return;
    finished_ = true;
    Finish(s);
  }
  ControlServer::Impl* impl_;
  std::shared_ptr<EventHub::Watcher> slot_;
  uint64_t next_ = 0;
  v1::Event ev_;
  bool writing_ = false;
  bool finished_ = false;
  bool cancelled_ = false;
  bool added_ = true;
};

class EventServiceImpl final : public v1::EventService::CallbackService {
 public:
  explicit EventServiceImpl(ControlServer::Impl* impl) : impl_(impl) {}
  grpc::ServerWriteReactor<v1::Event>* WatchEvents(grpc::CallbackServerContext* ctx,
                                                   const v1::WatchEventsRequest* req) override {
    if (Status a = impl_->Admit(ctx, Access::kRead); !a.ok()) {
      struct Refused : grpc::ServerWriteReactor<v1::Event> {
        explicit Refused(const Status& s) { Finish(ToGrpc(s)); }
        void OnDone() override { delete this; }
      };
      calls_failed_total.Add();
      return new Refused(a);
    }
    impl_->in_flight.fetch_sub(1);  // streams are bounded by kWatchersMax instead
    return new EventWatcher(impl_, req->since_seq());
  }

 private:
  ControlServer::Impl* impl_;
};

}  // namespace

struct ControlServices {
  VolumeServiceImpl volume;
  PoolServiceImpl pool;
  NodeServiceImpl node;
  EventServiceImpl events;
  explicit ControlServices(ControlServer::Impl* i) : volume(i), pool(i), node(i), events(i) {}
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
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  builder.SetMaxReceiveMessageSize(static_cast<int>(kRequestBytesMax));
  // Idle connections go after 10 minutes; a connection's streams are bounded.
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS, 600'000);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, 100);
  auto services = std::make_shared<ControlServices>(impl_.get());
  builder.RegisterService(&services->volume);
  builder.RegisterService(&services->pool);
  builder.RegisterService(&services->node);
  builder.RegisterService(&services->events);
  impl_->server = builder.BuildAndStart();
  if (!impl_->server) return Internal("control: gRPC server did not start");
  services_ = services;
  if (auto* h = impl_->server->GetHealthCheckService()) h->SetServingStatus(true);
  impl_->volumes->AddListener(impl_.get());
  impl_->listening = true;
  Status s = impl_->listener.Start(impl_->options.socket_path, impl_->options.socket_mode,
                                   impl_->options.socket_group, impl_->server.get());
  if (!s.ok()) {
    impl_->server->Shutdown();
    impl_->server.reset();
    return s;
  }
  SPD_LOG_INFO("control API on unix:%s", impl_->options.socket_path.c_str());
  return Status::Ok();
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

void ControlServer::Stop() {
  if (!impl_->server) return;
  impl_->stopping.store(true);
  impl_->listener.Stop();
  if (auto* h = impl_->server->GetHealthCheckService()) h->SetServingStatus(false);
  events_->WakeAll();  // watchers see `stopping` and finish
  impl_->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  impl_->server->Wait();
  impl_->server.reset();
}

}  // namespace spd
