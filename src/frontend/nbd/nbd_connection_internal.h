// What nbd_connection.cc, nbd_connection_send.cc and nbd_connection_tls.cc share: counters and the
// TLS sizes.
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

// The largest TLS record's plaintext: replies are gathered into records of up to this size.
constexpr size_t kTlsRecordBytes = 16384;
// The TLS read-ahead buffer: a full record and its overhead, and then some.
constexpr size_t kTlsInBytes = 32768;

}  // namespace spd::nbd_conn
