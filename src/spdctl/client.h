// spdctl's connection to the daemon and its exit codes (docs/spdctl.md), shared by its commands.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "spd/v1/access.grpc.pb.h"
#include "spd/v1/audit.grpc.pb.h"
#include "spd/v1/events.grpc.pb.h"
#include "spd/v1/node.grpc.pb.h"
#include "spd/v1/policy.grpc.pb.h"
#include "spd/v1/pools.grpc.pb.h"
#include "spd/v1/volumes.grpc.pb.h"
#include "spdctl/format.h"

namespace spd::ctl {

// Exit codes (docs/spdctl.md; `spdctl --help` prints them).
enum Exit : int {
  kExitOk = 0,
  kExitDrift = 1,  // spdctl diff: the file and the daemon differ; audit verify: a problem
  kExitUsage = 2,
  kExitNotFound = 3,
  kExitExists = 4,
  kExitPrecondition = 5,
  kExitDenied = 6,
  kExitUnavailable = 7,
  kExitInvalid = 8,
  kExitBusy = 9,
  kExitError = 10,
};

inline constexpr const char* kExitHelp =
    "Exit codes: 0 success; 1 (diff) differences found, (audit verify) the log is damaged; 2 "
    "usage error; 3 not found; 4 already "
    "exists with another spec; 5 refused in the current state (in use, data beyond a shrink); 6 "
    "permission denied; 7 daemon unreachable or timed out; 8 invalid argument; 9 a limit was "
    "reached (retry later); 10 any other error.\n"
    "Environment: SPD_CONTROL_SOCKET is the default for --socket; TRACEPARENT (a W3C trace "
    "context, 00-TRACEID-SPANID-FLAGS) is sent with every call, so that spd2's spans of it join "
    "that trace (spd2 --trace-endpoint).\n"
    "Documentation: docs/spdctl.md and docs/control.md in the SP Driver repository.";

inline int ExitFor(grpc::StatusCode c) {
  switch (c) {
    case grpc::StatusCode::OK:
      return kExitOk;
    case grpc::StatusCode::NOT_FOUND:
      return kExitNotFound;
    case grpc::StatusCode::ALREADY_EXISTS:
      return kExitExists;
    case grpc::StatusCode::FAILED_PRECONDITION:
      return kExitPrecondition;
    case grpc::StatusCode::PERMISSION_DENIED:
    case grpc::StatusCode::UNAUTHENTICATED:
      return kExitDenied;
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return kExitUnavailable;
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::OUT_OF_RANGE:
      return kExitInvalid;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return kExitBusy;
    default:
      return kExitError;
  }
}

inline const char* CodeName(grpc::StatusCode c) {
  switch (c) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    default:
      return "ERROR";
  }
}

struct Globals {
  std::string socket;
  std::string output = "table";
  double timeout_s = 30;
};

class Client {
 public:
  explicit Client(const Globals& g) : g_(g) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, 64 << 20);
    channel_ =
        grpc::CreateCustomChannel("unix:" + g.socket, grpc::InsecureChannelCredentials(), args);
    volumes = v1::VolumeService::NewStub(channel_);
    pools = v1::PoolService::NewStub(channel_);
    node = v1::NodeService::NewStub(channel_);
    events = v1::EventService::NewStub(channel_);
    audit = v1::AuditService::NewStub(channel_);
    tenants = v1::TenantService::NewStub(channel_);
    classes = v1::StorageClassService::NewStub(channel_);
    intents = v1::IntentService::NewStub(channel_);
    access = v1::AccessService::NewStub(channel_);
  }
  // Every call carries the deadline and, when the environment has TRACEPARENT (a W3C trace
  // context, as OpenTelemetry's tools pass it on), that trace context: spd2's span of the call
  // becomes its child.
  void Prepare(grpc::ClientContext* ctx, bool deadline = true) const {
    if (const char* tp = std::getenv("TRACEPARENT"); tp != nullptr && *tp != '\0')
      ctx->AddMetadata("traceparent", tp);
    if (deadline)
      ctx->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(g_.timeout_s * 1000)));
  }
  // Prints the error and returns the exit code.
  int Fail(const grpc::Status& s) const {
    std::string msg = s.error_message();
    if (s.error_code() == grpc::StatusCode::UNAVAILABLE)
      msg += " (is spd2 running? its control socket: " + g_.socket + ")";
    std::fprintf(stderr, "spdctl: %s: %s\n", CodeName(s.error_code()), msg.c_str());
    return ExitFor(s.error_code());
  }
  Output output() const {
    if (g_.output == "json") return Output::kJson;
    if (g_.output == "yaml") return Output::kYaml;
    return Output::kTable;
  }
  int Print(const Doc& d) const {
    std::fputs(Render(d, output()).c_str(), stdout);
    return kExitOk;
  }

  std::unique_ptr<v1::VolumeService::Stub> volumes;
  std::unique_ptr<v1::PoolService::Stub> pools;
  std::unique_ptr<v1::NodeService::Stub> node;
  std::unique_ptr<v1::EventService::Stub> events;
  std::unique_ptr<v1::AuditService::Stub> audit;
  std::unique_ptr<v1::TenantService::Stub> tenants;
  std::unique_ptr<v1::StorageClassService::Stub> classes;
  std::unique_ptr<v1::IntentService::Stub> intents;
  std::unique_ptr<v1::AccessService::Stub> access;

 private:
  const Globals& g_;
  std::shared_ptr<grpc::Channel> channel_;
};

}  // namespace spd::ctl
