// StateStore: the control plane's desired state that is not pool metadata, in SQLite.
//
// Tenants, storage classes, per-volume metadata (tenant, storage class, intent), API tokens
// (only their SHA-256) and the unix-uid -> role map live in DIR/state.db, an SQLite database in
// WAL mode with synchronous=FULL: every change is one transaction and is durable when the call
// returns. Volumes themselves (size, durability) stay in pool metadata, which is the truth for
// them; volume metadata here may name a volume the pool does not have (the control server
// reconciles the two at start), so nothing here checks volume names against the pool.
//
// References are enforced: volume metadata, tokens and uid roles may only name an existing
// tenant, volume metadata only an existing storage class (else kFailedPrecondition naming it),
// and a tenant or class that something names cannot be deleted (kFailedPrecondition saying
// what uses it). Puts are idempotent upserts keyed by name (uid for uid roles). docs/state.md
// has the schema.
//
// Errors: kInvalidArgument naming the field (policy::ValidateName / ValidateIntent), kNotFound
// for a missing key, kResourceExhausted at a limit below, kFailedPrecondition for references.
// SQLite's own errors carry SQLite's message and the file's path: kDataLoss when the file is
// damaged, not a database or holds a row this build cannot read, kUnavailable when another process
// holds the write lock for longer than kBusyTimeoutMs, kResourceExhausted when the disk is full,
// kInternal otherwise. Reads can fail too, which is why the List calls return a Result.
//
// Thread-safety: every method may be called from any thread. One mutex serializes the calls
// over the one connection, so a call may wait for another's transaction (one fsync, about a
// millisecond) or, when another process holds the database, up to kBusyTimeoutMs. Meant for the
// control server's gRPC threads; nothing here belongs on the data path.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "policy/model.h"

struct sqlite3;

namespace spd::state {

// Limits. Past one, a put of a new key is kResourceExhausted (replacing an existing key still
// works); they keep listings and the file small and make a runaway client visible.
inline constexpr size_t kTenantsMax = 1024;
inline constexpr size_t kStorageClassesMax = 256;
inline constexpr size_t kVolumeMetaMax = 4096;
inline constexpr size_t kTokensMax = 4096;
inline constexpr size_t kUidRolesMax = 1024;
// A token's description: at most this many bytes of UTF-8 without control characters. Longer:
// kInvalidArgument (a field's value, like a name over policy::kNameBytesMax; not a quota).
inline constexpr size_t kTokenDescriptionBytesMax = 256;
// A token's time to live, when it has one: 1 s to 10 years (3,650 days). Else kInvalidArgument.
inline constexpr int64_t kTokenTtlSecondsMax = int64_t{3650} * 24 * 3600;
// How long a call waits for another process's write lock before kUnavailable.
inline constexpr int kBusyTimeoutMs = 2000;

// The file in the data directory, and what its header says (PRAGMA application_id "SPD2",
// PRAGMA user_version): a version newer than kSchemaVersion is refused at Open, an older one is
// upgraded in place (docs/state.md). Version 2 added the tenants' intents, version 3 the tokens'
// expiry.
inline constexpr std::string_view kStateFileName = "state.db";
inline constexpr int32_t kApplicationId = 0x53504432;
inline constexpr int kSchemaVersion = 3;

// API tokens are "spd_<id>_<secret>": id is kTokenIdHexChars lowercase hex digits (random, not
// secret: listings show it), secret is kTokenSecretBytes random bytes in base64url without
// padding (43 characters). Only SHA-256 of the whole string is stored.
inline constexpr std::string_view kTokenPrefix = "spd_";
inline constexpr size_t kTokenIdHexChars = 12;
inline constexpr size_t kTokenSecretBytes = 32;
inline constexpr size_t kTokenSecretChars = (kTokenSecretBytes * 8 + 5) / 6;
inline constexpr size_t kTokenChars =
    kTokenPrefix.size() + kTokenIdHexChars + 1 + kTokenSecretChars;

struct VolumeMeta {
  std::string volume;         // the pool's volume name (policy::ValidateName)
  std::string tenant;         // "" = none; else an existing tenant
  std::string storage_class;  // "" = none; else an existing storage class
  policy::Intent intent;      // the volume's own fields; unset ones come from its class
  bool operator==(const VolumeMeta&) const = default;
};

// Who a token or a uid is. `tenant` is set exactly when role is kTenant. kNone is never stored
// (deny is the default already).
struct TokenInfo {
  std::string id;
  policy::Role role = policy::Role::kNone;
  std::string tenant;
  std::string description;
  int64_t created_unix = 0;  // seconds since the epoch, when it was created
  int64_t expires_unix = 0;  // from then on refused (seconds since the epoch); 0: never
  bool operator==(const TokenInfo&) const = default;
};

struct NewToken {
  TokenInfo info;
  std::string token;  // "spd_<id>_<secret>": shown to the caller once, never stored
};

struct UidRole {
  uint32_t uid = 0;
  policy::Role role = policy::Role::kNone;
  std::string tenant;
  bool operator==(const UidRole&) const = default;
};

class StateStore {
 public:
  // Opens or creates `dir`/state.db (`dir` must exist). The file is created with mode 0600, and
  // an existing one (and its -wal, -shm) with group or other permissions is narrowed to 0600:
  // it holds token hashes. Sets WAL mode, synchronous=FULL and foreign keys; creates the schema
  // in a new file, upgrades an older one (one transaction: all or nothing); checks the file
  // (PRAGMA quick_check). Errors: kDataLoss naming the path when
  // the file is not a database or is damaged; kFailedPrecondition for another application's
  // SQLite database or a schema newer than this build's; kUnavailable when another process
  // holds it past kBusyTimeoutMs.
  static Result<std::unique_ptr<StateStore>> Open(const std::string& dir);
  ~StateStore();
  StateStore(const StateStore&) = delete;
  StateStore& operator=(const StateStore&) = delete;

