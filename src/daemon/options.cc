#include "daemon/options.h"

#include <CLI/CLI.hpp>
#include <cctype>
#include <cmath>
#include <sstream>

#include "common/unix_socket.h"
#include "volume/pool_format.h"

namespace spd {

Result<uint64_t> ParseSize(const std::string& text) {
  if (text.empty()) return InvalidArgument("empty size");
  size_t pos = 0;
  double v;
  try {
    v = std::stod(text, &pos);
  } catch (...) {
    return InvalidArgument("not a size: '" + text + "'");
  }
  if (v < 0 || !std::isfinite(v)) return InvalidArgument("not a size: '" + text + "'");
  std::string unit = text.substr(pos);
  for (char& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (unit.size() > 1 && (unit.substr(1) == "IB" || unit.substr(1) == "B"))
    unit = unit.substr(0, 1);
  double mult = 1;
  if (unit.empty() || unit == "B") {
    mult = 1;
  } else if (unit == "K") {
    mult = 1024.0;
  } else if (unit == "M") {
    mult = 1024.0 * 1024;
  } else if (unit == "G") {
    mult = 1024.0 * 1024 * 1024;
  } else if (unit == "T") {
    mult = 1024.0 * 1024 * 1024 * 1024;
  } else {
    return InvalidArgument("unknown size unit in '" + text + "' (use K, M, G or T)");
  }
  double bytes = v * mult;
  if (bytes > 9.0e18) return InvalidArgument("size too large: '" + text + "'");
  return static_cast<uint64_t>(bytes);
}

Result<VolumeFlag> ParseVolumeSpec(const std::string& text) {
  VolumeFlag spec;
  size_t c1 = text.find(':');
  if (c1 == std::string::npos || c1 == 0)
    return InvalidArgument("--volume wants NAME:SIZE[:ro], got '" + text + "'");
  spec.name = text.substr(0, c1);
  std::string rest = text.substr(c1 + 1);
  size_t c2 = rest.find(':');
  std::string size = rest.substr(0, c2);
  while (c2 != std::string::npos) {
    rest = rest.substr(c2 + 1);
    c2 = rest.find(':');
    std::string mode = rest.substr(0, c2);
    if (mode == "ro" || mode == "rw") {
      spec.read_only = mode == "ro";
    } else if (mode == "flush") {
      spec.durability = Durability::kFlush;
      spec.durability_given = true;
    } else if (mode == "sync") {
      spec.durability = Durability::kSync;
      spec.durability_given = true;
    } else if (mode == "none") {
      spec.durability = Durability::kNone;
      spec.durability_given = true;
    } else {
      return InvalidArgument("--volume mode must be ro, rw, flush, sync or none, got '" + mode +
                             "'");
    }
  }
  SPD_ASSIGN_OR_RETURN(spec.size_bytes, ParseSize(size));
  if (spec.size_bytes == 0 || spec.size_bytes % Pool::kVolumeSizeAlign != 0)
    return InvalidArgument("--volume size must be a positive multiple of 4096 bytes, got " +
                           std::to_string(spec.size_bytes) + ": '" + text + "'");
  return spec;
}

namespace {

constexpr const char* kDescription = R"(spd2 - SP Driver 2.0 block-storage daemon

With no arguments spd2 starts in dev mode: it keeps everything under ./spd-data (a sparse pool
file, pool.img), creates volume vol0 (1 GiB) when the pool has none, and serves every volume
over NBD on DATA_DIR/nbd.sock and 127.0.0.1:10809. It needs no root. Every flag is also a key
of the TOML file given with --config (key = flag name without dashes, e.g. pool-size = "4G").

Sizes take binary units: 4096, 64K, 1M, 16G, 1T (KiB/MiB/GiB/TiB also accepted).
Signals: SIGTERM or SIGINT stop accepting, let in-flight requests finish, make all data
durable (flush) and exit 0.
Exit codes: 0 clean stop, 1 runtime failure (pool cannot be opened, port in use), 2 bad usage.

Offline check of a pool: spd2 check POOL [--repair]   (see spd2 check --help)
)";

}  // namespace

Result<DaemonOptions> ParseDaemonOptions(int argc, char** argv, std::string* help_text) {
  DaemonOptions o;
  CLI::App app(kDescription, "spd2");
  app.get_formatter()->column_width(34);
  app.set_config("--config", "", "Read options from this TOML file (flags given too win)");
  app.set_version_flag("--version", "spd2 0.1.0");

  std::string pool_size = "16G", chunk_size = "1M", backend = "uring", request_max = "32M",
              memory_max = "1G";
  std::vector<std::string> volumes;
  app.add_option("--data-dir", o.data_dir, "Directory for the pool file and sockets")
      ->capture_default_str();
  app.add_option("--pool", o.pool_path, "Pool file or block device (default DATA_DIR/pool.img)");
  app.add_option("--pool-size", pool_size,
                 "Size of a new pool file (sparse). Given for an existing pool of another size: "
                 "refused (pool growth is not supported yet)")
      ->capture_default_str();
  app.add_option("--chunk-size", chunk_size,
                 "Thin-provisioning unit of a new pool (power of two, >= 64K)")
      ->capture_default_str();
  app.add_option("--pool-overcommit-max", o.pool_overcommit_max,
                 "Thin provisioning's bound: a volume create or growth that would make the "
                 "volumes' sizes summed (spdctl pool list: PROVISIONED) exceed this many times "
                 "the pool's data area (SIZE) is refused with RESOURCE_EXHAUSTED (spdctl exit 9), "
                 "and so is a --volume at start. 0: no bound (thin: writes that find no free "
                 "chunk fail with ENOSPC); 1: no overcommit; 3: at most three times. Applies to "
                 "this run; volumes that exceed it already stay (they cannot grow)")
      ->check(CLI::Range(0.0, 1'000'000.0))
      ->capture_default_str();
  std::string map_memory_max = "1G";
  app.add_option("--pool-map-memory-max", map_memory_max,
                 "Memory the volumes' chunk maps may take: every volume's map is in memory "
                 "whole, 4 bytes per chunk of its size whether written or not (a 2P thin volume "
                 "of 1M chunks: 8G), so a volume create or growth beyond this is refused with "
                 "RESOURCE_EXHAUSTED (spdctl exit 9), and so is a --volume at start; 1G holds "
                 "256T of volumes with 1M chunks. 0: no bound")
      ->capture_default_str();
  app.add_option("--pool-volumes-max", o.pool_volumes_max,
                 "Volume table slots of a new pool: the most volumes it can ever hold (1 to "
                 "65536; a create beyond it fails with RESOURCE_EXHAUSTED). Applies only when "
                 "the pool is created: an existing pool keeps the size it was formatted with "
                 "(logged when this differs). Each slot costs 128 bytes in every checkpoint, "
                 "used or not (4096: 512 KiB), and every volume create, delete or resize "
                 "writes a checkpoint: do not make it larger than needed")
      ->check(CLI::Range(uint32_t{1}, pool_format::kVolumesMaxLimit))
      ->capture_default_str();
  app.add_option("--volume", volumes,
                 "NAME:SIZE[:ro][:flush|sync|none] volume to create at start when missing "
                 "(repeatable); an existing one grows to SIZE (never shrinks: refused) and takes "
                 "the durability given (none given: keeps its own). SIZE: a multiple of 4K. "
                 "Durability: flush (default) = durable at FLUSH/FUA; sync = every "
                 "write durable before its reply; none = scratch, may lose everything on crash");
  app.add_option(
         "--backend", backend,
         "I/O backend: uring (fast path), posix (kernel fallback), "
         "sim (in-memory, with latency/fault models), null (keeps nothing: every I/O succeeds at "
         "once; measures the stack above the backend)")
      ->capture_default_str();
  app.add_option("--cores", o.cores,
                 "Reactor threads, one per core (0 = every core this process may use). Reactor 0 "
                 "owns the pool; each new connection goes to the least loaded reactor, reactor 0 "
                 "on ties. An idle reactor sleeps")
      ->capture_default_str();
  app.add_option("--pin-reactors", o.pin_reactors,
                 "Pin reactor threads 1..N-1 each to a core of its own (reactor 0, the main "
                 "thread, is left to the scheduler); false: let the scheduler place them all")
      ->capture_default_str();
  app.add_option("--reactor-poll-us", o.reactor_poll_us,
                 "Adaptive polling: for this many microseconds after its last completion a "
                 "reactor looks for the next one without sleeping (saves a wake-up per request "
                 "at low queue depth, costs CPU). The window halves after a poll that finds "
                 "nothing and grows back when events come close together; an idle reactor "
                 "sleeps. 0: never poll")
      ->capture_default_str();
  app.add_flag("--buffered", o.buffered, "Do not use O_DIRECT on the pool file");
  app.add_flag("--fault-noop-flush", o.fault_noop_flush,
               "TEST ONLY, loses data: the uring and posix backends complete every flush without "
               "fdatasync and send FUA writes as plain writes, so nothing becomes durable "
               "(tests/integration/test_powercut.sh shows that it notices)");
  app.add_option("--queue-depth", o.queue_depth_max, "Backend I/Os in flight at most")
      ->capture_default_str();
  app.add_option("--commit-overlap", o.commit_overlap,
                 "Group commit: a FLUSH that arrives while a commit runs and has nothing to record "
                 "gets a device flush of its own at once (best where flushes run in parallel); 0: "
                 "it waits for the next commit (fewer, larger batches)")
      ->capture_default_str();
  app.add_option("--inline-memory-writes", o.inline_memory_writes,
                 "On a tmpfs/ramfs pool: write with pwrite on the reactor thread (a memory copy) "
                 "instead of handing each write to an io_uring worker (uring backend) or a "
                 "worker thread (posix backend)")
      ->capture_default_str();
  app.add_option("--inline-memory-reads", o.inline_memory_reads,
                 "On a tmpfs/ramfs pool: read with pread on the reactor thread instead of handing "
                 "each read to an io_uring worker (uring backend) or a worker thread (posix "
                 "backend)")
      ->capture_default_str();
  app.add_option("--remote-io", o.remote_io,
                 "A connection on a reactor other than its volume's owning reactor runs its "
                 "reads and writes of allocated space on its own reactor, through its own "
                 "channel to the pool file, instead of sending each to the owner and back. "
                 "Holes, allocation, a FUA write into a chunk whose allocation is not yet "
                 "durable, flush, trim, write-zeroes and block status still go to the owner. Not "
                 "for --backend sim")
      ->capture_default_str();
  app.add_option("--spread-volumes", o.spread_volumes,
                 "Give each volume an owning reactor of its own, the one owning the fewest "
                 "volumes (at start-up and at creation): the owner splits the volume's requests "
                 "and runs their I/O, and asks reactor 0 (which owns the pool's allocator, log "
                 "and commits) by message only for new chunks, freed chunks and commits. 0: "
                 "reactor 0 owns every volume. No effect with one reactor (--cores 1) or "
                 "--backend sim (no channels on other reactors: the owner passes every request "
                 "to reactor 0)")
      ->capture_default_str();
  app.add_option("--qos", o.qos,
                 "The QoS scheduler (docs/qos.md). on: every request passes the scheduler stage, "
                 "which orders requests by the volumes' intents (reservations, weights, limits, "
                 "priority) and keeps only a budget of device time outstanding, so that queues "
                 "form where they can be ordered; volumes report whether their intent is met "
                 "(spdctl volume get). off: requests go to the device in arrival order (FIFO), "
                 "intents are stored but not enforced")
      ->check(CLI::IsMember({"off", "on"}))
      ->capture_default_str();
  app.add_option(
      "--qos-cost-model", o.qos_cost_model,
      "The device cost model the scheduler charges requests by (JSON, written by "
      "spdctl calibrate). Default: DATA_DIR/default.cost.json when present, else the "
      "sim backend's own model, else a built-in model of a SATA-class SSD (docs/qos.md)");
  app.add_option(
         "--qos-budget-factor", o.qos_budget_factor,
         "Device time the scheduler keeps outstanding per reactor, in units of the cost "
         "of a 4 KiB read times the queue depth the device needs to deliver its capacity "
         "(measured by spdctl calibrate; else its parallelism). Larger: more throughput on a "
         "device the model underrates; smaller: less queueing inside the device")
      ->check(CLI::Range(0.25, 1024.0))
      ->capture_default_str();
  app.add_option("--qos-budget-max-factor", o.qos_budget_max_factor,
                 "How far the device budget may grow, in the units of --qos-budget-factor: "
                 "while requests wait for the budget and a 25% larger one completes 5% more, "
                 "it grows (a device that gains throughput with depth, such as a virtual disk "
                 "or a RAID, gets the depth it needs). Equal to --qos-budget-factor: a fixed "
                 "budget")
      ->check(CLI::Range(0.25, 4096.0))
      ->capture_default_str();
  app.add_option("--qos-limit-burst-ms", o.qos_limit_burst_ms,
                 "A volume that did less than its IOPS or bytes/s limit may then send this many "
                 "milliseconds of its limit's rate at once (a token bucket this deep), so that "
                 "a burst of requests under the limit is not spread out. Any 1-second window "
                 "sees at most limit x (1 s + this). 0: requests are paced strictly 1/limit "
                 "apart")
      ->check(CLI::Range(0.0, 1000.0))
      ->capture_default_str();
  app.add_option("--stage-stamps", o.stage_stamps,
                 "Stamp every request with the time it reaches each pipeline stage (arrival, "
                 "queued, dispatched, backend submit, backend complete, reply): what per-stage "
                 "latency, traces and probes read. Costs four clock reads per request (0.13 us "
                 "of CPU per I/O on the test VM)")
      ->capture_default_str();
  app.add_option("--posix-threads", o.posix_threads, "Worker threads of the posix backend")
      ->capture_default_str();
  app.add_option("--sim-seed", o.sim.seed, "sim: random seed (runs replay exactly)")
      ->capture_default_str();
  app.add_option("--sim-latency-us", o.sim.latency_base_ns, "sim: base latency per op (us)");
  app.add_option("--sim-jitter-us", o.sim.latency_jitter_ns, "sim: uniform extra latency (us)");
  app.add_option("--sim-read-us", o.sim.read_extra_ns, "sim: extra latency of each read (us)");
  app.add_option("--sim-write-us", o.sim.write_extra_ns, "sim: extra latency of each write (us)");
  app.add_option("--sim-flush-us", o.sim.flush_extra_ns,
                 "sim: extra latency of each device flush (us), e.g. 500 for a SATA SSD's cache "
                 "flush: makes group commit visible");
  app.add_option("--sim-iops", o.sim.iops_max, "sim: operations per second capacity (0 = none)");
  app.add_option("--sim-units", o.sim.units,
                 "sim: operations the modelled device serves at once (an SSD's channels); "
                 "--sim-iops and --sim-bandwidth stay its totals")
      ->check(CLI::Range(1u, 1024u))
      ->capture_default_str();
  app.add_option("--sim-bandwidth", o.sim.bandwidth_bytes_per_s,
                 "sim: bytes per second capacity (0 = none)");
  app.add_option("--sim-error-rate", o.sim.error_probability,
                 "sim: probability that a data op fails with EIO");
  app.add_option("--sim-error-after-ops", o.sim.error_after_ops,
                 "sim: --sim-error-rate applies only once this many reads and writes went by "
                 "(a device that starts failing under load)")
      ->capture_default_str();
  app.add_option("--nbd-unix", o.nbd_unix,
                 "NBD unix socket (default DATA_DIR/nbd.sock; off). A client there is who its "
                 "uid says (SO_PEERCRED), as on the control socket: see --nbd-local-any-user");
  std::string nbd_unix_mode = "0600", nbd_unix_group;
  app.add_option("--nbd-unix-mode", nbd_unix_mode,
                 "Permission bits of the NBD unix socket, octal (who may connect at all; what a "
                 "connected uid may open is the uid map's decision, docs/nbd.md)")
      ->capture_default_str();
  app.add_option("--nbd-unix-group", nbd_unix_group,
                 "Group of the NBD unix socket (a name or a number; default: the daemon's)");
  std::string control_mode = "0600", control_group;
  app.add_option("--control-socket", o.control_socket,
                 "The control API's unix socket, which spdctl and gRPC clients use (default "
                 "DATA_DIR/control.sock; off). Root and the daemon's own user are admins; other "
                 "users are refused (docs/control.md)");
  app.add_option("--control-socket-mode", control_mode,
                 "Permission bits of the control socket, octal (who may connect at all)")
      ->capture_default_str();
  app.add_option("--control-listen", o.control_listen,
                 "Also serve the control API on TCP, HOST:PORT, always with TLS "
                 "(--control-tls-cert, --control-tls-key); callers there present an API token "
                 "(spdctl token create) as 'authorization: Bearer TOKEN'. Default: off");
  app.add_option("--control-batch-threads", o.control_batch_threads,
                 "Run the control plane's threads (gRPC's, the audit worker, the socket listener) "
                 "as SCHED_BATCH: a control call that arrives never preempts a reactor, and waits "
                 "at most a scheduler slice when every core is busy with I/O. 0: ordinary threads "
                 "(calls preempt I/O; on the 2-core test VM 200 calls/s took 10% of 4 KiB QD32 "
                 "IOPS)")
      ->capture_default_str();
  app.add_option("--control-calls-max", o.control_calls_max,
                 "Control API calls handled at once; more are refused with RESOURCE_EXHAUSTED "
                 "(spdctl exit code 9: retry) and counted in spd_control_calls_busy_total")
      ->check(CLI::Range(1u, 65536u))
      ->capture_default_str();
  app.add_option("--control-tls-cert", o.control_tls_cert,
                 "PEM certificate (chain) of the control API's TCP listener");
  app.add_option("--control-tls-key", o.control_tls_key,
                 "PEM private key of the control API's TCP listener");
  app.add_option("--control-socket-group", control_group,
                 "Group of the control socket (a name or a number; default: the daemon's)");
  app.add_option("--nbd-listen", o.nbd_listen,
                 "NBD TCP address HOST:PORT (off to disable). An address outside 127.0.0.0/8 "
                 "needs --nbd-tls require, or --nbd-insecure. A plaintext client over loopback "
                 "is who its uid says: see --nbd-local-any-user")
      ->capture_default_str();
  app.add_option("--nbd-tls", o.nbd_tls,
                 "NBD's own TLS on the TCP listener (NBD_OPT_STARTTLS). off: refused. on: "
                 "offered, plaintext clients still served. require: a client must start TLS "
                 "before anything else is negotiated (other options are answered "
                 "NBD_REP_ERR_TLS_REQD, NBD_OPT_EXPORT_NAME closes). Needs --nbd-tls-psk or "
                 "--nbd-tls-cert/--nbd-tls-key")
      ->check(CLI::IsMember({"off", "on", "require"}))
      ->capture_default_str();
  app.add_option("--nbd-tls-psk", o.nbd_tls_psk,
                 "Pre-shared keys for NBD TLS: a file of IDENTITY:HEXKEY lines, as GnuTLS's "
                 "psktool writes them and libnbd, qemu and nbdkit read them (keys of at least "
                 "16 bytes; keep it mode 0600). Read once at start");
  app.add_option("--nbd-tls-cert", o.nbd_tls_cert,
                 "PEM certificate (chain) the NBD server presents for TLS; with --nbd-tls-key");
  app.add_option("--nbd-tls-key", o.nbd_tls_key, "PEM private key of --nbd-tls-cert");
  app.add_option("--nbd-tls-ca", o.nbd_tls_ca,
                 "PEM CA certificate(s): with it, an x509 NBD TLS client must present a valid "
                 "certificate this CA signed (else its handshake fails), and the subject's "
                 "Common Name (CN) of that certificate is its identity, a tenant as a PSK "
                 "identity is (PSK clients are not affected). WARNING: without --nbd-tls-ca, "
                 "x509 clients are not identified and see every volume");
  app.add_option("--nbd-tls-admin-identity", o.nbd_tls_admin_identities,
                 "A TLS identity (a PSK identity, or a client certificate's CN with "
                 "--nbd-tls-ca) that may list and open every volume (repeatable). Any other "
                 "identity is a tenant's: it lists and opens only the volumes whose policy "
                 "names that tenant (spdctl policy set VOLUME --tenant IDENTITY)");
  app.add_flag("--nbd-tls-unix", o.nbd_tls_unix,
               "Apply --nbd-tls to the NBD unix socket too (by default it stays plaintext: only "
               "local users its file mode lets in can reach it)");
  app.add_flag("--nbd-local-any-user", o.nbd_local_any_user,
               "INSECURE: do not check who a plaintext NBD client on this host is. By default a "
               "client of the unix socket (SO_PEERCRED) or of TCP over loopback (the owner of "
               "its socket, from the kernel's socket table) is its uid: root and the daemon's "
               "user open every volume, a uid the uid map makes operator or admin every "
               "volume, tenant its tenant's volumes (spdctl access set UID --role tenant "
               "--tenant T), anyone else none (spd_nbd_uid_refusals_total). With this flag "
               "every local user who can connect reads and writes every volume");
  app.add_flag("--nbd-insecure", o.nbd_insecure,
               "Allow --nbd-listen on a non-loopback address without --nbd-tls require "
               "(anyone who reaches it can read and write every volume)");
  app.add_option("--nbd-connections-max", o.nbd_connections_max,
                 "NBD connections at most. At the limit a new connection displaces the oldest "
                 "one still negotiating; with none negotiating it is refused (counted in "
                 "spd_nbd_connections_refused_total)")
      ->capture_default_str();
  app.add_option("--nbd-handshakes-max", o.nbd_handshakes_max,
                 "NBD connections still negotiating at most (at most --nbd-connections-max). A "
                 "new connection beyond it closes the oldest negotiating one, so sockets that "
                 "never negotiate cannot keep clients out "
                 "(spd_nbd_handshake_evictions_total)")
      ->capture_default_str();
  app.add_option("--nbd-handshake-timeout-ms", o.nbd_handshake_timeout_ms,
                 "Close an NBD connection that has not finished negotiating this many "
                 "milliseconds after it was accepted (spd_nbd_handshake_timeouts_total). "
                 "0: never")
      ->capture_default_str();
  app.add_option("--nbd-stall-timeout-ms", o.nbd_stall_timeout_ms,
                 "Close a negotiated NBD connection whose client does not move for this many "
                 "milliseconds while the server waits for it: a write payload that stopped "
                 "arriving, or replies it does not read (spd_nbd_stall_timeouts_total; its "
                 "queued replies are dropped). 0: never")
      ->capture_default_str();
  app.add_option("--nbd-idle-timeout-ms", o.nbd_idle_timeout_ms,
                 "Close a negotiated NBD connection after this many milliseconds without a "
                 "request and with none in flight (spd_nbd_idle_timeouts_total). 0: never, the "
                 "default, since a client such as a mounted nbd device may rightly sit idle "
                 "for hours")
      ->capture_default_str();
  app.add_option("--nbd-memory-max", memory_max,
                 "Memory of all NBD connections together for request buffers, request slots "
                 "and receive buffers (a negotiating connection only holds a 4 KiB buffer). "
                 "When it is spent, connections stop reading until replies give memory back "
                 "(requests wait, none fails; spd_nbd_memory_backpressure_total, gauge "
                 "spd_nbd_memory_bytes). Must hold one request of --nbd-request-max (its buffer "
                 "is rounded up by at most 25%) plus one connection's slots")
      ->capture_default_str();
  app.add_option("--nbd-inflight-max", o.nbd_inflight_max, "NBD requests in flight per connection")
      ->capture_default_str();
  app.add_option("--nbd-request-max", request_max,
                 "Largest NBD request accepted (advertised to clients, and every request up "
                 "to it is served: see --nbd-memory-max)")
      ->capture_default_str();
  app.add_option("--metrics-listen", o.metrics_listen,
                 "Prometheus endpoint HOST:PORT serving GET /metrics (off to disable)")
      ->capture_default_str();
  app.add_option("--volume-metrics", o.volume_metrics,
                 "Count every request per volume (spd_volume_* metrics: requests, bytes, errors "
                 "and latency histograms by operation, requests in flight, time held by the "
                 "scheduler). Off: the spd_volume_* request families stay empty; for A/B "
                 "measurements of their cost (docs/observability.md)")
      ->capture_default_str();
  app.add_option("--log-level", o.log_level, "debug, info, warn or error")->capture_default_str();
  app.add_option("--log-format", o.log_format,
                 "Log lines on stderr: text (one line a person reads: time, level, message) or "
                 "json (one object per line: time in RFC 3339 UTC with microseconds, level, "
                 "component, msg, and volume and correlation_id when the line is about one "
                 "request; docs/observability.md). Each place in the code that logs "
                 "prints at most 100 lines at once and 20 a second after that; the lines it "
                 "drops are counted (spd_log_suppressed_total) and its next line says how many")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  app.add_option("--slow-request-ms", o.slow_request_ms,
                 "Log a warning for every request that takes longer than this many "
                 "milliseconds from arrival to reply (spd_slow_requests_total), with its "
                 "volume, op, offset, length, correlation id (the NBD cookie) and where the "
                 "time went: the stage breakdown. Turns --stage-stamps on, which costs four "
                 "clock reads per request (0.13 us of CPU per I/O on the test VM): off by "
                 "default for that reason. 0: off")
      ->check(CLI::Range(uint64_t{0}, uint64_t{3'600'000}))
      ->capture_default_str();
  app.add_option("--trace-endpoint", o.trace_endpoint,
                 "Send trace spans to this OpenTelemetry collector, as OTLP over HTTP with JSON "
                 "bodies: the collector's traces URL, e.g. http://127.0.0.1:4318/v1/traces "
                 "(https works too). Every control API call becomes a span (the child of the "
                 "caller's W3C traceparent when it sent one), and I/O requests chosen by "
                 "--trace-sample-rate and --trace-slow-ms become a span with a child per stage. "
                 "Spans wait in a bounded queue (8192) and go in batches from a thread of their "
                 "own; when the collector is slow or gone they are dropped and counted "
                 "(spd_trace_spans_dropped_total, spd_trace_export_errors_total), I/O never "
                 "waits for them. Default: off (docs/observability.md)");
  app.add_option("--trace-sample-rate", o.trace_sample_rate,
                 "With --trace-endpoint: the fraction of each NBD connection's I/O requests "
                 "traced, 0 to 1 (0.001: one in 1,000). Turns --stage-stamps on. A traced "
                 "request costs a few microseconds of CPU (its spans are built on its reactor)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_option("--trace-slow-ms", o.trace_slow_ms,
                 "With --trace-endpoint: also trace every I/O request that takes longer than "
                 "this many milliseconds from arrival to reply. Turns --stage-stamps on. 0: off")
      ->check(CLI::Range(uint64_t{0}, uint64_t{3'600'000}))
      ->capture_default_str();
  app.add_option("--cluster", o.cluster,
                 "Join a cluster whose state lives in etcd: the etcd members' client URLs, "
                 "comma-separated (http://10.0.0.1:2379,http://10.0.0.2:2379). The node registers "
                 "as /spd/v1/nodes/NAME with a lease (--cluster-lease-ttl) and keeps serving its "
                 "local volumes whether etcd answers or not (it retries in the background; "
                 "`spdctl node info` shows the state). Without it the node runs alone")
      ->delimiter(',');
  app.add_option("--node-name", o.node_name,
                 "This node's name in the cluster, unique there: 1-63 of [A-Za-z0-9._-]. While "
                 "another live node holds the name (or this node's previous run, for up to one "
                 "lease TTL after it was killed) the node waits and retries. Default: the host "
                 "name. Needs --cluster");
  app.add_option("--cluster-lease-ttl", o.cluster_lease_ttl_s,
                 "Seconds of the node's etcd lease: etcd drops the registration (and, later, the "
                 "node's primaries) this long after the node stopped renewing it; renewed every "
                 "third of it. Needs --cluster")
      ->check(CLI::Range(int64_t{2}, int64_t{300}))
      ->capture_default_str();
  app.add_option("--replication-listen", o.replication_listen,
                 "Serve replicas on this IPv4 HOST:PORT: primaries of replicated volumes on other "
                 "nodes connect here to send their writes (docs/replication.md). Advertised in "
                 "the node's registration; without it the node holds no replicas and is never "
                 "placed. Needs --cluster");
  app.add_option("--replication-tls-psk", o.replication_tls_psk,
                 "TLS on the replication link with the pre-shared keys of FILE (GnuTLS psktool's "
                 "format, IDENTITY:HEXKEY per line; give every node the same file, mode 0600). "
                 "As a primary this node connects with the first key; as a replica it takes only "
                 "TLS sessions made with a key of the file: a peer without it fails the handshake "
                 "and nothing it sends is applied. Without it the link is plaintext TCP, and "
                 "anyone who reaches --replication-listen can write to the replicas "
                 "(docs/replication.md, \"TLS\"). Needs --replication-listen; not with "
                 "--replication-tls-cert")
      ->check(CLI::ExistingFile);
  app.add_option("--replication-tls-cert", o.replication_tls_cert,
                 "TLS on the replication link with x509 certificates instead of keys: this "
                 "node's certificate (PEM, chain), which names the node (--node-name) as a host "
                 "name (a DNS subjectAltName, or the CN without one) and serves both ends (an "
                 "extended key usage, if any, must allow TLS server and client authentication). "
                 "As a primary this node accepts only a replica whose certificate the CA signed "
                 "and names the node it connects to; as a replica it takes only a primary with a "
                 "certificate the CA signed, naming the node etcd names the volume's primary at "
                 "the hello's epoch. Needs --replication-tls-key and --replication-tls-ca")
      ->check(CLI::ExistingFile);
  app.add_option("--replication-tls-key", o.replication_tls_key,
                 "The private key (PEM) of --replication-tls-cert (mode 0600)")
      ->check(CLI::ExistingFile);
  app.add_option("--replication-tls-ca", o.replication_tls_ca,
                 "The CA certificate(s) (PEM) that sign the nodes' replication certificates; "
                 "with --replication-tls-cert")
      ->check(CLI::ExistingFile);
  app.add_option("--replication-resync-inflight", o.replication_resync_inflight,
                 "How many regions a resync or rebuild of a replica (docs/replication.md, "
                 "\"Resync\") keeps in flight at once, each read here, sent and written there. "
                 "More keeps the link and both disks busier (a faster rebuild); every one of them "
                 "is bytes that a foreground write to that replica may queue behind on the link")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  app.add_option("--replication-resync-region-kib", o.replication_resync_region_kib,
                 "The size of a resync's region in KiB, a multiple of 64 (the dirty map's unit) "
                 "from 64 to 1024 (a replica takes at most 1 MiB in one message); writes to a "
                 "region being copied wait until it is on the replica")
      ->check(CLI::Range(64, 1024))
      ->capture_default_str();
  app.add_option("--replication-activity-window-mib", o.replication_activity_window_mib,
                 "The primary's activity log (docs/replication.md, \"The primary's activity "
                 "log\"): at most this many MiB of 64 KiB units in which its own copy may differ "
                 "from its replicas'. A write to a unit not in the log waits until the unit is "
                 "durably there (an 8 KiB FUA write to DATA_DIR/replication/VOLUME.alog per round "
                 "that touches new units); when it is full, a flush of the primary's copy lets "
                 "older units go. After a power loss of the primary only these units (and the new "
                 "primary's in-flight writes) are copied back to it. 1 to 127; 0: no log (a "
                 "primary that lost power gets the whole volume back)")
      ->check(CLI::Range(0, 127))
      ->capture_default_str();
  app.add_option("--replication-unbarriered-mib", o.replication_unbarriered_mib,
                 "A replica acknowledges a write once applied; it is durable there at the next "
                 "barrier (a client's FLUSH). The primary keeps, per replica, what it "
                 "acknowledged since (at most 4,096 writes): should the replica lose power, that "
                 "is resynced with what it missed, not the whole volume. When a replica holds "
                 "this many MiB, or 2,048 writes, no barrier covered, the primary flushes the "
                 "volume itself (docs/replication.md, \"Power loss on a replica\"). 1 to 4096; 0: "
                 "never (a replica that loses power after more than 4,096 such writes gets the "
                 "whole volume)")
      ->check(CLI::Range(0, 4096))
      ->capture_default_str();
  app.add_option("--replication-inject-rtt-us", o.replication_inject_rtt_us,
                 "Testing: delay every replication message this node sends as a primary by this "
                 "many microseconds, as a network round trip would (there is no netem here). "
                 "Needs --cluster")
      ->check(CLI::Range(uint64_t{0}, uint64_t{1'000'000}))
      ->capture_default_str();
  app.add_option("--replication-inject-loss-ppm", o.replication_inject_loss_ppm,
                 "Testing: of every million replication messages this node sends as a primary, "
                 "this many are 'lost' and leave 200 ms late, as TCP's retransmission would send "
                 "them (the messages behind wait: the stream keeps its order). Needs --cluster")
      ->check(CLI::Range(uint32_t{0}, uint32_t{1'000'000}))
      ->capture_default_str();
  app.add_option("--replication-inject-seed", o.replication_inject_seed,
                 "Testing: the seed of --replication-inject-loss-ppm's choices (a run repeats "
                 "with the same seed and the same writes). Needs --replication-inject-loss-ppm")
      ->capture_default_str();
  std::string async_lag_bytes = "32M";
  app.add_option("--replication-async-lag-bytes", async_lag_bytes,
                 "Asynchronous volumes (spdctl volume create --replicas N --durability async) "
                 "this node is the primary of: at most this much payload acknowledged to clients "
                 "and not yet to every in-sync replica (K, M, G). At the bound, completions wait "
                 "for the replicas, as a synchronous volume's do. A failover may lose up to this "
                 "much acknowledged data. Needs --replication-listen")
      ->capture_default_str();
  app.add_option("--replication-async-lag-ms", o.replication_async_lag_ms,
                 "Asynchronous volumes: at most this old, in ms, the oldest message the replicas "
                 "have not acknowledged; beyond it completions wait for them. Needs "
                 "--replication-listen")
      ->check(CLI::Range(uint64_t{1}, uint64_t{3'600'000}))
      ->capture_default_str();
  app.add_flag("--quiet", o.quiet, "Do not print the how-to-connect lines");
  std::vector<std::string> health_source_periods;
  AddHealthOptions(&app, &o, &health_source_periods);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    *help_text = app.help();
    return Status(StatusCode::kCancelled, "help");
  } catch (const CLI::CallForVersion&) {
    *help_text = "spd2 0.1.0\n";
    return Status(StatusCode::kCancelled, "version");
  } catch (const CLI::ParseError& e) {
    return InvalidArgument(e.what());
  }
  // The sim latencies are given in microseconds on the command line.
  o.sim.latency_base_ns *= 1000;
  o.sim.latency_jitter_ns *= 1000;
  o.sim.read_extra_ns *= 1000;
  o.sim.write_extra_ns *= 1000;
  o.sim.flush_extra_ns *= 1000;
  SPD_ASSIGN_OR_RETURN(o.pool_size_bytes, ParseSize(pool_size));
  if (Result<uint64_t> m = ParseSize(map_memory_max); m.ok()) {
    o.pool_map_memory_max = *m;  // 0: no bound
  } else {
    return InvalidArgument("--pool-map-memory-max: " + std::string(m.status().message()));
  }
  o.pool_size_given = app.count("--pool-size") > 0;
  o.pool_volumes_max_given = app.count("--pool-volumes-max") > 0;
  // CLI11's range checks let "nan" through (every comparison with it is false).
  const std::pair<const char*, double> reals[] = {
      {"--pool-overcommit-max", o.pool_overcommit_max},
      {"--qos-budget-factor", o.qos_budget_factor},
      {"--qos-budget-max-factor", o.qos_budget_max_factor},
      {"--qos-limit-burst-ms", o.qos_limit_burst_ms},
      {"--trace-sample-rate", o.trace_sample_rate}};
  for (const auto& [flag, v] : reals)
    if (!std::isfinite(v)) return InvalidArgument(std::string(flag) + " must be a number, got nan");
  const bool handshakes_given = app.count("--nbd-handshakes-max") > 0;
  uint64_t chunk;
  SPD_ASSIGN_OR_RETURN(chunk, ParseSize(chunk_size));
  if (chunk < (64u << 10) || chunk > (1u << 30) || (chunk & (chunk - 1)) != 0)
    return InvalidArgument("--chunk-size must be a power of two between 64K and 1G");
  o.chunk_size_bytes = static_cast<uint32_t>(chunk);
  if (o.qos_budget_max_factor < o.qos_budget_factor)
    return InvalidArgument("--qos-budget-max-factor (" + std::to_string(o.qos_budget_max_factor) +
                           ") must be at least --qos-budget-factor (" +
                           std::to_string(o.qos_budget_factor) + ")");
  if (o.cluster.empty() && (!o.node_name.empty() || app.count("--cluster-lease-ttl") > 0 ||
                            !o.replication_listen.empty() || o.replication_inject_rtt_us != 0 ||
                            o.replication_inject_loss_ppm != 0))
    return InvalidArgument(
        "--node-name, --cluster-lease-ttl, --replication-listen and --replication-inject-* need "
        "--cluster (the etcd members)");
  if (app.count("--replication-inject-seed") > 0 && o.replication_inject_loss_ppm == 0)
    return InvalidArgument(
        "--replication-inject-seed needs --replication-inject-loss-ppm (it seeds that "
        "choice, and nothing else)");
  if (o.replication_resync_region_kib % 64 != 0)
    return InvalidArgument("--replication-resync-region-kib (" +
                           std::to_string(o.replication_resync_region_kib) +
                           ") must be a multiple of 64 (the dirty map's unit)");
  if (o.cluster.empty() && (app.count("--replication-resync-inflight") > 0 ||
                            app.count("--replication-resync-region-kib") > 0 ||
                            app.count("--replication-activity-window-mib") > 0 ||
                            app.count("--replication-unbarriered-mib") > 0))
    return InvalidArgument(
        "--replication-resync-*, --replication-activity-window-mib and "
        "--replication-unbarriered-mib need --cluster (the etcd members)");
  SPD_ASSIGN_OR_RETURN(o.replication_async_lag_bytes, ParseSize(async_lag_bytes));
  if (o.replication_async_lag_bytes < (1u << 20))
    return InvalidArgument(
        "--replication-async-lag-bytes must be at least 1M (a write of the "
        "largest size must fit)");
  if (o.replication_listen.empty() && (app.count("--replication-async-lag-bytes") > 0 ||
                                       app.count("--replication-async-lag-ms") > 0))
    return InvalidArgument(
        "--replication-async-lag-bytes and --replication-async-lag-ms need "
        "--replication-listen (and --cluster): they bound asynchronous replicated volumes");
  const bool repl_certs = !o.replication_tls_cert.empty() || !o.replication_tls_key.empty() ||
                          !o.replication_tls_ca.empty();
  if ((!o.replication_tls_psk.empty() || repl_certs) && o.replication_listen.empty())
    return InvalidArgument(
        "--replication-tls-psk and --replication-tls-cert need --replication-listen (and "
        "--cluster): they secure the replication link");
  if (repl_certs && !o.replication_tls_psk.empty())
    return InvalidArgument(
        "--replication-tls-psk or --replication-tls-cert, not both: the link uses one kind of "
        "credentials");
  if (repl_certs && (o.replication_tls_cert.empty() || o.replication_tls_key.empty() ||
                     o.replication_tls_ca.empty()))
    return InvalidArgument(
        "--replication-tls-cert, --replication-tls-key and --replication-tls-ca go together");
  for (const std::string& e : o.cluster)
    if (e.rfind("http://", 0) != 0 && e.rfind("https://", 0) != 0)
      return InvalidArgument("--cluster wants etcd client URLs (http://HOST:PORT), got '" + e +
                             "'");
  if (o.trace_endpoint.empty() && (o.trace_sample_rate > 0 || o.trace_slow_ms > 0))
    return InvalidArgument(
        "--trace-sample-rate and --trace-slow-ms choose requests to trace: they need "
        "--trace-endpoint (where the spans go)");
  uint64_t req;
  SPD_ASSIGN_OR_RETURN(req, ParseSize(request_max));
  if (req < 4096 || req > (1u << 30))
    return InvalidArgument("--nbd-request-max must be between 4K and 1G");
  o.nbd_request_bytes_max = static_cast<uint32_t>(req);
  SPD_ASSIGN_OR_RETURN(o.nbd_memory_bytes_max, ParseSize(memory_max));
  SPD_ASSIGN_OR_RETURN(o.control_socket_mode,
                       ParseSocketMode("--control-socket-mode", control_mode));
  if (!control_group.empty()) {
    SPD_ASSIGN_OR_RETURN(o.control_socket_gid,
                         ParseSocketGroup("--control-socket-group", control_group));
  }
  SPD_ASSIGN_OR_RETURN(o.nbd_unix_mode, ParseSocketMode("--nbd-unix-mode", nbd_unix_mode));
  if (!nbd_unix_group.empty()) {
    SPD_ASSIGN_OR_RETURN(o.nbd_unix_gid, ParseSocketGroup("--nbd-unix-group", nbd_unix_group));
  }
  SPD_ASSIGN_OR_RETURN(o.backend, ParseBackendKind(backend));
  for (const std::string& v : volumes) {
    VolumeFlag spec;
    SPD_ASSIGN_OR_RETURN(spec, ParseVolumeSpec(v));
    o.volumes.push_back(spec);
  }
  if (o.pool_path.empty()) o.pool_path = o.data_dir + "/pool.img";
  if (o.nbd_unix.empty()) o.nbd_unix = o.data_dir + "/nbd.sock";
  if (o.control_socket.empty()) o.control_socket = o.data_dir + "/control.sock";
  if (o.log_level != "debug" && o.log_level != "info" && o.log_level != "warn" &&
      o.log_level != "error")
    return InvalidArgument("--log-level must be debug, info, warn or error");
  if (o.cores > 1024) return InvalidArgument("--cores must be between 0 and 1024");
  if (o.reactor_poll_us > 10000)
    return InvalidArgument("--reactor-poll-us must be between 0 and 10000");
  if (o.nbd_inflight_max == 0 || o.nbd_inflight_max > 4096)
    return InvalidArgument("--nbd-inflight-max must be between 1 and 4096");
  // The default follows a smaller --nbd-connections-max; a value given explicitly must fit it.
  if (!handshakes_given)
    o.nbd_handshakes_max = std::min(o.nbd_handshakes_max, o.nbd_connections_max);
  if (o.nbd_handshakes_max == 0 || o.nbd_handshakes_max > o.nbd_connections_max)
    return InvalidArgument("--nbd-handshakes-max must be between 1 and --nbd-connections-max");
  if (o.nbd_memory_bytes_max < o.nbd_request_bytes_max)
    return InvalidArgument("--nbd-memory-max must be at least --nbd-request-max");
  SPD_RETURN_IF_ERROR(FinishHealthOptions(&o, health_source_periods));
  return o;
}

}  // namespace spd
