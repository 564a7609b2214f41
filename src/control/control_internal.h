// Private to the control server's files: the server's shared state (ControlServer::Impl), the
// helpers its services use, and the counters they share.
#pragma once

#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "control/call_executor.h"

#include "audit/audit_log.h"
#include "common/counters.h"
#include "common/log.h"
#include "control/control_listener.h"
#include "control/control_server.h"
#include "control/event_hub.h"
#include "policy/model.h"
#include "qos/calibrate.h"
#include "spd/v1/events.pb.h"
#include "spd/v1/node.pb.h"
#include "spd/v1/volumes.pb.h"
#include "state/state_store.h"

namespace spd {

namespace control_counters {
extern Counter denied_total;
extern Counter tokens_expired_total;
extern Counter busy_total;
extern Counter audit_dropped_total;
extern Gauge audit_queue;
}  // namespace control_counters
using namespace control_counters;  // NOLINT(google-build-using-namespace)

grpc::Status ToGrpc(const Status& s);
v1::Durability ToProto(Durability d);
// UNSPECIFIED is the default (flush) where `allow_unspecified`.
Result<Durability> FromProto(v1::Durability d, bool allow_unspecified);
Status CheckSize(uint64_t size_bytes);
// Runs `fn` on `reactor` (control-plane code: allocates).
void RunOn(Reactor* reactor, std::function<void()> fn);

// What a call needs (docs/control.md, "Who may call"): the roles that may make it.
enum class Access {
  kRead,         // viewer, tenant (its own volumes only), operator, admin
  kWriteVolume,  // tenant (its own volumes only), operator, admin
  kWritePolicy,  // tenants and storage classes: operator, admin
  kAudit,        // the audit log: operator, admin
  kAdmin,        // the uid map and tokens: admin
};
bool Allowed(policy::Role role, Access need);

// Who a call comes from, as admission found it.
struct Caller {
  policy::Role role = policy::Role::kNone;
  std::string tenant;  // for the tenant role
};

// What the audit log records of one mutating call.
struct AuditCall {
  std::string who;
  std::string method;
  nlohmann::json args;
  std::string traceparent;
};

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

  // The audit log and the worker thread that writes it (an append syncs to disk: not for gRPC's
  // threads, never for a reactor). Once an append failed, the log refuses more and so do
  // mutating calls (fail closed).
  std::unique_ptr<AuditLog> audit;
  // Tenants, classes, volume policies, tokens, uid roles (docs/state.md). Used on the worker
  // only. The volumes' tenant and class are cached for Fill, which runs on the pool's reactor
  // (no SQLite there).
  std::unique_ptr<state::StateStore> store;
  struct Placement {
    std::string tenant;
    std::string storage_class;
  };
  std::mutex meta_mu;
  std::map<std::string, Placement> meta;  // by volume, guarded by meta_mu
  void CachePlacement(const std::string& volume, const Placement* p) {
    std::lock_guard<std::mutex> l(meta_mu);
    if (p) {
      meta[volume] = *p;
    } else {
      meta.erase(volume);
    }
  }
  Placement PlacementOf(const std::string& volume) {
    std::lock_guard<std::mutex> l(meta_mu);
    auto it = meta.find(volume);
    return it == meta.end() ? Placement{} : it->second;
  }
  std::atomic<bool> audit_broken{false};
  std::mutex wmu;
  std::condition_variable wcv;
  std::deque<std::function<void()>> work;  // guarded by wmu
  bool wstop = false;                      // guarded by wmu
  std::thread worker;

