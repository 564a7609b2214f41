#include "common/status.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace spd {

void AssertFail(const char* expr, const char* file, int line, const char* msg) {
  std::fprintf(stderr, "spd: assertion failed: %s at %s:%d%s%s\n", expr, file, line,
               msg ? ": " : "", msg ? msg : "");
  std::fflush(stderr);
  std::abort();
}

std::string_view StatusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return "OK";
    case StatusCode::kCancelled:
      return "CANCELLED";
    case StatusCode::kUnknown:
      return "UNKNOWN";
    case StatusCode::kInvalidArgument:
      return "INVALID_ARGUMENT";
    case StatusCode::kDeadlineExceeded:
      return "DEADLINE_EXCEEDED";
    case StatusCode::kNotFound:
      return "NOT_FOUND";
    case StatusCode::kAlreadyExists:
      return "ALREADY_EXISTS";
    case StatusCode::kPermissionDenied:
      return "PERMISSION_DENIED";
    case StatusCode::kResourceExhausted:
      return "RESOURCE_EXHAUSTED";
    case StatusCode::kFailedPrecondition:
      return "FAILED_PRECONDITION";
    case StatusCode::kAborted:
      return "ABORTED";
    case StatusCode::kOutOfRange:
      return "OUT_OF_RANGE";
    case StatusCode::kUnimplemented:
      return "UNIMPLEMENTED";
    case StatusCode::kInternal:
      return "INTERNAL";
    case StatusCode::kUnavailable:
      return "UNAVAILABLE";
    case StatusCode::kDataLoss:
      return "DATA_LOSS";
    case StatusCode::kUnauthenticated:
      return "UNAUTHENTICATED";
  }
  return "UNKNOWN";
}

Status::Status(StatusCode code, std::string_view message, int sys_errno) {
  if (code == StatusCode::kOk) return;
  rep_ = std::make_shared<const Rep>(Rep{code, sys_errno, std::string(message)});
}

Status Status::FromErrno(int sys_errno, std::string_view context) {
  StatusCode code;
  switch (sys_errno) {
    case EINVAL:
      code = StatusCode::kInvalidArgument;
      break;
    case ENOENT:
      code = StatusCode::kNotFound;
      break;
    case EEXIST:
      code = StatusCode::kAlreadyExists;
      break;
    case EPERM:
    case EACCES:
      code = StatusCode::kPermissionDenied;
      break;
    case ENOSPC:
    case ENOMEM:
    case EDQUOT:
      code = StatusCode::kResourceExhausted;
      break;
    case EOVERFLOW:
    case ERANGE:
      code = StatusCode::kOutOfRange;
      break;
    case ENOTSUP:
    case ENOSYS:
      code = StatusCode::kUnimplemented;
      break;
    case EAGAIN:
    case EBUSY:
      code = StatusCode::kUnavailable;
      break;
    case ECANCELED:
      code = StatusCode::kCancelled;
      break;
    case ETIMEDOUT:
      code = StatusCode::kDeadlineExceeded;
      break;
    default:
      code = StatusCode::kUnknown;
      break;
  }
  std::string msg(context);
  msg += ": ";
  msg += std::strerror(sys_errno);
  return Status(code, msg, sys_errno);
}

int Status::sys_errno() const {
  if (!rep_) return 0;
  if (rep_->sys_errno != 0) return rep_->sys_errno;
  switch (rep_->code) {
    case StatusCode::kInvalidArgument:
      return EINVAL;
    case StatusCode::kNotFound:
      return ENOENT;
    case StatusCode::kAlreadyExists:
      return EEXIST;
    case StatusCode::kPermissionDenied:
      return EPERM;
    case StatusCode::kResourceExhausted:
      return ENOSPC;
    case StatusCode::kOutOfRange:
      return EOVERFLOW;
    case StatusCode::kUnimplemented:
      return ENOTSUP;
    case StatusCode::kUnavailable:
      return EAGAIN;
    case StatusCode::kCancelled:
      return ECANCELED;
    case StatusCode::kDeadlineExceeded:
      return ETIMEDOUT;
    default:
      return EIO;
  }
}

std::string Status::ToString() const {
  if (!rep_) return "OK";
  std::string s(StatusCodeName(rep_->code));
  s += ": ";
  s += rep_->message;
  return s;
}

Status Status::WithContext(std::string_view context) const {
  if (!rep_) return *this;
  std::string msg(context);
  msg += ": ";
  msg += rep_->message;
  return Status(rep_->code, msg, rep_->sys_errno);
}

}  // namespace spd
