// Status and Result<T>: the error currency of SP Driver 2.0.
//
// Codes follow gRPC's canonical codes (as Abseil does) so that the control API can return them
// unchanged. An I/O error also carries the errno it came from, because block protocols (NBD)
// answer with errno values and must not lose ENOSPC vs EIO on the way up.
//
// Both types are [[nodiscard]]: to drop one on purpose, write `IgnoreError(expr)` so that the
// place can be found.
#pragma once

#include <cerrno>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "common/assert.h"

namespace spd {

enum class StatusCode : int {
  kOk = 0,
  kCancelled = 1,
  kUnknown = 2,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kAborted = 10,
  kOutOfRange = 11,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
  kUnauthenticated = 16,  // the caller did not prove who it is (gRPC's code of the same number)
};

std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string_view message, int sys_errno = 0);

  static Status Ok() { return Status(); }
  // Maps an errno to the closest canonical code and keeps the errno.
  static Status FromErrno(int sys_errno, std::string_view context);

  bool ok() const { return rep_ == nullptr; }
  StatusCode code() const { return rep_ ? rep_->code : StatusCode::kOk; }
  // The errno this status stands for: the original one for I/O errors, otherwise the closest
  // errno for the code (EINVAL for kInvalidArgument, ENOSPC for kResourceExhausted, ...).
  int sys_errno() const;
  std::string_view message() const { return rep_ ? std::string_view(rep_->message) : ""; }
  std::string ToString() const;

  // Prefixes the message with context, keeping code and errno ("open pool: ...").
  Status WithContext(std::string_view context) const;

 private:
  struct Rep {
    StatusCode code;
    int sys_errno;
    std::string message;
  };
  // Errors are rare and carry a message, so an allocation on the error path is fine; an OK
  // status is a single null pointer and costs nothing to return.
  std::shared_ptr<const Rep> rep_;
};

inline Status InvalidArgument(std::string_view m) { return {StatusCode::kInvalidArgument, m}; }
inline Status NotFound(std::string_view m) { return {StatusCode::kNotFound, m}; }
inline Status AlreadyExists(std::string_view m) { return {StatusCode::kAlreadyExists, m}; }
inline Status OutOfRange(std::string_view m) { return {StatusCode::kOutOfRange, m}; }
inline Status ResourceExhausted(std::string_view m) {
  return {StatusCode::kResourceExhausted, m, ENOSPC};
}
inline Status FailedPrecondition(std::string_view m) {
  return {StatusCode::kFailedPrecondition, m};
}
inline Status DataLoss(std::string_view m) { return {StatusCode::kDataLoss, m, EIO}; }
inline Status Unauthenticated(std::string_view m) {
  return {StatusCode::kUnauthenticated, m, EACCES};
}
inline Status Internal(std::string_view m) { return {StatusCode::kInternal, m}; }
inline Status Unimplemented(std::string_view m) { return {StatusCode::kUnimplemented, m}; }
inline Status Unavailable(std::string_view m) { return {StatusCode::kUnavailable, m}; }
inline Status PermissionDenied(std::string_view m) {
  return {StatusCode::kPermissionDenied, m, EPERM};
}

// Spelled-out discard of a Status, for the rare place where failure truly does not matter.
inline void IgnoreError(const Status&) {}

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}         // NOLINT(google-explicit-constructor)
  Result(Status status) : status_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    SPD_ASSERT(!status_.ok());
  }

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  T& value() & {
    SPD_ASSERT(ok());
    return value_;
  }
  T&& value() && {
    SPD_ASSERT(ok());
    return std::move(value_);
  }
  T* operator->() { return &value(); }
  T& operator*() { return value(); }

 private:
  Status status_;
  T value_{};
};

}  // namespace spd

#define SPD_RETURN_IF_ERROR(expr)              \
  do {                                         \
    ::spd::Status spd_status_ = (expr);        \
    if (!spd_status_.ok()) return spd_status_; \
  } while (0)

#define SPD_CONCAT_INNER(a, b) a##b
#define SPD_CONCAT(a, b) SPD_CONCAT_INNER(a, b)
#define SPD_ASSIGN_OR_RETURN(lhs, expr) \
  SPD_ASSIGN_OR_RETURN_IMPL(SPD_CONCAT(spd_result_, __LINE__), lhs, expr)
#define SPD_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return tmp.status();             \
  lhs = std::move(tmp).value()
