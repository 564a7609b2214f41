#include "audit/audit_log.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <ctime>
#include <string_view>
#include <utility>

#include <openssl/evp.h>

#include "common/counters.h"
#include "common/log.h"

namespace spd {
namespace {

using json = nlohmann::json;

Counter appends_total("spd_audit_appends_total", "Audit log entries appended (durable).");
Counter append_failures_total(
    "spd_audit_append_failures_total",
    "Audit log appends that failed (invalid entry, I/O error, or the log failed earlier).");
Counter recovered_total("spd_audit_recovered_total",
                        "Audit logs repaired at open after a crash during an append (head "
                        "moved to a synced entry, or a torn last line cut off).");

constexpr const char* kHeadTmpFile = "audit.head.tmp";
const std::string kZeroHash(64, '0');
// A head file is one short line; anything much longer is not one.
constexpr size_t kHeadBytesMax = 256;

// The one serialization used for hashing and for the files: keys sorted (nlohmann::json keeps
// objects in a std::map), no whitespace, non-ASCII escaped as \uXXXX (so the files are plain
// ASCII), and invalid UTF-8 replaced by U+FFFD rather than throwing. parse(Canonical(x)) prints
// back to the same bytes, which is what lets the verifier demand that every line be canonical:
// then no two different lines mean the same entry, and every changed byte changes a hash.
std::string Canonical(const json& j) {
  return j.dump(-1, ' ', /*ensure_ascii=*/true, json::error_handler_t::replace);
}

Result<std::string> Sha256Hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr) != 1 || len != 32)
    return Internal("audit: SHA-256 (OpenSSL EVP_Digest) failed");
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(64, '0');
  for (unsigned i = 0; i < 32; ++i) {
    out[2 * i] = kHex[md[i] >> 4];
    out[2 * i + 1] = kHex[md[i] & 15];
  }
  return out;
}

