// The spd2 daemon: wires reactor, backend, pool, volumes and the NBD server together.
#pragma once

#include "daemon/options.h"

namespace spd {

// Runs until SIGTERM/SIGINT. Returns the process exit code (0 clean stop, 1 runtime failure).
int RunDaemon(const DaemonOptions& options);

}  // namespace spd
