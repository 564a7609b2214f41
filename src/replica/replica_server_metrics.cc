#include "replica/replica_server_metrics.h"

namespace spd::replica_server_metrics {

Gauge sessions_gauge("spd_replica_sessions", "Replication sessions (primaries) served now");
Counter sessions_refused_total("spd_replica_sessions_refused_total",
                               "Replication connections closed at accept: sessions_max reached");
Counter hellos_refused_total("spd_replica_hellos_refused_total",
                             "Replication hellos refused (stale epoch, no volume, size mismatch, "
                             "fence not recorded)");
Counter local_volumes_refused_total(
    "spd_replica_local_volumes_refused_total",
    "Replication hellos refused because the volume of that name here is a local volume, not a "
    "copy of the replicated one (its primary does not write over it)");
Counter primaries_refused_total(
    "spd_replica_primaries_refused_total",
    "Replication hellos refused because etcd does not name the certificate's node the volume's "
    "primary at the hello's epoch (TLS by certificates; counted in hellos_refused too)");
Counter fenced_total("spd_replica_fenced_total",
                     "Replicated writes refused because a newer primary's epoch fences them");
Counter protocol_errors_total("spd_replica_protocol_errors_total",
                              "Replication sessions closed for a malformed message");
Counter timeouts_total("spd_replica_timeouts_total",
                       "Replication sessions closed for a hello or message that did not come in "
                       "time, or replies the primary did not read");
Counter writes_total("spd_replica_writes_total",
                     "Replicated writes, write-zeroes and discards applied (any result)");
Counter write_errors_total("spd_replica_write_errors_total",
                           "Replicated writes answered with an error");
Counter barriers_total("spd_replica_barriers_total",
                       "Replication barriers made durable (generation recorded)");
Counter bytes_total("spd_replica_write_bytes_total", "Bytes of replicated writes received");
Counter tls_failures_total("spd_replica_tls_handshake_failures_total",
                           "Replication connections closed for a failed TLS handshake (no TLS, "
                           "an unknown identity or another key)");

Counter grows_total("spd_replica_grows_total",
                    "Copies grown on a primary's word (its volume grew: a grow message, or a "
                    "hello of a bigger volume)");
Counter grow_failures_total("spd_replica_grow_failures_total",
                            "Copies that could not grow on a primary's word (the primary's "
                            "link to them fails; they stay out of sync until they can)");

}  // namespace spd::replica_server_metrics
