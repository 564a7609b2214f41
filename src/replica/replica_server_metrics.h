// The replica server's metrics (replica_server.h), defined in replica_server_metrics.cc.
#pragma once

#include "common/counters.h"

namespace spd::replica_server_metrics {

extern Gauge sessions_gauge;
extern Counter sessions_refused_total;
extern Counter hellos_refused_total;
extern Counter primaries_refused_total;
extern Counter local_volumes_refused_total;
extern Counter fenced_total;
extern Counter protocol_errors_total;
extern Counter timeouts_total;
extern Counter writes_total;
extern Counter write_errors_total;
extern Counter barriers_total;
extern Counter bytes_total;
extern Counter tls_failures_total;
extern Counter grows_total;
extern Counter grow_failures_total;

}  // namespace spd::replica_server_metrics
