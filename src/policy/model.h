// The control plane's policy model: what an operator declares besides volumes themselves.
//
// Intents (what a volume's application needs: latency target, reservation, limit, weight,
// priority, durability), storage classes (named defaults for intents), tenants (who owns
// volumes), roles (what a caller may do). The API (api/spd/v1), the state store (src/state),
// `spdctl apply` (src/apply) and the QoS scheduler all use these types, so that a value means
// the same everywhere and is validated in one place.
//
// Validation returns kInvalidArgument with the offending field's name first
// ("intent.limit.iops: must be at least intent.reservation.iops (5000), got 100"), so that an
// API error and an apply error name the same thing.
//
// Thread-safety: plain values; the functions are pure.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"
#include "volume/pool.h"

namespace spd::policy {

// Names of tenants, storage classes, tokens: 1-64 of [A-Za-z0-9._-], not starting with '.' or
// '-'. (Volume names follow the pool's rule, which is the same.)
inline constexpr size_t kNameBytesMax = 64;
[[nodiscard]] Status ValidateName(std::string_view field, std::string_view name);

enum class PriorityClass : uint8_t {
  kStandard = 0,    // the default
  kCritical = 1,    // served first among volumes whose reservations are met
  kBackground = 2,  // only what others leave (scrub-like work, batch jobs)
};
std::string_view PriorityClassName(PriorityClass p);
std::optional<PriorityClass> ParsePriorityClass(std::string_view s);

std::string_view DurabilityName(Durability d);  // "flush", "sync", "none"
std::optional<Durability> ParseDurability(std::string_view s);

// A rate in operations and/or bytes per second; 0 = not set.
struct Rate {
  uint64_t iops = 0;
  uint64_t bytes_per_second = 0;
  bool empty() const { return iops == 0 && bytes_per_second == 0; }
  bool operator==(const Rate&) const = default;
};

// "p99 under 2 ms": `percentile` in (0, 100), `bound_us` > 0. Unset: both 0.
struct LatencyTarget {
  double percentile = 0;
  uint64_t bound_us = 0;
  bool empty() const { return percentile == 0 && bound_us == 0; }
  bool operator==(const LatencyTarget&) const = default;
};

// What a volume (or every volume of a storage class) declares it needs. Every field is
// optional: an unset field of a volume's intent takes its storage class's value, then the
// built-in default (no target, no reservation, no limit, weight 100, standard, flush).
struct Intent {
  std::optional<LatencyTarget> latency;
  std::optional<Rate> reservation;
  std::optional<Rate> limit;
  std::optional<uint32_t> weight;  // 1..10000, default 100
  std::optional<PriorityClass> priority;
  std::optional<Durability> durability;
  // How many copies the volume has on the nodes of the cluster, 1..9 (1: this node's alone).
  // A replicated volume's count follows it (ReplicationManager::SetReplicaCount); a volume is
  // created replicated when its effective intent at create has 2 or more (spdctl apply).
  std::optional<uint32_t> replicas;
  bool operator==(const Intent&) const = default;
};
inline constexpr uint32_t kWeightDefault = 100;
inline constexpr uint32_t kWeightMax = 10000;
inline constexpr uint32_t kReplicasMax = 9;
// Reservations and limits above this are refused as typos (10 M IOPS, 1 TB/s).
inline constexpr uint64_t kIopsMax = 10'000'000;
inline constexpr uint64_t kBytesPerSecondMax = 1ull << 40;

// Checks every field and their relations (a limit below the reservation, a latency target
// with only one half set). `field` prefixes the names in the error ("intent", "spec.intent").
[[nodiscard]] Status ValidateIntent(std::string_view field, const Intent& intent);
// `over` where set, else `base`.
Intent MergeIntent(const Intent& base, const Intent& over);

struct StorageClass {
  std::string name;
  Intent defaults;
  bool operator==(const StorageClass&) const = default;
};
[[nodiscard]] Status ValidateStorageClass(const StorageClass& sc);

// Who owns volumes. Its intent applies to the sum of its volumes (the QoS scheduler's tenant
// level, above each volume's own): a reservation the tenant's volumes together get at least, a
// limit they together never exceed, the tenant's weight against other tenants and its priority.
// A latency target, a durability or a replica count belongs to a volume, not to a sum: refused
// on a tenant.
// Unset fields: the built-in defaults (nothing reserved or limited, weight 100, standard).
struct Tenant {
  std::string name;
  Intent intent = {};
  bool operator==(const Tenant&) const = default;
};
// A tenant's intent: ValidateIntent, and no latency target or durability ("tenant.intent.latency:
// a tenant has no latency target; set it on its volumes"). `field` prefixes the names as in
// ValidateIntent ("tenant.intent", "spec.intent").
[[nodiscard]] Status ValidateTenantIntent(std::string_view field, const Intent& intent);
// The name and the intent; `field` prefixes the names: "tenant" gives "tenant.name" and
// "tenant.intent.weight", "" gives "name" and "intent.weight".
[[nodiscard]] Status ValidateTenant(const Tenant& tenant, std::string_view field = "tenant");

// What a caller may do (docs/control.md has the matrix). Deny by default: a caller without a
// role is refused everything but health checks.
enum class Role : uint8_t {
  kNone = 0,
  kViewer = 1,    // read everything, change nothing
  kTenant = 2,    // read and use its own tenant's volumes; create, resize, delete them
  kOperator = 3,  // everything on volumes, classes, intents and tenants; no tokens, no uid map
  kAdmin = 4,     // everything
};
std::string_view RoleName(Role r);
std::optional<Role> ParseRole(std::string_view s);

// Sizes as people write them: "10G", "512Mi", "1.5T" is refused (whole numbers only), "4096".
// K, M, G, T, P and Ki..Pi are powers of 1024 (a block device's G is GiB: `10G` is 10 GiB, as
// qemu-img and truncate read it). Returns kInvalidArgument naming `field`.
[[nodiscard]] Result<uint64_t> ParseSize(std::string_view field, std::string_view text);
// The inverse for display: the largest unit that divides exactly ("10G", "4096").
std::string FormatSize(uint64_t bytes);
// Durations as people write them: a positive whole number and one unit, s, m, h or d ("30s",
// "15m", "1h", "7d"), in seconds. No unit, another unit, 0, a sign, a fraction, or more than
// kDurationSecondsMax: kInvalidArgument naming `field`.
inline constexpr uint64_t kDurationSecondsMax = uint64_t{1} << 40;  // ~34,800 years
[[nodiscard]] Result<uint64_t> ParseDuration(std::string_view field, std::string_view text);

}  // namespace spd::policy
