// The control API's policy services (tenants, storage classes, volume policies): see
// policy_services.cc. Registered on the control server's builder; the returned object must
// outlive the gRPC server.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>

#include "control/control_server.h"

namespace spd {

struct PolicyServices {
  virtual ~PolicyServices() = default;
};

std::unique_ptr<PolicyServices> RegisterPolicyServices(grpc::ServerBuilder* builder,
                                                       ControlServer::Impl* impl);
// The uid map and tokens (access_service.cc), admins only.
std::unique_ptr<PolicyServices> RegisterAccessService(grpc::ServerBuilder* builder,
                                                      ControlServer::Impl* impl);

}  // namespace spd
