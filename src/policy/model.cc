#include "policy/model.h"

#include <cctype>
#include <cmath>

namespace spd::policy {
namespace {

std::string F(std::string_view prefix, std::string_view field) {
  std::string out(prefix);
  if (!out.empty()) out += '.';
  out += field;
  return out;
}

Status ValidateRate(const std::string& field, const Rate& r) {
  if (r.empty())
    return InvalidArgument(field + ": set iops, bytes_per_second or both (or leave it out)");
  if (r.iops > kIopsMax)
    return InvalidArgument(field + ".iops: at most " + std::to_string(kIopsMax) + ", got " +
                           std::to_string(r.iops));
  if (r.bytes_per_second > kBytesPerSecondMax)
    return InvalidArgument(field + ".bytes_per_second: at most " +
                           std::to_string(kBytesPerSecondMax) + ", got " +
                           std::to_string(r.bytes_per_second));
  return Status::Ok();
}

}  // namespace

Status ValidateName(std::string_view field, std::string_view name) {
  if (name.empty()) return InvalidArgument(std::string(field) + ": must not be empty");
  if (name.size() > kNameBytesMax)
    return InvalidArgument(std::string(field) + ": at most " + std::to_string(kNameBytesMax) +
                           " characters, got " + std::to_string(name.size()));
  if (name[0] == '.' || name[0] == '-')
    return InvalidArgument(std::string(field) + ": must not start with '" + name[0] + "'");
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-'))
      return InvalidArgument(std::string(field) + ": only [A-Za-z0-9._-] allowed, got '" +
                             std::string(name) + "'");
  }
  return Status::Ok();
}

std::string_view PriorityClassName(PriorityClass p) {
  switch (p) {
    case PriorityClass::kStandard:
      return "standard";
    case PriorityClass::kCritical:
      return "critical";
    case PriorityClass::kBackground:
      return "background";
  }
  return "?";
}

std::optional<PriorityClass> ParsePriorityClass(std::string_view s) {
  for (PriorityClass p :
       {PriorityClass::kStandard, PriorityClass::kCritical, PriorityClass::kBackground})
    if (s == PriorityClassName(p)) return p;
  return std::nullopt;
}

std::string_view DurabilityName(Durability d) {
  switch (d) {
    case Durability::kFlush:
      return "flush";
    case Durability::kSync:
      return "sync";
    case Durability::kNone:
      return "none";
  }
  return "?";
}

std::optional<Durability> ParseDurability(std::string_view s) {
  for (Durability d : {Durability::kFlush, Durability::kSync, Durability::kNone})
    if (s == DurabilityName(d)) return d;
  return std::nullopt;
}

std::string_view RoleName(Role r) {
  switch (r) {
    case Role::kNone:
      return "none";
    case Role::kViewer:
      return "viewer";
    case Role::kTenant:
      return "tenant";
    case Role::kOperator:
      return "operator";
    case Role::kAdmin:
      return "admin";
  }
  return "?";
}

std::optional<Role> ParseRole(std::string_view s) {
  for (Role r : {Role::kNone, Role::kViewer, Role::kTenant, Role::kOperator, Role::kAdmin})
    if (s == RoleName(r)) return r;
  return std::nullopt;
}

