#include "state/state_store.h"

#include "common/log.h"
#include "state/state_sql.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <iterator>
#include <nlohmann/json.hpp>
#include <utility>

namespace spd::state {
namespace {

using namespace sql;  // NOLINT: the store's own plumbing

using nlohmann::json;
using policy::Role;

// Version 1. Roles are stored by name (policy::RoleName) so that the file reads plainly in the
// sqlite3 shell; intents as JSON text (absent fields left out) so that "unset" survives. The
// CHECKs and foreign keys repeat the rules the code enforces, as a backstop against a bug here
// or a hand edit; the code checks first so that errors can name the field.
constexpr const char* kSchemaV1 = R"sql(
CREATE TABLE tenants (
  name TEXT NOT NULL PRIMARY KEY
) STRICT;
CREATE TABLE storage_classes (
  name TEXT NOT NULL PRIMARY KEY,
  defaults TEXT NOT NULL
) STRICT;
CREATE TABLE volume_meta (
  volume TEXT NOT NULL PRIMARY KEY,
  tenant TEXT REFERENCES tenants(name),
  storage_class TEXT REFERENCES storage_classes(name),
  intent TEXT NOT NULL
) STRICT;
CREATE INDEX volume_meta_by_tenant ON volume_meta(tenant);
CREATE INDEX volume_meta_by_class ON volume_meta(storage_class);
CREATE TABLE tokens (
  id TEXT NOT NULL PRIMARY KEY,
  sha256 BLOB NOT NULL CHECK (length(sha256) = 32),
  role TEXT NOT NULL CHECK (role IN ('viewer', 'tenant', 'operator', 'admin')),
  tenant TEXT REFERENCES tenants(name),
  description TEXT NOT NULL,
  created_unix INTEGER NOT NULL,
  CHECK ((role = 'tenant') = (tenant IS NOT NULL))
) STRICT;
CREATE INDEX tokens_by_tenant ON tokens(tenant);
CREATE TABLE uid_roles (
  uid INTEGER NOT NULL PRIMARY KEY CHECK (uid BETWEEN 0 AND 4294967295),
  role TEXT NOT NULL CHECK (role IN ('viewer', 'tenant', 'operator', 'admin')),
  tenant TEXT REFERENCES tenants(name),
  CHECK ((role = 'tenant') = (tenant IS NOT NULL))
) STRICT;
CREATE INDEX uid_roles_by_tenant ON uid_roles(tenant);
)sql";

// Upgrades: kMigrations[v - 1] turns version v into v + 1. A new file gets version 1 and then
// every upgrade, so that a new file and an upgraded one have the same schema. Each upgrade runs
// in the transaction that sets user_version: a crash leaves the old version or the new one.
// Version 2: a tenant's intent (JSON as volume_meta.intent; an existing tenant gets none).
// Version 3: a token's expiry (NULL: never, which an existing token keeps).
constexpr const char* kMigrations[] = {
    "ALTER TABLE tenants ADD COLUMN intent TEXT NOT NULL DEFAULT '{}'",
    "ALTER TABLE tokens ADD COLUMN expires_unix INTEGER "
    "CHECK (expires_unix IS NULL OR expires_unix > created_unix)",
};
static_assert(std::size(kMigrations) == kSchemaVersion - 1, "one upgrade per version");

json RateJson(const policy::Rate& r) {
  json j = json::object();
  j["iops"] = r.iops;
  j["bytes_per_second"] = r.bytes_per_second;
  return j;
}

std::string IntentJson(const policy::Intent& in) {
  json j = json::object();
  if (in.latency) {
    json l = json::object();
    // nlohmann writes a double with enough digits to read back the same double.
    l["percentile"] = in.latency->percentile;
    l["bound_us"] = in.latency->bound_us;
    j["latency"] = std::move(l);
  }
  if (in.reservation) j["reservation"] = RateJson(*in.reservation);
  if (in.limit) j["limit"] = RateJson(*in.limit);
  if (in.weight) j["weight"] = *in.weight;
  if (in.priority) j["priority"] = std::string(policy::PriorityClassName(*in.priority));
  if (in.durability) j["durability"] = std::string(policy::DurabilityName(*in.durability));
  if (in.replicas) j["replicas"] = *in.replicas;
  return j.dump();
}

// Reads `key` of object `j` as an unsigned integer; false if it is missing or anything else.
bool U64Field(const json& j, const char* key, uint64_t* out) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number_unsigned()) return false;
  *out = it->get<uint64_t>();
  return true;
}

