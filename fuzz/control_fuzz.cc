// The control API's request validation on hostile bytes: each input is one request message of
// the API (the first byte picks which), parsed as gRPC would, then put through what the
// handlers do with it before anything changes: name and size checks, durability and intent
// conversion with validation, and the JSON the audit log records of it. Checks, beyond "no
// crash, no leak": an intent the API accepts is valid and converts back to the same message,
// and so is a tenant (its intent without a latency target or a durability); the audit JSON of
// any parsed request is an object; a ListVolumes page token is accepted only in the form
// next_page_token gives it.
//   ./control_fuzz -max_total_time=60 [corpus-dir] ../../fuzz/corpus/control
#include <google/protobuf/util/json_util.h>

#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "control/control_internal.h"
#include "control/convert.h"
#include "spd/v1/access.pb.h"
#include "spd/v1/policy.pb.h"
#include "spd/v1/volumes.pb.h"

namespace {

void Trap(bool ok) {
  if (!ok) std::abort();
}

void AuditJson(const google::protobuf::Message& m) {
  std::string json;
  google::protobuf::util::JsonPrintOptions jo;
  jo.preserve_proto_field_names = true;
  if (!google::protobuf::util::MessageToJsonString(m, &json, jo).ok()) return;
  nlohmann::json j = nlohmann::json::parse(json, nullptr, false);
  Trap(!j.is_discarded() && j.is_object());
}

void CheckIntent(const std::string& field, const spd::v1::Intent& in) {
  auto r = spd::IntentFromProto(field, in);
  if (!r.ok()) {
    Trap(r.status().code() == spd::StatusCode::kInvalidArgument);
    Trap(r.status().message().rfind(field, 0) == 0);  // the error names the field
    return;
  }
  Trap(spd::policy::ValidateIntent(field, r.value()).ok());
  auto again = spd::IntentFromProto(field, spd::IntentToProto(r.value()));
  Trap(again.ok() && again.value() == r.value());
}

void CheckTenant(const spd::v1::Tenant& t) {
  auto r = spd::TenantFromProto("tenant", t);
  if (!r.ok()) {
    Trap(r.status().code() == spd::StatusCode::kInvalidArgument);
    Trap(r.status().message().rfind("tenant.", 0) == 0);  // the error names the field
    return;
  }
  Trap(spd::policy::ValidateTenant(r.value()).ok());
  Trap(!r.value().intent.latency && !r.value().intent.durability);
  auto again = spd::TenantFromProto("tenant", spd::TenantToProto(r.value()));
  Trap(again.ok() && again.value() == r.value());
}

template <typename M>
bool Parse(M* m, const uint8_t* data, size_t size) {
  return m->ParseFromArray(data, static_cast<int>(size));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 || size > (64 << 10)) return 0;  // the server's request limit
  const uint8_t kind = data[0] % 8;
  ++data;
  --size;
  switch (kind) {
    case 0: {
      spd::v1::CreateVolumeRequest r;
      if (!Parse(&r, data, size)) return 0;
      (void)spd::policy::ValidateName("name", r.name());
      (void)spd::CheckSize(r.size_bytes());
      (void)spd::DurabilityFromProto(r.durability(), true);
      AuditJson(r);
      break;
    }
    case 1: {
      spd::v1::ResizeVolumeRequest r;
      if (!Parse(&r, data, size)) return 0;
      spd::Status s = spd::CheckSize(r.size_bytes());
      Trap(s.ok() == (r.size_bytes() != 0 && r.size_bytes() % 4096 == 0));
      AuditJson(r);
      break;
    }
    case 2: {
      spd::v1::PutStorageClassRequest r;
      if (!Parse(&r, data, size)) return 0;
      (void)spd::policy::ValidateName("storage_class.name", r.storage_class().name());
      CheckIntent("storage_class.defaults", r.storage_class().defaults());
      AuditJson(r);
      break;
    }
    case 3: {
      spd::v1::SetVolumePolicyRequest r;
      if (!Parse(&r, data, size)) return 0;
      (void)spd::policy::ValidateName("policy.volume", r.policy().volume());
      CheckIntent("policy.intent", r.policy().intent());
      AuditJson(r);
      break;
    }
    case 4: {
      spd::v1::SetDurabilityRequest r;
      if (!Parse(&r, data, size)) return 0;
      auto d = spd::DurabilityFromProto(r.durability(), false);
      Trap(d.ok() == (r.durability() >= 1 && r.durability() <= 3));
      AuditJson(r);
      break;
    }
    case 5: {
      spd::v1::PutUidRoleRequest r;
      if (!Parse(&r, data, size)) return 0;
      AuditJson(r);
      break;
    }
    case 7: {
      // A page token is accepted only in the form next_page_token gives it (round trip).
      spd::v1::ListVolumesRequest r;
      if (!Parse(&r, data, size)) return 0;
      auto t = spd::PageTokenFromProto(r.page_token());
      if (t.ok()) {
        Trap(r.page_token().empty() ? *t == 0 : std::to_string(*t) == r.page_token());
      } else {
        Trap(t.status().code() == spd::StatusCode::kInvalidArgument);
        Trap(t.status().message().rfind("page_token", 0) == 0);
      }
      break;
    }
    default: {
      spd::v1::PutTenantRequest r;
      if (!Parse(&r, data, size)) return 0;
      CheckTenant(r.tenant());
      AuditJson(r);
      break;
    }
  }
  return 0;
}
