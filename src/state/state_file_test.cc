// The state store's file: who may read it, what a damaged, newer or older one does (the
// schema's versions and upgrades), and another process holding it.
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "state/state_store.h"
#include "state/state_test_util.h"

namespace spd::state {
namespace {

using namespace test_util;  // NOLINT: the tests' helpers

TEST(StateStore, FilesArePrivateWhateverTheUmask) {
  TempDir dir;
  const mode_t old = umask(0);
  {
    auto s = OpenOk(dir.path());
    ASSERT_TRUE(s);
    ASSERT_TRUE(s->PutTenant({"acme"}).ok());
    EXPECT_EQ(ModeOf(dir.db()), 0600u);
    ASSERT_TRUE(std::filesystem::exists(dir.db() + "-wal"));
    EXPECT_EQ(ModeOf(dir.db() + "-wal"), 0600u);
    EXPECT_EQ(ModeOf(dir.db() + "-shm"), 0600u);
  }
  umask(old);
  // An existing file someone opened up is narrowed again.
  ASSERT_EQ(chmod(dir.db().c_str(), 0644), 0);
  auto s = OpenOk(dir.path());
  ASSERT_TRUE(s);
  EXPECT_EQ(ModeOf(dir.db()), 0600u);
  EXPECT_TRUE(s->GetTenant("acme").ok());
}

TEST(StateStore, ADamagedFileIsDataLossNamingThePath) {
  std::string garbage;
  for (int i = 0; i < 8192; ++i) garbage += static_cast<char>((i * 131 + 7) & 0xff);
  for (const std::string& bytes : {garbage, std::string("hello, not a database\n")}) {
    TempDir dir;
    WriteBytes(dir.db(), bytes);
    Result<std::unique_ptr<StateStore>> r = StateStore::Open(dir.path());
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << r.status().ToString();
    EXPECT_TRUE(Contains(r.status().message(), dir.db())) << r.status().ToString();
    EXPECT_EQ(ReadBytes(dir.db()), bytes);  // left as it was, for whoever investigates
  }
  // A database whose pages were overwritten: found by the check at Open.
  TempDir dir;
  {
    auto s = OpenOk(dir.path());
    for (int i = 0; i < 400; ++i)
      ASSERT_TRUE(s->PutVolumeMeta({"volume-" + std::to_string(i), "", "", FullIntent()}).ok());
  }
  std::string bytes = ReadBytes(dir.db());
  ASSERT_GE(bytes.size(), 6u * 4096);
  for (size_t i = 2 * 4096; i < 6 * 4096; ++i) bytes[i] = garbage[i % garbage.size()];
  WriteBytes(dir.db(), bytes);
  Result<std::unique_ptr<StateStore>> r = StateStore::Open(dir.path());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << r.status().ToString();
  EXPECT_TRUE(Contains(r.status().message(), dir.db())) << r.status().ToString();
}

TEST(StateStore, ANewerSchemaOrAnotherApplicationsDatabaseIsRefused) {
  TempDir dir;
  { ASSERT_TRUE(OpenOk(dir.path())); }
  RawExec(dir.db(), "PRAGMA user_version = " + std::to_string(kSchemaVersion + 1));
  const std::string newer = ReadBytes(dir.db());
  Result<std::unique_ptr<StateStore>> r = StateStore::Open(dir.path());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition) << r.status().ToString();
  EXPECT_TRUE(Contains(r.status().message(),
                       "schema version " + std::to_string(kSchemaVersion + 1) + " is newer"))
      << r.status().ToString();
  EXPECT_TRUE(Contains(r.status().message(), dir.db()));
  EXPECT_EQ(ReadBytes(dir.db()), newer);  // nothing changed in it
  RawExec(dir.db(), "PRAGMA user_version = " + std::to_string(kSchemaVersion));
  EXPECT_TRUE(StateStore::Open(dir.path()).ok());

  TempDir other;
  RawExec(other.db(), "CREATE TABLE notes(x TEXT)");
  r = StateStore::Open(other.path());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition) << r.status().ToString();
  EXPECT_TRUE(Contains(r.status().message(), "another application")) << r.status().ToString();