bool ParseRate(const json& j, policy::Rate* r) {
  return j.is_object() && j.size() == 2 && U64Field(j, "iops", &r->iops) &&
         U64Field(j, "bytes_per_second", &r->bytes_per_second);
}

// Strict: an unknown key or a wrong type is an error (the writer is this code).
Result<policy::Intent> ParseIntentJson(std::string_view text) {
  const json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return InvalidArgument("not a JSON object");
  policy::Intent in;
  for (const auto& item : j.items()) {
    const std::string& key = item.key();
    const json& v = item.value();
    bool ok = false;
    if (key == "latency") {
      policy::LatencyTarget l;
      auto p = v.is_object() ? v.find("percentile") : v.end();
      ok = v.is_object() && v.size() == 2 && p != v.end() && p->is_number() &&
           U64Field(v, "bound_us", &l.bound_us);
      if (ok) {
        l.percentile = p->get<double>();
        in.latency = l;
      }
    } else if (key == "reservation" || key == "limit") {
      policy::Rate r;
      ok = ParseRate(v, &r);
      if (ok) (key == "limit" ? in.limit : in.reservation) = r;
    } else if (key == "weight") {
      ok = v.is_number_unsigned() && v.get<uint64_t>() <= UINT32_MAX;
      if (ok) in.weight = static_cast<uint32_t>(v.get<uint64_t>());
    } else if (key == "priority") {
      std::optional<policy::PriorityClass> p;
      if (v.is_string()) p = policy::ParsePriorityClass(v.get<std::string>());
      ok = p.has_value();
      if (ok) in.priority = p;
    } else if (key == "durability") {
      std::optional<Durability> d;
      if (v.is_string()) d = policy::ParseDurability(v.get<std::string>());
      ok = d.has_value();
      if (ok) in.durability = d;
    } else if (key == "replicas") {
      ok = v.is_number_unsigned() && v.get<uint64_t>() <= UINT32_MAX;
      if (ok) in.replicas = static_cast<uint32_t>(v.get<uint64_t>());
    } else {
      return InvalidArgument("unknown field '" + key + "'");
    }
    if (!ok) return InvalidArgument("bad value for '" + key + "': " + v.dump());
  }
  return in;
}

Result<policy::Intent> StoredIntent(const Conn& c, const std::string& what,
                                    const std::string& text) {
  Result<policy::Intent> r = ParseIntentJson(text);
  if (!r.ok()) return BadRow(c, what, std::string(r.status().message()));
  return r;
}

// Makes `path` (and its WAL and shared-memory files, if present) private to the owner: the
// database holds token hashes and who may do what. A new file is created 0600 whatever the
// umask, synced, and its directory entry synced too. (SQLite creates -wal and -shm with the
// database file's mode.)
Status PrepareFile(const std::string& dir, const std::string& path) {
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd >= 0) {
    const bool ok = fchmod(fd, 0600) == 0 && fsync(fd) == 0;
    const int err = errno;
    close(fd);
    if (!ok) return Status::FromErrno(err, "create " + path);
    int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return Status::FromErrno(errno, "open " + dir);
    const bool synced = fsync(dfd) == 0;
    const int derr = errno;
    close(dfd);
    if (!synced) return Status::FromErrno(derr, "fsync " + dir);
    return Status::Ok();
  }
  if (errno != EEXIST) return Status::FromErrno(errno, "create " + path);
  for (const std::string& p : {path, path + "-wal", path + "-shm"}) {
    fd = open(p.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
      if (errno == ENOENT && p != path) continue;
      return Status::FromErrno(errno, "open " + p);
    }
    struct stat st;
    bool ok = fstat(fd, &st) == 0;
    int err = errno;
    if (ok && !S_ISREG(st.st_mode)) {
      close(fd);
      return FailedPrecondition(p + ": not a regular file");
    }
    if (ok && (st.st_mode & 077) != 0) {
      ok = fchmod(fd, st.st_mode & 0700) == 0;
      err = errno;
    }
    close(fd);
    if (!ok) return Status::FromErrno(err, "chmod " + p);
  }
  return Status::Ok();
}

}  // namespace