bool IsHash(const json& j) {
  if (!j.is_string()) return false;
  const std::string& s = j.get_ref<const std::string&>();
  if (s.size() != 64) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

// RFC 3339, UTC, nanoseconds: 2024-05-01T12:34:56.123456789Z.
std::string FormatTime(int64_t ns) {
  int64_t sec = ns / 1'000'000'000;
  int64_t frac = ns % 1'000'000'000;
  if (frac < 0) {  // before 1970: floor, so the fraction stays positive
    frac += 1'000'000'000;
    sec -= 1;
  }
  const time_t t = static_cast<time_t>(sec);
  struct tm tm = {};
  if (gmtime_r(&t, &tm) == nullptr) return "invalid-time";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%09" PRId64 "Z", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
  return buf;
}

// Cuts a string field to kAuditFieldBytesMax bytes, saying so. (A multi-byte character cut in
// half becomes U+FFFD when the entry is serialized.)
std::string CapField(const std::string& s) {
  if (s.size() <= kAuditFieldBytesMax) return s;
  return s.substr(0, kAuditFieldBytesMax) + "...(cut from " + std::to_string(s.size()) + " bytes)";
}

struct ParsedLine {
  uint64_t seq = 0;
  std::string prev;
  std::string hash;
};

// Checks one line (without its newline) on its own: a canonical JSON object with exactly the
// entry's fields, of the right types, whose hash recomputes. Returns "" when it is an intact
// entry (filling *out), else why not; an error status only when hashing itself failed.
Result<std::string> CheckLine(std::string_view line, ParsedLine* out) {
  json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return std::string("not a JSON object");
  if (Canonical(j) != line) return std::string("not in canonical form (bytes changed)");
  for (const auto& [key, value] : j.items()) {
    if (key != "seq" && key != "time" && key != "time_ns" && key != "who" && key != "method" &&
        key != "args" && key != "result" && key != "traceparent" && key != "prev" && key != "hash")
      return "unexpected field \"" + key + "\"";
  }
  auto has = [&](const char* key) { return j.find(key) != j.end(); };
  for (const char* key :
       {"seq", "time", "time_ns", "who", "method", "args", "result", "prev", "hash"})
    if (!has(key)) return std::string("field \"") + key + "\" missing";
  if (!j["seq"].is_number_unsigned() || j["seq"].get<uint64_t>() == 0)
    return std::string("seq is not a positive integer");
  for (const char* key : {"time", "who", "method", "result"})
    if (!j[key].is_string()) return std::string("field \"") + key + "\" is not a string";
  if (has("traceparent") &&
      (!j["traceparent"].is_string() || j["traceparent"].get_ref<const std::string&>().empty()))
    return std::string("traceparent is not a non-empty string");
  if (!IsHash(j["prev"]) || !IsHash(j["hash"]))
    return std::string("prev or hash is not 64 lowercase hex digits");
  const json& tn = j["time_ns"];
  int64_t time_ns = 0;
  if (tn.is_number_integer() && !tn.is_number_unsigned()) {
    time_ns = tn.get<int64_t>();
  } else if (tn.is_number_unsigned() && tn.get<uint64_t>() <= uint64_t{INT64_MAX}) {
    time_ns = static_cast<int64_t>(tn.get<uint64_t>());
  } else {
    return std::string("time_ns is not a 64-bit integer");
  }
  if (j["time"].get_ref<const std::string&>() != FormatTime(time_ns))
    return std::string("time does not match time_ns");

  out->seq = j["seq"].get<uint64_t>();
  out->prev = j["prev"].get<std::string>();
  out->hash = j["hash"].get<std::string>();
  j.erase("hash");
  SPD_ASSIGN_OR_RETURN(std::string computed, Sha256Hex(Canonical(j)));
  if (computed != out->hash) return std::string("its hash does not match its contents");
  return std::string();
}

// Reads a file line by line with pread (from any offset, without moving a shared position).
class LineReader {
 public:
  LineReader(int fd, uint64_t offset) : fd_(fd), offset_(offset) {}

  struct Line {
    bool present = false;     // false at the end of the file
    bool terminated = false;  // ends with '\n' (false: the file's last bytes, no newline)
    bool too_long = false;    // longer than kAuditLineBytesMax (line holds a prefix)
    std::string text;         // without the newline
    uint64_t end = 0;         // file offset just after the line (and its newline)
  };

  Status Next(Line* line) {
    *line = Line();
    for (;;) {
      const size_t nl = buf_.find('\n', pos_);
      if (nl != std::string::npos && nl - pos_ <= kAuditLineBytesMax) {
        line->present = line->terminated = true;
        line->text.assign(buf_, pos_, nl - pos_);
        Consume(nl + 1 - pos_);
        line->end = offset_;
        return Status::Ok();
      }
      if (buf_.size() - pos_ > kAuditLineBytesMax) {
        line->present = line->too_long = true;
        line->text.assign(buf_, pos_, kAuditLineBytesMax);
        return Status::Ok();  // the caller stops at a line this long
      }
      if (eof_) {
        if (pos_ < buf_.size()) {
          line->present = true;
          line->text.assign(buf_, pos_, std::string::npos);
          Consume(buf_.size() - pos_);
          line->end = offset_;
        }
        return Status::Ok();
      }
      SPD_RETURN_IF_ERROR(Fill());
    }
  }

 private:
  void Consume(size_t n) {
    pos_ += n;
    offset_ += n;
  }
  Status Fill() {
    buf_.erase(0, pos_);
    pos_ = 0;
    const size_t have = buf_.size();
    buf_.resize(have + kChunk);
    for (;;) {
      const ssize_t n = pread(fd_, buf_.data() + have, kChunk, static_cast<off_t>(read_at_));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        const int err = errno;
        buf_.resize(have);
        return Status::FromErrno(err, "audit: read audit.log");
      }
      buf_.resize(have + static_cast<size_t>(n));
      read_at_ += static_cast<uint64_t>(n);
      if (n == 0) eof_ = true;
      return Status::Ok();
    }
  }

  static constexpr size_t kChunk = 64 * 1024;
  const int fd_;
  uint64_t offset_;  // file offset of buf_[pos_]
  uint64_t read_at_ = offset_;
  std::string buf_;
  size_t pos_ = 0;
  bool eof_ = false;
};

// The log read from the start, up to the first line that is not the next intact, chained entry.
struct Walk {
  uint64_t entries = 0;               // intact, chained entries from the first
  std::string last_hash = kZeroHash;  // of entry `entries`
  uint64_t end = 0;                   // file offset just after entry `entries`
  // Hashes of two entries asked for (the head's and the anchor's), when the walk reached them.
  uint64_t want[2] = {0, 0};
  std::string want_hash[2] = {kZeroHash, kZeroHash};
  // The first line that is not the next entry, if any.
  enum class Stop { kEnd, kTorn, kBad } stop = Stop::kEnd;
  uint64_t stop_line = 0;
  std::string stop_problem;  // for kBad: the whole problem text
};