  EXPECT_EQ(StateStore::Open(dir.path() + "/missing").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(StateStore::Open(dir.db()).status().code(), StatusCode::kFailedPrecondition);
}

// A state.db as spd2 wrote it before tenants had intents (schema version 1), made by hand: the
// version-1 schema as it shipped, with a tenant, a class, a volume's metadata and a uid role.
constexpr const char* kVersion1File = R"sql(
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
PRAGMA application_id = 1397769266;
PRAGMA user_version = 1;
INSERT INTO tenants(name) VALUES ('acme'), ('beta');
INSERT INTO storage_classes(name, defaults) VALUES ('gold', '{"weight":200}');
INSERT INTO volume_meta(volume, tenant, storage_class, intent)
  VALUES ('db1', 'acme', 'gold', '{"limit":{"bytes_per_second":0,"iops":400}}');
INSERT INTO uid_roles(uid, role, tenant) VALUES (2002, 'tenant', 'acme');
)sql";

TEST(StateStore, AVersion1FileIsUpgradedInPlaceKeepingEverything) {
  static_assert(kSchemaVersion == 3, "a new version needs its own upgrade test");
  TempDir dir;
  RawExec(dir.db(), kVersion1File);
  ASSERT_EQ(RawQuery(dir.db(), "PRAGMA user_version"), std::vector<std::string>{"1"});
  policy::Intent limit;
  limit.limit = policy::Rate{600, 0};
  {
    auto s = OpenOk(dir.path());
    ASSERT_TRUE(s);
    // Everything is still there; the tenants have no intent.
    auto tenants = s->ListTenants();
    ASSERT_TRUE(tenants.ok()) << tenants.status().ToString();
    EXPECT_EQ(*tenants, (std::vector<policy::Tenant>{{"acme", {}}, {"beta", {}}}));
    EXPECT_EQ(s->GetStorageClass("gold")->defaults.weight, 200u);
    auto m = s->GetVolumeMeta("db1");
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    EXPECT_EQ(m->tenant, "acme");
    EXPECT_EQ(m->intent.limit, (policy::Rate{400, 0}));
    EXPECT_EQ(s->GetUidRole(2002)->tenant, "acme");
    // A tenant's intent can be stored now, and references still hold.
    EXPECT_TRUE(s->PutTenant({"acme", limit}).ok());
    EXPECT_EQ(s->DeleteTenant("acme").code(), StatusCode::kFailedPrecondition);
  }
  EXPECT_EQ(RawQuery(dir.db(), "PRAGMA user_version"),
            std::vector<std::string>{std::to_string(kSchemaVersion)});
  // Opened again (no upgrade this time): the same, with the intent kept.
  {
    auto s = OpenOk(dir.path());
    ASSERT_TRUE(s);
    auto tenants = s->ListTenants();
    ASSERT_TRUE(tenants.ok()) << tenants.status().ToString();
    EXPECT_EQ(*tenants, (std::vector<policy::Tenant>{{"acme", limit}, {"beta", {}}}));
  }
  // An upgraded file and a new one have the same schema.
  TempDir fresh;
  { ASSERT_TRUE(OpenOk(fresh.path())); }
  const std::string schema = "SELECT type, name, sql FROM sqlite_schema ORDER BY name";
  EXPECT_EQ(RawQuery(dir.db(), schema), RawQuery(fresh.db(), schema));
  EXPECT_EQ(RawQuery(dir.db(), "PRAGMA application_id"),
            RawQuery(fresh.db(), "PRAGMA application_id"));
}

