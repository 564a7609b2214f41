#include "control/convert.h"

namespace spd {

v1::Durability DurabilityToProto(Durability d) {
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

Result<Durability> DurabilityFromProto(v1::Durability d, bool allow_unspecified) {
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

v1::Rate RateToProto(const policy::Rate& r) {
  v1::Rate out;
  out.set_iops(r.iops);
  out.set_bytes_per_second(r.bytes_per_second);
  return out;
}

v1::PriorityClass PriorityToProto(policy::PriorityClass p) {
  switch (p) {
    case policy::PriorityClass::kStandard:
      return v1::PRIORITY_CLASS_STANDARD;
    case policy::PriorityClass::kCritical:
      return v1::PRIORITY_CLASS_CRITICAL;
    case policy::PriorityClass::kBackground:
      return v1::PRIORITY_CLASS_BACKGROUND;
  }
  return v1::PRIORITY_CLASS_UNSPECIFIED;
}

v1::Intent IntentToProto(const policy::Intent& in) {
  v1::Intent out;
  if (in.latency) {
    out.mutable_latency()->set_percentile(in.latency->percentile);
    out.mutable_latency()->set_bound_us(in.latency->bound_us);
  }
  if (in.reservation) *out.mutable_reservation() = RateToProto(*in.reservation);
  if (in.limit) *out.mutable_limit() = RateToProto(*in.limit);
  if (in.weight) out.set_weight(*in.weight);
  if (in.priority) out.set_priority(PriorityToProto(*in.priority));
  if (in.durability) out.set_durability(DurabilityToProto(*in.durability));
  if (in.replicas) out.set_replicas(*in.replicas);
  return out;
}

namespace {

// Converts without the checks of the whole (ranges, relations): the enums only.
Result<policy::Intent> ConvertIntent(const std::string& field, const v1::Intent& in) {
  policy::Intent out;
  if (in.has_latency())
    out.latency = policy::LatencyTarget{in.latency().percentile(), in.latency().bound_us()};
  if (in.has_reservation())
    out.reservation = policy::Rate{in.reservation().iops(), in.reservation().bytes_per_second()};
  if (in.has_limit()) out.limit = policy::Rate{in.limit().iops(), in.limit().bytes_per_second()};
  if (in.has_weight()) out.weight = in.weight();
  switch (in.priority()) {
    case v1::PRIORITY_CLASS_UNSPECIFIED:
      break;
    case v1::PRIORITY_CLASS_STANDARD:
      out.priority = policy::PriorityClass::kStandard;
      break;
    case v1::PRIORITY_CLASS_CRITICAL:
      out.priority = policy::PriorityClass::kCritical;
      break;
    case v1::PRIORITY_CLASS_BACKGROUND:
      out.priority = policy::PriorityClass::kBackground;
      break;
    default:
      return InvalidArgument(field + ".priority: unknown value " +
                             std::to_string(static_cast<int>(in.priority())));
  }
  if (in.durability() != v1::DURABILITY_UNSPECIFIED) {
    auto d = DurabilityFromProto(in.durability(), false);
    if (!d.ok()) return InvalidArgument(field + "." + std::string(d.status().message()));
    out.durability = d.value();
  }
  if (in.has_replicas()) out.replicas = in.replicas();
  return out;
}

}  // namespace

// Converts and validates; errors name `field` and the member ("intent.weight: ...").
Result<policy::Intent> IntentFromProto(const std::string& field, const v1::Intent& in) {
  SPD_ASSIGN_OR_RETURN(policy::Intent out, ConvertIntent(field, in));
  SPD_RETURN_IF_ERROR(policy::ValidateIntent(field, out));
  return out;
}

v1::Tenant TenantToProto(const policy::Tenant& t) {
  v1::Tenant out;
  out.set_name(t.name);
  *out.mutable_intent() = IntentToProto(t.intent);
  return out;
}

Result<policy::Tenant> TenantFromProto(const std::string& field, const v1::Tenant& t) {
  policy::Tenant out{t.name(), {}};
  SPD_ASSIGN_OR_RETURN(out.intent, ConvertIntent(field + ".intent", t.intent()));
  SPD_RETURN_IF_ERROR(policy::ValidateTenant(out, field));
  return out;
}

Result<uint64_t> PageTokenFromProto(const std::string& token) {
  if (token.empty()) return uint64_t{0};
  const Status bad = InvalidArgument("page_token: not a token from ListVolumes");
  if (token.size() > 20 || (token.size() > 1 && token[0] == '0')) return bad;
  uint64_t v = 0;
  for (char ch : token) {
    if (ch < '0' || ch > '9') return bad;
    const uint64_t d = static_cast<uint64_t>(ch - '0');
    if (v > (UINT64_MAX - d) / 10) return bad;  // does not fit
    v = v * 10 + d;
  }
  return v;
}

}  // namespace spd
