#include "audit/audit_log.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <openssl/evp.h>

#include "common/counters.h"
#include "common/log.h"

namespace spd {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// A directory under /tmp, removed with everything in it when the test ends.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/spd_audit_test_XXXXXX";
    const char* p = mkdtemp(tmpl);
    SPD_ASSERT(p != nullptr);
    path_ = p;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
  SPD_ASSERT(out.good());
}

std::string LogOf(const std::string& dir) { return ReadFile(dir + "/" + kAuditLogFile); }
std::string HeadOf(const std::string& dir) { return ReadFile(dir + "/" + kAuditHeadFile); }

// The lines of a log, each without its newline (a last line without one is kept too).
std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at < text.size()) {
    size_t nl = text.find('\n', at);
    if (nl == std::string::npos) nl = text.size();
    out.push_back(text.substr(at, nl - at));
    at = nl + 1;
  }
  return out;
}

std::string JoinLines(const std::vector<std::string>& lines) {
  std::string out;
  for (const std::string& l : lines) out += l + "\n";
  return out;
}

AuditEntry Entry(int i) {
  AuditEntry e;
  e.who = i % 2 ? "uid:1000" : "token:ops-ci";
  e.method = "spd.v1.Volumes/Create";
  e.args = {{"name", "vol-" + std::to_string(i)}, {"size_bytes", 1ull << 30}, {"tags", {"a", "b"}}};
  e.result = i % 3 ? "OK" : "ALREADY_EXISTS: vol-" + std::to_string(i);
  if (i % 2) e.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  return e;
}

// A log of n entries in dir, closed.
void MakeLog(const std::string& dir, int n) {
  auto log = AuditLog::Open(dir);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  for (int i = 1; i <= n; ++i) ASSERT_TRUE((*log)->Append(Entry(i)).ok());
}

AuditVerifyReport Verify(const std::string& dir, const AuditHead* anchor = nullptr) {
  Result<AuditVerifyReport> r = VerifyAuditLog(dir, anchor);
  SPD_ASSERT_MSG(r.ok(), r.status().ToString().c_str());
  return r.value();
}

std::string Describe(const AuditVerifyReport& r) {
  return "ok=" + std::to_string(r.ok) + " entries=" + std::to_string(r.entries) +
         " bad_entry=" + std::to_string(r.bad_entry) + " problem=" + r.problem;
}

std::string Sha256Hex(const std::string& s) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  SPD_ASSERT(EVP_Digest(s.data(), s.size(), md, &len, EVP_sha256(), nullptr) == 1);
  char hex[3];
  std::string out;
  for (unsigned i = 0; i < len; ++i) {
    std::snprintf(hex, sizeof(hex), "%02x", md[i]);
    out += hex;
  }
  return out;
}

// The serialization docs/audit.md specifies, written independently of the library.
std::string CanonicalJson(const json& j) {
  return j.dump(-1, ' ', true, json::error_handler_t::strict);
}

// Rewrites a line as a forger would: new contents, new prev, and a hash that recomputes.
std::string Forge(const std::string& line, const std::string& who, const std::string& prev) {
  json j = json::parse(line);
  if (!who.empty()) j["who"] = who;
  if (!prev.empty()) j["prev"] = prev;
  j.erase("hash");
  j["hash"] = Sha256Hex(CanonicalJson(j));
  return CanonicalJson(j);
}

std::string HashOf(const std::string& line) { return json::parse(line)["hash"]; }

