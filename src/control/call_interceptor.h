// What every control API call goes through on its way in and out (a gRPC server interceptor):
//  - counted by method and status code in spd_control_calls_total{method,code} (every
//    service, the health service and the event stream included, whichever thread finishes
//    the call);
//  - traced when tracing is on (telemetry/trace.h): a server span per call, the child of the
//    caller's W3C `traceparent` metadata when it sent one.
#pragma once

#include <memory>

#include <grpcpp/support/server_interceptor.h>

namespace spd {

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> MakeCallInterceptorFactory();

// The canonical name of a gRPC status code ("OK", "NOT_FOUND", ...; "UNKNOWN" for others).
const char* GrpcCodeName(int code);

}  // namespace spd
