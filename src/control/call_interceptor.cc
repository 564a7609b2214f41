#include "control/call_interceptor.h"

#include <time.h>

#include <map>
#include <mutex>
#include <string>
#include <utility>

#include <google/protobuf/descriptor.h>

#include "common/counters.h"
#include "common/trace.h"

namespace spd {
namespace {

// Calls by (method, code). Bounded: methods are the ones served (KnownMethod) and there are 17
// codes; past kSeriesMax pairs (which this server never reaches) calls count under "other".
constexpr size_t kSeriesMax = 1024;

std::mutex& CallsMu() {
  static std::mutex mu;
  return mu;
}
std::map<std::pair<std::string, int>, uint64_t>& Calls() {
  static std::map<std::pair<std::string, int>, uint64_t> calls;
  return calls;
}

// "package.Service/Method" of a method this binary serves (its proto is compiled in, or gRPC's
// health service), else "unknown": a client can send any path, and a label per made-up name
// would let it grow the metrics without bound.
std::string KnownMethod(const char* path) {
  std::string m = path != nullptr && *path == '/' ? path + 1 : (path ? path : "");
  if (m == "grpc.health.v1.Health/Check" || m == "grpc.health.v1.Health/Watch") return m;
  std::string dotted = m;
  const size_t slash = dotted.find('/');
  if (slash == std::string::npos) return "unknown";
  dotted[slash] = '.';
  if (google::protobuf::DescriptorPool::generated_pool()->FindMethodByName(dotted) == nullptr)
    return "unknown";
  return m;
}

void CountCall(const std::string& method, int code) {
  std::lock_guard<std::mutex> l(CallsMu());
  auto& calls = Calls();
  auto key = std::make_pair(method, code);
  auto it = calls.find(key);
  if (it == calls.end() && calls.size() >= kSeriesMax) {
    key.first = "other";
    it = calls.find(key);
  }
  if (it == calls.end()) it = calls.emplace(std::move(key), 0).first;
  ++it->second;
}

MetricsCollector calls_collector([](std::string* out) {
  std::lock_guard<std::mutex> l(CallsMu());
  if (Calls().empty()) return;
  PromHeader(out, "spd_control_calls_total",
             "Control API calls answered, by gRPC method (package.Service/Method) and status "
             "code (OK, NOT_FOUND, PERMISSION_DENIED, ...).",
             "counter");
  for (const auto& [key, n] : Calls())
    PromSample(out, "spd_control_calls_total",
               "method=" + PromLabel(key.first) + ",code=" + PromLabel(GrpcCodeName(key.second)),
               static_cast<double>(n));
});

uint64_t RealtimeNs() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

class CallInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit CallInterceptor(grpc::experimental::ServerRpcInfo* info)
      : method_(KnownMethod(info->method())),
        traced_(trace::Enabled()),
        start_ns_(traced_ ? RealtimeNs() : 0) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using grpc::experimental::InterceptionHookPoints;
    if (traced_ &&
        methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_INITIAL_METADATA)) {
      auto* md = methods->GetRecvInitialMetadata();
      if (md != nullptr) {
        auto it = md->find("traceparent");
        if (it != md->end()) traceparent_.assign(it->second.data(), it->second.size());
      }
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      const grpc::Status st = methods->GetSendStatus();
      CountCall(method_, static_cast<int>(st.error_code()));
      if (traced_) RecordSpan(st);
    }
    methods->Proceed();
  }

 private:
  // A server span for the call: the child of the caller's span when its traceparent is valid,
  // else the root of a new trace (OpenTelemetry's semantic conventions for RPC).
  void RecordSpan(const grpc::Status& st) {
    trace::Span s;
    uint8_t flags = 0;
    if (!trace::ParseTraceparent(traceparent_, &s.trace_id, &s.parent, &flags)) {
      s.trace_id = trace::NewTraceId();
      s.parent = trace::SpanId{};
    }
    s.span_id = trace::NewSpanId();
    const std::string& method = method_;
    s.name = method;
    s.kind = trace::SpanKind::kServer;
    s.start_unix_ns = start_ns_;
    s.end_unix_ns = RealtimeNs();
    s.status = st.ok() ? trace::SpanStatus::kOk : trace::SpanStatus::kError;
    if (!st.ok()) s.status_message = st.error_message();
    const size_t slash = method.find('/');
    s.Add("rpc.system", std::string("grpc"));
    s.Add("rpc.service", method.substr(0, slash));
    if (slash != std::string::npos) s.Add("rpc.method", method.substr(slash + 1));
    s.Add("rpc.grpc.status_code", static_cast<int64_t>(st.error_code()));
    trace::Record(std::move(s));
  }

  const std::string method_;  // KnownMethod
  const bool traced_;         // tracing was on when the call came in
  const uint64_t start_ns_;
  std::string traceparent_;
};

class CallInterceptorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new CallInterceptor(info);
  }
};

}  // namespace

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
MakeCallInterceptorFactory() {
  return std::make_unique<CallInterceptorFactory>();
}

const char* GrpcCodeName(int code) {
  static const char* const kNames[] = {"OK",
                                       "CANCELLED",
                                       "UNKNOWN",
                                       "INVALID_ARGUMENT",
                                       "DEADLINE_EXCEEDED",
                                       "NOT_FOUND",
                                       "ALREADY_EXISTS",
                                       "PERMISSION_DENIED",
                                       "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION",
                                       "ABORTED",
                                       "OUT_OF_RANGE",
                                       "UNIMPLEMENTED",
                                       "INTERNAL",
                                       "UNAVAILABLE",
                                       "DATA_LOSS",
                                       "UNAUTHENTICATED"};
  return code >= 0 && code < 17 ? kNames[code] : "UNKNOWN";
}

}  // namespace spd
