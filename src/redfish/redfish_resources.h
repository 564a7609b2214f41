// The JSON bodies of spd2's Redfish resources (redfish_service.h routes to them). Schema
// versions are the DMTF releases whose properties we fill; each body names its @odata.type,
// @odata.id and @odata.context.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "redfish/redfish_service.h"

namespace spd::redfish {

using Json = nlohmann::json;
using SensorViews = std::vector<RedfishService::SensorView>;

inline constexpr char kRedfishVersion[] = "1.17.0";
inline constexpr char kChassisId[] = "1";
inline constexpr char kSystemId[] = "1";
inline constexpr char kStorageId[] = "1";

// The DMTF JSON schema of an @odata.type ("#Sensor.v1_7_0.Sensor" ->
// http://redfish.dmtf.org/schemas/v1/Sensor.v1_7_0.json), for the Link header.
std::string SchemaUriOf(const std::string& odata_type);

Json ServiceRootJson(const ServiceOptions& o);
Json ChassisCollectionJson();
Json ChassisJson(const SensorViews& sensors);
Json SensorCollectionJson(const SensorViews& sensors);
Json SensorJson(const RedfishService::SensorView& s);
// nullptr-like (is_null) when the sensor has no Redfish ReadingType (NVMe counters).
bool IsRedfishSensor(const spdr_sensor_info& info);
Json ThermalSubsystemJson(const SensorViews& sensors);
Json ThermalMetricsJson(const SensorViews& sensors);
bool HasPowerData(const SensorViews& sensors);
Json PowerSubsystemJson(const SensorViews& sensors);
Json SystemCollectionJson();
Json SystemJson(const ServiceOptions& o, const SensorViews& sensors);
Json StorageCollectionJson();
Json StorageJson(const ServiceOptions& o, const SensorViews& sensors);
Json DriveJson(const ServiceOptions& o, size_t index, const SensorViews& sensors);
Json SessionServiceJson(const ServiceOptions& o);
Json SessionCollectionJson(const std::vector<Session>& sessions);
Json SessionJson(const Session& s);
Json AccountServiceJson();
Json AccountCollectionJson(const std::vector<Account>& accounts);
Json AccountJson(const Account& a);
Json RoleCollectionJson();
Json RoleJson(Role r);
Json ODataServiceJson();
// The CSDL document of /redfish/v1/$metadata (application/xml).
const std::string& MetadataXml();

}  // namespace spd::redfish
