#include <atomic>

#include "common/counters.h"
#include "common/log.h"
#include "io/io_backend.h"
#include "io/null_backend.h"
#include "io/posix_backend.h"
#include "io/sim_backend.h"
#include "io/uring_backend.h"

namespace spd {
namespace {
Counter backend_fallback_total("spd_io_backend_fallback_total",
                               "Backends opened as posix because io_uring was unavailable.");
}  // namespace

const char* IoOpName(IoOp op) {
  switch (op) {
    case IoOp::kRead:
      return "read";
    case IoOp::kWrite:
      return "write";
    case IoOp::kFlush:
      return "flush";
    case IoOp::kDiscard:
      return "discard";
    case IoOp::kWriteZeroes:
      return "write_zeroes";
  }
  return "?";
}

const char* BackendKindName(BackendKind kind) {
  switch (kind) {
    case BackendKind::kUring:
      return "uring";
    case BackendKind::kPosix:
      return "posix";
    case BackendKind::kSim:
      return "sim";
    case BackendKind::kNull:
      return "null";
  }
  return "?";
}

Result<BackendKind> ParseBackendKind(std::string_view name) {
  if (name == "uring") return BackendKind::kUring;
  if (name == "posix") return BackendKind::kPosix;
  if (name == "sim") return BackendKind::kSim;
  if (name == "null") return BackendKind::kNull;
  return InvalidArgument("unknown backend '" + std::string(name) + "' (uring, posix, sim or null)");
}

BackendKind ChooseBackendKind(BackendKind requested, const Reactor& reactor) {
  if (requested != BackendKind::kUring || reactor.engine() == ReactorEngine::kUring)
    return requested;
  static std::atomic<bool> logged{false};
  if (!logged.exchange(true)) {
    SPD_LOG_WARN("io_uring unavailable (%s): using the posix backend",
                 reactor.fallback_reason().c_str());
  }
  backend_fallback_total.Add();
  return BackendKind::kPosix;
}

Result<std::unique_ptr<IoBackend>> OpenBackend(const BackendOptions& options, Reactor* reactor) {
  switch (options.kind) {
    case BackendKind::kUring: {
      SPD_ASSIGN_OR_RETURN(auto b, UringBackend::Open(options, reactor));
      return std::unique_ptr<IoBackend>(std::move(b));
    }
    case BackendKind::kPosix: {
      SPD_ASSIGN_OR_RETURN(auto b, PosixBackend::Open(options, reactor));
      return std::unique_ptr<IoBackend>(std::move(b));
    }
    case BackendKind::kSim:
      if (options.size_bytes == 0) return InvalidArgument("sim backend needs a size");
      return std::unique_ptr<IoBackend>(new SimBackend(reactor, options.size_bytes, options.sim));
    case BackendKind::kNull:
      if (options.size_bytes == 0) return InvalidArgument("null backend needs a size");
      return std::unique_ptr<IoBackend>(new NullBackend(reactor, options.size_bytes));
  }
  return InvalidArgument("unknown backend kind");
}

}  // namespace spd
