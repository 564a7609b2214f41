#include "daemon/qos_setup.h"

#include <sys/stat.h>

#include "common/log.h"

namespace spd {

Result<std::unique_ptr<qos::QosScheduler>> MakeQosScheduler(
    const DaemonOptions& o, const BackendOptions& bo, std::vector<Reactor*> reactors,
    std::function<void(const std::string&, const std::string&)> on_violation) {
  if (o.qos != "on") return std::unique_ptr<qos::QosScheduler>();
  qos::QosScheduler::Options qo;
  qo.budget_factor = o.qos_budget_factor;
  qo.budget_max_factor = o.qos_budget_max_factor;  // >= budget_factor (options.cc)
  qo.limit_burst_ns = static_cast<uint64_t>(o.qos_limit_burst_ms * 1e6);
  qo.on_violation = std::move(on_violation);
  const std::string found = qos::CostModelPath(o.data_dir, "default");
  struct stat st;
  if (!o.qos_cost_model.empty()) {
    SPD_ASSIGN_OR_RETURN(qo.cost, qos::CostModel::Load(o.qos_cost_model));
  } else if (stat(found.c_str(), &st) == 0) {
    SPD_ASSIGN_OR_RETURN(qo.cost, qos::CostModel::Load(found));
  } else if (bo.kind == BackendKind::kSim) {
    qo.cost = qos::ForSim(bo.sim);
  } else {
    qo.cost = qos::CostModel::Default();
    SPD_LOG_WARN(
        "qos: no cost model for this device (%s): using the built-in one of a "
        "SATA-class SSD; run 'spdctl calibrate' for the device's own",
        found.c_str());
  }
  auto s = std::make_unique<qos::QosScheduler>(std::move(reactors), std::move(qo));
  SPD_LOG_INFO(
      "qos: on, cost model '%s' (4 KiB read %llu ns, parallelism %.1f, depth %.1f), %llu ns of "
      "device time outstanding per reactor (%llu ns while no volume there has an intent that "
      "needs requests held)",
      s->cost_model().source.c_str(),
      static_cast<unsigned long long>(s->cost_model().Cost(IoOp::kRead, 4096)),
      s->cost_model().parallelism, s->cost_model().SaturationDepth(),
      static_cast<unsigned long long>(s->budget_ns()),
      static_cast<unsigned long long>(s->deep_budget_ns()));
  return s;
}

}  // namespace spd
