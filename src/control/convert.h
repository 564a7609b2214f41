// Conversions between the API's messages (api/spd/v1) and the daemon's types (policy/model.h,
// volume/pool.h), shared by the control server and spdctl. Conversions from the API validate:
// errors are kInvalidArgument naming the field ("policy.intent.weight: ...").
#pragma once

#include <string>

#include "common/status.h"
#include "policy/model.h"
#include "spd/v1/policy.pb.h"
#include "spd/v1/volumes.pb.h"

namespace spd {

v1::Durability DurabilityToProto(Durability d);
// UNSPECIFIED is the default (flush) where `allow_unspecified`, else an error.
Result<Durability> DurabilityFromProto(v1::Durability d, bool allow_unspecified);
v1::Rate RateToProto(const policy::Rate& r);
v1::PriorityClass PriorityToProto(policy::PriorityClass p);
v1::Intent IntentToProto(const policy::Intent& in);
// Converts and validates (policy::ValidateIntent) under the name `field`.
Result<policy::Intent> IntentFromProto(const std::string& field, const v1::Intent& in);
// ListVolumes' page_token: what next_page_token said (a volume id in decimal, no sign, no
// spaces, no leading zero); INVALID_ARGUMENT naming "page_token" otherwise. "" is 0 (from the
// start).
Result<uint64_t> PageTokenFromProto(const std::string& token);
v1::Tenant TenantToProto(const policy::Tenant& t);
// Converts and validates (policy::ValidateTenant) under the name `field` ("tenant": errors
// name "tenant.name", "tenant.intent.latency").
Result<policy::Tenant> TenantFromProto(const std::string& field, const v1::Tenant& t);

}  // namespace spd
