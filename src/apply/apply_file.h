// The file behind `spdctl apply -f FILE` and `spdctl diff -f FILE`: declarative configuration
// (tenants, storage classes, volumes) kept in Git. docs/apply.md describes the format.
//
// ParseApplyFile turns the text into a DesiredState, or refuses the whole file: one bad field
// anywhere and nothing of it is used, so that a half-understood file never reaches the server.
// The error is kInvalidArgument and reads `FILE:LINE:COLUMN: FIELD: what is wrong`, with LINE
// and COLUMN 1-based and FIELD the path in the document (`spec.intent.limit.iops`), so that an
// editor can jump to it. Errors that belong to no field say `yaml` (the YAML syntax),
// `document` (a document's shape, the document limits) or `file` (the file limit) instead.
//
// What the parser checks alone: the YAML itself, apiVersion and kind, unknown keys and wrong
// types anywhere, names (policy::ValidateName), intents (policy::ValidateIntent; a tenant's:
// ValidateTenantIntent), sizes, and duplicate (kind, name) pairs. Whether a volume's tenant and
// storage class exist needs the server's state too: MakePlan (plan.h) checks that.
//
// Limits, so that a hostile or broken file costs bounded time and memory: kFileBytesMax,
// kDocumentsMax (empty documents count), kNestingMax and kNodesMax per document. A real file
// stays far below all of them: a resource has a few dozen YAML nodes and four levels.
//
// Thread-safety: a pure function; calls on different threads share nothing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "policy/model.h"

namespace spd::apply {

inline constexpr std::string_view kApiVersion = "spd.v1";
inline constexpr size_t kFileBytesMax = 4u << 20;  // 4 MiB
inline constexpr size_t kDocumentsMax = 10'000;
// Mappings and sequences open at once in one document. The format needs 4 (document, spec,
// intent, limit); the bound also keeps yaml-cpp's recursive parser far from the stack's end.
inline constexpr size_t kNestingMax = 32;
// YAML nodes (scalars, mappings, sequences, nulls) in one document. Keeps the memory of one
// document small whatever the file holds; a resource needs fewer than 50.
inline constexpr size_t kNodesMax = 2'000;
// A volume's size must be a positive multiple of this (the pool's block).
inline constexpr uint64_t kSizeMultiple = 4096;

// `line` fields: the 1-based line where the object's document begins (its first key), for
// errors found later (MakePlan) to point at.
struct DesiredVolume {
  std::string name;
  std::string tenant;         // empty: none
  std::string storage_class;  // empty: none
  uint64_t size_bytes = 0;
  // The volume's own intent as written (fields it leaves out stay unset): the class fills
  // those in at the server. Not merged here, so that a plan compares what the file declares.
  policy::Intent intent;
  int line = 0;
};

struct DesiredStorageClass {
  policy::StorageClass sc;
  int line = 0;
};

struct DesiredTenant {
  policy::Tenant t;  // its intent as written (policy::ValidateTenantIntent holds)
  int line = 0;
};

// In file order within each kind.
struct DesiredState {
  std::vector<DesiredTenant> tenants;
  std::vector<DesiredStorageClass> classes;
  std::vector<DesiredVolume> volumes;
};

// `filename` is only used in error messages. Never throws: a file's faults are
// kInvalidArgument; running out of memory is kResourceExhausted.
[[nodiscard]] Result<DesiredState> ParseApplyFile(std::string_view text, std::string_view filename);

}  // namespace spd::apply