TEST(AuditLog, AppendsVerifyAndAReopenedLogContinuesTheChain) {
  TempDir tmp;
  const std::string dir = tmp.sub("audit");  // Open creates it
  {
    auto log = AuditLog::Open(dir);
    ASSERT_TRUE(log.ok()) << log.status().ToString();
    EXPECT_EQ((*log)->entries(), 0u);
    for (int i = 1; i <= 5; ++i) ASSERT_TRUE((*log)->Append(Entry(i)).ok());
    EXPECT_EQ((*log)->entries(), 5u);
    auto r = (*log)->Verify();
    ASSERT_TRUE(r.ok());
    EXPECT_TRUE(r->ok) << Describe(*r);
    EXPECT_EQ(r->entries, 5u);
  }
  AuditVerifyReport r = Verify(dir);
  EXPECT_TRUE(r.ok) << Describe(r);
  EXPECT_EQ(r.entries, 5u);
  {
    auto log = AuditLog::Open(dir);
    ASSERT_TRUE(log.ok()) << log.status().ToString();
    EXPECT_EQ((*log)->entries(), 5u);
    for (int i = 6; i <= 8; ++i) ASSERT_TRUE((*log)->Append(Entry(i)).ok());
    EXPECT_EQ((*log)->entries(), 8u);
  }
  r = Verify(dir);
  EXPECT_TRUE(r.ok) << Describe(r);
  EXPECT_EQ(r.entries, 8u);

  // The format, read back independently: seq from 1, prev chains from 64 zeros, the hash is
  // SHA-256 of the canonical JSON without "hash", the time agrees with time_ns, traceparent only
  // when given, files 0600.
  const std::vector<std::string> lines = Lines(LogOf(dir));
  ASSERT_EQ(lines.size(), 8u);
  std::string prev(64, '0');
  const std::regex rfc3339(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z)");
  for (size_t i = 0; i < lines.size(); ++i) {
    json j = json::parse(lines[i]);
    EXPECT_EQ(CanonicalJson(j), lines[i]);
    EXPECT_EQ(j["seq"], i + 1);
    EXPECT_EQ(j["prev"], prev);
    EXPECT_TRUE(std::regex_match(j["time"].get<std::string>(), rfc3339)) << j["time"];
    const time_t secs = static_cast<time_t>(j["time_ns"].get<int64_t>() / 1'000'000'000);
    EXPECT_LT(std::abs(secs - time(nullptr)), 600);
    const AuditEntry e = Entry(static_cast<int>(i) + 1);
    EXPECT_EQ(j["who"], e.who);
    EXPECT_EQ(j["method"], e.method);
    EXPECT_EQ(j["args"], e.args);
    EXPECT_EQ(j["result"], e.result);
    EXPECT_EQ(j.contains("traceparent"), !e.traceparent.empty());
    if (!e.traceparent.empty()) {
      EXPECT_EQ(j["traceparent"], e.traceparent);
    }
    const std::string hash = j["hash"];
    j.erase("hash");
    EXPECT_EQ(Sha256Hex(CanonicalJson(j)), hash);
    prev = hash;
  }
  EXPECT_EQ(HeadOf(dir), "{\"hash\":\"" + prev + "\",\"seq\":8}\n");
  struct stat st;
  ASSERT_EQ(stat((dir + "/audit.log").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(stat((dir + "/audit.head").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

// Every single-byte change anywhere in the log is caught, at the line it is in, and Open
// refuses to continue such a log.
TEST(AuditLog, EveryChangedByteOfTheLogIsDetectedAtItsEntry) {
  TempDir tmp;
  const std::string good = tmp.sub("good");
  MakeLog(good, 4);
  const std::string log = LogOf(good);
  const std::string head = HeadOf(good);
  ASSERT_TRUE(Verify(good).ok);
  std::vector<uint64_t> line_of(log.size());
  uint64_t line = 1;
  for (size_t i = 0; i < log.size(); ++i) {
    line_of[i] = line;
    if (log[i] == '\n') ++line;
  }
  const std::string dir = tmp.sub("copy");
  ASSERT_EQ(mkdir(dir.c_str(), 0700), 0);
  WriteFile(dir + "/audit.head", head);
  size_t checked = 0;
  for (size_t off = 0; off < log.size(); ++off) {
    for (unsigned mask : {0x01u, 0x20u, 0x80u, 0xffu}) {
      std::string bad = log;
      bad[off] = static_cast<char>(static_cast<unsigned char>(bad[off]) ^ mask);
      WriteFile(dir + "/audit.log", bad);
      const AuditVerifyReport r = Verify(dir);
      ASSERT_FALSE(r.ok) << "offset " << off << " mask " << mask;
      EXPECT_EQ(r.bad_entry, line_of[off])
          << "offset " << off << " mask " << mask << " " << Describe(r);
      EXPECT_FALSE(r.problem.empty());
      auto opened = AuditLog::Open(dir);
      ASSERT_FALSE(opened.ok()) << "offset " << off << " mask " << mask;
      EXPECT_EQ(opened.status().code(), StatusCode::kDataLoss) << opened.status().ToString();
      ++checked;
    }
  }
  EXPECT_EQ(checked, 4 * log.size());
  WriteFile(dir + "/audit.log", log);  // the copy itself was fine
  EXPECT_TRUE(Verify(dir).ok);
}

TEST(AuditLog, EveryChangedByteOfTheHeadIsDetected) {
  TempDir tmp;
  const std::string dir = tmp.sub("log");
  MakeLog(dir, 3);
  const std::string head = HeadOf(dir);
  for (size_t off = 0; off < head.size(); ++off) {
    for (unsigned mask : {0x01u, 0x20u, 0x80u, 0xffu}) {
      std::string bad = head;
      bad[off] = static_cast<char>(static_cast<unsigned char>(bad[off]) ^ mask);
      WriteFile(dir + "/audit.head", bad);
      const AuditVerifyReport r = Verify(dir);
      ASSERT_FALSE(r.ok) << "offset " << off << " mask " << mask;
      EXPECT_FALSE(r.problem.empty());
      auto opened = AuditLog::Open(dir);
      ASSERT_FALSE(opened.ok()) << "offset " << off << " mask " << mask;
      EXPECT_EQ(opened.status().code(), StatusCode::kDataLoss) << opened.status().ToString();
    }
  }
  // The head's seq one lower or higher, the rest intact: named as such.
  const json j = json::parse(head);
  auto with_seq = [&](uint64_t seq) {
    json h = j;
    h["seq"] = seq;
    return CanonicalJson(h) + "\n";
  };
  WriteFile(dir + "/audit.head", with_seq(4));
  AuditVerifyReport r = Verify(dir);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.bad_entry, 4u) << Describe(r);
  EXPECT_NE(r.problem.find("truncated"), std::string::npos) << r.problem;
  WriteFile(dir + "/audit.head", with_seq(2));
  r = Verify(dir);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.bad_entry, 2u) << Describe(r);  // entry 2's hash is not the one the head holds
  // No head at all.
  ASSERT_EQ(unlink((dir + "/audit.head").c_str()), 0);
  r = Verify(dir);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.bad_entry, 0u);
  EXPECT_NE(r.problem.find("audit.head is missing"), std::string::npos) << r.problem;
  auto opened = AuditLog::Open(dir);
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.status().code(), StatusCode::kDataLoss);
  // Restored, all is well again.
  WriteFile(dir + "/audit.head", head);
  EXPECT_TRUE(Verify(dir).ok);
  EXPECT_TRUE(AuditLog::Open(dir).ok());
}

// Whole entries deleted, inserted, swapped or cut off: each named, at the right entry.
TEST(AuditLog, DeletedInsertedReorderedAndTruncatedEntriesAreNamed) {
  TempDir tmp;
  const std::string good = tmp.sub("good");
  MakeLog(good, 5);
  const std::vector<std::string> lines = Lines(LogOf(good));
  ASSERT_EQ(lines.size(), 5u);
  const std::string dir = tmp.sub("copy");
  ASSERT_EQ(mkdir(dir.c_str(), 0700), 0);
  WriteFile(dir + "/audit.head", HeadOf(good));

  struct Case {
    const char* what;
    std::vector<std::string> lines;
    uint64_t bad_entry;
    const char* word;  // the problem must say this
  };
  auto without = [&](std::vector<size_t> drop) {
    std::vector<std::string> out;
    for (size_t i = 0; i < lines.size(); ++i)
      if (std::find(drop.begin(), drop.end(), i) == drop.end()) out.push_back(lines[i]);
    return out;
  };
  auto swapped = [&](size_t a, size_t b) {
    std::vector<std::string> out = lines;
    std::swap(out[a], out[b]);
    return out;
  };
  auto inserted = [&](size_t at, const std::string& l) {
    std::vector<std::string> out = lines;
    out.insert(out.begin() + static_cast<ptrdiff_t>(at), l);
    return out;
  };
  auto forged = [&](size_t at) {
    std::vector<std::string> out = lines;
    out[at] = Forge(out[at], "uid:0", "");
    return out;
  };
  std::vector<std::string> moved = lines;  // the last entry moved to the front
  std::rotate(moved.begin(), moved.end() - 1, moved.end());
  const std::vector<Case> cases = {
      {"delete entry 3", without({2}), 3, "deleted"},
      {"delete entry 1", without({0}), 1, "deleted"},
      {"delete entries 2 and 3", without({1, 2}), 2, "entries 2 to 3 are missing"},
      {"duplicate entry 2 after itself", inserted(2, lines[1]), 3, "inserted"},
      {"duplicate entry 2 at the end", inserted(5, lines[1]), 6, "inserted"},
      {"swap entries 2 and 3", swapped(1, 2), 2, "reordered"},
      {"swap entries 4 and 5", swapped(3, 4), 4, "reordered"},
      {"entry 5 moved first", moved, 1, "reordered"},
      {"the last entry cut off", without({4}), 5, "truncated"},
      {"the last two cut off", without({3, 4}), 4, "truncated"},
      {"everything cut off", {}, 1, "truncated"},
      // A forger who rewrites an entry with a hash that recomputes breaks the next link...
      {"entry 3 forged", forged(2), 4, "chain broken"},
      // ... or, for the last entry, no longer matches the head.
      {"entry 5 forged", forged(4), 5, "audit.head"},
      // An entry inserted with the right seq and a hash that recomputes, not chained.
      {"an entry forged into place 3", inserted(2, Forge(lines[2], "uid:0", std::string(64, 'b'))),
       3, "chain broken"},
  };
  for (const Case& c : cases) {
    WriteFile(dir + "/audit.log", JoinLines(c.lines));
    const AuditVerifyReport r = Verify(dir);
    EXPECT_FALSE(r.ok) << c.what;
    EXPECT_EQ(r.bad_entry, c.bad_entry) << c.what << ": " << Describe(r);
    EXPECT_NE(r.problem.find(c.word), std::string::npos) << c.what << ": " << r.problem;
    EXPECT_EQ(r.problem.rfind("entry " + std::to_string(c.bad_entry) + ":", 0), 0u)
        << c.what << ": " << r.problem;
    auto opened = AuditLog::Open(dir);
    EXPECT_EQ(opened.status().code(), StatusCode::kDataLoss) << c.what;
  }

  // The last line cut anywhere short of its newline, while the head still names it: torn,
  // and truncated (never a crash state: the head is written only after the line is synced).
  const std::string full = JoinLines(lines);
  const size_t last_start = full.size() - lines[4].size() - 1;
  for (size_t keep = 1; keep <= lines[4].size(); ++keep) {
    WriteFile(dir + "/audit.log", full.substr(0, last_start + keep));
    const AuditVerifyReport r = Verify(dir);
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.bad_entry, 5u) << Describe(r);
    EXPECT_NE(r.problem.find("torn"), std::string::npos) << r.problem;
    EXPECT_NE(r.problem.find("truncated"), std::string::npos) << r.problem;
    EXPECT_EQ(AuditLog::Open(dir).status().code(), StatusCode::kDataLoss);
  }

  // A log rewritten from entry 3 on together with its head passes on its own: only a head kept
  // elsewhere (an anchor) catches it.
  std::vector<std::string> rewritten = lines;
  for (size_t i = 2; i < rewritten.size(); ++i)
    rewritten[i] = Forge(rewritten[i], i == 2 ? "uid:0" : "", HashOf(rewritten[i - 1]));
  WriteFile(dir + "/audit.log", JoinLines(rewritten));
  WriteFile(dir + "/audit.head", "{\"hash\":\"" + HashOf(rewritten[4]) + "\",\"seq\":5}\n");
  EXPECT_TRUE(Verify(dir).ok) << Describe(Verify(dir));
  AuditHead anchor{5, HashOf(lines[4])};
  AuditVerifyReport r = Verify(dir, &anchor);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.bad_entry, 5u) << Describe(r);
  EXPECT_NE(r.problem.find("anchor"), std::string::npos) << r.problem;
  anchor = AuditHead{2, HashOf(lines[1])};  // before the rewrite: still there
  EXPECT_TRUE(Verify(dir, &anchor).ok);
  anchor = AuditHead{6, std::string(64, 'a')};  // beyond the end
  r = Verify(dir, &anchor);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.bad_entry, 6u) << Describe(r);
}