// ---- Open ------------------------------------------------------------------------------------

Result<std::unique_ptr<StateStore>> StateStore::Open(const std::string& dir) {
  struct stat st;
  if (stat(dir.c_str(), &st) != 0) return Status::FromErrno(errno, "state directory " + dir);
  if (!S_ISDIR(st.st_mode)) return FailedPrecondition(dir + ": not a directory");
  std::string path = dir;
  if (path.back() != '/') path += '/';
  path += kStateFileName;
  SPD_RETURN_IF_ERROR(PrepareFile(dir, path));

  sqlite3* db = nullptr;
  const int rc =
      sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    Status s = SqlError(Conn{db, path}, rc);
    sqlite3_close_v2(db);
    return s;
  }
  std::unique_ptr<StateStore> store(new StateStore(db, std::move(path)));
  SPD_RETURN_IF_ERROR(store->Init());
  return store;
}

Status StateStore::Init() {
  std::lock_guard<std::mutex> lock(mu_);
  const Conn c{db_, path_};
  sqlite3_extended_result_codes(db_, 1);
  sqlite3_busy_timeout(db_, kBusyTimeoutMs);
  // Refuse what a damaged or hostile file could make SQLite do (writes to the schema table,
  // functions called from schema definitions).
  sqlite3_db_config(db_, SQLITE_DBCONFIG_DEFENSIVE, 1, nullptr);
  sqlite3_db_config(db_, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, nullptr);

  // The first statement reads the file's header: a file that is not a database fails here.
  {
    Stmt s(c, "PRAGMA journal_mode=WAL");
    SPD_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row || s.Text(0) != "wal")
      return Internal(path_ + ": cannot switch to WAL mode (journal_mode is '" +
                      (row ? s.Text(0) : std::string()) + "')");
  }
  SPD_RETURN_IF_ERROR(Exec(c, "PRAGMA synchronous=FULL"));
  SPD_RETURN_IF_ERROR(Exec(c, "PRAGMA foreign_keys=ON"));
  {
    SPD_ASSIGN_OR_RETURN(int64_t fk, Count(c, "PRAGMA foreign_keys"));
    if (fk != 1) return Internal(path_ + ": this SQLite does not enforce foreign keys");
  }

  // Check the schema there, or create it in a new file. Checking needs only a read
  // transaction, so that a start does not wait for another process that is writing; creating
  // takes the write lock and looks again, so that two processes opening a new file at once
  // cannot both create it.
  bool fresh = false;
  int64_t found = 0;  // the file's version
  auto check = [&]() -> Status {
    SPD_ASSIGN_OR_RETURN(int64_t app, Count(c, "PRAGMA application_id"));
    SPD_ASSIGN_OR_RETURN(int64_t version, Count(c, "PRAGMA user_version"));
    SPD_ASSIGN_OR_RETURN(int64_t objects, Count(c, "SELECT count(*) FROM sqlite_schema"));
    fresh = app == 0 && version == 0 && objects == 0;
    if (fresh) return Status::Ok();
    if (app != kApplicationId)
      return FailedPrecondition(path_ +
                                ": an SQLite database of another application (application_id " +
                                std::to_string(app) + "), not spd2 state");
    if (version > kSchemaVersion)
      return FailedPrecondition(path_ + ": schema version " + std::to_string(version) +
                                " is newer than this build knows (" +
                                std::to_string(kSchemaVersion) +
                                "); run the spd2 that wrote it, or restore a backup");
    if (version < 1)
      return DataLoss(path_ + ": spd2 state with unknown schema version " +
                      std::to_string(version));
    found = version;
    return Status::Ok();
  };
  SPD_RETURN_IF_ERROR(InTxn(c, /*write=*/false, check));
  if (fresh || found < kSchemaVersion) {
    // Create or upgrade under the write lock, after looking again: another process may have
    // done it meanwhile.
    int64_t from = 0;
    SPD_RETURN_IF_ERROR(InTxn(c, /*write=*/true, [&]() -> Status {
      SPD_RETURN_IF_ERROR(check());
      if (fresh) {
        SPD_RETURN_IF_ERROR(Exec(c, kSchemaV1));
        SPD_RETURN_IF_ERROR(
            Exec(c, ("PRAGMA application_id=" + std::to_string(kApplicationId)).c_str()));
        found = 1;
      } else {
        from = found;
      }
      for (int64_t v = found; v < kSchemaVersion; ++v)
        SPD_RETURN_IF_ERROR(Exec(c, kMigrations[v - 1]));
      if (found == kSchemaVersion) return Status::Ok();
      return Exec(c, ("PRAGMA user_version=" + std::to_string(kSchemaVersion)).c_str());
    }));
    if (from != 0 && from < kSchemaVersion)
      SPD_LOG_INFO("state store: %s: schema upgraded from version %lld to %d", path_.c_str(),
                   static_cast<long long>(from), kSchemaVersion);
  }

  // A few milliseconds for a file of this size; finds damage at start rather than in the middle
  // of a request.
  Stmt integrity(c, "PRAGMA quick_check(1)");
  SPD_ASSIGN_OR_RETURN(bool row, integrity.Step());
  if (!row || integrity.Text(0) != "ok") {
    std::string why = row ? integrity.Text(0) : "no answer";
    for (char& ch : why)
      if (ch == '\n') ch = ' ';  // one line, for logs
    return DataLoss(path_ + ": integrity check failed: " + why +
                    " (restore the state database from a backup)");
  }
  return Status::Ok();
}

