#include "apply/plan.h"

#include <charconv>
#include <map>
#include <optional>
#include <string_view>
#include <utility>

namespace spd::apply {
namespace {

constexpr std::string_view kNone = "(none)";

// The shortest text that reads back as exactly `v`, in fixed notation (99.9, never 1e-05): the
// form the file's own numbers take, so that FormatIntent's output parses.
std::string FormatDecimal(double v) {
  char buf[400];  // the longest fixed double (DBL_MAX: 309 digits)
  const auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::fixed);
  return ec == std::errc() ? std::string(buf, end) : std::to_string(v);
}

std::string FormatLatency(const policy::LatencyTarget& l) {
  return "{percentile: " + FormatDecimal(l.percentile) +
         ", boundUs: " + std::to_string(l.bound_us) + "}";
}

std::string RateIops(const policy::Rate& r) {
  return r.iops ? std::to_string(r.iops) : std::string(kNone);
}
std::string RateBytes(const policy::Rate& r) {
  return r.bytes_per_second ? policy::FormatSize(r.bytes_per_second) : std::string(kNone);
}

std::string FormatRate(const policy::Rate& r) {
  std::string out;
  if (r.iops) out += "iops: " + std::to_string(r.iops);
  if (r.bytes_per_second)
    out += (out.empty() ? "" : ", ") + std::string("bytesPerSecond: ") +
           policy::FormatSize(r.bytes_per_second);
  return "{" + out + "}";
}

template <typename T, typename F>
std::string Opt(const std::optional<T>& v, F format) {
  return v ? std::string(format(*v)) : std::string(kNone);
}

void Diff(std::string_view field, const std::string& was, const std::string& now,
          std::vector<std::string>* out) {
  if (was != now) out->push_back(std::string(field) + ": " + was + " -> " + now);
}

// Changed fields, leaf by leaf where both sides have the group (`intent.limit.iops`), the whole
// group where one side lacks it (`intent.limit: (none) -> {iops: 20000}`).
void DiffIntent(const policy::Intent& was, const policy::Intent& now,
                std::vector<std::string>* out) {
  if (was.latency && now.latency) {
    Diff("intent.latency.percentile", FormatDecimal(was.latency->percentile),
         FormatDecimal(now.latency->percentile), out);
    Diff("intent.latency.boundUs", std::to_string(was.latency->bound_us),
         std::to_string(now.latency->bound_us), out);
  } else {
    Diff("intent.latency", Opt(was.latency, FormatLatency), Opt(now.latency, FormatLatency), out);
  }
  const auto rate = [out](std::string_view field, const std::optional<policy::Rate>& a,
                          const std::optional<policy::Rate>& b) {
    const std::string f(field);
    if (a && b) {
      Diff(f + ".iops", RateIops(*a), RateIops(*b), out);
      Diff(f + ".bytesPerSecond", RateBytes(*a), RateBytes(*b), out);
    } else {
      Diff(f, Opt(a, FormatRate), Opt(b, FormatRate), out);
    }
  };
  rate("intent.reservation", was.reservation, now.reservation);
  rate("intent.limit", was.limit, now.limit);
  const auto num = [](uint32_t w) { return std::to_string(w); };
  Diff("intent.weight", Opt(was.weight, num), Opt(now.weight, num), out);
  Diff("intent.priority", Opt(was.priority, policy::PriorityClassName),
       Opt(now.priority, policy::PriorityClassName), out);
  Diff("intent.durability", Opt(was.durability, policy::DurabilityName),
       Opt(now.durability, policy::DurabilityName), out);
  Diff("intent.replicas", Opt(was.replicas, num), Opt(now.replicas, num), out);
}

std::string OrNone(const std::string& s) { return s.empty() ? std::string(kNone) : s; }

std::string Line(int line) { return "line " + std::to_string(line) + ": "; }

// Name -> object, refusing a name given twice (a DesiredState need not come from the parser,
// which already refuses that).
template <typename T, typename NameOf>
Result<std::map<std::string, const T*>> IndexDesired(const std::vector<T>& items,
                                                     std::string_view kind, NameOf name_of) {
  std::map<std::string, const T*> out;
  for (const T& item : items) {
    const auto [it, inserted] = out.emplace(name_of(item), &item);
    if (!inserted)
      return InvalidArgument(Line(item.line) + std::string(kind) + " '" + name_of(item) +
                             "' is declared twice (also at line " +
                             std::to_string(it->second->line) + ")");
  }
  return out;
}

template <typename T>
Result<std::map<std::string, const T*>> IndexCurrent(const std::vector<T>& items,
                                                     std::string_view kind) {
  std::map<std::string, const T*> out;
  for (const T& item : items) {
    if (!out.emplace(item.name, &item).second)
      return InvalidArgument("the server's state lists " + std::string(kind) + " '" + item.name +
                             "' twice");
  }
  return out;
}

// A volume's reference to a tenant or class: where it must be found.
template <typename D, typename C>
Status CheckReference(const DesiredVolume& v, std::string_view field, std::string_view kind,
                      const std::string& name, const D& in_file, const C& on_server, bool prune) {
  if (name.empty() || in_file.count(name)) return Status::Ok();
  const std::string where =
      Line(v.line) + "volume " + v.name + ": " + std::string(field) + ": " + std::string(kind);
  if (!on_server.count(name))
    return InvalidArgument(where + " '" + name + "' is neither in the file nor on the server");
  if (prune)
    return FailedPrecondition(where + " '" + name +
                              "' is not in the file, so pruning would delete it while this "
                              "volume uses it; add it to the file");
  return Status::Ok();
}

Change Make(Change::Op op, std::string_view kind, const std::string& name,
            std::vector<std::string> details = {}) {
  return Change{op, std::string(kind), name, std::move(details)};
}

}  // namespace

