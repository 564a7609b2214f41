// The planner behind `spdctl apply` and `spdctl diff`: what must change on the server so that
// it matches a file (apply_file.h). Pure C++: the caller fetches the server's state into a
// CurrentState, and carries the plan out (or prints it: --dry-run, diff) itself.
//
// Rules (docs/apply.md says the same for operators):
//  - What the file has and the server lacks is created; what both have but differs is updated
//    (Change::details names each field: `size: 10G -> 20G`, `intent.limit.iops: 20000 ->
//    30000`; a tenant's, a class's or a volume's intent); the rest counts as unchanged. A plan
//    of a file against the state an apply of it produced is empty: fields compare as declared
//    (a volume's own intent, not merged with its class), so the server must keep intents as
//    they were given. An intent the server has and the file leaves out is an update to none.
//  - Nothing is deleted unless `prune`; with it, what the server has and the file lacks is.
//  - Order: creates and updates of tenants, then storage classes, then volumes (what a volume
//    names exists before it); then deletes of volumes, classes, tenants (nothing in use goes
//    first). Within a group, by name: the same inputs give the same plan, whatever the order of
//    the file or of the server's lists.
//  - A volume naming a tenant or storage class that is neither in the file nor on the server is
//    refused (kInvalidArgument). With `prune`, so is a volume naming one that is only on the
//    server: the plan would delete it while the volume stays (kFailedPrecondition).
//  - With `prune`, a file that declares nothing is refused (kFailedPrecondition): it would
//    delete everything, and an empty or truncated file is far more often a mistake than the
//    intent. Delete objects one by one instead.
//  - A volume's tenant may change in a plan (an update); the server decides whether it allows
//    moving a volume between tenants. A smaller size is an update too; the server refuses it
//    when data lies beyond the new end.
// Errors about the file start with `line N: ` (DesiredVolume::line); the caller adds the file.
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "apply/apply_file.h"
#include "common/status.h"
#include "policy/model.h"

namespace spd::apply {

// What the server has, as its API lists it.
struct CurrentState {
  std::vector<policy::Tenant> tenants;  // with their intents
  std::vector<policy::StorageClass> classes;
  struct Volume {
    std::string name;
    std::string tenant;         // empty: none
    std::string storage_class;  // empty: none
    uint64_t size_bytes = 0;
    policy::Intent intent;  // the volume's own, as declared (not merged with its class)
  };
  std::vector<Volume> volumes;
};

struct Change {
  enum class Op { kCreate, kUpdate, kDelete } op;
  std::string kind;  // "tenant", "storageclass", "volume"
  std::string name;
  // kUpdate: one entry per changed field, `FIELD: OLD -> NEW` with FIELD as the file spells it
  // (`size`, `tenant`, `storageClass`, `intent.limit.iops`) and "(none)" for an unset value.
  // kCreate: what the object gets (`size 10G`, `tenant acme`, `class fast`, `intent {...}`).
  // kDelete: empty.
  std::vector<std::string> details;
};

struct Plan {
  std::vector<Change> changes;  // in the order to carry them out
  size_t unchanged = 0;
};

[[nodiscard]] Result<Plan> MakePlan(const DesiredState& desired, const CurrentState& current,
                                    bool prune);

// One line per change (`+ volume db1 (size 10G, class fast)`, `~ volume db2: size 10G -> 20G`,
// `- storageclass old`), then `N to create, N to update, N to delete, N unchanged`. Each line
// ends with '\n'.
std::string RenderPlan(const Plan& plan);

// The state a complete apply of `desired` leaves on a server that had nothing else; a plan of
// `desired` against it is empty. For tests and the fuzzer, and for a caller that wants to show
// a file as a plan from nothing.
CurrentState StateOf(const DesiredState& desired);

// An intent as the file would write it, in flow style: `{limit: {iops: 20000}, weight: 200}`;
// `{}` when nothing is set.
std::string FormatIntent(const policy::Intent& intent);

}  // namespace spd::apply
