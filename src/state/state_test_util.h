// Shared by the state store's tests (state_store_test.cc, state_file_test.cc): a temporary
// data directory, raw SQLite access to the file beside the store's own, sample intents.
#pragma once

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/assert.h"
#include "policy/intent_test_util.h"
#include "state/state_store.h"

namespace spd::state::test_util {

// A directory under /tmp, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/spd_state_test.XXXXXX";
    const char* p = mkdtemp(tmpl);
    SPD_ASSERT(p != nullptr);
    path_ = p;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }
  std::string db() const { return path_ + "/state.db"; }

 private:
  std::string path_;
};

inline std::unique_ptr<StateStore> OpenOk(const std::string& dir) {
  Result<std::unique_ptr<StateStore>> r = StateStore::Open(dir);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? std::move(r).value() : nullptr;
}

inline std::string ReadBytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

inline void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << bytes;
}

// SQL on the file through a separate connection: what a hand edit or a damaged file does.
inline void RawExec(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr),
            SQLITE_OK);
  char* err = nullptr;
  const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
  EXPECT_EQ(rc, SQLITE_OK) << (err ? err : "") << " in " << sql;
  sqlite3_free(err);
  sqlite3_close(db);
}

// The rows of a query through a separate connection, each row's columns joined by '|'.
inline std::vector<std::string> RawQuery(const std::string& path, const std::string& sql) {
  std::vector<std::string> rows;
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  EXPECT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr), SQLITE_OK) << sql;
  while (st && sqlite3_step(st) == SQLITE_ROW) {
    std::string row;
    for (int i = 0; i < sqlite3_column_count(st); ++i) {
      const unsigned char* t = sqlite3_column_text(st, i);
      row += (i ? "|" : "") + std::string(t ? reinterpret_cast<const char*>(t) : "NULL");
    }
    rows.push_back(row);
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return rows;
}

inline mode_t ModeOf(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return 0;
  return st.st_mode & 07777;
}

inline bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}
inline bool Contains(std::string_view s, std::string_view part) {
  return s.find(part) != std::string_view::npos;
}

using policy::test_util::FullIntent;

// Intents that differ in which fields are set and in awkward values (a percentile that is not
// a short decimal, the largest rates).
inline std::vector<policy::Intent> VariedIntents() {
  std::vector<policy::Intent> v;
  v.push_back(policy::Intent{});
  v.push_back(FullIntent());
  policy::Intent a;
  a.latency = policy::LatencyTarget{100.0 / 3.0, 1};
  v.push_back(a);
  policy::Intent b;
  b.reservation = policy::Rate{0, 1};
  b.durability = Durability::kNone;
  v.push_back(b);
  policy::Intent c;
  c.limit = policy::Rate{policy::kIopsMax, policy::kBytesPerSecondMax};
  c.priority = policy::PriorityClass::kBackground;
  v.push_back(c);
  policy::Intent d;
  d.weight = policy::kWeightMax;
  d.priority = policy::PriorityClass::kStandard;
  d.durability = Durability::kFlush;
  d.latency = policy::LatencyTarget{0.001, 3'600'000'000ull};
  d.replicas = policy::kReplicasMax;
  v.push_back(d);
  return v;
}

}  // namespace spd::state::test_util