StateStore::~StateStore() { sqlite3_close_v2(db_); }

// ---- Tenants ---------------------------------------------------------------------------------

Status StateStore::PutTenant(const policy::Tenant& tenant) {
  SPD_RETURN_IF_ERROR(policy::ValidateTenant(tenant, ""));
  const std::string intent = IntentJson(tenant.intent);
  std::lock_guard<std::mutex> lock(mu_);
  const Conn c{db_, path_};
  return InTxn(c, true, [&]() -> Status {
    SPD_ASSIGN_OR_RETURN(bool exists,
                         Exists(c, "SELECT 1 FROM tenants WHERE name = ?", tenant.name));
    if (!exists) SPD_RETURN_IF_ERROR(CheckLimit(c, "tenants", kTenantsMax, "tenants"));
    return Stmt(c,
                "INSERT INTO tenants(name, intent) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET intent = excluded.intent",
                tenant.name, intent)
        .Run();
  });
}

Result<policy::Tenant> StateStore::GetTenant(const std::string& name) {
  SPD_RETURN_IF_ERROR(policy::ValidateName("name", name));
  std::lock_guard<std::mutex> lock(mu_);
  const Conn c{db_, path_};
  Stmt s(c, "SELECT intent FROM tenants WHERE name = ?", name);
  SPD_ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return NotFound("no tenant named '" + name + "'");
  policy::Tenant t{name, {}};
  SPD_ASSIGN_OR_RETURN(t.intent, StoredIntent(c, "tenant '" + name + "'", s.Text(0)));
  return t;
}

Result<std::vector<policy::Tenant>> StateStore::ListTenants() {
  std::lock_guard<std::mutex> lock(mu_);
  const Conn c{db_, path_};
  Stmt s(c, "SELECT name, intent FROM tenants ORDER BY name");
  std::vector<policy::Tenant> out;
  for (;;) {
    SPD_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    policy::Tenant t{s.Text(0), {}};
    SPD_ASSIGN_OR_RETURN(t.intent, StoredIntent(c, "tenant '" + t.name + "'", s.Text(1)));
    out.push_back(std::move(t));
  }
  return out;
}

