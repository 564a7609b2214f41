// The state store's access tables: API tokens (stored as SHA-256 hashes only) and the map of
// local uids to roles.
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <array>
#include <chrono>

#include "state/state_sql.h"
#include "state/state_store.h"

namespace spd::state {
namespace {

using namespace sql;  // NOLINT: the store's own plumbing

// ---- Tokens ----------------------------------------------------------------------------------

using Digest = std::array<unsigned char, 32>;

Result<Digest> Sha256(std::string_view s) {
  Digest d;
  unsigned int n = 0;
  if (EVP_Digest(s.data(), s.size(), d.data(), &n, EVP_sha256(), nullptr) != 1 || n != d.size())
    return Internal("SHA-256 failed (OpenSSL EVP_Digest)");
  return d;
}

std::string Base64Url(const unsigned char* p, size_t n) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n; ++i) {
    acc = (acc << 8) | p[i];
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out += kAlphabet[(acc >> bits) & 63];
    }
  }
  if (bits > 0) out += kAlphabet[(acc << (6 - bits)) & 63];
  return out;
}

bool IsBase64UrlChar(char ch) {
  return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
         ch == '-' || ch == '_';
}

// The shape of "spd_<12 lowercase hex>_<43 base64url>". Only the shape: whether the secret is
// right is decided by the hash.
bool WellFormedToken(std::string_view t) {
  if (t.size() != kTokenChars || t.substr(0, kTokenPrefix.size()) != kTokenPrefix) return false;
  const std::string_view id = t.substr(kTokenPrefix.size(), kTokenIdHexChars);
  for (char ch : id)
    if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) return false;
  if (t[kTokenPrefix.size() + kTokenIdHexChars] != '_') return false;
  for (char ch : t.substr(kTokenPrefix.size() + kTokenIdHexChars + 1))
    if (!IsBase64UrlChar(ch)) return false;
  return true;
}

Status RandomBytes(unsigned char* p, size_t n) {
  if (RAND_bytes(p, static_cast<int>(n)) != 1)
    return Internal("no random bytes (OpenSSL RAND_bytes failed)");
  return Status::Ok();
}

Result<std::string> RandomTokenId() {
  std::array<unsigned char, kTokenIdHexChars / 2> b;
  SPD_RETURN_IF_ERROR(RandomBytes(b.data(), b.size()));
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id;
  for (unsigned char x : b) {
    id += kHex[x >> 4];
    id += kHex[x & 15];
  }
  return id;
}

