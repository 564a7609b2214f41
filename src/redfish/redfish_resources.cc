#include "redfish/redfish_resources.h"

#include <cmath>

namespace spd::redfish {
namespace {

const std::string kRoot = "/redfish/v1";
const std::string kChassis = kRoot + "/Chassis/" + kChassisId;
const std::string kSystem = kRoot + "/Systems/" + kSystemId;
const std::string kStorage = kSystem + "/Storage/" + kStorageId;

Json Link(const std::string& uri) { return Json{{"@odata.id", uri}}; }

// The common head of a resource: @odata.id, @odata.type, @odata.context, Id and Name.
Json Resource(const std::string& uri, const std::string& type, const std::string& id,
              const std::string& name) {
  // "#Sensor.v1_7_0.Sensor" -> context "/redfish/v1/$metadata#Sensor.Sensor".
  const std::string t = type.substr(1);
  const std::string ns = t.substr(0, t.find('.'));
  const std::string entity = t.substr(t.rfind('.') + 1);
  Json j = {{"@odata.id", uri},
            {"@odata.type", type},
            {"@odata.context", kRoot + "/$metadata#" + ns + "." + entity},
            {"Name", name}};
  if (!id.empty()) j["Id"] = id;
  return j;
}

Json Collection(const std::string& uri, const std::string& type, const std::string& name,
                const std::vector<std::string>& members) {
  Json j = Resource(uri, type, "", name);
  Json m = Json::array();
  for (const std::string& u : members) m.push_back(Link(u));
  j["Members@odata.count"] = m.size();
  j["Members"] = std::move(m);
  return j;
}

Json StatusOk() { return Json{{"State", "Enabled"}, {"Health", "OK"}}; }

// Status of a sensor: its state and health from the collector's verdict.
Json SensorStatus(int status) {
  switch (status) {
    case SPDR_STATUS_OK:
      return StatusOk();
    case SPDR_STATUS_WARNING:
      return Json{{"State", "Enabled"}, {"Health", "Warning"}};
    case SPDR_STATUS_CRITICAL:
      return Json{{"State", "Enabled"}, {"Health", "Critical"}};
    case SPDR_STATUS_FAILED:
      return Json{{"State", "Enabled"}, {"Health", "Warning"}};
    default:  // stale: no fresh value
      return Json{{"State", "UnavailableOffline"}, {"Health", "Warning"}};
  }
}

int HealthRank(int status) {
  switch (status) {
    case SPDR_STATUS_CRITICAL:
      return 2;
    case SPDR_STATUS_OK:
      return 0;
    default:
      return 1;
  }
}

// The worst health of the sensors kept by `keep`, as a Redfish Status.
template <typename Keep>
Json RollUp(const SensorViews& sensors, Keep keep) {
  int worst = 0;
  for (const auto& s : sensors) {
    if (keep(s)) worst = std::max(worst, HealthRank(s.reading.status));
  }
  static const char* kHealth[] = {"OK", "Warning", "Critical"};
  return Json{{"State", "Enabled"}, {"Health", kHealth[worst]}, {"HealthRollup", kHealth[worst]}};
}

struct ReadingKind {
  const char* type;
  const char* units;
};

// Redfish ReadingType and ReadingUnits (UCUM) of a kind; type nullptr: not a Redfish sensor.
ReadingKind KindOf(int kind) {
  switch (kind) {
    case SPDR_KIND_TEMP:
    case SPDR_KIND_THERMAL:
    case SPDR_KIND_NVME_TEMP:
      return {"Temperature", "Cel"};
    case SPDR_KIND_FAN:
      return {"Rotational", "RPM"};
    case SPDR_KIND_IN:
      return {"Voltage", "V"};
    case SPDR_KIND_CURR:
      return {"Current", "A"};
    case SPDR_KIND_POWER:
      return {"Power", "W"};
    case SPDR_KIND_ENERGY:
      return {"EnergyJoules", "J"};
    case SPDR_KIND_NVME_AVAILABLE_SPARE:
    case SPDR_KIND_NVME_PERCENT_USED:
      return {"Percent", "%"};
    default:
      return {nullptr, nullptr};
  }
}

bool IsTemperature(const RedfishService::SensorView& s) {
  return s.info.kind == SPDR_KIND_TEMP || s.info.kind == SPDR_KIND_THERMAL ||
         s.info.kind == SPDR_KIND_NVME_TEMP;
}

bool IsPower(const RedfishService::SensorView& s) {
  return s.info.kind == SPDR_KIND_POWER || s.info.kind == SPDR_KIND_CURR ||
         s.info.kind == SPDR_KIND_IN || s.info.kind == SPDR_KIND_ENERGY;
}

double Si(int64_t v, int unit) {
  switch (unit) {
    case SPDR_UNIT_MILLI_CELSIUS:
    case SPDR_UNIT_MILLI_VOLT:
    case SPDR_UNIT_MILLI_AMP:
      return double(v) * 1e-3;
    case SPDR_UNIT_MICRO_WATT:
    case SPDR_UNIT_MICRO_JOULE:
      return double(v) * 1e-6;
    default:
      return double(v);
  }
}

Json ReadingOf(const RedfishService::SensorView& s) {
  if (s.reading.status == SPDR_STATUS_STALE || s.reading.updated_monotonic_ns == 0) return nullptr;
  return s.reading.value_si;
}

std::string SensorUri(const RedfishService::SensorView& s) { return kChassis + "/Sensors/" + s.id; }

}  // namespace

std::string SchemaUriOf(const std::string& odata_type) {
  // "#Sensor.v1_7_0.Sensor" -> Sensor.v1_7_0; "#SensorCollection.SensorCollection" ->
  // SensorCollection (collections are unversioned).
  std::string t = odata_type.substr(odata_type.empty() ? 0 : 1);
  const size_t last = t.rfind('.');
  if (last != std::string::npos) t = t.substr(0, last);
  return "http://redfish.dmtf.org/schemas/v1/" + t + ".json";
}

Json ServiceRootJson(const ServiceOptions& o) {
  Json j = Resource(kRoot, "#ServiceRoot.v1_15_0.ServiceRoot", "RootService", "spd2 Redfish");
  j["RedfishVersion"] = kRedfishVersion;
  j["UUID"] = o.uuid;
  j["Product"] = "SP Driver 2.0 (spd2)";
  j["Chassis"] = Link(kRoot + "/Chassis");
  j["Systems"] = Link(kRoot + "/Systems");
  j["SessionService"] = Link(kRoot + "/SessionService");
  j["AccountService"] = Link(kRoot + "/AccountService");
  j["Links"] = {{"Sessions", Link(kRoot + "/SessionService/Sessions")}};
  j["ProtocolFeaturesSupported"] = {
      {"ExpandQuery",
       {{"ExpandAll", true},
        {"Levels", true},
        {"Links", true},
        {"NoLinks", true},
        {"MaxLevels", kExpandLevelsMax}}},
      {"FilterQuery", false},
      {"SelectQuery", false},
      {"OnlyMemberQuery", false},
      {"ExcerptQuery", false},
      {"DeepOperations", {{"DeepPATCH", false}, {"DeepPOST", false}}}};
  return j;
}

Json ChassisCollectionJson() {
  return Collection(kRoot + "/Chassis", "#ChassisCollection.ChassisCollection",
                    "Chassis Collection", {kChassis});
}

Json ChassisJson(const SensorViews& sensors) {
  Json j = Resource(kChassis, "#Chassis.v1_21_0.Chassis", kChassisId, "Host chassis");
  j["ChassisType"] = "RackMount";
  j["Status"] = RollUp(sensors, [](const auto&) { return true; });
  j["Sensors"] = Link(kChassis + "/Sensors");
  j["ThermalSubsystem"] = Link(kChassis + "/ThermalSubsystem");
  if (HasPowerData(sensors)) j["PowerSubsystem"] = Link(kChassis + "/PowerSubsystem");
  j["Links"] = {{"ComputerSystems", Json::array({Link(kSystem)})}};
  return j;
}

bool IsRedfishSensor(const spdr_sensor_info& info) { return KindOf(info.kind).type != nullptr; }

Json SensorCollectionJson(const SensorViews& sensors) {
  std::vector<std::string> members;
  for (const auto& s : sensors) {
    if (IsRedfishSensor(s.info)) members.push_back(SensorUri(s));
  }
  return Collection(kChassis + "/Sensors", "#SensorCollection.SensorCollection",
                    "Sensor Collection", members);
}

Json SensorJson(const RedfishService::SensorView& s) {
  const ReadingKind k = KindOf(s.info.kind);
  Json j = Resource(SensorUri(s), "#Sensor.v1_7_0.Sensor", s.id, s.info.name);
  j["Reading"] = ReadingOf(s);
  j["ReadingType"] = k.type;
  j["ReadingUnits"] = k.units;
  j["Status"] = SensorStatus(s.reading.status);
  if (s.info.label[0] != '\0') j["Description"] = s.info.label;
  j["SensingInterval"] = "PT" + std::to_string(double(s.info.period_ns) / 1e9) + "S";
  const int unit = s.info.unit;
  Json t = Json::object();
  const uint32_t m = s.reading.threshold_mask;
  if (m & SPDR_HAS_MAX) t["UpperCaution"] = {{"Reading", Si(s.reading.max, unit)}};
  if (m & SPDR_HAS_CRIT) t["UpperCritical"] = {{"Reading", Si(s.reading.crit, unit)}};
  if (m & SPDR_HAS_MIN) t["LowerCaution"] = {{"Reading", Si(s.reading.min, unit)}};
  if (m & SPDR_HAS_LCRIT) t["LowerCritical"] = {{"Reading", Si(s.reading.lcrit, unit)}};
  if (!t.empty()) j["Thresholds"] = std::move(t);
  if (s.info.kind == SPDR_KIND_NVME_TEMP || s.info.kind == SPDR_KIND_NVME_AVAILABLE_SPARE ||
      s.info.kind == SPDR_KIND_NVME_PERCENT_USED) {
    j["PhysicalContext"] = "StorageDevice";
  } else if (s.info.kind == SPDR_KIND_FAN) {
    j["PhysicalContext"] = "Fan";
  }
  return j;
}

Json ThermalSubsystemJson(const SensorViews& sensors) {
  Json j = Resource(kChassis + "/ThermalSubsystem", "#ThermalSubsystem.v1_0_0.ThermalSubsystem",
                    "ThermalSubsystem", "Thermal Subsystem");
  j["Status"] = RollUp(sensors, IsTemperature);
  j["ThermalMetrics"] = Link(kChassis + "/ThermalSubsystem/ThermalMetrics");
  return j;
}

Json ThermalMetricsJson(const SensorViews& sensors) {
  Json j = Resource(kChassis + "/ThermalSubsystem/ThermalMetrics",
                    "#ThermalMetrics.v1_0_0.ThermalMetrics", "ThermalMetrics", "Thermal Metrics");
  Json temps = Json::array();
  for (const auto& s : sensors) {
    if (IsTemperature(s))
      temps.push_back({{"DataSourceUri", SensorUri(s)}, {"Reading", ReadingOf(s)}});
  }
  j["TemperatureReadingsCelsius"] = std::move(temps);
  return j;
}

bool HasPowerData(const SensorViews& sensors) {
  for (const auto& s : sensors) {
    if (IsPower(s)) return true;
  }
  return false;
}

Json PowerSubsystemJson(const SensorViews& sensors) {
  Json j = Resource(kChassis + "/PowerSubsystem", "#PowerSubsystem.v1_1_0.PowerSubsystem",
                    "PowerSubsystem", "Power Subsystem");
  j["Status"] = RollUp(sensors, IsPower);
  return j;
}

Json SystemCollectionJson() {
  return Collection(kRoot + "/Systems", "#ComputerSystemCollection.ComputerSystemCollection",
                    "Computer System Collection", {kSystem});
}

Json SystemJson(const ServiceOptions& o, const SensorViews& sensors) {
  Json j = Resource(kSystem, "#ComputerSystem.v1_20_0.ComputerSystem", kSystemId, "Host");
  j["SystemType"] = "Physical";
  j["HostName"] = o.hostname;
  j["PowerState"] = "On";
  j["Status"] = RollUp(sensors, [](const auto&) { return true; });
  j["Storage"] = Link(kSystem + "/Storage");
  j["Links"] = {{"Chassis", Json::array({Link(kChassis)})}};
  return j;
}

Json StorageCollectionJson() {
  return Collection(kSystem + "/Storage", "#StorageCollection.StorageCollection",
                    "Storage Collection", {kStorage});
}

Json StorageJson(const ServiceOptions& o, const SensorViews& sensors) {
  Json j = Resource(kStorage, "#Storage.v1_15_0.Storage", kStorageId, "spd2 pool storage");
  Json drives = Json::array();
  for (size_t i = 0; i < o.drives.size(); ++i)
    drives.push_back(Link(kStorage + "/Drives/" + std::to_string(i)));
  j["Drives@odata.count"] = drives.size();
  j["Drives"] = std::move(drives);
  j["Status"] = StatusOk();
  return j;
}

Json DriveJson(const ServiceOptions& o, size_t index, const SensorViews& sensors) {
  const DriveInfo& d = o.drives[index];
  Json j = Resource(kStorage + "/Drives/" + std::to_string(index), "#Drive.v1_17_0.Drive",
                    std::to_string(index), d.path);
  j["CapacityBytes"] = d.capacity_bytes;
  if (!d.model.empty()) j["Model"] = d.model;
  int worst = 0;
  if (!d.nvme_serial.empty()) {
    j["Protocol"] = "NVMe";
    j["MediaType"] = "SSD";
    j["SerialNumber"] = d.nvme_serial;
    const std::string prefix = "nvme/" + d.nvme_serial + "/";
    for (const auto& s : sensors) {
      if (std::string(s.info.name).rfind(prefix, 0) != 0) continue;
      worst = std::max(worst, HealthRank(s.reading.status));
      if (s.info.kind == SPDR_KIND_NVME_PERCENT_USED && s.reading.updated_monotonic_ns != 0)
        j["PredictedMediaLifeLeftPercent"] = std::max(0.0, 100.0 - double(s.reading.value));
    }
  }
  static const char* kHealth[] = {"OK", "Warning", "Critical"};
  j["Status"] = {{"State", "Enabled"}, {"Health", kHealth[worst]}};
  return j;
}

Json SessionServiceJson(const ServiceOptions& o) {
  Json j = Resource(kRoot + "/SessionService", "#SessionService.v1_1_9.SessionService",
                    "SessionService", "Session Service");
  j["ServiceEnabled"] = true;
  j["SessionTimeout"] = o.session_timeout_ns / 1'000'000'000;
  j["Status"] = StatusOk();
  j["Sessions"] = Link(kRoot + "/SessionService/Sessions");
  return j;
}

Json SessionCollectionJson(const std::vector<Session>& sessions) {
  std::vector<std::string> members;
  for (const Session& s : sessions) members.push_back(kRoot + "/SessionService/Sessions/" + s.id);
  return Collection(kRoot + "/SessionService/Sessions", "#SessionCollection.SessionCollection",
                    "Session Collection", members);
}

Json SessionJson(const Session& s) {
  Json j = Resource(kRoot + "/SessionService/Sessions/" + s.id, "#Session.v1_6_0.Session", s.id,
                    "User Session");
  j["UserName"] = s.user;
  j["Password"] = nullptr;  // never shown (DSP0266: null on read)
  j["SessionType"] = "Redfish";
  return j;
}

Json AccountServiceJson() {
  Json j = Resource(kRoot + "/AccountService", "#AccountService.v1_13_0.AccountService",
                    "AccountService", "Account Service");
  j["ServiceEnabled"] = true;
  j["Status"] = StatusOk();
  j["Accounts"] = Link(kRoot + "/AccountService/Accounts");
  j["Roles"] = Link(kRoot + "/AccountService/Roles");
  j["Description"] = "Accounts come from spd2's --redfish-users file (read-only here)";
  return j;
}

Json AccountCollectionJson(const std::vector<Account>& accounts) {
  std::vector<std::string> members;
  for (const Account& a : accounts) members.push_back(kRoot + "/AccountService/Accounts/" + a.user);
  return Collection(kRoot + "/AccountService/Accounts",
                    "#ManagerAccountCollection.ManagerAccountCollection", "Accounts Collection",
                    members);
}

Json AccountJson(const Account& a) {
  Json j = Resource(kRoot + "/AccountService/Accounts/" + a.user,
                    "#ManagerAccount.v1_10_0.ManagerAccount", a.user, "User Account");
  j["UserName"] = a.user;
  j["RoleId"] = RoleName(a.role);
  j["Enabled"] = true;
  j["Locked"] = false;
  j["Password"] = nullptr;
  j["AccountTypes"] = Json::array({"Redfish"});
  j["Links"] = {{"Role", Link(kRoot + "/AccountService/Roles/" + RoleName(a.role))}};
  return j;
}

Json RoleCollectionJson() {
  std::vector<std::string> members;
  for (Role r : {Role::kAdministrator, Role::kOperator, Role::kReadOnly})
    members.push_back(kRoot + "/AccountService/Roles/" + RoleName(r));
  return Collection(kRoot + "/AccountService/Roles", "#RoleCollection.RoleCollection",
                    "Roles Collection", members);
}

Json RoleJson(Role r) {
  Json j = Resource(kRoot + "/AccountService/Roles/" + RoleName(r), "#Role.v1_3_1.Role",
                    RoleName(r), std::string(RoleName(r)) + " User Role");
  j["RoleId"] = RoleName(r);
  j["IsPredefined"] = true;
  Json p = Json::array({"Login", "ConfigureSelf"});
  if (r != Role::kReadOnly) p.push_back("ConfigureComponents");
  if (r == Role::kAdministrator) {
    p.push_back("ConfigureManager");
    p.push_back("ConfigureUsers");
  }
  j["AssignedPrivileges"] = std::move(p);
  j["OemPrivileges"] = Json::array();
  return j;
}

Json ODataServiceJson() {
  Json v = Json::array();
  v.push_back({{"name", "Service"}, {"kind", "Singleton"}, {"url", kRoot + "/"}});
  for (const char* n : {"Chassis", "Systems", "SessionService", "AccountService"})
    v.push_back({{"name", n}, {"kind", "Singleton"}, {"url", kRoot + "/" + n}});
  v.push_back(
      {{"name", "Sessions"}, {"kind", "Singleton"}, {"url", kRoot + "/SessionService/Sessions"}});
  return Json{{"@odata.context", kRoot + "/$metadata"}, {"value", std::move(v)}};
}

}  // namespace spd::redfish