std::string FormatIntent(const policy::Intent& in) {
  std::string out;
  const auto add = [&out](std::string_view key, const std::string& value) {
    out += (out.empty() ? "" : ", ") + std::string(key) + ": " + value;
  };
  if (in.latency) add("latency", FormatLatency(*in.latency));
  if (in.reservation) add("reservation", FormatRate(*in.reservation));
  if (in.limit) add("limit", FormatRate(*in.limit));
  if (in.weight) add("weight", std::to_string(*in.weight));
  if (in.priority) add("priority", std::string(policy::PriorityClassName(*in.priority)));
  if (in.durability) add("durability", std::string(policy::DurabilityName(*in.durability)));
  if (in.replicas) add("replicas", std::to_string(*in.replicas));
  return "{" + out + "}";
}

Result<Plan> MakePlan(const DesiredState& desired, const CurrentState& current, bool prune) {
  if (prune && desired.tenants.empty() && desired.classes.empty() && desired.volumes.empty())
    return FailedPrecondition(
        "the file declares nothing: pruning would delete every volume, storage class and "
        "tenant on the server; refused (delete them one by one if that is meant)");

  SPD_ASSIGN_OR_RETURN(
      const auto want_tenants,
      IndexDesired(desired.tenants, "tenant", [](const DesiredTenant& t) { return t.t.name; }));
  SPD_ASSIGN_OR_RETURN(const auto want_classes,
                       IndexDesired(desired.classes, "storage class",
                                    [](const DesiredStorageClass& c) { return c.sc.name; }));
  SPD_ASSIGN_OR_RETURN(
      const auto want_volumes,
      IndexDesired(desired.volumes, "volume", [](const DesiredVolume& v) { return v.name; }));
  SPD_ASSIGN_OR_RETURN(const auto have_tenants, IndexCurrent(current.tenants, "tenant"));
  SPD_ASSIGN_OR_RETURN(const auto have_classes, IndexCurrent(current.classes, "storage class"));
  SPD_ASSIGN_OR_RETURN(const auto have_volumes, IndexCurrent(current.volumes, "volume"));

  // In file order, so that the error is the first one in the file.
  for (const DesiredVolume& v : desired.volumes) {
    SPD_RETURN_IF_ERROR(CheckReference(v, "metadata.tenant", "tenant", v.tenant, want_tenants,
                                       have_tenants, prune));
    SPD_RETURN_IF_ERROR(CheckReference(v, "spec.storageClass", "storage class", v.storage_class,
                                       want_classes, have_classes, prune));
  }

  Plan plan;
  for (const auto& [name, t] : want_tenants) {
    const auto have = have_tenants.find(name);
    std::vector<std::string> details;
    if (have == have_tenants.end()) {
      if (t->t.intent != policy::Intent{}) details.push_back("intent " + FormatIntent(t->t.intent));
      plan.changes.push_back(Make(Change::Op::kCreate, "tenant", name, std::move(details)));
      continue;
    }
    DiffIntent(have->second->intent, t->t.intent, &details);
    if (details.empty())
      ++plan.unchanged;
    else
      plan.changes.push_back(Make(Change::Op::kUpdate, "tenant", name, std::move(details)));
  }
  for (const auto& [name, c] : want_classes) {
    const auto have = have_classes.find(name);
    if (have == have_classes.end()) {
      std::vector<std::string> details;
      if (c->sc.defaults != policy::Intent{})
        details.push_back("intent " + FormatIntent(c->sc.defaults));
      plan.changes.push_back(Make(Change::Op::kCreate, "storageclass", name, std::move(details)));
      continue;
    }
    std::vector<std::string> details;
    DiffIntent(have->second->defaults, c->sc.defaults, &details);
    if (details.empty())
      ++plan.unchanged;
    else
      plan.changes.push_back(Make(Change::Op::kUpdate, "storageclass", name, std::move(details)));
  }
  for (const auto& [name, v] : want_volumes) {
    const auto have = have_volumes.find(name);
    std::vector<std::string> details;
    if (have == have_volumes.end()) {
      details.push_back("size " + policy::FormatSize(v->size_bytes));
      if (!v->tenant.empty()) details.push_back("tenant " + v->tenant);
      if (!v->storage_class.empty()) details.push_back("class " + v->storage_class);
      if (v->intent != policy::Intent{}) details.push_back("intent " + FormatIntent(v->intent));
      plan.changes.push_back(Make(Change::Op::kCreate, "volume", name, std::move(details)));
      continue;
    }
    const CurrentState::Volume& h = *have->second;
    Diff("size", policy::FormatSize(h.size_bytes), policy::FormatSize(v->size_bytes), &details);
    Diff("tenant", OrNone(h.tenant), OrNone(v->tenant), &details);
    Diff("storageClass", OrNone(h.storage_class), OrNone(v->storage_class), &details);
    DiffIntent(h.intent, v->intent, &details);
    if (details.empty())
      ++plan.unchanged;
    else
      plan.changes.push_back(Make(Change::Op::kUpdate, "volume", name, std::move(details)));
  }

  if (prune) {
    for (const auto& [name, v] : have_volumes)
      if (!want_volumes.count(name))
        plan.changes.push_back(Make(Change::Op::kDelete, "volume", name));
    for (const auto& [name, c] : have_classes)
      if (!want_classes.count(name))
        plan.changes.push_back(Make(Change::Op::kDelete, "storageclass", name));
    for (const auto& [name, t] : have_tenants)
      if (!want_tenants.count(name))
        plan.changes.push_back(Make(Change::Op::kDelete, "tenant", name));
  }
  return plan;
}

