// spd2's host-health and Redfish flags (docs/health.md, docs/redfish.md): kept apart from
// options.cc, which holds the storage flags.
#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "daemon/options.h"

namespace spd {

void AddHealthOptions(CLI::App* app, DaemonOptions* o, std::vector<std::string>* source_periods) {
  app->add_option("--health", o->health,
                  "Host health: poll the host's sensors (hwmon chips, thermal zones under "
                  "--sysfs-root; the NVMe drive of the pool when the pool is an NVMe block "
                  "device) and publish them in a shared-memory cache that libspdr clients and "
                  "Redfish read. auto: on, and a failure to start it (no shared memory) is "
                  "logged and the daemon goes on without it; on: such a failure stops the start "
                  "(exit 1); off: none. A host without sensors gets an empty cache and a "
                  "collector thread that never wakes up (docs/health.md)")
      ->check(CLI::IsMember({"auto", "on", "off"}))
      ->capture_default_str();
  app->add_option("--sysfs-root", o->sysfs_root,
                  "Where sysfs is: the collector reads ROOT/class/hwmon and ROOT/class/thermal "
                  "(a copy of that layout for tests)")
      ->capture_default_str();
  app->add_option("--health-shm", o->health_shm,
                  "The health cache: a POSIX shared-memory name (/NAME, in /dev/shm; the default "
                  "is libspdr's SPDR_DEFAULT_SHM_NAME, so spdr_cache_open(NULL) finds it), or an "
                  "absolute file path with more than one slash (spdr_cache_open_path). Mode 0644: "
                  "every local user may read it, only spd2 writes it. One writer per name "
                  "(NAME.lock, held while spd2 runs): a second spd2 on this host needs its own, "
                  "else it runs without health (auto) or does not start (on)")
      ->capture_default_str();
  app->add_option("--health-period-ms", o->health_period_ms,
                  "How often every sensor is read, in milliseconds")
      ->check(CLI::Range(uint64_t{10}, uint64_t{3'600'000}))
      ->capture_default_str();
  app->add_option("--health-source-period", *source_periods,
                  "PREFIX=MS: sources whose name begins with PREFIX (hwmon/k10temp, thermal/, "
                  "nvme/) are read every MS milliseconds instead of --health-period-ms; the first "
                  "matching flag wins. Repeatable");
  app->add_option("--redfish-listen", o->redfish_listen,
                  "Serve DMTF Redfish (DSP0266) over HTTPS on HOST:PORT: the service root, "
                  "Chassis with every health sensor, ThermalSubsystem, PowerSubsystem, "
                  "Systems/1/Storage with the pool's drive, sessions and the accounts of "
                  "--redfish-users (docs/redfish.md). 127.0.0.1:8443 keeps it on this host; "
                  "another address exposes it. Needs --redfish-users. Default: off")
      ->capture_default_str();
  app->add_option("--redfish-cert", o->redfish_cert,
                  "PEM certificate (chain) of the Redfish service. Without it and --redfish-key, "
                  "spd2 makes a self-signed ECDSA P-256 pair at start in DATA_DIR/redfish-cert.pem "
                  "and DATA_DIR/redfish-key.pem (mode 0600), reused on the next start, and logs "
                  "its SHA-256 fingerprint")
      ->check(CLI::ExistingFile);
  app->add_option("--redfish-key", o->redfish_key, "PEM private key of --redfish-cert")
      ->check(CLI::ExistingFile);
  app->add_option("--redfish-users", o->redfish_users,
                  "Redfish accounts, one per line: USER:ROLE:pbkdf2-sha256$ITERATIONS$SALT$HASH "
                  "(SALT and HASH in hex; ROLE Administrator, Operator or ReadOnly; # comments). "
                  "Keep it mode 0600 (docs/redfish.md shows how to make a line)")
      ->check(CLI::ExistingFile);
  app->add_option("--redfish-connections-max", o->redfish_connections_max,
                  "Redfish connections open at once; more are closed at accept")
      ->check(CLI::Range(uint32_t{1}, uint32_t{4096}))
      ->capture_default_str();
  app->add_option("--redfish-request-max", o->redfish_request_bytes_max,
                  "Largest Redfish request body in bytes; a larger one is answered 413")
      ->check(CLI::Range(uint32_t{256}, uint32_t{1u << 20}))
      ->capture_default_str();
  app->add_option("--redfish-sessions-max", o->redfish_sessions_max,
                  "Redfish sessions open at once; one more is refused (503) until one ends")
      ->check(CLI::Range(uint32_t{1}, uint32_t{4096}))
      ->capture_default_str();
  app->add_option("--redfish-session-timeout", o->redfish_session_timeout_s,
                  "Seconds a Redfish session lives after its last request (SessionService's "
                  "SessionTimeout)")
      ->check(CLI::Range(uint64_t{30}, uint64_t{86'400}))
      ->capture_default_str();
  app->add_option("--redfish-threads", o->redfish_threads,
                  "Threads of the Redfish server (its own, never the I/O reactors)")
      ->check(CLI::Range(uint32_t{1}, uint32_t{64}))
      ->capture_default_str();
  app->add_flag("--redfish-test-break-odata-version", o->redfish_test_break_odata_version,
                "Test only: omit the OData-Version header from every reply, so that the "
                "protocol validator's negative control sees a failure");
}

Status FinishHealthOptions(DaemonOptions* o, const std::vector<std::string>& source_periods) {
  for (const std::string& sp : source_periods) {
    const size_t eq = sp.find('=');
    uint64_t ms = 0;
    try {
      if (eq == std::string::npos || eq == 0) throw std::invalid_argument("no =");
      size_t used = 0;
      ms = std::stoull(sp.substr(eq + 1), &used);
      if (used != sp.size() - eq - 1) throw std::invalid_argument("trailing");
    } catch (...) {
      return InvalidArgument("--health-source-period wants PREFIX=MS, got '" + sp + "'");
    }
    if (ms < 10 || ms > 3'600'000)
      return InvalidArgument("--health-source-period: MS must be between 10 and 3600000, got '" +
                             sp + "'");
    o->health_source_periods.emplace_back(sp.substr(0, eq), ms);
  }
  if (o->health_shm.empty() || o->health_shm[0] != '/')
    return InvalidArgument("--health-shm wants /NAME or an absolute file path, got '" +
                           o->health_shm + "'");
  if (o->redfish_listen != "off") {
    if (o->health == "off")
      return InvalidArgument("--redfish-listen needs --health (it serves the health cache)");
    if (o->redfish_users.empty())
      return InvalidArgument("--redfish-listen needs --redfish-users (the accounts file)");
    if (o->redfish_cert.empty() != o->redfish_key.empty())
      return InvalidArgument("--redfish-cert and --redfish-key go together");
  }
  return Status::Ok();
}

}  // namespace spd
