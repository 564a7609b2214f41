#include "redfish/redfish_server.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>

#include <cctype>
#include <cstdarg>
#include <cstdio>
#include <ctime>

#include "common/counters.h"
#include "common/log.h"

namespace spd::redfish {
namespace {

Gauge connections_gauge("spd_redfish_connections", "Redfish connections open.");
Counter connections_refused_total(
    "spd_redfish_connections_refused_total",
    "Redfish connections closed at accept: --redfish-connections-max were open.");
Counter requests_too_large_total(
    "spd_redfish_requests_too_large_total",
    "Redfish requests whose body passed --redfish-request-max (answered 413).");
Counter handler_exceptions_total("spd_redfish_handler_exceptions_total",
                                 "Redfish requests whose handler threw (answered 500).");
Counter queue_errors_total(
    "spd_redfish_reply_errors_total",
    "Redfish replies libmicrohttpd could not queue (the connection closes).");

uint64_t MonotonicNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1'000'000'000ull + uint64_t(ts.tv_nsec);
}

// One HTTP request in progress: its body so far.
struct RequestState {
  std::string body;
  bool too_large = false;
};

MHD_Result CollectHeader(void* cls, MHD_ValueKind, const char* key, const char* value) {
  auto* m = static_cast<std::map<std::string, std::string>*>(cls);
  std::string k = key;
  for (char& c : k) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  (*m)[k] = value ? value : "";
  return MHD_YES;
}

MHD_Result CollectArg(void* cls, MHD_ValueKind, const char* key, const char* value) {
  (*static_cast<std::map<std::string, std::string>*>(cls))[key] = value ? value : "";
  return MHD_YES;
}

void Log(void*, const char* fmt, va_list ap) {
  char buf[512];
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  // libmicrohttpd's lines end with a newline; TLS handshake failures of scanners are routine.
  std::string line = buf;
  while (!line.empty() && line.back() == '\n') line.pop_back();
  SPD_LOG_DEBUG("redfish: %s", line.c_str());
}

}  // namespace

struct RedfishServer::Callbacks {
  static MHD_Result Accept(void* cls, const sockaddr*, socklen_t) {
    auto* s = static_cast<RedfishServer*>(cls);
    if (s->open_.load(std::memory_order_relaxed) >= s->options_.connections_max) {
      connections_refused_total.Add();
      return MHD_NO;
    }
    return MHD_YES;
  }

  static void Notify(void* cls, MHD_Connection*, void**, MHD_ConnectionNotificationCode code) {
    auto* s = static_cast<RedfishServer*>(cls);
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
      s->open_.fetch_add(1, std::memory_order_relaxed);
      connections_gauge.Add(1);
    } else {
      s->open_.fetch_sub(1, std::memory_order_relaxed);
      connections_gauge.Add(-1);
    }
  }

  static void Completed(void*, MHD_Connection*, void** con_cls, MHD_RequestTerminationCode) {
    delete static_cast<RequestState*>(*con_cls);
    *con_cls = nullptr;
  }

  static MHD_Result Access(void* cls, MHD_Connection* conn, const char* url, const char* method,
                           const char*, const char* upload_data, size_t* upload_data_size,
                           void** con_cls) {
    auto* s = static_cast<RedfishServer*>(cls);
    if (*con_cls == nullptr) {
      *con_cls = new RequestState();
      return MHD_YES;
    }
    auto* st = static_cast<RequestState*>(*con_cls);
    if (*upload_data_size != 0) {
      if (st->body.size() + *upload_data_size > s->options_.request_bytes_max) {
        if (!st->too_large) requests_too_large_total.Add();
        st->too_large = true;
        st->body.clear();
      } else if (!st->too_large) {
        st->body.append(upload_data, *upload_data_size);
      }
      *upload_data_size = 0;
      return MHD_YES;
    }
    HttpRequest req;
    req.method = method;
    req.path = url;
    req.body = std::move(st->body);
    req.body_too_large = st->too_large;
    MHD_get_connection_values(conn, MHD_HEADER_KIND, &CollectHeader, &req.headers);
    MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, &CollectArg, &req.query);
    HttpResponse resp;
    try {
      resp = s->service_->Handle(req, MonotonicNs());
    } catch (const std::exception& e) {  // a bug must not take the daemon down with it
      handler_exceptions_total.Add();
      SPD_LOG_ERROR("redfish: %s %s: %s", method, url, e.what());
      resp.status = 500;
      resp.body = ErrorBody("InternalError", "The request failed inside the service.");
      resp.headers.emplace_back("Content-Type", "application/json;charset=utf-8");
    }
    MHD_Response* r = MHD_create_response_from_buffer(
        resp.body.size(), const_cast<char*>(resp.body.data()), MHD_RESPMEM_MUST_COPY);
    if (r == nullptr) {
      queue_errors_total.Add();
      return MHD_NO;
    }
    for (const auto& [k, v] : resp.headers) MHD_add_response_header(r, k.c_str(), v.c_str());
    const MHD_Result q = MHD_queue_response(conn, unsigned(resp.status), r);
    MHD_destroy_response(r);
    if (q != MHD_YES) queue_errors_total.Add();
    return q;
  }
};

Result<std::unique_ptr<RedfishServer>> RedfishServer::Start(const ServerOptions& o,
                                                            RedfishService* service) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(o.port);
  if (inet_pton(AF_INET, o.host.c_str(), &addr.sin_addr) != 1)
    return InvalidArgument("--redfish-listen wants an IPv4 address, got '" + o.host + "'");
  std::unique_ptr<RedfishServer> s(new RedfishServer());
  s->options_ = o;
  s->service_ = service;
  const unsigned flags =
      MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_TLS | MHD_USE_ERROR_LOG;
  RedfishServer* self = s.get();
  s->daemon_ = MHD_start_daemon(
      flags, o.port, &Callbacks::Accept, self, &Callbacks::Access, self, MHD_OPTION_SOCK_ADDR,
      reinterpret_cast<sockaddr*>(&addr), MHD_OPTION_THREAD_POOL_SIZE,
      static_cast<unsigned>(o.threads),
      // A hard bound beside the exact one of Accept (whose count may trail by a few accepts).
      MHD_OPTION_CONNECTION_LIMIT, static_cast<unsigned>(o.connections_max + o.threads),
      MHD_OPTION_CONNECTION_TIMEOUT, kIdleTimeoutS, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
      static_cast<size_t>(kHeaderBytesMax), MHD_OPTION_HTTPS_MEM_KEY, o.key_pem.c_str(),
      MHD_OPTION_HTTPS_MEM_CERT, o.cert_pem.c_str(), MHD_OPTION_HTTPS_PRIORITIES,
      "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2", MHD_OPTION_NOTIFY_CONNECTION,
      &Callbacks::Notify, self, MHD_OPTION_NOTIFY_COMPLETED, &Callbacks::Completed, self,
      MHD_OPTION_EXTERNAL_LOGGER, &Log, self, MHD_OPTION_END);
  if (s->daemon_ == nullptr)
    return Unavailable("redfish: cannot serve HTTPS on " + o.host + ":" + std::to_string(o.port) +
                       " (address in use, or the certificate and key do not load)");
  const MHD_DaemonInfo* info = MHD_get_daemon_info(s->daemon_, MHD_DAEMON_INFO_BIND_PORT);
  s->port_ = info != nullptr ? info->port : o.port;
  return s;
}

RedfishServer::~RedfishServer() { Stop(); }

void RedfishServer::Stop() {
  if (daemon_ == nullptr) return;
  MHD_stop_daemon(daemon_);
  daemon_ = nullptr;
}

}  // namespace spd::redfish
