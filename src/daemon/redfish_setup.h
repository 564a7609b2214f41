// spd2's Redfish service, made from the daemon's flags (docs/redfish.md).
#pragma once

#include <memory>
#include <vector>

#include "common/status.h"
#include "daemon/options.h"
#include "redfish/redfish_auth.h"
#include "redfish/redfish_server.h"
#include "redfish/redfish_service.h"
#include "spd/libspdr.h"

namespace spd {

// The HTTPS server, the service it runs and its mapping of the health cache; destroyed in
// that order.
struct RedfishRuntime {
  spdr_cache* cache = nullptr;
  std::unique_ptr<redfish::RedfishService> service;
  std::unique_ptr<redfish::RedfishServer> server;
  ~RedfishRuntime();
};

// The Redfish flags, checked and read before the pool opens: the address, the accounts of the
// users file, and a certificate and key given as files (checked; read again by StartRedfish,
// which may make them instead). kInvalidArgument (exit 2) with nothing made.
struct RedfishFlags {
  bool on = false;  // --redfish-listen is not off
  redfish::ServerOptions server;
  std::vector<redfish::Account> accounts;
};
Result<RedfishFlags> ReadRedfishFlags(const DaemonOptions& o);
// nullptr when --redfish-listen is off. Errors: no health cache to serve, the port taken, a
// certificate that cannot be made (exit 1).
Result<std::unique_ptr<RedfishRuntime>> StartRedfish(const DaemonOptions& o, RedfishFlags flags,
                                                     bool health_running);

}  // namespace spd