// After each Append returns, the files on disk already hold it: the log's last line is the new
// entry, newline-terminated, and the head names it.
TEST(AuditLog, EachAppendIsInTheFilesWhenItReturns) {
  TempDir tmp;
  const std::string dir = tmp.sub("log");
  auto log = AuditLog::Open(dir);
  ASSERT_TRUE(log.ok());
  EXPECT_EQ(HeadOf(dir), "{\"hash\":\"" + std::string(64, '0') + "\",\"seq\":0}\n");
  EXPECT_EQ(LogOf(dir), "");
  for (uint64_t n = 1; n <= 6; ++n) {
    ASSERT_TRUE((*log)->Append(Entry(static_cast<int>(n))).ok());
    const std::string text = LogOf(dir);
    ASSERT_FALSE(text.empty());
    EXPECT_EQ(text.back(), '\n');
    const std::vector<std::string> lines = Lines(text);
    ASSERT_EQ(lines.size(), n);
    const json last = json::parse(lines.back());
    const json head = json::parse(HeadOf(dir));
    EXPECT_EQ(head["seq"], n);
    EXPECT_EQ(last["seq"], n);
    EXPECT_EQ(head["hash"], last["hash"]);
    const AuditHead h = (*log)->head();
    EXPECT_EQ(h.seq, n);
    EXPECT_EQ(h.hash, last["hash"]);
    auto r = (*log)->Verify();
    ASSERT_TRUE(r.ok());
    EXPECT_TRUE(r->ok) << Describe(*r);
  }
  // While it is open, nobody else appends and the offline verifier defers to it.
  auto second = AuditLog::Open(dir);
  EXPECT_EQ(second.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(VerifyAuditLog(dir).status().code(), StatusCode::kFailedPrecondition);
}

TEST(AuditLog, ArgsAndFieldsAreCapped) {
  TempDir tmp;
  const std::string dir = tmp.sub("log");
  auto log = AuditLog::Open(dir);
  ASSERT_TRUE(log.ok());
  // {"x":"aaa..."} is 8 bytes plus the a's.
  AuditEntry at_cap = Entry(1);
  at_cap.args = {{"x", std::string(kAuditArgsBytesMax - 8, 'a')}};
  ASSERT_EQ(at_cap.args.dump().size(), kAuditArgsBytesMax);
  ASSERT_TRUE((*log)->Append(at_cap).ok());
  AuditEntry over = Entry(2);
  over.args = {{"x", std::string(kAuditArgsBytesMax - 7, 'a')}};
  ASSERT_TRUE((*log)->Append(over).ok());
  // Fields far over their cap, in characters JSON escapes six-fold, and invalid UTF-8.
  AuditEntry big;
  big.who = std::string(5 * kAuditFieldBytesMax, '\x01');
  big.method = std::string(5 * kAuditFieldBytesMax, '\xff');
  big.result = std::string(5 * kAuditFieldBytesMax, '"');
  big.traceparent = std::string(5 * kAuditFieldBytesMax, '\\');
  big.args = {{"x", std::string(100 * kAuditArgsBytesMax, '\x02')}};
  ASSERT_TRUE((*log)->Append(big).ok());
  AuditEntry utf8 = Entry(4);
  utf8.who = "token:caf\xc3\xa9-\xe2\x82";  // é, then a truncated euro sign
  ASSERT_TRUE((*log)->Append(utf8).ok());

  const std::vector<std::string> lines = Lines(LogOf(dir));
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(json::parse(lines[0])["args"], at_cap.args);  // exactly at the cap: kept
  const json marker = json::parse(lines[1])["args"];
  EXPECT_EQ(marker["bytes"], kAuditArgsBytesMax + 1);
  EXPECT_EQ(marker["sha256"], Sha256Hex(over.args.dump()));
  EXPECT_NE(marker["omitted"].get<std::string>().find(std::to_string(kAuditArgsBytesMax)),
            std::string::npos);
  const json j = json::parse(lines[2]);
  EXPECT_EQ(j["args"]["bytes"], 6 * 100 * kAuditArgsBytesMax + 8);  // \u0002 is six bytes
  EXPECT_EQ(j["who"], std::string(kAuditFieldBytesMax, '\x01') + "...(cut from " +
                          std::to_string(5 * kAuditFieldBytesMax) + " bytes)");
  EXPECT_EQ(j["result"].get<std::string>().substr(0, kAuditFieldBytesMax),
            std::string(kAuditFieldBytesMax, '"'));
  EXPECT_LE(lines[2].size(), kAuditLineBytesMax);
  EXPECT_EQ(json::parse(lines[3])["who"], "token:caf\xc3\xa9-\xef\xbf\xbd");  // U+FFFD
  auto r = (*log)->Verify();
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->ok) << Describe(*r);
  EXPECT_EQ(r->entries, 4u);
}

