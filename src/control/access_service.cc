// The control API's AccessService (api/spd/v1/access.proto): the uid map and API tokens, for
// admins only. Runs on the control worker like the policy services; every change is audited
// (a token's secret never is: only the request, which holds none, and the answer's id).
#include <type_traits>

#include "control/control_internal.h"
#include "control/policy_services.h"
#include "spd/v1/access.grpc.pb.h"

namespace spd {
namespace {

v1::Role RoleToProto(policy::Role r) {
  switch (r) {
    case policy::Role::kViewer:
      return v1::ROLE_VIEWER;
    case policy::Role::kTenant:
      return v1::ROLE_TENANT;
    case policy::Role::kOperator:
      return v1::ROLE_OPERATOR;
    case policy::Role::kAdmin:
      return v1::ROLE_ADMIN;
    case policy::Role::kNone:
      break;
  }
  return v1::ROLE_UNSPECIFIED;
}

Result<policy::Role> RoleFromProto(const std::string& field, v1::Role r) {
  switch (r) {
    case v1::ROLE_VIEWER:
      return policy::Role::kViewer;
    case v1::ROLE_TENANT:
      return policy::Role::kTenant;
    case v1::ROLE_OPERATOR:
      return policy::Role::kOperator;
    case v1::ROLE_ADMIN:
      return policy::Role::kAdmin;
    default:
      return InvalidArgument(field + ": must be viewer, tenant, operator or admin");
  }
}

void Fill(const state::TokenInfo& t, v1::Token* out) {
  out->set_id(t.id);
  out->set_role(RoleToProto(t.role));
  out->set_tenant(t.tenant);
  out->set_description(t.description);
  out->set_created_unix(t.created_unix);
  out->set_expires_unix(t.expires_unix);
}

class AccessServiceImpl final : public v1::AccessService::CallbackService {
 public:
  explicit AccessServiceImpl(ControlServer::Impl* impl) : impl_(impl) {}

  grpc::ServerUnaryReactor* PutUidRole(grpc::CallbackServerContext* ctx,
                                       const v1::PutUidRoleRequest* req,
                                       v1::UidRole* resp) override {
    ControlServer::Impl* impl = impl_;
    return Write(ctx, "spd.v1.AccessService/PutUidRole", *req, [impl, req, resp]() -> Status {
      SPD_ASSIGN_OR_RETURN(policy::Role role, RoleFromProto("entry.role", req->entry().role()));
      state::UidRole e{req->entry().uid(), role, req->entry().tenant()};
      SPD_RETURN_IF_ERROR(impl->store->PutUidRole(e));
      *resp = req->entry();
      return impl->LoadRoles();
    });
  }
  grpc::ServerUnaryReactor* ListUidRoles(grpc::CallbackServerContext* ctx,
                                         const v1::ListUidRolesRequest*,
                                         v1::ListUidRolesResponse* resp) override {
    ControlServer::Impl* impl = impl_;
    return Read(ctx, [impl, resp]() -> Status {
      SPD_ASSIGN_OR_RETURN(std::vector<state::UidRole> all, impl->store->ListUidRoles());
      for (const auto& e : all) {
        v1::UidRole* o = resp->add_entries();
        o->set_uid(e.uid);
        o->set_role(RoleToProto(e.role));
        o->set_tenant(e.tenant);
      }
      return Status::Ok();
    });
  }
  grpc::ServerUnaryReactor* DeleteUidRole(grpc::CallbackServerContext* ctx,
                                          const v1::DeleteUidRoleRequest* req,
                                          v1::DeleteUidRoleResponse*) override {
    ControlServer::Impl* impl = impl_;
    return Write(ctx, "spd.v1.AccessService/DeleteUidRole", *req, [impl, req]() -> Status {
      SPD_RETURN_IF_ERROR(impl->store->DeleteUidRole(req->uid()));
      return impl->LoadRoles();
    });
  }
  grpc::ServerUnaryReactor* CreateToken(grpc::CallbackServerContext* ctx,
                                        const v1::CreateTokenRequest* req,
                                        v1::CreateTokenResponse* resp) override {
    ControlServer::Impl* impl = impl_;
    return Write(ctx, "spd.v1.AccessService/CreateToken", *req, [impl, req, resp]() -> Status {
      SPD_ASSIGN_OR_RETURN(policy::Role role, RoleFromProto("role", req->role()));
      SPD_ASSIGN_OR_RETURN(
          state::NewToken t,
          impl->store->CreateToken(role, req->tenant(), req->description(), req->ttl_seconds()));
      Fill(t.info, resp->mutable_token());
      resp->set_secret(t.token);
      return Status::Ok();
    });
  }
  grpc::ServerUnaryReactor* ListTokens(grpc::CallbackServerContext* ctx,
                                       const v1::ListTokensRequest*,
                                       v1::ListTokensResponse* resp) override {
    ControlServer::Impl* impl = impl_;
    return Read(ctx, [impl, resp]() -> Status {
      SPD_ASSIGN_OR_RETURN(std::vector<state::TokenInfo> all, impl->store->ListTokens());
      for (const auto& t : all) Fill(t, resp->add_tokens());
      return Status::Ok();
    });
  }
  grpc::ServerUnaryReactor* RevokeToken(grpc::CallbackServerContext* ctx,
                                        const v1::RevokeTokenRequest* req,
                                        v1::RevokeTokenResponse*) override {
    ControlServer::Impl* impl = impl_;
    return Write(ctx, "spd.v1.AccessService/RevokeToken", *req,
                 [impl, req]() -> Status { return impl->store->RevokeToken(req->id()); });
  }

 private:
  // Admin only; on the worker.
  template <typename Fn>
  grpc::ServerUnaryReactor* Read(grpc::CallbackServerContext* ctx, Fn fn) {
    if (Status a = impl_->Admit(ctx, Access::kAdmin); !a.ok())
      return ControlServer::Impl::Refuse(ctx, a);
    auto* r = ctx->DefaultReactor();
    ControlServer::Impl* impl = impl_;
    impl_->Enqueue([impl, r, fn] { impl->Done(r, fn()); }, false);
    return r;
  }
  template <typename Fn>
  grpc::ServerUnaryReactor* Write(grpc::CallbackServerContext* ctx, const char* method,
                                  const google::protobuf::Message& req, Fn fn) {
    AuditCall a = impl_->Describe(ctx, method, req);
    if (Status s = impl_->AdmitWrite(ctx, Access::kAdmin); !s.ok())
      return impl_->RefuseAudited(ctx, std::move(a), s);
    auto* r = ctx->DefaultReactor();
    ControlServer::Impl* impl = impl_;
    auto call = std::make_shared<AuditCall>(std::move(a));
    impl_->Enqueue([impl, r, call, fn] { impl->FinishAudited(r, std::move(*call), fn(), true); },
                   false);
    return r;
  }
  ControlServer::Impl* impl_;
};

struct AccessServices : PolicyServices {
  AccessServiceImpl access;
  explicit AccessServices(ControlServer::Impl* i) : access(i) {}
};

}  // namespace

std::unique_ptr<PolicyServices> RegisterAccessService(grpc::ServerBuilder* builder,
                                                      ControlServer::Impl* impl) {
  auto s = std::make_unique<AccessServices>(impl);
  builder->RegisterService(&s->access);
  return s;
}

}  // namespace spd