std::string EntryName(uint64_t n) { return "entry " + std::to_string(n); }

// Looks for an entry with sequence number `seq` on the lines from `offset` on; its line number
// (counting the first line read as `first_line`), or 0.
Result<uint64_t> FindSeqLater(int fd, uint64_t offset, uint64_t first_line, uint64_t seq) {
  LineReader reader(fd, offset);
  LineReader::Line line;
  for (uint64_t n = first_line;; ++n) {
    SPD_RETURN_IF_ERROR(reader.Next(&line));
    if (!line.present || line.too_long) return uint64_t{0};
    const json j = json::parse(line.text, nullptr, /*allow_exceptions=*/false);
    if (j.is_object()) {
      auto it = j.find("seq");
      if (it != j.end() && it->is_number_unsigned() && it->get<uint64_t>() == seq) return n;
    }
  }
}

Result<Walk> WalkLog(int fd, uint64_t want0, uint64_t want1) {
  Walk w;
  w.want[0] = want0;
  w.want[1] = want1;
  LineReader reader(fd, 0);
  LineReader::Line line;
  for (uint64_t i = 1;; ++i) {
    SPD_RETURN_IF_ERROR(reader.Next(&line));
    if (!line.present) return w;
    w.stop_line = i;
    if (line.too_long) {
      w.stop = Walk::Stop::kBad;
      w.stop_problem = EntryName(i) + ": edited or corrupt: line " + std::to_string(i) +
                       " is longer than " + std::to_string(kAuditLineBytesMax) + " bytes";
      return w;
    }
    if (!line.terminated) {
      w.stop = Walk::Stop::kTorn;
      return w;
    }
    ParsedLine p;
    SPD_ASSIGN_OR_RETURN(std::string why, CheckLine(line.text, &p));
    if (!why.empty()) {
      w.stop = Walk::Stop::kBad;
      w.stop_problem = EntryName(i) + ": edited or corrupt: " + why;
      return w;
    }
    if (p.seq != i) {
      w.stop = Walk::Stop::kBad;
      const std::string holds =
          "line " + std::to_string(i) + " holds entry " + std::to_string(p.seq);
      if (p.seq < i) {
        // Entries 1..i-1 came in order, so this sequence number is there already.
        w.stop_problem =
            EntryName(i) + ": inserted: " + holds + " a second time (a duplicated or forged entry)";
      } else {
        SPD_ASSIGN_OR_RETURN(uint64_t later, FindSeqLater(fd, line.end, i + 1, i));
        if (later != 0) {
          w.stop_problem = EntryName(i) + ": reordered: " + holds + ", and entry " +
                           std::to_string(i) + " comes later, on line " + std::to_string(later);
        } else if (p.seq == i + 1) {
          w.stop_problem =
              EntryName(i) + ": deleted: " + holds + "; entry " + std::to_string(i) + " is missing";
        } else {
          w.stop_problem = EntryName(i) + ": deleted: " + holds + "; entries " + std::to_string(i) +
                           " to " + std::to_string(p.seq - 1) + " are missing";
        }
      }
      return w;
    }
    if (p.prev != w.last_hash) {
      w.stop = Walk::Stop::kBad;
      w.stop_problem = EntryName(i) + ": chain broken: its prev is not the hash of " +
                       (i == 1 ? std::string("the empty log (64 zeros)") : EntryName(i - 1)) +
                       " (an entry was inserted, deleted or replaced before it)";
      return w;
    }
    w.entries = i;
    w.last_hash = p.hash;
    w.end = line.end;
    for (int k = 0; k < 2; ++k)
      if (w.want[k] == i) w.want_hash[k] = p.hash;
  }
}

struct HeadFile {
  enum class State { kMissing, kBad, kOk } state = State::kMissing;
  AuditHead head;
  std::string why;  // for kBad
};

std::string HeadLine(const AuditHead& h) {
  json j = json::object();
  j["seq"] = h.seq;
  j["hash"] = h.hash;
  return Canonical(j) + "\n";
}

