// spdctl's documents of intents, tenants, storage classes, policies, the uid map, tokens, apply
// plans and the audit log (format.h); format.cc holds the volume, pool, node and replication
// documents and the rendering.
#include <string>
#include <vector>

#include "policy/model.h"
#include "spdctl/format.h"

namespace spd::ctl {

Doc IntentDoc(const v1::Intent& in) {
  Doc d = Doc::object();
  if (in.has_latency()) {
    d["latency"]["percentile"] = in.latency().percentile();
    d["latency"]["boundUs"] = in.latency().bound_us();
  }
  auto rate = [](const v1::Rate& r) {
    Doc x = Doc::object();
    if (r.iops()) x["iops"] = r.iops();
    if (r.bytes_per_second()) x["bytesPerSecond"] = r.bytes_per_second();
    return x;
  };
  if (in.has_reservation()) d["reservation"] = rate(in.reservation());
  if (in.has_limit()) d["limit"] = rate(in.limit());
  if (in.has_weight()) d["weight"] = in.weight();
  switch (in.priority()) {
    case v1::PRIORITY_CLASS_STANDARD:
      d["priority"] = "standard";
      break;
    case v1::PRIORITY_CLASS_CRITICAL:
      d["priority"] = "critical";
      break;
    case v1::PRIORITY_CLASS_BACKGROUND:
      d["priority"] = "background";
      break;
    default:
      break;
  }
  if (in.durability() != v1::DURABILITY_UNSPECIFIED)
    d["durability"] = DurabilityText(in.durability());
  if (in.has_replicas()) d["replicas"] = in.replicas();
  return d;
}

namespace {
Doc TenantFields(const v1::Tenant& t) {
  Doc d;
  d["name"] = t.name();
  d["intent"] = IntentDoc(t.intent());
  return d;
}
}  // namespace

Doc TenantDoc(const v1::Tenant& t) {
  Doc d = Header("Tenant");
  const Doc f = TenantFields(t);  // a local: items() of a temporary would dangle
  for (auto it = f.begin(); it != f.end(); ++it) d[it.key()] = it.value();
  return d;
}

Doc TenantListDoc(const std::vector<v1::Tenant>& ts) {
  Doc d = Header("TenantList");
  d["items"] = Doc::array();
  for (const v1::Tenant& t : ts) d["items"].push_back(TenantFields(t));
  return d;
}

namespace {
Doc ClassFields(const v1::StorageClass& sc) {
  Doc d;
  d["name"] = sc.name();
  d["intent"] = IntentDoc(sc.defaults());
  return d;
}
Doc PolicyFields(const v1::VolumePolicy& p) {
  Doc d;
  d["volume"] = p.volume();
  d["tenant"] = p.tenant();
  d["storageClass"] = p.storage_class();
  d["intent"] = IntentDoc(p.intent());
  d["effective"] = IntentDoc(p.effective());
  return d;
}
}  // namespace

Doc StorageClassDoc(const v1::StorageClass& sc) {
  Doc d = Header("StorageClass");
  const Doc f = ClassFields(sc);
  for (auto it = f.begin(); it != f.end(); ++it) d[it.key()] = it.value();
  return d;
}

Doc StorageClassListDoc(const std::vector<v1::StorageClass>& cs) {
  Doc d = Header("StorageClassList");
  d["items"] = Doc::array();
  for (const auto& c : cs) d["items"].push_back(ClassFields(c));
  return d;
}

Doc VolumePolicyDoc(const v1::VolumePolicy& p) {
  Doc d = Header("VolumePolicy");
  const Doc f = PolicyFields(p);
  for (auto it = f.begin(); it != f.end(); ++it) d[it.key()] = it.value();
  return d;
}

Doc VolumePolicyListDoc(const std::vector<v1::VolumePolicy>& ps) {
  Doc d = Header("VolumePolicyList");
  d["items"] = Doc::array();
  for (const auto& p : ps) d["items"].push_back(PolicyFields(p));
  return d;
}

std::string RoleText(v1::Role r) {
  switch (r) {
    case v1::ROLE_VIEWER:
      return "viewer";
    case v1::ROLE_TENANT:
      return "tenant";
    case v1::ROLE_OPERATOR:
      return "operator";
    case v1::ROLE_ADMIN:
      return "admin";
    default:
      return "none";
  }
}

Doc UidRoleListDoc(const std::vector<v1::UidRole>& es) {
  Doc d = Header("UidRoleList");
  d["items"] = Doc::array();
  for (const v1::UidRole& e : es) {
    Doc x;
    x["uid"] = e.uid();
    x["role"] = RoleText(e.role());
    x["tenant"] = e.tenant();
    d["items"].push_back(std::move(x));
  }
  return d;
}

namespace {
void TokenFields(const v1::Token& t, Doc* x) {
  (*x)["id"] = t.id();
  (*x)["role"] = RoleText(t.role());
  (*x)["tenant"] = t.tenant();
  (*x)["description"] = t.description();
  (*x)["createdUnix"] = t.created_unix();
  (*x)["expiresUnix"] = t.expires_unix();  // 0: never
}
}  // namespace

Doc TokenListDoc(const std::vector<v1::Token>& ts) {
  Doc d = Header("TokenList");
  d["items"] = Doc::array();
  for (const v1::Token& t : ts) {
    Doc x;
    TokenFields(t, &x);
    d["items"].push_back(std::move(x));
  }
  return d;
}

Doc NewTokenDoc(const v1::CreateTokenResponse& r) {
  Doc d = Header("NewToken");
  TokenFields(r.token(), &d);
  d["secret"] = r.secret();
  return d;
}

Doc PlanDoc(const apply::Plan& plan, bool dry_run, bool applied) {
  Doc d = Header("Plan");
  d["dryRun"] = dry_run;
  d["applied"] = applied;
  d["changes"] = Doc::array();
  size_t n[3] = {0, 0, 0};
  for (const apply::Change& c : plan.changes) {
    static constexpr const char* kOps[] = {"create", "update", "delete"};
    const auto op = static_cast<size_t>(c.op);
    ++n[op];
    Doc x;
    x["op"] = kOps[op];
    x["kind"] = c.kind;
    x["name"] = c.name;
    x["details"] = c.details;
    d["changes"].push_back(std::move(x));
  }
  d["toCreate"] = n[0];
  d["toUpdate"] = n[1];
  d["toDelete"] = n[2];
  d["unchanged"] = plan.unchanged;
  return d;
}

Doc AuditHeadDoc(const v1::AuditHead& h) {
  Doc d = Header("AuditHead");
  d["seq"] = h.seq();
  d["hash"] = h.hash();
  return d;
}

Doc AuditVerificationDoc(bool ok, uint64_t entries, uint64_t bad_entry,
                         const std::string& problem) {
  Doc d = Header("AuditVerification");
  d["ok"] = ok;
  d["entries"] = entries;
  d["badEntry"] = bad_entry;
  d["problem"] = problem;
  return d;
}

Doc DeletedDoc(const std::string& name) {
  Doc d = Header("Deleted");
  d["name"] = name;
  return d;
}

}  // namespace spd::ctl
