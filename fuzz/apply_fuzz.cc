// libFuzzer target: arbitrary bytes as an apply file (src/apply), through the parser, the
// planner and the renderer. Besides crashes, leaks and hangs (yaml-cpp included: it is called
// with whatever the fuzzer makes), it traps when the code breaks one of its promises:
//  - a refusal is kInvalidArgument and reads `fuzz.yaml:LINE:COLUMN: FIELD: ...` (1-based);
//  - an accepted file: every name valid, every size a positive multiple of 4096, every intent
//    valid (a tenant's without a latency target or a durability);
//  - the plan of a file against the state it produced is empty, with or without prune;
//  - against an empty server it creates every object, or refuses a dangling reference;
//  - the file written back from what was parsed (names quoted, sizes and intents as the plan
//    prints them) parses to the same objects: FormatIntent's text is the file's syntax.
//   ./apply_fuzz -max_total_time=60 -dict=../../fuzz/apply.dict ../../fuzz/corpus/apply
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "apply/apply_file.h"
#include "apply/plan.h"
#include "policy/model.h"

namespace {

using namespace spd;
using namespace spd::apply;

void Require(bool ok) {
  if (!ok) __builtin_trap();
}

bool IsDigits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

// `fuzz.yaml:LINE:COLUMN: ` with LINE, COLUMN >= 1.
bool HasPosition(std::string_view m) {
  constexpr std::string_view kFile = "fuzz.yaml:";
  if (m.substr(0, kFile.size()) != kFile) return false;
  m.remove_prefix(kFile.size());
  const size_t c1 = m.find(':');
  if (c1 == std::string_view::npos || !IsDigits(m.substr(0, c1)) || m[0] == '0') return false;
  m.remove_prefix(c1 + 1);
  const size_t c2 = m.find(": ");
  return c2 != std::string_view::npos && IsDigits(m.substr(0, c2)) && m[0] != '0';
}

std::string Quoted(const std::string& name) { return "\"" + name + "\""; }

// The file again, from what the parser made of it.
std::string WriteBack(const DesiredState& d) {
  std::string out;
  for (const DesiredTenant& t : d.tenants)
    out += "---\napiVersion: spd.v1\nkind: Tenant\nmetadata: {name: " + Quoted(t.t.name) +
           "}\nspec: {intent: " + FormatIntent(t.t.intent) + "}\n";
  for (const DesiredStorageClass& c : d.classes)
    out += "---\napiVersion: spd.v1\nkind: StorageClass\nmetadata: {name: " + Quoted(c.sc.name) +
           "}\nspec: {intent: " + FormatIntent(c.sc.defaults) + "}\n";
  for (const DesiredVolume& v : d.volumes) {
    out += "---\napiVersion: spd.v1\nkind: Volume\nmetadata: {name: " + Quoted(v.name);
    if (!v.tenant.empty()) out += ", tenant: " + Quoted(v.tenant);
    out += "}\nspec:\n  size: " + policy::FormatSize(v.size_bytes) +
           "\n  intent: " + FormatIntent(v.intent) + "\n";
    if (!v.storage_class.empty()) out += "  storageClass: " + Quoted(v.storage_class) + "\n";
  }
  return out;
}

size_t Objects(const DesiredState& d) {
  return d.tenants.size() + d.classes.size() + d.volumes.size();
}

// Field by field (not `line`).
bool Same(const DesiredState& a, const DesiredState& b) {
  if (a.tenants.size() != b.tenants.size() || a.classes.size() != b.classes.size() ||
      a.volumes.size() != b.volumes.size())
    return false;
  for (size_t i = 0; i < a.tenants.size(); ++i)
    if (a.tenants[i].t != b.tenants[i].t) return false;
  for (size_t i = 0; i < a.classes.size(); ++i)
    if (a.classes[i].sc != b.classes[i].sc) return false;
  for (size_t i = 0; i < a.volumes.size(); ++i) {
    const DesiredVolume& x = a.volumes[i];
    const DesiredVolume& y = b.volumes[i];
    if (x.name != y.name || x.tenant != y.tenant || x.storage_class != y.storage_class ||
        x.size_bytes != y.size_bytes || x.intent != y.intent)
      return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  Result<DesiredState> r = ParseApplyFile(text, "fuzz.yaml");
  if (!r.ok()) {
    // Not kInternal (an exception nobody expected) nor anything else.
    Require(r.status().code() == StatusCode::kInvalidArgument);
    Require(HasPosition(r.status().message()));
    return 0;
  }
  const DesiredState& d = *r;
  for (const DesiredTenant& t : d.tenants) {
    Require(policy::ValidateTenant(t.t).ok());  // a name, an intent without latency or durability
    Require(t.line >= 1);
  }
  for (const DesiredStorageClass& c : d.classes) {
    Require(policy::ValidateStorageClass(c.sc).ok());
    Require(c.line >= 1);
  }
  for (const DesiredVolume& v : d.volumes) {
    Require(policy::ValidateName("n", v.name).ok());
    Require(v.tenant.empty() || policy::ValidateName("n", v.tenant).ok());
    Require(v.storage_class.empty() || policy::ValidateName("n", v.storage_class).ok());
    Require(v.size_bytes > 0 && v.size_bytes % kSizeMultiple == 0);
    Require(policy::ValidateIntent("i", v.intent).ok());
    Require(v.line >= 1);
  }

  // From nothing: every object created, or a reference the file does not satisfy.
  Result<Plan> fresh = MakePlan(d, CurrentState{}, false);
  if (fresh.ok()) {
    Require(fresh->changes.size() == Objects(d) && fresh->unchanged == 0);
    for (const Change& c : fresh->changes) Require(c.op == Change::Op::kCreate);
    const std::string text_plan = RenderPlan(*fresh);
    Require(text_plan.find(std::to_string(Objects(d)) + " to create, 0 to update, 0 to delete, "
                                                        "0 unchanged\n") != std::string::npos);
  } else {
    Require(fresh.status().code() == StatusCode::kInvalidArgument);
    Require(fresh.status().message().substr(0, 5) == "line ");
  }

  // Idempotence: the state the file produced needs no change (a dangling reference dangles
  // there too).
  const CurrentState state = StateOf(d);
  for (bool prune : {false, true}) {
    Result<Plan> p = MakePlan(d, state, prune);
    if (prune && Objects(d) == 0) {
      Require(!p.ok() && p.status().code() == StatusCode::kFailedPrecondition);
    } else if (!fresh.ok()) {
      Require(!p.ok() && p.status().message() == fresh.status().message());
    } else {
      Require(p.ok());
      Require(p->changes.empty());
      Require(p->unchanged == Objects(d));
    }
  }

  // Written back, the file means the same.
  Result<DesiredState> again = ParseApplyFile(WriteBack(d), "fuzz.yaml");
  Require(again.ok());
  Require(Same(d, *again));
  return 0;
}
