// /redfish/v1/$metadata: the OData CSDL document that names, for every resource type spd2
// serves, the DMTF schema file that defines it (DSP0266 "Service metadata"), and declares the
// service's entity container as an extension of the ServiceRoot's.
#include "redfish/redfish_resources.h"

namespace spd::redfish {
namespace {

struct SchemaRef {
  const char* file;  // DMTF CSDL file, under http://redfish.dmtf.org/schemas/v1/
  std::vector<const char*> namespaces;
};

std::string Build() {
  const std::vector<SchemaRef> refs = {
      {"RedfishExtensions_v1.xml", {"RedfishExtensions.v1_0_0"}},
      {"Resource_v1.xml", {"Resource", "Resource.v1_0_0"}},
      {"Message_v1.xml", {"Message", "Message.v1_1_1"}},
      {"ServiceRoot_v1.xml", {"ServiceRoot", "ServiceRoot.v1_15_0"}},
      {"ChassisCollection_v1.xml", {"ChassisCollection"}},
      {"Chassis_v1.xml", {"Chassis", "Chassis.v1_21_0"}},
      {"SensorCollection_v1.xml", {"SensorCollection"}},
      {"Sensor_v1.xml", {"Sensor", "Sensor.v1_7_0"}},
      {"ThermalSubsystem_v1.xml", {"ThermalSubsystem", "ThermalSubsystem.v1_0_0"}},
      {"ThermalMetrics_v1.xml", {"ThermalMetrics", "ThermalMetrics.v1_0_0"}},
      {"PowerSubsystem_v1.xml", {"PowerSubsystem", "PowerSubsystem.v1_1_0"}},
      {"ComputerSystemCollection_v1.xml", {"ComputerSystemCollection"}},
      {"ComputerSystem_v1.xml", {"ComputerSystem", "ComputerSystem.v1_20_0"}},
      {"StorageCollection_v1.xml", {"StorageCollection"}},
      {"Storage_v1.xml", {"Storage", "Storage.v1_15_0"}},
      {"Drive_v1.xml", {"Drive", "Drive.v1_17_0"}},
      {"SessionService_v1.xml", {"SessionService", "SessionService.v1_1_9"}},
      {"SessionCollection_v1.xml", {"SessionCollection"}},
      {"Session_v1.xml", {"Session", "Session.v1_6_0"}},
      {"AccountService_v1.xml", {"AccountService", "AccountService.v1_13_0"}},
      {"ManagerAccountCollection_v1.xml", {"ManagerAccountCollection"}},
      {"ManagerAccount_v1.xml", {"ManagerAccount", "ManagerAccount.v1_10_0"}},
      {"RoleCollection_v1.xml", {"RoleCollection"}},
      {"Role_v1.xml", {"Role", "Role.v1_3_1"}},
  };
  std::string x =
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<edmx:Edmx xmlns:edmx=\"http://docs.oasis-open.org/odata/ns/edmx\" Version=\"4.0\">\n";
  for (const SchemaRef& r : refs) {
    x += "  <edmx:Reference Uri=\"http://redfish.dmtf.org/schemas/v1/";
    x += r.file;
    x += "\">\n";
    for (const char* ns : r.namespaces) {
      x += "    <edmx:Include Namespace=\"";
      x += ns;
      x += "\"/>\n";
    }
    x += "  </edmx:Reference>\n";
  }
  x += "  <edmx:DataServices>\n"
       "    <Schema xmlns=\"http://docs.oasis-open.org/odata/ns/edm\" Namespace=\"Service\">\n"
       "      <EntityContainer Name=\"Service\" "
       "Extends=\"ServiceRoot.v1_15_0.ServiceContainer\"/>\n"
       "    </Schema>\n"
       "  </edmx:DataServices>\n"
       "</edmx:Edmx>\n";
  return x;
}

}  // namespace

const std::string& MetadataXml() {
  static const std::string kXml = Build();
  return kXml;
}

}  // namespace spd::redfish
