#include "control/audit_service.h"

#include <optional>

namespace spd {
namespace {

class AuditServiceImpl final : public v1::AuditService::CallbackService {
 public:
  explicit AuditServiceImpl(ControlServer::Impl* impl) : impl_(impl) {}
  grpc::ServerUnaryReactor* GetAuditHead(grpc::CallbackServerContext* ctx,
                                         const v1::GetAuditHeadRequest*,
                                         v1::AuditHead* resp) override {
    if (Status a = impl_->Admit(ctx, Access::kAudit); !a.ok())
      return ControlServer::Impl::Refuse(ctx, a);
    auto* r = ctx->DefaultReactor();
    if (!impl_->audit) {
      impl_->Done(r, Unavailable("the audit log is damaged (spdctl audit verify says where)"));
      return r;
    }
    const AuditHead h = impl_->audit->head();
    resp->set_seq(h.seq);
    resp->set_hash(h.hash);
    impl_->Done(r, Status::Ok());
    return r;
  }
  grpc::ServerUnaryReactor* VerifyAudit(grpc::CallbackServerContext* ctx,
                                        const v1::VerifyAuditRequest* req,
                                        v1::VerifyAuditResponse* resp) override {
    if (Status a = impl_->Admit(ctx, Access::kAudit); !a.ok())
      return ControlServer::Impl::Refuse(ctx, a);
    auto* r = ctx->DefaultReactor();
    ControlServer::Impl* impl = impl_;
    std::optional<AuditHead> anchor;
    if (req->has_anchor()) anchor = AuditHead{req->anchor().seq(), req->anchor().hash()};
    // Reads the whole log: on the worker, not on gRPC's threads.
    impl_->Enqueue(
        [impl, r, resp, anchor] {
          // A damaged log was not opened: check its files directly (nobody appends to it).
          auto rep = impl->audit
                         ? impl->audit->Verify(anchor ? &*anchor : nullptr)
                         : VerifyAuditLog(impl->options.audit_dir, anchor ? &*anchor : nullptr);
          if (!rep.ok()) return impl->Done(r, rep.status());
          resp->set_ok(rep.value().ok);
          resp->set_entries(rep.value().entries);
          resp->set_problem(rep.value().problem);
          resp->set_bad_entry(rep.value().bad_entry);
          if (impl->audit) {
            const AuditHead h = impl->audit->head();
            resp->mutable_head()->set_seq(h.seq);
            resp->mutable_head()->set_hash(h.hash);
          }
          impl->Done(r, Status::Ok());
        },
        false);
    return r;
  }

 private:
  ControlServer::Impl* impl_;
};

}  // namespace

std::unique_ptr<v1::AuditService::CallbackService> NewAuditService(ControlServer::Impl* impl) {
  return std::make_unique<AuditServiceImpl>(impl);
}

}  // namespace spd