Result<HeadFile> ReadHead(const std::string& dir) {
  HeadFile out;
  const std::string path = dir + "/" + kAuditHeadFile;
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return out;
    return Status::FromErrno(errno, "audit: open " + path);
  }
  std::string text(kHeadBytesMax + 1, '\0');
  size_t have = 0;
  while (have < text.size()) {
    const ssize_t n = read(fd, text.data() + have, text.size() - have);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      close(fd);
      return Status::FromErrno(err, "audit: read " + path);
    }
    if (n == 0) break;
    have += static_cast<size_t>(n);
  }
  close(fd);
  text.resize(have);
  out.state = HeadFile::State::kBad;
  if (have > kHeadBytesMax) {
    out.why = "longer than " + std::to_string(kHeadBytesMax) + " bytes";
    return out;
  }
  if (text.empty() || text.back() != '\n') {
    out.why = "not one line ending in a newline";
    return out;
  }
  const json j = json::parse(std::string_view(text).substr(0, have - 1), nullptr, false);
  if (j.is_discarded() || !j.is_object() || j.size() != 2 || j.find("seq") == j.end() ||
      !j["seq"].is_number_unsigned() || j.find("hash") == j.end() || !IsHash(j["hash"])) {
    out.why = "not {\"hash\": 64 hex digits, \"seq\": a number}";
    return out;
  }
  out.head.seq = j["seq"].get<uint64_t>();
  out.head.hash = j["hash"].get<std::string>();
  if (HeadLine(out.head) != text) {
    out.why = "not in canonical form (bytes changed)";
    return out;
  }
  if (out.head.seq == 0 && out.head.hash != kZeroHash) {
    out.why = "seq 0 with a hash other than 64 zeros";
    return out;
  }
  out.state = HeadFile::State::kOk;
  return out;
}

// What Open may do about a state that a crash during Append leaves.
enum class Repair { kNone, kMoveHead, kCutTail };

struct Assessment {
  AuditVerifyReport report;
  Repair repair = Repair::kNone;
  uint64_t intact_end = 0;  // file offset just after the last intact entry
  AuditHead intact;         // that entry's seq and hash
};

// Compares the walk with the head file (and the anchor), naming the first problem in log order.
Assessment Assess(const Walk& w, const HeadFile& hf, const AuditHead* anchor) {
  Assessment a;
  AuditVerifyReport& r = a.report;
  r.entries = w.entries;
  const uint64_t L = w.entries;
  auto fail = [&](uint64_t entry, std::string problem) {
    r.ok = false;
    r.bad_entry = entry;
    r.problem = std::move(problem);
    return a;
  };
  const bool head_ok = hf.state == HeadFile::State::kOk;
  const uint64_t H = head_ok ? hf.head.seq : UINT64_MAX;

  // 1. Damage among the entries the head vouches for (all of them, when it cannot vouch).
  if (w.stop == Walk::Stop::kBad && w.stop_line <= H) return fail(w.stop_line, w.stop_problem);
  if (w.stop == Walk::Stop::kTorn && w.stop_line <= H)
    return fail(w.stop_line, EntryName(w.stop_line) +
                                 ": torn: the log ends in a line without a newline" +
                                 (head_ok ? " although the head says it has " + std::to_string(H) +
                                                " entries (truncated or edited)"
                                          : std::string()));
  // 2. The anchor: an entry recorded elsewhere must still be there, unchanged.
  if (anchor != nullptr) {
    if (anchor->seq > L)
      return fail(L + 1, EntryName(L + 1) + ": missing: the anchor names entry " +
                             std::to_string(anchor->seq) + ", but the log ends after entry " +
                             std::to_string(L) + " (truncated)");
    if (w.want_hash[1] != anchor->hash)
      return fail(anchor->seq, EntryName(anchor->seq) +
                                   ": its hash differs from the anchor's (the log was rewritten "
                                   "from this entry or an earlier one)");
  }
  // 3. The head file itself.
  if (hf.state == HeadFile::State::kMissing)
    return fail(0, std::string("audit.head is missing: the end of the log cannot be checked (") +
                       std::to_string(L) + " intact entries read)");
  if (hf.state == HeadFile::State::kBad)
    return fail(0, "audit.head is edited or corrupt: " + hf.why);
  // 4. The entry the head names must be the one in the log.
  if (H > L) {
    return fail(L + 1, EntryName(L + 1) + ": missing: the head says the log has " +
                           std::to_string(H) + " entries, but it ends after entry " +
                           std::to_string(L) + " (truncated)");
  }
  if (w.want_hash[0] != hf.head.hash)
    return fail(H, EntryName(H) +
                       ": its hash differs from the one in audit.head (the head or the entry "
                       "was edited, or the log rewritten)");
  // 5. Whatever follows the head's entry: nothing, or what one crash during Append leaves.
  if (L == H && w.stop == Walk::Stop::kEnd) {
    r.ok = true;
    return a;
  }
  if (L == H && w.stop == Walk::Stop::kTorn) {
    a.repair = Repair::kCutTail;
    return fail(H + 1, EntryName(H + 1) + ": torn: a last line without a newline after entry " +
                           std::to_string(H) +
                           ", the last the head names: left by a crash during an append, never "
                           "acknowledged; opening the log cuts it off");
  }
  if (L == H)  // a complete line that is not the next entry
    return fail(H + 1, w.stop_problem + " (after entry " + std::to_string(H) +
                           ", the last the head names)");
  if (L == H + 1 && w.stop == Walk::Stop::kEnd) {
    a.repair = Repair::kMoveHead;
    return fail(H + 1, EntryName(H + 1) + ": beyond the head (audit.head names entry " +
                           std::to_string(H) +
                           "): synced but never acknowledged, as a crash between writing an "
                           "entry and updating the head leaves it; opening the log moves the "
                           "head to it");
  }
  return fail(H + 1, EntryName(H + 1) + ": beyond the head (audit.head names entry " +
                         std::to_string(H) +
                         ") and followed by more lines: no crash leaves this (entries added "
                         "behind the log's back, or the head rolled back)");
}

