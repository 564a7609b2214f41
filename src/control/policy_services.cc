// The control API's policy services (api/spd/v1/policy.proto): tenants, storage classes and
// volume policies (tenant, class, intent), kept in the state store. Every call runs on the
// control server's worker thread (SQLite syncs to disk: not for gRPC's threads), changes are
// audited like the volume calls, and a volume policy's durability becomes the volume's.
#include "control/policy_services.h"

#include <type_traits>

#include "control/control_internal.h"
#include "control/convert.h"
#include "control/replication_calls.h"
#include "replica/replication_manager.h"
#include "spd/v1/policy.grpc.pb.h"

namespace spd {
namespace {

void Fill(const policy::StorageClass& sc, v1::StorageClass* out) {
  out->set_name(sc.name);
  *out->mutable_defaults() = IntentToProto(sc.defaults);
}

// A volume's policy with its effective intent (the class's defaults, overridden field by field).
Result<v1::VolumePolicy> PolicyOf(state::StateStore* store, const state::VolumeMeta& m) {
  v1::VolumePolicy out;
  out.set_volume(m.volume);
  out.set_tenant(m.tenant);
  out.set_storage_class(m.storage_class);
  *out.mutable_intent() = IntentToProto(m.intent);
  policy::Intent base;
  if (!m.storage_class.empty()) {
    SPD_ASSIGN_OR_RETURN(policy::StorageClass sc, store->GetStorageClass(m.storage_class));
    base = sc.defaults;
  }
  *out.mutable_effective() = IntentToProto(policy::MergeIntent(base, m.intent));
  return out;
}

// The pattern of every call here: admitted (and audited when it changes something), then run
// on the worker, which answers.
class PolicyBase {
 protected:
  explicit PolicyBase(ControlServer::Impl* impl) : impl_(impl) {}
  // `fn(caller)` (or `fn()`) runs on the worker and returns the call's status.
  template <typename Fn>
  grpc::ServerUnaryReactor* Read(grpc::CallbackServerContext* ctx, Fn fn) {
    Caller caller;
    if (Status a = impl_->Admit(ctx, Access::kRead, &caller); !a.ok())
      return ControlServer::Impl::Refuse(ctx, a);
    auto* r = ctx->DefaultReactor();
    ControlServer::Impl* impl = impl_;
    impl_->Enqueue(
        [impl, r, fn, caller] {
          if constexpr (std::is_invocable_v<Fn, const Caller&>) {
            impl->Done(r, fn(caller));
          } else {
            impl->Done(r, fn());
          }
        },
        false);
    return r;
  }
  // `fn(done)` or `fn(caller, done)` runs on the worker and calls done(Status) once (from any
  // thread). Tenants and classes need kWritePolicy; volume policies kWriteVolume.
  template <typename Fn>
  grpc::ServerUnaryReactor* Write(grpc::CallbackServerContext* ctx, const char* method,
                                  const google::protobuf::Message& req, Fn fn,
                                  Access access = Access::kWritePolicy) {
    AuditCall a = impl_->Describe(ctx, method, req);
    Caller caller;
    if (Status s = impl_->AdmitWrite(ctx, access, &caller); !s.ok())
      return impl_->RefuseAudited(ctx, std::move(a), s);
    auto* r = ctx->DefaultReactor();
    ControlServer::Impl* impl = impl_;
    auto call = std::make_shared<AuditCall>(std::move(a));
    impl_->Enqueue(
        [impl, r, call, fn, caller] {
          auto done = [impl, r, call](Status s) {
            impl->FinishAudited(r, std::move(*call), s, true);
          };
          if constexpr (std::is_invocable_v<Fn, const Caller&, decltype(done)>) {
            fn(caller, done);
          } else {
            fn(done);
          }
        },
        false);
    return r;
  }
  ControlServer::Impl* impl_;
};

class TenantServiceImpl final : public v1::TenantService::CallbackService, PolicyBase {
 public:
  explicit TenantServiceImpl(ControlServer::Impl* impl) : PolicyBase(impl) {}
  grpc::ServerUnaryReactor* PutTenant(grpc::CallbackServerContext* ctx,
                                      const v1::PutTenantRequest* req, v1::Tenant* resp) override {
    ControlServer::Impl* impl = impl_;
    return Write(ctx, "spd.v1.TenantService/PutTenant", *req, [impl, req, resp](auto done) {
      auto t = TenantFromProto("tenant", req->tenant());
      if (!t.ok()) return done(t.status());
      // A reservation must fit beside the ones granted (volumes' and other tenants').
      if (Status s = impl->AdmitTenant(t.value()); !s.ok()) return done(s);
      if (Status s = impl->store->PutTenant(t.value()); !s.ok()) return done(s);
      // Its volumes, together, take the new intent at once (docs/qos.md).
      impl->PushTenant(t.value());
      *resp = TenantToProto(t.value());
      done(Status::Ok());
    });
  }
  grpc::ServerUnaryReactor* GetTenant(grpc::CallbackServerContext* ctx,
                                      const v1::GetTenantRequest* req, v1::Tenant* resp) override {
    state::StateStore* store = impl_->store.get();
    return Read(ctx, [store, req, resp](const Caller& c) -> Status {
      if (c.role == policy::Role::kTenant && req->name() != c.tenant)
        return NotFound("no tenant '" + req->name() + "'");
      SPD_ASSIGN_OR_RETURN(policy::Tenant t, store->GetTenant(req->name()));
      *resp = TenantToProto(t);
      return Status::Ok();
    });
  }
  grpc::ServerUnaryReactor* ListTenants(grpc::CallbackServerContext* ctx,
                                        const v1::ListTenantsRequest*,
                                        v1::ListTenantsResponse* resp) override {
    state::StateStore* store = impl_->store.get();
    return Read(ctx, [store, resp](const Caller& c) -> Status {
      SPD_ASSIGN_OR_RETURN(std::vector<policy::Tenant> ts, store->ListTenants());
      for (const auto& t : ts) {
        if (c.role != policy::Role::kTenant || t.name == c.tenant)
          *resp->add_tenants() = TenantToProto(t);
      }
      return Status::Ok();
    });
  }
  grpc::ServerUnaryReactor* DeleteTenant(grpc::CallbackServerContext* ctx,
                                         const v1::DeleteTenantRequest* req,
                                         v1::DeleteTenantResponse*) override {
    ControlServer::Impl* impl = impl_;
    return Write(ctx, "spd.v1.TenantService/DeleteTenant", *req, [impl, req](auto done) {
      Status s = impl->store->DeleteTenant(req->name());
      // Gone from the store: back to the default in the scheduler (no volume names it now).
      if (s.ok()) impl->ForgetTenant(req->name());
      done(s);
    });
  }
};

class StorageClassServiceImpl final : public v1::StorageClassService::CallbackService, PolicyBase {
 public:
  explicit StorageClassServiceImpl(ControlServer::Impl* impl) : PolicyBase(impl) {}
  grpc::ServerUnaryReactor* PutStorageClass(grpc::CallbackServerContext* ctx,
                                            const v1::PutStorageClassRequest* req,
                                            v1::StorageClass* resp) override {
    state::StateStore* store = impl_->store.get();
    ControlServer::Impl* impl = impl_;
    return Write(ctx, "spd.v1.StorageClassService/PutStorageClass", *req,
                 [impl, store, req, resp](auto done) {
                   const v1::StorageClass& in = req->storage_class();
                   if (Status s = policy::ValidateName("storage_class.name", in.name()); !s.ok())
                     return done(s);
                   auto intent = IntentFromProto("storage_class.defaults", in.defaults());
                   if (!intent.ok()) return done(intent.status());
                   policy::StorageClass sc{in.name(), intent.value()};
                   Status s = store->PutStorageClass(sc);
                   if (s.ok()) Fill(sc, resp);
                   // The class's volumes take its new defaults (a reservation raised here is
                   // not admitted again: docs/qos.md).
                   if (s.ok()) s = impl->PushAllIntents();
                   done(s);
                 });
  }
  grpc::ServerUnaryReactor* GetStorageClass(grpc::CallbackServerContext* ctx,
                                            const v1::GetStorageClassRequest* req,
                                            v1::StorageClass* resp) override {
    state::StateStore* store = impl_->store.get();
    return Read(ctx, [store, req, resp]() -> Status {
      SPD_ASSIGN_OR_RETURN(policy::StorageClass sc, store->GetStorageClass(req->name()));
      Fill(sc, resp);
      return Status::Ok();
    });
  }
  grpc::ServerUnaryReactor* ListStorageClasses(grpc::CallbackServerContext* ctx,
                                               const v1::ListStorageClassesRequest*,
                                               v1::ListStorageClassesResponse* resp) override {
    state::StateStore* store = impl_->store.get();
    return Read(ctx, [store, resp]() -> Status {
      SPD_ASSIGN_OR_RETURN(std::vector<policy::StorageClass> all, store->ListStorageClasses());
      for (const auto& sc : all) Fill(sc, resp->add_storage_classes());
      return Status::Ok();
    });
  }
  grpc::ServerUnaryReactor* DeleteStorageClass(grpc::CallbackServerContext* ctx,
                                               const v1::DeleteStorageClassRequest* req,
                                               v1::DeleteStorageClassResponse*) override {
    state::StateStore* store = impl_->store.get();
    return Write(ctx, "spd.v1.StorageClassService/DeleteStorageClass", *req,
                 [store, req](auto done) { done(store->DeleteStorageClass(req->name())); });
  }
};

class IntentServiceImpl final : public v1::IntentService::CallbackService, PolicyBase {
 public:
  explicit IntentServiceImpl(ControlServer::Impl* impl) : PolicyBase(impl) {}
  grpc::ServerUnaryReactor* SetVolumePolicy(grpc::CallbackServerContext* ctx,
                                            const v1::SetVolumePolicyRequest* req,
                                            v1::VolumePolicy* resp) override {
    ControlServer::Impl* impl = impl_;
    return Write(
        ctx, "spd.v1.IntentService/SetVolumePolicy", *req,
        [impl, req, resp](const Caller& c, auto done) {
          v1::VolumePolicy in = req->policy();
          if (c.role == policy::Role::kTenant) {
            // A tenant sets the policies of its own volumes, and cannot give them away.
            if (!impl->Visible(c, in.volume()))
              return done(NotFound("no volume '" + in.volume() + "'"));
            if (!in.tenant().empty() && in.tenant() != c.tenant)
              return done(PermissionDenied(
                  "policy.tenant: a tenant cannot move a volume to another tenant"));
            // Copies take other nodes' space: a tenant chooses a storage class that has a count.
            if (in.intent().has_replicas())
              return done(PermissionDenied(
                  "policy.intent.replicas: a tenant does not set a replica count; choose a "
                  "storage class that has one"));
            in.set_tenant(c.tenant);
          }
          if (Status s = policy::ValidateName("policy.volume", in.volume()); !s.ok())
            return done(s);
          if (!in.tenant().empty()) {
            if (Status s = policy::ValidateName("policy.tenant", in.tenant()); !s.ok())
              return done(s);
          }
          if (!in.storage_class().empty()) {
            Status s = policy::ValidateName("policy.storage_class", in.storage_class());
            if (!s.ok()) return done(s);
          }
          auto intent = IntentFromProto("policy.intent", in.intent());
          if (!intent.ok()) return done(intent.status());
          std::shared_ptr<VolumeHandle> h = impl->volumes->Find(in.volume());
          if (!h) return done(NotFound("no volume '" + in.volume() + "'"));
          state::VolumeMeta m{in.volume(), in.tenant(), in.storage_class(), intent.value()};
          const bool replicated = IsReplicated(*impl, m.volume);
          {
            // A reservation must fit beside the ones granted (admission control).
            // (An unknown class: PutVolumeMeta below says so.)
            auto eff = PolicyOf(impl->store.get(), m);
            auto effective = eff.ok() ? IntentFromProto("policy.intent", eff.value().effective())
                                      : Result<policy::Intent>(eff.status());
            if (effective.ok()) {
              if (Status s = impl->AdmitIntent(m.volume, effective.value()); !s.ok())
                return done(s);
              // A replica count: a replicated volume's follows it, a local volume's of 2 or
              // more makes it replicated (below); a replicated one does not become local.
              if (const std::optional<uint32_t> n = effective.value().replicas) {
                if (*n >= 2 && !replicated && impl->options.replication == nullptr)
                  return done(FailedPrecondition(
                      "policy.intent.replicas: '" + m.volume +
                      "' is a local volume and this node runs without a cluster (--cluster): "
                      "it has no other copies"));
                if (*n == 1 && replicated)
                  return done(FailedPrecondition("policy.intent.replicas: '" + m.volume +
                                                 "' is a replicated volume: 2 copies at least"));
              }
            }
          }
          if (Status s = impl->store->PutVolumeMeta(m); !s.ok()) return done(s);
          if (Status s = impl->PushIntent(m); !s.ok()) return done(s);
          ControlServer::Impl::Placement p{m.tenant, m.storage_class};
          impl->CachePlacement(m.volume, &p);
          auto pol = PolicyOf(impl->store.get(), m);
          if (!pol.ok()) return done(pol.status());
          *resp = pol.value();
          // A replica count in the effective intent is a replicated volume's number of copies,
          // and makes a local volume replicated with that many (replication_convert.cc), after
          // its durability (below).
          std::function<void(Status)> then = [done](Status s) { done(s); };
          if (resp->effective().has_replicas() && (replicated || resp->effective().replicas() >= 2))
            then = [impl, name = m.volume, n = resp->effective().replicas(), done](Status s) {
              if (!s.ok()) return done(s);
              RunReplicationCall(
                  impl, [name, n](ReplicationManager* rm) { return rm->SetReplicaCount(name, n); },
                  [done](Status s2) { done(s2); });
            };
          // A durability in the effective intent is the volume's durability.
          const v1::Durability want = resp->effective().durability();
          if (want == v1::DURABILITY_UNSPECIFIED || want == spd::ToProto(h->info().durability))
            return then(Status::Ok());
          // A replicated volume's on every copy, through its record in etcd (the copy here
          // alone would be set back to the record's at the next reconciliation).
          const Durability d = spd::FromProto(want, false).value();
          if (replicated)
            return RunReplicationCall(
                impl,
                [name = m.volume, d](ReplicationManager* rm) { return rm->SetDurability(name, d); },
                then);
          impl->volumes->SetDurability(m.volume, d, then);
        },
        Access::kWriteVolume);
  }
  grpc::ServerUnaryReactor* GetVolumePolicy(grpc::CallbackServerContext* ctx,
                                            const v1::GetVolumePolicyRequest* req,
                                            v1::VolumePolicy* resp) override {
    ControlServer::Impl* impl = impl_;
    return Read(ctx, [impl, req, resp](const Caller& c) -> Status {
      if (!impl->volumes->Find(req->volume()) || !impl->Visible(c, req->volume()))
        return NotFound("no volume '" + req->volume() + "'");
      auto m = impl->store->GetVolumeMeta(req->volume());
      if (!m.ok() && m.status().code() != StatusCode::kNotFound) return m.status();
      state::VolumeMeta meta;  // none stored: no tenant, no class, no intent of its own
      meta.volume = req->volume();
      if (m.ok()) meta = m.value();
      SPD_ASSIGN_OR_RETURN(*resp, PolicyOf(impl->store.get(), meta));
      return Status::Ok();
    });
  }
  grpc::ServerUnaryReactor* ListVolumePolicies(grpc::CallbackServerContext* ctx,
                                               const v1::ListVolumePoliciesRequest*,
                                               v1::ListVolumePoliciesResponse* resp) override {
    ControlServer::Impl* impl = impl_;
    return Read(ctx, [impl, resp](const Caller& c) -> Status {
      SPD_ASSIGN_OR_RETURN(std::vector<state::VolumeMeta> all, impl->store->ListVolumeMeta());
      for (const auto& m : all) {
        if (c.role == policy::Role::kTenant && m.tenant != c.tenant) continue;
        SPD_ASSIGN_OR_RETURN(v1::VolumePolicy p, PolicyOf(impl->store.get(), m));
        *resp->add_policies() = std::move(p);
      }
      return Status::Ok();
    });
  }
};

struct PolicyServicesImpl : PolicyServices {
  TenantServiceImpl tenants;
  StorageClassServiceImpl classes;
  IntentServiceImpl intents;
  explicit PolicyServicesImpl(ControlServer::Impl* i) : tenants(i), classes(i), intents(i) {}
};

}  // namespace

std::unique_ptr<PolicyServices> RegisterPolicyServices(grpc::ServerBuilder* builder,
                                                       ControlServer::Impl* impl) {
  auto s = std::make_unique<PolicyServicesImpl>(impl);
  builder->RegisterService(&s->tenants);
  builder->RegisterService(&s->classes);
  builder->RegisterService(&s->intents);
  return s;
}

}  // namespace spd
