// The state store's SQLite plumbing, shared by state_store.cc and state_access.cc: a
// connection and the path its errors name, prepared statements with bound arguments,
// transactions, and the checks every table's writes share. Internal to src/state.
#pragma once

#include <sqlite3.h>

#include <string>
#include <string_view>

#include "common/status.h"
#include "policy/model.h"
#include "state/state_store.h"

namespace spd::state::sql {

using policy::Role;

// ---- SQLite plumbing -------------------------------------------------------------------------

// The connection and the path its errors name.
struct Conn {
  sqlite3* db;
  const std::string& path;
};

inline Status SqlError(const Conn& c, int rc) {
  // sqlite3_errmsg describes the last failed call on the connection, which is the one that
  // returned rc when we come here straight from it; otherwise fall back to the code's text.
  std::string detail =
      (c.db && sqlite3_extended_errcode(c.db) == rc) ? sqlite3_errmsg(c.db) : sqlite3_errstr(rc);
  std::string msg = c.path + ": " + detail;
  switch (rc & 0xff) {
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return DataLoss(msg + " (the state database is damaged or not a database; restore it " +
                      "from a backup or move it away)");
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return Unavailable(msg + " (another process holds the state database; waited " +
                         std::to_string(kBusyTimeoutMs) + " ms)");
    case SQLITE_FULL:
      return ResourceExhausted(msg);
    default:
      return Internal(msg);
  }
}

// Runs statements that return no rows we need.
inline Status Exec(const Conn& c, const char* sql) {
  const int rc = sqlite3_exec(c.db, sql, nullptr, nullptr, nullptr);
  return rc == SQLITE_OK ? Status::Ok() : SqlError(c, rc);
}

// Arguments for Stmt::Bind besides text and integers.
struct TextOrNull {  // "" binds NULL (an unset tenant or class)
  std::string_view text;
};
struct BlobArg {
  const void* data;
  size_t size;
};

// One prepared statement, finalized when it goes. Bind errors are kept and returned by Step.
class Stmt {
 public:
  template <typename... Args>
  Stmt(const Conn& c, std::string_view sql, const Args&... args) : c_(c) {
    const int rc =
        sqlite3_prepare_v2(c.db, sql.data(), static_cast<int>(sql.size()), &stmt_, nullptr);
    if (rc != SQLITE_OK) {
      status_ = SqlError(c, rc);
      return;
    }
    (BindOne(args), ...);
  }
  ~Stmt() { sqlite3_finalize(stmt_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  // true: a row is ready; false: done.
  Result<bool> Step() {
    if (!status_.ok()) return status_;
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    status_ = SqlError(c_, rc);
    return status_;
  }
  // For statements that return nothing.
  Status Run() {
    Result<bool> r = Step();
    return r.ok() ? Status::Ok() : r.status();
  }

  bool IsNull(int col) { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
  int64_t Int(int col) { return sqlite3_column_int64(stmt_, col); }
  std::string Text(int col) {
    const unsigned char* p = sqlite3_column_text(stmt_, col);
    const int n = sqlite3_column_bytes(stmt_, col);
    return p ? std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(n)) : "";
  }
  std::string Blob(int col) {
    const void* p = sqlite3_column_blob(stmt_, col);
    const int n = sqlite3_column_bytes(stmt_, col);
    return p ? std::string(static_cast<const char*>(p), static_cast<size_t>(n)) : "";
  }

 private:
  void Check(int rc) {
    if (rc != SQLITE_OK && status_.ok()) status_ = SqlError(c_, rc);
  }
  void BindOne(std::string_view v) {
    // A null data pointer would bind NULL; "" must stay an empty string.
    Check(sqlite3_bind_text(stmt_, ++n_, v.data() ? v.data() : "", static_cast<int>(v.size()),
                            SQLITE_TRANSIENT));
  }
  void BindOne(const std::string& v) { BindOne(std::string_view(v)); }
  void BindOne(const char* v) { BindOne(std::string_view(v)); }
  void BindOne(int64_t v) { Check(sqlite3_bind_int64(stmt_, ++n_, v)); }
  void BindOne(TextOrNull v) {
    if (v.text.empty())
      Check(sqlite3_bind_null(stmt_, ++n_));
    else
      BindOne(v.text);
  }
  void BindOne(BlobArg v) {
    Check(sqlite3_bind_blob(stmt_, ++n_, v.data, static_cast<int>(v.size), SQLITE_TRANSIENT));
  }

  const Conn& c_;
  sqlite3_stmt* stmt_ = nullptr;
  int n_ = 0;
  Status status_;
};

// One transaction around `body` (BEGIN IMMEDIATE for writes: the write lock is taken at the
// start, so a busy database fails before any work, not at COMMIT). Rolled back on any error.
template <typename F>
Status InTxn(const Conn& c, bool write, F&& body) {
  SPD_RETURN_IF_ERROR(Exec(c, write ? "BEGIN IMMEDIATE" : "BEGIN"));
  Status s = body();
  if (s.ok()) s = Exec(c, "COMMIT");
  if (!s.ok() && !sqlite3_get_autocommit(c.db)) {
    IgnoreError(Exec(c, "ROLLBACK"));  // the first error is the one to report
  }
  return s;
}

template <typename... Args>
Result<bool> Exists(const Conn& c, std::string_view sql, const Args&... args) {
  Stmt s(c, sql, args...);
  return s.Step();
}

template <typename... Args>
Result<int64_t> Count(const Conn& c, std::string_view sql, const Args&... args) {
  Stmt s(c, sql, args...);
  SPD_ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return Internal(c.path + ": count returned no row");
  return s.Int(0);
}

// kResourceExhausted when `table` holds `max` rows already (callers check only for new keys).
inline Status CheckLimit(const Conn& c, const char* table, size_t max, const char* what) {
  SPD_ASSIGN_OR_RETURN(int64_t n, Count(c, std::string("SELECT count(*) FROM ") + table));
  if (n >= static_cast<int64_t>(max))
    return ResourceExhausted("at most " + std::to_string(max) + " " + what +
                             " may exist; delete one first");
  return Status::Ok();
}

inline Status RequireTenant(const Conn& c, const std::string& field, const std::string& tenant) {
  SPD_ASSIGN_OR_RETURN(bool found, Exists(c, "SELECT 1 FROM tenants WHERE name = ?", tenant));
  if (!found) return FailedPrecondition(field + ": no tenant named '" + tenant + "'");
  return Status::Ok();
}

// A stored value this build cannot read: the file was damaged or edited by hand.
inline Status BadRow(const Conn& c, const std::string& what, const std::string& why) {
  return DataLoss(c.path + ": " + what + ": " + why);
}

inline Result<Role> StoredRole(const Conn& c, const std::string& what, const std::string& text) {
  std::optional<Role> r = policy::ParseRole(text);
  if (!r || *r == Role::kNone) return BadRow(c, what, "unknown role '" + text + "'");
  return *r;
}

// ---- Intents as JSON -------------------------------------------------------------------------

}  // namespace spd::state::sql
