// spd2's Redfish service, made from the daemon's flags (docs/redfish.md).
#pragma once

#include <memory>

#include "common/status.h"
#include "daemon/options.h"
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

// nullptr when --redfish-listen is off. Errors: bad flags (kInvalidArgument: exit 2), no health
// cache to serve, the port taken, a certificate that cannot be made (exit 1).
Result<std::unique_ptr<RedfishRuntime>> StartRedfish(const DaemonOptions& o, bool health_running);
// The same flags checked before the pool opens (the address, the users file, a certificate and
// key given as files): kInvalidArgument, exit 2, with nothing made.
Status CheckRedfishFlags(const DaemonOptions& o);

}  // namespace spd