TEST(AuditLog, InvalidEntriesAreRefusedAndCounted) {
  TempDir tmp;
  const std::string dir = tmp.sub("log");
  auto log = AuditLog::Open(dir);
  ASSERT_TRUE(log.ok());
  const uint64_t failures = CounterValue("spd_audit_append_failures_total");
  AuditEntry e = Entry(1);
  e.who.clear();
  EXPECT_EQ((*log)->Append(e).code(), StatusCode::kInvalidArgument);
  e = Entry(1);
  e.method.clear();
  EXPECT_EQ((*log)->Append(e).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(CounterValue("spd_audit_append_failures_total"), failures + 2);
  EXPECT_EQ((*log)->entries(), 0u);
  EXPECT_EQ(LogOf(dir), "");
  ASSERT_TRUE((*log)->Append(Entry(1)).ok());  // not a failure of the log: it goes on
  EXPECT_EQ((*log)->entries(), 1u);
}

TEST(AuditLog, ConcurrentAppendsFormOneChain) {
  TempDir tmp;
  const std::string dir = tmp.sub("log");
  auto log = AuditLog::Open(dir);
  ASSERT_TRUE(log.ok());
  constexpr int kThreads = 4;
  constexpr int kEach = 25;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        AuditEntry e;
        e.who = "uid:" + std::to_string(t);
        e.method = "spd.v1.Volumes/Resize";
        e.args = {{"thread", t}, {"i", i}};
        e.result = "OK";
        EXPECT_TRUE((*log)->Append(e).ok());
        (void)(*log)->entries();
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ((*log)->entries(), uint64_t{kThreads * kEach});
  auto r = (*log)->Verify();
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->ok) << Describe(*r);
  EXPECT_EQ(r->entries, uint64_t{kThreads * kEach});
  std::set<std::pair<int, int>> seen;
  for (const std::string& l : Lines(LogOf(dir))) {
    const json j = json::parse(l);
    EXPECT_TRUE(seen.insert({j["args"]["thread"].get<int>(), j["args"]["i"].get<int>()}).second)
        << l;
  }
  EXPECT_EQ(seen.size(), size_t{kThreads * kEach});
}

