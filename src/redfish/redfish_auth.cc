#include "redfish/redfish_auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <fstream>
#include <sstream>

#include "common/assert.h"
#include "common/counters.h"
#include "common/os_util.h"

namespace spd::redfish {
namespace {

Gauge sessions_gauge("spd_redfish_sessions", "Redfish sessions open.");
Counter sessions_refused_total("spd_redfish_sessions_refused_total",
                               "Redfish sessions refused: --redfish-sessions-max were open.");
Counter sessions_expired_total("spd_redfish_sessions_expired_total",
                               "Redfish sessions ended by their timeout.");

constexpr char kScheme[] = "pbkdf2-sha256";

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::optional<std::string> FromHex(std::string_view hex) {
  if (hex.size() % 2 != 0) return std::nullopt;
  std::string out(hex.size() / 2, '\0');
  for (size_t i = 0; i < out.size(); ++i) {
    const int hi = HexDigit(hex[2 * i]), lo = HexDigit(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out[i] = static_cast<char>(hi * 16 + lo);
  }
  return out;
}

std::vector<std::string_view> Split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (true) {
    const size_t end = s.find(sep, start);
    out.push_back(s.substr(start, end == std::string_view::npos ? end : end - start));
    if (end == std::string_view::npos) return out;
    start = end + 1;
  }
}

std::string SaltedDigest(std::string_view salt, std::string_view password) {
  unsigned char md[SHA256_DIGEST_LENGTH];
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  SPD_ASSERT(ctx != nullptr);
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  EVP_DigestUpdate(ctx, salt.data(), salt.size());
  EVP_DigestUpdate(ctx, password.data(), password.size());
  EVP_DigestFinal_ex(ctx, md, nullptr);
  EVP_MD_CTX_free(ctx);
  return std::string(reinterpret_cast<char*>(md), sizeof md);
}

}  // namespace

const char* RoleName(Role r) {
  switch (r) {
    case Role::kAdministrator:
      return "Administrator";
    case Role::kOperator:
      return "Operator";
    case Role::kReadOnly:
      break;
  }
  return "ReadOnly";
}

std::optional<Role> ParseRole(std::string_view s) {
  if (s == "Administrator") return Role::kAdministrator;
  if (s == "Operator") return Role::kOperator;
  if (s == "ReadOnly") return Role::kReadOnly;
  return std::nullopt;
}

std::string ToHex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}

bool ConstantTimeEqual(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string Pbkdf2Sha256(std::string_view password, std::string_view salt, uint32_t iterations) {
  std::string out(32, '\0');
  SPD_ASSERT(PKCS5_PBKDF2_HMAC(password.data(), int(password.size()),
                               reinterpret_cast<const unsigned char*>(salt.data()),
                               int(salt.size()), int(iterations), EVP_sha256(), int(out.size()),
                               reinterpret_cast<unsigned char*>(out.data())) == 1);
  return out;
}

std::string MakeAccountLine(std::string_view user, Role role, std::string_view password,
                            uint32_t iterations) {
  std::string salt(16, '\0');
  SPD_ASSERT(RAND_bytes(reinterpret_cast<unsigned char*>(salt.data()), int(salt.size())) == 1);
  return std::string(user) + ":" + RoleName(role) + ":" + kScheme + "$" +
         std::to_string(iterations) + "$" + ToHex(salt) + "$" +
         ToHex(Pbkdf2Sha256(password, salt, iterations));
}

Result<std::vector<Account>> ParseAccounts(std::string_view text) {
  std::vector<Account> out;
  int line_no = 0;
  for (std::string_view line : Split(text, '\n')) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || line[0] == '#') continue;
    const std::string where = "users file line " + std::to_string(line_no) + ": ";
    const std::vector<std::string_view> f = Split(line, ':');
    if (f.size() != 3) return InvalidArgument(where + "wants USER:ROLE:HASH");
    Account a;
    a.user = std::string(f[0]);
    if (a.user.empty() || a.user.size() > kUserNameMax)
      return InvalidArgument(where + "user name must be 1-" + std::to_string(kUserNameMax) +
                             " bytes");
    for (char c : a.user) {
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.'))
        return InvalidArgument(where + "user name may hold [A-Za-z0-9._-] only");
    }
    const std::optional<Role> role = ParseRole(f[1]);
    if (!role) return InvalidArgument(where + "role must be Administrator, Operator or ReadOnly");
    a.role = *role;
    const std::vector<std::string_view> h = Split(f[2], '$');
    if (h.size() != 4 || h[0] != kScheme)
      return InvalidArgument(where + "hash must be pbkdf2-sha256$ITERATIONS$SALTHEX$HASHHEX");
    uint64_t iter = 0;
    for (char c : h[1]) {
      if (!std::isdigit(static_cast<unsigned char>(c)) || iter > kPbkdf2IterationsMax)
        return InvalidArgument(where + "bad iteration count");
      iter = iter * 10 + uint64_t(c - '0');
    }
    if (iter < kPbkdf2IterationsMin || iter > kPbkdf2IterationsMax)
      return InvalidArgument(where + "iterations must be " + std::to_string(kPbkdf2IterationsMin) +
                             ".." + std::to_string(kPbkdf2IterationsMax));
    a.iterations = uint32_t(iter);
    std::optional<std::string> salt = FromHex(h[2]), hash = FromHex(h[3]);
    if (!salt || salt->size() < 8 || !hash || hash->size() != 32)
      return InvalidArgument(where + "salt (>= 8 bytes) and hash (32 bytes) must be hex");
    a.salt = std::move(*salt);
    a.hash = std::move(*hash);
    for (const Account& o : out) {
      if (o.user == a.user) return InvalidArgument(where + "user " + a.user + " given twice");
    }
    if (out.size() == kAccountsMax)
      return InvalidArgument(where + "more than " + std::to_string(kAccountsMax) + " accounts");
    out.push_back(std::move(a));
  }
  return out;
}