Result<Assessment> AssessFd(const std::string& dir, int log_fd, const AuditHead* anchor) {
  SPD_ASSIGN_OR_RETURN(HeadFile hf, ReadHead(dir));
  const uint64_t head_seq = hf.state == HeadFile::State::kOk ? hf.head.seq : 0;
  SPD_ASSIGN_OR_RETURN(Walk w, WalkLog(log_fd, head_seq, anchor ? anchor->seq : 0));
  Assessment a = Assess(w, hf, anchor);
  a.intact_end = w.end;
  a.intact = AuditHead{w.entries, w.last_hash};
  return a;
}

Status WriteAll(int fd, std::string_view data, const std::string& what) {
  while (!data.empty()) {
    const ssize_t n = write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno(errno, "audit: write " + what);
    data.remove_prefix(static_cast<size_t>(n));
  }
  return Status::Ok();
}

// Replaces the head atomically: a reader (or a crash) sees the old head or the new one, whole.
Status WriteHead(const std::string& dir, int dir_fd, const AuditHead& h) {
  const std::string tmp = dir + "/" + kHeadTmpFile;
  const int fd = openat(dir_fd, kHeadTmpFile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Status::FromErrno(errno, "audit: create " + tmp);
  Status s = WriteAll(fd, HeadLine(h), tmp);
  if (s.ok() && fsync(fd) < 0) s = Status::FromErrno(errno, "audit: fsync " + tmp);
  if (close(fd) < 0 && s.ok()) s = Status::FromErrno(errno, "audit: close " + tmp);
  SPD_RETURN_IF_ERROR(s);
  if (renameat(dir_fd, kHeadTmpFile, dir_fd, kAuditHeadFile) < 0)
    return Status::FromErrno(errno, "audit: rename " + tmp);
  if (fsync(dir_fd) < 0) return Status::FromErrno(errno, "audit: fsync " + dir);
  return Status::Ok();
}

}  // namespace

Result<AuditVerifyReport> VerifyAuditLog(const std::string& dir, const AuditHead* anchor) {
  const std::string path = dir + "/" + kAuditLogFile;
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err != ENOENT) return Status::FromErrno(err, "audit: open " + path);
    struct stat st;
    const std::string head = dir + "/" + kAuditHeadFile;
    if (stat(head.c_str(), &st) < 0) return NotFound("audit: no audit log in " + dir);
    AuditVerifyReport r;
    r.problem = "audit.log is missing, but audit.head is there (the log was deleted)";
    r.bad_entry = 1;
    return r;
  }
  if (flock(fd, LOCK_SH | LOCK_NB) < 0) {
    const int err = errno;
    close(fd);
    if (err == EWOULDBLOCK)
      return FailedPrecondition("audit: " + path +
                                " is open for appending by a running process; verify it "
                                "through that process (AuditLog::Verify)");
    return Status::FromErrno(err, "audit: lock " + path);
  }
  Result<Assessment> a = AssessFd(dir, fd, anchor);
  close(fd);  // drops the lock
  if (!a.ok()) return a.status();
  return a.value().report;
}

