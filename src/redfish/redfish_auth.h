// Redfish accounts and sessions (docs/redfish.md, "Security").
//
// Accounts come from a file (--redfish-users): USER:ROLE:pbkdf2-sha256$ITER$SALTHEX$HASHHEX.
// Passwords are checked with PBKDF2-HMAC-SHA256 (OpenSSL's libcrypto); a successful check is
// remembered as a salted SHA-256 of the password for that account, in memory only, so that
// Basic authentication on every request does not cost ITER hash rounds each time.
//
// Sessions (SessionService, DSP0266 "Session management"): a token of kTokenBytes random bytes
// (hex) per session, at most sessions_max of them, each ending session_timeout_ns after its
// last use. Time is passed in (now_ns, CLOCK_MONOTONIC) so that tests drive it.
//
// Thread-safety: Accounts and SessionStore may be used from any number of threads.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace spd::redfish {

enum class Role { kReadOnly, kOperator, kAdministrator };
const char* RoleName(Role r);  // "ReadOnly", "Operator", "Administrator"
std::optional<Role> ParseRole(std::string_view s);

inline constexpr size_t kTokenBytes = 32;  // 256 bits of randomness per token
inline constexpr uint32_t kPbkdf2IterationsMin = 1'000;
inline constexpr uint32_t kPbkdf2IterationsMax = 10'000'000;
inline constexpr uint32_t kAccountsMax = 256;
inline constexpr size_t kUserNameMax = 64;

struct Account {
  std::string user;
  Role role = Role::kReadOnly;
  uint32_t iterations = 0;
  std::string salt;  // raw bytes
  std::string hash;  // raw bytes (32)
};

// The file's text: one account a line, # comments and blank lines ignored.
Result<std::vector<Account>> ParseAccounts(std::string_view text);
Result<std::vector<Account>> LoadAccounts(const std::string& path);
// PBKDF2-HMAC-SHA256(password, salt, iterations), 32 bytes.
std::string Pbkdf2Sha256(std::string_view password, std::string_view salt, uint32_t iterations);
// The line of the users file for these credentials (a random 16-byte salt).
std::string MakeAccountLine(std::string_view user, Role role, std::string_view password,
                            uint32_t iterations);
std::string ToHex(std::string_view bytes);
bool ConstantTimeEqual(std::string_view a, std::string_view b);

class Accounts {
 public:
  explicit Accounts(std::vector<Account> accounts) : accounts_(std::move(accounts)) {}
  // The account when user and password match, else nullopt (same work for an unknown user).
  std::optional<Account> Verify(std::string_view user, std::string_view password);
  const std::vector<Account>& list() const { return accounts_; }
  const Account* Find(std::string_view user) const;

 private:
  const std::vector<Account> accounts_;
  std::mutex mu_;
  std::map<std::string, std::string, std::less<>> verified_;  // user -> SHA-256(salt, password)
};

struct Session {
  std::string id;     // "1", "2", ... (the resource's Id)
  std::string token;  // X-Auth-Token
  std::string user;
  Role role = Role::kReadOnly;
  uint64_t created_ns = 0;
  uint64_t last_used_ns = 0;
};

class SessionStore {
 public:
  SessionStore(uint32_t sessions_max, uint64_t timeout_ns)
      : sessions_max_(sessions_max), timeout_ns_(timeout_ns) {}
  // kResourceExhausted when sessions_max sessions are open (expired ones are dropped first).
  Result<Session> Create(const std::string& user, Role role, uint64_t now_ns);
  // The session of this token, its use time moved to now; nullopt when none or expired.
  std::optional<Session> Use(std::string_view token, uint64_t now_ns);
  std::optional<Session> Get(std::string_view id, uint64_t now_ns);
  bool Delete(std::string_view id);
  std::vector<Session> List(uint64_t now_ns);
  uint64_t timeout_ns() const { return timeout_ns_; }
  uint32_t sessions_max() const { return sessions_max_; }

 private:
  void ExpireLocked(uint64_t now_ns);
  const uint32_t sessions_max_;
  const uint64_t timeout_ns_;
  std::mutex mu_;
  uint64_t next_id_ = 1;
  std::map<std::string, Session> by_token_;
};

}  // namespace spd::redfish
