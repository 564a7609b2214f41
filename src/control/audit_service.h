// The control API's AuditService (docs/control.md): the audit log's head and its verification.
#pragma once

#include <memory>

#include "control/control_internal.h"
#include "spd/v1/audit.grpc.pb.h"

namespace spd {

std::unique_ptr<v1::AuditService::CallbackService> NewAuditService(ControlServer::Impl* impl);

}  // namespace spd