  void WorkerLoop() {
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock<std::mutex> l(wmu);
        wcv.wait(l, [&] { return wstop || !work.empty(); });
        if (work.empty()) return;
        fn = std::move(work.front());
        work.pop_front();
        audit_queue.Set(work.size());
      }
      if (options.test_before_worker_job) options.test_before_worker_job();
      fn();
    }
  }
  // False (nothing queued) when `droppable` and the queue is full.
  bool Enqueue(std::function<void()> fn, bool droppable) {
    std::lock_guard<std::mutex> l(wmu);
    if (droppable && work.size() >= kAuditQueueMax) return false;
    work.push_back(std::move(fn));
    audit_queue.Set(work.size());
    wcv.notify_one();
    return true;
  }

  // The token a TCP caller presents: metadata "authorization: Bearer TOKEN".
  static std::string BearerOf(grpc::CallbackServerContext* ctx) {
    auto it = ctx->client_metadata().find("authorization");
    if (it == ctx->client_metadata().end()) return "";
    std::string v(it->second.data(), it->second.size());
    return v.rfind("Bearer ", 0) == 0 ? v.substr(7) : "";
  }
  std::string Who(grpc::CallbackServerContext* ctx) {
    std::optional<PeerCred> p = listener.PeerOf(ctx->peer());
    if (p) return "uid:" + std::to_string(p->uid);
    // A token's id is not secret (listings show it): spd_<id>_<secret>.
    const std::string t = BearerOf(ctx);
    const size_t id_end = state::kTokenPrefix.size() + state::kTokenIdHexChars;
    if (t.size() > id_end && t.rfind(state::kTokenPrefix, 0) == 0)
      return "token:" + t.substr(state::kTokenPrefix.size(), state::kTokenIdHexChars);
    return "unknown (" + ctx->peer() + ")";
  }
  AuditCall Describe(grpc::CallbackServerContext* ctx, const char* method,
                     const google::protobuf::Message& req) {
    AuditCall a;
    a.who = Who(ctx);
    a.method = method;
    std::string json;
    google::protobuf::util::JsonPrintOptions jo;
    jo.preserve_proto_field_names = true;
    if (google::protobuf::util::MessageToJsonString(req, &json, jo).ok())
      a.args = nlohmann::json::parse(json, nullptr, false);
    if (a.args.is_discarded() || !a.args.is_object()) a.args = nlohmann::json::object();
    auto it = ctx->client_metadata().find("traceparent");
    if (it != ctx->client_metadata().end())
      a.traceparent.assign(it->second.data(), it->second.size());
    return a;
  }
  // Appends the call's entry (on the worker) and then finishes it. `admitted`: the call holds an
  // in-flight slot (Done) rather than having been refused before (Refuse).
  void FinishAudited(grpc::ServerUnaryReactor* r, AuditCall a, Status s, bool admitted) {
    auto finish = [this, r, admitted](const Status& st) {
      if (admitted) {
        Done(r, st);
      } else {
        r->Finish(ToGrpc(st));
      }
    };
    auto job = [this, a = std::move(a), s, finish]() mutable {
      AuditEntry e;
      e.who = a.who;
      e.method = a.method;
      e.args = std::move(a.args);
      e.result = s.ok() ? "OK" : s.ToString();
      e.traceparent = a.traceparent;
      Status st = s;
      if (!audit) {
        // Broken at start (damaged): only refusals get here, and they cannot be recorded.
        audit_dropped_total.Add();
      } else if (Status w = audit->Append(e); !w.ok()) {
        if (!audit_broken.exchange(true))
          SPD_LOG_ERROR("audit log: %s: mutating calls are refused from now on",
                        w.ToString().c_str());
        if (s.ok())
          st = Internal("the change was made but could not be recorded in the audit log (" +
                        w.ToString() + "); mutating calls are refused until spd2 restarts");
      }
      finish(st);
    };
    // A refused call's entry may be dropped under a flood; a change's never is.
    const bool droppable = !admitted;
    if (!Enqueue(job, droppable)) {
      audit_dropped_total.Add();
      finish(s);
    }
  }
  // A mutating call refused before it started (invalid, denied, audit broken).
  grpc::ServerUnaryReactor* RefuseAudited(grpc::CallbackServerContext* ctx, AuditCall a,
                                          const Status& s) {
    auto* r = ctx->DefaultReactor();
    FinishAudited(r, std::move(a), s, false);
    return r;
  }
  // Admission for mutating calls: Admit, and the audit log must be writable.
  Status AdmitWrite(grpc::CallbackServerContext* ctx, Access access = Access::kWriteVolume,
                    Caller* caller = nullptr) {
    if (audit_broken.load())
      return Unavailable(
          "the audit log cannot be written: mutating calls are refused until it "
          "is repaired and spd2 restarted (spdctl audit verify)");
    return Admit(ctx, access, caller);
  }

  // Admission: a slot among kCallsInFlightMax and the caller's right to the call.
  // The uid map (docs/state.md), cached: admission reads it on gRPC's threads; the worker
  // changes it (AccessService) together with the store.
  std::mutex roles_mu;
  std::map<uint32_t, state::UidRole> uid_roles;  // guarded by roles_mu
  Status LoadRoles() {
    SPD_ASSIGN_OR_RETURN(std::vector<state::UidRole> all, store->ListUidRoles());
    std::lock_guard<std::mutex> l(roles_mu);
    uid_roles.clear();
    for (const auto& r : all) uid_roles[r.uid] = r;
    return Status::Ok();
  }
  // A tenant caller's new volume is its tenant's from the start: placed in the cache before it
  // is created (so that the creation's event and the answer carry the tenant: a tenant's
  // watcher gets the event), stored on the worker before the answer (OwnNewVolume), the cache
  // undone when the creation failed (UnplaceNewVolume). True: placed here.
  bool PlaceNewVolume(const Caller& c, const std::string& volume) {
    if (c.role != policy::Role::kTenant || volumes->Find(volume)) return false;
    Placement p{c.tenant, ""};
    CachePlacement(volume, &p);
    return true;
  }
  void UnplaceNewVolume(const std::string& volume) {
    if (!volumes->Find(volume)) CachePlacement(volume, nullptr);
  }
  // On the worker: the tenant caller's volume is stored as its tenant's unless it has a policy.
  Status OwnNewVolume(const Caller& c, const std::string& volume, v1::Volume* resp) {
    if (store->GetVolumeMeta(volume).ok()) return Status::Ok();
    Status st = store->PutVolumeMeta(state::VolumeMeta{volume, c.tenant, "", {}});
    if (!st.ok()) {
      CachePlacement(volume, nullptr);  // as the store has it
      return st;
    }
    Placement p{c.tenant, ""};
    CachePlacement(volume, &p);
    resp->set_tenant(c.tenant);
    return st;
  }

  // Who a local uid is: root and the daemon's uid are admins, others what the uid map says.
  // The control socket's callers and NBD's local clients alike (ControlServer::UidMayUseVolume).
  Caller CallerOfUid(uint32_t uid) {
    Caller c;
    if (uid == 0 || uid == daemon_uid) {
      c.role = policy::Role::kAdmin;
      return c;
    }
    std::lock_guard<std::mutex> l(roles_mu);
    auto it = uid_roles.find(uid);
    if (it != uid_roles.end()) {
      c.role = it->second.role;
      c.tenant = it->second.tenant;
    }
    return c;
  }
  // A tenant caller sees only its tenant's volumes; every other role sees all.
  bool Visible(const Caller& c, const std::string& volume) {
    return c.role != policy::Role::kTenant || PlacementOf(volume).tenant == c.tenant;
  }

  Status Admit(grpc::CallbackServerContext* ctx, Access access, Caller* caller = nullptr) {
    if (in_flight.fetch_add(1) >= options.calls_in_flight_max) {
      in_flight.fetch_sub(1);
      busy_total.Add();
      return ResourceExhausted(std::to_string(options.calls_in_flight_max) +
                               " control calls are in flight already; retry");
    }
    std::optional<PeerCred> peer = listener.PeerOf(ctx->peer());
    Caller c;
    if (!peer) {
      // TCP (TLS): the caller is who its API token says.
      const std::string token = BearerOf(ctx);
      Status why = token.empty() ? Unauthenticated(
                                       "no API token: send the metadata 'authorization: Bearer "
                                       "TOKEN' (spdctl token create)")
                                 : Status::Ok();
      if (why.ok()) {
        auto info = store->Authenticate(token);
        if (info.ok()) {
          c.role = info.value().role;
          c.tenant = info.value().tenant;
        } else if (info.status().code() == StatusCode::kUnauthenticated) {
          tokens_expired_total.Add();
          why = info.status();  // "API token expired": the caller holds its secret
        } else {
          why = Unauthenticated("invalid or revoked API token");
        }
      }
      if (!why.ok()) {
        in_flight.fetch_sub(1);
        denied_total.Add();
        return why;
      }
      if (caller) *caller = c;
      if (Allowed(c.role, access)) return Status::Ok();
      in_flight.fetch_sub(1);
      denied_total.Add();
      return PermissionDenied("this token's role (" + std::string(policy::RoleName(c.role)) +
                              ") may not make this call");
    }
    c = CallerOfUid(peer->uid);
    if (caller) *caller = c;
    if (Allowed(c.role, access)) return Status::Ok();
    in_flight.fetch_sub(1);
    denied_total.Add();
    if (c.role == policy::Role::kNone)
      return PermissionDenied("uid " + std::to_string(peer->uid) +
                              " has no role on this daemon (root and the daemon's user are "
                              "admins; others need an entry in the uid map: docs/control.md)");
    return PermissionDenied("uid " + std::to_string(peer->uid) + " (role " +
                            std::string(policy::RoleName(c.role)) + ") may not make this call");
  }
  // Ends an admitted call.
  void Done(grpc::ServerUnaryReactor* r, const Status& s) {
    in_flight.fetch_sub(1);
    r->Finish(ToGrpc(s));
  }
  // Ends a call refused before admission counted it.
  static grpc::ServerUnaryReactor* Refuse(grpc::CallbackServerContext* ctx, const Status& s) {
    auto* r = ctx->DefaultReactor();
    r->Finish(ToGrpc(s));
    return r;
  }

  // A volume's info now, from any thread: the manager's snapshot (size, durability: as of the
  // last change, which the manager made) and the allocation as of this moment.
  VolumeInfo Current(const VolumeHandle& h) {
    VolumeInfo vi = h.info();
    if (Volume* v = h.volume()) vi.allocated_bytes = v->allocated_bytes_now();
    return vi;
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
    const Placement p = PlacementOf(info.name);
    out->set_tenant(p.tenant);
    out->set_storage_class(p.storage_class);
    FillStatus(info.name, out);
  }

  // QoS (qos_bridge.cc; no-ops without a scheduler). The effective intent of `m`'s volume
  // (its class's defaults, overridden by its own) to the scheduler; every volume's; the
  // reservation admission check of a new policy; the status into a volume's message.
  // PushIntent and PushAllIntents use the store: on the worker (or before it runs).
  Status PushIntent(const state::VolumeMeta& m);
  Status PushAllIntents();
  Status AdmitIntent(const std::string& volume, const policy::Intent& effective);
  // NodeService.Calibrate's work (calibration.h), on its own thread: measures, stores the model
  // as DATA_DIR/default.cost.json, hands it to the scheduler, fills `resp`.
  Status Calibrate(const qos::CalibrateOptions& o, v1::CalibrateResponse* resp);
  std::atomic<bool> calibrating{false};
  std::thread calibrator;
  // Replicated creates, promotes and demotes (they wait on etcd and other nodes): one at a
  // time, at most kReplicationCallsQueuedMax waiting (call_executor.h).
  static constexpr size_t kReplicationCallsQueuedMax = 16;
  CallExecutor replication_calls{kReplicationCallsQueuedMax};
  void FillStatus(const std::string& volume, v1::Volume* out);
  // Tenants: a tenant's intent to the scheduler (the sum of its volumes); a deleted tenant's
  // back to the default; every stored tenant's (at start); the admission check of a tenant's
  // reservation ("tenant.intent.reservation").
  void PushTenant(const policy::Tenant& t);
  void ForgetTenant(const std::string& name);
  Status PushAllTenants();
  Status AdmitTenant(const policy::Tenant& t);

  // At start: drops policies of volumes the pool does not have (deleted while the daemon was
  // down, or a crash between the pool's delete and the store's), loads the placement cache,
  // gives the scheduler every tenant's intent and every volume's.
  Status Reconcile() {
    SPD_ASSIGN_OR_RETURN(std::vector<state::VolumeMeta> all, store->ListVolumeMeta());
    for (const state::VolumeMeta& m : all) {
      if (!volumes->Find(m.volume)) {
        SPD_LOG_WARN("state store: dropping the policy of volume %s, which the pool does not have",
                     m.volume.c_str());
        SPD_RETURN_IF_ERROR(store->DeleteVolumeMeta(m.volume));
        continue;
      }
      Placement p{m.tenant, m.storage_class};
      CachePlacement(m.volume, &p);
    }
    SPD_RETURN_IF_ERROR(PushAllTenants());
    return PushAllIntents();
  }

  // A deleted volume's policy goes with it (whoever deleted it: a call here, a replicated
  // volume's deletion in the cluster): its placement at once, its QoS policy and stored meta on
  // the worker (before the answer to a delete called here, which the worker sends after).
  void ForgetDeleted(const std::string& name);  // control_server.cc

  // VolumeManager::Listener (pool's reactor).
  void OnVolumeChanged(const VolumeInfo& info, VolumeManager::Change kind) override {
    v1::Event e;
    switch (kind) {
      case VolumeManager::Change::kCreated:
        e.set_type(v1::EVENT_TYPE_VOLUME_CREATED);
        break;
      case VolumeManager::Change::kDeleted:
        e.set_type(v1::EVENT_TYPE_VOLUME_DELETED);
        ForgetDeleted(info.name);
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

}  // namespace spd
