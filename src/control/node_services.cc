// The control API's PoolService, NodeService and EventService (docs/control.md): the pool's
// figures, the node and the cluster's nodes, calibration, and the event stream.
#include "control/node_services.h"

#include <cerrno>
#include <chrono>

#include "common/os_util.h"
#include "control/cluster_info.h"
#include "control/convert.h"
#include "qos/qos_scheduler.h"

namespace spd {
namespace {

class PoolServiceImpl final : public v1::PoolService::CallbackService {
 public:
  explicit PoolServiceImpl(ControlServer::Impl* impl) : impl_(impl) {}

  grpc::ServerUnaryReactor* GetPool(grpc::CallbackServerContext* ctx, const v1::GetPoolRequest* req,
                                    v1::Pool* resp) override {
    // Admitted first: a caller without a role learns nothing, not even which pools there are.
    if (Status a = impl_->Admit(ctx, Access::kRead); !a.ok())
      return ControlServer::Impl::Refuse(ctx, a);
    if (!req->name().empty() && req->name() != "default") {
      auto* r = ctx->DefaultReactor();
      impl_->Done(r, NotFound("no pool '" + req->name() + "'"));
      return r;
    }
    return Snapshot(ctx, resp);
  }
  grpc::ServerUnaryReactor* ListPools(grpc::CallbackServerContext* ctx, const v1::ListPoolsRequest*,
                                      v1::ListPoolsResponse* resp) override {
    if (Status a = impl_->Admit(ctx, Access::kRead); !a.ok())
      return ControlServer::Impl::Refuse(ctx, a);
    return Snapshot(ctx, resp->add_pools());
  }

 private:
  // REQUIRES: the call admitted.
  grpc::ServerUnaryReactor* Snapshot(grpc::CallbackServerContext* ctx, v1::Pool* out) {
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
      out->set_provisioned_bytes(st.provisioned_bytes);
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
    FillClusterInfo(o.cluster, resp);
    auto* r = ctx->DefaultReactor();
    impl_->Done(r, Status::Ok());
    return r;
  }

  grpc::ServerUnaryReactor* ListClusterNodes(grpc::CallbackServerContext* ctx,
                                             const v1::ListClusterNodesRequest*,
                                             v1::ListClusterNodesResponse* resp) override {
    if (Status a = impl_->Admit(ctx, Access::kRead); !a.ok())
      return ControlServer::Impl::Refuse(ctx, a);
    auto* r = ctx->DefaultReactor();
    if (impl_->options.cluster == nullptr) {
      impl_->Done(r,
                  FailedPrecondition("this node runs alone: spd2 was started without --cluster"));
      return r;
    }
    FillClusterNodes(*impl_->options.cluster, resp);
    impl_->Done(r, Status::Ok());
    return r;
  }

