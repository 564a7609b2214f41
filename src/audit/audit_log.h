// The audit log: a tamper-evident record of every mutating control-API call.
//
// Each call — who made it (uid or token id), what (method and arguments), when, the result, and
// the caller's W3C traceparent when it sent one — becomes one line of DIR/audit.log: a JSON
// object that carries the SHA-256 of the previous entry (`prev`) and its own (`hash`), so the
// entries form a chain. DIR/audit.head holds the sequence number and hash of the last entry
// written, so that cutting entries off the end of the log is detected too. docs/audit.md
// describes the format and what the chain does and does not prove.
//
// Durability: Append returns only after its line is on stable storage (fdatasync) and the head
// names it (written to a temporary file, fsynced, renamed over the old head, directory fsynced).
// An entry whose Append succeeded survives a crash. One whose Append failed, or was running
// when the process died, may or may not be there afterwards; Open finishes or discards it (see
// Open).
//
// A failed write or sync is final: the log refuses every later Append (the state of the file
// after a failed fdatasync is unknown, and a retry could acknowledge a line that is not durable;
// see "A failed flush is final" in docs/durability.md). Reopening the directory recovers.
//
// Limits: one entry's `args` is at most kAuditArgsBytesMax bytes of JSON (larger arguments are
// replaced by a marker giving their size and SHA-256); who, method, result and traceparent are
// each cut to kAuditFieldBytesMax bytes. So a line is at most kAuditLineBytesMax bytes, which
// is also what the reader accepts.
//
// Thread-safety: AuditLog's methods may be called from any thread; appends are serialized by a
// mutex (they are rare: one per mutating API call). VerifyAuditLog is a plain function.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace spd {

// Bytes of canonical JSON (see docs/audit.md) an entry's `args` may take; larger args are
// replaced by {"omitted": "args larger than 8192 bytes", "bytes": N, "sha256": "..."}.
inline constexpr size_t kAuditArgsBytesMax = 8192;
// Bytes each of who, method, result and traceparent may take; a longer value is cut to this
// many bytes and gets the suffix "...(cut from N bytes)".
inline constexpr size_t kAuditFieldBytesMax = 1024;
// The longest line the reader accepts (a line written under the two caps above is far shorter,
// even when JSON escaping makes each byte of a string six).
inline constexpr size_t kAuditLineBytesMax = 64 * 1024;

inline constexpr const char* kAuditLogFile = "audit.log";
inline constexpr const char* kAuditHeadFile = "audit.head";

// What a caller says about one call. The log assigns the sequence number and the time.
struct AuditEntry {
  std::string who;     // "uid:1000" or "token:ops-ci"; required
  std::string method;  // the API method, e.g. "spd.v1.Volumes/Create"; required
  nlohmann::json args = nlohmann::json::object();  // the request's arguments
  std::string result;                              // "OK" or the error returned
  std::string traceparent;                         // empty: the caller sent none
};

// Where a chain ends: the last entry's sequence number and hash (seq 0 and 64 zeros for an empty
// log). The head file holds one; a copy kept elsewhere (see docs/audit.md) can be passed to
// VerifyAuditLog as an anchor.
struct AuditHead {
  uint64_t seq = 0;
  std::string hash;  // 64 lowercase hex digits
};

struct AuditVerifyReport {
  bool ok = false;
  // Intact, chained entries read from the first line up to the first line that is not one
  // (entries beyond the head count: that problem is about the head, not the entries).
  uint64_t entries = 0;
  // Empty when ok. Otherwise one line naming the entry and what is wrong with it: edited,
  // deleted, inserted, reordered, truncated, torn, beyond the head, or a problem of the head
  // file.
  std::string problem;
  // The entry the problem is at: its 1-based line in audit.log, which is also the sequence
  // number the entry there should have (for a deletion, the first missing one; for a truncated
  // log, the first entry the head promises that the log lacks). 0 when the problem is the head
  // file itself (missing or unreadable) rather than an entry.
  uint64_t bad_entry = 0;
};

// Checks the log in `dir`: every line is an entry in canonical form, its hash recomputes, its
// seq is one more than the previous one (from 1), its prev is the previous entry's hash, and the
// last entry is the one the head file names. A problem is a report with ok == false; the status
// is an error only when the check could not run (no log in `dir`, an I/O error, or a process
// has the log open for appending: an append racing the reader would look like a damaged tail,
// so a live log is verified by its owner with AuditLog::Verify).
//
// `anchor`, when given, is a head recorded elsewhere earlier: the log must still contain that
// entry with that hash (this catches a log rewritten together with its head file).
//
// A state that a crash can leave (see AuditLog::Open) is reported as a problem too, saying so:
// the report describes the files as they are, and Open is what repairs them.
Result<AuditVerifyReport> VerifyAuditLog(const std::string& dir, const AuditHead* anchor = nullptr);

class AuditLog {
 public:
  // Opens the log in `dir` (created, mode 0700, if missing), creating audit.log and audit.head
  // (mode 0600) if neither holds an entry yet. An existing log is verified first, in full: a
  // damaged log is refused with kDataLoss and the verifier's problem text, since continuing the
  // chain would vouch for it. Two states a crash during Append leaves are repaired, with a
  // warning and spd_audit_recovered_total:
  //   - the log holds exactly one complete, intact entry after the one the head names (the
  //     crash came after the line was synced, before the head was replaced): the head is moved
  //     to it;
  //   - the log ends in a fragment without a newline right after the entry the head names (the
  //     crash came while the line was written): the fragment, which no Append acknowledged, is
  //     cut off.
  // Anything else after the head's entry (two entries, an entry plus a fragment, a complete line
  // that is not a valid entry) is refused: no crash of this code leaves it.
  //
  // One process, one AuditLog per directory: the log holds an exclusive flock on audit.log, and
  // a second Open (also from the same process) fails with kFailedPrecondition.
  static Result<std::unique_ptr<AuditLog>> Open(const std::string& dir);
  ~AuditLog();
  AuditLog(const AuditLog&) = delete;
  AuditLog& operator=(const AuditLog&) = delete;

  // Appends one entry and makes it durable (see the top of this file). kInvalidArgument for an
  // entry without who or method; an I/O error (and every later call: kFailedPrecondition) once
  // a write or sync failed. Every failure counts spd_audit_append_failures_total.
  Status Append(const AuditEntry& e);

  // Entries in the log (the last one's sequence number).
  uint64_t entries() const;
  // The last entry's seq and hash: what to keep elsewhere as an anchor.
  AuditHead head() const;
  // VerifyAuditLog on this log's directory, with appends held off while it runs.
  Result<AuditVerifyReport> Verify(const AuditHead* anchor = nullptr) const;

  const std::string& dir() const { return dir_; }

 private:
  AuditLog(std::string dir, int log_fd, int dir_fd, AuditHead head);
  Status AppendLocked(const AuditEntry& e);

  const std::string dir_;
  const int log_fd_;  // O_RDWR | O_APPEND, flock(LOCK_EX) held
  const int dir_fd_;  // for fsync after renaming the head
  mutable std::mutex mu_;
  AuditHead head_;  // guarded by mu_
  Status failed_;   // guarded by mu_; not ok after a failed write or sync
};

}  // namespace spd
