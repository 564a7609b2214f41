// What nbd_connection.cc, nbd_connection_send.cc and nbd_connection_tls.cc share: counters
// (defined in nbd_connection_metrics.cc) and the TLS sizes.
#pragma once

#include <cstddef>

#include "common/counters.h"

namespace spd::nbd_conn {

extern Counter handshake_failures_total;
extern Counter send_errors_total;
extern Counter stall_timeouts_total;
extern Counter tls_sessions_total;
extern Counter tls_handshake_failures_total;
extern Gauge tls_sessions_gauge;
extern Counter requests_total;
extern Counter request_errors_total;
extern Counter rejected_total;
extern Counter bad_magic_total;
extern Histogram request_duration;
extern Counter backpressure_total;
extern Counter truncated_total;
extern Counter closed_for_delete_total;
extern Counter handshake_timeouts_total;
extern Counter handshake_evictions_total;
extern Counter idle_timeouts_total;
extern Counter uid_refusals_total;
extern Counter memory_backpressure_total;
extern Counter tls_memory_refusals_total;

// The largest TLS record's plaintext: replies are gathered into records of up to this size.
constexpr size_t kTlsRecordBytes = 16384;
// The TLS read-ahead buffer: a full record and its overhead, and then some.
constexpr size_t kTlsInBytes = 32768;
// What a GnuTLS session holds besides our buffers, charged as this estimate: its record buffers
// (up to a record, ~16 KiB with overhead, each way), keys and handshake state (docs/nbd.md).
constexpr size_t kTlsSessionEstimateBytes = 48 * 1024;

}  // namespace spd::nbd_conn
