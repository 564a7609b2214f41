// spd2 command line and config file: one struct, filled by CLI11 from flags and from the
// TOML file given with --config (every flag is also a config key of the same name).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "io/io_backend.h"
#include "volume/pool.h"
#include "volume/volume_manager.h"  // VolumeSpec

namespace CLI {
class App;
}

namespace spd {

// One --volume flag: the spec, and whether it named a durability (an existing volume keeps its
// own when it did not).
struct VolumeFlag : VolumeSpec {
  bool durability_given = false;
};

struct DaemonOptions {
  std::string data_dir = "./spd-data";
  std::string pool_path;  // default DATA_DIR/pool.img
  uint64_t pool_size_bytes = 16ull << 30;
  bool pool_size_given = false;  // --pool-size (or its config key) was given, not defaulted
  uint32_t chunk_size_bytes = 1u << 20;
  // PoolOptions::volumes_max of a new pool (--pool-volumes-max); an existing pool keeps its own.
  uint32_t pool_volumes_max = PoolOptions{}.volumes_max;
  bool pool_volumes_max_given = false;  // given, not defaulted (a differing pool is logged)
  double pool_overcommit_max = 0;       // PoolOptions::overcommit_max (--pool-overcommit-max)
  uint64_t pool_map_memory_max = PoolOptions{}.map_memory_max;  // --pool-map-memory-max
  std::vector<VolumeFlag> volumes;
  BackendKind backend = BackendKind::kUring;
  uint32_t reactor_poll_us = 100;  // adaptive poll window (ReactorOptions::poll_ns)
  unsigned cores = 0;              // reactors; 0 = every core this process may use
  bool buffered = false;
  unsigned queue_depth_max = 256;
  unsigned posix_threads = 4;
  bool inline_memory_writes = true;
  bool inline_memory_reads = true;
  bool remote_io = true;                // DispatcherOptions::remote_io
  bool spread_volumes = true;           // Pool::SetVolumeReactors over every reactor
  bool stage_stamps = false;            // DispatcherOptions::stamp_stages
  std::string qos = "off";              // off|on: the QoS scheduler (qos/qos_scheduler.h)
  std::string qos_cost_model;           // FILE; default DATA_DIR/default.cost.json, sim, built-in
  double qos_budget_factor = 2.0;       // QosScheduler::Options::budget_factor
  double qos_budget_max_factor = 32.0;  // QosScheduler::Options::budget_max_factor
  double qos_limit_burst_ms = 20;       // QosScheduler::Options::limit_burst_ns
  bool pin_reactors = true;             // ReactorOptions::pin_threads
  bool commit_overlap = true;
  bool fault_noop_flush = false;  // BackendOptions::fault_noop_flush: test only
  SimOptions sim;
  std::string nbd_unix;           // default DATA_DIR/nbd.sock; "off" disables
  uint32_t nbd_unix_mode = 0600;  // --nbd-unix-mode (octal)
  int nbd_unix_gid = -1;          // --nbd-unix-group, -1: the daemon's group
  // --nbd-local-any-user: no uid check of plaintext local NBD clients (NbdServerOptions::
  // authorize_uid stays empty). Insecure.
  bool nbd_local_any_user = false;
  std::string nbd_listen = "127.0.0.1:10809";  // "off" disables
  uint32_t nbd_connections_max = 1024;
  uint32_t nbd_inflight_max = 128;
  uint32_t nbd_request_bytes_max = 32u << 20;
  uint32_t nbd_handshakes_max = 64;
  uint64_t nbd_handshake_timeout_ms = 10'000;
  uint64_t nbd_idle_timeout_ms = 0;
  uint64_t nbd_stall_timeout_ms = 30'000;
  uint64_t nbd_memory_bytes_max = 1ull << 30;
  std::string nbd_tls = "off";  // off|on|require
  std::string nbd_tls_psk;
  std::string nbd_tls_cert;
  std::string nbd_tls_key;
  std::string nbd_tls_ca;
  bool nbd_tls_unix = false;
  std::vector<std::string> nbd_tls_admin_identities;  // PSK identities that see every volume
  bool nbd_insecure = false;
  std::string metrics_listen = "127.0.0.1:9465";  // "off" disables
  bool volume_metrics = true;                     // NbdServerOptions::volume_stats
  std::string control_socket;                     // default DATA_DIR/control.sock; "off" disables
  uint32_t control_socket_mode = 0600;            // --control-socket-mode (octal)
  int control_socket_gid = -1;                    // --control-socket-group, -1: the daemon's group
  std::string control_listen;                     // HOST:PORT for the API on TCP with TLS; "" off
  std::string control_tls_cert, control_tls_key;
  uint32_t control_calls_max = 256;   // ControlServerOptions::calls_in_flight_max
  bool control_batch_threads = true;  // ControlServerOptions::batch_threads
  std::string log_level = "info";
  std::string log_format = "text";  // text|json (common/log.h)
  uint64_t slow_request_ms = 0;     // NbdServerOptions::slow_request_ns; 0 = off
  std::string trace_endpoint;       // OTLP/HTTP traces URL; "" = tracing off
  double trace_sample_rate = 0;     // fraction of I/O requests traced
  uint64_t trace_slow_ms = 0;       // and every request slower than this; 0 = none
  bool quiet = false;               // no connection hints on stdout
  // Cluster membership (docs/replication.md): etcd endpoints; empty: this node runs alone.
  std::vector<std::string> cluster;
  std::string node_name;             // default: the host name
  int64_t cluster_lease_ttl_s = 10;  // ClusterNodeOptions::ttl_seconds
  std::string replication_listen;    // HOST:PORT of the replica server; "" off
  std::string replication_tls_psk;   // psktool FILE: TLS on the replication link; "" off
  // Or x509: this node's certificate and key, and the CA of the nodes' certificates (PEM).
  std::string replication_tls_cert, replication_tls_key, replication_tls_ca;
  uint32_t replication_resync_inflight = 4;       // ReplicaSetOptions::resync_regions_inflight
  uint32_t replication_resync_region_kib = 1024;  // ReplicaSetOptions::resync_region_bytes
  uint32_t replication_activity_window_mib = 64;  // ReplicaSetOptions::activity_log_units / 16
  uint32_t replication_unbarriered_mib = 64;      // ReplicaSetOptions::unbarriered_bytes >> 20
  uint64_t replication_inject_rtt_us = 0;         // ReplicaSetOptions::inject_* (testing)
  uint32_t replication_inject_loss_ppm = 0;
  uint64_t replication_inject_seed = 1;
  uint64_t replication_async_lag_bytes = 32ull << 20;  // ReplicaSetOptions::async_lag_*
  uint64_t replication_async_lag_ms = 1'000;
  // Host health (docs/health.md): auto (the collector runs when the cache can be made; a failure
  // is logged, never fatal), on (a failure stops the start, exit 1) or off.
  std::string health = "auto";
  std::string sysfs_root = "/sys";
  // The cache: a POSIX shared-memory name ("/spd2-health", libspdr's default) or, with a second
  // slash, the absolute path of a plain file ("/run/spd2/health.cache").
  std::string health_shm = "/spd2-health";
  uint64_t health_period_ms = 1'000;
  // --health-source-period PREFIX=MS: per-source periods (CollectorOptions::periods).
  std::vector<std::pair<std::string, uint64_t>> health_source_periods;
  // Redfish (docs/redfish.md): HOST:PORT of the HTTPS service, "off" disables.
  std::string redfish_listen = "off";
  std::string redfish_cert, redfish_key;  // PEM; both empty: a self-signed pair in DATA_DIR
  std::string redfish_users;              // accounts file (required with --redfish-listen)
  uint32_t redfish_connections_max = 64;
  uint32_t redfish_request_bytes_max = 16u << 10;
  uint32_t redfish_sessions_max = 64;
  uint64_t redfish_session_timeout_s = 1'800;
  uint32_t redfish_threads = 2;
  bool redfish_test_break_odata_version = false;  // test only: omit OData-Version
};

// The health and Redfish flags (options_health.cc), added to spd2's parser, and their checks
// once parsed.
void AddHealthOptions(CLI::App* app, DaemonOptions* o, std::vector<std::string>* source_periods);
Status FinishHealthOptions(DaemonOptions* o, const std::vector<std::string>& source_periods);

// Parses "4096", "64K", "1M", "1G", "1T", "1GiB", "1.5G". Binary units.
Result<uint64_t> ParseSize(const std::string& text);
// "NAME:SIZE[:MODE...]" with modes ro|rw and durability flush|sync|none.
Result<VolumeFlag> ParseVolumeSpec(const std::string& text);

// Parses argv. Returns kCancelled with the text to print for --help/--version (exit 0), and
// kInvalidArgument with a one-line message for bad input (exit 2).
Result<DaemonOptions> ParseDaemonOptions(int argc, char** argv, std::string* help_text);

}  // namespace spd
