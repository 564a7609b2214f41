// HTTPS for the Redfish service: GNU libmicrohttpd (GnuTLS) with a bounded pool of its own
// threads, each sleeping in epoll while idle; never on spd2's I/O reactors.
//
// Limits: connections_max open connections (one more is closed at accept and counted),
// request_bytes_max of body (the rest is read and dropped, the reply is 413), kIdleTimeoutS
// without a byte closes a connection, kHeaderBytesMax of request line and headers.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"
#include "redfish/redfish_service.h"

struct MHD_Daemon;

namespace spd::redfish {

inline constexpr unsigned kIdleTimeoutS = 60;
inline constexpr size_t kHeaderBytesMax = 32 << 10;

struct ServerOptions {
  std::string host = "127.0.0.1";  // IPv4 address to bind
  uint16_t port = 8443;            // 0: any free port (port() tells)
  std::string cert_pem, key_pem;
  uint32_t threads = 2;
  uint32_t connections_max = 64;
  uint32_t request_bytes_max = 16 << 10;
};

class RedfishServer {
 public:
  // Binds and starts the threads. service outlives the server.
  static Result<std::unique_ptr<RedfishServer>> Start(const ServerOptions& options,
                                                      RedfishService* service);
  ~RedfishServer();  // Stop
  // Closes the listening socket and every connection, joins the threads. Idempotent.
  void Stop();
  uint16_t port() const { return port_; }
  uint32_t connections() const { return open_.load(std::memory_order_relaxed); }

  // For libmicrohttpd's callbacks.
  struct Callbacks;

 private:
  RedfishServer() = default;
  ServerOptions options_;
  RedfishService* service_ = nullptr;
  MHD_Daemon* daemon_ = nullptr;
  uint16_t port_ = 0;
  std::atomic<uint32_t> open_{0};
};

}  // namespace spd::redfish