  grpc::ServerUnaryReactor* Calibrate(grpc::CallbackServerContext* ctx,
                                      const v1::CalibrateRequest* req,
                                      v1::CalibrateResponse* resp) override {
    AuditCall audit = impl_->Describe(ctx, "spd.v1.NodeService/Calibrate", *req);
    Status s;
    if (req->seconds_max() < 0 || req->seconds_max() > 300)
      s = InvalidArgument("seconds_max: 0 (15 s) or 1..300, got " +
                          std::to_string(req->seconds_max()));
    if (s.ok() && req->working_set_bytes() != 0 &&
        (req->working_set_bytes() < (16ull << 20) || req->working_set_bytes() > (64ull << 30) ||
         req->working_set_bytes() % 4096 != 0))
      s = InvalidArgument(
          "working_set_bytes: 0 (256 MiB) or a multiple of 4096 from 16 MiB to "
          "64 GiB");
    if (s.ok()) s = impl_->AdmitWrite(ctx, Access::kAdmin);
    if (!s.ok()) return impl_->RefuseAudited(ctx, std::move(audit), s);
    // Admitted first: what this daemon can do is for its admins to learn.
    if (impl_->options.dispatcher == nullptr) {
      impl_->in_flight.fetch_sub(1);
      return impl_->RefuseAudited(
          ctx, std::move(audit),
          FailedPrecondition("this daemon cannot calibrate (no dispatcher)"));
    }
    if (impl_->calibrating.exchange(true)) {
      impl_->in_flight.fetch_sub(1);
      return impl_->RefuseAudited(ctx, std::move(audit),
                                  FailedPrecondition("a calibration is running"));
    }
    auto* r = ctx->DefaultReactor();
    qos::CalibrateOptions o;
    if (req->seconds_max() > 0) o.total_ns = static_cast<uint64_t>(req->seconds_max() * 1e9);
    if (req->working_set_bytes() > 0) o.working_set_bytes = req->working_set_bytes();
    // On a thread of its own (it blocks for the measurement); joined by the next calibration
    // or at Stop.
    ControlServer::Impl* impl = impl_;
    if (impl->calibrator.joinable()) impl->calibrator.join();
    impl->calibrator = std::thread([impl, r, resp, o, audit = std::move(audit)]() mutable {
      NameThisThread("spd-calibrate");
      Status st = impl->Calibrate(o, resp);
      impl->calibrating.store(false);
      impl->FinishAudited(r, std::move(audit), st, true);
    });
    return r;
  }

 private:
  ControlServer::Impl* impl_;
};

// One WatchEvents stream: a cursor into the hub, one write in flight at a time.
class EventWatcher final : public grpc::ServerWriteReactor<v1::Event> {
 public:
  EventWatcher(ControlServer::Impl* impl, uint64_t since, Caller caller)
      : impl_(impl), caller_(std::move(caller)) {
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
    std::optional<v1::Event> e;
    // A tenant sees the events of its own volumes (and those about no volume).
    do {
      e = impl_->events->Next(&next_);
    } while (e && caller_.role == policy::Role::kTenant && !e->volume().empty() &&
             TenantOf(*e) != caller_.tenant);
    if (!e) return;
    ev_ = std::move(*e);
    writing_ = true;
    StartWrite(&ev_);
  }
  // The tenant of an event's volume: as of the event when it carries the volume's state (a
  // deleted volume's is gone from the placements by now), else (intent violations, replication
  // events) the volume's current one.
  std::string TenantOf(const v1::Event& e) {
    if (e.has_volume_info()) return e.volume_info().tenant();
    return impl_->PlacementOf(e.volume()).tenant;
  }
  void End(const grpc::Status& s) {
    if (finished_) return;
    finished_ = true;
    Finish(s);
  }
  ControlServer::Impl* impl_;
  Caller caller_;
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
    Caller caller;
    if (Status a = impl_->Admit(ctx, Access::kRead, &caller); !a.ok()) {
      struct Refused : grpc::ServerWriteReactor<v1::Event> {
        explicit Refused(const Status& s) { Finish(ToGrpc(s)); }
        void OnDone() override { delete this; }
      };
      return new Refused(a);
    }
    impl_->in_flight.fetch_sub(1);  // streams are bounded by kWatchersMax instead
    return new EventWatcher(impl_, req->since_seq(), caller);
  }

 private:
  ControlServer::Impl* impl_;
};

}  // namespace

std::unique_ptr<v1::PoolService::CallbackService> NewPoolService(ControlServer::Impl* impl) {
  return std::make_unique<PoolServiceImpl>(impl);
}
std::unique_ptr<v1::NodeService::CallbackService> NewNodeService(ControlServer::Impl* impl) {
  return std::make_unique<NodeServiceImpl>(impl);
}
std::unique_ptr<v1::EventService::CallbackService> NewEventService(ControlServer::Impl* impl) {
  return std::make_unique<EventServiceImpl>(impl);
}

}  // namespace spd
