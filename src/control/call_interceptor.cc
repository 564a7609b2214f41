#include "control/call_interceptor.h"

#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "common/counters.h"

namespace spd {
namespace {

// Calls by (method, code). Bounded: a server has a fixed set of methods and 17 codes; past
// kSeriesMax pairs (which a correct server never reaches) calls count under method "other".
constexpr size_t kSeriesMax = 1024;

std::mutex& CallsMu() {
  static std::mutex mu;
  return mu;
}
std::map<std::pair<std::string, int>, uint64_t>& Calls() {
  static std::map<std::pair<std::string, int>, uint64_t> calls;
  return calls;
}

void CountCall(const char* method, int code) {
  std::lock_guard<std::mutex> l(CallsMu());
  auto& calls = Calls();
  std::string m = method != nullptr && *method == '/' ? method + 1 : (method ? method : "");
  auto key = std::make_pair(std::move(m), code);
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

class CallInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit CallInterceptor(grpc::experimental::ServerRpcInfo* info) : info_(info) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using grpc::experimental::InterceptionHookPoints;
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS))
      CountCall(info_->method(), static_cast<int>(methods->GetSendStatus().error_code()));
    methods->Proceed();
  }

 private:
  grpc::experimental::ServerRpcInfo* info_;
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