// A crash after the line was synced, before the head was replaced: the log is one complete
// entry ahead of the head. Verify reports it; Open moves the head to it and goes on.
TEST(AuditLog, CrashBeforeTheHeadUpdateOpenMovesTheHeadForward) {
  TempDir tmp;
  const std::string dir = tmp.sub("log");
  MakeLog(dir, 3);
  const std::string head3 = HeadOf(dir);
  MakeLog(dir, 1);  // entry 4
  const std::string log4 = LogOf(dir);
  const std::string head4 = HeadOf(dir);
  WriteFile(dir + "/audit.head", head3);                    // the state the crash left
  WriteFile(dir + "/audit.head.tmp", head4.substr(0, 10));  // and a half-written new head

  AuditVerifyReport r = Verify(dir);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.bad_entry, 4u) << Describe(r);
  EXPECT_EQ(r.entries, 4u);
  EXPECT_NE(r.problem.find("beyond the head"), std::string::npos) << r.problem;

  const uint64_t recovered = CounterValue("spd_audit_recovered_total");
  {
    auto log = AuditLog::Open(dir);
    ASSERT_TRUE(log.ok()) << log.status().ToString();
    EXPECT_EQ((*log)->entries(), 4u);
    EXPECT_EQ(HeadOf(dir), head4);
    EXPECT_EQ(LogOf(dir), log4);
    EXPECT_FALSE(fs::exists(dir + "/audit.head.tmp"));
    ASSERT_TRUE((*log)->Append(Entry(5)).ok());
  }
  EXPECT_EQ(CounterValue("spd_audit_recovered_total"), recovered + 1);
  r = Verify(dir);
  EXPECT_TRUE(r.ok) << Describe(r);
  EXPECT_EQ(r.entries, 5u);

  // Two entries beyond the head: no crash leaves that. Refused.
  WriteFile(dir + "/audit.head", head3);
  r = Verify(dir);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.bad_entry, 4u) << Describe(r);
  EXPECT_NE(r.problem.find("followed by more"), std::string::npos) << r.problem;
  EXPECT_EQ(AuditLog::Open(dir).status().code(), StatusCode::kDataLoss);
  // One entry ahead but the head's hash is not entry 3's: refused.
  WriteFile(dir + "/audit.head", "{\"hash\":\"" + std::string(64, 'a') + "\",\"seq\":4}\n");
  r = Verify(dir);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.bad_entry, 4u) << Describe(r);
  EXPECT_EQ(AuditLog::Open(dir).status().code(), StatusCode::kDataLoss);
}

