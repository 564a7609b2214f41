#include "daemon/daemon.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <thread>

#include <nlohmann/json.hpp>

#include "cluster/cluster_node.h"
#include "common/log.h"
#include "common/os_util.h"
#include "common/trace.h"
#include "common/x509_gnutls.h"
#include "control/control_server.h"
#include "daemon/health_setup.h"
#include "daemon/qos_setup.h"
#include "daemon/redfish_setup.h"
#include "frontend/nbd/nbd_server.h"
#include "reactor/reactor.h"
#include "reactor/reactor_group.h"
#include "replica/replica_server.h"
#include "replica/replica_tls.h"
#include "replica/replication_manager.h"
#include "telemetry/metrics_server.h"
#include "telemetry/otlp_exporter.h"
#include "volume/pool.h"
#include "volume/pool_format.h"
#include "volume/pool_metrics.h"
#include "volume/volume_manager.h"
#include "volume/volume_metrics.h"

namespace spd {
namespace {

struct SignalWatch : Completion {
  int fd = -1;
  NbdServer* server = nullptr;
  Reactor* reactor = nullptr;
  ControlServer* control = nullptr;
  ReplicationManager* replication = nullptr;
  ReplicaServer* replica = nullptr;
  // What stops before anything drains: the Redfish server, then the health collector.
  std::function<void()> stop_first;
  bool stopping = false;
  struct Stopped : Task {
    Reactor* reactor = nullptr;
  } stopped;
  // The control server and the replication manager stop on a thread of their own (their work
  // in flight needs the reactors running), then the NBD server drains here, then the replica
  // server.
  std::thread control_stopper;
  struct AfterControl : Task {
    SignalWatch* w = nullptr;
  } after_control, after_nbd;
};

// Stops everything that started, in order: on SIGTERM or SIGINT, and when the start failed
// half-way (a server torn down while the reactor still watches its sockets would be called
// after it is gone). The reactor's loop ends once all of it drained.
void BeginStop(SignalWatch* w) {
  w->stopping = true;
  if (w->stop_first) w->stop_first();
  w->after_nbd.w = w;
  w->after_nbd.fn = [](Task* t) {
    SignalWatch* sw = static_cast<SignalWatch::AfterControl*>(t)->w;
    if (sw->replica == nullptr) return sw->reactor->Stop();
    sw->replica->Shutdown(&sw->stopped);
  };
  w->after_control.w = w;
  w->after_control.fn = [](Task* t) {
    SignalWatch* sw = static_cast<SignalWatch::AfterControl*>(t)->w;
    sw->server->Shutdown(&sw->after_nbd);
  };
  if (w->control == nullptr && w->replication == nullptr) return w->server->Shutdown(&w->after_nbd);
  w->control_stopper = std::thread([w] {
    NameThisThread("spd-stopper");
    if (w->control) w->control->Stop();
    if (w->replication) w->replication->Stop();
    w->reactor->Post(&w->after_control);
  });
}

void OnSignal(Completion* c, int32_t res, uint32_t flags) {
  auto* w = static_cast<SignalWatch*>(c);
  signalfd_siginfo si;
  bool got = false;
  while (read(w->fd, &si, sizeof si) == static_cast<ssize_t>(sizeof si)) got = true;
  if (!got || w->stopping) return;
  SPD_LOG_INFO("signal %u: draining in-flight requests", si.ssi_signo);
  BeginStop(w);
}

Status MakeDirs(const std::string& dir) {
  std::string cur;
  for (size_t i = 0; i <= dir.size(); ++i) {
    if (i == dir.size() || dir[i] == '/') {
      // The data directory itself owner-only (it holds the pool file and the sockets); the
      // parents it had to create, the usual 0755.
      const mode_t mode = i == dir.size() ? 0700 : 0755;
      if (!cur.empty() && mkdir(cur.c_str(), mode) < 0 && errno != EEXIST)
        return Status::FromErrno(errno, "mkdir " + cur);
    }
    if (i < dir.size()) cur += dir[i];
  }
  return Status::Ok();
}

bool SplitHostPort(const std::string& s, std::string* host, uint16_t* port) {
  size_t c = s.rfind(':');
  if (c == std::string::npos) return false;
  *host = s.substr(0, c);
  try {
    unsigned long p = std::stoul(s.substr(c + 1));
    if (p > 65535) return false;
    *port = static_cast<uint16_t>(p);
  } catch (...) {
    return false;
  }
  return !host->empty();
}

// The size recorded in the superblock of an existing pool at `path` (either copy), or 0 when
// `path` holds no pool (missing, empty, blank). Only the magic is checked: this is a guard
// against resizing by flag, not an open.
uint64_t ExistingPoolBytes(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  uint64_t bytes = 0;
  for (int copy = 0; copy < 2 && bytes == 0; ++copy) {
    pool_format::Superblock sb;
    if (pread(fd, &sb, sizeof sb, copy * pool_format::kBlockBytes) ==
            static_cast<ssize_t>(sizeof sb) &&
        sb.magic == pool_format::kSuperMagic)
      bytes = sb.pool_bytes;
  }
  close(fd);
  return bytes;
}

// Brings the pool's volumes to what the --volume flags ask: creates the missing ones, grows the
// smaller ones, applies a durability that was given. A volume larger than asked is refused
// (exit 2): a flag never shrinks a volume. Returns the exit status, or -1 to go on.
int ApplyVolumeFlags(VolumeManager* mgr, const std::vector<VolumeFlag>& wanted) {
  for (const VolumeFlag& v : wanted) {
    std::shared_ptr<VolumeHandle> h = mgr->Find(v.name);
    if (!h) {
      auto created = mgr->CreateBlocking(v);
      if (!created.ok()) {
        SPD_LOG_ERROR("volume %s: %s", v.name.c_str(), created.status().ToString().c_str());
        return created.status().code() == StatusCode::kInvalidArgument ? 2 : 1;
      }
      SPD_LOG_INFO("created volume %s (%llu bytes)", v.name.c_str(),
                   static_cast<unsigned long long>(v.size_bytes));
      continue;
    }
    const VolumeInfo info = h->info();
    if (v.size_bytes < info.size_bytes) {
      SPD_LOG_ERROR(
          "volume %s is %llu bytes; --volume asks for %llu: shrinking a volume at start-up is "
          "refused (give its size or larger)",
          v.name.c_str(), static_cast<unsigned long long>(info.size_bytes),
          static_cast<unsigned long long>(v.size_bytes));
      return 2;
    }
    if (v.size_bytes > info.size_bytes) {
      if (Status s = mgr->ResizeBlocking(v.name, v.size_bytes); !s.ok()) {
        SPD_LOG_ERROR("volume %s: %s", v.name.c_str(), s.ToString().c_str());
        return 1;
      }
      SPD_LOG_INFO("grew volume %s from %llu to %llu bytes", v.name.c_str(),
                   static_cast<unsigned long long>(info.size_bytes),
                   static_cast<unsigned long long>(v.size_bytes));
    }
    if (v.durability_given && v.durability != info.durability) {
      if (Status s = mgr->SetDurabilityBlocking(v.name, v.durability); !s.ok()) {
        SPD_LOG_ERROR("volume %s: %s", v.name.c_str(), s.ToString().c_str());
        return 1;
      }
      SPD_LOG_INFO("volume %s: durability %s (was %s)", v.name.c_str(),
                   DurabilityName(v.durability), DurabilityName(info.durability));
    }
    if (v.read_only != info.read_only)
      SPD_LOG_WARN("volume %s stays %s: read-only cannot change at start-up", v.name.c_str(),
                   info.read_only ? "read-only" : "read-write");
  }
  return -1;
}

void PrintHowToConnect(const DaemonOptions& o, const NbdServer& server, const Pool& pool) {
  std::string vol = pool.ListVolumes().empty() ? "vol0" : pool.ListVolumes().front().name;
  std::printf("spd2 ready.\n");
  if (o.nbd_unix != "off") {
    std::printf("  nbdinfo 'nbd+unix:///%s?socket=%s'\n", vol.c_str(), o.nbd_unix.c_str());
    std::printf(
        "  fio --name=randrw --ioengine=nbd --uri='nbd+unix:///%s?socket=%s' --rw=randrw "
        "--bs=4k --iodepth=32 --size=256M --runtime=10 --time_based\n",
        vol.c_str(), o.nbd_unix.c_str());
  }
  if (o.metrics_listen != "off") {
    std::printf("  curl -s http://%s/metrics\n", o.metrics_listen.c_str());
  }
  if (o.control_socket != "off") {
    std::printf("  spdctl --socket %s volume list\n", o.control_socket.c_str());
  }
  if (o.nbd_listen != "off") {
    if (o.nbd_tls != "off" && !o.nbd_tls_psk.empty()) {
      std::printf("  nbdinfo 'nbds://IDENTITY@127.0.0.1:%u/%s?tls-psk-file=%s'\n",
                  server.tcp_port(), vol.c_str(), o.nbd_tls_psk.c_str());
    } else if (o.nbd_tls != "off") {
      std::printf("  nbdinfo 'nbds://127.0.0.1:%u/%s?tls-certificates=DIR'\n", server.tcp_port(),
                  vol.c_str());
    }
    if (o.nbd_tls != "require")
      std::printf("  qemu-img info nbd://127.0.0.1:%u/%s\n", server.tcp_port(), vol.c_str());
  }
  std::fflush(stdout);
}

}  // namespace

int RunDaemon(const DaemonOptions& o) {
  if (o.log_level == "debug") SetLogLevel(LogLevel::kDebug);
  if (o.log_level == "warn") SetLogLevel(LogLevel::kWarn);
  if (o.log_level == "error") SetLogLevel(LogLevel::kError);
  if (o.log_format == "json") SetLogFormat(LogFormat::kJson);
  std::string node_name = o.node_name;
  if (!o.cluster.empty()) {
    if (node_name.empty()) {
      char host[256] = {};
      gethostname(host, sizeof host - 1);
      node_name = host;
    }
    if (Status s = ClusterNode::CheckName(node_name); !s.ok()) {
      SPD_LOG_ERROR("--node-name: %s%s", std::string(s.message()).c_str(),
                    o.node_name.empty() ? " (the host name; give --node-name)" : "");
      return 2;
    }
  }

  // The replication link's TLS credentials, loaded (and refused, exit 2) before the pool opens
  // or anything serves. Declared before the replica server and the primaries' sets, which use
  // them until they are gone.
  std::unique_ptr<ReplicaTls> replica_tls;
  if (!o.replication_tls_psk.empty() || !o.replication_tls_cert.empty()) {
    const bool psk = !o.replication_tls_psk.empty();
    Result<std::unique_ptr<ReplicaTls>> t =
        psk ? ReplicaTls::Load(o.replication_tls_psk)
            : ReplicaTls::LoadCertificates(o.replication_tls_cert, o.replication_tls_key,
                                           o.replication_tls_ca, node_name);
    if (!t.ok()) {
      SPD_LOG_ERROR("%s: %s", psk ? "--replication-tls-psk" : "--replication-tls-cert",
                    t.status().ToString().c_str());
      return 2;
    }
    replica_tls = std::move(*t);
  }
  // The control API's on TCP too (gRPC loads them later, and says only that it did not start).
  if (!o.control_listen.empty()) {
    if (o.control_tls_cert.empty() || o.control_tls_key.empty()) {
      SPD_LOG_ERROR(
          "--control-listen needs --control-tls-cert and --control-tls-key: the API is never "
          "served on TCP without TLS");
      return 2;
    }
    std::string why;
    if (CheckPemKeyPair(o.control_tls_cert, o.control_tls_key, &why) != 0) {
      SPD_LOG_ERROR("--control-tls-cert %s, --control-tls-key %s: %s", o.control_tls_cert.c_str(),
                    o.control_tls_key.c_str(), why.c_str());
      return 2;
    }
  }
  // Redfish's flags too.
  Result<RedfishFlags> redfish_flags = ReadRedfishFlags(o);
  if (!redfish_flags.ok()) {
    SPD_LOG_ERROR("%s", redfish_flags.status().ToString().c_str());
    return 2;
  }
  // NBD's TLS credentials likewise (the server takes them as loaded here).
  std::shared_ptr<NbdTlsCredentials> nbd_tls;
  if (o.nbd_tls != "off") {
    auto t = NbdTlsCredentials::Load({o.nbd_tls_psk, o.nbd_tls_cert, o.nbd_tls_key, o.nbd_tls_ca});
    if (!t.ok()) {
      SPD_LOG_ERROR("%s", t.status().ToString().c_str());
      return 2;
    }
    nbd_tls = std::move(t).value();
  }

  // Signals go through a signalfd so that they are handled on the reactor like any event.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigprocmask(SIG_BLOCK, &mask, nullptr);
  signal(SIGPIPE, SIG_IGN);

  if (Status s = MakeDirs(o.data_dir); !s.ok()) {
    SPD_LOG_ERROR("data directory: %s", s.ToString().c_str());
    return 1;
  }
  {
    struct stat st {};
    if (stat(o.data_dir.c_str(), &st) == 0 && (st.st_mode & 0077) != 0)
      SPD_LOG_WARN(
          "data directory %s is open to other users (mode %03o): they can reach the "
          "sockets, and the pool file if its own mode allows; chmod 700 it",
          o.data_dir.c_str(), static_cast<unsigned>(st.st_mode & 0777));
  }

  ReactorOptions ro;
  ro.force_epoll = o.backend == BackendKind::kPosix;
  ro.poll_ns = o.reactor_poll_us * 1000;
  ro.pin_threads = o.pin_reactors;
  ro.name = "0";
  auto reactor_or = Reactor::Create(ro);
  if (!reactor_or.ok()) {
    SPD_LOG_ERROR("reactor: %s", reactor_or.status().ToString().c_str());
    return 1;
  }
  std::unique_ptr<Reactor> reactor = std::move(reactor_or).value();
  if (reactor->engine() == ReactorEngine::kEpoll && o.backend != BackendKind::kPosix) {
    SPD_LOG_WARN("io_uring unavailable (%s): running on epoll with the posix backend",
                 reactor->fallback_reason().c_str());
  }

  if (o.pool_size_given && o.backend != BackendKind::kSim) {
    struct stat st {};
    if (stat(o.pool_path.c_str(), &st) == 0 && S_ISBLK(st.st_mode)) {
      SPD_LOG_ERROR(
          "--pool-size cannot apply to %s: a block device's pool is the whole device "
          "(drop --pool-size)",
          o.pool_path.c_str());
      return 2;
    }
    // Checked before the backend opens: opening would extend the file to the size asked.
    const uint64_t existing = ExistingPoolBytes(o.pool_path);
    if (existing != 0 && existing != o.pool_size_bytes) {
      SPD_LOG_ERROR(
          "pool %s is %llu bytes; --pool-size asks for %llu: changing the size of an existing "
          "pool is not supported yet (drop --pool-size to open it as it is)",
          o.pool_path.c_str(), static_cast<unsigned long long>(existing),
          static_cast<unsigned long long>(o.pool_size_bytes));
      return 2;
    }
  }

  BackendOptions bo;
  bo.kind = ChooseBackendKind(o.backend, *reactor);
  bo.path = o.pool_path;
  bo.size_bytes = o.pool_size_bytes;
  bo.create = true;
  bo.buffered = o.buffered;
  bo.queue_depth_max = o.queue_depth_max;
  bo.posix_threads = o.posix_threads;
  bo.inline_memory_writes = o.inline_memory_writes;
  bo.inline_memory_reads = o.inline_memory_reads;
  bo.fault_noop_flush = o.fault_noop_flush;
  if (o.fault_noop_flush)
    SPD_LOG_WARN("--fault-noop-flush: flushes and FUA make nothing durable (test only)");
  bo.sim = o.sim;
  auto backend = OpenBackend(bo, reactor.get());
  if (!backend.ok()) {
    SPD_LOG_ERROR("pool %s: %s", o.pool_path.c_str(), backend.status().ToString().c_str());
    return 1;
  }
  PoolOptions po;
  po.chunk_size_bytes = o.chunk_size_bytes;
  po.overlap_flush = o.commit_overlap;
  po.volumes_max = o.pool_volumes_max;
  po.overcommit_max = o.pool_overcommit_max;
  po.map_memory_max = o.pool_map_memory_max;
  auto pool_or = Pool::OpenOrCreate(std::move(backend).value(), reactor.get(), po);
  if (!pool_or.ok()) {
    SPD_LOG_ERROR("pool %s: %s", o.pool_path.c_str(), pool_or.status().ToString().c_str());
    return 1;
  }
  std::unique_ptr<Pool> pool = std::move(pool_or).value();
  // The table's size is fixed at format: an existing pool keeps its own.
  if (o.pool_volumes_max_given && pool->volumes_max() != o.pool_volumes_max)
    SPD_LOG_INFO(
        "pool %s has a volume table of %u slots, fixed when it was created: "
        "--pool-volumes-max %u applies only to a new pool",
        o.pool_path.c_str(), pool->volumes_max(), o.pool_volumes_max);

  VolumeManager volumes(pool.get());
  std::vector<VolumeFlag> wanted = o.volumes;
  if (wanted.empty() && pool->ListVolumes().empty()) {
    VolumeFlag vol0;
    vol0.name = "vol0";
    vol0.size_bytes = 1ull << 30;
    wanted.push_back(vol0);
  }
  if (int rc = ApplyVolumeFlags(&volumes, wanted); rc >= 0) return rc;

  NbdServerOptions no;
  if (o.nbd_unix != "off") no.unix_path = o.nbd_unix;
  no.unix_mode = o.nbd_unix_mode;
  no.unix_gid = o.nbd_unix_gid;
  if (o.nbd_listen != "off") {
    if (!SplitHostPort(o.nbd_listen, &no.tcp_host, &no.tcp_port)) {
      SPD_LOG_ERROR("--nbd-listen wants HOST:PORT, got '%s'", o.nbd_listen.c_str());
      return 2;
    }
  }
  no.connections_max = o.nbd_connections_max;
  no.conn_inflight_max = o.nbd_inflight_max;
  no.request_bytes_max = o.nbd_request_bytes_max;
  no.handshakes_max = o.nbd_handshakes_max;
  no.handshake_timeout_ms = o.nbd_handshake_timeout_ms;
  no.idle_timeout_ms = o.nbd_idle_timeout_ms;
  no.stall_timeout_ms = o.nbd_stall_timeout_ms;
  no.memory_bytes_max = o.nbd_memory_bytes_max;
  no.slow_request_ns = o.slow_request_ms * 1'000'000;
  // Tracing: the exporter's thread starts before anything records a span and is stopped (its
  // last batch sent) after the reactors, at the end of Run.
  std::unique_ptr<OtlpExporter> exporter;
  if (!o.trace_endpoint.empty()) {
    OtlpOptions eo;
    eo.endpoint = o.trace_endpoint;
    eo.service_version = "0.1.0";
    char host[256] = {};
    if (gethostname(host, sizeof host - 1) == 0) eo.service_instance = host;
    exporter = std::make_unique<OtlpExporter>(eo);
    if (Status s = exporter->Start(); !s.ok()) {
      SPD_LOG_ERROR("%s", s.ToString().c_str());
      return 2;
    }
    trace::Options to;
    to.io_sample_rate = o.trace_sample_rate;
    to.io_slow_ns = o.trace_slow_ms * 1'000'000;
    trace::Enable(to);
    no.trace_sample_period = trace::IoSamplePeriod();
    no.trace_slow_ns = trace::IoSlowNs();
    const std::string io =
        no.trace_sample_period > 0
            ? "one in " + std::to_string(no.trace_sample_period) + " I/O requests"
            : std::string("no sampled I/O");
    SPD_LOG_INFO("tracing to %s: every control call, %s%s", eo.endpoint.c_str(), io.c_str(),
                 no.trace_slow_ns > 0 ? ", every slow I/O request" : "");
  }
  struct TraceOff {
    ~TraceOff() { trace::Disable(); }
  } trace_off;
  no.tls_mode = o.nbd_tls == "require" ? nbd::TlsMode::kRequire
                : o.nbd_tls == "on"    ? nbd::TlsMode::kOn
                                       : nbd::TlsMode::kOff;
  no.tls_unix = o.nbd_tls_unix;
  no.tls_files = {o.nbd_tls_psk, o.nbd_tls_cert, o.nbd_tls_key, o.nbd_tls_ca};
  no.tls_credentials = nbd_tls;
  no.allow_insecure_tcp = o.nbd_insecure;
  no.volume_stats = o.volume_metrics;
  // Authorization by TLS identity (nbd_handshake.h: it filters NBD_OPT_LIST and refuses the
  // others' volumes at INFO/GO/EXPORT_NAME). A PSK identity, or with --nbd-tls-ca the Common
  // Name of an x509 client's certificate, is a tenant: it sees the volumes whose policy names
  // it, unless it is one of --nbd-tls-admin-identity. No identity (plaintext where the mode
  // allows it, x509 without --nbd-tls-ca): every volume, unless the client is on this host,
  // where its uid decides (authorize_uid, below). The control server, which knows the
  // volumes' tenants, starts after NBD: until then tenant identities see nothing.
  auto tenancy = std::make_shared<std::atomic<ControlServer*>>(nullptr);
  if (no.tls_mode != nbd::TlsMode::kOff) {
    if (!o.nbd_tls_cert.empty() && o.nbd_tls_ca.empty())
      SPD_LOG_WARN(
          "nbd tls: --nbd-tls-cert without --nbd-tls-ca: x509 clients are not identified and "
          "see every volume");
    no.authorize = [tenancy, admins = o.nbd_tls_admin_identities](std::string_view identity,
                                                                  std::string_view export_name) {
      if (identity.empty()) return true;
      for (const std::string& a : admins)
        if (a == identity) return true;
      ControlServer* c = tenancy->load(std::memory_order_acquire);
      return c != nullptr && c->VolumeTenant(std::string(export_name)) == identity;
    };
  }
  // Authorization by uid (docs/nbd.md, who may connect): a plaintext client on this host (the
  // unix socket, TCP over loopback) is its uid, with the control socket's roles: root, the
  // daemon's user, admins and operators use every volume, a tenant its tenant's, anyone else
  // none. The uid map lives in the control server's state store: until it runs (and with
  // --control-socket off) only root and the daemon's user. --nbd-local-any-user: no check.
  if (!o.nbd_local_any_user) {
    no.authorize_uid = [tenancy, self = geteuid()](uint32_t uid, std::string_view export_name) {
      if (ControlServer* c = tenancy->load(std::memory_order_acquire))
        return c->UidMayUseVolume(uid, std::string(export_name));
      return uid == 0 || uid == self;
    };
  } else {
    SPD_LOG_WARN(
        "nbd: --nbd-local-any-user: every local user who can connect (the unix socket, TCP over "
        "loopback) may read and write every volume");
  }
  if (Status s = NbdServer::CheckOptions(no); !s.ok()) {
    SPD_LOG_ERROR("%s", s.ToString().c_str());
    return 2;
  }
  // Default: one reactor per core this process may use. With the remote fast path a connection
  // on reactor 1 needs no message to reactor 0 for its reads and writes, and on the 2-core test
  // VM two reactors beat one at two connections in IOPS, p99 and CPU per I/O, and equal it at
  // one (docs/nbd.md). Extra reactors sleep when idle. Started before the dispatcher, which
  // holds a backend channel on each owning reactor and must go first.
  unsigned cores = o.cores ? o.cores : std::max(1u, ReactorGroup::AvailableCores());
  auto group_or = ReactorGroup::Start(reactor.get(), cores, ro);
  if (!group_or.ok()) {
    SPD_LOG_ERROR("%s", group_or.status().ToString().c_str());
    return 1;
  }
  std::unique_ptr<ReactorGroup> group = std::move(group_or).value();
  std::vector<Reactor*> conn_reactors;
  for (unsigned i = 0; i < group->size(); ++i) conn_reactors.push_back(group->at(i));
  // sim has no channels on other reactors: its owners would pass everything to reactor 0.
  if (o.spread_volumes && bo.kind != BackendKind::kSim) {
    std::vector<Reactor*> owners(
        conn_reactors.begin(),
        conn_reactors.begin() + std::min<size_t>(conn_reactors.size(), Pool::kVolumeReactorsMax));
    if (Status s = pool->SetVolumeReactors(owners); !s.ok()) {
      SPD_LOG_ERROR("%s", s.ToString().c_str());
      return 1;
    }
  }
  DispatcherOptions dopt;
  dopt.remote_io = o.remote_io;
  // The slow-request line's breakdown is made of the stage stamps.
  dopt.stamp_stages =
      o.stage_stamps || o.slow_request_ms > 0 || no.trace_sample_period > 0 || no.trace_slow_ns > 0;
  // The control server, which reports violations as events, starts later.
  auto control_events = std::make_shared<std::atomic<ControlServer*>>(nullptr);
  auto qos_or = MakeQosScheduler(
      o, bo, conn_reactors, [control_events](const std::string& volume, const std::string& reason) {
        SPD_LOG_WARN("qos: volume %s: intent violated: %s", volume.c_str(), reason.c_str());
        if (ControlServer* c = control_events->load(std::memory_order_acquire))
          c->ReportIntentViolation(volume, reason);
      });
  if (!qos_or.ok()) {
    SPD_LOG_ERROR("%s", qos_or.status().ToString().c_str());
    return 1;
  }
  std::unique_ptr<qos::QosScheduler> qos = std::move(qos_or).value();
  // The pool's zeroing and punching go through the scheduler's background class; the gate is
  // cleared before the scheduler goes (this guard is destroyed first).
  struct BackgroundGateGuard {
    Pool* pool;
    ~BackgroundGateGuard() { pool->SetBackgroundGate(nullptr); }
  } background_gate_guard{pool.get()};
  if (qos) pool->SetBackgroundGate(qos->BackgroundGate(reactor.get()));
  Dispatcher dispatcher(pool.get(), dopt, qos.get());
  NbdServer server(reactor.get(), &dispatcher, &volumes, no, conn_reactors);
  MetricsServer metrics(reactor.get());
  // Per-volume figures (spd_volume_*), the tenant label from the control plane once it runs.
  VolumeMetrics volume_metrics(&volumes, [tenancy](const std::string& volume) {
    ControlServer* c = tenancy->load(std::memory_order_acquire);
    return c != nullptr ? c->VolumeTenant(volume) : std::string();
  });
  // Pool figures (spd_pool_*): rendered on this reactor, the pool's, where the server runs.
  PoolMetrics pool_metrics(pool.get(), "default");
  std::vector<std::string> nbd_endpoints;
  // The replica server: primaries of replicated volumes on other nodes send their writes here.
  std::unique_ptr<ReplicaServer> replica;
  auto primaries_of = std::make_shared<std::atomic<ReplicationManager*>>(nullptr);
  std::unique_ptr<ClusterNode> cluster;
  std::unique_ptr<ReplicationManager> replication;
  std::unique_ptr<ControlServer> control;
  std::unique_ptr<health::Collector> health;
  std::unique_ptr<RedfishRuntime> redfish;

  // SIGTERM and SIGINT, watched before anything serves: the same stop serves a start that
  // fails half-way.
  SignalWatch sig;
  sig.stop_first = [&health, &redfish] {
    if (redfish) redfish->server->Stop();
    if (health) health->Stop();
  };
  sig.fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  sig.server = &server;
  sig.reactor = reactor.get();
  sig.fn = &OnSignal;
  sig.stopped.reactor = reactor.get();
  sig.stopped.fn = [](Task* t) {
    // Everything drained: leave the loop.
    static_cast<SignalWatch::Stopped*>(t)->reactor->Stop();
  };
  if (sig.fd < 0 || !reactor->Watch(sig.fd, &sig).ok()) {
    SPD_LOG_ERROR("signalfd: %s", strerror(errno));
    if (sig.fd >= 0) close(sig.fd);
    return 1;
  }

  // Everything else starts here, in order. A failure (a port taken, a refused file) is
  // returned as the exit status once what did start has stopped as on a signal.
  const int start_rc = [&]() -> int {
    if (Status s = server.Start(); !s.ok()) {
      SPD_LOG_ERROR("%s", s.ToString().c_str());
      return 1;
    }
    if (o.metrics_listen != "off") {
      std::string host;
      uint16_t port = 0;
      if (!SplitHostPort(o.metrics_listen, &host, &port)) {
        SPD_LOG_ERROR("--metrics-listen wants HOST:PORT, got '%s'", o.metrics_listen.c_str());
        return 2;
      }
      if (Status s = metrics.Start(host, port); !s.ok()) {
        SPD_LOG_ERROR("%s", s.ToString().c_str());
        return 1;
      }
    }

    if (o.nbd_unix != "off") nbd_endpoints.push_back("unix:" + o.nbd_unix);
    if (o.nbd_listen != "off")
      nbd_endpoints.push_back("tcp:" + o.nbd_listen.substr(0, o.nbd_listen.rfind(':')) + ":" +
                              std::to_string(server.tcp_port()));

    std::string replica_address;
    if (!o.replication_listen.empty()) {
      ReplicaServerOptions ro;
      ro.tls = replica_tls.get();
      ro.state_dir = o.data_dir + "/replication";
      ro.copies_only = true;
      // With certificates a peer is a node: only the one etcd names the primary may be one.
      if (replica_tls && replica_tls->certificates())
        ro.authorize_primary = [primaries_of](const std::string& volume, uint64_t epoch,
                                              const std::string& node) {
          ReplicationManager* rm = primaries_of->load(std::memory_order_acquire);
          return rm ? rm->AuthorizePrimary(volume, epoch, node)
                    : Unavailable("the replication manager has not started");
        };
      if (!SplitHostPort(o.replication_listen, &ro.host, &ro.port)) {
        SPD_LOG_ERROR("--replication-listen wants HOST:PORT, got '%s'",
                      o.replication_listen.c_str());
        return 2;
      }
      replica = std::make_unique<ReplicaServer>(reactor.get(), &dispatcher, &volumes, ro);
      if (Status s = replica->Start(); !s.ok()) {
        SPD_LOG_ERROR("--replication-listen: %s", s.ToString().c_str());
        replica.reset();
        return s.code() == StatusCode::kInvalidArgument ? 2 : 1;
      }
      replica_address = ro.host + ":" + std::to_string(replica->port());
    }

    // Cluster membership: registers in the background; the node serves whether etcd answers or not.
    if (!o.cluster.empty()) {
      char host[256] = {};
      gethostname(host, sizeof host - 1);
      nlohmann::json info = {{"name", node_name},
                             {"hostname", host},
                             {"pid", static_cast<uint32_t>(getpid())},
                             {"version", "0.1.0"},
                             {"nbd", nbd_endpoints}};
      if (replica) info["replication"] = replica_address;
      ClusterNodeOptions cno;
      cno.endpoints = o.cluster;
      cno.name = node_name;
      cno.info_json = info.dump();
      cno.ttl_seconds = o.cluster_lease_ttl_s;
      Result<std::unique_ptr<ClusterNode>> c = ClusterNode::Start(cno);
      if (!c.ok()) {
        SPD_LOG_ERROR("--cluster: %s", c.status().ToString().c_str());
        return 2;
      }
      cluster = std::move(*c);
    }
    if (cluster && replica) {
      ReplicationManagerOptions rmo;
      rmo.resync_regions_inflight = o.replication_resync_inflight;
      rmo.resync_region_bytes = o.replication_resync_region_kib << 10;
      rmo.activity_log_units = o.replication_activity_window_mib * 16;
      rmo.unbarriered_bytes = uint64_t{o.replication_unbarriered_mib} << 20;
      rmo.inject_rtt_us = o.replication_inject_rtt_us;
      rmo.inject_loss_ppm = o.replication_inject_loss_ppm;
      rmo.inject_seed = o.replication_inject_seed;
      rmo.async_lag_bytes = o.replication_async_lag_bytes;
      rmo.async_lag_ms = o.replication_async_lag_ms;
      rmo.tls = replica_tls.get();
      rmo.state_dir = o.data_dir + "/replication";
      rmo.on_event = [control_events](bool primary_changed, const std::string& volume,
                                      const std::string& message) {
        if (ControlServer* c = control_events->load(std::memory_order_acquire))
          c->ReportReplication(primary_changed, volume, message);
      };
      replication = std::make_unique<ReplicationManager>(cluster.get(), &volumes, &dispatcher, rmo);
      replication->Start();
      primaries_of->store(replication.get(), std::memory_order_release);
    }

    if (o.control_socket != "off") {
      ControlServerOptions co;
      co.socket_path = o.control_socket;
      co.socket_mode = o.control_socket_mode;
      co.socket_group = o.control_socket_gid;
      co.version = "0.1.0";
      co.data_dir = o.data_dir;
      co.engine = reactor->engine() == ReactorEngine::kUring ? "io_uring" : "epoll";
      co.reactors = group->size();
      co.nbd_endpoints = nbd_endpoints;
      co.cluster = cluster.get();
      co.replication = replication.get();
      if (o.metrics_listen != "off") co.metrics_endpoint = o.metrics_listen;
      co.pool_path = o.pool_path;
      co.audit_dir = o.data_dir + "/audit";
      co.state_dir = o.data_dir;
      co.tcp_listen = o.control_listen;
      co.calls_in_flight_max = o.control_calls_max;
      co.batch_threads = o.control_batch_threads;
      co.qos = qos.get();
      co.dispatcher = &dispatcher;
      co.tls_cert_file = o.control_tls_cert;
      co.tls_key_file = o.control_tls_key;
      control = std::make_unique<ControlServer>(&volumes, co);
      if (Status s = control->Start(); !s.ok()) {
        SPD_LOG_ERROR("%s", s.ToString().c_str());
        control.reset();
        return 1;
      }
      tenancy->store(control.get(), std::memory_order_release);
      control_events->store(control.get(), std::memory_order_release);
      ControlServer* cs = control.get();
      pool->set_read_only_listener([cs](const std::string& why) { cs->ReportPoolReadOnly(why); });
      // A fallback, not the posix backend asked for (--backend posix: no io_uring wanted).
      if (reactor->engine() == ReactorEngine::kEpoll && o.backend != BackendKind::kPosix)
        control->ReportBackendFallback("io_uring unavailable (" + reactor->fallback_reason() +
                                       "): the epoll reactor and the posix backend serve");
    }

    // Host health: after the pool opened (its drive's SMART is read), on a thread of its own.
    auto health_or = StartHealth(o);
    if (!health_or.ok()) {
      SPD_LOG_ERROR("%s", health_or.status().ToString().c_str());
      return 1;
    }
    health = std::move(health_or).value();
    // Redfish serves that cache, on threads of its own.
    auto redfish_or = StartRedfish(o, std::move(*redfish_flags), health != nullptr);
    if (!redfish_or.ok()) {
      SPD_LOG_ERROR("%s", redfish_or.status().ToString().c_str());
      return redfish_or.status().code() == StatusCode::kInvalidArgument ? 2 : 1;
    }
    redfish = std::move(redfish_or).value();
    return 0;
  }();
  sig.control = control.get();
  sig.replication = replication.get();
  sig.replica = replica.get();
  if (start_rc == 0) {
    SPD_LOG_INFO("spd2 serving %zu volume(s) from %s on %s backend, %u %s reactor(s)",
                 pool->ListVolumes().size(), o.pool_path.c_str(), pool->backend()->name(),
                 group->size(), reactor->engine() == ReactorEngine::kUring ? "io_uring" : "epoll");
    if (!o.quiet) PrintHowToConnect(o, server, *pool);
  } else {
    SPD_LOG_INFO("the start failed: stopping what started");
    BeginStop(&sig);
  }
  reactor->Run();
  if (sig.control_stopper.joinable()) sig.control_stopper.join();
  tenancy->store(nullptr, std::memory_order_release);
  control_events->store(nullptr, std::memory_order_release);
  pool->set_read_only_listener(nullptr);
  control.reset();
  if (cluster) cluster->Stop();  // revokes the lease: the registration goes now
  // Everything drained: the other reactors stop here, so that what goes below (the dispatcher's
  // channels, the QoS scheduler's timers on every reactor) is torn down with no reactor thread
  // running beside it.
  group->StopThreads();
  if (replication) replication->Release();  // the closed primaries' sets, their owners stopped
  primaries_of->store(nullptr, std::memory_order_release);
  replication.reset();
  replica.reset();
  if (exporter) exporter->Stop();  // the spans of the last requests go out

  Status s = pool->SyncAll();
  if (!s.ok()) {
    SPD_LOG_ERROR("final flush failed: %s", s.ToString().c_str());
    return 1;
  }
  if (start_rc != 0) return start_rc;
  SPD_LOG_INFO("spd2 stopped cleanly");
  return 0;
}

}  // namespace spd
