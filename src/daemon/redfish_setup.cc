#include "daemon/redfish_setup.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "common/file_util.h"
#include "common/log.h"
#include "common/os_util.h"
#include "common/x509_gnutls.h"
#include "daemon/health_setup.h"
#include "redfish/redfish_auth.h"
#include "redfish/redfish_tls.h"

namespace spd {
namespace {

// The service's UUID, kept in DATA_DIR/redfish.uuid so that it survives restarts.
std::string ServiceUuid(const std::string& data_dir) {
  const std::string path = data_dir + "/redfish.uuid";
  std::string u = FirstLine(path);
  if (u.size() == 36) return u;
  std::string h = RandomHex(16);
  h[12] = '4';                                                  // version 4
  h[16] = "89ab"[std::stoi(h.substr(16, 1), nullptr, 16) & 3];  // RFC 4122 variant
  u = h.substr(0, 8) + "-" + h.substr(8, 4) + "-" + h.substr(12, 4) + "-" + h.substr(16, 4) + "-" +
      h.substr(20);
  std::ofstream(path) << u << "\n";
  return u;
}

redfish::DriveInfo PoolDrive(const DaemonOptions& o) {
  redfish::DriveInfo d;
  d.path = o.pool_path;
  struct stat st {};
  if (stat(o.pool_path.c_str(), &st) == 0) {
    if (S_ISBLK(st.st_mode)) {
      const int fd = open(o.pool_path.c_str(), O_RDONLY | O_CLOEXEC);
      uint64_t bytes = 0;
      if (fd >= 0 && ioctl(fd, BLKGETSIZE64, &bytes) == 0) d.capacity_bytes = bytes;
      if (fd >= 0) close(fd);
    } else {
      d.capacity_bytes = uint64_t(st.st_size);
    }
  }
  const std::string ctrl = NvmeControllerOf(o.pool_path, o.sysfs_root);
  if (!ctrl.empty()) {
    d.nvme_serial = FirstLine(o.sysfs_root + "/class/nvme/" + ctrl + "/serial");
    d.model = FirstLine(o.sysfs_root + "/class/nvme/" + ctrl + "/model");
  }
  return d;
}

}  // namespace

RedfishRuntime::~RedfishRuntime() {
  server.reset();
  service.reset();
  spdr_cache_close(cache);
}

namespace {

Status ParseRedfishListen(const std::string& listen, redfish::ServerOptions* so) {
  const size_t colon = listen.rfind(':');
  try {
    if (colon == std::string::npos) throw std::invalid_argument("no port");
    so->host = listen.substr(0, colon);
    const unsigned long port = std::stoul(listen.substr(colon + 1));
    if (port > 65535) throw std::out_of_range("port");
    so->port = static_cast<uint16_t>(port);
  } catch (...) {
    return InvalidArgument("--redfish-listen wants HOST:PORT, got '" + listen + "'");
  }
  return Status::Ok();
}

}  // namespace

Result<RedfishFlags> ReadRedfishFlags(const DaemonOptions& o) {
  RedfishFlags f;
  if (o.redfish_listen == "off") return f;
  f.on = true;
  SPD_RETURN_IF_ERROR(ParseRedfishListen(o.redfish_listen, &f.server));
  auto accounts = redfish::LoadAccounts(o.redfish_users);
  if (!accounts.ok()) return InvalidArgument("--redfish-users: " + accounts.status().ToString());
  f.accounts = std::move(*accounts);
  struct stat st {};
  if (stat(o.redfish_users.c_str(), &st) == 0 && (st.st_mode & 0077) != 0)
    SPD_LOG_WARN("redfish: %s is readable by other users (mode %03o): chmod 600 it",
                 o.redfish_users.c_str(), static_cast<unsigned>(st.st_mode & 0777));
  std::string why;
  if (!o.redfish_cert.empty() && !o.redfish_key.empty() &&
      CheckPemKeyPair(o.redfish_cert, o.redfish_key, &why) != 0)
    return InvalidArgument("--redfish-cert " + o.redfish_cert + ", --redfish-key " + o.redfish_key +
                           ": " + why);
  return f;
}

Result<std::unique_ptr<RedfishRuntime>> StartRedfish(const DaemonOptions& o, RedfishFlags flags,
                                                     bool health_running) {
  if (!flags.on) return std::unique_ptr<RedfishRuntime>();
  redfish::ServerOptions so = std::move(flags.server);
  if (!health_running)
    return FailedPrecondition("--redfish-listen: the health collector is not running (see above)");
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  auto cert = redfish::LoadOrMakeCert(o.redfish_cert, o.redfish_key, o.data_dir, host);
  if (!cert.ok()) return cert.status().WithContext("redfish certificate");
  SPD_LOG_INFO("redfish: %s certificate %s (SHA-256 %s)",
               cert->generated ? "made a self-signed" : "using the", cert->cert_path.c_str(),
               redfish::CertFingerprint(cert->cert_pem).c_str());

  auto rt = std::make_unique<RedfishRuntime>();
  const bool is_path = o.health_shm.find('/', 1) != std::string::npos;
  const int rc = is_path ? spdr_cache_open_path(o.health_shm.c_str(), &rt->cache)
                         : spdr_cache_open(o.health_shm.c_str(), &rt->cache);
  if (rc != SPDR_OK)
    return Unavailable("redfish: health cache " + o.health_shm + ": " + spdr_strerror(rc));
  redfish::ServiceOptions svc;
  svc.session_timeout_ns = o.redfish_session_timeout_s * 1'000'000'000;
  svc.sessions_max = o.redfish_sessions_max;
  svc.uuid = ServiceUuid(o.data_dir);
  svc.hostname = host;
  svc.drives.push_back(PoolDrive(o));
  svc.test_break_odata_version = o.redfish_test_break_odata_version;
  if (svc.test_break_odata_version)
    SPD_LOG_WARN(
        "redfish: --redfish-test-break-odata-version: replies lack OData-Version (test only)");
  rt->service =
      std::make_unique<redfish::RedfishService>(svc, std::move(flags.accounts), rt->cache);
  so.cert_pem = cert->cert_pem;
  so.key_pem = cert->key_pem;
  so.threads = o.redfish_threads;
  so.connections_max = o.redfish_connections_max;
  so.request_bytes_max = o.redfish_request_bytes_max;
  auto server = redfish::RedfishServer::Start(so, rt->service.get());
  if (!server.ok()) return server.status();
  rt->server = std::move(*server);
  SPD_LOG_INFO("redfish: serving https://%s:%u/redfish/v1 with %u thread(s)", so.host.c_str(),
               rt->server->port(), so.threads);
  return rt;
}

}  // namespace spd