// A crash while the line was written: the log ends in a fragment (no newline) right after the
// head's entry. Verify reports it; Open cuts it off. Every possible fragment length is tried,
// up to the whole line without its newline, and a fragment of zeros (what some file systems
// show for an extended but unwritten tail).
TEST(AuditLog, CrashWhileWritingTheLineOpenCutsTheTornTail) {
  TempDir tmp;
  const std::string base = tmp.sub("base");
  MakeLog(base, 3);
  const std::string log3 = LogOf(base);
  const std::string head3 = HeadOf(base);
  MakeLog(base, 1);
  const std::string line4 = Lines(LogOf(base))[3];

  std::vector<std::string> tails;
  for (size_t keep = 1; keep <= line4.size(); ++keep) tails.push_back(line4.substr(0, keep));
  tails.push_back(std::string(300, '\0'));
  const std::string dir = tmp.sub("copy");
  ASSERT_EQ(mkdir(dir.c_str(), 0700), 0);
  const LogLevel level = GetLogLevel();
  SetLogLevel(LogLevel::kError);  // one repair warning per tail is expected; keep the output short
  for (const std::string& tail : tails) {
    WriteFile(dir + "/audit.log", log3 + tail);
    WriteFile(dir + "/audit.head", head3);
    const AuditVerifyReport r = Verify(dir);
    ASSERT_FALSE(r.ok) << tail.size();
    EXPECT_EQ(r.bad_entry, 4u) << Describe(r);
    EXPECT_EQ(r.entries, 3u);
    EXPECT_NE(r.problem.find("torn"), std::string::npos) << r.problem;
    {
      auto log = AuditLog::Open(dir);
      ASSERT_TRUE(log.ok()) << tail.size() << ": " << log.status().ToString();
      EXPECT_EQ((*log)->entries(), 3u);
      EXPECT_EQ(LogOf(dir), log3);
      ASSERT_TRUE((*log)->Append(Entry(4)).ok());
    }
    const AuditVerifyReport after = Verify(dir);
    ASSERT_TRUE(after.ok) << tail.size() << ": " << Describe(after);
    EXPECT_EQ(after.entries, 4u);
  }
  SetLogLevel(level);

  // A complete line after the head's entry that is not an entry: no crash of Append leaves a
  // newline-terminated line without syncing it whole, so it is refused, not cut.
  WriteFile(dir + "/audit.log", log3 + "garbage\n");
  WriteFile(dir + "/audit.head", head3);
  AuditVerifyReport r = Verify(dir);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.bad_entry, 4u) << Describe(r);
  EXPECT_EQ(AuditLog::Open(dir).status().code(), StatusCode::kDataLoss);
  // An entry beyond the head and then a torn line: two appends' worth, refused.
  WriteFile(dir + "/audit.log", log3 + line4 + "\n{\"args\":");
  r = Verify(dir);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.bad_entry, 4u) << Describe(r);
  EXPECT_EQ(AuditLog::Open(dir).status().code(), StatusCode::kDataLoss);
}