// A version-2 file (tenants with intents, tokens without an expiry) with an admin token whose
// string the test knows: upgraded to version 3, the token still authenticates and never
// expires, and a new token can have an expiry.
TEST(StateStore, AVersion2FileIsUpgradedAndItsTokensNeverExpire) {
  const std::string token = "spd_0123456789ab_" + std::string(43, 'A');
  unsigned char d[32];
  unsigned int n = 0;
  ASSERT_EQ(EVP_Digest(token.data(), token.size(), d, &n, EVP_sha256(), nullptr), 1);
  std::string hex;
  for (unsigned char x : d) {
    hex += "0123456789abcdef"[x >> 4];
    hex += "0123456789abcdef"[x & 15];
  }
  TempDir dir;
  RawExec(dir.db(), kVersion1File);
  RawExec(dir.db(),
          "ALTER TABLE tenants ADD COLUMN intent TEXT NOT NULL DEFAULT '{}';"
          "PRAGMA user_version = 2;"
          "INSERT INTO tokens(id, sha256, role, tenant, description, created_unix) VALUES "
          "('0123456789ab', x'" +
              hex + "', 'admin', NULL, 'old', 1796000000);");
  ASSERT_EQ(RawQuery(dir.db(), "PRAGMA user_version"), std::vector<std::string>{"2"});
  {
    auto s = OpenOk(dir.path());
    ASSERT_TRUE(s);
    auto who = s->Authenticate(token, int64_t{1} << 40);
    ASSERT_TRUE(who.ok()) << who.status().ToString();
    EXPECT_EQ(who->role, policy::Role::kAdmin);
    EXPECT_EQ(who->created_unix, 1796000000);
    EXPECT_EQ(who->expires_unix, 0);
    auto t = s->CreateToken(policy::Role::kViewer, "", "new", 60);
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    EXPECT_EQ(s->Authenticate(t->token, t->info.expires_unix).status().code(),
              StatusCode::kUnauthenticated);
  }
  EXPECT_EQ(RawQuery(dir.db(), "PRAGMA user_version"), std::vector<std::string>{"3"});
  EXPECT_EQ(RawQuery(dir.db(), "SELECT expires_unix FROM tokens WHERE id = '0123456789ab'"),
            std::vector<std::string>{"NULL"});
  // An upgraded file and a new one have the same schema.
  TempDir fresh;
  { ASSERT_TRUE(OpenOk(fresh.path())); }
  const std::string schema = "SELECT type, name, sql FROM sqlite_schema ORDER BY name";
  EXPECT_EQ(RawQuery(dir.db(), schema), RawQuery(fresh.db(), schema));
}

TEST(StateStore, AFailedUpgradeLeavesTheFileAtItsVersion) {
  // A version-1 file whose tenants table has the column already (a hand edit): the upgrade
  // fails, and the file is left as it was, still version 1.
  TempDir dir;
  RawExec(dir.db(), kVersion1File);
  RawExec(dir.db(), "ALTER TABLE tenants ADD COLUMN intent TEXT");
  Result<std::unique_ptr<StateStore>> r = StateStore::Open(dir.path());
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(Contains(r.status().message(), dir.db())) << r.status().ToString();
  EXPECT_EQ(RawQuery(dir.db(), "PRAGMA user_version"), std::vector<std::string>{"1"});
  EXPECT_EQ(RawQuery(dir.db(), "SELECT name FROM tenants ORDER BY name"),
            (std::vector<std::string>{"acme", "beta"}));
}

// Another process holding the write lock: reads go on (WAL), a write waits kBusyTimeoutMs and
// fails kUnavailable, and works again once the other process lets go.
TEST(StateStore, ABusyDatabaseIsUnavailableForWritesOnly) {
  TempDir dir;
  { ASSERT_TRUE(OpenOk(dir.path())->PutTenant({"acme"}).ok()); }
  // Fork while this process has no connection open: SQLite's per-process lock bookkeeping
  // must not be copied into the child half-used.
  int to_parent[2], to_child[2];
  ASSERT_EQ(pipe(to_parent), 0);
  ASSERT_EQ(pipe(to_child), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    sqlite3* db = nullptr;
    if (sqlite3_open_v2(dir.db().c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK)
      _exit(1);
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK) _exit(2);
    char b = 'l';
    if (write(to_parent[1], &b, 1) != 1) _exit(3);
    if (read(to_child[0], &b, 1) != 1) _exit(4);
    sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
    sqlite3_close(db);
    _exit(0);
  }
  char b;
  ASSERT_EQ(read(to_parent[0], &b, 1), 1);
  auto s = OpenOk(dir.path());  // needs no write lock for an existing file
  ASSERT_TRUE(s);
  EXPECT_TRUE(s->GetTenant("acme").ok());
  const auto t0 = std::chrono::steady_clock::now();
  Status st = s->PutTenant({"beta"});
  const auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st.ToString();
  EXPECT_TRUE(Contains(st.message(), dir.db()) && Contains(st.message(), "another process"))
      << st.ToString();
  EXPECT_GE(waited, std::chrono::milliseconds(kBusyTimeoutMs - 100));
  EXPECT_EQ(s->ListTenants()->size(), 1u);
  ASSERT_EQ(write(to_child[1], &b, 1), 1);
  int wstatus = 0;
  ASSERT_EQ(waitpid(pid, &wstatus, 0), pid);
  EXPECT_TRUE(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0) << wstatus;
  for (int fd : {to_parent[0], to_parent[1], to_child[0], to_child[1]}) close(fd);
  EXPECT_TRUE(s->PutTenant({"beta"}).ok());
  EXPECT_EQ(s->ListTenants()->size(), 2u);
}

}  // namespace
}  // namespace spd::state
