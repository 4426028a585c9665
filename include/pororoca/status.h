// Status and Result<T>: how every library function in pororoca reports failure.
//
// Library code never throws. A failure is a Status carrying a Code, the errno that caused it
// (if any), the Side of the transfer where it was born and whether retrying can help. These
// facts are set where the error is decided, so schedulers never match message text.
//
// Thread-safety: Status and Result are values; distinct objects may be used from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace pororoca {

enum class Code : uint8_t {
  kOk = 0,
  kInvalidArgument = 1,
  kNotFound = 2,
  kPermissionDenied = 3,
  kAlreadyExists = 4,
  kResourceExhausted = 5,  // disk full, pool exhausted, quota
  kUnavailable = 6,        // peer or daemon unreachable, connection lost
  kDeadlineExceeded = 7,
  kCancelled = 8,
  kDataLoss = 9,   // checksum mismatch, truncated file
  kProtocol = 10,  // peer broke the protocol
  kNotSupported = 11,
  kInternal = 12,
  kUnauthenticated = 13,  // TLS or binding failure, unknown peer
};

// Which end of a transfer an error belongs to.
enum class Side : uint8_t { kLocal = 0, kSource = 1, kDestination = 2, kNetwork = 3 };

std::string_view CodeName(Code c);
std::string_view SideName(Side s);

class [[nodiscard]] Status {
 public:
  Status() noexcept = default;
  Status(Code code, std::string_view msg);
  Status(const Status& o);
  Status& operator=(const Status& o);
  Status(Status&&) noexcept = default;
  Status& operator=(Status&&) noexcept = default;

  static Status OK() { return Status(); }
  // errno -> code (ENOENT->kNotFound, EACCES/EPERM->kPermissionDenied, ENOSPC/EDQUOT->kResourceExhausted,
  // EEXIST->kAlreadyExists, ECONNRESET/EPIPE/ECONNREFUSED->kUnavailable, ...); keeps err.
  static Status IoError(std::string_view context, int err);
  static Status InvalidArgument(std::string_view msg) { return Status(Code::kInvalidArgument, msg); }
  static Status NotFound(std::string_view msg) { return Status(Code::kNotFound, msg); }
  static Status PermissionDenied(std::string_view msg) { return Status(Code::kPermissionDenied, msg); }
  static Status AlreadyExists(std::string_view msg) { return Status(Code::kAlreadyExists, msg); }
  static Status ResourceExhausted(std::string_view msg) { return Status(Code::kResourceExhausted, msg); }
  static Status Unavailable(std::string_view msg) { return Status(Code::kUnavailable, msg); }
  static Status DeadlineExceeded(std::string_view msg) { return Status(Code::kDeadlineExceeded, msg); }
  static Status Cancelled(std::string_view msg) { return Status(Code::kCancelled, msg); }
  static Status DataLoss(std::string_view msg) { return Status(Code::kDataLoss, msg); }
  static Status Protocol(std::string_view msg) { return Status(Code::kProtocol, msg); }
  static Status NotSupported(std::string_view msg) { return Status(Code::kNotSupported, msg); }
  static Status Internal(std::string_view msg) { return Status(Code::kInternal, msg); }
  static Status Unauthenticated(std::string_view msg) { return Status(Code::kUnauthenticated, msg); }

  bool ok() const { return rep_ == nullptr; }
  Code code() const { return rep_ ? rep_->code : Code::kOk; }
  int sys_errno() const { return rep_ ? rep_->err : 0; }
  Side side() const { return rep_ ? rep_->side : Side::kLocal; }
  // Defaults from the code: kUnavailable, kDeadlineExceeded, kResourceExhausted (pool only) are retryable.
  bool retryable() const { return rep_ ? rep_->retryable : false; }
  std::string_view message() const { return rep_ ? std::string_view(rep_->msg) : std::string_view(); }

  Status& WithSide(Side s);
  Status& WithRetryable(bool r);
  // Prepends "context: " to the message, keeping code, errno, side and retryable.
  Status& Annotate(std::string_view context);

  // Swallowing an error is a visible act (grep for IgnoreError).
  void IgnoreError() const {}

  // "NotFound: open /data/f.bin: No such file or directory"
  std::string ToString() const;

 private:
  struct Rep {
    Code code;
    int err;
    Side side;
    bool retryable;
    std::string msg;
  };
  std::unique_ptr<Rep> rep_;
};

// Result<T>: a T or a non-OK Status. Member names follow std::expected so C++23 is a rename.
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
  Result(Status st) : v_(std::in_place_index<1>, std::move(st)) {    // NOLINT
    if (std::get<1>(v_).ok()) v_.template emplace<1>(Status::Internal("Result built from an OK status"));
  }
  bool has_value() const { return v_.index() == 0; }
  bool ok() const { return has_value(); }
  explicit operator bool() const { return has_value(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  const Status& error() const& { return std::get<1>(v_); }
  Status& error() & { return std::get<1>(v_); }
  Status&& error() && { return std::get<1>(std::move(v_)); }
  Status status() const { return has_value() ? Status::OK() : std::get<1>(v_); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<T, Status> v_;
};

#define PORO_CONCAT_INNER_(a, b) a##b
#define PORO_CONCAT_(a, b) PORO_CONCAT_INNER_(a, b)

#define PORO_RETURN_IF_ERROR(expr)        \
  do {                                    \
    ::pororoca::Status poro_st_ = (expr); \
    if (!poro_st_.ok()) return poro_st_;  \
  } while (0)

#define PORO_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr)    \
  auto tmp = (expr);                                   \
  if (!tmp.has_value()) return std::move(tmp).error(); \
  lhs = std::move(tmp).value()

#define PORO_ASSIGN_OR_RETURN(lhs, expr) \
  PORO_ASSIGN_OR_RETURN_IMPL_(PORO_CONCAT_(poro_res_, __LINE__), lhs, expr)

}  // namespace pororoca