// A failed write or sync is final for the open log; the entry that failed may still be found
// (here: its line was synced, the head could not be written), and reopening recovers.
TEST(AuditLog, AFailedAppendStopsTheLogUntilReopened) {
  TempDir tmp;
  const std::string dir = tmp.sub("log");
  MakeLog(dir, 2);
  const uint64_t failures = CounterValue("spd_audit_append_failures_total");
  {
    auto log = AuditLog::Open(dir);
    ASSERT_TRUE(log.ok());
    // A directory where the temporary head goes: creating it fails (EISDIR), even for root.
    ASSERT_EQ(mkdir((dir + "/audit.head.tmp").c_str(), 0700), 0);
    Status s = (*log)->Append(Entry(3));
    EXPECT_FALSE(s.ok());
    ASSERT_EQ(rmdir((dir + "/audit.head.tmp").c_str()), 0);
    EXPECT_EQ((*log)->Append(Entry(4)).code(), StatusCode::kFailedPrecondition);
    EXPECT_EQ((*log)->entries(), 2u);
  }
  EXPECT_EQ(CounterValue("spd_audit_append_failures_total"), failures + 2);
  auto log = AuditLog::Open(dir);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  EXPECT_EQ((*log)->entries(), 3u);
  ASSERT_TRUE((*log)->Append(Entry(4)).ok());
  auto r = (*log)->Verify();
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->ok) << Describe(*r);
  EXPECT_EQ(r->entries, 4u);
}

TEST(AuditLog, CreationAndMissingFiles) {
  TempDir tmp;
  // Nothing there: not a log.
  EXPECT_EQ(VerifyAuditLog(tmp.path()).status().code(), StatusCode::kNotFound);
  // A crash while creating the log, after audit.log, before audit.head: Open finishes it.
  const std::string dir = tmp.sub("half");
  ASSERT_EQ(mkdir(dir.c_str(), 0700), 0);
  WriteFile(dir + "/audit.log", "");
  {
    auto log = AuditLog::Open(dir);
    ASSERT_TRUE(log.ok()) << log.status().ToString();
    EXPECT_EQ((*log)->entries(), 0u);
  }
  EXPECT_TRUE(Verify(dir).ok);
  // The log deleted, the head left: refused, not started over.
  MakeLog(dir, 2);
  ASSERT_EQ(unlink((dir + "/audit.log").c_str()), 0);
  const AuditVerifyReport r = Verify(dir);
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.problem.find("audit.log is missing"), std::string::npos) << r.problem;
  EXPECT_EQ(AuditLog::Open(dir).status().code(), StatusCode::kDataLoss);
  EXPECT_FALSE(fs::exists(dir + "/audit.log"));
}

}  // namespace
}  // namespace spd