Result<std::vector<Account>> LoadAccounts(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::FromErrno(errno, "open " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  auto r = ParseAccounts(ss.str());
  if (!r.ok()) return r.status().WithContext(path);
  return r;
}

const Account* Accounts::Find(std::string_view user) const {
  for (const Account& a : accounts_) {
    if (a.user == user) return &a;
  }
  return nullptr;
}

std::optional<Account> Accounts::Verify(std::string_view user, std::string_view password) {
  const Account* a = Find(user);
  if (a == nullptr) {
    // As much work as a known user's first check: the reply time does not tell who exists.
    static const std::string kDummySalt(16, 's');
    (void)Pbkdf2Sha256(password, kDummySalt, kPbkdf2IterationsMin);
    return std::nullopt;
  }
  const std::string digest = SaltedDigest(a->salt, password);
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = verified_.find(user);
    if (it != verified_.end() && ConstantTimeEqual(it->second, digest)) return *a;
  }
  if (!ConstantTimeEqual(Pbkdf2Sha256(password, a->salt, a->iterations), a->hash))
    return std::nullopt;
  std::lock_guard<std::mutex> lock(mu_);
  verified_[std::string(user)] = digest;
  return *a;
}

void SessionStore::ExpireLocked(uint64_t now_ns) {
  for (auto it = by_token_.begin(); it != by_token_.end();) {
    if (now_ns - it->second.last_used_ns >= timeout_ns_) {
      sessions_expired_total.Add();
      it = by_token_.erase(it);
    } else {
      ++it;
    }
  }
  sessions_gauge.Set(by_token_.size());
}

Result<Session> SessionStore::Create(const std::string& user, Role role, uint64_t now_ns) {
  std::lock_guard<std::mutex> lock(mu_);
  ExpireLocked(now_ns);
  if (by_token_.size() >= sessions_max_) {
    sessions_refused_total.Add();
    return ResourceExhausted("sessions_max (" + std::to_string(sessions_max_) +
                             ") sessions are open");
  }
  Session s;
  s.id = std::to_string(next_id_++);
  s.token = RandomHex(kTokenBytes);
  s.user = user;
  s.role = role;
  s.created_ns = s.last_used_ns = now_ns;
  by_token_[s.token] = s;
  sessions_gauge.Set(by_token_.size());
  return s;
}

std::optional<Session> SessionStore::Use(std::string_view token, uint64_t now_ns) {
  std::lock_guard<std::mutex> lock(mu_);
  ExpireLocked(now_ns);
  auto it = by_token_.find(std::string(token));
  if (it == by_token_.end() || !ConstantTimeEqual(it->first, token)) return std::nullopt;
  it->second.last_used_ns = now_ns;
  return it->second;
}

std::optional<Session> SessionStore::Get(std::string_view id, uint64_t now_ns) {
  std::lock_guard<std::mutex> lock(mu_);
  ExpireLocked(now_ns);
  for (const auto& [token, s] : by_token_) {
    if (s.id == id) return s;
  }
  return std::nullopt;
}

bool SessionStore::Delete(std::string_view id) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = by_token_.begin(); it != by_token_.end(); ++it) {
    if (it->second.id == id) {
      by_token_.erase(it);
      sessions_gauge.Set(by_token_.size());
      return true;
    }
  }
  return false;
}

std::vector<Session> SessionStore::List(uint64_t now_ns) {
  std::lock_guard<std::mutex> lock(mu_);
  ExpireLocked(now_ns);
  std::vector<Session> out;
  for (const auto& [token, s] : by_token_) out.push_back(s);
  return out;
}

}  // namespace spd::redfish