AuditLog::AuditLog(std::string dir, int log_fd, int dir_fd, AuditHead head)
    : dir_(std::move(dir)), log_fd_(log_fd), dir_fd_(dir_fd), head_(std::move(head)) {}

AuditLog::~AuditLog() {
  close(log_fd_);
  close(dir_fd_);
}

Result<std::unique_ptr<AuditLog>> AuditLog::Open(const std::string& dir) {
  if (mkdir(dir.c_str(), 0700) < 0 && errno != EEXIST)
    return Status::FromErrno(errno, "audit: mkdir " + dir);
  const int dir_fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) return Status::FromErrno(errno, "audit: open " + dir);
  const std::string path = dir + "/" + kAuditLogFile;
  int fd = openat(dir_fd, kAuditLogFile, O_RDWR | O_APPEND | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) {
    struct stat st;
    if (fstatat(dir_fd, kAuditHeadFile, &st, 0) == 0) {
      close(dir_fd);
      return DataLoss("audit: " + path +
                      " is missing, but audit.head is there (the log was deleted); refusing "
                      "to start a new chain over it");
    }
    fd = openat(dir_fd, kAuditLogFile, O_RDWR | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0 && fsync(dir_fd) < 0) {
      const int err = errno;
      close(fd);
      close(dir_fd);
      return Status::FromErrno(err, "audit: fsync " + dir);
    }
  }
  if (fd < 0) {
    const int err = errno;
    close(dir_fd);
    return Status::FromErrno(err, "audit: open " + path);
  }
  // From here on every error path closes both.
  auto fail = [&](Status s) {
    close(fd);
    close(dir_fd);
    return s;
  };
  // flock, not the pool's fcntl record lock: it belongs to this open file, so a second Open in
  // the same process is refused too, and closing some other descriptor of the file cannot
  // drop it.
  if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
    const int err = errno;
    if (err == EWOULDBLOCK)
      return fail(FailedPrecondition("audit: " + path +
                                     " is in use (another AuditLog, or a verifier reading it)"));
    return fail(Status::FromErrno(err, "audit: lock " + path));
  }
  // A temporary head left by a crash in WriteHead: the real head is the old or the new one.
  if (unlinkat(dir_fd, kHeadTmpFile, 0) < 0 && errno != ENOENT)
    return fail(Status::FromErrno(errno, "audit: remove " + dir + "/" + kHeadTmpFile));

  Result<HeadFile> hf = ReadHead(dir);
  if (!hf.ok()) return fail(hf.status());
  struct stat st;
  if (fstat(fd, &st) < 0) return fail(Status::FromErrno(errno, "audit: fstat " + path));
  if (hf->state == HeadFile::State::kMissing && st.st_size == 0) {
    // A new log (or a crash while creating one, before the head was written).
    AuditHead empty{0, kZeroHash};
    Status s = WriteHead(dir, dir_fd, empty);
    if (!s.ok()) return fail(s);
    return std::unique_ptr<AuditLog>(new AuditLog(dir, fd, dir_fd, empty));
  }
  Result<Assessment> a = AssessFd(dir, fd, nullptr);
  if (!a.ok()) return fail(a.status());
  const AuditVerifyReport& r = a->report;
  const AuditHead head = a->intact;
  switch (a->repair) {
    case Repair::kNone:
      if (!r.ok)
        return fail(
            DataLoss("audit: the log in " + dir + " is damaged, refusing to append: " + r.problem));
      break;
    case Repair::kMoveHead: {
      Status s = WriteHead(dir, dir_fd, head);
      if (!s.ok()) return fail(s);
      recovered_total.Add();
      SPD_LOG_WARN("audit: %s: entry %" PRIu64
                   " was synced but the head not updated (a crash during an append); the head "
                   "now names it",
                   dir.c_str(), head.seq);
      break;
    }
    case Repair::kCutTail: {
      const uint64_t cut = static_cast<uint64_t>(st.st_size) - a->intact_end;
      if (ftruncate(fd, static_cast<off_t>(a->intact_end)) < 0)
        return fail(Status::FromErrno(errno, "audit: truncate " + path));
      if (fdatasync(fd) < 0) return fail(Status::FromErrno(errno, "audit: fdatasync " + path));
      recovered_total.Add();
      SPD_LOG_WARN("audit: %s: cut off a torn last line (%" PRIu64
                   " bytes, never acknowledged: a crash during an append) after entry %" PRIu64,
                   dir.c_str(), cut, head.seq);
      break;
    }
  }
  return std::unique_ptr<AuditLog>(new AuditLog(dir, fd, dir_fd, head));
}

