#include "frontend/nbd/nbd_connection_internal.h"

namespace spd::nbd_conn {

Counter send_errors_total("spd_nbd_send_errors_total",
                          "Connections whose socket failed while replies were pending.");
Counter stall_timeouts_total(
    "spd_nbd_stall_timeouts_total",
    "Connections closed because a write payload stopped arriving, or replies went unread, for "
    "stall_timeout_ms.");
Counter handshake_failures_total("spd_nbd_handshake_failures_total",
                                 "Connections closed during negotiation.");
Counter tls_sessions_total(
    "spd_nbd_tls_sessions_total",
    "NBD connections whose TLS handshake (after NBD_OPT_STARTTLS) succeeded.");
Counter tls_handshake_failures_total(
    "spd_nbd_tls_handshake_failures_total",
    "NBD connections closed because their TLS handshake failed (a wrong key or certificate, an "
    "unknown PSK identity, no common cipher, a client that closed during it).");
Gauge tls_sessions_gauge("spd_nbd_tls_sessions", "NBD connections with a TLS session now.");
Counter requests_total("spd_nbd_requests_total", "NBD requests received.");
Counter request_errors_total("spd_nbd_request_errors_total",
                             "NBD requests answered with an error.");
Counter rejected_total("spd_nbd_requests_rejected_total",
                       "NBD requests refused by validation before reaching a volume.");
Counter bad_magic_total("spd_nbd_bad_request_magic_total",
                        "Connections closed because a request had a bad magic.");
Histogram request_duration(
    "spd_nbd_request_duration_seconds",
    "NBD requests from header read to reply queued for sending (server-side latency).");
Counter backpressure_total(
    "spd_nbd_backpressure_total",
    "Times a connection stopped reading because its in-flight limit was hit.");
Counter truncated_total("spd_nbd_truncated_payload_total",
                        "Connections that closed in the middle of a write payload.");
Counter closed_for_delete_total("spd_nbd_connections_closed_for_delete_total",
                                "Connections closed because their volume was deleted (forced).");
Counter handshake_timeouts_total(
    "spd_nbd_handshake_timeouts_total",
    "Connections closed because they had not negotiated within handshake_timeout_ms.");
Counter handshake_evictions_total(
    "spd_nbd_handshake_evictions_total",
    "Negotiating connections closed to make room for a newer one (handshakes_max or "
    "connections_max reached).");
Counter idle_timeouts_total("spd_nbd_idle_timeouts_total",
                            "Connections closed after idle_timeout_ms without a request.");
Counter uid_refusals_total(
    "spd_nbd_uid_refusals_total",
    "NBD connections refused an export because of their uid: a plaintext client on this host "
    "(the unix socket, TCP over loopback) asked for a volume its uid may not use, or its uid "
    "could not be told (once per connection; docs/nbd.md).");
Counter memory_backpressure_total(
    "spd_nbd_memory_backpressure_total",
    "Times a connection stopped reading because the NBD memory budget was spent.");
Counter tls_memory_refusals_total(
    "spd_nbd_tls_memory_refusals_total",
    "Connections closed after NBD_OPT_STARTTLS because the NBD memory budget (--nbd-memory-max) "
    "had no room for their TLS session (NbdConnection::TlsBytes); also in "
    "spd_nbd_tls_handshake_failures_total and spd_nbd_handshake_failures_total.");

}  // namespace spd::nbd_conn