Status ValidateIntent(std::string_view field, const Intent& in) {
  if (in.latency) {
    const LatencyTarget& l = *in.latency;
    if (!(l.percentile > 0 && l.percentile < 100) || std::isnan(l.percentile))
      return InvalidArgument(F(field, "latency.percentile") +
                             ": must be above 0 and below 100 (99 for p99), got " +
                             std::to_string(l.percentile));
    if (l.bound_us == 0)
      return InvalidArgument(F(field, "latency.bound_us") + ": must be positive");
    if (l.bound_us > 3'600'000'000ull)
      return InvalidArgument(F(field, "latency.bound_us") + ": at most one hour, got " +
                             std::to_string(l.bound_us));
  }
  if (in.reservation) SPD_RETURN_IF_ERROR(ValidateRate(F(field, "reservation"), *in.reservation));
  if (in.limit) SPD_RETURN_IF_ERROR(ValidateRate(F(field, "limit"), *in.limit));
  if (in.reservation && in.limit) {
    const Rate& r = *in.reservation;
    const Rate& l = *in.limit;
    if (l.iops && r.iops > l.iops)
      return InvalidArgument(F(field, "limit.iops") + ": must be at least " +
                             F(field, "reservation.iops") + " (" + std::to_string(r.iops) +
                             "), got " + std::to_string(l.iops));
    if (l.bytes_per_second && r.bytes_per_second > l.bytes_per_second)
      return InvalidArgument(F(field, "limit.bytes_per_second") + ": must be at least " +
                             F(field, "reservation.bytes_per_second") + " (" +
                             std::to_string(r.bytes_per_second) + "), got " +
                             std::to_string(l.bytes_per_second));
  }
  if (in.weight && (*in.weight == 0 || *in.weight > kWeightMax))
    return InvalidArgument(F(field, "weight") + ": must be 1 to " + std::to_string(kWeightMax) +
                           ", got " + std::to_string(*in.weight));
  if (in.replicas && (*in.replicas == 0 || *in.replicas > kReplicasMax))
    return InvalidArgument(F(field, "replicas") + ": must be 1 to " + std::to_string(kReplicasMax) +
                           ", got " + std::to_string(*in.replicas));
  return Status::Ok();
}

Intent MergeIntent(const Intent& base, const Intent& over) {
  Intent out = base;
  if (over.latency) out.latency = over.latency;
  if (over.reservation) out.reservation = over.reservation;
  if (over.limit) out.limit = over.limit;
  if (over.weight) out.weight = over.weight;
  if (over.priority) out.priority = over.priority;
  if (over.durability) out.durability = over.durability;
  if (over.replicas) out.replicas = over.replicas;
  return out;
}

Status ValidateStorageClass(const StorageClass& sc) {
  SPD_RETURN_IF_ERROR(ValidateName("name", sc.name));
  return ValidateIntent("defaults", sc.defaults);
}

Status ValidateTenantIntent(std::string_view field, const Intent& in) {
  if (in.latency)
    return InvalidArgument(F(field, "latency") +
                           ": a tenant has no latency target; set it on its volumes");
  if (in.durability)
    return InvalidArgument(F(field, "durability") +
                           ": a tenant has no durability; set it on its volumes");
  if (in.replicas)
    return InvalidArgument(F(field, "replicas") +
                           ": a tenant has no replica count; set it on its volumes");
  return ValidateIntent(field, in);
}

Status ValidateTenant(const Tenant& t, std::string_view field) {
  SPD_RETURN_IF_ERROR(ValidateName(F(field, "name"), t.name));
  return ValidateTenantIntent(F(field, "intent"), t.intent);
}

Result<uint64_t> ParseSize(std::string_view field, std::string_view text) {
  const std::string f(field);
  if (text.empty()) return InvalidArgument(f + ": a size is needed (4096, 512M, 10G, 1Ti)");
  size_t i = 0;
  uint64_t n = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
    const uint64_t d = static_cast<uint64_t>(text[i] - '0');
    if (n > (UINT64_MAX - d) / 10) return InvalidArgument(f + ": too large: " + std::string(text));
    n = n * 10 + d;
    ++i;
  }
  if (i == 0)
    return InvalidArgument(f +
                           ": not a size (a whole number with an optional K, M, G, T, P, "
                           "Ki..Pi suffix): '" +
                           std::string(text) + "'");
  std::string_view unit = text.substr(i);
  int shift = 0;
  if (!unit.empty()) {
    const char u = static_cast<char>(std::toupper(static_cast<unsigned char>(unit[0])));
    const std::string_view units = "KMGTP";
    const size_t at = units.find(u);
    std::string_view rest = unit.substr(1);
    if (at == std::string_view::npos ||
        !(rest.empty() || rest == "i" || rest == "iB" || rest == "B"))
      return InvalidArgument(f + ": unknown unit '" + std::string(unit) +
                             "' (K, M, G, T, P or Ki..Pi, powers of 1024)");
    shift = 10 * static_cast<int>(at + 1);
  }
  if (shift && n > (UINT64_MAX >> shift))
    return InvalidArgument(f + ": too large: " + std::string(text));
  return n << shift;
}

Result<uint64_t> ParseDuration(std::string_view field, std::string_view text) {
  const std::string f(field);
  const std::string want =
      ": wants a positive whole number and a unit, s, m, h or d (30s, 15m, "
      "1h, 7d), got '" +
      std::string(text) + "'";
  size_t i = 0;
  uint64_t n = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
    n = n * 10 + static_cast<uint64_t>(text[i] - '0');
    if (n > kDurationSecondsMax)
      return InvalidArgument(f + ": too long: '" + std::string(text) + "'");
    ++i;
  }
  if (i == 0 || i + 1 != text.size()) return InvalidArgument(f + want);
  uint64_t unit = 0;
  switch (text[i]) {
    case 's':
      unit = 1;
      break;
    case 'm':
      unit = 60;
      break;
    case 'h':
      unit = 3600;
      break;
    case 'd':
      unit = 86400;
      break;
    default:
      return InvalidArgument(f + want);
  }
  if (n == 0)
    return InvalidArgument(f + ": must be longer than 0, got '" + std::string(text) + "'");
  if (n > kDurationSecondsMax / unit)
    return InvalidArgument(f + ": too long: '" + std::string(text) + "'");
  return n * unit;
}

std::string FormatSize(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"", "K", "M", "G", "T", "P"};
  int u = 0;
  while (u < 5 && bytes != 0 && bytes % 1024 == 0) {
    bytes /= 1024;
    ++u;
  }
  return std::to_string(bytes) + kUnits[u];
}

}  // namespace spd::policy