Status StateStore::DeleteTenant(const std::string& name) {
  SPD_RETURN_IF_ERROR(policy::ValidateName("name", name));
  std::lock_guard<std::mutex> lock(mu_);
  const Conn c{db_, path_};
  return InTxn(c, true, [&]() -> Status {
    SPD_ASSIGN_OR_RETURN(bool found, Exists(c, "SELECT 1 FROM tenants WHERE name = ?", name));
    if (!found) return NotFound("no tenant named '" + name + "'");
    SPD_ASSIGN_OR_RETURN(int64_t volumes,
                         Count(c, "SELECT count(*) FROM volume_meta WHERE tenant = ?", name));
    SPD_ASSIGN_OR_RETURN(int64_t tokens,
                         Count(c, "SELECT count(*) FROM tokens WHERE tenant = ?", name));
    SPD_ASSIGN_OR_RETURN(int64_t uids,
                         Count(c, "SELECT count(*) FROM uid_roles WHERE tenant = ?", name));
    if (volumes + tokens + uids > 0) {
      std::string users;
      auto add = [&](int64_t n, const char* what) {
        if (n == 0) return;
        if (!users.empty()) users += ", ";
        users += std::to_string(n) + " " + what;
      };
      add(volumes, "volume(s)");
      add(tokens, "token(s)");
      add(uids, "uid role(s)");
      if (volumes > 0) {
        Stmt first(c, "SELECT volume FROM volume_meta WHERE tenant = ? ORDER BY volume LIMIT 1",
                   name);
        SPD_ASSIGN_OR_RETURN(bool row, first.Step());
        if (row) users += " (volume '" + first.Text(0) + "' among them)";
      }
      return FailedPrecondition("tenant '" + name + "' is still named by " + users +
                                "; move or delete them first");
    }
    return Stmt(c, "DELETE FROM tenants WHERE name = ?", name).Run();
  });
}

// ---- Storage classes -------------------------------------------------------------------------

Status StateStore::PutStorageClass(const policy::StorageClass& sc) {
  SPD_RETURN_IF_ERROR(policy::ValidateStorageClass(sc));
  const std::string defaults = IntentJson(sc.defaults);
  std::lock_guard<std::mutex> lock(mu_);
  const Conn c{db_, path_};
  return InTxn(c, true, [&]() -> Status {
    SPD_ASSIGN_OR_RETURN(bool exists,
                         Exists(c, "SELECT 1 FROM storage_classes WHERE name = ?", sc.name));
    if (!exists)
      SPD_RETURN_IF_ERROR(CheckLimit(c, "storage_classes", kStorageClassesMax, "storage classes"));
    return Stmt(c,
                "INSERT INTO storage_classes(name, defaults) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET defaults = excluded.defaults",
                sc.name, defaults)
        .Run();
  });
}

Result<policy::StorageClass> StateStore::GetStorageClass(const std::string& name) {
  SPD_RETURN_IF_ERROR(policy::ValidateName("name", name));
  std::lock_guard<std::mutex> lock(mu_);
  const Conn c{db_, path_};
  Stmt s(c, "SELECT defaults FROM storage_classes WHERE name = ?", name);
  SPD_ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return NotFound("no storage class named '" + name + "'");
  policy::StorageClass sc{name, {}};
  SPD_ASSIGN_OR_RETURN(sc.defaults, StoredIntent(c, "storage class '" + name + "'", s.Text(0)));
  return sc;
}

Result<std::vector<policy::StorageClass>> StateStore::ListStorageClasses() {
  std::lock_guard<std::mutex> lock(mu_);
  const Conn c{db_, path_};
  Stmt s(c, "SELECT name, defaults FROM storage_classes ORDER BY name");
  std::vector<policy::StorageClass> out;
  for (;;) {
    SPD_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    policy::StorageClass sc{s.Text(0), {}};
    SPD_ASSIGN_OR_RETURN(sc.defaults,
                         StoredIntent(c, "storage class '" + sc.name + "'", s.Text(1)));
    out.push_back(std::move(sc));
  }
  return out;
}

Status StateStore::DeleteStorageClass(const std::string& name) {
  SPD_RETURN_IF_ERROR(policy::ValidateName("name", name));
  std::lock_guard<std::mutex> lock(mu_);
  const Conn c{db_, path_};
  return InTxn(c, true, [&]() -> Status {
    SPD_ASSIGN_OR_RETURN(bool found,
                         Exists(c, "SELECT 1 FROM storage_classes WHERE name = ?", name));
    if (!found) return NotFound("no storage class named '" + name + "'");
    Stmt user(c,
              "SELECT volume, (SELECT count(*) FROM volume_meta WHERE storage_class = ?1) "
              "FROM volume_meta WHERE storage_class = ?1 ORDER BY volume LIMIT 1",
              name);
    SPD_ASSIGN_OR_RETURN(bool used, user.Step());
    if (used)
      return FailedPrecondition("storage class '" + name + "' is still used by " +
                                std::to_string(user.Int(1)) + " volume(s) (volume '" +
                                user.Text(0) + "' among them); change them first");
    return Stmt(c, "DELETE FROM storage_classes WHERE name = ?", name).Run();
  });
}