std::string RenderPlan(const Plan& plan) {
  std::string out;
  size_t creates = 0, updates = 0, deletes = 0;
  for (const Change& c : plan.changes) {
    std::string details;
    for (const std::string& d : c.details) {
      if (!details.empty()) details += ", ";
      if (c.op == Change::Op::kUpdate) {
        // `size: 10G -> 20G` reads `size 10G -> 20G` after the line's own colon.
        const size_t colon = d.find(": ");
        details += colon == std::string::npos ? d : d.substr(0, colon) + " " + d.substr(colon + 2);
      } else {
        details += d;
      }
    }
    switch (c.op) {
      case Change::Op::kCreate:
        ++creates;
        out += "+ " + c.kind + " " + c.name + (details.empty() ? "" : " (" + details + ")");
        break;
      case Change::Op::kUpdate:
        ++updates;
        out += "~ " + c.kind + " " + c.name + (details.empty() ? "" : ": " + details);
        break;
      case Change::Op::kDelete:
        ++deletes;
        out += "- " + c.kind + " " + c.name + (details.empty() ? "" : " (" + details + ")");
        break;
    }
    out += '\n';
  }
  out += std::to_string(creates) + " to create, " + std::to_string(updates) + " to update, " +
         std::to_string(deletes) + " to delete, " + std::to_string(plan.unchanged) + " unchanged\n";
  return out;
}

CurrentState StateOf(const DesiredState& desired) {
  CurrentState s;
  for (const DesiredTenant& t : desired.tenants) s.tenants.push_back(t.t);
  for (const DesiredStorageClass& c : desired.classes) s.classes.push_back(c.sc);
  for (const DesiredVolume& v : desired.volumes)
    s.volumes.push_back({v.name, v.tenant, v.storage_class, v.size_bytes, v.intent});
  return s;
}

}  // namespace spd::apply
