#include "pororoca/status.h"

#include <cerrno>
#include <cstring>

namespace pororoca {

std::string_view CodeName(Code c) {
  switch (c) {
    case Code::kOk:
      return "OK";
    case Code::kInvalidArgument:
      return "InvalidArgument";
    case Code::kNotFound:
      return "NotFound";
    case Code::kPermissionDenied:
      return "PermissionDenied";
    case Code::kAlreadyExists:
      return "AlreadyExists";
    case Code::kResourceExhausted:
      return "ResourceExhausted";
    case Code::kUnavailable:
      return "Unavailable";
    case Code::kDeadlineExceeded:
      return "DeadlineExceeded";
    case Code::kCancelled:
      return "Cancelled";
    case Code::kDataLoss:
      return "DataLoss";
    case Code::kProtocol:
      return "Protocol";
    case Code::kNotSupported:
      return "NotSupported";
    case Code::kInternal:
      return "Internal";
    case Code::kUnauthenticated:
      return "Unauthenticated";
  }
  return "Unknown";
}

std::string_view SideName(Side s) {
  switch (s) {
    case Side::kLocal:
      return "local";
    case Side::kSource:
      return "source";
    case Side::kDestination:
      return "destination";
    case Side::kNetwork:
      return "network";
  }
  return "unknown";
}

namespace {
bool DefaultRetryable(Code c) { return c == Code::kUnavailable || c == Code::kDeadlineExceeded; }

Code CodeFromErrno(int err) {
  switch (err) {
    case ENOENT:
    case ENOTDIR:
      return Code::kNotFound;
    case EACCES:
    case EPERM:
    case EROFS:
      return Code::kPermissionDenied;
    case EEXIST:
    case ENOTEMPTY:
      return Code::kAlreadyExists;
    case ENOSPC:
    case EDQUOT:
    case EMFILE:
    case ENFILE:
    case ENOMEM:
    case EFBIG:
      return Code::kResourceExhausted;
    case ECONNRESET:
    case EPIPE:
    case ECONNREFUSED:
    case ECONNABORTED:
    case ENETUNREACH:
    case EHOSTUNREACH:
    case ENOTCONN:
    case ESHUTDOWN:
      return Code::kUnavailable;
    case ETIMEDOUT:
      return Code::kDeadlineExceeded;
    case EINVAL:
    case ENAMETOOLONG:
    case ELOOP:
    case EISDIR:
      return Code::kInvalidArgument;
    case EOPNOTSUPP:
    case ENOSYS:
      return Code::kNotSupported;
    case ECANCELED:
      return Code::kCancelled;
    default:
      return Code::kInternal;
  }
}
}  // namespace

Status::Status(Code code, std::string_view msg) {
  if (code == Code::kOk) return;
  rep_ = std::make_unique<Rep>(Rep{code, 0, Side::kLocal, DefaultRetryable(code), std::string(msg)});
}

Status::Status(const Status& o) : rep_(o.rep_ ? std::make_unique<Rep>(*o.rep_) : nullptr) {}

Status& Status::operator=(const Status& o) {
  if (this != &o) rep_ = o.rep_ ? std::make_unique<Rep>(*o.rep_) : nullptr;
  return *this;
}

Status Status::IoError(std::string_view context, int err) {
  std::string msg(context);
  msg += ": ";
  msg += std::strerror(err);
  Status s(CodeFromErrno(err), msg);
  if (s.rep_) s.rep_->err = err;
  return s;
}

Status& Status::WithSide(Side s) {
  if (rep_) rep_->side = s;
  return *this;
}

Status& Status::WithRetryable(bool r) {
  if (rep_) rep_->retryable = r;
  return *this;
}

Status& Status::Annotate(std::string_view context) {
  if (rep_) rep_->msg = std::string(context) + ": " + rep_->msg;
  return *this;
}

std::string Status::ToString() const {
  if (!rep_) return "OK";
  std::string out(CodeName(rep_->code));
  out += ": ";
  out += rep_->msg;
  return out;
}

}  // namespace pororoca
