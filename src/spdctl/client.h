// spdctl's connection to the daemon and its exit codes (docs/spdctl.md), shared by its commands:
// the unix socket (the caller is its uid), or a remote daemon over TCP with TLS and an API token.
#pragma once

#include <grpcpp/grpcpp.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <utility>

#include "common/status.h"
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
    "Environment: SPD_CONTROL_SOCKET is the default for --socket; SPDCTL_TOKEN the API token "
    "for --address when there is no --token-file; TRACEPARENT (a W3C trace "
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
  // A remote daemon (spd2 --control-listen): TCP with TLS instead of the unix socket.
  std::string address;          // HOST:PORT; empty: the socket
  std::string tls_ca;           // PEM file of the CA to trust; empty: the system's
  std::string tls_server_name;  // the name to check the certificate against; empty: HOST
  std::string token_file;       // the API token's file; else $SPDCTL_TOKEN
  // Filled by ResolveRemote from the files: sent as "authorization: Bearer TOKEN".
  std::string tls_ca_pem;
  std::string token;
};

// Largest token or CA file read (a token is 60 bytes, a CA bundle a few hundred KiB).
inline constexpr size_t kCredentialFileBytesMax = 1 << 20;

// Reads the --address options' files into `g` (after parsing, before any call). Errors (a
// usage error: exit 2) name the option: a file that cannot be read or is too large, an empty
// token, --tls-ca, --tls-server-name or --token-file without --address, --address without a
// token.
inline Status ResolveRemote(Globals* g) {
  auto read = [](const char* opt, const std::string& path, std::string* out) -> Status {
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (f == nullptr)
      return InvalidArgument(std::string(opt) + ": cannot read " + path + ": " +
                             std::strerror(errno));
    out->assign(kCredentialFileBytesMax + 1, '\0');
    out->resize(std::fread(out->data(), 1, out->size(), f));
    std::fclose(f);
    if (out->size() > kCredentialFileBytesMax)
      return InvalidArgument(std::string(opt) + ": " + path + " is larger than " +
                             std::to_string(kCredentialFileBytesMax) + " bytes");
    return Status::Ok();
  };
  if (g->address.empty()) {
    for (const auto& [opt, v] : {std::pair<const char*, const std::string*>{"--tls-ca", &g->tls_ca},
                                 {"--tls-server-name", &g->tls_server_name},
                                 {"--token-file", &g->token_file}})
      if (!v->empty()) return InvalidArgument(std::string(opt) + ": only with --address");
    return Status::Ok();
  }
  if (!g->tls_ca.empty()) SPD_RETURN_IF_ERROR(read("--tls-ca", g->tls_ca, &g->tls_ca_pem));
  const char* env = std::getenv("SPDCTL_TOKEN");
  if (!g->token_file.empty()) {
    SPD_RETURN_IF_ERROR(read("--token-file", g->token_file, &g->token));
  } else if (env != nullptr) {
    g->token = env;
  }
  while (!g->token.empty() && std::isspace(static_cast<unsigned char>(g->token.back())))
    g->token.pop_back();
  if (g->token.empty())
    return InvalidArgument(
        "--address: a remote daemon wants an API token: --token-file FILE or SPDCTL_TOKEN "
        "(spdctl token create)");
  return Status::Ok();
}

class Client {
 public:
  explicit Client(const Globals& g) : g_(g) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, 64 << 20);
    if (g.address.empty()) {
      channel_ =
          grpc::CreateCustomChannel("unix:" + g.socket, grpc::InsecureChannelCredentials(), args);
    } else {
      grpc::SslCredentialsOptions tls;
      tls.pem_root_certs = g.tls_ca_pem;  // empty: gRPC's default roots
      if (!g.tls_server_name.empty()) args.SetSslTargetNameOverride(g.tls_server_name);
      channel_ = grpc::CreateCustomChannel(g.address, grpc::SslCredentials(tls), args);
    }
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
    // Only to a remote daemon, over TLS: on the socket the caller is its uid.
    if (!g_.address.empty()) ctx->AddMetadata("authorization", "Bearer " + g_.token);
    if (deadline)
      ctx->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(g_.timeout_s * 1000)));
  }
  // Prints the error and returns the exit code.
  int Fail(const grpc::Status& s) const {
    std::string msg = s.error_message();
    if (s.error_code() == grpc::StatusCode::UNAVAILABLE)
      msg += g_.address.empty() ? " (is spd2 running? its control socket: " + g_.socket + ")"
                                : " (is spd2 running with --control-listen " + g_.address +
                                      "? is --tls-ca its certificate's CA?)";
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