// ---- Volume metadata -------------------------------------------------------------------------

Status StateStore::PutVolumeMeta(const VolumeMeta& m) {
  SPD_RETURN_IF_ERROR(policy::ValidateName("volume", m.volume));
  if (!m.tenant.empty()) SPD_RETURN_IF_ERROR(policy::ValidateName("tenant", m.tenant));
  if (!m.storage_class.empty())
    SPD_RETURN_IF_ERROR(policy::ValidateName("storage_class", m.storage_class));
  SPD_RETURN_IF_ERROR(policy::ValidateIntent("intent", m.intent));
  const std::string intent = IntentJson(m.intent);
  std::lock_guard<std::mutex> lock(mu_);
  const Conn c{db_, path_};
  return InTxn(c, true, [&]() -> Status {
    if (!m.tenant.empty()) SPD_RETURN_IF_ERROR(RequireTenant(c, "tenant", m.tenant));
    if (!m.storage_class.empty()) {
      SPD_ASSIGN_OR_RETURN(
          bool found, Exists(c, "SELECT 1 FROM storage_classes WHERE name = ?", m.storage_class));
      if (!found)
        return FailedPrecondition("storage_class: no storage class named '" + m.storage_class +
                                  "'");
    }
    SPD_ASSIGN_OR_RETURN(bool exists,
                         Exists(c, "SELECT 1 FROM volume_meta WHERE volume = ?", m.volume));
    if (!exists)
      SPD_RETURN_IF_ERROR(CheckLimit(c, "volume_meta", kVolumeMetaMax, "volume metadata entries"));
    return Stmt(c,
                "INSERT INTO volume_meta(volume, tenant, storage_class, intent) "
                "VALUES (?, ?, ?, ?) ON CONFLICT(volume) DO UPDATE SET "
                "tenant = excluded.tenant, storage_class = excluded.storage_class, "
                "intent = excluded.intent",
                m.volume, TextOrNull{m.tenant}, TextOrNull{m.storage_class}, intent)
        .Run();
  });
}

namespace {
// Columns: volume, tenant, storage_class, intent.
Result<VolumeMeta> ReadVolumeRow(const Conn& c, Stmt& s) {
  VolumeMeta m;
  m.volume = s.Text(0);
  m.tenant = s.Text(1);  // NULL reads as ""
  m.storage_class = s.Text(2);
  SPD_ASSIGN_OR_RETURN(m.intent, StoredIntent(c, "volume '" + m.volume + "'", s.Text(3)));
  return m;
}
}  // namespace

Result<VolumeMeta> StateStore::GetVolumeMeta(const std::string& volume) {
  SPD_RETURN_IF_ERROR(policy::ValidateName("volume", volume));
  std::lock_guard<std::mutex> lock(mu_);
  const Conn c{db_, path_};
  Stmt s(c, "SELECT volume, tenant, storage_class, intent FROM volume_meta WHERE volume = ?",
         volume);
  SPD_ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return NotFound("no metadata for volume '" + volume + "'");
  return ReadVolumeRow(c, s);
}

Result<std::vector<VolumeMeta>> StateStore::ListVolumeMeta() {
  std::lock_guard<std::mutex> lock(mu_);
  const Conn c{db_, path_};
  Stmt s(c, "SELECT volume, tenant, storage_class, intent FROM volume_meta ORDER BY volume");
  std::vector<VolumeMeta> out;
  for (;;) {
    SPD_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    SPD_ASSIGN_OR_RETURN(VolumeMeta m, ReadVolumeRow(c, s));
    out.push_back(std::move(m));
  }
  return out;
}

Status StateStore::DeleteVolumeMeta(const std::string& volume) {
  SPD_RETURN_IF_ERROR(policy::ValidateName("volume", volume));
  std::lock_guard<std::mutex> lock(mu_);
  const Conn c{db_, path_};
  return InTxn(c, true, [&]() -> Status {
    SPD_ASSIGN_OR_RETURN(bool found,
                         Exists(c, "SELECT 1 FROM volume_meta WHERE volume = ?", volume));
    if (!found) return NotFound("no metadata for volume '" + volume + "'");
    return Stmt(c, "DELETE FROM volume_meta WHERE volume = ?", volume).Run();
  });
}

}  // namespace spd::state
