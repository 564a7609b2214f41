// The control plane's side of QoS: volumes' effective intents and tenants' intents compiled for
// the scheduler (qos/qos_scheduler.h), reservations admitted against its cost model, its status
// in the API.
#include "control/calibration.h"
#include "control/control_internal.h"
#include "qos/qos_scheduler.h"

namespace spd {
namespace {

qos::Rate ToQos(const std::optional<policy::Rate>& r) {
  if (!r) return {};
  return qos::Rate{r->iops, r->bytes_per_second};
}

qos::VolumeIntent Compile(const policy::Intent& in) {
  qos::VolumeIntent out;
  out.flow.reservation = ToQos(in.reservation);
  out.flow.limit = ToQos(in.limit);
  out.flow.weight = in.weight.value_or(policy::kWeightDefault);
  out.flow.priority =
      static_cast<qos::Priority>(in.priority.value_or(policy::PriorityClass::kStandard));
  if (in.latency && !in.latency->empty()) {
    out.latency.percentile = in.latency->percentile;
    out.latency.bound_ns = in.latency->bound_us * 1000;
  }
  return out;
}

Result<policy::Intent> Effective(state::StateStore* store, const state::VolumeMeta& m) {
  policy::Intent base;
  if (!m.storage_class.empty()) {
    SPD_ASSIGN_OR_RETURN(policy::StorageClass sc, store->GetStorageClass(m.storage_class));
    base = sc.defaults;
  }
  return policy::MergeIntent(base, m.intent);
}

}  // namespace

Status ControlServer::Impl::PushIntent(const state::VolumeMeta& m) {
  if (options.qos == nullptr) return Status::Ok();
  SPD_ASSIGN_OR_RETURN(policy::Intent eff, Effective(store.get(), m));
  options.qos->SetVolumeIntent(m.volume, m.tenant, Compile(eff));
  return Status::Ok();
}

Status ControlServer::Impl::PushAllIntents() {
  if (options.qos == nullptr) return Status::Ok();
  SPD_ASSIGN_OR_RETURN(std::vector<state::VolumeMeta> all, store->ListVolumeMeta());
  for (const state::VolumeMeta& m : all) SPD_RETURN_IF_ERROR(PushIntent(m));
  return Status::Ok();
}

Status ControlServer::Impl::AdmitIntent(const std::string& volume,
                                        const policy::Intent& effective) {
  if (options.qos == nullptr || !effective.reservation || effective.reservation->empty())
    return Status::Ok();
  return options.qos->AdmitReservation("policy.intent.reservation", volume,
                                       ToQos(effective.reservation));
}

void ControlServer::Impl::PushTenant(const policy::Tenant& t) {
  if (options.qos == nullptr) return;
  // Only the flow part: a tenant has no latency target (policy::ValidateTenant).
  options.qos->SetTenantPolicy(t.name, Compile(t.intent).flow);
}

void ControlServer::Impl::ForgetTenant(const std::string& name) {
  if (options.qos == nullptr) return;
  options.qos->SetTenantPolicy(name, qos::FlowPolicy{});
}

Status ControlServer::Impl::PushAllTenants() {
  if (options.qos == nullptr) return Status::Ok();
  SPD_ASSIGN_OR_RETURN(std::vector<policy::Tenant> all, store->ListTenants());
  for (const policy::Tenant& t : all) PushTenant(t);
  return Status::Ok();
}

Status ControlServer::Impl::AdmitTenant(const policy::Tenant& t) {
  if (options.qos == nullptr || !t.intent.reservation || t.intent.reservation->empty())
    return Status::Ok();
  return options.qos->AdmitTenantReservation("tenant.intent.reservation", t.name,
                                             ToQos(t.intent.reservation));
}

void ControlServer::Impl::FillStatus(const std::string& volume, v1::Volume* out) {
  if (options.qos == nullptr) return;
  const qos::VolumeStatus st = options.qos->Status(volume);
  v1::IntentStatus* s = out->mutable_intent_status();
  s->set_state(qos::IntentStateName(st.state));
  s->set_reason(st.reason);
  s->set_window_seconds(static_cast<double>(st.window_ns) / 1e9);
  s->set_iops(st.iops);
  s->set_bytes_per_second(st.bytes_per_second);
  s->set_latency_percentile(st.latency_percentile);
  s->set_latency_seconds(static_cast<double>(st.latency_ns) / 1e9);
  s->set_queued_seconds_mean(static_cast<double>(st.queue_ns_mean) / 1e9);
}

Status ControlServer::Impl::Calibrate(const qos::CalibrateOptions& o, v1::CalibrateResponse* resp) {
  qos::CalibrationReport report;
  auto model = RunLiveCalibration(options.dispatcher, volumes, o, &report);
  for (const qos::CalibrationPoint& p : report.points) {
    v1::CalibrationPoint* out = resp->add_points();
    out->set_op(IoOpName(p.op));
    out->set_bytes(p.bytes);
    out->set_qd1_latency_seconds(p.qd1_median_ns / 1e9);
    out->set_queue_depth(p.queue_depth);
    out->set_saturated_iops(p.saturated_iops);
    out->set_saturated(p.saturated);
    out->set_model_iops(p.model_iops);
  }
  resp->set_max_capacity_error(report.max_capacity_error);
  resp->set_elapsed_seconds(static_cast<double>(report.elapsed_ns) / 1e9);
  if (!model.ok()) return model.status().WithContext("calibration");
  const std::string path = qos::CostModelPath(options.data_dir, "default");
  SPD_RETURN_IF_ERROR(model.value().Save(path));
  resp->set_cost_model_json(model.value().ToJson());
  resp->set_path(path);
  if (options.qos) {
    options.qos->SetCostModel(model.value());
    resp->set_applied(true);
  }
  SPD_LOG_INFO("calibration: %s stored in %s%s", model.value().source.c_str(), path.c_str(),
               options.qos ? " and applied" : "");
  return Status::Ok();
}

}  // namespace spd