// UTF-8 (shortest forms, no surrogates) without C0/C1 control characters or DEL: descriptions
// end up in terminals and in protobuf strings, which must be UTF-8.
bool PrintableUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      if (c < 0x20 || c == 0x7f) return false;
      ++i;
      continue;
    }
    size_t more;
    uint32_t cp;
    if ((c & 0xe0) == 0xc0) {
      more = 1;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      more = 2;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      more = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (s.size() - i - 1 < more) return false;
    for (size_t k = 1; k <= more; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    static constexpr uint32_t kShortest[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kShortest[more] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    if (cp < 0xa0) return false;  // C1 controls
    i += more + 1;
  }
  return true;
}

// The rules for a role and its tenant, for tokens and uid roles alike (the stored-tenant check
// is separate: it needs the database).
Status ValidateRoleTenant(Role role, const std::string& tenant) {
  if (role == Role::kNone)
    return InvalidArgument("role: 'none' grants nothing (callers without an entry have none)");
  if (policy::RoleName(role) == "?")
    return InvalidArgument("role: unknown role " + std::to_string(static_cast<int>(role)));
  if (role == Role::kTenant) {
    if (tenant.empty()) return InvalidArgument("tenant: role 'tenant' needs a tenant");
    return policy::ValidateName("tenant", tenant);
  }
  if (!tenant.empty())
    return InvalidArgument("tenant: only role 'tenant' names a tenant, this role is '" +
                           std::string(policy::RoleName(role)) + "'");
  return Status::Ok();
}

Result<TokenInfo> ReadTokenRow(const Conn& c, Stmt& s) {
  // Columns: id, role, tenant, description, created_unix, expires_unix (NULL: never).
  TokenInfo t;
  t.id = s.Text(0);
  SPD_ASSIGN_OR_RETURN(t.role, StoredRole(c, "token " + t.id, s.Text(1)));
  t.tenant = s.Text(2);
  t.description = s.Text(3);
  t.created_unix = s.Int(4);
  t.expires_unix = s.Int(5);
  if (t.expires_unix < 0) return BadRow(c, "token " + t.id, "negative expires_unix");
  return t;
}

Result<UidRole> ReadUidRow(const Conn& c, Stmt& s) {
  // Columns: uid, role, tenant.
  UidRole u;
  const int64_t uid = s.Int(0);
  if (uid < 0 || uid > UINT32_MAX)
    return BadRow(c, "uid role", "uid " + std::to_string(uid) + " out of range");
  u.uid = static_cast<uint32_t>(uid);
  SPD_ASSIGN_OR_RETURN(u.role, StoredRole(c, "uid " + std::to_string(uid), s.Text(1)));
  u.tenant = s.Text(2);
  return u;
}

int64_t NowUnix() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

// ---- Tokens ----------------------------------------------------------------------------------

Result<NewToken> StateStore::CreateToken(policy::Role role, const std::string& tenant,
                                         const std::string& description, int64_t ttl_seconds) {
  SPD_RETURN_IF_ERROR(ValidateRoleTenant(role, tenant));
  if (ttl_seconds < 0 || ttl_seconds > kTokenTtlSecondsMax)
    return InvalidArgument("ttl_seconds: 0 (never expires) or 1 to " +
                           std::to_string(kTokenTtlSecondsMax) + " (10 years), got " +
                           std::to_string(ttl_seconds));
  if (description.size() > kTokenDescriptionBytesMax)
    return InvalidArgument("description: at most " + std::to_string(kTokenDescriptionBytesMax) +
                           " bytes, got " + std::to_string(description.size()));
  if (!PrintableUtf8(description))
    return InvalidArgument("description: must be UTF-8 without control characters");

  std::lock_guard<std::mutex> lock(mu_);
  const Conn c{db_, path_};
  NewToken out;
  SPD_RETURN_IF_ERROR(InTxn(c, true, [&]() -> Status {
    if (role == Role::kTenant) SPD_RETURN_IF_ERROR(RequireTenant(c, "tenant", tenant));
    SPD_RETURN_IF_ERROR(CheckLimit(c, "tokens", kTokensMax, "tokens"));
    // 48 random bits: a clash needs billions of tokens, but costs one lookup to rule out.
    std::string id;
    for (int attempt = 0;; ++attempt) {
      SPD_ASSIGN_OR_RETURN(id, RandomTokenId());
      SPD_ASSIGN_OR_RETURN(bool taken, Exists(c, "SELECT 1 FROM tokens WHERE id = ?", id));
      if (!taken) break;
      if (attempt == 8) return Internal("no free token id after 8 random draws");
    }
    std::array<unsigned char, kTokenSecretBytes> secret;
    SPD_RETURN_IF_ERROR(RandomBytes(secret.data(), secret.size()));
    std::string token = std::string(kTokenPrefix) + id + "_" + Base64Url(secret.data(), 32);
    OPENSSL_cleanse(secret.data(), secret.size());
    SPD_ASSIGN_OR_RETURN(Digest hash, Sha256(token));

    TokenInfo& info = out.info;
    info.id = id;
    info.role = role;
    info.tenant = tenant;
    info.description = description;
    info.created_unix = NowUnix();
    info.expires_unix = ttl_seconds > 0 ? info.created_unix + ttl_seconds : 0;
    SPD_RETURN_IF_ERROR(Stmt(c,
                             "INSERT INTO tokens(id, sha256, role, tenant, description, "
                             "created_unix, expires_unix) VALUES (?, ?, ?, ?, ?, ?, "
                             "nullif(?, 0))",
                             id, BlobArg{hash.data(), hash.size()}, policy::RoleName(role),
                             TextOrNull{tenant}, description, info.created_unix, info.expires_unix)
                            .Run());
    out.token = std::move(token);
    return Status::Ok();
  }));
  return out;
}

Result<std::vector<TokenInfo>> StateStore::ListTokens() {
  std::lock_guard<std::mutex> lock(mu_);
  const Conn c{db_, path_};
  Stmt s(c,
         "SELECT id, role, tenant, description, created_unix, expires_unix FROM tokens "
         "ORDER BY id");
  std::vector<TokenInfo> out;
  for (;;) {
    SPD_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    SPD_ASSIGN_OR_RETURN(TokenInfo t, ReadTokenRow(c, s));
    out.push_back(std::move(t));
  }
  return out;
}

Status StateStore::RevokeToken(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  const Conn c{db_, path_};
  return InTxn(c, true, [&]() -> Status {
    SPD_ASSIGN_OR_RETURN(bool found, Exists(c, "SELECT 1 FROM tokens WHERE id = ?", id));
    if (!found) return NotFound("no token with id '" + id + "'");
    return Stmt(c, "DELETE FROM tokens WHERE id = ?", id).Run();
  });
}

Result<TokenInfo> StateStore::Authenticate(std::string_view token) {
  return Authenticate(token, NowUnix());
}

Result<TokenInfo> StateStore::Authenticate(std::string_view token, int64_t now_unix) {
  // One answer for every refusal: the caller learns nothing about which part was wrong.
  const Status denied = PermissionDenied("invalid or revoked API token");
  if (!WellFormedToken(token)) return denied;
  const std::string id(token.substr(kTokenPrefix.size(), kTokenIdHexChars));
  SPD_ASSIGN_OR_RETURN(Digest presented, Sha256(token));

  std::lock_guard<std::mutex> lock(mu_);
  const Conn c{db_, path_};
  TokenInfo info;
  bool accepted = false;
  SPD_RETURN_IF_ERROR(InTxn(c, false, [&]() -> Status {
    Stmt s(c,
           "SELECT id, role, tenant, description, created_unix, expires_unix, sha256 "
           "FROM tokens WHERE id = ?",
           id);
    SPD_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) return Status::Ok();
    const std::string stored = s.Blob(6);
    if (stored.size() != presented.size())
      return BadRow(c, "token " + id,
                    "stored hash has " + std::to_string(stored.size()) + " bytes, not 32");
    if (CRYPTO_memcmp(stored.data(), presented.data(), presented.size()) != 0) return Status::Ok();
    SPD_ASSIGN_OR_RETURN(info, ReadTokenRow(c, s));
    // The schema makes these hold; checked again because a wrong answer here grants access.
    if (info.role == Role::kTenant) {
      if (info.tenant.empty()) return Status::Ok();
      SPD_ASSIGN_OR_RETURN(bool tenant_exists,
                           Exists(c, "SELECT 1 FROM tenants WHERE name = ?", info.tenant));
      if (!tenant_exists) return Status::Ok();
    } else if (!info.tenant.empty()) {
      return Status::Ok();
    }
    // Checked after the secret: only the token's holder learns that it has expired.
    if (info.expires_unix != 0 && now_unix >= info.expires_unix)
      return Unauthenticated("API token expired");
    accepted = true;
    return Status::Ok();
  }));
  if (!accepted) return denied;
  return info;
}