  const std::string& path() const { return path_; }  // dir/state.db

  // Tenants (policy::ValidateTenant; errors name "name", "intent.latency", ...). Put replaces
  // the intent of an existing tenant (the same put again changes nothing); the intent
  // round-trips exactly, as a volume's does. Delete: kNotFound if missing; kFailedPrecondition
  // while volume metadata, a token or a uid role names it.
  Status PutTenant(const policy::Tenant& tenant);
  Result<policy::Tenant> GetTenant(const std::string& name);
  Result<std::vector<policy::Tenant>> ListTenants();  // by name (bytewise)
  Status DeleteTenant(const std::string& name);

  // Storage classes (policy::ValidateStorageClass). Put replaces the defaults of an existing
  // class. Delete: kFailedPrecondition while volume metadata names the class.
  Status PutStorageClass(const policy::StorageClass& sc);
  Result<policy::StorageClass> GetStorageClass(const std::string& name);
  Result<std::vector<policy::StorageClass>> ListStorageClasses();  // by name
  Status DeleteStorageClass(const std::string& name);

  // Per-volume metadata, keyed by volume name; Put replaces. The intent round-trips exactly:
  // every optional field comes back set or unset as it was put.
  Status PutVolumeMeta(const VolumeMeta& meta);
  Result<VolumeMeta> GetVolumeMeta(const std::string& volume);
  Result<std::vector<VolumeMeta>> ListVolumeMeta();  // by volume name
  Status DeleteVolumeMeta(const std::string& volume);

  // API tokens. Create draws a random id and secret (OpenSSL RAND_bytes) and returns the token
  // string, which exists nowhere else afterwards: only its SHA-256 is stored. `role` must not be
  // kNone; kTenant needs an existing `tenant`, other roles an empty one. `ttl_seconds` > 0: the
  // token expires that long after its creation (at most kTokenTtlSecondsMax); 0: never; < 0:
  // kInvalidArgument.
  Result<NewToken> CreateToken(policy::Role role, const std::string& tenant,
                               const std::string& description, int64_t ttl_seconds = 0);
  Result<std::vector<TokenInfo>> ListTokens();  // by id
  Status RevokeToken(const std::string& id);    // kNotFound if there is no such token
  // Who presents `token`. Any malformed string, unknown id, wrong secret or revoked token gives
  // the same kPermissionDenied, so the answer does not say whether an id exists. The hashes are
  // compared in constant time. (The id itself is not secret; timing may show whether it
  // exists, as ListTokens does to its callers.) A token presented with its right secret at or
  // after its expiry (`now_unix` >= expires_unix) is kUnauthenticated "API token expired": only
  // its holder learns that, and the caller can count it apart.
  Result<TokenInfo> Authenticate(std::string_view token);
  Result<TokenInfo> Authenticate(std::string_view token, int64_t now_unix);

  // Unix uid -> role (for callers on the unix socket, by SO_PEERCRED). Put replaces the uid's
  // entry. Same role/tenant rules as tokens.
  Status PutUidRole(const UidRole& entry);
  Result<UidRole> GetUidRole(uint32_t uid);     // kNotFound when the uid has no entry
  Result<std::vector<UidRole>> ListUidRoles();  // by uid
  Status DeleteUidRole(uint32_t uid);

 private:
  StateStore(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  Status Init();  // at Open: pragmas, schema, checks

  std::mutex mu_;
  sqlite3* const db_;  // used under mu_
  const std::string path_;
};

}  // namespace spd::state
