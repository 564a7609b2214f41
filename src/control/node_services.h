// The control API's PoolService, NodeService and EventService (docs/control.md).
#pragma once

#include <memory>

#include "control/control_internal.h"
#include "spd/v1/events.grpc.pb.h"
#include "spd/v1/node.grpc.pb.h"
#include "spd/v1/pools.grpc.pb.h"

namespace spd {

std::unique_ptr<v1::PoolService::CallbackService> NewPoolService(ControlServer::Impl* impl);
std::unique_ptr<v1::NodeService::CallbackService> NewNodeService(ControlServer::Impl* impl);
std::unique_ptr<v1::EventService::CallbackService> NewEventService(ControlServer::Impl* impl);

}  // namespace spd
