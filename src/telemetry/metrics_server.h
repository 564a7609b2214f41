// A tiny HTTP endpoint for Prometheus: GET /metrics returns every spd::Counter in the text
// exposition format. Runs on a reactor like everything else; each scrape is one short-lived
// connection (Connection: close). Anything but GET /metrics gets 404; oversized or slow
// requests are dropped (limits below), never allowed to hold the reactor.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "reactor/reactor.h"

namespace spd {

class MetricsServer {
 public:
  explicit MetricsServer(Reactor* reactor) : reactor_(reactor) {}
  ~MetricsServer();

  // host is an IPv4 address; port 0 picks a free port (see port()).
  [[nodiscard]] Status Start(const std::string& host, uint16_t port);
  uint16_t port() const { return port_; }

  static constexpr size_t kRequestBytesMax = 8192;
  static constexpr size_t kClientsMax = 64;

 private:
  struct Client : Completion {
    MetricsServer* server = nullptr;
    int fd = -1;
    std::string in;
    bool active = false;
  };
  struct Listener : Completion {
    MetricsServer* server = nullptr;
  };
  static void OnAccept(Completion* c, int32_t res, uint32_t flags);
  static void OnClient(Completion* c, int32_t res, uint32_t flags);
  void Serve(Client* cl);
  void Drop(Client* cl);

  Reactor* reactor_;
  int fd_ = -1;
  uint16_t port_ = 0;
  Listener listener_;
  std::vector<Client*> clients_;
};

}  // namespace spd
