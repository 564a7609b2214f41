// spdctl tenant|class|policy|apply|diff: the policy side of the control API (policy.proto) and
// declarative configuration (docs/apply.md).
#include "spdctl/commands.h"

#include <fstream>
#include <map>
#include <memory>
#include <sstream>

#include "apply/apply_file.h"
#include "apply/plan.h"
#include "control/convert.h"
#include "policy/model.h"

namespace spd::ctl {
namespace {

// Intent fields as flags (the same names as the apply file's keys, as flags).
struct IntentFlags {
  std::string latency;  // PCT:US, e.g. 99:2000
  uint64_t reserve_iops = 0, limit_iops = 0;
  std::string reserve_bps, limit_bps;
  uint32_t weight = 0, replicas = 0;
  std::string priority, durability;

  // `tenant`: only the flags a tenant's intent may have (no latency target, no durability);
  // its rates are its volumes' together.
  void Add(CLI::App* c, bool tenant = false) {
    const std::string sum = tenant ? " (its volumes together)" : "";
    if (!tenant)
      c->add_option("--latency-target", latency,
                    "PERCENTILE:MICROSECONDS, e.g. 99:2000 for \"p99 under 2 ms\"");
    c->add_option("--reserve-iops", reserve_iops, "Reservation: at least this many IOPS" + sum);
    c->add_option("--reserve-bps", reserve_bps,
                  "Reservation: at least this many bytes/s (200M)" + sum);
    c->add_option("--limit-iops", limit_iops, "Limit: at most this many IOPS" + sum);
    c->add_option("--limit-bps", limit_bps, "Limit: at most this many bytes/s (200M)" + sum);
    c->add_option("--weight", weight,
                  "Share of what is left after reservations, 1-10000 "
                  "(default 100)");
    c->add_option("--priority", priority, "standard, critical or background")
        ->check(CLI::IsMember({"standard", "critical", "background"}));
    if (!tenant)
      c->add_option("--durability", durability, "flush, sync or none")
          ->check(CLI::IsMember({"flush", "sync", "none"}));
    if (!tenant)
      c->add_option("--replicas", replicas,
                    "Copies on the nodes of the cluster, 1-9: a replicated volume's number of "
                    "copies follows it; on the node holding a local volume, 2 or more makes it "
                    "replicated while it serves, as volume set-replicas does (spd2 --cluster; "
                    "docs/replication.md)");
  }
  // Builds the intent (only what was given); errors name the flag.
  Result<v1::Intent> Build() const {
    policy::Intent in;
    if (!latency.empty()) {
      const size_t c = latency.find(':');
      try {
        if (c == std::string::npos) throw std::invalid_argument("no colon");
        in.latency = policy::LatencyTarget{std::stod(latency.substr(0, c)),
                                           std::stoull(latency.substr(c + 1))};
      } catch (...) {
        return InvalidArgument("--latency-target: wants PERCENTILE:MICROSECONDS (99:2000), got '" +
                               latency + "'");
      }
    }
    if (reserve_iops || !reserve_bps.empty()) {
      policy::Rate r{reserve_iops, 0};
      if (!reserve_bps.empty()) {
        SPD_ASSIGN_OR_RETURN(r.bytes_per_second, policy::ParseSize("--reserve-bps", reserve_bps));
      }
      in.reservation = r;
    }
    if (limit_iops || !limit_bps.empty()) {
      policy::Rate r{limit_iops, 0};
      if (!limit_bps.empty()) {
        SPD_ASSIGN_OR_RETURN(r.bytes_per_second, policy::ParseSize("--limit-bps", limit_bps));
      }
      in.limit = r;
    }
    if (weight) in.weight = weight;
    if (!priority.empty()) in.priority = policy::ParsePriorityClass(priority);
    if (!durability.empty()) in.durability = policy::ParseDurability(durability);
    if (replicas) in.replicas = replicas;
    SPD_RETURN_IF_ERROR(policy::ValidateIntent("intent", in));
    return IntentToProto(in);
  }
};

int Usage(const Status& s) {
  std::fprintf(stderr, "spdctl: %s\n", std::string(s.message()).c_str());
  return kExitUsage;
}

// The daemon's current policy state, as the planner wants it.
Result<apply::CurrentState> FetchState(Client& c, grpc::Status* rpc) {
  apply::CurrentState cur;
  {
    v1::ListTenantsResponse r;
    grpc::ClientContext ctx;
    c.Prepare(&ctx);
    *rpc = c.tenants->ListTenants(&ctx, v1::ListTenantsRequest(), &r);
    if (!rpc->ok()) return Internal("rpc");
    for (const auto& t : r.tenants()) {
      SPD_ASSIGN_OR_RETURN(policy::Intent in, IntentFromProto("intent", t.intent()));
      cur.tenants.push_back(policy::Tenant{t.name(), in});
    }
  }
  {
    v1::ListStorageClassesResponse r;
    grpc::ClientContext ctx;
    c.Prepare(&ctx);
    *rpc = c.classes->ListStorageClasses(&ctx, v1::ListStorageClassesRequest(), &r);
    if (!rpc->ok()) return Internal("rpc");
    for (const auto& sc : r.storage_classes()) {
      SPD_ASSIGN_OR_RETURN(policy::Intent in, IntentFromProto("defaults", sc.defaults()));
      cur.classes.push_back(policy::StorageClass{sc.name(), in});
    }
  }
  std::map<std::string, v1::VolumePolicy> pols;
  {
    v1::ListVolumePoliciesResponse r;
    grpc::ClientContext ctx;
    c.Prepare(&ctx);
    *rpc = c.intents->ListVolumePolicies(&ctx, v1::ListVolumePoliciesRequest(), &r);
    if (!rpc->ok()) return Internal("rpc");
    for (const auto& p : r.policies()) pols[p.volume()] = p;
  }
  std::string token;
  for (int page = 0; page < 100000; ++page) {
    v1::ListVolumesRequest req;
    req.set_page_token(token);
    v1::ListVolumesResponse r;
    grpc::ClientContext ctx;
    c.Prepare(&ctx);
    *rpc = c.volumes->ListVolumes(&ctx, req, &r);
    if (!rpc->ok()) return Internal("rpc");
    for (const auto& v : r.volumes()) {
      apply::CurrentState::Volume cv;
      cv.name = v.name();
      cv.size_bytes = v.size_bytes();
      auto it = pols.find(v.name());
      if (it != pols.end()) {
        cv.tenant = it->second.tenant();
        cv.storage_class = it->second.storage_class();
        SPD_ASSIGN_OR_RETURN(cv.intent, IntentFromProto("intent", it->second.intent()));
      }
      cur.volumes.push_back(std::move(cv));
    }
    token = r.next_page_token();
    if (token.empty()) break;
  }
  return cur;
}

// Carries out a plan, in its order; stops at the first refusal.
grpc::Status Execute(Client& c, const apply::Plan& plan, const apply::DesiredState& want) {
  std::map<std::string, const apply::DesiredVolume*> vols;
  std::map<std::string, const apply::DesiredStorageClass*> classes;
  std::map<std::string, const apply::DesiredTenant*> tenants;
  for (const auto& t : want.tenants) tenants[t.t.name] = &t;
  for (const auto& v : want.volumes) vols[v.name] = &v;
  for (const auto& sc : want.classes) classes[sc.sc.name] = &sc;
  for (const apply::Change& ch : plan.changes) {
    grpc::ClientContext ctx;
    c.Prepare(&ctx);
    grpc::Status s;
    using Op = apply::Change::Op;
    if (ch.kind == "tenant") {
      if (ch.op == Op::kDelete) {
        v1::DeleteTenantRequest req;
        req.set_name(ch.name);
        v1::DeleteTenantResponse r;
        s = c.tenants->DeleteTenant(&ctx, req, &r);
      } else {
        v1::PutTenantRequest req;
        *req.mutable_tenant() = TenantToProto(tenants.at(ch.name)->t);
        v1::Tenant r;
        s = c.tenants->PutTenant(&ctx, req, &r);
      }
    } else if (ch.kind == "storageclass") {
      if (ch.op == Op::kDelete) {
        v1::DeleteStorageClassRequest req;
        req.set_name(ch.name);
        v1::DeleteStorageClassResponse r;
        s = c.classes->DeleteStorageClass(&ctx, req, &r);
      } else {
        v1::PutStorageClassRequest req;
        req.mutable_storage_class()->set_name(ch.name);
        *req.mutable_storage_class()->mutable_defaults() =
            IntentToProto(classes.at(ch.name)->sc.defaults);
        v1::StorageClass r;
        s = c.classes->PutStorageClass(&ctx, req, &r);
      }
    } else if (ch.kind == "volume") {
      if (ch.op == Op::kDelete) {
        v1::DeleteVolumeRequest req;
        req.set_name(ch.name);
        v1::DeleteVolumeResponse r;
        s = c.volumes->DeleteVolume(&ctx, req, &r);
      } else {
        const apply::DesiredVolume& v = *vols.at(ch.name);
        if (ch.op == Op::kCreate) {
          v1::CreateVolumeRequest req;
          req.set_name(v.name);
          req.set_size_bytes(v.size_bytes);
          // Its effective replica count (its own, else its class's: the file's, else the
          // server's) decides whether it is created replicated.
          std::optional<uint32_t> copies = v.intent.replicas;
          if (!copies && !v.storage_class.empty()) {
            if (auto it = classes.find(v.storage_class); it != classes.end()) {
              copies = it->second->sc.defaults.replicas;
            } else {
              grpc::ClientContext cctx;
              c.Prepare(&cctx);
              v1::GetStorageClassRequest creq;
              creq.set_name(v.storage_class);
              v1::StorageClass sc;
              if (c.classes->GetStorageClass(&cctx, creq, &sc).ok() && sc.defaults().has_replicas())
                copies = sc.defaults().replicas();
            }
          }
          if (copies && *copies > 1) req.set_replicas(*copies);
          v1::Volume r;
          s = c.volumes->CreateVolume(&ctx, req, &r);
        } else {
          v1::ResizeVolumeRequest req;  // to the current size: no change, no commit
          req.set_name(v.name);
          req.set_size_bytes(v.size_bytes);
          v1::Volume r;
          s = c.volumes->ResizeVolume(&ctx, req, &r);
        }
        if (s.ok()) {
          grpc::ClientContext pctx;
          c.Prepare(&pctx);
          v1::SetVolumePolicyRequest req;
          req.mutable_policy()->set_volume(v.name);
          req.mutable_policy()->set_tenant(v.tenant);
          req.mutable_policy()->set_storage_class(v.storage_class);
          *req.mutable_policy()->mutable_intent() = IntentToProto(v.intent);
          v1::VolumePolicy r;
          s = c.intents->SetVolumePolicy(&pctx, req, &r);
        }
      }
    }
    if (!s.ok())
      return grpc::Status(s.error_code(), ch.kind + " " + ch.name + ": " + s.error_message());
  }
  return grpc::Status::OK;
}

}  // namespace

void AddPolicyCommands(CLI::App* app, const std::function<Client&()>& C, int* rc) {
  // Shared option storage: one subcommand runs per invocation.
  auto name = std::make_shared<std::string>();
  auto tenant = std::make_shared<std::string>();
  auto sclass = std::make_shared<std::string>();
  auto flags = std::make_shared<IntentFlags>();

  // ---- tenant ----
  CLI::App* ten = app->add_subcommand(
      "tenant", "Tenants: who owns volumes, and the intent of their volumes together");
  ten->require_subcommand(1);
  CLI::App* tp = ten->add_subcommand(
      "put",
      "Create a tenant or replace its intent (what is not given is unset); the intent applies "
      "to the sum of its volumes");
  tp->add_option("name", *name, "Tenant name")->required();
  flags->Add(tp, /*tenant=*/true);
  tp->callback([=] {
    auto in = flags->Build();
    if (!in.ok()) return void(*rc = Usage(in.status()));
    v1::PutTenantRequest req;
    req.mutable_tenant()->set_name(*name);
    *req.mutable_tenant()->mutable_intent() = in.value();
    v1::Tenant r;
    grpc::ClientContext ctx;
    C().Prepare(&ctx);
    grpc::Status s = C().tenants->PutTenant(&ctx, req, &r);
    *rc = s.ok() ? C().Print(TenantListDoc({r})) : C().Fail(s);
  });
  CLI::App* tg = ten->add_subcommand("get", "Show a tenant and its intent");
  tg->add_option("name", *name, "Tenant name")->required();
  tg->callback([=] {
    v1::GetTenantRequest req;
    req.set_name(*name);
    v1::Tenant r;
    grpc::ClientContext ctx;
    C().Prepare(&ctx);
    grpc::Status s = C().tenants->GetTenant(&ctx, req, &r);
    *rc = s.ok() ? C().Print(TenantDoc(r)) : C().Fail(s);
  });
  ten->add_subcommand("list", "List tenants")->callback([=] {
    v1::ListTenantsResponse r;
    grpc::ClientContext ctx;
    C().Prepare(&ctx);
    grpc::Status s = C().tenants->ListTenants(&ctx, v1::ListTenantsRequest(), &r);
    *rc = s.ok() ? C().Print(TenantListDoc({r.tenants().begin(), r.tenants().end()})) : C().Fail(s);
  });
  CLI::App* td = ten->add_subcommand(
      "delete", "Delete a tenant (refused while a volume, token or uid role names it)");
  td->add_option("name", *name, "Tenant name")->required();
  td->callback([=] {
    v1::DeleteTenantRequest req;
    req.set_name(*name);
    v1::DeleteTenantResponse r;
    grpc::ClientContext ctx;
    C().Prepare(&ctx);
    grpc::Status s = C().tenants->DeleteTenant(&ctx, req, &r);
    if (!s.ok()) return void(*rc = C().Fail(s));
    if (C().output() == Output::kTable) {
      std::printf("deleted tenant %s\n", name->c_str());
    } else {
      C().Print(DeletedDoc(*name));
    }
    *rc = kExitOk;
  });

  // ---- class ----
  CLI::App* cls = app->add_subcommand("class", "Storage classes: named default intents");
  cls->require_subcommand(1);
  CLI::App* cp = cls->add_subcommand("put", "Create or replace a storage class");
  cp->add_option("name", *name, "Class name")->required();
  flags->Add(cp);
  cp->callback([=] {
    auto in = flags->Build();
    if (!in.ok()) return void(*rc = Usage(in.status()));
    v1::PutStorageClassRequest req;
    req.mutable_storage_class()->set_name(*name);
    *req.mutable_storage_class()->mutable_defaults() = in.value();
    v1::StorageClass r;
    grpc::ClientContext ctx;
    C().Prepare(&ctx);
    grpc::Status s = C().classes->PutStorageClass(&ctx, req, &r);
    *rc = s.ok() ? C().Print(StorageClassDoc(r)) : C().Fail(s);
  });
  CLI::App* cg = cls->add_subcommand("get", "Show a storage class");
  cg->add_option("name", *name, "Class name")->required();
  cg->callback([=] {
    v1::GetStorageClassRequest req;
    req.set_name(*name);
    v1::StorageClass r;
    grpc::ClientContext ctx;
    C().Prepare(&ctx);
    grpc::Status s = C().classes->GetStorageClass(&ctx, req, &r);
    *rc = s.ok() ? C().Print(StorageClassDoc(r)) : C().Fail(s);
  });
  cls->add_subcommand("list", "List storage classes")->callback([=] {
    v1::ListStorageClassesResponse r;
    grpc::ClientContext ctx;
    C().Prepare(&ctx);
    grpc::Status s = C().classes->ListStorageClasses(&ctx, v1::ListStorageClassesRequest(), &r);
    *rc = s.ok() ? C().Print(StorageClassListDoc(
                       {r.storage_classes().begin(), r.storage_classes().end()}))
                 : C().Fail(s);
  });
  CLI::App* cd = cls->add_subcommand("delete", "Delete a storage class (refused while in use)");
  cd->add_option("name", *name, "Class name")->required();
  cd->callback([=] {
    v1::DeleteStorageClassRequest req;
    req.set_name(*name);
    v1::DeleteStorageClassResponse r;
    grpc::ClientContext ctx;
    C().Prepare(&ctx);
    grpc::Status s = C().classes->DeleteStorageClass(&ctx, req, &r);
    if (!s.ok()) return void(*rc = C().Fail(s));
    if (C().output() == Output::kTable) {
      std::printf("deleted storage class %s\n", name->c_str());
    } else {
      C().Print(DeletedDoc(*name));
    }
    *rc = kExitOk;
  });

  // ---- policy ----
  CLI::App* pol = app->add_subcommand(
      "policy", "A volume's tenant, storage class and intent (enforced with spd2 --qos on)");
  pol->require_subcommand(1);
  CLI::App* ps =
      pol->add_subcommand("set", "Set a volume's policy (replaces it: what is not given is unset)");
  ps->add_option("volume", *name, "Volume name")->required();
  ps->add_option("--tenant", *tenant, "Owning tenant (must exist)");
  ps->add_option("--class", *sclass, "Storage class whose defaults apply (must exist)");
  flags->Add(ps);
  ps->callback([=] {
    auto in = flags->Build();
    if (!in.ok()) return void(*rc = Usage(in.status()));
    v1::SetVolumePolicyRequest req;
    req.mutable_policy()->set_volume(*name);
    req.mutable_policy()->set_tenant(*tenant);
    req.mutable_policy()->set_storage_class(*sclass);
    *req.mutable_policy()->mutable_intent() = in.value();
    v1::VolumePolicy r;
    grpc::ClientContext ctx;
    C().Prepare(&ctx);
    grpc::Status s = C().intents->SetVolumePolicy(&ctx, req, &r);
    *rc = s.ok() ? C().Print(VolumePolicyDoc(r)) : C().Fail(s);
  });
  CLI::App* pg = pol->add_subcommand("get", "Show a volume's policy and its effective intent");
  pg->add_option("volume", *name, "Volume name")->required();
  pg->callback([=] {
    v1::GetVolumePolicyRequest req;
    req.set_volume(*name);
    v1::VolumePolicy r;
    grpc::ClientContext ctx;
    C().Prepare(&ctx);
    grpc::Status s = C().intents->GetVolumePolicy(&ctx, req, &r);
    *rc = s.ok() ? C().Print(VolumePolicyDoc(r)) : C().Fail(s);
  });
  pol->add_subcommand("list", "List volume policies")->callback([=] {
    v1::ListVolumePoliciesResponse r;
    grpc::ClientContext ctx;
    C().Prepare(&ctx);
    grpc::Status s = C().intents->ListVolumePolicies(&ctx, v1::ListVolumePoliciesRequest(), &r);
    *rc = s.ok() ? C().Print(VolumePolicyListDoc({r.policies().begin(), r.policies().end()}))
                 : C().Fail(s);
  });

  // ---- access (uid map), token ----
  auto uid = std::make_shared<uint32_t>(0);
  auto role = std::make_shared<std::string>();
  auto descr = std::make_shared<std::string>();
  auto role_of = [](const std::string& r) {
    if (r == "viewer") return v1::ROLE_VIEWER;
    if (r == "tenant") return v1::ROLE_TENANT;
    if (r == "operator") return v1::ROLE_OPERATOR;
    if (r == "admin") return v1::ROLE_ADMIN;
    return v1::ROLE_UNSPECIFIED;
  };
  const std::vector<std::string> roles = {"viewer", "tenant", "operator", "admin"};
  CLI::App* acc = app->add_subcommand(
      "access", "The uid map: what local users other than root may do (admins only)");
  acc->require_subcommand(1);
  CLI::App* as = acc->add_subcommand("set", "Give a uid a role (tenant: with --tenant)");
  as->add_option("uid", *uid, "The user's numeric uid")->required();
  as->add_option("--role", *role, "viewer, tenant, operator or admin")
      ->required()
      ->check(CLI::IsMember(roles));
  as->add_option("--tenant", *tenant, "The tenant, for the tenant role");
  as->callback([=] {
    v1::PutUidRoleRequest req;
    req.mutable_entry()->set_uid(*uid);
    req.mutable_entry()->set_role(role_of(*role));
    req.mutable_entry()->set_tenant(*tenant);
    v1::UidRole r;
    grpc::ClientContext ctx;
    C().Prepare(&ctx);
    grpc::Status s = C().access->PutUidRole(&ctx, req, &r);
    if (s.ok())
      std::printf("uid %u: %s %s\n", r.uid(), RoleText(r.role()).c_str(), r.tenant().c_str());
    *rc = s.ok() ? kExitOk : C().Fail(s);
  });
  acc->add_subcommand("list", "List the uid map")->callback([=] {
    v1::ListUidRolesResponse r;
    grpc::ClientContext ctx;
    C().Prepare(&ctx);
    grpc::Status s = C().access->ListUidRoles(&ctx, v1::ListUidRolesRequest(), &r);
    if (!s.ok()) return void(*rc = C().Fail(s));
    *rc = C().Print(UidRoleListDoc({r.entries().begin(), r.entries().end()}));
  });
  CLI::App* adel = acc->add_subcommand("delete", "Take a uid's role away");
  adel->add_option("uid", *uid, "The user's numeric uid")->required();
  adel->callback([=] {
    v1::DeleteUidRoleRequest req;
    req.set_uid(*uid);
    v1::DeleteUidRoleResponse r;
    grpc::ClientContext ctx;
    C().Prepare(&ctx);
    grpc::Status s = C().access->DeleteUidRole(&ctx, req, &r);
    *rc = s.ok() ? kExitOk : C().Fail(s);
  });
  CLI::App* tok = app->add_subcommand("token", "API tokens (admins only; for TCP callers)");
  tok->require_subcommand(1);
  CLI::App* tc =
      tok->add_subcommand("create", "Create a token; its secret is printed once and never stored");
  tc->add_option("--role", *role, "viewer, tenant, operator or admin")
      ->required()
      ->check(CLI::IsMember(roles));
  tc->add_option("--tenant", *tenant, "The tenant, for the tenant role");
  tc->add_option("--description", *descr, "What the token is for");
  auto ttl = std::make_shared<std::string>();
  tc->add_option("--ttl", *ttl,
                 "Expire this long after creation: 30s, 15m, 1h, 7d (at most 3650d; default: "
                 "never)");
  tc->callback([=] {
    v1::CreateTokenRequest req;
    if (!ttl->empty()) {
      auto secs = policy::ParseDuration("--ttl", *ttl);
      if (!secs.ok()) return void(*rc = Usage(secs.status()));
      req.set_ttl_seconds(static_cast<int64_t>(secs.value()));
    }
    req.set_role(role_of(*role));
    req.set_tenant(*tenant);
    req.set_description(*descr);
    v1::CreateTokenResponse r;
    grpc::ClientContext ctx;
    C().Prepare(&ctx);
    grpc::Status s = C().access->CreateToken(&ctx, req, &r);
    // Table: the secret alone (TOKEN=$(spdctl token create ...)); json, yaml: kind NewToken.
    *rc = s.ok() ? C().Print(NewTokenDoc(r)) : C().Fail(s);
  });
  tok->add_subcommand("list", "List tokens (ids, roles; never secrets)")->callback([=] {
    v1::ListTokensResponse r;
    grpc::ClientContext ctx;
    C().Prepare(&ctx);
    grpc::Status s = C().access->ListTokens(&ctx, v1::ListTokensRequest(), &r);
    if (!s.ok()) return void(*rc = C().Fail(s));
    *rc = C().Print(TokenListDoc({r.tokens().begin(), r.tokens().end()}));
  });
  CLI::App* tr = tok->add_subcommand("revoke", "Revoke a token by id");
  tr->add_option("id", *name, "Token id (from token list)")->required();
  tr->callback([=] {
    v1::RevokeTokenRequest req;
    req.set_id(*name);
    v1::RevokeTokenResponse r;
    grpc::ClientContext ctx;
    C().Prepare(&ctx);
    grpc::Status s = C().access->RevokeToken(&ctx, req, &r);
    *rc = s.ok() ? kExitOk : C().Fail(s);
  });

  // ---- apply, diff ----
  auto file = std::make_shared<std::string>();
  auto dry_run = std::make_shared<bool>(false);
  auto prune = std::make_shared<bool>(false);
  auto run = [=](bool diff_only) {
    std::ifstream in(*file, std::ios::binary);
    if (!in) return void(*rc = Usage(InvalidArgument("cannot read " + *file)));
    std::stringstream text;
    text << in.rdbuf();
    auto want = apply::ParseApplyFile(text.str(), *file);
    if (!want.ok()) {
      std::fprintf(stderr, "spdctl: %s\n", std::string(want.status().message()).c_str());
      return void(*rc = kExitInvalid);
    }
    grpc::Status rpc;
    auto cur = FetchState(C(), &rpc);
    if (!rpc.ok()) return void(*rc = C().Fail(rpc));
    if (!cur.ok()) {
      std::fprintf(stderr, "spdctl: %s\n", cur.status().ToString().c_str());
      return void(*rc = kExitError);
    }
    auto plan = apply::MakePlan(want.value(), cur.value(), *prune);
    if (!plan.ok()) {
      std::fprintf(stderr, "spdctl: %s: %s\n", file->c_str(),
                   std::string(plan.status().message()).c_str());
      return void(*rc = plan.status().code() == StatusCode::kFailedPrecondition ? kExitPrecondition
                                                                                : kExitInvalid);
    }
    // Table: the plan's text first, then what was done; json, yaml: one Plan document at the end.
    const bool table = C().output() == Output::kTable;
    const bool apply = !diff_only && !*dry_run && !plan.value().changes.empty();
    if (table) std::fputs(apply::RenderPlan(plan.value()).c_str(), stdout);
    const int done = diff_only && !plan.value().changes.empty() ? kExitDrift : kExitOk;
    if (apply) {
      grpc::Status s = Execute(C(), plan.value(), want.value());
      if (!s.ok()) return void(*rc = C().Fail(s));
      if (table) std::printf("applied %zu change(s)\n", plan.value().changes.size());
    }
    if (!table) C().Print(PlanDoc(plan.value(), diff_only || *dry_run, apply));
    *rc = done;
  };
  CLI::App* ap = app->add_subcommand(
      "apply",
      "Make the daemon match a file of tenants, storage classes and volumes "
      "(docs/apply.md). Creates and updates; deletes only with --prune. An invalid "
      "file changes nothing");
  ap->add_option("-f,--file", *file, "The YAML file")->required();
  ap->add_flag("--dry-run", *dry_run, "Print the plan, change nothing");
  ap->add_flag("--prune", *prune, "Also delete what the file does not list");
  ap->callback([=] { run(false); });
  CLI::App* df = app->add_subcommand(
      "diff", "Print what `apply` would change; exit 1 when anything would (0: in sync)");
  df->add_option("-f,--file", *file, "The YAML file")->required();
  df->add_flag("--prune", *prune, "Count deletions too");
  df->callback([=] { run(true); });
}

}  // namespace spd::ctl