// ---- Uid roles -------------------------------------------------------------------------------

Status StateStore::PutUidRole(const UidRole& e) {
  SPD_RETURN_IF_ERROR(ValidateRoleTenant(e.role, e.tenant));
  std::lock_guard<std::mutex> lock(mu_);
  const Conn c{db_, path_};
  return InTxn(c, true, [&]() -> Status {
    if (e.role == Role::kTenant) SPD_RETURN_IF_ERROR(RequireTenant(c, "tenant", e.tenant));
    SPD_ASSIGN_OR_RETURN(bool exists, Exists(c, "SELECT 1 FROM uid_roles WHERE uid = ?",
                                             static_cast<int64_t>(e.uid)));
    if (!exists) SPD_RETURN_IF_ERROR(CheckLimit(c, "uid_roles", kUidRolesMax, "uid roles"));
    return Stmt(c,
                "INSERT INTO uid_roles(uid, role, tenant) VALUES (?, ?, ?) "
                "ON CONFLICT(uid) DO UPDATE SET role = excluded.role, tenant = excluded.tenant",
                static_cast<int64_t>(e.uid), policy::RoleName(e.role), TextOrNull{e.tenant})
        .Run();
  });
}

Result<UidRole> StateStore::GetUidRole(uint32_t uid) {
  std::lock_guard<std::mutex> lock(mu_);
  const Conn c{db_, path_};
  Stmt s(c, "SELECT uid, role, tenant FROM uid_roles WHERE uid = ?", static_cast<int64_t>(uid));
  SPD_ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return NotFound("no role for uid " + std::to_string(uid));
  return ReadUidRow(c, s);
}

Result<std::vector<UidRole>> StateStore::ListUidRoles() {
  std::lock_guard<std::mutex> lock(mu_);
  const Conn c{db_, path_};
  Stmt s(c, "SELECT uid, role, tenant FROM uid_roles ORDER BY uid");
  std::vector<UidRole> out;
  for (;;) {
    SPD_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    SPD_ASSIGN_OR_RETURN(UidRole u, ReadUidRow(c, s));
    out.push_back(std::move(u));
  }
  return out;
}

Status StateStore::DeleteUidRole(uint32_t uid) {
  std::lock_guard<std::mutex> lock(mu_);
  const Conn c{db_, path_};
  return InTxn(c, true, [&]() -> Status {
    SPD_ASSIGN_OR_RETURN(
        bool found, Exists(c, "SELECT 1 FROM uid_roles WHERE uid = ?", static_cast<int64_t>(uid)));
    if (!found) return NotFound("no role for uid " + std::to_string(uid));
    return Stmt(c, "DELETE FROM uid_roles WHERE uid = ?", static_cast<int64_t>(uid)).Run();
  });
}

}  // namespace spd::state