Status AuditLog::Append(const AuditEntry& e) {
  std::lock_guard<std::mutex> lock(mu_);
  Status s = AppendLocked(e);
  if (!s.ok()) append_failures_total.Add();
  return s;
}

Status AuditLog::AppendLocked(const AuditEntry& e) {
  if (!failed_.ok())
    return FailedPrecondition("audit: the log failed earlier, reopen it: " +
                              std::string(failed_.message()));
  if (e.who.empty()) return InvalidArgument("audit: entry.who: must not be empty");
  if (e.method.empty()) return InvalidArgument("audit: entry.method: must not be empty");

  json entry = json::object();
  entry["seq"] = head_.seq + 1;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  const int64_t now_ns = int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
  entry["time_ns"] = now_ns;
  entry["time"] = FormatTime(now_ns);
  entry["who"] = CapField(e.who);
  entry["method"] = CapField(e.method);
  entry["result"] = CapField(e.result);
  if (!e.traceparent.empty()) entry["traceparent"] = CapField(e.traceparent);
  const std::string args = Canonical(e.args);
  if (args.size() <= kAuditArgsBytesMax) {
    entry["args"] = e.args;
  } else {
    SPD_ASSIGN_OR_RETURN(std::string digest, Sha256Hex(args));
    entry["args"] = {
        {"omitted", "args larger than " + std::to_string(kAuditArgsBytesMax) + " bytes"},
        {"bytes", args.size()},
        {"sha256", digest}};
  }
  entry["prev"] = head_.hash;
  // Serialize once and read it back, so that the entry hashed is exactly what the file will
  // say (invalid UTF-8 replaced, NaN as null, numbers as printed).
  entry = json::parse(Canonical(entry), nullptr, /*allow_exceptions=*/false);
  if (entry.is_discarded()) return Internal("audit: an entry did not read back as JSON");
  SPD_ASSIGN_OR_RETURN(std::string hash, Sha256Hex(Canonical(entry)));
  entry["hash"] = hash;
  std::string line = Canonical(entry);

  // Never write a line the verifier would reject.
  ParsedLine p;
  SPD_ASSIGN_OR_RETURN(std::string why, CheckLine(line, &p));
  if (!why.empty() || p.seq != head_.seq + 1 || p.prev != head_.hash)
    return Internal("audit: an encoded entry does not verify: " + why);
  if (line.size() > kAuditLineBytesMax)
    return Internal("audit: an entry of " + std::to_string(line.size()) + " bytes");
  line += '\n';

  // The line, durable; then the head, durable. A failure in between leaves a state Open
  // repairs (or a line Open refuses if the file holds garbage), and this log stops appending.
  Status s = WriteAll(log_fd_, line, dir_ + "/" + kAuditLogFile);
  if (s.ok() && fdatasync(log_fd_) < 0)
    s = Status::FromErrno(errno, "audit: fdatasync " + dir_ + "/" + kAuditLogFile);
  AuditHead next{p.seq, p.hash};
  if (s.ok()) s = WriteHead(dir_, dir_fd_, next);
  if (!s.ok()) {
    failed_ = s;
    SPD_LOG_ERROR("audit: %s: append failed, no more appends until reopened: %s", dir_.c_str(),
                  s.ToString().c_str());
    return s;
  }
  head_ = std::move(next);
  appends_total.Add();
  return Status::Ok();
}

uint64_t AuditLog::entries() const {
  std::lock_guard<std::mutex> lock(mu_);
  return head_.seq;
}

AuditHead AuditLog::head() const {
  std::lock_guard<std::mutex> lock(mu_);
  return head_;
}

Result<AuditVerifyReport> AuditLog::Verify(const AuditHead* anchor) const {
  std::lock_guard<std::mutex> lock(mu_);
  SPD_ASSIGN_OR_RETURN(Assessment a, AssessFd(dir_, log_fd_, anchor));
  return a.report;
}

}  // namespace spd
